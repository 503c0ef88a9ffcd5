//! Recording, end to end through the real binaries: `kube-apisim`, the
//! `mcp-warden-sidecar` in front of it and `mcp-warden-collector` receiving
//! what it records (see docs/recording.md).
//!
//! - a scripted kubectl session (get, list, watch, create secret, a denied
//!   delete, exec) yields exactly one `ResponseComplete` per request with the
//!   right verb, objectRef, code, decision and service-account user, and no
//!   secret bytes anywhere; the raw bodies are `audit.k8s.io/v1` EventLists;
//! - a collector outage plus a SIGKILLed sidecar lose none of 500 requests'
//!   events, and refuse none of them;
//! - a full spool refuses (503, not forwarded) in fail-closed mode and
//!   passes again after the collector drains it; `continue` counts the loss;
//! - exec over WebSocket replays as an asciicast; SPDY sessions are
//!   recorded as events only; NDJSON delivery works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, run, run_ok, wait_for};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};
use serde_json::Value;

/// Bound for events to reach the collector.
const DELIVERY: Duration = Duration::from_secs(30);

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: deny
rules:
  - name: no-deletes
    action: deny
    verbs: [delete, deletecollection]
    resources: ["*"]
  - name: read-everything
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: write-secrets-and-configs
    action: allow
    verbs: [create]
    resources: [secrets, configmaps]
  - name: exec-allowed
    action: allow
    verbs: ["*"]
    resources: ["pods/exec"]
masking:
  rules:
    - resources: [secrets]
      fields: ["data.*", "stringData.*"]
recording:
  level: RequestResponse
"#;

const SECRET_VALUE: &str = "S3cr3t-Value-9f2c71";
const SECRET_VALUE_2: &str = "Second-S3cret-4b7e02";
const SECRET_VALUE_3: &str = "Third-S3cret-c5d913";
const POD_UID: &str = "3e4f0c2a-1b2c-4d5e-8f90-a1b2c3d4e5f6";

fn policy_file(dir: &Path) -> PathBuf {
    let p = dir.join("recording-policy.yaml");
    std::fs::write(&p, POLICY).unwrap();
    p
}

/// A service-account token for `default/mcp-server` bound to the pod
/// `mcp-server-0`, issued by kube-apisim (which accepts it upstream).
fn sa_token_file(sim: &ApiSim) -> PathBuf {
    let tok = run_ok(sim.kubectl("1.32").args([
        "create",
        "token",
        "mcp-server",
        "-n",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "mcp-server-0",
        "--bound-object-uid",
        POD_UID,
    ]))
    .unwrap();
    let p = sim.work_dir().join("sa-token");
    std::fs::write(&p, tok.trim()).unwrap();
    p
}

/// Distinct events by (auditID, stage): the delivery is at least once.
fn dedup(events: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    events
        .into_iter()
        .filter(|e| {
            seen.insert((
                e["auditID"].as_str().unwrap_or("").to_string(),
                e["stage"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

fn is_micro_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    // 2026-11-21T23:27:15.123456Z
    s.len() == 27
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && s[20..26].bytes().all(|b| b.is_ascii_digit())
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name || k.starts_with(&format!("{name}{{")))
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

fn metrics(sidecar: &Sidecar) -> String {
    sidecar.admin_get("/metrics").unwrap().1
}

/// Waits (bounded) until the sidecar's spool holds nothing unacknowledged.
fn wait_drained(sidecar: &Sidecar) {
    wait_for("the spool to drain", DELIVERY, || {
        let m = metrics(sidecar);
        // The pending gauge is refreshed periodically; the counters at once.
        let accounted = metric(&m, "mcp_warden_recording_events_sent_total")
            + metric(&m, "mcp_warden_recording_events_lost_total")
            + metric(&m, "mcp_warden_recording_events_rejected_total");
        (m.contains("mcp_warden_recording_spool_pending")
            && metric(&m, "mcp_warden_recording_spool_pending") == 0.0
            && accounted >= metric(&m, "mcp_warden_recording_events_recorded_total"))
        .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", metrics(sidecar)));
}

fn completes(collector: &Collector) -> Vec<Value> {
    dedup(collector.events())
        .into_iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .collect()
}

fn stages_of(collector: &Collector, audit_id: &str) -> Vec<String> {
    dedup(collector.events())
        .iter()
        .filter(|e| e["auditID"] == audit_id)
        .map(|e| e["stage"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Exactly one ResponseComplete matching `pred`, waited for (bounded).
fn one_complete(collector: &Collector, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let found = wait_for(what, DELIVERY, || {
        let c: Vec<Value> = completes(collector).into_iter().filter(&pred).collect();
        (!c.is_empty()).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}; events: {:#?}", collector.events()));
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found.into_iter().next().unwrap()
}

fn check_common(ev: &Value, code: i64, decision: &str) {
    assert_eq!(ev["kind"], "Event", "{ev}");
    assert_eq!(ev["apiVersion"], "audit.k8s.io/v1", "{ev}");
    assert_eq!(ev["responseStatus"]["code"], code, "{ev}");
    assert_eq!(ev["level"], "RequestResponse", "{ev}");
    assert_eq!(ev["sourceIPs"], serde_json::json!(["127.0.0.1"]), "{ev}");
    assert!(
        ev["userAgent"]
            .as_str()
            .unwrap_or("")
            .starts_with("kubectl"),
        "{ev}"
    );
    let ann = &ev["annotations"];
    assert_eq!(ann["mcp-warden.io/decision"], decision, "{ev}");
    assert_eq!(ann["mcp-warden.io/pod"], "default/mcp-server-0", "{ev}");
    assert_eq!(ann["mcp-warden.io/cluster"], "rec-e2e", "{ev}");
    let hash = ann["mcp-warden.io/policy-hash"].as_str().unwrap_or("");
    assert!(!hash.is_empty(), "policy hash missing: {ev}");
    assert!(is_micro_time(&ev["requestReceivedTimestamp"]), "{ev}");
    assert!(is_micro_time(&ev["stageTimestamp"]), "{ev}");
    assert!(
        ev["stageTimestamp"].as_str() >= ev["requestReceivedTimestamp"].as_str(),
        "{ev}"
    );
    assert!(uuid::Uuid::parse_str(ev["auditID"].as_str().unwrap()).is_ok());
    let user = &ev["user"];
    assert_eq!(
        user["username"], "system:serviceaccount:default:mcp-server",
        "{ev}"
    );
    let groups: Vec<&str> = user["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.contains(&g), "group {g} missing: {ev}");
    }
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["mcp-server-0"]),
        "{ev}"
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-uid"],
        serde_json::json!([POD_UID]),
        "{ev}"
    );
    assert!(!user["uid"].as_str().unwrap_or("").is_empty(), "{ev}");
}

fn obj_ref(ev: &Value) -> (String, String, String, String) {
    let r = &ev["objectRef"];
    let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
    (s("resource"), s("subresource"), s("namespace"), s("name"))
}

/// Parses an asciicast v2 document: the header and `(t, code, data)` lines,
/// checking the times never go backwards.
fn parse_cast(cast: &str) -> (Value, Vec<(f64, String, String)>) {
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header")).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    let mut out: Vec<(f64, String, String)> = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let a = v.as_array().unwrap_or_else(|| panic!("not an array: {l}"));
        assert_eq!(a.len(), 3, "{l}");
        let t = a[0].as_f64().unwrap();
        let code = a[1].as_str().unwrap().to_string();
        assert!(["o", "i", "r", "m"].contains(&code.as_str()), "{l}");
        if let Some(prev) = out.last() {
            assert!(t >= prev.0, "time goes backwards: {l}");
        }
        out.push((t, code, a[2].as_str().unwrap().to_string()));
    }
    (header, out)
}

/// The scripted kubectl session, the raw EventList bodies, the exec cast
/// (WebSocket) and an SPDY exec recorded as events only.
#[test]
fn scripted_kubectl_session_is_recorded() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let token = sa_token_file(&sim);
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions {
            upstream_token_file: Some(token),
            ..SidecarOptions::default()
        }
        .policy(policy_file(&sim.work_dir()))
        .collector(&collector)
        .args(["--cluster-name", "rec-e2e"]),
    )
    .unwrap();
    let kc = || sidecar.kubectl("1.32");

    run_ok(kc().args(["get", "pod", "web-0", "-o", "json"])).unwrap();
    run_ok(kc().args(["get", "pods", "-o", "name"])).unwrap();
    run_ok(kc().args([
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1",
    ]))
    .unwrap();
    run_ok(kc().args([
        "create",
        "secret",
        "generic",
        "rec-secret",
        &format!("--from-literal=password={SECRET_VALUE}"),
    ]))
    .unwrap();
    let manifest = sim.work_dir().join("secret.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "rec-secret-json", "namespace": "default"},
            "data": {"password": base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE_2)},
            "stringData": {"token": SECRET_VALUE_3},
        })
        .to_string(),
    )
    .unwrap();
    run_ok(kc().arg("create").arg("-f").arg(&manifest)).unwrap();
    let del = run(
        kc().args(["delete", "configmap", "app-config"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!del.status.success(), "the delete must be denied");

    // Exactly one ResponseComplete per request, with the right fields
    // (counted once everything is delivered: the spool is drained).
    wait_drained(&sidecar);
    let get = one_complete(&collector, "the get", |e| {
        e["verb"] == "get"
            && obj_ref(e) == ("pods".into(), "".into(), "default".into(), "web-0".into())
    });
    check_common(&get, 200, "allow");
    assert_eq!(get["annotations"]["mcp-warden.io/rule"], "read-everything");
    assert_eq!(get["responseObject"]["metadata"]["name"], "web-0");
    let list = one_complete(&collector, "the list", |e| {
        e["verb"] == "list" && e["objectRef"]["resource"] == "pods"
    });
    check_common(&list, 200, "allow");
    let watch = one_complete(&collector, "the watch", |e| {
        e["verb"] == "watch" && e["objectRef"]["resource"] == "pods"
    });
    check_common(&watch, 200, "allow");
    let ws = stages_of(&collector, watch["auditID"].as_str().unwrap());
    assert!(ws.contains(&"ResponseStarted".to_string()), "{ws:?}");
    let create = one_complete(&collector, "the secret create", |e| {
        e["verb"] == "create"
            && e["objectRef"]["resource"] == "secrets"
            && e["responseObject"]["metadata"]["name"] == "rec-secret"
    });
    check_common(&create, 201, "allow");
    assert_eq!(create["objectRef"]["namespace"], "default");
    // kubectl's typed `create secret` POSTs protobuf: decoded (k8s-pb) and
    // masked like a JSON body, the name taken from it; the response is JSON
    // and masked.
    assert_eq!(create["objectRef"]["name"], "rec-secret");
    let ro = &create["requestObject"];
    assert_eq!(ro["kind"], "Secret", "{create:#}");
    assert_eq!(ro["metadata"]["name"], "rec-secret");
    let expected_b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
    assert!(
        ro["data"]["password"]
            .as_str()
            .is_some_and(|p| p != expected_b64),
        "{ro}"
    );
    assert_eq!(create["responseObject"]["metadata"]["name"], "rec-secret");
    assert!(create["responseObject"]["data"]["password"].is_string());
    assert_ne!(
        create["annotations"]["mcp-warden.io/masked"], "0",
        "{create}"
    );
    // A JSON create (`create -f`): the request body is recorded, masked.
    let json_create = one_complete(&collector, "the JSON secret create", |e| {
        e["verb"] == "create"
            && e["objectRef"]["resource"] == "secrets"
            && e["requestObject"]["metadata"]["name"] == "rec-secret-json"
    });
    check_common(&json_create, 201, "allow");
    assert_eq!(json_create["objectRef"]["name"], "rec-secret-json");
    let ro = &json_create["requestObject"];
    assert!(ro["stringData"]["token"].is_string(), "{ro}");
    assert!(ro["data"]["password"].is_string(), "{ro}");
    assert!(
        json_create["annotations"]["mcp-warden.io/masked"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 2,
        "{json_create}"
    );
    let denied = one_complete(&collector, "the denied delete", |e| e["verb"] == "delete");
    check_common(&denied, 403, "deny");
    assert_eq!(denied["annotations"]["mcp-warden.io/rule"], "no-deletes");
    assert_eq!(
        obj_ref(&denied),
        (
            "configmaps".into(),
            "".into(),
            "default".into(),
            "app-config".into()
        )
    );
    // exec (kubectl 1.32: WebSocket); kubectl also GETs the pod first.
    let hi = run_ok(kc().args(["exec", "web-0", "--", "echo", "hi"])).unwrap();
    assert_eq!(hi.trim(), "hi");
    wait_drained(&sidecar);
    let exec = one_complete(&collector, "the exec", |e| {
        e["objectRef"]["subresource"] == "exec"
    });
    check_common(&exec, 101, "allow");
    assert_eq!(exec["objectRef"]["name"], "web-0");
    let es = stages_of(&collector, exec["auditID"].as_str().unwrap());
    assert!(es.contains(&"ResponseStarted".to_string()), "{es:?}");

    // No secret bytes anywhere: raw, base64 (both alphabets), in events or bodies.
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
    let mut wire = String::new();
    for e in std::fs::read_dir(collector.out_dir().join("bodies")).unwrap() {
        wire.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    wire.push_str(&std::fs::read_to_string(collector.out_dir().join("events.ndjson")).unwrap());
    for secret in [SECRET_VALUE, SECRET_VALUE_2, SECRET_VALUE_3] {
        let std64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        for needle in [secret, std64.trim_end_matches('='), url64.as_str()] {
            assert!(
                !wire.contains(needle),
                "secret bytes {needle} were recorded"
            );
        }
    }
    // ...while the secret itself was created upstream with its value.
    let real = run_ok(sim.kubectl("1.32").args([
        "get",
        "secret",
        "rec-secret",
        "-o",
        "jsonpath={.data.password}",
    ]))
    .unwrap();
    assert_eq!(real.trim(), b64);

    // The raw bodies are audit.k8s.io/v1 EventLists of audit Events.
    let mut items = 0;
    for e in std::fs::read_dir(collector.out_dir().join("bodies")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(p.extension().unwrap(), "json", "{}", p.display());
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        for it in v["items"].as_array().unwrap() {
            let ev: mcp_warden_shared::audit::Event = serde_json::from_value(it.clone()).unwrap();
            assert_eq!(ev.audit_id.to_string(), it["auditID"].as_str().unwrap());
            items += 1;
        }
    }
    assert!(items >= 6, "{items} items");

    // The WebSocket exec session replays: `exec -i web-0 -- cat` with known stdin.
    let mut child = kc()
        .args(["exec", "-i", "web-0", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"first line\nsecond line\n").unwrap();
    }
    let out = wait_for("kubectl exec cat to end", Duration::from_secs(60), || {
        child.try_wait().unwrap().map(|_| ())
    });
    if out.is_err() {
        let _ = child.kill();
    }
    out.unwrap();
    wait_drained(&sidecar);
    let cat = one_complete(&collector, "the exec -i cat", |e| {
        e["objectRef"]["subresource"] == "exec"
            && e["requestURI"]
                .as_str()
                .unwrap_or("")
                .contains("command=cat")
    });
    let id = cat["auditID"].as_str().unwrap().to_string();
    let cast = wait_for("the cast", DELIVERY, || {
        collector
            .sessions()
            .into_iter()
            .find(|(n, _)| *n == id)
            .map(|(_, c)| c)
    })
    .unwrap();
    let (_header, lines) = parse_cast(&cast);
    let output: String = lines
        .iter()
        .filter(|(_, c, _)| c == "o")
        .map(|(_, _, d)| d.as_str())
        .collect();
    let input: String = lines
        .iter()
        .filter(|(_, c, _)| c == "i")
        .map(|(_, _, d)| d.as_str())
        .collect();
    assert!(
        output
            .replace("\r\n", "\n")
            .contains("first line\nsecond line\n"),
        "{cast}"
    );
    assert!(input.contains("first line\nsecond line\n"), "{cast}");

    // SPDY (kubectl 1.29): recorded as events, not decoded into a cast.
    let spdy = run_ok(
        sidecar
            .kubectl("1.29")
            .args(["exec", "web-0", "--", "echo", "spdy"]),
    )
    .unwrap();
    assert_eq!(spdy.trim(), "spdy");
    wait_drained(&sidecar);
    let s = one_complete(&collector, "the SPDY exec", |e| {
        e["objectRef"]["subresource"] == "exec"
            && e["requestURI"]
                .as_str()
                .unwrap_or("")
                .contains("command=spdy")
    });
    check_common(&s, 101, "allow");
    let sid = s["auditID"].as_str().unwrap().to_string();
    assert!(stages_of(&collector, &sid).contains(&"ResponseStarted".to_string()));
    wait_drained(&sidecar);
    assert!(
        !collector.sessions().iter().any(|(n, _)| *n == sid),
        "SPDY sessions are not decoded into casts"
    );
}

/// Builds a kube-rs client from the sidecar's (app-side) kubeconfig.
async fn app_client(sidecar: &Sidecar) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(sidecar.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// A list of pods whose label selector names request `seq`: `Ok(code)` for
/// an HTTP answer, `Err` for a transport failure (sidecar gone).
async fn seq_request(client: &kube::Client, seq: u32) -> Result<u16, String> {
    let req = http::Request::get(format!(
        "/api/v1/namespaces/default/pods?labelSelector=rec-seq%3D{seq}"
    ))
    .body(Vec::new())
    .unwrap();
    match client.request_text(req).await {
        Ok(_) => Ok(200),
        Err(kube::Error::Api(s)) => Ok(s.code),
        Err(e) => Err(e.to_string()),
    }
}

fn seq_of(ev: &Value) -> Option<u32> {
    let uri = ev["requestURI"].as_str()?;
    let (_, rest) = uri.split_once("rec-seq%3D")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// 500 requests while the collector is down, the sidecar SIGKILLed in the
/// middle of them and restarted: every answered request's event arrives,
/// exactly once per auditID, and none was refused.
#[test]
fn outage_and_sidecar_crash_lose_nothing() {
    const N: u32 = 500;
    const WORKERS: u32 = 4;
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let mut collector = Collector::start().unwrap();
    let mut sidecar =
        Sidecar::start(&sim, SidecarOptions::default().collector(&collector)).unwrap();
    collector.stop();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Requests from WORKERS workers; `next` hands out sequence numbers,
    // answered ones are kept with their code. The sidecar is SIGKILLed
    // while they run (their requests then fail at the transport: those
    // sequence numbers are abandoned, not counted).
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    let next = Arc::new(AtomicU32::new(0));
    let slots = Arc::new(AtomicU32::new(N));
    let answered = Arc::new(Mutex::new(BTreeMap::<u32, u16>::new()));
    let spawn_workers = |sidecar: &Sidecar, stop: Arc<AtomicBool>| {
        let client = rt.block_on(app_client(sidecar));
        (0..WORKERS)
            .map(|_| {
                let (client, next, answered, stop, slots) = (
                    client.clone(),
                    next.clone(),
                    answered.clone(),
                    stop.clone(),
                    slots.clone(),
                );
                rt.spawn(async move {
                    let mut failures = 0;
                    // A slot is taken before a request and given back when
                    // the request fails at the transport: exactly N answers.
                    while !stop.load(Ordering::SeqCst)
                        && slots
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        let seq = next.fetch_add(1, Ordering::SeqCst);
                        match seq_request(&client, seq).await {
                            Ok(code) => {
                                answered.lock().unwrap().insert(seq, code);
                            }
                            Err(e) => {
                                slots.fetch_add(1, Ordering::SeqCst);
                                failures += 1;
                                assert!(failures < 20, "request {seq}: {e}");
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_workers(&sidecar, stop.clone());
    wait_for("half of the requests", Duration::from_secs(120), || {
        (answered.lock().unwrap().len() as u32 >= N / 2).then_some(())
    })
    .unwrap();
    sidecar.kill();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let before_kill = answered.lock().unwrap().len() as u32;
    eprintln!("SIGKILL after {before_kill} answered requests");
    assert!(before_kill < N, "the kill came after all {N} requests");
    sidecar.restart().unwrap();
    for t in spawn_workers(&sidecar, Arc::new(AtomicBool::new(false))) {
        rt.block_on(t).unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len() as u32, N);
    let refused: Vec<_> = answered.iter().filter(|(_, c)| **c != 200).collect();
    assert!(
        refused.is_empty(),
        "refused with room in the spool: {refused:?}"
    );

    // Nothing was delivered yet; the collector comes back.
    assert!(collector.events().is_empty());
    collector.start_again().unwrap();
    let by_seq = wait_for("all 500 events", Duration::from_secs(90), || {
        let mut by_seq: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for e in completes(&collector) {
            if let Some(s) = seq_of(&e)
                && answered.contains_key(&s)
            {
                by_seq
                    .entry(s)
                    .or_default()
                    .insert(e["auditID"].as_str().unwrap().to_string());
            }
        }
        (by_seq.len() == answered.len()).then_some(by_seq)
    })
    .unwrap_or_else(|e| {
        let got: BTreeSet<u32> = completes(&collector).iter().filter_map(seq_of).collect();
        let missing: Vec<_> = answered.keys().filter(|s| !got.contains(s)).collect();
        panic!(
            "{e}: missing {} of {N}: {missing:?}\nsidecar log: {}",
            missing.len(),
            sidecar.log()
        )
    });
    for (seq, ids) in &by_seq {
        assert_eq!(ids.len(), 1, "request {seq} has several events: {ids:?}");
        assert_eq!(
            completes(&collector)
                .iter()
                .filter(|e| e["auditID"].as_str() == ids.iter().next().map(String::as_str))
                .count(),
            1
        );
    }
    assert_eq!(by_seq.len() as u32, N);
}

fn create_configmap(sidecar: &Sidecar, name: &str) -> std::process::Output {
    run(
        sidecar
            .kubectl("1.32")
            .args(["create", "configmap", name, "--from-literal=k=v"]),
        Duration::from_secs(60),
    )
    .unwrap()
}

fn exists_upstream(sim: &ApiSim, name: &str) -> bool {
    run(
        sim.kubectl("1.32").args(["get", "configmap", name]),
        Duration::from_secs(60),
    )
    .unwrap()
    .status
    .success()
}

/// Fills the spool (collector down, small `--spool-max-bytes`): returns the
/// first name whose create failed, after at most `max` creates.
fn fill_spool(sidecar: &Sidecar, prefix: &str, max: usize) -> Option<(String, String)> {
    for i in 0..max {
        let name = format!("{prefix}-{i}");
        let out = create_configmap(sidecar, &name);
        if !out.status.success() {
            return Some((name, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
    }
    None
}

/// Spool full, fail-closed: 503 and not forwarded; passes again once the
/// collector drained the spool. With `continue`: passes, the loss counted.
#[test]
fn full_spool_refuses_or_counts_loss() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let policy = policy_file(&sim.work_dir());
    let mut collector = Collector::start().unwrap();
    collector.stop();
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions::default()
            .policy(&policy)
            .collector(&collector)
            .args(["--spool-max-bytes", "16384"]),
    )
    .unwrap();
    let (name, err) = fill_spool(&sidecar, "full", 60).expect("the spool never filled");
    assert!(
        err.contains("ServiceUnavailable")
            || err.contains("503")
            || err.contains("cannot be recorded"),
        "{err}"
    );
    assert!(!exists_upstream(&sim, &name), "{name} was forwarded");
    // Raw: the answer is a 503 Status, and the object is not created.
    let raw = run(
        sidecar.kubectl("1.32").args([
            "create",
            "configmap",
            "full-raw",
            "--from-literal=k=v",
            "-v=8",
        ]),
        Duration::from_secs(60),
    )
    .unwrap();
    // kubectl -v=8 logs the body JSON-quoted.
    let log = String::from_utf8_lossy(&raw.stderr).replace('\\', "");
    assert!(!raw.status.success());
    assert!(log.contains("503 Service Unavailable"), "{log}");
    assert!(log.contains("\"kind\":\"Status\""), "{log}");
    assert!(log.contains("\"reason\":\"ServiceUnavailable\""), "{log}");
    assert!(!exists_upstream(&sim, "full-raw"));

    collector.start_again().unwrap();
    wait_drained(&sidecar);
    let again = create_configmap(&sidecar, "after-recovery");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(exists_upstream(&sim, "after-recovery"));
    // The refusals' own events could not be stored (the spool was full):
    // counted as lost, as docs/recording.md says.
    assert!(metric(&metrics(&sidecar), "mcp_warden_recording_events_lost_total") > 0.0);
    drop(sidecar);

    // `continue`: requests pass with the spool full, the loss is counted.
    collector.stop();
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions::default()
            .policy(&policy)
            .collector(&collector)
            .args([
                "--spool-max-bytes",
                "16384",
                "--on-recording-failure",
                "continue",
            ]),
    )
    .unwrap();
    assert!(
        fill_spool(&sidecar, "cont", 40).is_none(),
        "continue refused"
    );
    assert!(exists_upstream(&sim, "cont-39"));
    let lost = metric(&metrics(&sidecar), "mcp_warden_recording_events_lost_total");
    assert!(lost > 0.0, "{}", metrics(&sidecar));
}

/// `--collector-format ndjson` delivers NDJSON bodies.
#[test]
fn ndjson_delivery() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions::default()
            .collector(&collector)
            .args(["--collector-format", "ndjson"]),
    )
    .unwrap();
    run_ok(sidecar.kubectl("1.32").args(["get", "pod", "web-0"])).unwrap();
    let ev = one_complete(&collector, "the get", |e| {
        e["verb"] == "get" && e["objectRef"]["name"] == "web-0"
    });
    assert_eq!(ev["responseStatus"]["code"], 200);
    let bodies: Vec<PathBuf> = std::fs::read_dir(collector.out_dir().join("bodies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!bodies.is_empty());
    for p in bodies {
        assert_eq!(p.extension().unwrap(), "ndjson", "{}", p.display());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with('\n'));
        for l in text.lines() {
            let _: mcp_warden_shared::audit::Event = serde_json::from_str(l).unwrap();
        }
    }
}
