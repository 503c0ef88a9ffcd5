//! The admin server (plain HTTP on `--admin-listen`): `/healthz` (the process
//! serves), `/readyz` (TLS, upstream token and local files are in place, and
//! whatever other parts report) and `/metrics`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::token::TokenSource;

/// State of one readiness condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// In place.
    Ok,
    /// Missing: the sidecar is not ready; the text says what is missing.
    Failing(String),
    /// Reported on /readyz but does not make the sidecar unready (e.g. an
    /// invalid policy while the last good one is still enforced).
    Warning(String),
}

/// Readiness conditions, by name. Other parts add theirs with [`Readiness::set`].
#[derive(Debug)]
pub struct Readiness {
    checks: Mutex<BTreeMap<String, Check>>,
    token: Mutex<Option<Arc<TokenSource>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready: TLS and local files are not in place yet.
    pub fn new() -> Self {
        let mut m = BTreeMap::new();
        m.insert(
            "tls".to_string(),
            Check::Failing("the TLS listener is not serving yet".into()),
        );
        m.insert(
            "local-files".to_string(),
            Check::Failing("ca.crt, token and namespace are not written yet".into()),
        );
        Readiness {
            checks: Mutex::new(m),
            token: Mutex::new(None),
        }
    }

    /// Sets a named condition.
    pub fn set(&self, name: &str, check: Check) {
        let mut g = match self.checks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.insert(name.to_string(), check);
    }

    /// The upstream token is checked live at every /readyz.
    pub fn watch_token(&self, token: Arc<TokenSource>) {
        if let Ok(mut g) = self.token.lock() {
            *g = Some(token);
        }
    }

    /// Whether ready, and the state of every condition.
    pub fn report(&self) -> (bool, BTreeMap<String, Check>) {
        let mut checks = match self.checks.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let token = self.token.lock().ok().and_then(|g| g.clone());
        let token_check = match token {
            Some(t) => match t.header() {
                Ok(_) => Check::Ok,
                Err(e) => Check::Failing(e.to_string()),
            },
            None => Check::Failing("the upstream token is not configured yet".into()),
        };
        checks.insert("upstream-token".into(), token_check);
        let ready = checks.values().all(|c| !matches!(c, Check::Failing(_)));
        (ready, checks)
    }
}

fn readyz_body(ready: bool, checks: &BTreeMap<String, Check>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, c) in checks {
        let v = match c {
            Check::Ok => serde_json::json!("ok"),
            Check::Failing(msg) => serde_json::json!({"failing": msg}),
            Check::Warning(msg) => serde_json::json!({"warning": msg}),
        };
        m.insert(k.clone(), v);
    }
    serde_json::json!({"ready": ready, "checks": m})
}

async fn serve_admin(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |code: StatusCode, ct: &'static str, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        ));
    }
    let resp = match req.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" => {
            let (ready, checks) = readiness.report();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_vec_pretty(&readyz_body(ready, &checks)).unwrap_or_default();
            text(code, "application/json", body)
        }
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode().into_bytes(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    };
    Ok(resp)
}

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| serve_admin(req, metrics.clone(), readiness.clone()));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_missing() {
        let r = Readiness::new();
        let (ready, checks) = r.report();
        assert!(!ready);
        assert!(matches!(checks["upstream-token"], Check::Failing(_)));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        r.watch_token(Arc::new(TokenSource::new(dir.path().join("token"))));
        r.set("tls", Check::Ok);
        r.set("local-files", Check::Ok);
        r.set(
            "policy",
            Check::Warning("invalid policy, keeping the last good one".into()),
        );
        let (ready, checks) = r.report();
        assert!(ready, "{checks:?}");
        let body = readyz_body(ready, &checks);
        assert_eq!(
            body["checks"]["policy"]["warning"],
            "invalid policy, keeping the last good one"
        );
    }
}
