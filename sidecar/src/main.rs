//! mcp-warden-sidecar binary: parses flags, sets up logging, binds the
//! listeners and runs [`mcp_warden_sidecar::run`] until SIGTERM; the
//! `wait-ready`/`wait-drain` subcommands are the container form's lifecycle
//! hooks ([`mcp_warden_sidecar::lifecycle`]).

use clap::Parser;
use mcp_warden_sidecar::config::{Cli, Command, ServeArgs};

/// Static builds (the image's musl build) use mimalloc, with the image's
/// settings (see the Dockerfile): musl's malloc serialises every allocation
/// on one lock. A static glibc build uses it too, so that the two compare on
/// their C library alone (bench/results.md, "Sixth pass").
#[cfg(target_feature = "crt-static")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Policy(args)) => match mcp_warden_sidecar::policy_cli::run(args.command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("mcp-warden-sidecar policy: {e:#}");
                2
            }
        },
        Some(Command::Serve(args)) => serve(args),
        Some(Command::WaitReady(args)) => match mcp_warden_sidecar::lifecycle::wait_ready(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mcp-warden-sidecar wait-ready: {e}");
                1
            }
        },
        Some(Command::WaitDrain(args)) => {
            let how = mcp_warden_sidecar::lifecycle::wait_drain(&args);
            eprintln!("mcp-warden-sidecar wait-drain: {how}");
            0
        }
        None => serve(cli.serve),
    };
    std::process::exit(code);
}

fn serve(args: ServeArgs) -> i32 {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-warden-sidecar: {e}");
            return 2;
        }
    };
    // Held until serve returns: dropping it flushes the queued log lines.
    let _log_guard = mcp_warden_sidecar::logging::init(config.log_format, config.access_log);
    // One thread: tokio's single-threaded scheduler, which has no work
    // stealing and wakes a task on its own thread without a cross-thread
    // unpark (see DEFAULT_WORKER_THREADS).
    let built = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-warden-sidecar: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mcp-warden-sidecar: invalid --listen (MCP_WARDEN_LISTEN): cannot bind {}: {e}", config.listen);
                return 2;
            }
        };
        let admin = match tokio::net::TcpListener::bind(config.admin_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "mcp-warden-sidecar: invalid --admin-listen (MCP_WARDEN_ADMIN_LISTEN): cannot bind {}: {e}",
                    config.admin_listen
                );
                return 2;
            }
        };
        match mcp_warden_sidecar::assemble::run_configured(listener, admin, config, mcp_warden_io::shutdown_signal()).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mcp-warden-sidecar: {e}");
                1
            }
        }
    })
}
