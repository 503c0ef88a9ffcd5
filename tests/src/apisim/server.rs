//! The kube-apisim server: configuration, start-up (CA, token, seed, state
//! files) and the TLS accept loop serving HTTP/1.1 and HTTP/2 with upgrades.

use super::auth::{Authenticator, UserSpec};
use super::handler::{self, App};
use super::objects::Ips;
use super::registry::Registry;
use super::store::Store;
use super::{seed, tls};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mcp_warden_io::accept::{HANDSHAKE_TIMEOUT, accept_loop, tls_handshake};
use rand::RngCore;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Default `/version` gitVersion.
pub const DEFAULT_VERSION: &str = "v1.32.3";

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `ca.crt`, `token` and `addr` are written.
    pub state_dir: PathBuf,
    /// Multi-document YAML of objects loaded at start.
    pub seed: Option<PathBuf>,
    /// `gitVersion` reported by `/version` (kubectl's dispatcher picks its minor).
    pub version: String,
    /// Additional users, each with its own bearer token.
    pub extra_users: Vec<UserSpec>,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
}

impl Config {
    /// A configuration with defaults for everything but the state dir.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            seed: None,
            version: DEFAULT_VERSION.to_string(),
            extra_users: Vec::new(),
            bookmark_interval: Duration::from_secs(2),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the listener address: {0}")]
    Addr(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] mcp_warden_io::pki::PkiError),
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
}

/// A started (not yet serving) server.
pub struct Server {
    app: Arc<App>,
    acceptor: tokio_rustls::TlsAcceptor,
    listener: TcpListener,
    addr: SocketAddr,
}

fn write(path: PathBuf, data: &[u8]) -> Result<(), ServerError> {
    std::fs::write(&path, data).map_err(|source| ServerError::Write { path, source })
}

impl Server {
    /// Creates the CA, token and store, loads the seed and writes
    /// `ca.crt`, `token` and `addr` into the state dir.
    pub fn new(listener: TcpListener, config: Config) -> Result<Self, ServerError> {
        let addr = listener.local_addr().map_err(ServerError::Addr)?;
        let extra_ip = Some(addr.ip()).filter(|ip| ip.is_loopback());
        let tls = tls::generate(extra_ip)?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let app = Arc::new(App {
            store: Store::default(),
            registry: Registry::default(),
            auth: Authenticator::new(token.clone(), config.extra_users.clone()),
            version: config.version.clone(),
            server_addr: addr.to_string(),
            ips: Ips::default(),
            bookmark_interval: config.bookmark_interval,
            ca_pem: tls.ca_pem.clone(),
        });
        let mut objs = seed::defaults();
        if let Some(p) = &config.seed {
            objs.extend(seed::load_file(p)?);
        }
        handler::load_objects(&app, objs).map_err(|s| seed::SeedError::Object(s.message))?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| ServerError::Write {
            path: config.state_dir.clone(),
            source,
        })?;
        write(config.state_dir.join("ca.crt"), tls.ca_pem.as_bytes())?;
        write(config.state_dir.join("token"), token.as_bytes())?;
        // `addr` last: its presence tells the harness everything is ready.
        write(
            config.state_dir.join("addr.tmp"),
            addr.to_string().as_bytes(),
        )?;
        std::fs::rename(
            config.state_dir.join("addr.tmp"),
            config.state_dir.join("addr"),
        )
        .map_err(|source| ServerError::Write {
            path: config.state_dir.join("addr"),
            source,
        })?;
        Ok(Server {
            app,
            acceptor: tokio_rustls::TlsAcceptor::from(tls.config),
            listener,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        accept_loop(&self.listener, "kube-apisim", shutdown, |tcp, peer| {
            let acceptor = self.acceptor.clone();
            let app = self.app.clone();
            tokio::spawn(async move {
                let Ok(tls) =
                    tls_handshake(&acceptor, tcp, HANDSHAKE_TIMEOUT, "kube-apisim", peer).await
                else {
                    return;
                };
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler::handle(app, req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
            });
        })
        .await;
    }
}

/// Binds nothing itself: starts on `listener` and serves until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = Server::new(listener, config)?;
    server.run(shutdown).await;
    Ok(())
}
