//! The sidecar's recorder against the real test collector
//! (`mcp_warden_tests::collector`, the logic of the `mcp-warden-collector`
//! binary) over HTTPS with a bearer token: events land in `events.ndjson`,
//! an exec session recorded from WebSocket frames lands in
//! `sessions/<auditID>.cast` and replays the echoed output in order.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::audit::{self, Event, Level, MicroTime, ResponseStatus, Stage, UserInfo};
use mcp_warden_sidecar::recording::asciicast::{SessionMeta, SessionRecorder, session_title};
use mcp_warden_sidecar::recording::{CollectorFormat, Recorder, RecordingConfig};
use mcp_warden_tests::collector::{self, CollectorConfig};

fn event(i: usize, verb: &str) -> Event {
    let attrs = RequestAttributes {
        is_resource_request: true,
        path: "/api/v1/namespaces/default/pods/web-0/exec".into(),
        verb: verb.into(),
        api_prefix: "api".into(),
        api_version: "v1".into(),
        namespace: "default".into(),
        resource: "pods".into(),
        subresource: "exec".into(),
        name: "web-0".into(),
        ..Default::default()
    };
    let id = format!("11111111-0000-4000-8000-{i:012}");
    let info = audit::RequestInfo {
        audit_id: &id,
        request_uri: "/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true&tty=true",
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
        user_agent: "kubectl/v1.33.0",
        level: Level::Metadata,
        received: MicroTime::from_unix_micros(1_700_000_000_000_000),
        decision: audit::DecisionInfo {
            decision: "allow".into(),
            rule: "exec-ok".into(),
            policy_hash: "h".into(),
            enforced: true,
        },
        pod: "default/mcp-0",
        cluster: "",
    };
    Event::request_received(&info).at_stage(
        Stage::ResponseComplete,
        MicroTime::from_unix_micros(1_700_000_001_000_000),
        ResponseStatus::from_code(101),
    )
}

fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    assert!(payload.len() < 126);
    f.push(m | payload.len() as u8);
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

fn chan(c: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![c];
    v.extend_from_slice(data);
    v
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_session_reach_the_test_collector_over_https() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut ccfg = CollectorConfig::new(&out);
    ccfg.token = Some("collector-token".into());
    ccfg.tls = Some(collector::tls_config(&d.path().join("tls"), None).unwrap());
    ccfg.control.fail_next.store(2, Ordering::SeqCst);
    let ctl = ccfg.control.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cstop, crx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(collector::run(listener, ccfg, async {
        let _ = crx.await;
    }));

    std::fs::write(d.path().join("token"), "collector-token").unwrap();
    let mut cfg = RecordingConfig::new(d.path().join("spool"));
    cfg.collector_url = Some(
        format!("https://127.0.0.1:{}/audit", addr.port())
            .parse()
            .unwrap(),
    );
    cfg.ca_file = Some(d.path().join("tls/ca.crt"));
    cfg.token_file = Some(d.path().join("token"));
    cfg.format = CollectorFormat::Ndjson;
    cfg.backoff_max = Duration::from_millis(200);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let (rec, handle) = Recorder::start(cfg, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    })
    .unwrap();

    let mut sent = Vec::new();
    for i in 0..50 {
        let e = event(i, "create");
        rec.record(&e).await.unwrap();
        sent.push(e);
    }

    // An exec session as it crosses the tunnel: masked client frames,
    // unmasked server frames, split at odd places.
    let audit_id = sent[0].audit_id.clone();
    let meta = SessionMeta {
        audit_id: audit_id.clone(),
        title: session_title(&audit_id, "exec", "default", "web-0", None, &["sh".into()]),
        started_unix_secs: 1_700_000_000,
        env: BTreeMap::from([("TERM".to_string(), "xterm".to_string())]),
    };
    let mut s = SessionRecorder::new(meta, "v5.channel.k8s.io");
    let ms = Duration::from_millis;
    let key = Some([0x37, 0xfa, 0x21, 0x3d]);
    let mut down = Vec::new();
    down.extend(frame(2, &chan(1, b"$ "), None));
    s.server_to_client(ms(5), &down);
    for (i, cmd) in ["echo one\n", "echo two\n"].iter().enumerate() {
        let up = frame(2, &chan(0, cmd.as_bytes()), key);
        let t = ms(100 * (i as u64 + 1));
        s.client_to_server(t, &up[..3]);
        s.client_to_server(t, &up[3..]);
        let word = cmd.trim_start_matches("echo ").trim_end();
        let echoed = format!("{}\r\n{word}\r\n$ ", cmd.trim_end());
        let f = frame(2, &chan(1, echoed.as_bytes()), None);
        s.server_to_client(t + ms(10), &f[..f.len() / 2]);
        s.server_to_client(t + ms(11), &f[f.len() / 2..]);
    }
    assert!(!s.is_broken());
    rec.record_session(&audit_id, &s.finish()).await.unwrap();

    wait_until("50 events and 1 session", || {
        ctl.events.load(Ordering::SeqCst) >= 50 && ctl.sessions.load(Ordering::SeqCst) >= 1
    })
    .await;
    let got = collector::read_events(&out).unwrap();
    let ids: HashSet<&str> = got.iter().map(|e| e.audit_id.as_str()).collect();
    assert_eq!(ids.len(), 50, "every event arrived despite 2 failed POSTs");
    let by_id: BTreeMap<&str, &Event> = got.iter().map(|e| (e.audit_id.as_str(), e)).collect();
    for e in &sent {
        assert_eq!(
            by_id[e.audit_id.as_str()],
            e,
            "stored event equals the recorded one"
        );
    }
    assert!(rec.stats().events_retried.get() > 0);

    let cast =
        std::fs::read_to_string(out.join("sessions").join(format!("{audit_id}.cast"))).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        header["title"],
        format!("{audit_id} kubectl exec default/web-0 -- sh")
    );
    let events: Vec<(f64, String, String)> =
        lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let output: String = events
        .iter()
        .filter(|e| e.1 == "o")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(output, "$ echo one\r\none\r\n$ echo two\r\ntwo\r\n$ ");
    let input: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "i")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(input, vec!["echo one\n", "echo two\n"]);
    assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));

    stop.send(true).unwrap();
    handle.await.unwrap();
    cstop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
