//! The deployed stack starts, serves kubectl through the sidecar, and records.

use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, run_ok};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};

#[test]
fn stack_serves_and_records() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().collector(&collector)).unwrap();
    let out = run_ok(sidecar.kubectl("1.32").args(["get", "pods", "-o", "name"])).unwrap();
    assert!(out.contains("pod/web-0"), "{out}");
    let events = mcp_warden_tests::harness::wait_for(
        "the list to be recorded",
        std::time::Duration::from_secs(10),
        || {
            let ev = collector.events();
            ev.iter()
                .any(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods")
                .then_some(ev)
        },
    )
    .unwrap();
    let list = events
        .iter()
        .find(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods")
        .unwrap();
    assert_eq!(list["annotations"]["mcp-warden.io/decision"], "allow");
    assert_eq!(list["responseStatus"]["code"], 200);
    let (code, body) = sidecar.admin_get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("mcp_warden_recording_events_recorded_total"),
        "{body}"
    );
    assert!(body.contains("mcp_warden_policy_reloads_total"), "{body}");
}

/// An oversized request body is answered with a 413 `Status` by the sidecar
/// and never reaches the API server.
#[test]
fn oversized_request_is_refused_with_a_status_and_not_forwarded() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Creates must be allowed, or the policy refuses before the body is read.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\ndefaultAction: allow\n",
    )
    .unwrap();
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().policy(&policy)).unwrap();
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "huge", "namespace": "default"},
        "data": {"blob": "x".repeat(4 << 20)},
    });
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, serde_json::to_vec(&body).unwrap()).unwrap();
    let out_path = dir.path().join("out.json");
    let out = run_ok(std::process::Command::new("curl").args([
        "-sS".to_string(),
        // HTTP/2 (curl's default over TLS): the sidecar drains the rest of
        // the upload before answering, so the 413 arrives, not a reset.
        "-o".into(),
        out_path.display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        "--cacert".into(),
        sidecar.local_dir().join("ca.crt").display().to_string(),
        "-H".into(),
        format!("Authorization: Bearer {}", sidecar.token().unwrap()),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        format!("@{}", body_path.display()),
        format!("{}/api/v1/namespaces/default/configmaps", sidecar.url()),
    ]))
    .unwrap();
    assert_eq!(out.trim(), "413", "{}", sidecar.log());
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    // kube-apisim answers 413 above 3 MiB too, worded differently ("Request
    // entity too large: limit is 3145728"): the message shows that the
    // sidecar refused it.
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("request body larger than"),
        "{status}"
    );
    let got = mcp_warden_tests::harness::run(
        sim.kubectl("1.32").args(["get", "configmap", "huge"]),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    assert!(
        !got.status.success(),
        "the oversized ConfigMap reached kube-apisim"
    );
    assert!(String::from_utf8_lossy(&got.stderr).contains("not found"));
    // What reached kube-apisim: the read just made, not the oversized create.
    let requests = sim.requests();
    let seen = |method: &str, path: &str| requests.iter().any(|(m, p)| m == method && p == path);
    assert!(
        seen("GET", "/api/v1/namespaces/default/configmaps/huge"),
        "kube-apisim's log shows no requests:\n{}",
        sim.log()
    );
    assert!(
        !seen("POST", "/api/v1/namespaces/default/configmaps"),
        "the oversized create reached kube-apisim: {requests:?}"
    );
}
