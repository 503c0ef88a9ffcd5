//! `kubectl-mcp_warden`: the kubectl plugin for approvals (see
//! `mcp_warden_webhook::plugin`).

use clap::Parser;
use mcp_warden_webhook::plugin::{PluginCli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = PluginCli::parse();
    match run(cli).await {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
