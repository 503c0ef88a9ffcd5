//! Shared support for the sidecar's end-to-end tests: a small TLS upstream
//! that records what reaches it, an in-process sidecar, and an HTTPS client
//! configured only from the sidecar's local directory.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_warden_sidecar::config::Cli;
use mcp_warden_sidecar::hooks::{ProxyBody, full};
use mcp_warden_sidecar::{Extensions, RunError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub type BoxBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub version: http::Version,
}

impl Seen {
    pub fn authorization(&self) -> Option<String> {
        self.headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// A self-signed CA + serving cert for 127.0.0.1, as PEM strings and rustls parts.
pub fn test_pki() -> (String, rustls::ServerConfig) {
    use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa, server_config};
    let ca = LocalCa::generate(&CaProfile::new("test upstream CA")).unwrap();
    let leaf = ca
        .issue(&LeafProfile::new(["127.0.0.1", "localhost"]))
        .unwrap();
    let cfg = server_config(
        vec![leaf.cert_der.clone()],
        leaf.key_der(),
        &[b"h2", b"http/1.1"],
    )
    .unwrap();
    (ca.cert_pem, cfg)
}

/// A TLS upstream that stands in for the API server in the fast tests. It
/// accepts the bearer tokens in `accepted`, records every request, and has a
/// few special paths:
/// - `/stream`: sends `first\n`, waits for `release`, sends `second\n`;
/// - `/slow`: answers after 1.5s;
/// - `/collect`: reads the whole request body, then answers;
/// - any request with `Upgrade` (a naive upstream that upgrades whatever
///   it is asked to): 101, then echoes bytes upper-cased;
/// - anything else: 200 `{"ok":true}`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub accepted: Arc<Mutex<Vec<String>>>,
    pub release: Arc<Notify>,
    _dir: tempfile::TempDir,
}

impl Upstream {
    pub async fn start(accepted: &[&str]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cfg) = test_pki();
        let ca_file = dir.path().join("upstream-ca.crt");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(
            accepted.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
        let release = Arc::new(Notify::new());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let (s, a, r) = (seen.clone(), accepted.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (s, a, r) = (s.clone(), a.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        upstream_handle(req, s.clone(), a.clone(), r.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            ca_file,
            seen,
            accepted,
            release,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream_handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
) -> Result<Response<BoxBody>, Infallible> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path_and_query: pq.clone(),
        headers: req.headers().clone(),
        version: req.version(),
    });
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ok = accepted
        .lock()
        .unwrap()
        .iter()
        .any(|t| auth == format!("Bearer {t}"));
    if !ok {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
        ));
    }
    let path = req.uri().path().to_string();
    if path.ends_with("/stream") {
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
        >(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"first\n"))))
                .await;
            release.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"second\n"))))
                .await;
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        resp.headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        resp.headers_mut()
            .insert("connection", "x-secret-hop".parse().unwrap());
        resp.headers_mut()
            .insert("x-secret-hop", "must-not-pass".parse().unwrap());
        return Ok(resp);
    }
    if path.ends_with("/collect") {
        // Reads the whole request body before answering.
        return Ok(match req.into_body().collect().await {
            Ok(_) => json(StatusCode::OK, r#"{"collected":true}"#),
            Err(_) => json(StatusCode::BAD_REQUEST, r#"{"collected":false}"#),
        });
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        return Ok(json(StatusCode::OK, r#"{"slow":true}"#));
    }
    if req.headers().contains_key("upgrade") {
        let proto = req.headers().get("upgrade").unwrap().clone();
        let mut req = req;
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut io = TokioIo::new(up);
            let mut buf = [0u8; 1024];
            loop {
                let n = match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let out: Vec<u8> = buf[..n].to_ascii_uppercase();
                if io.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(
            Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("upgrade", proto);
        resp.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        resp.headers_mut().insert(
            "x-stream-protocol-version",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        return Ok(resp);
    }
    Ok(json(StatusCode::OK, r#"{"ok":true}"#))
}

fn json(code: StatusCode, body: &'static str) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A sidecar running in this test process (`run_with` on a tokio task), so
/// a test can hand it hooks (`Extensions`) and await its shutdown; the
/// binary as a child process is `mcp_warden_tests::stack::Sidecar`.
pub struct InProcessSidecar {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub local_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<Result<(), RunError>>>,
    _dir: tempfile::TempDir,
}

impl InProcessSidecar {
    /// Starts a sidecar in front of `upstream_url` with the given CA and token
    /// files; `extra` flags are appended. Waits until /readyz is 200.
    pub async fn start(
        upstream_url: &str,
        ca_file: &Path,
        token_file: &Path,
        extra: &[&str],
    ) -> InProcessSidecar {
        Self::start_with(
            upstream_url,
            ca_file,
            token_file,
            extra,
            Extensions::default(),
        )
        .await
    }

    pub async fn start_with(
        upstream_url: &str,
        ca_file: &Path,
        token_file: &Path,
        extra: &[&str],
        ext: Extensions,
    ) -> InProcessSidecar {
        let dir = tempfile::tempdir().unwrap();
        let local_dir = dir.path().join("local");
        let mut args: Vec<String> = vec![
            "mcp-warden-sidecar".into(),
            "--upstream".into(),
            upstream_url.into(),
            "--upstream-ca-file".into(),
            ca_file.display().to_string(),
            "--upstream-token-file".into(),
            token_file.display().to_string(),
            "--local-dir".into(),
            local_dir.display().to_string(),
            "--pod-namespace".into(),
            "default".into(),
        ];
        if !extra.contains(&"--shutdown-grace") {
            args.extend(["--shutdown-grace".to_string(), "5s".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = Cli::try_parse_from(args).unwrap().serve.validate().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(mcp_warden_sidecar::run_with(
            listener,
            admin,
            config,
            ext,
            async move {
                let _ = rx.await;
            },
        ));
        let sc = InProcessSidecar {
            addr,
            admin_addr,
            local_dir,
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: dir,
        };
        for _ in 0..200 {
            if let Ok((200, _)) = sc.admin_get("/readyz").await {
                return sc;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "sidecar did not become ready: {:?}",
            sc.admin_get("/readyz").await
        );
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.local_dir.join("token")).unwrap()
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.local_dir.join("ca.crt")).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// Plain HTTP/1.1 GET on the admin port: (status, body).
    pub async fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(self.admin_addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return (bounded).
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
}

/// Which ALPN protocols the test client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    H1,
    None,
}

pub type TestClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// Client config trusting exactly `ca_pem`.
pub fn client_tls(ca_pem: &str, alpn: Alpn) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = match alpn {
        Alpn::H2 => vec![b"h2".to_vec()],
        Alpn::H1 => vec![b"http/1.1".to_vec()],
        Alpn::None => vec![],
    };
    cfg
}

/// A hyper client trusting `ca_pem`; with H2 it speaks only HTTP/2.
pub fn client(ca_pem: &str, alpn: Alpn) -> TestClient {
    let mut tls = client_tls(ca_pem, alpn);
    tls.alpn_protocols.clear();
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let conn = match alpn {
        Alpn::H2 => b.enable_http2().build(),
        _ => b.enable_http1().build(),
    };
    let mut builder = Client::builder(TokioExecutor::new());
    if alpn == Alpn::H2 {
        builder.http2_only(true);
    }
    builder.build(conn)
}

/// Sends a request and collects the response: (status, headers, body).
pub async fn send(
    c: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        c.request(b.body(full(Bytes::new())).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body failed")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Writes a token file in the kubelet's projected-volume layout
/// (`DIR/..TS/token`, `DIR/..data -> ..TS`, `DIR/token -> ..data/token`),
/// swapping `..data` atomically and removing the previous data dir.
pub fn kubelet_write_token(dir: &Path, generation: u32, token: &str) {
    use std::os::unix::fs::symlink;
    let stamp = format!("..2026_11_21_00_00_{generation:02}.{}", 1000 + generation);
    let data = dir.join(&stamp);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("token"), token).unwrap();
    std::fs::write(data.join("namespace"), "default").unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["token", "namespace"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// The value of `mcp_warden_open_streams` in a metrics exposition.
pub fn open_streams(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mcp_warden_open_streams "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}
