//! mcp-warden-sidecar: the enforcement point in every MCP server pod.
//!
//! It alone holds the pod's service-account token. At start it creates a
//! local CA, a serving certificate and a local token, writes `ca.crt`,
//! `token` and `namespace` for the app, then serves TLS on localhost and
//! forwards authenticated requests to the real API server with the real
//! token (see [`proxy`] for the pipeline and [`hooks`] for where policy,
//! masking and recording plug in).

pub mod admin;
pub mod approval;
pub mod assemble;
pub mod bodies;
pub mod config;
pub mod enduser;
pub mod error;
pub mod forward;
pub mod hooks;
pub mod inflight;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod local;
pub mod logging;
pub mod mask_body;
pub mod mcp;
pub mod metrics;
pub mod policy_cli;
pub mod policy_store;
pub mod proxy;
pub mod recording;
pub mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// How long the admin listener stays up after the app listener has drained,
/// so probes and a last scrape still get answers.
const ADMIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

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
    let fd = limits::raise_fd_limit(&config.limits);
    if let Some(w) = &fd.warning {
        tracing::warn!(rlimit_nofile = ?fd.soft, "{w}");
    }
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
    // permission (a runtime that lets the non-root sidecar bind neither by
    // NET_BIND_SERVICE nor by the pod's ip_unprivileged_port_start) does not
    // stop the sidecar: the env-based clients still work, and clients of
    // https://kubernetes.default.svc fail closed (the name points at
    // 127.0.0.1, nothing answers). It is logged as an error and reported on
    // /readyz. Any other bind error is a configuration error.
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

    let admin = listener::serve(
        admin,
        config.limits.admin.clone(),
        None,
        admin::handler(metrics.clone(), readiness.clone()),
        metrics.clone(),
    );

    let end_users = enduser::from_config(&config)?;
    let state = Arc::new(proxy::ProxyState {
        local_token: creds.token.clone(),
        upstream,
        token,
        inflight: inflight::Inflight::new(
            config.limits.max_inflight_requests,
            config.limits.max_long_running_requests,
            &metrics,
        ),
        metrics: metrics.clone(),
        hooks,
        streams_closed: CancellationToken::new(),
        end_users,
        impersonate_end_user: config.oidc.as_ref().filter(|o| o.impersonate).map(|_| {
            proxy::ImpersonateEndUser {
                pod: config.pod_name.clone(),
            }
        }),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(creds.server_config.clone());
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let https_alias = alias
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Each app-facing listener has its own cap and metrics (`app`,
    // `app-https-alias`); `wait-drain` counts both.
    let alias = alias.map(|l| {
        listener::serve(
            l,
            config
                .limits
                .app
                .clone()
                .named(lifecycle::HTTPS_ALIAS_LISTENER),
            Some(acceptor.clone()),
            proxy_handler(state.clone()),
            metrics.clone(),
        )
    });
    let app = listener::serve(
        listener,
        config.limits.app.clone(),
        Some(acceptor),
        proxy_handler(state.clone()),
        metrics,
    );
    readiness.set("tls", Check::Ok);
    tracing::info!(
        listen = %listen,
        https_alias = %https_alias,
        upstream = %config.upstream,
        local_dir = %config.local_dir.display(),
        "mcp-warden sidecar serving"
    );

    shutdown.await;

    tracing::info!(grace = ?config.shutdown_grace, "shutting down: no new connections, closing streams");
    readiness.set("shutdown", Check::Failing("shutting down".into()));
    state.streams_closed.cancel();
    match alias {
        Some(alias) => {
            tokio::join!(
                app.shutdown(config.shutdown_grace),
                alias.shutdown(config.shutdown_grace)
            );
        }
        None => {
            app.shutdown(config.shutdown_grace).await;
        }
    }
    admin.shutdown(ADMIN_SHUTDOWN_GRACE).await;
    tracing::info!("mcp-warden sidecar stopped");
    Ok(())
}

/// The proxy pipeline as a [`listener::Handler`]: what every app-facing
/// listener serves.
pub fn proxy_handler(state: Arc<proxy::ProxyState>) -> listener::Handler {
    Arc::new(move |req, peer| {
        let state = state.clone();
        Box::pin(async move {
            match proxy::handle(state, req, peer).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    })
}
