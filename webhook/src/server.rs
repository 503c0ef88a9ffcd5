//! The servers: `POST /mutate` over TLS, and `/healthz`, `/readyz`,
//! `/metrics` on the plain-HTTP admin listener.
//!
//! All HTTP error mapping lives in [`mutate`]: every failure leaves with a
//! body (an AdmissionReview response or a Kubernetes `Status`).

use crate::admission;
use crate::config::InjectConfig;
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
use mcp_warden_shared::status::{Reason, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
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

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Injection settings.
    pub inject: InjectConfig,
    /// Serving certificate.
    pub tls: TlsSource,
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
    metrics: Metrics,
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
    let answer = admission::answer(&body, &state.inject);
    let uid = answer
        .body
        .pointer("/response/uid")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    tracing::info!(
        uid,
        outcome = answer.outcome,
        patch_ops = answer.patch_ops,
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

/// The `/mutate` router (exposed for in-process tests without TLS).
pub fn mutate_router(inject: InjectConfig) -> Router {
    router(Arc::new(AppState {
        inject,
        metrics: Metrics::new(),
    }))
}

/// AccessRequest status admission (see [`crate::approval`]).
async fn approval_review(body: axum::body::Bytes, mode: crate::approval::Mode) -> Response {
    let (code, v) = crate::approval::answer(&body, mode, time::OffsetDateTime::now_utc());
    json_response(code, &v)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route(
            crate::approval::MUTATE_PATH,
            post(|b: axum::body::Bytes| approval_review(b, crate::approval::Mode::Mutate)),
        )
        .route(
            crate::approval::VALIDATE_PATH,
            post(|b: axum::body::Bytes| approval_review(b, crate::approval::Mode::Validate)),
        )
        .fallback(not_found)
        .with_state(state)
}

fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
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
    let state = Arc::new(AppState {
        inject: config.inject,
        metrics: Metrics::new(),
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
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Small request/response exchanges: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut conn_stop = stop_rx.clone();
        conns.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
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
    }
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
