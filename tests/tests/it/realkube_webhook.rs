//! The webhook behind a real kube-apiserver's admission chain (1.20.2, built
//! from Debian's source by `scripts/deps/kube-control-plane.sh`; see
//! `realkube.rs`), and approvals on the real server.
//!
//! The `mcp-warden-webhook` binary runs as a local process (TLS on
//! 127.0.0.1, file certificates from a fresh CA, `nativeSidecar: auto`
//! reading the real `/version`). The webhook configurations are the chart's
//! (`manifests/mcp-warden.yaml`, its rendered output) with each
//! `clientConfig.service` replaced by `url` + `caBundle`; each test registers
//! only the entries it needs, under its own names (pod webhooks narrowed to
//! the namespaces labelled for the test), waits until the server calls them,
//! and removes them before its webhook stops.
//!
//! - Injection: a Deployment of an MCP server in a namespace labelled
//!   `mcp-warden.io/injection: enabled` → the pod the real ReplicaSet
//!   controller creates is injected in the container form (the server is
//!   1.20) and accepted by the server; the stored pod has the hostAliases,
//!   the `postStart` hook, no service-account token volume in the app
//!   containers; a second admission of the stored pod changes nothing.
//! - Every pod fixture of `tests/fixtures/webhook/`, created (server-side
//!   dry run) in a labelled namespace: refused by the webhook where it must
//!   be, left alone without a token, otherwise injected and accepted by the
//!   server's own validation, and unchanged by a second admission.
//! - Reinvocation: a later mutating webhook (served by the test) adds a
//!   container after the injection; the server calls the webhook again
//!   (`reinvocationPolicy: IfNeeded`) and that container is rewired too.
//! - Approvals: the CRD from `manifests/crds/`, the sidecar's Role and the
//!   approver ClusterRole from the manifests; a `kubectl delete configmap`
//!   through the sidecar is held, the requesting ServiceAccount cannot
//!   approve it, `alice` approves it with `kubectl-mcp_warden` and the
//!   ConfigMap is gone; the validating webhook alone refuses a decision
//!   naming someone else, and with the mutating one a `status.decidedBy`
//!   forged by alice is stamped `alice`; bob's denial is a 403 naming him;
//!   without a decision the request is refused and the sidecar's Expired
//!   is stored.
//!
//! Needs `cargo build --workspace --bins` and the control plane
//! (`bash scripts/deps/kube-control-plane.sh`; scripts/test.sh runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use mcp_warden_tests::chart::{
    RealWebhook, TEST_LABEL, admin_json, manifest, manifest_in, repo_file,
};
use mcp_warden_tests::harness::{
    run, run_ok, wait_child, wait_for, workspace_bin, write_kubeconfig,
};
use mcp_warden_tests::realkube::{ADMIN, ALICE, BOB, RealKube};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Upstream};
use serde_json::{Value, json};

/// Bound for one kubectl or plugin run.
const LIMIT: Duration = Duration::from_secs(60);
/// Bound for the controllers to create a pod, and for held requests.
const SETTLE: Duration = Duration::from_secs(120);

/// What the server says about a namespace's ReplicaSets and pods: events and
/// the ReplicaSets' conditions, for failure messages.
fn diagnostics(kube: &RealKube, ns: &str, webhook: &RealWebhook) -> String {
    let events = run(
        kube.kubectl("1.32", ADMIN)
            .args(["get", "events", "-n", ns, "-o", "wide"]),
        LIMIT,
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    let rs = run(
        kube.kubectl("1.32", ADMIN)
            .args(["describe", "replicasets", "-n", ns]),
        LIMIT,
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    format!(
        "events in {ns}:\n{events}\nreplicasets:\n{rs}\nwebhook log:\n{}",
        webhook.log()
    )
}

#[test]
fn a_deployments_pod_is_injected_in_the_container_form_and_accepted_by_the_real_server() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "rkw-inject";
    let mut webhook = RealWebhook::start(kube, "webhook-");
    webhook.register(
        "MutatingWebhookConfiguration",
        "mcp-warden-rkw-inject",
        &["namespace.inject.mcp-warden.io", "pod.inject.mcp-warden.io"],
    );

    // The webhook read the real server's version and chose the container form.
    let read = webhook
        .log_events()
        .into_iter()
        .find(|e| e["fields"]["message"] == "nativeSidecar: auto: read the API server's version")
        .unwrap_or_else(|| panic!("no version read; log:\n{}", webhook.log()));
    assert_eq!(read["fields"]["server_version"], "1.20", "{read}");
    assert_eq!(read["fields"]["sidecar_form"], "container", "{read}");

    // The MCP server fixture, moved to a labelled namespace.
    let fixture = std::fs::read_to_string(repo_file(
        "tests/fixtures/webhook/mcp-server-deployment.yaml",
    ))
    .unwrap()
    .replace("namespace: mcp\n", &format!("namespace: {ns}\n"))
    .replace(
        "name: kubernetes-mcp-server-view",
        "name: rkw-kubernetes-mcp-server-view",
    );
    kube.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{mcp-warden.io/injection: enabled, {TEST_LABEL}: mcp-warden-rkw-inject}}"
    ))
    .unwrap();
    wait_injecting(kube, &webhook, ns);
    kube.apply(&fixture).unwrap();

    let pod = wait_for("the ReplicaSet's pod", SETTLE, || {
        let list = admin_json(
            kube,
            &[
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                "app.kubernetes.io/name=kubernetes-mcp-server",
            ],
        );
        let items = list["items"].as_array()?.clone();
        if let Some(pod) = items.into_iter().next() {
            return Some(Ok(pod));
        }
        // The ReplicaSet controller reports a refused pod as an event: no
        // need to wait out its retries.
        let refused = admin_json(
            kube,
            &[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                "reason=FailedCreate",
            ],
        );
        if refused["items"].as_array().is_some_and(|i| !i.is_empty()) {
            return Some(Err("the server refused the ReplicaSet's pod".to_string()));
        }
        std::thread::sleep(Duration::from_millis(500));
        None
    })
    .and_then(|r| r.map_err(anyhow::Error::msg))
    .unwrap_or_else(|e| panic!("{e}: no pod\n{}", diagnostics(kube, ns, &webhook)));
    let why = || format!("{pod:#}\n{}", diagnostics(kube, ns, &webhook));
    if std::env::var_os("RKW_DEBUG").is_some() {
        eprintln!("{}", why());
    }
    let spec = &pod["spec"];

    // Injected, in the container form.
    assert_eq!(
        pod["metadata"]["annotations"]["mcp-warden.io/status"],
        "injected",
        "{}",
        why()
    );
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers[0]["name"], "mcp-warden", "{}", why());
    assert!(
        spec["initContainers"]
            .as_array()
            .is_none_or(|i| i.iter().all(|c| c["name"] != "mcp-warden")),
        "{}",
        why()
    );
    let sidecar = &containers[0];
    assert!(sidecar.get("restartPolicy").is_none(), "{}", why());
    let post_start = sidecar["lifecycle"]["postStart"]["exec"]["command"]
        .as_array()
        .unwrap_or_else(|| panic!("no postStart exec hook: {}", why()));
    assert!(
        post_start.iter().any(|a| a == "wait-ready"),
        "{post_start:?}"
    );
    assert!(
        sidecar["lifecycle"]["preStop"]["exec"]["command"]
            .as_array()
            .is_some_and(|c| c.iter().any(|a| a == "wait-drain")),
        "{}",
        why()
    );

    // hostAliases send the API server's names to the sidecar.
    let aliases = spec["hostAliases"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", why()));
    let local: Vec<&str> = aliases
        .iter()
        .filter(|a| a["ip"] == "127.0.0.1")
        .flat_map(|a| a["hostnames"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        assert!(
            local.contains(&name),
            "{name} not on 127.0.0.1: {aliases:?}"
        );
    }

    // No service-account token for the app: its containers mount the
    // sidecar's local files where client libraries look, and no volume with
    // a real token.
    let volumes = spec["volumes"].as_array().unwrap();
    let token_volumes: Vec<&str> = volumes
        .iter()
        .filter(|v| {
            v.get("secret").is_some_and(|s| {
                s["secretName"]
                    .as_str()
                    .is_some_and(|n| n.contains("-token-"))
            }) || v["projected"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.get("serviceAccountToken").is_some()))
        })
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(!token_volumes.is_empty(), "the sidecar's token: {}", why());
    for c in containers.iter().skip(1) {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = m["name"].as_str().unwrap();
            assert!(
                !token_volumes.contains(&vname),
                "{} mounts the token volume {vname}: {}",
                c["name"],
                why()
            );
            if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" {
                assert_eq!(vname, "mcp-warden-local", "{}", why());
            }
        }
    }
    assert_eq!(token_volumes, ["mcp-warden-token"], "{}", why());
    assert_eq!(spec["automountServiceAccountToken"], false, "{}", why());

    // A second admission of the stored pod, through the real chain
    // (server-side dry run of a copy): the webhook patches nothing, and the
    // pod comes back as it was stored.
    let reviews_before = admission_reviews(&webhook).len();
    let mut copy = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "second-admission",
            "namespace": ns,
            "labels": pod["metadata"]["labels"],
            "annotations": pod["metadata"]["annotations"],
        },
        "spec": spec,
    });
    copy["spec"].as_object_mut().unwrap().remove("nodeName");
    let file = webhook.dir.path().join("second.json");
    std::fs::write(&file, copy.to_string()).unwrap();
    let out = run_ok(
        kube.kubectl("1.32", ADMIN)
            .args(["create", "--dry-run=server", "-o", "json", "-f"])
            .arg(&file),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", why()));
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        again["spec"], copy["spec"],
        "the second admission changed the pod"
    );
    let reviews = admission_reviews(&webhook);
    assert_eq!(
        reviews.len(),
        reviews_before + 1,
        "one more review: {reviews:?}"
    );
    let last = reviews.last().unwrap();
    assert_eq!(last["fields"]["patch_ops"], 0, "{last}");
    assert_eq!(last["fields"]["sidecar_form"], "container", "{last}");

    run_stored_pod(kube, ns, &pod);
}

/// The simulated pod (root: namespaces) runs the pod spec as the real server
/// stored it — container form, after every admission plugin — in front of
/// the same server: the app's kubectl, with in-cluster config only, works
/// through the sidecar; the sidecar holds the pod's real ServiceAccount token.
fn run_stored_pod(kube: &RealKube, ns: &str, stored: &Value) {
    use mcp_warden_tests::simpod::{PodOptions, RealUpstream, start_pod_with, stored_pod};
    // The fixture binds `view`, whose rules the aggregation controller
    // (not run here) would fill in; give the app its reads explicitly.
    kube.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: rkw-reads, namespace: {ns}}}\n\
         rules: [{{apiGroups: [\"\"], resources: [pods, secrets], verbs: [get, list]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: rkw-reads, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: rkw-reads}}\n\
         subjects: [{{kind: ServiceAccount, name: kubernetes-mcp-server, namespace: {ns}}}]\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: stored-pod-secret, namespace: {ns}}}\n\
         stringData: {{password: st0red-p0d-s3cret}}\n"
    ))
    .unwrap();
    let real = RealUpstream {
        addr: kube.addr(),
        ca_pem: kube.ca_pem().to_string(),
        admin_token: kube.token(ADMIN).unwrap(),
        pod_token: kube
            .service_account_token(ns, "kubernetes-mcp-server", 3600)
            .unwrap(),
    };
    let name = stored["metadata"]["name"].as_str().unwrap().to_string();
    let sim = start_pod_with(
        "a_deployments_pod_is_injected_in_the_container_form_and_accepted_by_the_real_server",
        PodOptions {
            native_sidecar: false,
            stored: Some(stored_pod(stored)),
            real: Some(real),
            ..PodOptions::default()
        },
    );
    let pods = sim.ok(
        "kubectl get pods (stored pod)",
        &sim.kubectl("stored-get", &["get", "pods", "-n", ns, "-o", "name"]),
    );
    assert!(pods.contains(&format!("pod/{name}")), "{pods}");
    let secret = sim.ok(
        "kubectl get secret (stored pod)",
        &sim.kubectl(
            "stored-secret",
            &["get", "secret", "stored-pod-secret", "-n", ns, "-o", "json"],
        ),
    );
    assert!(!secret.contains("st0red-p0d-s3cret"), "{secret}");
    let encoded = base64::engine::general_purpose::STANDARD.encode("st0red-p0d-s3cret");
    assert!(!secret.contains(&encoded), "{secret}");
    assert!(secret.contains("KioqTUFTS0VEKioq"), "{secret}");
    // The embedded default policy is read-only.
    let del = sim.kubectl(
        "stored-delete",
        &["delete", "secret", "stored-pod-secret", "-n", ns],
    );
    assert!(!del.status.success());
    assert!(
        String::from_utf8_lossy(&del.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
}

/// Waits (bounded) until the server calls the webhook for pods in `ns`: it
/// does once it has picked the configuration up (and the namespace has its
/// default ServiceAccount). Probed with server-side dry runs, so the pods a
/// test creates afterwards cannot miss it.
fn wait_injecting(kube: &RealKube, webhook: &RealWebhook, ns: &str) {
    let probe = webhook.dir.path().join("probe.json");
    std::fs::write(
        &probe,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
        })
        .to_string(),
    )
    .unwrap();
    wait_for("injection in the labelled namespace", SETTLE, || {
        let out = run(
            kube.kubectl("1.32", ADMIN)
                .args(["create", "--dry-run=server", "-o", "json", "-f"])
                .arg(&probe),
            LIMIT,
        )
        .ok()?;
        let v: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let injected = v
            .as_ref()
            .is_some_and(|v| v["metadata"]["annotations"]["mcp-warden.io/status"] == "injected");
        if !injected {
            std::thread::sleep(Duration::from_millis(200));
        }
        injected.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", webhook.log()));
}

/// The webhook's `admission review` log events.
fn admission_reviews(webhook: &RealWebhook) -> Vec<Value> {
    webhook
        .log_events()
        .into_iter()
        .filter(|e| e["fields"]["message"] == "admission review")
        .collect()
}

const APPROVALS_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
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

/// The pending AccessRequests of `ns`, as admin.
fn pending(kube: &RealKube, ns: &str) -> Vec<Value> {
    admin_json(kube, &["get", "accessrequests", "-n", ns])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["status"]["state"] == "Pending")
        .collect()
}

/// `kubectl delete configmap NAME` through the sidecar, in the background
/// (the sidecar holds it), and the AccessRequest it created.
fn held_delete(sidecar: &Sidecar, kube: &RealKube, ns: &str, name: &str) -> (Child, Value) {
    let mut held = sidecar
        .kubectl("1.32")
        .args(["delete", "configmap", name, "-n", ns])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ar = wait_for("the AccessRequest", SETTLE, || {
        let found = pending(kube, ns)
            .into_iter()
            .find(|a| a["spec"]["name"] == name);
        if found.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
        found
    })
    .unwrap_or_else(|e| panic!("{e}; sidecar log:\n{}", sidecar.log()));
    assert!(
        held.try_wait().unwrap().is_none(),
        "the delete was not held"
    );
    (held, ar)
}

fn finish(mut held: Child, sidecar: &Sidecar) {
    let status = wait_child(&mut held, SETTLE).expect("the held delete did not finish");
    let mut err = String::new();
    if let Some(mut e) = held.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{err}\nsidecar log:\n{}", sidecar.log());
}

/// `ar` approved, with a forged `decidedBy` (bob) and `decidedAt`, as a file.
fn forged_decision(dir: &Path, ar: &Value) -> PathBuf {
    let mut forged = ar.clone();
    forged["status"]["state"] = json!("Approved");
    forged["status"]["decidedBy"] = json!("bob");
    forged["status"]["decidedAt"] = json!("2001-01-01T00:00:00Z");
    forged["status"]["reason"] = json!("bob said so");
    let file = dir.join(format!(
        "forged-{}.json",
        ar["metadata"]["name"].as_str().unwrap()
    ));
    std::fs::write(&file, forged.to_string()).unwrap();
    file
}

/// `kubectl replace --subresource=status -f FILE -o json` as alice (a PUT of
/// the status, what the approver's RBAC allows).
fn alice_replace_status(kube: &RealKube, file: &Path, dry_run: bool) -> std::process::Output {
    let mut cmd = kube.kubectl("1.32", ALICE);
    cmd.args(["replace", "--subresource=status", "-o", "json", "-f"])
        .arg(file);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    run(&mut cmd, LIMIT).unwrap()
}

/// A held kubectl that must end refused; returns its stderr.
fn refused(mut held: Child) -> String {
    let status = wait_child(&mut held, SETTLE).expect("the held request did not finish");
    let mut err = String::new();
    if let Some(mut e) = held.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success(), "it went through: {err}");
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    err
}

fn plugin(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    run(
        Command::new(workspace_bin("kubectl-mcp_warden"))
            .env("KUBECONFIG", kubeconfig)
            .args(args),
        LIMIT,
    )
    .unwrap()
}

#[test]
fn approvals_on_the_real_server_are_stamped_with_the_authenticated_approver() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "rkw-approvals";
    let sa = "kubernetes-mcp-server";
    let requester = format!("system:serviceaccount:{ns}:{sa}");

    // The CRD from manifests/crds/, the sidecar's Role and the approvers'
    // ClusterRole from the manifests, bound here to alice and bob.
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
    let docs = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {TEST_LABEL: "mcp-warden-rkw-approvals"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}),
        manifest_in("Role", "mcp-warden-sidecar", ns),
        manifest_in("RoleBinding", "mcp-warden-sidecar", ns),
        approver,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "mcp-warden-approvers", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mcp-warden-approver"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"},
            ],
        }),
        // What the MCP server itself may do: delete ConfigMaps.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "configmaps", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "delete"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "configmaps", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "doomed", "namespace": ns}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "forged", "namespace": ns}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": ns}, "data": {"k": "v"}}),
    ];
    kube.apply(&json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string())
        .unwrap();

    let mut webhook = RealWebhook::start(kube, "webhook-");

    // The sidecar with a TokenRequest token of the ServiceAccount.
    let dir = tempfile::Builder::new()
        .prefix("approvals-")
        .tempdir_in(kube.work_dir())
        .unwrap();
    let token = kube.service_account_token(ns, sa, 3600).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, APPROVALS_POLICY).unwrap();
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
            token_file: token_file.clone(),
        },
        opts,
    )
    .unwrap();

    // Held: the AccessRequest the sidecar created was accepted by the real
    // server's schema validation.
    let (held, ar) = held_delete(&sidecar, kube, ns, "doomed");
    let name = ar["metadata"]["name"].as_str().unwrap().to_string();

    // The validating webhook alone, the backstop after every mutating
    // webhook: a decision naming someone else is refused (probed with
    // server-side dry runs until the server has picked the configuration up).
    webhook.register(
        "ValidatingWebhookConfiguration",
        "mcp-warden-rkw-approvals",
        &["accessrequests.mcp-warden.io"],
    );
    let forged_file = forged_decision(dir.path(), &ar);
    let refusal = wait_for("the validating webhook to refuse", SETTLE, || {
        let out = alice_replace_status(kube, &forged_file, true);
        if out.status.success() {
            std::thread::sleep(Duration::from_millis(200));
            return None;
        }
        Some(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .unwrap();
    assert!(
        refusal.contains("admission webhook \"accessrequests.mcp-warden.io\" denied the request")
            && refusal.contains("status.decidedBy is set by the admission webhook")
            && refusal.contains("(\"alice\"), not \"bob\""),
        "{refusal}"
    );

    // With the mutating webhook too (the chart's pair), the same write is
    // stamped alice.
    webhook.register(
        "MutatingWebhookConfiguration",
        "mcp-warden-rkw-approvals",
        &["accessrequests.mcp-warden.io"],
    );
    let dry = wait_for("the mutating webhook to stamp", SETTLE, || {
        let out = alice_replace_status(kube, &forged_file, true);
        if !out.status.success() {
            std::thread::sleep(Duration::from_millis(200));
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout).ok()
    })
    .unwrap();
    assert_eq!(dry["status"]["decidedBy"], ALICE, "{dry}");
    let still = admin_json(kube, &["get", "accessrequest", &name, "-n", ns]);
    assert_eq!(
        still["status"]["state"], "Pending",
        "dry runs only: {still}"
    );
    assert_eq!(ar["spec"]["verb"], "delete", "{ar}");
    assert_eq!(ar["spec"]["requester"]["serviceAccount"], requester, "{ar}");

    // The requesting ServiceAccount cannot approve its own request: its
    // Role lets it update the status, the admission chain refuses.
    let sa_kubeconfig = dir.path().join("sa.kubeconfig");
    write_kubeconfig(&sa_kubeconfig, &kube.url(), &kube.ca_path(), &token).unwrap();
    let out = plugin(&sa_kubeconfig, &["approve", &name, "-n", ns]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "self-approval went through: {err}");
    if std::env::var_os("RKW_DEBUG").is_some() {
        eprintln!("self-approval: {err}");
    }
    assert!(
        err.contains("admission webhook \"accessrequests.mcp-warden.io\" denied the request"),
        "{err}"
    );
    assert!(err.contains(&requester), "{err}");
    let still = admin_json(kube, &["get", "accessrequest", &name, "-n", ns]);
    assert_eq!(still["status"]["state"], "Pending", "{still}");

    // alice approves with the plugin: the delete completes, the ConfigMap is gone.
    let out = plugin(
        &kube.kubeconfig_path(ALICE),
        &["approve", &name, "-n", ns, "--reason", "rkw"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}\nwebhook log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        webhook.log()
    );
    assert!(text.contains("decidedBy: alice"), "{text}");
    finish(held, &sidecar);
    let gone = run(
        kube.kubectl("1.32", ADMIN)
            .args(["get", "configmap", "doomed", "-n", ns]),
        LIMIT,
    )
    .unwrap();
    assert!(!gone.status.success(), "the ConfigMap is still there");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    let used = admin_json(kube, &["get", "accessrequest", &name, "-n", ns]);
    assert_eq!(used["status"]["state"], "Used", "{used}");
    assert_eq!(used["status"]["decidedBy"], ALICE, "{used}");

    // alice writes the decision herself with a forged decidedBy: the stored
    // object names alice.
    let (held, ar) = held_delete(&sidecar, kube, ns, "forged");
    let name = ar["metadata"]["name"].as_str().unwrap().to_string();
    let file = forged_decision(dir.path(), &ar);
    let out = alice_replace_status(kube, &file, false);
    assert!(
        out.status.success(),
        "{}\nwebhook log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        webhook.log()
    );
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["status"]["state"], "Approved", "{stored}");
    assert_eq!(stored["status"]["decidedBy"], ALICE, "{stored}");
    assert_ne!(
        stored["status"]["decidedAt"], "2001-01-01T00:00:00Z",
        "{stored}"
    );
    finish(held, &sidecar);
    let used = admin_json(kube, &["get", "accessrequest", &name, "-n", ns]);
    assert_eq!(used["status"]["state"], "Used", "{used}");
    assert_eq!(used["status"]["decidedBy"], ALICE, "{used}");

    // bob denies: the delete is refused naming him, the ConfigMap stays.
    let (held, ar) = held_delete(&sidecar, kube, ns, "kept");
    let name = ar["metadata"]["name"].as_str().unwrap().to_string();
    let out = plugin(
        &kube.kubeconfig_path(BOB),
        &["deny", &name, "-n", ns, "--reason", "not today"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("decidedBy: bob"), "{text}");
    let err = refused(held);
    assert!(
        err.contains("was denied by bob: not today") && err.contains(&name),
        "{err}"
    );
    let denied = admin_json(kube, &["get", "accessrequest", &name, "-n", ns]);
    assert_eq!(denied["status"]["state"], "Denied", "{denied}");
    assert_eq!(denied["status"]["decidedBy"], BOB, "{denied}");
    run_ok(
        kube.kubectl("1.32", ADMIN)
            .args(["get", "configmap", "kept", "-n", ns]),
    )
    .unwrap();

    // No decision in time: refused, and the sidecar's Expired (its own
    // status update, through the same admission chain) is stored.
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args(["--approval-timeout", "3s"]);
    opts.pod_namespace = Some(ns.to_string());
    let hasty = Sidecar::start_upstream(
        &Upstream {
            url: kube.url(),
            ca_file: kube.ca_path(),
            token_file: token_file.clone(),
        },
        opts,
    )
    .unwrap();
    let held = hasty
        .kubectl("1.32")
        .args(["delete", "configmap", "kept", "-n", ns])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = refused(held);
    assert!(err.contains("(now Expired)"), "{err}\n{}", hasty.log());
    let expired = wait_for("the Expired AccessRequest", SETTLE, || {
        admin_json(kube, &["get", "accessrequests", "-n", ns])["items"]
            .as_array()?
            .iter()
            .find(|a| a["spec"]["name"] == "kept" && a["status"]["state"] == "Expired")
            .cloned()
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", hasty.log()));
    assert_eq!(
        expired["status"]["decidedBy"],
        requester.as_str(),
        "{expired}"
    );
    run_ok(
        kube.kubectl("1.32", ADMIN)
            .args(["get", "configmap", "kept", "-n", ns]),
    )
    .unwrap();

    // The recording names the approver.
    let event = wait_for("the recorded delete", SETTLE, || {
        collector.events().into_iter().find(|e| {
            e["verb"] == "delete"
                && e["stage"] == "ResponseComplete"
                && e["objectRef"]["name"] == "doomed"
        })
    })
    .unwrap();
    assert_eq!(
        event["annotations"]["mcp-warden.io/approved-by"], ALICE,
        "{event}"
    );
    assert_eq!(event["responseStatus"]["code"], 200, "{event}");
}

#[test]
fn fixture_pods_after_injection_pass_the_real_servers_validation() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "rkw-fixtures";
    let config = "mcp-warden-rkw-fixtures";
    let mut webhook = RealWebhook::start(kube, "webhook-");
    webhook.register(
        "MutatingWebhookConfiguration",
        config,
        &["namespace.inject.mcp-warden.io", "pod.inject.mcp-warden.io"],
    );
    kube.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{mcp-warden.io/injection: enabled, {TEST_LABEL}: {config}}}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: kubernetes-mcp-server, namespace: {ns}}}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: mcp-agent, namespace: {ns}}}"
    ))
    .unwrap();
    wait_injecting(kube, &webhook, ns);
    let dir = repo_file("tests/fixtures/webhook");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pod-") && n.ends_with(".yaml"))
        })
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("namespace: mcp\n", &format!("namespace: {ns}\n"));
        let file = webhook.dir.path().join(path.file_name().unwrap());
        std::fs::write(&file, text).unwrap();
        let out = run(
            kube.kubectl("1.32", ADMIN)
                // A native sidecar (restartPolicy on an init container) is
                // unknown to kubectl's 1.20 schema: the server decides.
                .args([
                    "create",
                    "--dry-run=server",
                    "--validate=false",
                    "-o",
                    "json",
                    "-f",
                ])
                .arg(&file),
            LIMIT,
        )
        .unwrap();
        let fname = path.file_name().unwrap().to_string_lossy().into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match fname.as_str() {
            "pod-host-aliases-conflict.yaml"
            | "pod-host-network.yaml"
            | "pod-share-process-namespace.yaml" => {
                assert!(!out.status.success(), "{fname} was admitted");
                assert!(
                    stderr.contains("denied the request: mcp-warden refuses"),
                    "{fname}: {stderr}"
                );
                continue;
            }
            _ => {}
        }
        assert!(
            out.status.success(),
            "{fname} after injection is refused by the real server: {stderr}\nwebhook log:\n{}",
            webhook.log()
        );
        let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
        let status = &pod["metadata"]["annotations"]["mcp-warden.io/status"];
        if fname == "pod-automount-false.yaml" {
            assert!(status.is_null(), "{fname}: {pod}");
            assert!(stderr.contains("sidecar not injected"), "{fname}: {stderr}");
            continue;
        }
        assert_eq!(status, "injected", "{fname}: {pod}");
        assert_eq!(
            pod["spec"]["containers"][0]["name"], "mcp-warden",
            "{fname}: container form: {pod}"
        );
        // A second admission of the pod as the server would store it
        // changes nothing.
        let copy = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "second-admission",
                "namespace": ns,
                "labels": pod["metadata"]["labels"],
                "annotations": pod["metadata"]["annotations"],
            },
            "spec": pod["spec"],
        });
        let again_file = webhook.dir.path().join(format!("again-{fname}.json"));
        std::fs::write(&again_file, copy.to_string()).unwrap();
        let again = run_ok(
            kube.kubectl("1.32", ADMIN)
                .args(["create", "--dry-run=server", "-o", "json", "-f"])
                .arg(&again_file),
        )
        .unwrap_or_else(|e| panic!("{fname}: {e:#}"));
        let again: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(
            again["spec"], pod["spec"],
            "{fname}: the second admission changed the pod"
        );
    }
}

/// A second mutating webhook, served in-process over TLS on 127.0.0.1: it
/// appends a container `late` to every pod that has none (an empty patch
/// otherwise). Returns its port and CA PEM; it serves until the test process
/// ends.
fn start_late_container_webhook() -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa, server_config};
    use std::sync::Arc;

    let ca = LocalCa::generate(&CaProfile::new("late webhook CA")).unwrap();
    let leaf = ca.issue(&LeafProfile::new(["127.0.0.1"])).unwrap();
    let tls = server_config(vec![leaf.cert_der.clone()], leaf.key_der(), &[]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    async fn review(
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
        let body = req.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let uid = v["request"]["uid"].clone();
        let has_late = v["request"]["object"]["spec"]["containers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "late"));
        let mut response = json!({"uid": uid, "allowed": true});
        if !has_late {
            let patch = json!([{"op": "add", "path": "/spec/containers/-",
                "value": {"name": "late", "image": "example.invalid/late:1"}}]);
            response["patchType"] = json!("JSONPatch");
            response["patch"] =
                json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
        }
        let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response});
        Ok(hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(out.to_string())))
            .unwrap())
    }

    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper::service::service_fn(review),
                        )
                        .await;
                });
            }
        });
    });
    (port, ca.cert_pem)
}

#[test]
fn a_container_added_by_a_later_webhook_is_rewired_when_the_server_reinvokes_the_webhook() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "rkw-reinvoke";
    let config = "mcp-warden-rkw-reinvoke";
    let mut webhook = RealWebhook::start(kube, "webhook-");
    webhook.register(
        "MutatingWebhookConfiguration",
        config,
        &["namespace.inject.mcp-warden.io"],
    );
    // Ordered after ours by name: the server calls it after the injection,
    // and calls ours again (reinvocationPolicy: IfNeeded) since it changed
    // the pod.
    let late = "zz-rkw-late-container";
    let (port, ca) = start_late_container_webhook();
    kube.apply(
        &json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": late},
            "webhooks": [{
                "name": "late.rkw.mcp-warden.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/"),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(ca),
                },
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {TEST_LABEL: config}},
            }],
        })
        .to_string(),
    )
    .unwrap();
    webhook.delete_on_drop("MutatingWebhookConfiguration", late);
    kube.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    mcp-warden.io/injection: enabled\n    {TEST_LABEL}: {config}"
    ))
    .unwrap();
    wait_injecting(kube, &webhook, ns);

    // Once the server calls both (bounded, by server-side dry runs), the
    // late container is there and rewired like the app's.
    let probe = webhook.dir.path().join("late-probe.json");
    std::fs::write(
        &probe,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "reinvoked", "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
        })
        .to_string(),
    )
    .unwrap();
    let pod = wait_for("both webhooks", SETTLE, || {
        let out = run(
            kube.kubectl("1.32", ADMIN)
                .args(["create", "--dry-run=server", "-o", "json", "-f"])
                .arg(&probe),
            LIMIT,
        )
        .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let has_late = v["spec"]["containers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "late"));
        if !has_late {
            std::thread::sleep(Duration::from_millis(200));
        }
        has_late.then_some(v)
    })
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", webhook.log()));
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["mcp-warden", "app", "late"], "{pod:#}");
    for c in &pod["spec"]["containers"].as_array().unwrap()[1..] {
        let env = |n: &str| {
            c["env"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["name"] == n))
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env("KUBERNETES_SERVICE_HOST"),
            Some(json!("127.0.0.1")),
            "{} is not rewired: {pod:#}\nwebhook log:\n{}",
            c["name"],
            webhook.log()
        );
        let sa_mount = c["volumeMounts"].as_array().and_then(|m| {
            m.iter()
                .find(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        });
        assert_eq!(
            sa_mount.map(|m| m["name"].clone()),
            Some(json!("mcp-warden-local")),
            "{}: {pod:#}",
            c["name"]
        );
    }
    // One more create: the webhook was called twice, the injection and the
    // reinvocation that rewired `late`, both with a patch.
    let before = admission_reviews(&webhook).len();
    let again = run_ok(
        kube.kubectl("1.32", ADMIN)
            .args(["create", "--dry-run=server", "-o", "json", "-f"])
            .arg(&probe),
    )
    .unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["spec"], pod["spec"]);
    let reviews = admission_reviews(&webhook);
    assert_eq!(reviews.len(), before + 2, "{reviews:#?}");
    assert!(
        reviews[before..]
            .iter()
            .all(|r| r["fields"]["patch_ops"].as_u64() > Some(0)),
        "{reviews:#?}"
    );
}
