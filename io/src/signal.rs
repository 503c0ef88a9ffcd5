//! The shutdown signal of the servers: SIGTERM (what the kubelet sends) or
//! SIGINT (Ctrl-C when run by hand).

/// Resolves on SIGTERM or SIGINT. When SIGTERM cannot be listened for, says
/// so in the log and waits for SIGINT alone.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
