//! mcp-warden-collector: a test/demo audit collector (see
//! `mcp_warden_tests::collector`). Writes `OUT/events.ndjson`,
//! `OUT/sessions/<auditID>.cast` and, once listening, `OUT/addr`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use mcp_warden_tests::collector::{self, CollectorConfig};

/// Accepts audit EventList/NDJSON POSTs and asciicast session uploads and
/// writes them to files.
#[derive(Parser, Debug)]
#[command(name = "mcp-warden-collector", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free one; see OUT/addr).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Output directory.
    #[arg(long)]
    out_dir: PathBuf,
    /// Serve HTTPS: generate a CA and serving certificate, write DIR/ca.crt.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// With --tls-dir: require client certificates signed by this PEM CA.
    #[arg(long, requires = "tls_dir")]
    client_ca_file: Option<PathBuf>,
    /// Require `Authorization: Bearer T`.
    #[arg(long)]
    token: Option<String>,
    /// Answer the first N requests with 503 (simulated outage).
    #[arg(long, default_value_t = 0)]
    fail_first: usize,
    /// Answer every request with this status code and store nothing.
    #[arg(long)]
    status_code: Option<u16>,
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
    if let Some(c) = cli.status_code {
        anyhow::ensure!(
            (100..=599).contains(&c),
            "--status-code {c} is not an HTTP status code"
        );
    }
    std::fs::create_dir_all(&cli.out_dir)
        .with_context(|| format!("--out-dir {}", cli.out_dir.display()))?;
    let mut cfg = CollectorConfig::new(&cli.out_dir);
    cfg.token = cli.token;
    cfg.control
        .fail_next
        .store(cli.fail_first, Ordering::SeqCst);
    cfg.control
        .status_code
        .store(cli.status_code.unwrap_or(0), Ordering::SeqCst);
    if let Some(dir) = &cli.tls_dir {
        cfg.tls =
            Some(collector::tls_config(dir, cli.client_ca_file.as_deref()).context("--tls-dir")?);
    }
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("--listen {}", cli.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(cli.out_dir.join("addr"), addr.to_string()).context("writing OUT/addr")?;
    tracing::info!(%addr, tls = cfg.tls.is_some(), "mcp-warden-collector listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    collector::run(listener, cfg, shutdown).await?;
    Ok(())
}
