//! Connections that never end: timeouts and caps of the app and
//! admin listeners, the in-flight caps with their 429, and that busy
//! connections — a watch without events, an exec tunnel — are not idle.
//!
//! Timeouts are configured short; the tests assert that a connection IS
//! closed within a generous bound, or that a busy one is NOT closed after
//! several idle timeouts — never how long anything took.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Alpn, InProcessSidecar, Upstream, client, send};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_warden_sidecar::hooks::full;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REAL: &str = "real-upstream-token";

/// Generous bound for "is closed eventually".
const BOUND: Duration = Duration::from_secs(15);

/// Several short idle timeouts.
const QUIET: Duration = Duration::from_millis(1500);

async fn setup(extra: &[&str]) -> (Upstream, InProcessSidecar, tempfile::TempDir) {
    let up = Upstream::start(&[REAL]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, REAL);
    let sc =
        InProcessSidecar::start(&up.url(), &up.ca_file, &tdir.path().join("token"), extra).await;
    (up, sc, tdir)
}

/// True when the peer closes `io` (EOF or reset) within `bound`; bytes it
/// sends before closing are skipped.
async fn closed_within(io: &mut (impl AsyncRead + Unpin), bound: Duration) -> bool {
    tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn tls_connect(
    sc: &InProcessSidecar,
    alpn: Alpn,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tls = common::client_tls(&sc.ca_pem(), alpn);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(sc.addr).await.unwrap();
    let sni = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(sni, tcp).await.unwrap()
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `io`.
async fn read_h1_response(io: &mut (impl AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(BOUND, io.read(&mut buf))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(
            n > 0,
            "closed before the response: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

async fn wait_for_metric(sc: &InProcessSidecar, prefix: &str, want: impl Fn(f64) -> bool) -> f64 {
    let mut last = -1.0;
    for _ in 0..300 {
        if let Ok((200, m)) = sc.admin_get("/metrics").await {
            last = metric(&m, prefix);
            if want(last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{prefix}: last value {last}");
}

#[tokio::test]
async fn admin_listener_closes_silent_and_idle_connections() {
    let (_up, sc, _t) = setup(&["--admin-timeout", "300ms"]).await;
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(sc.admin_addr).await.unwrap();
    // Sends half a request head and stops.
    let mut slow = TcpStream::connect(sc.admin_addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One keep-alive request, then idle.
    let mut idle = TcpStream::connect(sc.admin_addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = read_h1_response(&mut idle).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        closed_within(&mut silent, BOUND).await,
        "silent connection kept"
    );
    assert!(closed_within(&mut slow, BOUND).await, "slow header kept");
    assert!(
        closed_within(&mut idle, BOUND).await,
        "idle keep-alive kept"
    );
    let (_, m) = sc.admin_get("/metrics").await.unwrap();
    assert!(
        m.contains(
            r#"mcp_warden_connections_timed_out_total{listener="admin",phase="first_byte"}"#
        ),
        "{m}"
    );
    sc.stop().await;
}

#[tokio::test]
async fn admin_connection_cap_refuses_extra_connections_and_the_app_still_works() {
    let (_up, sc, _t) = setup(&["--admin-max-connections", "4", "--admin-timeout", "60s"]).await;
    // Wait until the readiness polls of the start are gone.
    wait_for_metric(
        &sc,
        r#"mcp_warden_connections_open{listener="admin"} "#,
        |v| v <= 1.0,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(sc.admin_addr).await.unwrap());
    }
    // The listener saw all four before the extra one is made.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(sc.admin_addr).await.unwrap();
    assert!(
        closed_within(&mut extra, BOUND).await,
        "a connection past the cap was kept"
    );
    // The app's own requests are unaffected.
    let c = client(&sc.ca_pem(), Alpn::H1);
    let auth = format!("Bearer {}", sc.token());
    let (code, _, _) = send(&c, "GET", &sc.url("/api"), &[("authorization", &auth)]).await;
    assert_eq!(code, 200);
    drop(held);
    let refused = wait_for_metric(
        &sc,
        r#"mcp_warden_connections_refused_total{listener="admin"} "#,
        |v| v >= 1.0,
    )
    .await;
    assert!(refused >= 1.0);
    sc.stop().await;
}

#[tokio::test]
async fn app_connection_cap_refuses_extra_connections() {
    let (_up, sc, _t) = setup(&["--max-connections", "2", "--first-byte-timeout", "60s"]).await;
    let _a = tls_connect(&sc, Alpn::H1).await;
    let _b = tls_connect(&sc, Alpn::H1).await;
    wait_for_metric(
        &sc,
        r#"mcp_warden_connections_open{listener="app"} "#,
        |v| v >= 2.0,
    )
    .await;
    let mut extra = TcpStream::connect(sc.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, BOUND).await,
        "a connection past the cap was kept"
    );
    wait_for_metric(
        &sc,
        r#"mcp_warden_connections_refused_total{listener="app"} "#,
        |v| v >= 1.0,
    )
    .await;
    sc.stop().await;
}

#[tokio::test]
async fn app_closes_a_silent_tls_connection_an_idle_keepalive_and_a_slow_header() {
    let (_up, sc, _t) = setup(&[
        "--first-byte-timeout",
        "300ms",
        "--idle-timeout",
        "300ms",
        "--header-read-timeout",
        "300ms",
    ])
    .await;
    // A completed handshake that sends nothing.
    let mut silent = tls_connect(&sc, Alpn::H1).await;
    // Half a request head.
    let mut slow = tls_connect(&sc, Alpn::H1).await;
    slow.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One request, then an idle keep-alive connection.
    let mut idle = tls_connect(&sc, Alpn::H1).await;
    let head = format!(
        "GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        sc.token()
    );
    idle.write_all(head.as_bytes()).await.unwrap();
    let resp = read_h1_response(&mut idle).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        closed_within(&mut silent, BOUND).await,
        "silent TLS connection kept"
    );
    assert!(closed_within(&mut slow, BOUND).await, "slow header kept");
    assert!(
        closed_within(&mut idle, BOUND).await,
        "idle keep-alive kept"
    );
    sc.stop().await;
}

#[tokio::test]
async fn app_closes_an_idle_http2_connection() {
    let (_up, sc, _t) = setup(&["--idle-timeout", "300ms"]).await;
    let tls = tls_connect(&sc, Alpn::H2).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(sc.url("/api"))
        .header("authorization", format!("Bearer {}", sc.token()))
        .body(full(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // No open streams: the sidecar says GOAWAY and closes.
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("idle HTTP/2 connection kept open")
        .unwrap()
        .ok();
    sc.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_is_cut() {
    // The upstream reads the whole body before it answers (`/collect`).
    let (_up, sc, _t) = setup(&["--body-read-timeout", "300ms"]).await;
    let mut io = tls_connect(&sc, Alpn::H1).await;
    let head = format!(
        "PUT /api/v1/namespaces/default/configmaps/collect HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"kind\":",
        sc.token()
    );
    io.write_all(head.as_bytes()).await.unwrap();
    assert!(
        closed_within(&mut io, BOUND).await,
        "a request whose body stalls stays open"
    );
    sc.stop().await;
}

#[tokio::test]
async fn a_watch_without_events_outlives_the_idle_timeout() {
    let (up, sc, _t) = setup(&[
        "--idle-timeout",
        "200ms",
        "--header-read-timeout",
        "200ms",
        "--first-byte-timeout",
        "200ms",
    ])
    .await;
    let auth = format!("Bearer {}", sc.token());
    for alpn in [Alpn::H1, Alpn::H2] {
        let c = client(&sc.ca_pem(), alpn);
        // The test upstream streams on paths ending in /stream.
        let req = Request::get(sc.url("/api/v1/namespaces/default/stream?watch=true"))
            .header("authorization", &auth)
            .body(full(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(BOUND, c.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = tokio::time::timeout(BOUND, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first\n");
        // No bytes either way for several idle timeouts.
        tokio::time::sleep(QUIET).await;
        up.release.notify_one();
        let mut rest = Vec::new();
        while let Some(f) = tokio::time::timeout(BOUND, body.frame()).await.unwrap() {
            rest.extend_from_slice(&f.unwrap().into_data().unwrap_or_default());
        }
        assert_eq!(rest, b"second\n", "{alpn:?}: the quiet watch was cut");
    }
    sc.stop().await;
}

async fn open_tunnel(sc: &InProcessSidecar) -> TokioIo<hyper::upgrade::Upgraded> {
    let c = client(&sc.ca_pem(), Alpn::None);
    let req = Request::post(sc.url("/api/v1/namespaces/default/pods/p/exec"))
        .header("authorization", format!("Bearer {}", sc.token()))
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v4.channel.k8s.io")
        .body(full(Bytes::new()))
        .unwrap();
    let mut resp = tokio::time::timeout(BOUND, c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 101);
    TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap())
}

async fn echo(io: &mut TokioIo<hyper::upgrade::Upgraded>, msg: &str) {
    io.write_all(msg.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(BOUND, io.read_exact(&mut buf))
        .await
        .expect("the tunnel was cut")
        .unwrap();
    assert_eq!(buf, msg.to_uppercase().as_bytes());
}

#[tokio::test]
async fn an_exec_tunnel_is_not_idle() {
    let (_up, sc, _t) = setup(&["--idle-timeout", "200ms", "--first-byte-timeout", "200ms"]).await;
    let mut io = open_tunnel(&sc).await;
    echo(&mut io, "hello").await;
    tokio::time::sleep(QUIET).await;
    echo(&mut io, "still here").await;
    sc.stop().await;
}

#[tokio::test]
async fn long_running_requests_past_the_cap_get_429_with_retry_after() {
    let (up, sc, _t) = setup(&["--max-long-running-requests", "1"]).await;
    let auth = format!("Bearer {}", sc.token());
    let c = client(&sc.ca_pem(), Alpn::H1);
    let watch = || {
        Request::get(sc.url("/api/v1/namespaces/default/stream?watch=true"))
            .header("authorization", &auth)
            .body(full(Bytes::new()))
            .unwrap()
    };
    let resp = tokio::time::timeout(BOUND, c.request(watch()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A second watch, and a tunnel, are past the cap.
    let (code, headers, body) = send(
        &c,
        "GET",
        &sc.url("/api/v1/namespaces/default/stream?watch=true"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("--max-long-running-requests"),
        "{status}"
    );
    // Ordinary requests have their own cap.
    let (code, _, _) = send(&c, "GET", &sc.url("/api"), &[("authorization", &auth)]).await;
    assert_eq!(code, 200);
    // The watch ends: its place frees.
    up.release.notify_one();
    resp.into_body().collect().await.unwrap();
    let mut tunnel = None;
    for _ in 0..100 {
        let cc = client(&sc.ca_pem(), Alpn::None);
        let req = Request::post(sc.url("/api/v1/namespaces/default/pods/p/exec"))
            .header("authorization", &auth)
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .body(full(Bytes::new()))
            .unwrap();
        let mut r = tokio::time::timeout(BOUND, cc.request(req))
            .await
            .unwrap()
            .unwrap();
        if r.status() == 101 {
            tunnel = Some(TokioIo::new(hyper::upgrade::on(&mut r).await.unwrap()));
            break;
        }
        assert_eq!(r.status(), 429);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tunnel = tunnel.expect("the watch's place never freed");
    echo(&mut tunnel, "in the tunnel").await;
    // The open tunnel holds the place, although its 101 response has ended.
    let (code, _, _) = send(
        &c,
        "GET",
        &sc.url("/api/v1/namespaces/default/stream?watch=true"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(code, 429, "a watch was admitted while the tunnel is open");
    drop(tunnel);
    let (_, m) = sc.admin_get("/metrics").await.unwrap();
    assert!(
        metric(
            &m,
            r#"mcp_warden_inflight_refused_total{kind="long_running"} "#
        ) >= 2.0,
        "{m}"
    );
    // Closing the tunnel frees the place.
    wait_for_metric(
        &sc,
        r#"mcp_warden_inflight_requests{kind="long_running"} "#,
        |v| v == 0.0,
    )
    .await;
    sc.stop().await;
}

/// Reads from `io` into `out` until `out` contains `needle`.
async fn read_until(io: &mut (impl AsyncRead + Unpin), out: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(out).contains(needle) {
        let n = tokio::time::timeout(BOUND, io.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within the bound: {}",
                    String::from_utf8_lossy(out)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

/// A watch over HTTP/1.1 (ALPN `http/1.1`), which the listener's own loop
/// serves (`listener/h1`, whose unit tests check its wire bytes): chunked,
/// hop-by-hop headers gone, a pipelined request behind it answered after it
/// on the same connection (by hyper, which takes the connection over), and
/// a client that leaves mid-watch ends the request at once (its
/// long-running place frees).
#[tokio::test]
async fn an_http1_watch_streams_keeps_alive_and_ends_when_the_client_leaves() {
    let (up, sc, _t) = setup(&["--max-long-running-requests", "1"]).await;
    let auth = format!("Bearer {}", sc.token());
    let watch_head = format!(
        "GET /api/v1/namespaces/default/stream?watch=true HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n"
    );
    let next_head =
        format!("GET /api HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n");

    let mut io = tls_connect(&sc, Alpn::H1).await;
    io.write_all(format!("{watch_head}{next_head}").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    read_until(&mut io, &mut out, "first\n").await;
    up.release.notify_one();
    read_until(&mut io, &mut out, r#"{"ok":true}"#).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let (watch, next) = text.split_once("0\r\n\r\n").unwrap();
    assert!(watch.starts_with("HTTP/1.1 200 OK\r\n"), "{watch}");
    let (head, chunks) = watch.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(!head.contains("x-secret-hop"), "{head}");
    assert_eq!(chunks, "6\r\nfirst\n\r\n7\r\nsecond\n\r\n");
    assert!(next.starts_with("HTTP/1.1 200 OK\r\n"), "{next}");
    drop(io);

    // A client that leaves mid-watch: while it watches, the cap refuses a
    // second watch; once it has closed, a new watch is admitted.
    let mut io = tls_connect(&sc, Alpn::H1).await;
    io.write_all(watch_head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    read_until(&mut io, &mut out, "first\n").await;
    let c = client(&sc.ca_pem(), Alpn::H2);
    let url = sc.url("/api/v1/namespaces/default/stream?watch=true");
    let (code, _, _) = send(&c, "GET", &url, &[("authorization", &auth)]).await;
    assert_eq!(code, 429, "the open watch does not hold its place");
    io.shutdown().await.unwrap();
    drop(io);
    let mut admitted = false;
    for _ in 0..100 {
        let req = Request::get(&url)
            .header("authorization", &auth)
            .body(full(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(BOUND, c.request(req))
            .await
            .unwrap()
            .unwrap();
        if resp.status() == 200 {
            admitted = true;
            break;
        }
        assert_eq!(resp.status(), 429);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the closed watch kept its place");
    sc.stop().await;
}
