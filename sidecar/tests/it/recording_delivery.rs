//! Recording delivery end to end inside one process: `Recorder` → spool →
//! sender → a real HTTP(S) collector on 127.0.0.1, including collector
//! failures, outages, restarts of the recorder and a full spool.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa};
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::audit::{
    self, Event, EventList, Level, MicroTime, ResponseStatus, Stage, UserInfo,
};
use mcp_warden_sidecar::recording::{
    CollectorFormat, OnFailure, RecordError, Recorder, RecordingConfig,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    authorization: Option<String>,
    body: Bytes,
}

/// A minimal collector: records every POST, answers `fail_next` requests
/// with 500, then `status` (200 by default).
#[derive(Default)]
struct FakeCollector {
    posts: Mutex<Vec<Post>>,
    fail_next: AtomicUsize,
    status: Mutex<u16>,
}

impl FakeCollector {
    fn audit_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for p in self.posts.lock().unwrap().iter() {
            if p.path.contains("/sessions/") {
                continue;
            }
            for e in parse_events(p) {
                ids.push(e.audit_id);
            }
        }
        ids
    }
    fn ok_posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

fn parse_events(p: &Post) -> Vec<Event> {
    match p.content_type.as_str() {
        "application/json" => serde_json::from_slice::<EventList>(&p.body).unwrap().items,
        "application/x-ndjson" => std::str::from_utf8(&p.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        other => panic!("unexpected content type {other}"),
    }
}

struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(
    listener: TcpListener,
    c: Arc<FakeCollector>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let (sock, _) = tokio::select! {
                r = listener.accept() => r.unwrap(),
                _ = stop_rx.wait_for(|s| *s) => break,
            };
            let c = c.clone();
            let tls = tls.clone();
            let mut conn_stop = stop_rx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let c = c.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap().to_string())
                        };
                        let content_type = header("content-type").unwrap_or_default();
                        let authorization = header("authorization");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let failing = c
                            .fail_next
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if failing {
                            500
                        } else {
                            *c.status.lock().unwrap()
                        };
                        if status == 200 {
                            c.posts.lock().unwrap().push(Post {
                                path,
                                content_type,
                                authorization,
                                body,
                            });
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acc) => {
                        let Ok(s) = acc.accept(sock).await else {
                            return;
                        };
                        let conn = builder.serve_connection(TokioIo::new(s), svc);
                        tokio::select! { _ = conn => {}, _ = conn_stop.wait_for(|s| *s) => {} }
                    }
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(sock), svc);
                        tokio::select! { _ = conn => {}, _ = conn_stop.wait_for(|s| *s) => {} }
                    }
                }
            });
        }
    });
    Running { addr, stop, task }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.bind(addr).unwrap();
    s.listen(64).unwrap()
}

async fn start_collector(c: Arc<FakeCollector>) -> Running {
    *c.status.lock().unwrap() = 200;
    serve(bind("127.0.0.1:0".parse().unwrap()).await, c, None).await
}

fn event(i: usize) -> Event {
    let attrs = RequestAttributes {
        is_resource_request: true,
        path: "/api/v1/namespaces/default/configmaps".into(),
        verb: "create".into(),
        api_prefix: "api".into(),
        api_version: "v1".into(),
        namespace: "default".into(),
        resource: "configmaps".into(),
        ..Default::default()
    };
    let id = format!("00000000-0000-4000-8000-{i:012}");
    let info = audit::RequestInfo {
        audit_id: &id,
        request_uri: "/api/v1/namespaces/default/configmaps",
        attrs: &attrs,
        user: UserInfo::new(
            "system:serviceaccount:default:mcp",
            "uid-1",
            vec!["system:serviceaccounts".into()],
            BTreeMap::new(),
        )
        .into(),
        impersonated_user: None,
        source_ips: vec!["127.0.0.1".into()],
        user_agent: "test",
        level: Level::Request,
        received: MicroTime::from_unix_micros(1_700_000_000_000_000 + i as i64),
        decision: audit::DecisionInfo {
            decision: "allow".into(),
            rule: "test".into(),
            policy_hash: "h".into(),
            enforced: true,
        },
        pod: "default/mcp-0",
        cluster: "test",
    };
    Event::request_received(&info).at_stage(
        Stage::ResponseComplete,
        MicroTime::from_unix_micros(1_700_000_000_000_100 + i as i64),
        ResponseStatus::from_code(201),
    )
}

fn config(dir: &Path, addr: SocketAddr) -> RecordingConfig {
    let mut cfg = RecordingConfig::new(dir.join("spool"));
    cfg.collector_url = Some(format!("http://{addr}/audit").parse().unwrap());
    cfg.batch_max_events = 10;
    cfg.batch_max_delay = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(300);
    cfg
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

fn shutdown() -> (
    watch::Sender<bool>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_eventlists_of_bounded_size() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(FakeCollector::default());
    let srv = start_collector(c.clone()).await;
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(config(d.path(), srv.addr), sd).unwrap();
    let mut tasks = Vec::new();
    for i in 0..35 {
        let rec = rec.clone();
        tasks.push(tokio::spawn(async move { rec.record(&event(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    wait_until("35 events", || c.audit_ids().len() >= 35).await;
    let posts = c.ok_posts();
    assert!(posts.len() >= 4, "35 events in batches of at most 10");
    for p in &posts {
        assert_eq!(p.path, "/audit");
        assert_eq!(p.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["metadata"], serde_json::json!({}));
        let list: EventList = serde_json::from_slice(&p.body).unwrap();
        assert!(!list.items.is_empty() && list.items.len() <= 10);
    }
    let ids: HashSet<String> = c.audit_ids().into_iter().collect();
    assert_eq!(ids.len(), 35);
    let first = posts
        .iter()
        .flat_map(parse_events)
        .find(|e| e.audit_id.ends_with("000000000007"))
        .unwrap();
    assert_eq!(first, event(7), "the event arrives exactly as recorded");
    wait_until("acks", || rec.stats().events_sent.get() == 35).await;
    assert_eq!(rec.stats().events_recorded.get(), 35);
    assert!(rec.preflight());
    stop.send(true).unwrap();
    handle.await.unwrap();
    let _ = srv.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_delivered_as_ndjson() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(FakeCollector::default());
    let srv = start_collector(c.clone()).await;
    c.fail_next.store(3, Ordering::SeqCst);
    let mut cfg = config(d.path(), srv.addr);
    cfg.format = CollectorFormat::Ndjson;
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(cfg, sd).unwrap();
    for i in 0..20 {
        rec.record(&event(i)).await.unwrap();
    }
    wait_until("20 events after retries", || c.audit_ids().len() >= 20).await;
    assert_eq!(
        c.fail_next.load(Ordering::SeqCst),
        0,
        "the failures were consumed"
    );
    assert!(rec.stats().events_retried.get() > 0);
    assert_eq!(rec.stats().post_failures.get(), 3);
    for p in c.ok_posts() {
        assert_eq!(p.content_type, "application/x-ndjson");
        assert!(p.body.ends_with(b"\n"));
    }
    let ids: HashSet<String> = c.audit_ids().into_iter().collect();
    assert_eq!(ids.len(), 20);
    stop.send(true).unwrap();
    handle.await.unwrap();
    let _ = srv.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_4xx_is_dead_lettered_not_retried_forever() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(FakeCollector::default());
    let srv = start_collector(c.clone()).await;
    *c.status.lock().unwrap() = 400;
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(config(d.path(), srv.addr), sd).unwrap();
    for i in 0..5 {
        rec.record(&event(i)).await.unwrap();
    }
    wait_until("rejection", || rec.stats().events_rejected.get() == 5).await;
    assert_eq!(rec.stats().events_sent.get(), 0);
    let dl: Vec<_> = std::fs::read_dir(d.path().join("spool/dead-letter"))
        .unwrap()
        .collect();
    assert!(!dl.is_empty());
    let dead = std::fs::read(dl[0].as_ref().unwrap().path()).unwrap();
    let list: EventList = serde_json::from_slice(&dead).unwrap();
    assert!(
        !list.items.is_empty(),
        "the rejected batch is kept verbatim"
    );
    // The stream is not blocked: once the collector accepts again, new events flow.
    *c.status.lock().unwrap() = 200;
    rec.record(&event(100)).await.unwrap();
    wait_until("later event", || {
        c.audit_ids().iter().any(|i| i.ends_with("000000000100"))
    })
    .await;
    assert!(
        !c.audit_ids().iter().any(|i| i.ends_with("000000000001")),
        "rejected events are not resent"
    );
    stop.send(true).unwrap();
    handle.await.unwrap();
    let _ = srv.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_restart_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(FakeCollector::default());
    // Reserve a port, then close it: the collector is down (connection refused).
    let srv = start_collector(c.clone()).await;
    let addr = srv.addr;
    srv.stop.send(true).unwrap();
    srv.task.await.unwrap();

    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(config(d.path(), addr), sd).unwrap();
    for i in 0..150 {
        rec.record(&event(i)).await.unwrap();
    }
    // "Crash": the recorder stops with everything unacked.
    stop.send(true).unwrap();
    handle.await.unwrap();
    drop(rec);

    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(config(d.path(), addr), sd).unwrap();
    for i in 150..200 {
        rec.record(&event(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let srv = serve(bind(addr).await, c.clone(), None).await;
    wait_until("all 200 events", || {
        c.audit_ids().into_iter().collect::<HashSet<_>>().len() >= 200
    })
    .await;
    let ids: HashSet<String> = c.audit_ids().into_iter().collect();
    assert_eq!(
        ids.len(),
        200,
        "every event arrives (deduplicated by auditID)"
    );
    for i in 0..200 {
        assert!(ids.contains(&format!("00000000-0000-4000-8000-{i:012}")));
    }
    wait_until("spool drained", || rec.stats().events_sent.get() >= 200).await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    let _ = srv.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_fail_closed_then_recovers_and_continue_mode_counts_loss() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(FakeCollector::default());
    let srv = start_collector(c.clone()).await;
    *c.status.lock().unwrap() = 503; // collector "down": nothing gets acked
    let mut cfg = config(d.path(), srv.addr);
    cfg.spool_max_bytes = 8 * 1024;
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(cfg.clone(), sd).unwrap();
    let mut recorded = 0;
    let err = loop {
        match rec.record(&event(recorded)).await {
            Ok(()) => recorded += 1,
            Err(e) => break e,
        }
        assert!(recorded < 1000, "spool never filled");
    };
    assert!(matches!(err, RecordError::NotDurable { .. }), "{err}");
    assert!(!rec.preflight());
    assert!(rec.must_refuse());
    assert_eq!(rec.stats().events_lost.get(), 1);
    // Collector recovers: the spool drains and requests are accepted again.
    *c.status.lock().unwrap() = 200;
    wait_until("drain", || rec.preflight()).await;
    assert!(!rec.must_refuse());
    rec.record(&event(5000)).await.unwrap();
    wait_until("all delivered", || c.audit_ids().len() > recorded).await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    // Continue mode: a full spool loses (and counts) the event but says Ok.
    *c.status.lock().unwrap() = 503;
    cfg.spool_dir = d.path().join("spool2");
    cfg.on_failure = OnFailure::Continue;
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(cfg, sd).unwrap();
    for i in 0..200 {
        rec.record(&event(i)).await.unwrap();
    }
    assert!(rec.stats().events_lost.get() > 0);
    assert!(!rec.must_refuse(), "continue mode never refuses");
    stop.send(true).unwrap();
    handle.await.unwrap();
    let _ = srv.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_go_to_their_own_endpoint_with_bearer_token() {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(FakeCollector::default());
    let srv = start_collector(c.clone()).await;
    let token = d.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let mut cfg = config(d.path(), srv.addr);
    cfg.token_file = Some(token.clone());
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(cfg, sd).unwrap();
    rec.record(&event(1)).await.unwrap();
    let cast = b"{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"hello\"]\n";
    rec.record_session("00000000-0000-4000-8000-000000000001", cast)
        .await
        .unwrap();
    wait_until("session", || {
        c.ok_posts().iter().any(|p| p.path.contains("/sessions/"))
    })
    .await;
    let posts = c.ok_posts();
    let s = posts
        .iter()
        .find(|p| p.path.contains("/sessions/"))
        .unwrap();
    assert_eq!(
        s.path,
        "/audit/sessions/00000000-0000-4000-8000-000000000001"
    );
    assert_eq!(s.content_type, "application/x-asciicast");
    assert_eq!(&s.body[..], &cast[..]);
    assert!(
        posts
            .iter()
            .all(|p| p.authorization.as_deref() == Some("Bearer first-token"))
    );
    // A rotated token is used for the next POST.
    std::fs::write(&token, "second-token").unwrap();
    rec.record(&event(2)).await.unwrap();
    wait_until("event 2", || {
        c.audit_ids().iter().any(|i| i.ends_with("000000000002"))
    })
    .await;
    assert_eq!(
        c.ok_posts().last().unwrap().authorization.as_deref(),
        Some("Bearer second-token")
    );
    assert!(matches!(
        rec.record_session("../../etc", b"x").await,
        Err(RecordError::BadAuditId { .. })
    ));
    stop.send(true).unwrap();
    handle.await.unwrap();
    let _ = srv.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_custom_ca_and_client_certificate() {
    let d = tempfile::tempdir().unwrap();
    // A CA, a server cert for 127.0.0.1 and a client cert.
    let ca = LocalCa::generate(&CaProfile::new("test collector CA")).unwrap();
    let srv = ca.issue(&LeafProfile::new(["127.0.0.1"])).unwrap();
    let cli = ca
        .issue(&LeafProfile::new(["sidecar"]).with_client_auth())
        .unwrap();
    std::fs::write(d.path().join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(d.path().join("client.crt"), &cli.cert_pem).unwrap();
    std::fs::write(d.path().join("client.key"), &cli.key_pem).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![srv.cert_der.clone()], srv.key_der())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let c = Arc::new(FakeCollector::default());
    *c.status.lock().unwrap() = 200;
    let srv = serve(
        bind("127.0.0.1:0".parse().unwrap()).await,
        c.clone(),
        Some(acceptor),
    )
    .await;

    let mut cfg = config(d.path(), srv.addr);
    cfg.collector_url = Some(format!("https://{}/audit", srv.addr).parse().unwrap());
    cfg.ca_file = Some(d.path().join("ca.crt"));
    cfg.client_cert_file = Some(d.path().join("client.crt"));
    cfg.client_key_file = Some(d.path().join("client.key"));
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(cfg.clone(), sd).unwrap();
    rec.record(&event(1)).await.unwrap();
    wait_until("https delivery", || c.audit_ids().len() == 1).await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    // Plain http to a non-loopback collector is refused at start.
    cfg.collector_url = Some("http://collector.example/audit".parse().unwrap());
    let (_stop, sd) = shutdown();
    assert!(Recorder::start(cfg, sd).is_err());
    let _ = srv.stop.send(true);
}

#[tokio::test]
async fn without_collector_events_are_logged_not_spooled() {
    let d = tempfile::tempdir().unwrap();
    let (stop, sd) = shutdown();
    let (rec, handle) = Recorder::start(RecordingConfig::new(d.path().join("spool")), sd).unwrap();
    rec.record(&event(1)).await.unwrap();
    assert!(rec.preflight());
    assert!(
        !d.path().join("spool").exists(),
        "no spool without a collector"
    );
    let mut reg = prometheus_client::registry::Registry::default();
    rec.register_metrics(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains("mcp_warden_recording_events_recorded_total 1"),
        "{text}"
    );
    assert!(text.contains("mcp_warden_recording_oldest_unsent_age_seconds"));
    stop.send(true).unwrap();
    handle.await.unwrap();
}
