//! Accepting connections: the TCP accept loop every server here runs, and
//! the TLS handshake with its timeout.
//!
//! What a server does with a connection (caps, HTTP versions, upgrades,
//! graceful shutdown) is its own; what every one needs is the same:
//! - a failed `accept` (out of file descriptors and the like) backs off
//!   instead of spinning, and the server keeps serving;
//! - Nagle is off: API requests and answers are small exchanges;
//! - a client that opens a connection and never finishes the handshake is
//!   dropped after a timeout instead of holding a task forever.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Back-off after a failed `accept`.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The TLS handshake timeout of the servers that have no setting for it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client went away or spoke something else than TLS.
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
    /// The handshake did not finish within the timeout.
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
}

/// Accepts connections on `listener` until `stop` resolves, handing each
/// (with `TCP_NODELAY` set) to `on_accept`, which usually spawns a task
/// for it. `name` labels the log lines.
pub async fn accept_loop(
    listener: &TcpListener,
    name: &str,
    stop: impl Future<Output = ()>,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        on_accept(tcp, peer);
    }
}

/// The server side of a TLS handshake on `tcp`, within `timeout`. Failures
/// are logged at debug level (a client that gives up is no server error);
/// the caller decides whether to count them.
pub async fn tls_handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    name: &str,
    peer: SocketAddr,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => {
            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
            Err(HandshakeError::Failed(e))
        }
        Err(_) => {
            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
            Err(HandshakeError::TimedOut(timeout))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pki::{CaProfile, LeafProfile, LocalCa, server_config};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_silent_client_times_out_and_a_real_one_is_served() {
        let ca = LocalCa::generate(&CaProfile::new("test CA")).unwrap();
        let leaf = ca.issue(&LeafProfile::new(["127.0.0.1"])).unwrap();
        let cfg = server_config(vec![leaf.cert_der.clone()], leaf.key_der(), &[b"h2"]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            accept_loop(
                &listener,
                "test",
                async {
                    let _ = stop_rx.await;
                },
                |tcp, peer| {
                    assert!(tcp.nodelay().unwrap());
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let r =
                            tls_handshake(&acceptor, tcp, Duration::from_millis(200), "test", peer)
                                .await;
                        let _ = tx.send(r.map(|_| ()));
                    });
                },
            )
            .await;
        });

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(HandshakeError::TimedOut(_))), "{r:?}");
        let _ = silent.shutdown().await;

        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(HandshakeError::Failed(_))), "{r:?}");

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
