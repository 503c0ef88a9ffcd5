//! Time-bounded grants on the real kube-apiserver (1.20.2, see
//! `realkube.rs`): the CRD from `manifests/crds/`, the sidecar's Role and
//! the approver ClusterRole from `manifests/mcp-warden.yaml` (alice and bob
//! bound to it), the chart's pair of AccessRequest webhook entries
//! registered by URL in front of the `mcp-warden-webhook` binary, the
//! sidecar with a TokenRequest token of the ServiceAccount. Then the
//! scenario of `grants_stack` ([`grant_scenario`]): a short grant lets
//! three deletes through and the fourth after the window is held, a revoke
//! ends it for the next request, a self-grant and a 2h window are refused
//! by the server's admission chain, a `grant: false` rule ends the grant.
//! Then a pod grant: `grant --pod` reads the pod's ServiceAccount (a pod the
//! server stores, never scheduled), the sidecar of that pod lets the next
//! delete pass, and a token bound to that pod cannot grant it.
//!
//! Needs `cargo build --workspace --bins` and the control plane
//! (`bash scripts/deps/kube-control-plane.sh`; scripts/test.sh runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mcp_warden_tests::chart::{
    RealWebhook, TEST_LABEL, admin_json, manifest, manifest_in, repo_file,
};
use mcp_warden_tests::harness::{run, run_ok, wait_for, write_kubeconfig};
use mcp_warden_tests::realkube::{ADMIN, ALICE, BOB, RealKube};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Upstream};
use serde_json::{Value, json};

use crate::grants_stack::{Env, POLICY, grant_scenario, objects, plugin, text};

const LIMIT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(120);

/// A dry-run approval by alice of `probe` with a forged decider.
fn forged_dry_run(kube: &RealKube, dir: &Path, probe: &Value) -> std::process::Output {
    let mut forged = probe.clone();
    forged["status"] =
        json!({"state": "Approved", "decidedBy": "bob", "decidedAt": "2001-01-01T00:00:00Z"});
    let file = dir.join("probe.json");
    std::fs::write(&file, forged.to_string()).unwrap();
    run(
        kube.kubectl("1.32", ALICE)
            .args([
                "replace",
                "--subresource=status",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
            ])
            .arg(&file),
        LIMIT,
    )
    .unwrap()
}

#[test]
fn grants_on_the_real_server_pass_for_their_window_end_on_revoke_and_are_refused_by_admission() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "rkg-grants";
    let sa = "kubernetes-mcp-server";

    kube.apply(&std::fs::read_to_string(repo_file("manifests/crds/accessrequests.yaml")).unwrap())
        .unwrap();
    run_ok(kube.kubectl("1.32", ADMIN).args([
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/accessrequests.mcp-warden.io",
    ]))
    .unwrap();
    let mut approver = manifest("ClusterRole", "mcp-warden-approver");
    approver["metadata"] = json!({"name": "mcp-warden-approver"});
    let mut docs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {TEST_LABEL: "mcp-warden-rkg-grants"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}),
        manifest_in("Role", "mcp-warden-sidecar", ns),
        manifest_in("RoleBinding", "mcp-warden-sidecar", ns),
        approver,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "mcp-warden-approvers", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mcp-warden-approver"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": BOB},
            ],
        }),
        // What the MCP server itself may do: delete ConfigMaps and Secrets.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "deleter", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "watch", "delete"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "deleter", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deleter"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        // A grant that is never approved, for probing the webhooks.
        json!({
            "apiVersion": "mcp-warden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "probe", "namespace": ns},
            "spec": {"requester": {"serviceAccount": format!("system:serviceaccount:{ns}:probe")},
                     "expiresAt": "2099-01-01T00:00:00Z",
                     "grant": {"rule": "deletes-need-a-human", "serviceAccount": "probe", "duration": "1m"}},
        }),
    ];
    docs.extend(objects(ns));
    kube.apply(&json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string())
        .unwrap();

    let dir = tempfile::Builder::new()
        .prefix("grants-")
        .tempdir_in(kube.work_dir())
        .unwrap();
    // The chart's pair, each seen by the server before going on: the
    // validating entry alone refuses a forged decider, with the mutating
    // one the same write is stamped alice.
    let mut webhook = RealWebhook::start(kube, "grants-webhook-");
    let probe = admin_json(kube, &["get", "accessrequest", "probe", "-n", ns]);
    webhook.register(
        "ValidatingWebhookConfiguration",
        "mcp-warden-rkg-grants",
        &["accessrequests.mcp-warden.io"],
    );
    wait_for("the validating webhook", SETTLE, || {
        let out = forged_dry_run(kube, dir.path(), &probe);
        let refused = String::from_utf8_lossy(&out.stderr)
            .contains("status.decidedBy is set by the admission webhook");
        if !refused {
            std::thread::sleep(Duration::from_millis(200));
        }
        refused.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", webhook.server.log()));
    webhook.register(
        "MutatingWebhookConfiguration",
        "mcp-warden-rkg-grants",
        &["accessrequests.mcp-warden.io"],
    );
    wait_for("the mutating webhook", SETTLE, || {
        let out = forged_dry_run(kube, dir.path(), &probe);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["status"]["decidedBy"] != ALICE {
            std::thread::sleep(Duration::from_millis(200));
            return None;
        }
        Some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", webhook.server.log()));

    let token = kube.service_account_token(ns, sa, 3600).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let collector = Collector::start().unwrap();
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args(["--approval-timeout", "120s"]);
    opts.pod_namespace = Some(ns.to_string());
    let sidecar = Sidecar::start_upstream(
        &Upstream {
            url: kube.url(),
            ca_file: kube.ca_path(),
            token_file,
        },
        opts,
    )
    .unwrap();
    let own = dir.path().join("own.kubeconfig");
    write_kubeconfig(&own, &kube.url(), &kube.ca_path(), &token).unwrap();
    let access_requests = || -> Vec<Value> {
        admin_json(kube, &["get", "accessrequests", "-n", ns])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["metadata"]["name"] != "probe")
            .collect()
    };
    let env = Env {
        sidecar: &sidecar,
        collector: &collector,
        ns,
        sa,
        alice: &kube.kubeconfig_path(ALICE),
        bob: &kube.kubeconfig_path(BOB),
        own: &own,
        access_requests: &access_requests,
    };
    grant_scenario(&env);

    // A pod grant. The sidecar runs as pod mcp-server-0 (its --pod-name);
    // the server stores that pod (no node: it stays Pending) and alice may
    // (and the ServiceAccount) read pods, so `grant --pod` finds its
    // ServiceAccount.
    let pod = "mcp-server-0";
    let docs = vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns},
            "spec": {"serviceAccountName": sa, "automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "example.invalid/app:1"}]}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "pod-reader", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE},
                {"kind": "ServiceAccount", "name": sa, "namespace": ns},
            ],
        }),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-pod", "namespace": ns}, "data": {"k": "v"}}),
    ];
    kube.apply(&json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string())
        .unwrap();
    // A token bound to the pod (userInfo.extra names it) cannot grant it.
    let bound = run_ok(kube.kubectl("1.32", ADMIN).args([
        "create",
        "token",
        sa,
        "-n",
        ns,
        "--bound-object-kind=Pod",
        &format!("--bound-object-name={pod}"),
    ]))
    .unwrap();
    let bound_kc = dir.path().join("bound.kubeconfig");
    write_kubeconfig(&bound_kc, &kube.url(), &kube.ca_path(), bound.trim()).unwrap();
    let args = [
        "grant",
        "--pod",
        pod,
        "-n",
        ns,
        "--rule",
        "deletes-need-a-human",
        "--for",
        "10m",
    ];
    let out = plugin(&bound_kc, &args);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("admission webhook") && text(&out).contains("cannot"),
        "{}",
        text(&out)
    );
    let out = plugin(env.alice, &args);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let g = said
        .split_once("accessrequest.mcp-warden.io/")
        .and_then(|(_, r)| r.split_once(" granted"))
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| panic!("{said}"));
    let stored = admin_json(kube, &["get", "accessrequest", &g, "-n", ns]);
    assert_eq!(stored["spec"]["grant"]["pod"], pod, "{stored}");
    assert_eq!(
        stored["spec"]["requester"]["serviceAccount"],
        format!("system:serviceaccount:{ns}:{sa}"),
        "{stored}"
    );
    wait_for("the pod grant in effect", SETTLE, || {
        sidecar
            .log()
            .lines()
            .any(|l| l.contains("grant in effect") && l.contains(&g))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", sidecar.log()));
    env.passes("by-pod");
    let ann = &env.recorded("by-pod")["annotations"];
    assert_eq!(ann["mcp-warden.io/grant"], format!("{ns}/{g}"), "{ann}");
    let out = plugin(env.alice, &["revoke", &g, "-n", ns]);
    assert!(out.status.success(), "{}", text(&out));
}
