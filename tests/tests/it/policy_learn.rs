//! `policy learn` and `policy replay` on a real recording: a kubectl session
//! through the sidecar (kube-apisim upstream) recorded by the test
//! collector; the policy learned from it replays the same events with no
//! change, denies a request outside the session (offline and in a sidecar
//! enforcing it), and a stricter candidate lists exactly the requests it
//! changes (see docs/policy.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, run, run_ok, wait_for, workspace_bin};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};
use serde_json::Value;

const DELIVERY: Duration = Duration::from_secs(30);

/// The policy the session runs under: reads, configmap writes, a denied
/// secret read.
const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: deny
rules:
  - name: read-everything
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: configmaps
    action: allow
    verbs: [create, patch, delete]
    resources: [configmaps]
  - name: no-secrets
    action: deny
    verbs: ["*"]
    resources: [secrets]
recording:
  level: RequestResponse
"#;

const POD_UID: &str = "7d1c2b3a-4e5f-4a6b-8c7d-0e1f2a3b4c5d";

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

/// Waits (bounded) until every recorded event is acknowledged.
fn wait_drained(sidecar: &Sidecar) {
    wait_for("the spool to drain", DELIVERY, || {
        let m = sidecar.admin_get("/metrics").ok()?.1;
        let sent = metric(&m, "mcp_warden_recording_events_sent_total");
        (m.contains("mcp_warden_recording_spool_pending")
            && metric(&m, "mcp_warden_recording_spool_pending") == 0.0
            && sent >= metric(&m, "mcp_warden_recording_events_recorded_total"))
        .then_some(())
    })
    .unwrap();
}

/// `mcp-warden-sidecar policy ARGS...`: (exit code, stdout, stderr).
fn policy(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(workspace_bin("mcp-warden-sidecar"));
    cmd.arg("policy").args(args);
    let out = run(&mut cmd, Duration::from_secs(60)).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn learn_replay_and_a_stricter_candidate_on_a_recorded_kubectl_session() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let policy_path = sim.work_dir().join("session-policy.yaml");
    std::fs::write(&policy_path, POLICY).unwrap();
    let token = sa_token_file(&sim);
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions {
            upstream_token_file: Some(token.clone()),
            ..SidecarOptions::default()
        }
        .policy(&policy_path)
        .collector(&collector),
    )
    .unwrap();
    let kc = || sidecar.kubectl("1.32");

    // The session.
    run_ok(kc().args(["get", "pod", "web-0", "-o", "json"])).unwrap();
    run_ok(kc().args(["get", "pods", "-o", "name"])).unwrap();
    run_ok(kc().args(["get", "configmaps", "-A", "-o", "name"])).unwrap();
    run_ok(kc().args(["create", "configmap", "learn-cm", "--from-literal=a=1"])).unwrap();
    run_ok(kc().args([
        "patch",
        "configmap",
        "learn-cm",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]))
    .unwrap();
    run_ok(kc().args(["delete", "configmap", "learn-cm"])).unwrap();
    let denied = run(kc().args(["get", "secret", "db"]), Duration::from_secs(60)).unwrap();
    assert!(!denied.status.success(), "reading a secret is denied");
    wait_drained(&sidecar);
    let events = collector.out_dir().join("events.ndjson");
    let recorded: Vec<Value> = collector.events();
    let completes: Vec<&Value> = recorded
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .collect();
    assert!(
        completes.iter().any(|e| e["verb"] == "delete"),
        "{recorded:#?}"
    );

    // Learn: a valid policy without warnings.
    let dir = tempfile::tempdir().unwrap();
    let learned = dir.path().join("learned.yaml");
    let (code, _, err) = policy(&["learn", s(&events), "--out", s(&learned)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 denied left out"), "{err}");
    let text = std::fs::read_to_string(&learned).unwrap();
    assert!(text.contains("mode: audit"), "{text}");
    assert!(text.contains(r#"resourceNames: ["learn-cm"]"#), "{text}");
    let (code, out, err) = policy(&["check", s(&learned)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid policy"), "{out}");
    assert!(!err.contains("warning"), "{err}\n{text}");

    // Replayed on the same events: no decision changes.
    let (code, out, err) = policy(&["replay", s(&learned), s(&events), "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}\n{text}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["changes"],
        serde_json::json!([]),
        "{report:#}\n{text}"
    );
    assert!(
        report["notReplayable"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(report["replayed"].as_u64().unwrap() >= 7, "{report:#}");

    // Outside the session: denied, offline ...
    for req in [
        "DELETE /api/v1/namespaces/default/pods/web-0",
        "PATCH /api/v1/namespaces/default/configmaps/app-config",
        "GET /api/v1/namespaces/default/secrets/db",
    ] {
        let (code, out, _) = policy(&["eval", s(&learned), req, "-o", "json"]);
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["decision"]["action"], "deny", "{req}: {out}");
    }
    // ... and by a sidecar enforcing the learned policy, which still lets the
    // session's reads through.
    let enforced = dir.path().join("enforced.yaml");
    let (code, _, err) = policy(&["learn", s(&events), "--enforce", "--out", s(&enforced)]);
    assert_eq!(code, 0, "{err}");
    let strict_sidecar = Sidecar::start(
        &sim,
        SidecarOptions {
            upstream_token_file: Some(token),
            ..SidecarOptions::default()
        }
        .policy(&enforced),
    )
    .unwrap();
    run_ok(
        strict_sidecar
            .kubectl("1.32")
            .args(["get", "pods", "-o", "name"]),
    )
    .unwrap();
    let out = run(
        strict_sidecar
            .kubectl("1.32")
            .args(["delete", "pod", "web-0", "--wait=false"]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mcp-warden policy: denied"), "{stderr}");

    // A stricter candidate: the learned policy without deletes.
    let mut strict: Value =
        mcp_warden_shared::body::to_json(Some("application/yaml"), text.as_bytes()).unwrap();
    let rules = strict["rules"].as_array_mut().unwrap();
    for r in rules.iter_mut() {
        let verbs = r["verbs"].as_array_mut().unwrap();
        verbs.retain(|v| v != "delete");
    }
    rules.retain(|r| !r["verbs"].as_array().unwrap().is_empty());
    let candidate = dir.path().join("candidate.json");
    std::fs::write(&candidate, serde_json::to_string_pretty(&strict).unwrap()).unwrap();
    let (code, out, err) = policy(&["replay", s(&candidate), s(&events), "--format", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let changed: BTreeSet<String> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            assert_eq!(
                (c["from"].as_str(), c["to"].as_str()),
                (Some("allow"), Some("deny")),
                "{c}"
            );
            c["requests"].as_array().unwrap().iter()
        })
        .map(|r| r["auditID"].as_str().unwrap().to_string())
        .collect();
    let deletes: BTreeSet<String> = completes
        .iter()
        .filter(|e| e["verb"] == "delete")
        .map(|e| e["auditID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changed, deletes, "{report:#}");
    assert_eq!(report["breaksAllowed"], true);
    // The text form names the group and the rules.
    let (code, out, _) = policy(&["replay", s(&candidate), s(&events)]);
    assert_eq!(code, 1);
    assert!(
        out.contains("allow -> deny") && out.contains("delete configmaps in default"),
        "{out}"
    );
    assert!(
        out.contains("FAIL: requests allowed now would be denied or held"),
        "{out}"
    );
}
