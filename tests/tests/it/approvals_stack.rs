//! Approvals in the deployed stack: the `mcp-warden-sidecar` binary (with
//! `--approval-timeout`), the collector, kube-apisim calling the
//! `mcp-warden-webhook` binary for AccessRequest status updates, and the
//! `kubectl-mcp_warden` plugin as another user. The recording of the approved
//! request names the approver.
//!
//! Needs `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, run, wait_child, wait_for, workspace_bin, write_kubeconfig,
};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Webhook, WebhookOptions};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

const POLICY: &str = r#"
apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: allow
rules:
  - name: deletes-need-a-human
    action: approve
    verbs: [delete]
    apiGroups: [""]
    resources: [configmaps]
"#;

const CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: mutatingwebhookconfigurations.admissionregistration.k8s.io
spec:
  group: admissionregistration.k8s.io
  scope: Cluster
  names: {plural: mutatingwebhookconfigurations, singular: mutatingwebhookconfiguration, kind: MutatingWebhookConfiguration}
  versions:
    - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: doomed, namespace: default}
data: {k: v}
"#;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn approved_delete_through_the_sidecar_binary_is_recorded_with_its_approver() {
    let dir = tempfile::tempdir().unwrap();
    let crd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds/accessrequests.yaml"),
    )
    .unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, format!("{CRDS}---\n{crd}")).unwrap();
    let sim = ApiSim::start(ApiSimOptions {
        seed: Some(seed),
        version: Some("v1.32.3".into()),
        extra_users: vec!["alice=alice-token".into()],
        ..Default::default()
    })
    .unwrap();
    let webhook = Webhook::start(WebhookOptions {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let cfg = dir.path().join("mwc.yaml");
    std::fs::write(&cfg, webhook.accessrequest_mutating_config()).unwrap();
    ok(&run(sim.kubectl("32").args(["apply", "-f"]).arg(&cfg), LIMIT).unwrap());

    // The sidecar runs with the pod's service-account token.
    let token = ok(&run(
        sim.kubectl("32")
            .args(["create", "token", "default", "-n", "default"]),
        LIMIT,
    )
    .unwrap());
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let collector = Collector::start().unwrap();
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args(["--approval-timeout", "45s", "--approval-reuse-window", "1m"]);
    opts.upstream_token_file = Some(token_file);
    let sidecar = Sidecar::start(&sim, opts).unwrap();

    let mut held = sidecar
        .kubectl("1.32")
        .args(["delete", "configmap", "doomed", "-n", "default"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let name = wait_for("the AccessRequest", Duration::from_secs(30), || {
        let out = run(
            sim.kubectl("32")
                .args(["get", "accessrequests", "-n", "default", "-o", "json"]),
            LIMIT,
        )
        .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .find(|a| a["status"]["state"] == "Pending")
            .and_then(|a| a["metadata"]["name"].as_str().map(str::to_string))
    })
    .unwrap();
    assert!(
        held.try_wait().unwrap().is_none(),
        "the delete was not held"
    );

    let alice = dir.path().join("alice.kubeconfig");
    write_kubeconfig(&alice, &sim.url(), &sim.ca_path(), "alice-token").unwrap();
    let out = ok(&run(
        Command::new(workspace_bin("kubectl-mcp_warden"))
            .env("KUBECONFIG", &alice)
            .args(["approve", &name, "-n", "default"]),
        LIMIT,
    )
    .unwrap());
    assert!(out.contains("decidedBy: alice"), "{out}");
    let status = wait_child(&mut held, LIMIT).expect("the held delete did not finish");
    assert!(status.success(), "log: {}", sidecar.log());

    let event = wait_for("the recorded delete", Duration::from_secs(30), || {
        collector.events().into_iter().find(|e| {
            e["verb"] == "delete"
                && e["stage"] == "ResponseComplete"
                && e["objectRef"]["name"] == "doomed"
        })
    })
    .unwrap();
    let ann = &event["annotations"];
    assert_eq!(ann["mcp-warden.io/decision"], "approve");
    assert_eq!(ann["mcp-warden.io/rule"], "deletes-need-a-human");
    assert_eq!(ann["mcp-warden.io/approved-by"], "alice");
    assert_eq!(
        ann["mcp-warden.io/access-request"],
        format!("default/{name}")
    );
    assert_eq!(event["responseStatus"]["code"], 200);
}
