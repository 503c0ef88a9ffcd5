//! The admin server (plain HTTP on `--admin-listen`): `/healthz` (the process
//! serves), `/readyz` (TLS, upstream token and local files are in place, and
//! whatever other parts report, such as recording being able to store
//! events) and `/metrics`. It is served by [`crate::listener`] with the
//! admin listener's own cap and timeouts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Bytes;
use mcp_warden_shared::contract;

use crate::hooks::{ProxyBody, full};
use crate::listener::Handler;
use crate::metrics::Metrics;
use crate::token::TokenSource;

/// A condition evaluated at every `/readyz` (e.g. "the spool has room").
pub type LiveCheck = Arc<dyn Fn() -> Check + Send + Sync>;

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
pub struct Readiness {
    checks: Mutex<BTreeMap<String, Check>>,
    live: Mutex<BTreeMap<String, LiveCheck>>,
    token: Mutex<Option<Arc<TokenSource>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").finish_non_exhaustive()
    }
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
            live: Mutex::new(BTreeMap::new()),
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

    /// Adds a named condition evaluated at every /readyz.
    pub fn set_live(&self, name: &str, check: LiveCheck) {
        let mut g = match self.live.lock() {
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
        let live: Vec<(String, LiveCheck)> = match self.live.lock() {
            Ok(g) => g.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(p) => p
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        for (name, check) in live {
            checks.insert(name, check());
        }
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

fn serve_admin(
    req: Request<ProxyBody>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<ProxyBody> {
    let text = |code: StatusCode, ct: &'static str, body: Vec<u8>| {
        let mut r = Response::new(full(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        );
    }
    match req.uri().path() {
        contract::HEALTHZ_PATH | "/livez" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        contract::READYZ_PATH => {
            let (ready, checks) = readiness.report();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_vec_pretty(&readyz_body(ready, &checks)).unwrap_or_default();
            text(code, "application/json", body)
        }
        contract::METRICS_PATH => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode().into_bytes(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

/// The admin endpoints as a [`Handler`] for [`crate::listener::serve`].
pub fn handler(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Handler {
    Arc::new(move |req, _peer| {
        let resp = serve_admin(req, &metrics, &readiness);
        Box::pin(async move { resp })
    })
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
