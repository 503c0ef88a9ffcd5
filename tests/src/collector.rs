//! mcp-warden-collector: a small audit collector for tests and the demo.
//!
//! It accepts what the sidecar's sender POSTs and writes it to files:
//! - events, as an `audit.k8s.io/v1` `EventList` (`application/json`, the
//!   body kube-apiserver's audit webhook backend sends) or NDJSON
//!   (`application/x-ndjson`), on any path except `.../sessions/<id>`:
//!   every event is checked against the audit types and appended as one
//!   line to `OUT/events.ndjson`, and the body itself is kept verbatim as
//!   `OUT/bodies/<n>.<json|ndjson>` (so tests can check the wire format);
//! - session casts (`application/x-asciicast`) POSTed to
//!   `.../sessions/<auditID>`: written to `OUT/sessions/<auditID>.cast`
//!   (a redelivery overwrites the same file).
//!
//! Knobs simulate a bad collector: `fail_first` answers the first N
//! requests with 503, `status_code` answers every request with a fixed code
//! without storing anything; both can be changed at run time through
//! [`Control`] for in-process tests.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mcp_warden_io::accept::{HANDSHAKE_TIMEOUT, accept_loop, tls_handshake};
use mcp_warden_io::pki::{
    CaProfile, LeafProfile, LocalCa, PkiError, provider, server_config_with_client_auth,
};
use mcp_warden_shared::audit::Event;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;

/// Run-time knobs and counters, shared with the server.
#[derive(Debug, Default)]
pub struct Control {
    /// Requests still to be answered with 503 before normal service.
    pub fail_next: AtomicUsize,
    /// When non-zero, every request is answered with this code and nothing
    /// is stored.
    pub status_code: AtomicU16,
    /// Requests received.
    pub requests: AtomicU64,
    /// Events stored.
    pub events: AtomicU64,
    /// Sessions stored.
    pub sessions: AtomicU64,
    /// Event bodies stored (numbers the files under `OUT/bodies/`).
    pub bodies: AtomicU64,
}

/// Collector settings.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Where `events.ndjson` and `sessions/` are written.
    pub out_dir: PathBuf,
    /// Bearer token required in `Authorization`, if any.
    pub token: Option<String>,
    /// TLS server configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Knobs and counters.
    pub control: Arc<Control>,
}

impl CollectorConfig {
    /// Plain HTTP, no token, no failures.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            token: None,
            tls: None,
            control: Arc::new(Control::default()),
        }
    }
}

/// Errors of the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS material: {0}")]
    Pki(#[from] PkiError),
    #[error("building TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {path}: {why}")]
    ClientCa { path: PathBuf, why: String },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CollectorError + 'a {
    move |source| CollectorError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Create a CA and a serving certificate for 127.0.0.1, ::1 and localhost;
/// write `DIR/ca.crt`; return the server config. With `client_ca`, client
/// certificates signed by that PEM CA are required.
pub fn tls_config(
    dir: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, CollectorError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let ca = LocalCa::generate(&CaProfile::new("mcp-warden-collector-ca"))?;
    let leaf = ca.issue(&LeafProfile::new(["localhost", "127.0.0.1", "::1"]))?;
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, &ca.cert_pem).map_err(io("writing", &ca_path))?;
    let verifier = match client_ca {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path).map_err(io("reading", path))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| CollectorError::ClientCa {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })?;
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| CollectorError::ClientCa {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?;
            Some(verifier)
        }
    };
    let cfg = server_config_with_client_auth(
        verifier,
        vec![leaf.cert_der.clone(), ca.cert_der.clone()],
        leaf.key_der(),
        &[b"http/1.1"],
    )?;
    Ok(Arc::new(cfg))
}

struct State {
    cfg: CollectorConfig,
    events_file: Mutex<tokio::fs::File>,
}

/// Serve until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    cfg: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CollectorError> {
    let sessions = cfg.out_dir.join("sessions");
    tokio::fs::create_dir_all(&sessions)
        .await
        .map_err(io("creating", &sessions))?;
    let bodies = cfg.out_dir.join("bodies");
    tokio::fs::create_dir_all(&bodies)
        .await
        .map_err(io("creating", &bodies))?;
    let events_path = cfg.out_dir.join("events.ndjson");
    let events_file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&events_path)
        .await
        .map_err(io("opening", &events_path))?;
    let tls = cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let state = Arc::new(State {
        cfg,
        events_file: Mutex::new(events_file),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    accept_loop(&listener, "collector", shutdown, |sock, peer| {
        let state = state.clone();
        let tls = tls.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                Some(acc) => {
                    match tls_handshake(&acc, sock, HANDSHAKE_TIMEOUT, "collector", peer).await {
                        Ok(s) => {
                            tokio::select! {
                                r = http.serve_connection(TokioIo::new(s), svc) => r,
                                _ = stop.wait_for(|s| *s) => Ok(()),
                            }
                        }
                        Err(_) => Ok(()),
                    }
                }
                None => tokio::select! {
                    r = http.serve_connection(TokioIo::new(sock), svc) => r,
                    _ = stop.wait_for(|s| *s) => Ok(()),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    })
    .await;
    let _ = stop_tx.send(true);
    Ok(())
}

fn reply(code: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "code": code.as_u16(), "message": msg }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn token_ok(expected: &str, got: Option<&header::HeaderValue>) -> bool {
    let Some(v) = got.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(t) = v.strip_prefix("Bearer ") else {
        return false;
    };
    // Length-independent comparison is not needed for a test collector,
    // but it costs nothing.
    t.len() == expected.len()
        && t.bytes()
            .zip(expected.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

/// An `EventList` body with its items left as raw JSON text: the list is
/// read once and each item is then checked as an [`Event`] from its own
/// text, instead of building a `Value` tree and converting clones of it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEventList<'a> {
    kind: String,
    api_version: String,
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
}

/// Validate an events body and return one compact JSON line per event.
pub fn parse_events(content_type: &str, body: &[u8]) -> Result<Vec<String>, String> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let items: Vec<&str> = match mime {
        "application/json" => {
            let list: RawEventList<'_> = serde_json::from_slice(body).map_err(|e| {
                if e.is_data() {
                    format!("not an audit.k8s.io/v1 EventList: {e}")
                } else {
                    format!("invalid JSON: {e}")
                }
            })?;
            if list.kind != "EventList" || list.api_version != "audit.k8s.io/v1" {
                return Err(format!(
                    "expected kind EventList, apiVersion audit.k8s.io/v1, got {} {}",
                    list.kind, list.api_version
                ));
            }
            list.items.into_iter().map(|i| i.get()).collect()
        }
        "application/x-ndjson" => std::str::from_utf8(body)
            .map_err(|_| "NDJSON body is not UTF-8".to_string())?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect(),
        other => return Err(format!("unsupported content type {other:?}")),
    };
    let mut lines = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        serde_json::from_str::<Event>(item).map_err(|e| {
            if e.is_data() {
                format!("item {n}: not an audit Event: {e}")
            } else {
                format!("line {}: invalid JSON: {e}", n + 1)
            }
        })?;
        lines.push(compact_line(item)?);
    }
    Ok(lines)
}

/// The item as one compact line: as it came when it is compact already
/// (the sidecar sends it so), otherwise written again without whitespace.
fn compact_line(item: &str) -> Result<String, String> {
    let item = item.trim();
    if !has_whitespace_between_tokens(item) {
        return Ok(item.to_string());
    }
    // serde_json keeps the key order (`preserve_order`).
    serde_json::from_str::<serde_json::Value>(item)
        .map(|v| v.to_string())
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// Whether valid JSON text has whitespace outside its strings (compact
/// JSON has none; whitespace inside strings is content).
fn has_whitespace_between_tokens(json: &str) -> bool {
    let (mut in_str, mut esc) = (false, false);
    for b in json.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else if b == b'"' {
            in_str = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            return true;
        }
    }
    false
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ctl = &state.cfg.control;
    ctl.requests.fetch_add(1, Ordering::SeqCst);
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return reply(StatusCode::OK, "ok");
    }
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    if let Some(t) = &state.cfg.token
        && !token_ok(t, req.headers().get(header::AUTHORIZATION))
    {
        return reply(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    if ctl
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "simulated outage (--fail-first)",
        );
    }
    let forced = ctl.status_code.load(Ordering::SeqCst);
    if forced != 0 {
        let code = StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return reply(code, "simulated answer (--status-code)");
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::PAYLOAD_TOO_LARGE, &format!("reading body: {e}")),
    };
    if let Some((_, id)) = path.rsplit_once("/sessions/") {
        if !valid_id(id) {
            return reply(StatusCode::BAD_REQUEST, "invalid session id");
        }
        if !content_type.starts_with("application/x-asciicast") {
            return reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "sessions must be application/x-asciicast",
            );
        }
        let header_ok = body
            .split(|&b| b == b'\n')
            .next()
            .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .is_some_and(|h| h["version"] == 2);
        if !header_ok {
            return reply(StatusCode::BAD_REQUEST, "not an asciicast v2 document");
        }
        let file = state
            .cfg
            .out_dir
            .join("sessions")
            .join(format!("{id}.cast"));
        let tmp = file.with_extension("cast.tmp");
        let written = async {
            tokio::fs::write(&tmp, &body).await?;
            tokio::fs::rename(&tmp, &file).await
        }
        .await;
        return match written {
            Ok(()) => {
                ctl.sessions.fetch_add(1, Ordering::SeqCst);
                reply(StatusCode::OK, "stored")
            }
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("storing session: {e}"),
            ),
        };
    }
    let lines = match parse_events(&content_type, &body) {
        Ok(l) => l,
        Err(e) if e.starts_with("unsupported content type") => {
            return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e);
        }
        Err(e) => return reply(StatusCode::BAD_REQUEST, &e),
    };
    let mut out = String::with_capacity(body.len() + lines.len());
    for l in &lines {
        out.push_str(l);
        out.push('\n');
    }
    let ext = if content_type.starts_with("application/x-ndjson") {
        "ndjson"
    } else {
        "json"
    };
    let mut f = state.events_file.lock().await;
    // Numbered under the lock so a restarted collector (counter reset)
    // does not overwrite: skip names already taken.
    let raw_dir = state.cfg.out_dir.join("bodies");
    let res = async {
        let raw = loop {
            let n = ctl.bodies.fetch_add(1, Ordering::SeqCst);
            let p = raw_dir.join(format!("{n:08}.{ext}"));
            if !tokio::fs::try_exists(&p).await.unwrap_or(false)
                && !tokio::fs::try_exists(p.with_extension(if ext == "json" {
                    "ndjson"
                } else {
                    "json"
                }))
                .await
                .unwrap_or(false)
            {
                break p;
            }
        };
        tokio::fs::write(&raw, &body).await?;
        f.write_all(out.as_bytes()).await?;
        f.flush().await
    }
    .await;
    match res {
        Ok(()) => {
            ctl.events.fetch_add(lines.len() as u64, Ordering::SeqCst);
            reply(StatusCode::OK, "stored")
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("storing events: {e}"),
        ),
    }
}

/// Read `OUT/events.ndjson` back as events (for tests).
pub fn read_events(out_dir: &Path) -> Result<Vec<Event>, String> {
    let path = out_dir.join("events.ndjson");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIST: &str = include_str!("../fixtures/audit/eventlist-k8s-docs.json");

    #[test]
    fn parses_both_formats_and_rejects_garbage() {
        let lines = parse_events("application/json", LIST.as_bytes()).unwrap();
        assert_eq!(lines.len(), 5);
        let nd = lines.join("\n");
        assert_eq!(
            parse_events("application/x-ndjson", nd.as_bytes()).unwrap(),
            lines
        );
        // A pretty body stores the same compact lines as a compact one.
        let v: serde_json::Value = serde_json::from_str(LIST).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        assert_eq!(
            parse_events("application/json", pretty.as_bytes()).unwrap(),
            lines
        );
        assert!(lines.iter().all(|l| !l.contains('\n')));
        assert!(!has_whitespace_between_tokens(
            r#"{"a":"x y\" z","b":[1,{"c":" "}]}"#
        ));
        assert!(has_whitespace_between_tokens(r#"{"a":"x\\", "b":1}"#));
        assert!(parse_events("application/json", b"{\"kind\":\"Pod\"}").is_err());
        assert!(parse_events("application/x-ndjson", b"{\"level\":\"Metadata\"}\n").is_err());
        assert!(
            parse_events("text/plain", b"x")
                .unwrap_err()
                .starts_with("unsupported")
        );
        assert!(!valid_id("../x") && valid_id("abc-1"));
    }

    async fn post(
        addr: std::net::SocketAddr,
        path: &str,
        ct: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> u16 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::post(path)
            .header(header::HOST, "collector")
            .header(header::CONTENT_TYPE, ct);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        resp.status().as_u16()
    }

    #[tokio::test]
    async fn stores_events_and_sessions_with_knobs() {
        let d = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = CollectorConfig::new(d.path());
        cfg.token = Some("s3cret".into());
        cfg.control.fail_next.store(1, Ordering::SeqCst);
        let ctl = cfg.control.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, cfg, async {
            let _ = rx.await;
        }));
        let ev = || LIST.as_bytes().to_vec();
        assert_eq!(
            post(addr, "/audit", "application/json", None, ev()).await,
            401
        );
        assert_eq!(
            post(addr, "/audit", "application/json", Some("s3cret"), ev()).await,
            503
        );
        assert_eq!(
            post(addr, "/audit", "application/json", Some("s3cret"), ev()).await,
            200
        );
        assert_eq!(
            post(
                addr,
                "/audit",
                "application/json",
                Some("s3cret"),
                b"{}".to_vec()
            )
            .await,
            400
        );
        let cast = b"{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"hi\"]\n".to_vec();
        assert_eq!(
            post(
                addr,
                "/audit/sessions/abc-1",
                "application/x-asciicast",
                Some("s3cret"),
                cast.clone()
            )
            .await,
            200
        );
        assert_eq!(
            post(
                addr,
                "/audit/sessions/..",
                "application/x-asciicast",
                Some("s3cret"),
                cast.clone()
            )
            .await,
            400
        );
        ctl.status_code.store(400, Ordering::SeqCst);
        assert_eq!(
            post(addr, "/audit", "application/json", Some("s3cret"), ev()).await,
            400
        );
        ctl.status_code.store(0, Ordering::SeqCst);
        let events = read_events(d.path()).unwrap();
        assert_eq!(events.len(), 5, "only the accepted POST was stored");
        assert_eq!(events[1].audit_id, "2a3b4c5d-6e7f-4081-92a3-b4c5d6e7f809");
        assert_eq!(
            std::fs::read(d.path().join("sessions/abc-1.cast")).unwrap(),
            cast
        );
        assert_eq!(ctl.events.load(Ordering::SeqCst), 5);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
