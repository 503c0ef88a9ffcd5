//! End-to-end tests of the sidecar against a small TLS upstream of our own:
//! authentication, what reaches the upstream, hostile paths, streaming,
//! upgrades, ALPN, local files, admin endpoints and graceful shutdown.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use crate::common::{Alpn, InProcessSidecar, Upstream, client, send};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use mcp_warden_sidecar::hooks::full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REAL: &str = "real-upstream-token";

async fn setup() -> (Upstream, InProcessSidecar, tempfile::TempDir) {
    let up = Upstream::start(&[REAL]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, REAL);
    let sc = InProcessSidecar::start(&up.url(), &up.ca_file, &tdir.path().join("token"), &[]).await;
    (up, sc, tdir)
}

#[tokio::test]
async fn local_files_are_exactly_ca_token_namespace() {
    let (_up, sc, _t) = setup().await;
    let mut names: Vec<String> = std::fs::read_dir(&sc.local_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "namespace", "token"]);
    let token = sc.token();
    assert_eq!(token.len(), 43, "256-bit base64url token");
    assert!(!token.ends_with('\n'));
    assert_ne!(token, REAL);
    assert_eq!(
        std::fs::read_to_string(sc.local_dir.join("namespace")).unwrap(),
        "default"
    );
    assert!(!sc.ca_pem().contains("PRIVATE"));
    sc.stop().await;
}

#[tokio::test]
async fn serving_certificate_covers_every_in_cluster_name() {
    let (_up, sc, _t) = setup().await;
    for name in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        let tls = common::client_tls(&sc.ca_pem(), Alpn::H1);
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
        let sni = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        connector
            .connect(sni, tcp)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // And ::1 when the host has IPv6 loopback.
    let sni = rustls_pki_types::ServerName::try_from("::1").unwrap();
    let tls = common::client_tls(&sc.ca_pem(), Alpn::H1);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    connector.connect(sni, tcp).await.unwrap();
    sc.stop().await;
}

#[tokio::test]
async fn local_token_required_and_never_forwarded() {
    let (up, sc, _t) = setup().await;
    let c = client(&sc.ca_pem(), Alpn::H1);
    let url = sc.url("/api/v1/namespaces/default/pods");
    let token = sc.token();
    let wrong = format!("Bearer {}x", token);
    let basic = format!("Basic {token}");
    for headers in [
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", basic.as_str())],
        vec![("authorization", REAL)],
    ] {
        let (code, h, body) = send(&c, "DELETE", &url, &headers).await;
        assert_eq!(code, 401, "{headers:?}: {body}");
        assert_eq!(h["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Unauthorized");
        assert_eq!(v["code"], 401);
    }
    assert!(
        up.seen().is_empty(),
        "refused requests reached the upstream: {:?}",
        up.seen()
    );

    // The Python client sends the scheme in lower case.
    let lower = format!("bearer {token}");
    let (code, _, body) = send(&c, "GET", &url, &[("authorization", lower.as_str())]).await;
    assert_eq!(code, 200, "{body}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization().unwrap(), format!("Bearer {REAL}"));
    assert_eq!(seen[0].path_and_query, "/api/v1/namespaces/default/pods");
    // Host (HTTP/1.1) or :authority (HTTP/2) names the upstream, never the sidecar.
    if let Some(host) = seen[0].headers.get("host") {
        assert_eq!(host, &up.addr.to_string());
    }
    assert!(!format!("{:?}", seen[0].headers).contains(&sc.addr.to_string()));
    assert!(
        seen.iter()
            .all(|s| !format!("{:?}", s.headers).contains(&token)),
        "local token leaked upstream"
    );
    let (_, metrics) = sc.admin_get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"mcp_warden_requests_total{verb="unknown",resource="",code="401"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mcp_warden_requests_total{verb="list",resource="pods",code="200"} 1"#),
        "{metrics}"
    );
    sc.stop().await;
}

#[tokio::test]
async fn hostile_paths_are_refused_and_never_forwarded() {
    let (up, sc, _t) = setup().await;
    let c = client(&sc.ca_pem(), Alpn::H1);
    let auth = format!("Bearer {}", sc.token());
    for path in [
        "/api/v1/namespaces/a%2Fb/pods",
        "/api/v1/namespaces/a%2fb/pods",
        "/api/v1/../secrets",
        "/api/v1/namespaces/default/pods/..",
        "//api/v1/pods",
        "/api/./v1/pods",
        "/api/v1/namespaces/default/pods/%2e%2e",
        "/api/v1/namespaces//pods",
    ] {
        let (code, _, body) = send(
            &c,
            "GET",
            &sc.url(path),
            &[("authorization", auth.as_str())],
        )
        .await;
        assert_eq!(code, 400, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reason"], "BadRequest", "{path}");
    }
    assert!(
        up.seen().is_empty(),
        "hostile paths reached the upstream: {:?}",
        up.seen()
    );
    sc.stop().await;
}

#[tokio::test]
async fn impersonation_is_refused_until_policy_allows_it() {
    let (up, sc, _t) = setup().await;
    let c = client(&sc.ca_pem(), Alpn::H2);
    let auth = format!("Bearer {}", sc.token());
    let (code, _, body) = send(
        &c,
        "GET",
        &sc.url("/api/v1/namespaces/kube-system/secrets"),
        &[
            ("authorization", auth.as_str()),
            ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"),
        ],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "Forbidden");
    assert!(up.seen().is_empty());
    sc.stop().await;
}

#[tokio::test]
async fn alpn_h2_and_no_alpn_both_work_and_hop_headers_are_dropped() {
    let (up, sc, _t) = setup().await;
    let auth = format!("Bearer {}", sc.token());
    for alpn in [Alpn::H2, Alpn::H1, Alpn::None] {
        let c = client(&sc.ca_pem(), alpn);
        let (code, _, body) = send(
            &c,
            "GET",
            &sc.url("/api/v1/pods?limit=5"),
            &[("authorization", auth.as_str())],
        )
        .await;
        assert_eq!(code, 200, "{alpn:?}: {body}");
    }
    // Raw TLS without ALPN: the server answers HTTP/1.1.
    let tls = common::client_tls(&sc.ca_pem(), Alpn::None);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let mut s = connector
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    s.write_all(format!("GET /version HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: {auth}\r\nConnection: close, x-drop\r\nX-Drop: 1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let last = up.seen().pop().unwrap();
    assert_eq!(last.path_and_query, "/version");
    assert!(
        !last.headers.contains_key("x-drop"),
        "header named by Connection was forwarded"
    );
    // The upstream offered h2 and the sidecar's pool used it.
    assert!(
        up.seen().iter().all(|s| s.version == http::Version::HTTP_2),
        "{:?}",
        up.seen().iter().map(|s| s.version).collect::<Vec<_>>()
    );
    sc.stop().await;
}

#[tokio::test]
async fn stream_chunks_arrive_before_the_stream_ends() {
    let (up, sc, _t) = setup().await;
    let auth = format!("Bearer {}", sc.token());
    for alpn in [Alpn::H1, Alpn::H2] {
        let c = client(&sc.ca_pem(), alpn);
        // The test upstream streams on paths ending in /stream: a watch of pod "stream".
        let req = Request::get(sc.url("/api/v1/namespaces/default/stream?watch=true"))
            .header("authorization", &auth)
            .body(full(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            !resp.headers().contains_key("x-secret-hop"),
            "hop-by-hop response header passed"
        );
        let mut body = resp.into_body();
        let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("first chunk held back")
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first\n");
        let (_, m) = sc.admin_get("/metrics").await.unwrap();
        assert!(common::open_streams(&m) >= 1, "{}", m);
        up.release.notify_one();
        let mut rest = Vec::new();
        while let Some(f) = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
        {
            if let Ok(d) = f.unwrap().into_data() {
                rest.extend_from_slice(&d);
            }
        }
        assert_eq!(rest, b"second\n");
    }
    sc.stop().await;
}

#[tokio::test]
async fn upgrades_are_tunnelled_both_ways() {
    let (up, sc, _t) = setup().await;
    let auth = format!("Bearer {}", sc.token());
    for proto in ["SPDY/3.1", "websocket"] {
        let c = client(&sc.ca_pem(), Alpn::None);
        let req = Request::post(sc.url("/api/v1/namespaces/default/pods/p/exec"))
            .header("authorization", &auth)
            .header("connection", "Upgrade")
            .header("upgrade", proto)
            .header("x-stream-protocol-version", "v4.channel.k8s.io")
            .body(full(Bytes::new()))
            .unwrap();
        let mut resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 101, "{proto}");
        assert_eq!(resp.headers()["upgrade"], proto);
        assert_eq!(
            resp.headers()["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
        let io = hyper::upgrade::on(&mut resp).await.unwrap();
        let mut io = TokioIo::new(io);
        for msg in ["hello", "second message"] {
            io.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(buf, msg.to_uppercase().as_bytes());
        }
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.version == http::Version::HTTP_11 && s.headers.contains_key("upgrade"))
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization().unwrap() == format!("Bearer {REAL}"))
    );
    sc.stop().await;
}

#[tokio::test]
async fn admin_endpoints() {
    let (_up, sc, tdir) = setup().await;
    let c = client(&sc.ca_pem(), Alpn::H2);
    let auth = format!("Bearer {}", sc.token());
    let (code, _, _) = send(
        &c,
        "GET",
        &sc.url("/api"),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = sc.admin_get("/healthz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = sc.admin_get("/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    for k in ["tls", "local-files", "upstream-token"] {
        assert_eq!(v["checks"][k], "ok", "{body}");
    }
    let (code, body) = sc.admin_get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    for m in [
        "mcp_warden_requests_total",
        "mcp_warden_upstream_latency_seconds",
        "mcp_warden_open_streams",
    ] {
        assert!(body.contains(m), "{m} missing: {body}");
    }
    // A token that cannot be read (never read before) makes it unready, naming the file.
    drop(tdir);
    let sc2 = {
        let up = Upstream::start(&[REAL]).await;
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("token"), REAL).unwrap();
        let s = InProcessSidecar::start(&up.url(), &up.ca_file, &t.path().join("token"), &[]).await;
        (up, s, t)
    };
    sc.stop().await;
    let (_up2, sc2, t2) = sc2;
    std::fs::remove_file(t2.path().join("token")).unwrap();
    // The cached token keeps it ready (no failed request across a rotation).
    let (code, _) = sc2.admin_get("/readyz").await.unwrap();
    assert_eq!(code, 200);
    sc2.stop().await;
}

#[tokio::test]
async fn shutdown_lets_unary_requests_finish_and_closes_streams() {
    let (up, mut sc, _t) = setup().await;
    let auth = format!("Bearer {}", sc.token());
    let c = client(&sc.ca_pem(), Alpn::H1);
    // An open watch-like stream.
    let req = Request::get(sc.url("/api/v1/namespaces/default/stream?watch=true"))
        .header("authorization", &auth)
        .body(full(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let mut stream_body = resp.into_body();
    let first = stream_body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first\n");
    // A slow unary request in flight.
    let c2 = client(&sc.ca_pem(), Alpn::H2);
    let url = sc.url("/api/v1/namespaces/default/pods/slow");
    let auth2 = auth.clone();
    let slow =
        tokio::spawn(
            async move { send(&c2, "GET", &url, &[("authorization", auth2.as_str())]).await },
        );
    // Shut down once the slow request is in flight upstream (bounded wait).
    let in_flight = async {
        while !up
            .seen()
            .iter()
            .any(|s| s.path_and_query.ends_with("/slow"))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("slow request never arrived");
    sc.begin_shutdown();
    // The stream ends cleanly (no more frames) although the upstream never finished it.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream_body.frame().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(format!("{e:?}")),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("stream not closed at shutdown");
    assert!(end.is_ok(), "{end:?}");
    let (code, _, body) = slow.await.unwrap();
    assert_eq!(code, 200, "in-flight request cut by shutdown: {body}");
    assert_eq!(body, r#"{"slow":true}"#);
    let handle = sc.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(sc.addr).await.is_err());
}

#[tokio::test]
async fn token_rotation_by_data_symlink_swap_fails_no_request() {
    const OLD: &str = "sa-token-generation-1";
    const NEW: &str = "sa-token-generation-2";
    let up = Upstream::start(&[OLD]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, OLD);
    let sc = InProcessSidecar::start(&up.url(), &up.ca_file, &tdir.path().join("token"), &[]).await;
    let auth = format!("Bearer {}", sc.token());
    let clients = [
        client(&sc.ca_pem(), Alpn::H2),
        client(&sc.ca_pem(), Alpn::H1),
    ];
    let mut failures = Vec::new();
    let mut rotated_at = None;
    let mut revoked_at = None;
    for i in 0..400usize {
        let c = &clients[i % 2];
        let (code, _, body) = send(
            c,
            "GET",
            &sc.url("/api/v1/namespaces/default/configmaps"),
            &[("authorization", auth.as_str())],
        )
        .await;
        if code != 200 {
            failures.push((i, code, body));
        }
        if i == 40 {
            // The API server accepts both tokens for a while after a rotation.
            up.accepted.lock().unwrap().push(NEW.to_string());
            common::kubelet_write_token(tdir.path(), 2, NEW);
            rotated_at = Some(i);
        }
        if rotated_at.is_some() && revoked_at.is_none() {
            let new_seen = up
                .seen()
                .iter()
                .any(|s| s.authorization().as_deref() == Some(&format!("Bearer {NEW}")));
            if new_seen {
                // From now on the old token is refused: any request still using it fails.
                up.accepted.lock().unwrap().retain(|t| t != OLD);
                revoked_at = Some(i);
            }
        }
        if revoked_at.is_some_and(|r| i > r + 40) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        failures.is_empty(),
        "requests failed across the rotation: {failures:?}"
    );
    let revoked_at = revoked_at.expect("the new token never reached the upstream");
    let seen = up.seen();
    assert!(seen.len() > revoked_at + 40);
    let tail = &seen[seen.len() - 40..];
    assert!(
        tail.iter()
            .all(|s| s.authorization().as_deref() == Some(&format!("Bearer {NEW}")))
    );
    // The layout really was the kubelet's: the old data dir is gone.
    let entries: Vec<String> = std::fs::read_dir(tdir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries.iter().filter(|e| e.starts_with("..2026")).count(),
        1,
        "{entries:?}"
    );
    sc.stop().await;
}

#[tokio::test]
async fn immediate_revocation_after_rotation_is_retried_with_the_new_token() {
    const OLD: &str = "revoked-at-once";
    const NEW: &str = "the-only-valid-one";
    let up = Upstream::start(&[OLD]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, OLD);
    let sc = InProcessSidecar::start(&up.url(), &up.ca_file, &tdir.path().join("token"), &[]).await;
    let auth = format!("Bearer {}", sc.token());
    let c = client(&sc.ca_pem(), Alpn::H1);
    let url = sc.url("/api/v1/namespaces/default/pods");
    let (code, _, _) = send(&c, "GET", &url, &[("authorization", auth.as_str())]).await;
    assert_eq!(code, 200);
    // Rotate and revoke the old token at the same moment, then ask at once
    // (well within the sidecar's 1s metadata check interval).
    *up.accepted.lock().unwrap() = vec![NEW.to_string()];
    common::kubelet_write_token(tdir.path(), 2, NEW);
    for method in ["GET", "DELETE"] {
        let (code, _, body) = send(&c, method, &url, &[("authorization", auth.as_str())]).await;
        assert_eq!(code, 200, "{method}: {body}");
    }
    let last = up.seen().pop().unwrap();
    assert_eq!(last.authorization().unwrap(), format!("Bearer {NEW}"));
    // A genuinely refused token is not retried forever: one retry at most.
    *up.accepted.lock().unwrap() = vec![];
    let before = up.seen().len();
    let (code, _, _) = send(&c, "GET", &url, &[("authorization", auth.as_str())]).await;
    assert_eq!(code, 401);
    assert_eq!(
        up.seen().len(),
        before + 1,
        "unchanged token must not be retried"
    );
    sc.stop().await;
}

/// Where a tunnel's tap reports (subprotocol, bytes sent); taken once.
type TapDone =
    std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<(String, usize)>>>>;

/// A recorder that taps tunnels: counts the bytes the app sent through the
/// tunnel and reports them when the tunnel closes.
struct CountingRecorder {
    done: TapDone,
}

struct CountingTap {
    proto: String,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    done: Option<tokio::sync::oneshot::Sender<(String, usize)>>,
}

struct CountingIo {
    inner: Box<dyn mcp_warden_sidecar::hooks::TunnelIo>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.sent.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        r
    }
}

impl tokio::io::AsyncWrite for CountingIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl mcp_warden_sidecar::hooks::TunnelTap for CountingTap {
    fn wrap(
        &self,
        app_side: Box<dyn mcp_warden_sidecar::hooks::TunnelIo>,
    ) -> Box<dyn mcp_warden_sidecar::hooks::TunnelIo> {
        Box::new(CountingIo {
            inner: app_side,
            sent: self.sent.clone(),
        })
    }
    fn finished(mut self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
        let n = self.sent.load(std::sync::atomic::Ordering::SeqCst);
        let tx = self.done.take();
        let proto = self.proto.clone();
        Box::pin(async move {
            if let Some(tx) = tx {
                let _ = tx.send((proto, n));
            }
        })
    }
}

impl mcp_warden_sidecar::hooks::RecordHook for CountingRecorder {
    fn request<'a>(
        &'a self,
        _ctx: &'a mcp_warden_sidecar::RequestContext,
        _parts: &'a http::request::Parts,
        body: mcp_warden_sidecar::hooks::ProxyBody,
    ) -> futures::future::BoxFuture<
        'a,
        Result<mcp_warden_sidecar::hooks::RecordStart, mcp_warden_sidecar::error::Refusal>,
    > {
        let done = self.done.clone();
        Box::pin(async move {
            Ok((
                body,
                Box::new(CountingRecord { done })
                    as Box<dyn mcp_warden_sidecar::hooks::RequestRecord>,
            ))
        })
    }
    fn refused(
        &self,
        _ctx: &mcp_warden_sidecar::RequestContext,
        _status: &mcp_warden_shared::status::Status,
    ) {
    }
}

/// The request's part of [`CountingRecorder`]: the tap of its tunnel.
struct CountingRecord {
    done: TapDone,
}

impl mcp_warden_sidecar::hooks::RequestRecord for CountingRecord {
    fn response(
        self: Box<Self>,
        _ctx: &mcp_warden_sidecar::RequestContext,
        response: http::Response<mcp_warden_sidecar::hooks::ProxyBody>,
    ) -> http::Response<mcp_warden_sidecar::hooks::ProxyBody> {
        response
    }
    fn refused(
        self: Box<Self>,
        _ctx: &mcp_warden_sidecar::RequestContext,
        _status: &mcp_warden_shared::status::Status,
    ) {
    }
    fn tunnel_tap(
        &self,
        ctx: &mcp_warden_sidecar::RequestContext,
        headers: &http::HeaderMap,
    ) -> Option<Box<dyn mcp_warden_sidecar::hooks::TunnelTap>> {
        assert_eq!(ctx.attrs.as_ref().unwrap().subresource, "exec");
        Some(Box::new(CountingTap {
            proto: headers["upgrade"].to_str().unwrap().to_string(),
            sent: Default::default(),
            done: self.done.lock().unwrap().take(),
        }))
    }
}

#[tokio::test]
async fn tunnel_tap_sees_the_session_and_its_end() {
    let up = Upstream::start(&[REAL]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, REAL);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ext = mcp_warden_sidecar::Extensions {
        hooks: mcp_warden_sidecar::Hooks {
            record: std::sync::Arc::new(CountingRecorder {
                done: std::sync::Arc::new(std::sync::Mutex::new(Some(tx))),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let sc =
        InProcessSidecar::start_with(&up.url(), &up.ca_file, &tdir.path().join("token"), &[], ext)
            .await;
    let c = client(&sc.ca_pem(), Alpn::H1);
    let req = Request::get(sc.url("/api/v1/namespaces/default/pods/p/exec"))
        .header("authorization", format!("Bearer {}", sc.token()))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(full(Bytes::new()))
        .unwrap();
    let mut resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    io.write_all(b"twelve bytes").await.unwrap();
    let mut buf = [0u8; 12];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"TWELVE BYTES");
    io.shutdown().await.unwrap();
    drop(io);
    let (proto, n) = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("tap never finished")
        .unwrap();
    assert_eq!((proto.as_str(), n), ("websocket", 12));
    sc.stop().await;
}

#[tokio::test]
async fn shutdown_grace_bounds_in_flight_requests() {
    let up = Upstream::start(&[REAL]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, REAL);
    // The upstream's /slow takes 1.5s; the grace period is shorter.
    let mut sc = InProcessSidecar::start(
        &up.url(),
        &up.ca_file,
        &tdir.path().join("token"),
        &["--shutdown-grace", "200ms"],
    )
    .await;
    let c = client(&sc.ca_pem(), Alpn::H1);
    let req = Request::get(sc.url("/api/v1/namespaces/default/pods/slow"))
        .header("authorization", format!("Bearer {}", sc.token()))
        .body(full(Bytes::new()))
        .unwrap();
    let slow = tokio::spawn(async move { c.request(req).await.map(|r| r.status()) });
    while up.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sc.begin_shutdown();
    let handle = sc.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run did not return after the grace period")
        .unwrap()
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap();
    assert!(
        r.is_err(),
        "a request longer than the grace period was not cut: {r:?}"
    );
}

/// Headers only a front proxy of the API server may set, method overrides
/// and underscore spellings of `Impersonate-*` never reach the upstream.
#[tokio::test]
async fn untrusted_headers_never_reach_the_upstream() {
    let (up, sc, _t) = setup().await;
    let c = client(&sc.ca_pem(), Alpn::H1);
    let auth = format!("Bearer {}", sc.token());
    let (code, _, body) = send(
        &c,
        "GET",
        &sc.url("/api/v1/namespaces/default/pods"),
        &[
            ("authorization", auth.as_str()),
            ("x-remote-user", "system:admin"),
            ("x-remote-group", "system:masters"),
            ("x-remote-extra-scopes", "all"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-http-method-override", "DELETE"),
            ("impersonate_user", "system:admin"),
            ("x-request-id", "kept"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let names: Vec<&str> = seen[0].headers.keys().map(|k| k.as_str()).collect();
    for bad in [
        "x-remote-user",
        "x-remote-group",
        "x-remote-extra-scopes",
        "x-forwarded-for",
        "forwarded",
        "x-http-method-override",
        "impersonate_user",
    ] {
        assert!(
            !names.contains(&bad),
            "{bad} reached the upstream: {names:?}"
        );
    }
    assert_eq!(seen[0].headers["x-request-id"], "kept");
    sc.stop().await;
}
