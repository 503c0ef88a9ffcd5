//! mcp-warden-sidecar: the enforcement point in every MCP server pod.
//!
//! It alone holds the pod's service-account token. At start it creates a
//! local CA, a serving certificate and a local token, writes `ca.crt`,
//! `token` and `namespace` for the app, then serves TLS on localhost and
//! forwards authenticated requests to the real API server with the real
//! token (see [`proxy`] for the pipeline and [`hooks`] for where policy,
//! masking and recording plug in).
//!
//! Module ownership while the first version is built in parallel:
//! config/local/token/proxy/forward/admin/metrics/hooks (sidecar work),
//! `policy_store` + `policy_cli` (policy work), `mask_body` (masking work),
//! `recording` (recording work).

pub mod admin;
pub mod approval;
pub mod assemble;
pub mod config;
pub mod error;
pub mod forward;
pub mod hooks;
pub mod lifecycle;
pub mod local;
pub mod mask_body;
pub mod metrics;
pub mod policy_cli;
pub mod policy_store;
pub mod proxy;
pub mod recording;
pub mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{Check, Readiness};
pub use config::{Cli, Config, ConfigError, ServeArgs};
pub use hooks::{Hooks, RequestContext};
pub use metrics::Metrics;

/// Errors that stop the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A setting turned out unusable at start (e.g. an unreadable CA file).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local credentials could not be created or written.
    #[error(transparent)]
    Local(#[from] local::LocalError),
    /// The policy file is invalid at start (names `--policy-file`).
    #[error(transparent)]
    Policy(#[from] policy_store::PolicyStoreError),
    /// Recording could not start (spool or collector settings).
    #[error("recording: {0}")]
    Recording(#[from] recording::RecordError),
}

/// What the lead wires in: hooks and the shared registries. The defaults are
/// the proxy alone (no policy, no masking, no recording).
#[derive(Debug, Clone)]
pub struct Extensions {
    /// Policy, masking and recording hooks.
    pub hooks: Hooks,
    /// Metrics registry (others register theirs before or during the run).
    pub metrics: Arc<Metrics>,
    /// Readiness conditions (others add theirs).
    pub readiness: Arc<Readiness>,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            hooks: Hooks::default(),
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::new()),
        }
    }
}

/// hyper's HTTP/1 header timeout also runs while a keep-alive connection is
/// idle, so it doubles as the idle timeout: 90s like kube-apiserver's, so
/// pooled client connections are not closed sooner than a real API server would.
const IDLE_AND_HEADER_TIMEOUT: Duration = Duration::from_secs(90);

/// TLS handshakes that take longer than this are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the sidecar with the default [`Extensions`] until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(listener, admin, config, Extensions::default(), shutdown).await
}

/// Runs the sidecar: writes the local files, serves TLS on `listener` and the
/// admin endpoints on `admin`. When `shutdown` resolves it stops accepting,
/// closes streams and tunnels, lets in-flight requests finish within
/// `config.shutdown_grace`, and returns.
pub async fn run_with(
    listener: TcpListener,
    admin: TcpListener,
    config: Config,
    ext: Extensions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let Extensions {
        hooks,
        metrics,
        readiness,
    } = ext;
    let roots = forward::load_roots(&config.upstream_ca_file).map_err(|e| ConfigError {
        flag: "upstream-ca-file",
        env: "MCP_WARDEN_UPSTREAM_CA_FILE",
        message: e.to_string(),
    })?;
    let upstream = forward::Upstream::new(
        config.upstream.clone(),
        roots,
        config.upstream_connect_timeout,
    )
    .map_err(|e| ConfigError {
        flag: "upstream-ca-file",
        env: "MCP_WARDEN_UPSTREAM_CA_FILE",
        message: e.to_string(),
    })?;
    let token = Arc::new(token::TokenSource::new(&config.upstream_token_file));
    if let Err(e) = token.header() {
        // Not fatal: the kubelet may still be writing the volume; /readyz says so.
        tracing::warn!(error = %e, "upstream token not readable yet");
    }
    readiness.watch_token(token.clone());

    let creds = local::generate(&config.cluster_domain)?;
    local::write_files(
        &config.local_dir,
        &creds,
        &config.namespace(),
        config.app_uid,
    )?;
    readiness.set("local-files", Check::Ok);

    // The second app-facing listener (127.0.0.1:443 in a pod). Refused
    // permission (a runtime that does not give the non-root sidecar its
    // NET_BIND_SERVICE capability) does not stop the sidecar: the env-based
    // clients still work, and clients of https://kubernetes.default.svc
    // fail closed (the name points at 127.0.0.1, nothing answers). It is
    // logged as an error and reported on /readyz. Any other bind error is a
    // configuration error.
    let alias = match config.listen_https_alias {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => {
                readiness.set("https-alias", Check::Ok);
                Some(l)
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let msg = format!(
                    "cannot listen on {addr} (--listen-https-alias, MCP_WARDEN_LISTEN_HTTPS_ALIAS): {e}; \
                     the container needs NET_BIND_SERVICE in its effective set (or the pod's \
                     net.ipv4.ip_unprivileged_port_start at or below the port); clients of \
                     https://kubernetes.default.svc cannot connect"
                );
                tracing::error!("{msg}");
                readiness.set("https-alias", Check::Warning(msg));
                None
            }
            Err(e) => {
                return Err(RunError::Config(ConfigError {
                    flag: "listen-https-alias",
                    env: "MCP_WARDEN_LISTEN_HTTPS_ALIAS",
                    message: format!("cannot bind {addr}: {e}"),
                }));
            }
        },
    };
    // Open app connections (both listeners), for `wait-drain`.
    let app_connections = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    metrics.register(
        lifecycle::APP_CONNECTIONS_METRIC,
        "Open connections from the app to the TLS listeners",
        app_connections.clone(),
    );

    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin,
        metrics.clone(),
        readiness.clone(),
        stop_admin.clone(),
    ));

    let state = Arc::new(proxy::ProxyState {
        local_token: creds.token.clone(),
        upstream,
        token,
        metrics,
        hooks,
        streams_closed: CancellationToken::new(),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(creds.server_config.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(IDLE_AND_HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    let graceful = GracefulShutdown::new();
    // Cancelled when the grace period is over: drops what is still open.
    let force_close = CancellationToken::new();
    readiness.set("tls", Check::Ok);
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        https_alias = %alias.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        upstream = %config.upstream,
        local_dir = %config.local_dir.display(),
        "mcp-warden sidecar serving"
    );

    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = accept_either(&listener, alias.as_ref()) => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let force_close = force_close.clone();
        let open = ConnectionGuard::new(&app_connections);
        tokio::spawn(async move {
            let _open = open;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = service_fn(move |req| proxy::handle(state.clone(), req, peer));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .into_owned();
            tokio::select! {
                r = watcher.watch(conn) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = force_close.cancelled() => {}
            }
        });
    }

    tracing::info!(grace = ?config.shutdown_grace, "shutting down: no new connections, closing streams");
    readiness.set("shutdown", Check::Failing("shutting down".into()));
    drop(listener);
    drop(alias);
    state.streams_closed.cancel();
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over, dropping remaining connections");
    }
    force_close.cancel();
    stop_admin.cancel();
    let _ = admin_task.await;
    tracing::info!("mcp-warden sidecar stopped");
    Ok(())
}

/// The next connection on `main` or, if there is one, `alias`.
async fn accept_either(
    main: &TcpListener,
    alias: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match alias {
        None => main.accept().await,
        Some(a) => tokio::select! {
            r = main.accept() => r,
            r = a.accept() => r,
        },
    }
}

/// Counts one open app connection while alive.
struct ConnectionGuard(prometheus_client::metrics::gauge::Gauge<i64>);

impl ConnectionGuard {
    fn new(g: &prometheus_client::metrics::gauge::Gauge<i64>) -> Self {
        g.inc();
        ConnectionGuard(g.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Resolves on SIGTERM or SIGINT.
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
