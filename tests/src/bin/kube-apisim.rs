//! kube-apisim: a stand-in kube-apiserver for tests and the demo.

use anyhow::Context;
use clap::Parser;
use mcp_warden_tests::apisim::auth::UserSpec;
use mcp_warden_tests::apisim::server::{Config, DEFAULT_VERSION, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A stand-in kube-apiserver: TLS with its own CA, one bearer token,
/// in-memory objects.
#[derive(Parser, Debug)]
#[command(name = "kube-apisim", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; see DIR/addr).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory for ca.crt, token and addr.
    #[arg(long)]
    state_dir: PathBuf,
    /// Multi-document YAML of objects to load at start.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// gitVersion reported by /version (kubectl's dispatcher picks its minor from it).
    #[arg(long, default_value = DEFAULT_VERSION)]
    version_string: String,
    /// Another user: NAME=TOKEN[:group,group] (repeatable).
    #[arg(long = "extra-user")]
    extra_users: Vec<UserSpec>,
    /// Interval of BOOKMARK events on watches that allow them, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    bookmark_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let mut config = Config::new(&cli.state_dir);
    config.seed = cli.seed;
    config.version = cli.version_string;
    config.extra_users = cli.extra_users;
    config.bookmark_interval = Duration::from_millis(cli.bookmark_interval_ms.max(10));
    let server = Server::new(listener, config).context("starting kube-apisim")?;
    println!("{}", server.local_addr());
    tracing::info!(addr = %server.local_addr(), state_dir = %cli.state_dir.display(), "kube-apisim serving");
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
