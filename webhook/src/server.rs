//! The servers: `POST /mutate` over TLS, and `/healthz`, `/readyz`,
//! `/metrics` on the plain-HTTP admin listener.
//!
//! All HTTP error mapping lives in [`mutate`]: every failure leaves with a
//! body (an AdmissionReview response or a Kubernetes `Status`).

use crate::admission;
use crate::config::{InjectConfig, KubeVersion, NativeSidecar, SidecarForm};
use crate::selfmanaged::{self, SelfManagedConfig};
use crate::tls::{CertFiles, CertStore, TlsError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mcp_warden_io::accept::{HANDSHAKE_TIMEOUT, accept_loop, tls_handshake};
use mcp_warden_shared::contract;
use mcp_warden_shared::status::{Reason, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB;
/// the review wraps the object twice for updates).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Errors that stop the servers.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Self-managed certificates could not be set up.
    #[error(transparent)]
    SelfManaged(#[from] selfmanaged::SelfManagedError),
    /// The Kubernetes client could not be configured.
    #[error("kubernetes client: {0}")]
    Kube(String),
    /// A listener failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (for example from cert-manager), reloaded when they change.
    Files(CertFiles),
    /// An in-memory store the caller manages.
    Store(Arc<CertStore>),
    /// The self-managed CA kept in a Secret (needs in-cluster credentials).
    SelfManaged(SelfManagedConfig),
}

/// Where `nativeSidecar: auto` learns the API server's version.
#[derive(Clone)]
pub enum ServerVersion {
    /// Read `/version` before serving, then every `recheck` (every 10 s
    /// while it cannot be read). Until it is known, `auto` injects the
    /// container form: every server accepts it, and the failure is logged.
    Detect {
        /// Interval between reads once the version is known.
        recheck: Duration,
        /// The client to read with; `None`: the in-cluster configuration
        /// (or `KUBECONFIG`), created on first use.
        client: Option<kube::Client>,
    },
    /// A version known in advance.
    Known(KubeVersion),
    /// Not known and not read (`auto` then means the container form).
    Unknown,
}

impl std::fmt::Debug for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerVersion::Detect { recheck, client } => f
                .debug_struct("Detect")
                .field("recheck", recheck)
                .field("client", &client.as_ref().map(|_| "given"))
                .finish(),
            ServerVersion::Known(v) => f.debug_tuple("Known").field(v).finish(),
            ServerVersion::Unknown => f.write_str("Unknown"),
        }
    }
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Injection settings.
    pub inject: InjectConfig,
    /// Serving certificate.
    pub tls: TlsSource,
    /// Where the server's version comes from (used only by `nativeSidecar: auto`).
    pub server_version: ServerVersion,
    /// The longest window a grant's approval may give (`--max-grant`).
    pub max_grant: Duration,
}

/// While the version cannot be read, how soon to try again.
const VERSION_RETRY: Duration = Duration::from_secs(10);

/// How long one read of `/version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The API server's version as last read (shared with the reader task).
#[derive(Debug, Default)]
pub struct VersionCell(RwLock<Option<KubeVersion>>);

impl VersionCell {
    /// The last version read, if any.
    pub fn get(&self) -> Option<KubeVersion> {
        match self.0.read() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    fn set(&self, v: KubeVersion) -> bool {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let changed = *g != Some(v);
        *g = Some(v);
        changed
    }
}

async fn read_version(client: &mut Option<kube::Client>) -> Result<KubeVersion, String> {
    // GET /version needs no RBAC (system:public-info-viewer).
    let attempt = async {
        if client.is_none() {
            *client = Some(
                kube::Client::try_default()
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let Some(c) = client.as_ref() else {
            return Err("no client".to_string());
        };
        let info = c.apiserver_version().await.map_err(|e| e.to_string())?;
        KubeVersion::from_parts(&info.major, &info.minor).ok_or_else(|| {
            format!(
                "unreadable version major={:?} minor={:?} ({})",
                info.major, info.minor, info.git_version
            )
        })
    };
    match tokio::time::timeout(VERSION_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {VERSION_TIMEOUT:?}")),
    }
}

/// One read of the version into `cell`, logged; true when it is known.
async fn refresh_version(
    cell: &VersionCell,
    client: &mut Option<kube::Client>,
    keep_client: bool,
    native: NativeSidecar,
) -> bool {
    match read_version(client).await {
        Ok(v) => {
            if cell.set(v) {
                tracing::info!(
                    server_version = %v,
                    sidecar_form = native.resolve(Some(v)).as_str(),
                    "nativeSidecar: auto: read the API server's version"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                sidecar_form = native.resolve(cell.get()).as_str(),
                "nativeSidecar: auto: cannot read the API server's version (GET /version); \
                 injecting the form for the last version read, or the container form, which \
                 every server accepts, until it can"
            );
            // An in-cluster client is re-created: its config may be stale.
            if !keep_client {
                *client = None;
            }
            false
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Prometheus metrics of the webhook.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    admissions: Family<OutcomeLabels, Counter>,
    latency: Histogram,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_warden_webhook");
        let admissions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by outcome",
            admissions.clone(),
        );
        let latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        registry.register(
            "admission_duration_seconds",
            "Time to answer one admission review",
            latency.clone(),
        );
        Metrics {
            registry,
            admissions,
            latency,
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

struct AppState {
    inject: InjectConfig,
    version: Arc<VersionCell>,
    metrics: Metrics,
    max_grant: Duration,
}

impl AppState {
    /// The sidecar form for the next pod.
    fn form(&self) -> SidecarForm {
        self.inject.native_sidecar.resolve(self.version.get())
    }
}

fn json_response(status: u16, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn status_response(reason: Reason, msg: impl Into<String>) -> Response {
    let s = Status::new(reason, msg);
    json_response(s.code(), &s.to_value())
}

async fn mutate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            state
                .metrics
                .admissions
                .get_or_create(&OutcomeLabels {
                    outcome: "invalid".into(),
                })
                .inc();
            return status_response(
                Reason::RequestEntityTooLarge,
                format!("cannot read the AdmissionReview body (limit {MAX_BODY_BYTES} bytes): {e}"),
            );
        }
    };
    let form = state.form();
    let answer = admission::answer(&body, &state.inject, form);
    let uid = answer
        .body
        .pointer("/response/uid")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    tracing::info!(
        uid,
        outcome = answer.outcome,
        patch_ops = answer.patch_ops,
        sidecar_form = form.as_str(),
        "admission review"
    );
    state
        .metrics
        .admissions
        .get_or_create(&OutcomeLabels {
            outcome: answer.outcome.to_string(),
        })
        .inc();
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    json_response(answer.http_status, &answer.body)
}

async fn not_found() -> Response {
    status_response(Reason::NotFound, "the webhook serves POST /mutate")
}

async fn method_not_allowed() -> Response {
    status_response(Reason::MethodNotAllowed, "use POST for /mutate")
}

/// The `/mutate` router (exposed for in-process tests without TLS), for a
/// server of version `server` (`None`: unknown).
pub fn mutate_router(inject: InjectConfig, server: Option<KubeVersion>) -> Router {
    let version = Arc::new(VersionCell::default());
    if let Some(v) = server {
        version.set(v);
    }
    router(Arc::new(AppState {
        inject,
        version,
        metrics: Metrics::new(),
        max_grant: mcp_warden_shared::grant::DEFAULT_MAX_GRANT,
    }))
}

/// AccessRequest status admission (see [`crate::approval`]).
async fn approval_review(
    state: Arc<AppState>,
    body: axum::body::Bytes,
    mode: crate::approval::Mode,
) -> Response {
    let (code, v) = crate::approval::answer(
        &body,
        mode,
        time::OffsetDateTime::now_utc(),
        state.max_grant,
    );
    json_response(code, &v)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            contract::MUTATE_PATH,
            post(mutate).fallback(method_not_allowed),
        )
        .route(
            crate::approval::MUTATE_PATH,
            post(|State(s): State<Arc<AppState>>, b: axum::body::Bytes| {
                approval_review(s, b, crate::approval::Mode::Mutate)
            }),
        )
        .route(
            crate::approval::VALIDATE_PATH,
            post(|State(s): State<Arc<AppState>>, b: axum::body::Bytes| {
                approval_review(s, b, crate::approval::Mode::Validate)
            }),
        )
        .fallback(not_found)
        .with_state(state)
}

fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(contract::HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(contract::READYZ_PATH, get(|| async { "ok\n" }))
        .route(
            contract::METRICS_PATH,
            get(|State(s): State<Arc<AppState>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
                    .into_response()
            }),
        )
        .fallback(not_found)
        .with_state(state)
}

// Resolves once shutdown is signalled; the guard `wait_for` returns is
// dropped here so callers' futures stay `Send`.
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves `/mutate` on `listener` (TLS) and the admin endpoints on
/// `admin_listener` until `shutdown` resolves; in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    admin_listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let store = match config.tls {
        TlsSource::Store(s) => s,
        TlsSource::Files(files) => {
            let (ck, fp) = files.load()?;
            let store = CertStore::new(ck);
            tokio::spawn(files.watch(store.clone(), fp, stop_rx.clone()));
            store
        }
        TlsSource::SelfManaged(sm) => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| ServeError::Kube(e.to_string()))?;
            let (store, material) = selfmanaged::bootstrap(&client, &sm).await?;
            tokio::spawn(selfmanaged::maintain(
                client,
                sm,
                store.clone(),
                material,
                stop_rx.clone(),
            ));
            store
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(store.server_config()?));
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "mcp-warden-webhook serving"
    );
    let version = Arc::new(VersionCell::default());
    match (&config.server_version, config.inject.native_sidecar) {
        (_, NativeSidecar::True | NativeSidecar::False) => {
            tracing::info!(
                native_sidecar = config.inject.native_sidecar.as_str(),
                "sidecar form pinned by nativeSidecar"
            );
        }
        (ServerVersion::Known(v), NativeSidecar::Auto) => {
            version.set(*v);
        }
        (ServerVersion::Unknown, NativeSidecar::Auto) => {
            tracing::warn!(
                "nativeSidecar: auto without a server version: injecting the container form"
            );
        }
        (ServerVersion::Detect { recheck, client }, NativeSidecar::Auto) => {
            // Read once before serving, so the first pods get the right form.
            let keep_client = client.is_some();
            let mut client = client.clone();
            let native = config.inject.native_sidecar;
            refresh_version(&version, &mut client, keep_client, native).await;
            let cell = version.clone();
            let recheck = *recheck;
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut known = cell.get().is_some();
                loop {
                    let wait = if known {
                        recheck
                    } else {
                        VERSION_RETRY.min(recheck)
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    known = refresh_version(&cell, &mut client, keep_client, native).await || known;
                }
            });
        }
    }
    let state = Arc::new(AppState {
        inject: config.inject,
        version,
        metrics: Metrics::new(),
        max_grant: config.max_grant,
    });

    let admin = admin_router(state.clone());
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(async move {
                stopped(&mut admin_stop).await;
            })
            .await
    });

    let app = router(state);
    let mut stop = stop_rx.clone();
    let mut conns = tokio::task::JoinSet::new();
    accept_loop(&listener, "webhook", stopped(&mut stop), |tcp, peer| {
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut conn_stop = stop_rx.clone();
        conns.spawn(async move {
            let Ok(tls) = tls_handshake(&acceptor, tcp, HANDSHAKE_TIMEOUT, "webhook", peer).await
            else {
                return;
            };
            let svc = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection error");
                    }
                }
                _ = stopped(&mut conn_stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set stays small.
        while conns.try_join_next().is_some() {}
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    match admin_task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServeError::Io {
            what: "admin server",
            source,
        }),
        Err(_) => Ok(()),
    }
}
