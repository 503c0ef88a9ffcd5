//! Approvals that show what will happen: the sidecar's dry run
//! (`dryRun=All`) before an AccessRequest, the masked preview in its
//! status, `kubectl mcp-warden show|pending`, and the resourceVersion check
//! after the approval. The same scenarios run against the real
//! kube-apiserver (1.20.2, `realkube.rs`) and kube-apisim, with the
//! `mcp-warden-sidecar` binary, kubectl 1.32 and the `kubectl-mcp_warden`
//! plugin:
//!
//! - a held `kubectl scale --replicas=0` of a Deployment with 3 replicas
//!   shows `spec.replicas 3 → 0` in `pending`, `show` and the notification
//!   (a Slack-style receiver on loopback); approved, it goes
//!   through and is recorded `mcp-warden.io/preview: shown`;
//! - a held patch of a Secret shows `data.password` changed, `(masked)`: the
//!   value (base64 or clear) appears nowhere in the AccessRequest, the
//!   plugin's output or the recording;
//! - a request the server would refuse fails at once with the server's
//!   answer and no AccessRequest (real server: a delete the
//!   ServiceAccount's RBAC forbids, 403; kube-apisim, which has no RBAC: a
//!   delete of an object that does not exist, 404); recorded
//!   `mcp-warden.io/preview: refused`;
//! - an object changed after the preview: the approved patch fails with 409
//!   saying so, the object keeps the other change, the AccessRequest is
//!   Expired; recorded `mcp-warden.io/preview: changed`.
//!
//! Needs `cargo build --workspace --bins` (and, for the real server, the
//! control plane: `bash scripts/deps/kube-control-plane.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use mcp_warden_tests::chart::{manifest_in, repo_file};
use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, run, run_ok, wait_child, wait_for, workspace_bin, write_kubeconfig,
};
use mcp_warden_tests::realkube::{ADMIN, ALICE, RealKube};
use mcp_warden_tests::stack::{
    Collector, Sidecar, SidecarOptions, Upstream, Webhook, WebhookOptions,
};
use serde_json::{Value, json};

/// Bound for one kubectl or plugin run; shorter than the approval timeout,
/// so a request that was held instead of refused fails the run.
const LIMIT: Duration = Duration::from_secs(60);
/// Bound for a held request and its AccessRequest.
const SETTLE: Duration = Duration::from_secs(90);

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: allow
rules:
  - name: changes-need-a-human
    action: approve
    verbs: [update, patch, delete]
    apiGroups: ["", apps]
    resources: [deployments/scale, secrets, configmaps]
"#;

/// The new Secret value: neither this nor its base64 may appear anywhere.
const NEW_SECRET: &str = "s3cr3t-n3w-value-4711";
const OLD_SECRET: &str = "0ld-s3cr3t-value-0815";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The objects the scenarios start from, in `ns`.
fn fixtures(ns: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
            "type": "Opaque", "data": {"password": b64(OLD_SECRET), "user": b64("admin")}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "moving", "namespace": ns},
            "data": {"k": "v"}}),
    ]
}

/// One API server with the sidecar in front of it.
struct Env<'a> {
    ns: &'a str,
    /// kubectl 1.32 as the cluster's admin.
    admin: &'a dyn Fn() -> Command,
    /// The approver's kubeconfig, for the plugin.
    approver: PathBuf,
    sidecar: &'a Sidecar,
    collector: &'a Collector,
    /// The bodies the sidecar's `--approval-notify-url` received.
    notified: std::sync::mpsc::Receiver<String>,
}

impl Env<'_> {
    fn admin_json(&self, args: &[&str]) -> Value {
        let out = run(
            (self.admin)()
                .args(args)
                .args(["-n", self.ns, "-o", "json"]),
            LIMIT,
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn access_requests(&self) -> Vec<Value> {
        self.admin_json(&["get", "accessrequests"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn plugin(&self, args: &[&str]) -> Output {
        run(
            Command::new(workspace_bin("kubectl-mcp_warden"))
                .env("KUBECONFIG", &self.approver)
                .args(args)
                .args(["-n", self.ns]),
            LIMIT,
        )
        .unwrap()
    }

    fn plugin_ok(&self, args: &[&str]) -> String {
        let out = self.plugin(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// kubectl through the sidecar, in the background, and the Pending
    /// AccessRequest it made for `verb` on `name`.
    fn held(&self, args: &[&str], verb: &str, name: &str) -> (Child, Value) {
        let mut held = self
            .sidecar
            .kubectl("1.32")
            .args(args)
            .args(["-n", self.ns])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ar = wait_for("the AccessRequest with its preview", SETTLE, || {
            let found = self.access_requests().into_iter().find(|a| {
                a["spec"]["name"] == name
                    && a["spec"]["verb"] == verb
                    && a["status"]["state"] == "Pending"
                    && a["status"]["preview"].is_object()
            });
            if found.is_none() {
                if let Ok(Some(st)) = held.try_wait() {
                    panic!(
                        "{args:?} ended ({st}) without being held; sidecar log:\n{}",
                        self.sidecar.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            found
        })
        .unwrap_or_else(|e| panic!("{e}; sidecar log:\n{}", self.sidecar.log()));
        assert!(held.try_wait().unwrap().is_none(), "not held");
        (held, ar)
    }

    /// The recorded ResponseComplete event of `verb` on `name`.
    fn recorded(&self, verb: &str, name: &str, subresource: Option<&str>) -> Value {
        wait_for("the recorded request", SETTLE, || {
            self.collector.events().into_iter().find(|e| {
                e["verb"] == verb
                    && e["stage"] == "ResponseComplete"
                    && e["objectRef"]["name"] == name
                    && subresource.is_none_or(|s| e["objectRef"]["subresource"] == s)
            })
        })
        .unwrap()
    }
}

fn ended(mut held: Child) -> (bool, String) {
    let status = wait_child(&mut held, SETTLE).expect("the held request did not finish");
    let mut err = String::new();
    if let Some(mut e) = held.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (status.success(), err)
}

/// `kubectl scale --replicas=0` of a Deployment with 3 replicas: the
/// preview says `spec.replicas 3 → 0`; approved, it goes through.
fn scale_to_zero_is_previewed(env: &Env<'_>) {
    let (held, ar) = env.held(
        &["scale", "deployment", "web", "--replicas=0"],
        "patch",
        "web",
    );
    let name = ar["metadata"]["name"].as_str().unwrap().to_string();
    let preview = &ar["status"]["preview"];
    assert_eq!(preview["code"], 200, "{ar}");
    assert_eq!(
        preview["changes"],
        json!([{"path": "spec.replicas", "old": "3", "new": "0"}]),
        "{ar}"
    );
    assert!(
        preview["resourceVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{ar}"
    );
    let note: Value = serde_json::from_str(&env.notified.recv_timeout(SETTLE).unwrap()).unwrap();
    let text = note["text"].as_str().unwrap();
    assert!(
        text.contains("Preview: 1 field: spec.replicas 3 → 0.") && text.contains(&name),
        "{text}"
    );
    let pending = env.plugin_ok(&["pending"]);
    assert!(
        pending.contains(&name) && pending.contains("1 field: spec.replicas 3 → 0"),
        "{pending}"
    );
    let show = env.plugin_ok(&["show", &name]);
    assert!(show.contains("~ spec.replicas: 3 → 0"), "{show}");
    assert!(show.contains("dry run answered HTTP 200"), "{show}");
    assert!(show.contains("State:      Pending"), "{show}");

    env.plugin_ok(&["approve", &name]);
    let (ok, err) = ended(held);
    assert!(ok, "{err}\nsidecar log:\n{}", env.sidecar.log());
    let d = env.admin_json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 0, "{d}");
    let e = env.recorded("patch", "web", Some("scale"));
    assert_eq!(e["annotations"]["mcp-warden.io/preview"], "shown", "{e}");
    // The approver still sees what they approved.
    let used = env.admin_json(&["get", "accessrequest", &name]);
    assert_eq!(used["status"]["state"], "Used", "{used}");
    assert_eq!(
        used["status"]["preview"]["changes"][0]["path"],
        "spec.replicas"
    );
}

/// A patch of a Secret: the key shows as changed, the value never.
fn secret_values_never_show(env: &Env<'_>) {
    let patch = json!({"data": {"password": b64(NEW_SECRET)}}).to_string();
    let (held, ar) = env.held(&["patch", "secret", "db", "-p", &patch], "patch", "db");
    let name = ar["metadata"]["name"].as_str().unwrap().to_string();
    let changes = ar["status"]["preview"]["changes"].as_array().unwrap();
    assert!(
        changes.contains(&json!({"path": "data.password", "old": "(masked)", "new": "(masked)"})),
        "{ar}"
    );
    assert!(
        !changes.iter().any(|c| c["path"] == "data.user"),
        "an unchanged key is not a change: {ar}"
    );
    let show = env.plugin_ok(&["show", &name]);
    assert!(
        show.contains("~ data.password: (masked) → (masked)"),
        "{show}"
    );
    let pending = env.plugin_ok(&["pending"]);
    let stored = env.admin_json(&["get", "accessrequest", &name]).to_string();
    let all = format!("{show}\n{pending}\n{stored}\n{ar}");
    for secret in [NEW_SECRET, OLD_SECRET, &b64(NEW_SECRET), &b64(OLD_SECRET)] {
        assert!(!all.contains(secret), "{secret:?} shown:\n{all}");
    }
    // Denied: the Secret keeps its value.
    env.plugin_ok(&["deny", &name, "--reason", "not that one"]);
    let (ok, err) = ended(held);
    assert!(!ok && err.contains("denied"), "{err}");
    let s = env.admin_json(&["get", "secret", "db"]);
    assert_eq!(s["data"]["password"], b64(OLD_SECRET), "{s}");
    let recorded = env.recorded("patch", "db", None).to_string();
    for secret in [NEW_SECRET, &b64(NEW_SECRET)] {
        assert!(
            !recorded.contains(secret),
            "{secret:?} recorded: {recorded}"
        );
    }
}

/// A request the server refuses: answered at once, nobody asked.
fn refused_at_once(env: &Env<'_>, args: &[&str], name: &str, code: u16, says: &[&str]) {
    let before = env.access_requests().len();
    let out = run(
        env.sidecar.kubectl("1.32").args(args).args(["-n", env.ns]),
        LIMIT,
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it went through: {err}");
    for s in says {
        assert!(err.contains(s), "{s:?} not in: {err}");
    }
    assert!(
        !err.contains("mcp-warden"),
        "the server's own answer: {err}"
    );
    let ars = env.access_requests();
    assert_eq!(ars.len(), before, "an AccessRequest was created: {ars:?}");
    assert!(
        !ars.iter()
            .any(|a| a["spec"]["name"] == name && a["spec"]["verb"] == "delete"),
        "{ars:?}"
    );
    let e = env.recorded("delete", name, None);
    assert_eq!(e["annotations"]["mcp-warden.io/preview"], "refused", "{e}");
    assert_eq!(e["responseStatus"]["code"], code, "{e}");
}

/// The object changes after the preview: the approved request fails, saying so.
fn a_change_after_the_preview_fails_the_approval(env: &Env<'_>) {
    let (held, ar) = env.held(
        &[
            "patch",
            "configmap",
            "moving",
            "-p",
            r#"{"data":{"k":"approved"}}"#,
        ],
        "patch",
        "moving",
    );
    let name = ar["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(
        ar["status"]["preview"]["changes"],
        json!([{"path": "data.k", "old": "\"v\"", "new": "\"approved\""}]),
        "{ar}"
    );
    let out = run(
        (env.admin)().args([
            "patch",
            "configmap",
            "moving",
            "-n",
            env.ns,
            "-p",
            r#"{"data":{"k":"meanwhile"}}"#,
        ]),
        LIMIT,
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.plugin_ok(&["approve", &name]);
    let (ok, err) = ended(held);
    assert!(!ok, "the approved patch went through after the change");
    assert!(
        err.contains("Conflict") && err.contains("changed since the approver saw the preview"),
        "{err}"
    );
    let cm = env.admin_json(&["get", "configmap", "moving"]);
    assert_eq!(cm["data"]["k"], "meanwhile", "{cm}");
    let after = env.admin_json(&["get", "accessrequest", &name]);
    assert_eq!(after["status"]["state"], "Expired", "{after}");
    let e = env.recorded("patch", "moving", None);
    assert_eq!(e["annotations"]["mcp-warden.io/preview"], "changed", "{e}");
    assert_eq!(e["responseStatus"]["code"], 409, "{e}");
}

/// A Slack-style incoming webhook on loopback: the body of every POST.
fn notify_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/services/T000/B000/XXX", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Bounded: one connection per held request of a test.
        for _ in 0..16 {
            let Ok((mut s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(i) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len = text[..i]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                    );
                    let _ = tx.send(text[i + 4..].to_string());
                    break;
                }
            }
        }
    });
    (url, rx)
}

#[test]
fn previews_on_the_real_server() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "preview-real";
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
    let mut docs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}),
        manifest_in("Role", "mcp-warden-sidecar", ns),
        manifest_in("RoleBinding", "mcp-warden-sidecar", ns),
        // What the MCP server may do: scale, patch Secrets and ConfigMaps,
        // delete ConfigMaps; not delete Secrets.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "agent", "namespace": ns},
            "rules": [
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "list", "patch", "update"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "patch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "patch", "delete"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "agent", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        // alice approves.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "approver", "namespace": ns},
            "rules": [
                {"apiGroups": ["mcp-warden.io"], "resources": ["accessrequests"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["mcp-warden.io"], "resources": ["accessrequests/status"], "verbs": ["update"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "approver", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "approver"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE}],
        }),
    ];
    docs.extend(fixtures(ns));
    kube.apply(&json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string())
        .unwrap();

    let dir = tempfile::Builder::new()
        .prefix("preview-")
        .tempdir_in(kube.work_dir())
        .unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        kube.service_account_token(ns, sa, 3600).unwrap(),
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let collector = Collector::start().unwrap();
    let (notify_url, notified) = notify_receiver();
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args([
            "--approval-timeout",
            "120s",
            "--approval-notify-url",
            notify_url.as_str(),
        ]);
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
    let admin = || {
        let mut c = kube.kubectl("1.32", ADMIN);
        c.stdin(Stdio::null());
        c
    };
    let env = Env {
        ns,
        admin: &admin,
        approver: kube.kubeconfig_path(ALICE),
        sidecar: &sidecar,
        collector: &collector,
        notified,
    };

    scale_to_zero_is_previewed(&env);
    secret_values_never_show(&env);
    refused_at_once(
        &env,
        &["delete", "secret", "db"],
        "db",
        403,
        &[
            "Forbidden",
            "secrets \"db\" is forbidden",
            &format!("\"system:serviceaccount:{ns}:{sa}\" cannot delete resource \"secrets\""),
        ],
    );
    a_change_after_the_preview_fails_the_approval(&env);
}

const SIM_CRDS: &str = r#"
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
"#;

#[test]
fn previews_on_kube_apisim() {
    let dir = tempfile::tempdir().unwrap();
    let crd = std::fs::read_to_string(repo_file("manifests/crds/accessrequests.yaml")).unwrap();
    let seed = dir.path().join("seed.yaml");
    let ns = "default";
    let objects: Vec<String> = fixtures(ns).iter().map(Value::to_string).collect();
    std::fs::write(
        &seed,
        format!("{SIM_CRDS}---\n{crd}\n---\n{}\n", objects.join("\n---\n")),
    )
    .unwrap();
    let sim = ApiSim::start(ApiSimOptions {
        seed: Some(seed),
        version: Some("v1.32.3".into()),
        extra_users: vec!["alice=alice-token".into()],
        ..Default::default()
    })
    .unwrap();
    // The AccessRequest status webhook, so an approval passes the same
    // admission as in a cluster and keeps the preview.
    let webhook = Webhook::start(WebhookOptions {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let cfg = dir.path().join("mwc.yaml");
    std::fs::write(&cfg, webhook.accessrequest_mutating_config()).unwrap();
    let out = run(sim.kubectl("32").args(["apply", "-f"]).arg(&cfg), LIMIT).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = run(
        sim.kubectl("32")
            .args(["create", "token", "default", "-n", ns]),
        LIMIT,
    )
    .unwrap();
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, String::from_utf8_lossy(&token.stdout).trim()).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let collector = Collector::start().unwrap();
    let (notify_url, notified) = notify_receiver();
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args([
            "--approval-timeout",
            "120s",
            "--approval-notify-url",
            notify_url.as_str(),
        ]);
    opts.upstream_token_file = Some(token_file);
    opts.pod_namespace = Some(ns.to_string());
    let sidecar = Sidecar::start(&sim, opts).unwrap();
    let alice = dir.path().join("alice.kubeconfig");
    write_kubeconfig(&alice, &sim.url(), &sim.ca_path(), "alice-token").unwrap();
    let admin = || {
        let mut c = sim.kubectl("32");
        c.stdin(Stdio::null());
        c
    };
    let env = Env {
        ns,
        admin: &admin,
        approver: alice,
        sidecar: &sidecar,
        collector: &collector,
        notified,
    };

    scale_to_zero_is_previewed(&env);
    secret_values_never_show(&env);
    refused_at_once(
        &env,
        &["delete", "configmap", "ghost"],
        "ghost",
        404,
        &["NotFound", "configmaps \"ghost\" not found"],
    );
    a_change_after_the_preview_fails_the_approval(&env);
}
