//! Just-in-time approvals end to end: kubectl 1.32 through the sidecar (with
//! the [`ApprovalDecider`] installed, in-process) in front of kube-apisim,
//! which calls the real `mcp-warden-webhook` binary (stamping + validating
//! AccessRequest status updates) over HTTPS; approvers use the real
//! `kubectl-mcp_warden` plugin with their own kubeconfig.
//!
//! Needs the workspace binaries: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::InProcessSidecar;
use clap::Parser;
use mcp_warden_sidecar::approval::ApprovalDecider;
use mcp_warden_sidecar::config::{ApprovalConfig, Cli};
use mcp_warden_sidecar::policy_store::{PolicyDecider, PolicyStore};
use mcp_warden_sidecar::{Extensions, Hooks};
use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, kubectl_with, run, wait_child, wait_for, workspace_bin, write_kubeconfig,
};
use mcp_warden_tests::stack::{Webhook, WebhookOptions};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const ALICE_TOKEN: &str = "alice-approver-token";

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
    namespaces: ["*"]
    message: a person must say yes to deletes
"#;

const SEED: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: mutatingwebhookconfigurations.admissionregistration.k8s.io
spec:
  group: admissionregistration.k8s.io
  scope: Cluster
  names: {plural: mutatingwebhookconfigurations, singular: mutatingwebhookconfiguration, kind: MutatingWebhookConfiguration, listKind: MutatingWebhookConfigurationList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: validatingwebhookconfigurations.admissionregistration.k8s.io
spec:
  group: admissionregistration.k8s.io
  scope: Cluster
  names: {plural: validatingwebhookconfigurations, singular: validatingwebhookconfiguration, kind: ValidatingWebhookConfiguration, listKind: ValidatingWebhookConfigurationList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

fn configmap(name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  k: v\n"
    )
}

/// A one-shot Slack-style incoming webhook on loopback: the body of the
/// first POST it gets.
fn notify_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/services/T000/B000/XXX", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(i) = text.find("\r\n\r\n") {
                let len = text[..i]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    let _ = tx.send(text[i + 4..].to_string());
                    return;
                }
            }
        }
    });
    (url, rx)
}

struct Env {
    sim: ApiSim,
    _webhook: Webhook,
    _rt: tokio::runtime::Runtime,
    /// Notification bodies sidecar [1] posted.
    notified: std::sync::mpsc::Receiver<String>,
    /// Sidecars: [0] waits 60s for a decision, [1] only 2s and notifies.
    sidecars: Vec<InProcessSidecar>,
    dir: tempfile::TempDir,
    sa_kubeconfig: PathBuf,
    alice_kubeconfig: PathBuf,
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Env {
    fn start() -> Env {
        for bin in ["kube-apisim", "mcp-warden-webhook", "kubectl-mcp_warden"] {
            assert!(
                workspace_bin(bin).exists(),
                "{bin} not built: run `cargo build --workspace --bins` first"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let crd = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds/accessrequests.yaml"),
        )
        .unwrap();
        let mut seed = format!("{SEED}---\n{crd}");
        for cm in ["cm-a", "cm-b", "cm-c", "cm-d", "keep"] {
            seed.push_str(&configmap(cm));
        }
        let seed_path = dir.path().join("seed.yaml");
        std::fs::write(&seed_path, seed).unwrap();
        let sim = ApiSim::start(ApiSimOptions {
            seed: Some(seed_path),
            version: Some("v1.32.3".into()),
            extra_users: vec![format!("alice={ALICE_TOKEN}:approvers")],
            ..Default::default()
        })
        .unwrap();

        // The webhook binary, serving the AccessRequest admission endpoints.
        let webhook = Webhook::start(WebhookOptions {
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        let (url, bundle) = (webhook.url(""), webhook.ca_bundle());
        let configs = format!(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: mcp-warden-approvals}}
webhooks:
  - name: stamp.approvals.mcp-warden.io
    clientConfig: {{url: "{url}/mutate-accessrequests", caBundle: "{bundle}"}}
    rules: [{{operations: [UPDATE], apiGroups: [mcp-warden.io], apiVersions: [v1alpha1], resources: [accessrequests/status]}}]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: mcp-warden-approvals}}
webhooks:
  - name: verify.approvals.mcp-warden.io
    clientConfig: {{url: "{url}/validate-accessrequests", caBundle: "{bundle}"}}
    rules: [{{operations: [UPDATE], apiGroups: [mcp-warden.io], apiVersions: [v1alpha1], resources: [accessrequests/status]}}]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
"#
        );
        let cfg_path = dir.path().join("webhooks.yaml");
        std::fs::write(&cfg_path, configs).unwrap();
        ok(&run(
            sim.kubectl("32").args(["apply", "-f"]).arg(&cfg_path),
            LIMIT,
        )
        .unwrap());

        // The pod's service-account token (the sidecar's real token).
        let tr = ok(&run(
            sim.kubectl("32").args([
                "create",
                "token",
                "default",
                "-n",
                "default",
                "--duration=1h",
            ]),
            LIMIT,
        )
        .unwrap());
        let sa_token = tr.trim().to_string();
        let token_dir = dir.path().join("upstream");
        std::fs::create_dir(&token_dir).unwrap();
        common::kubelet_write_token(&token_dir, 1, &sa_token);
        let token_file = token_dir.join("token");
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(&policy_file, POLICY).unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let identity = mcp_warden_shared::identity::from_service_account_jwt(&sa_token).unwrap();
        assert_eq!(identity.username, "system:serviceaccount:default:default");
        let mut sidecars = Vec::new();
        let ca_path = sim.ca_path();
        let (notify_url, notified) = notify_receiver();
        for timeout in [Duration::from_secs(60), Duration::from_secs(2)] {
            let args = [
                "mcp-warden-sidecar",
                "--upstream",
                &sim.url(),
                "--upstream-ca-file",
                ca_path.to_str().unwrap(),
                "--upstream-token-file",
                token_file.to_str().unwrap(),
                "--pod-namespace",
                "default",
                "--pod-name",
                "agent-0",
            ];
            let config = Cli::try_parse_from(args).unwrap().serve.validate().unwrap();
            let store = Arc::new(PolicyStore::load(Some(policy_file.clone())).unwrap());
            let decider = ApprovalDecider::new(
                PolicyDecider::new(store, identity.clone()),
                &config,
                &identity,
                ApprovalConfig {
                    approval_timeout: timeout,
                    approval_notify_url: (timeout < Duration::from_secs(10))
                        .then(|| notify_url.parse().unwrap()),
                    ..Default::default()
                },
            )
            .unwrap();
            let ext = Extensions {
                hooks: Hooks {
                    decide: Arc::new(decider),
                    ..Hooks::default()
                },
                ..Extensions::default()
            };
            let sc = rt.block_on(InProcessSidecar::start_with(
                &sim.url(),
                &sim.ca_path(),
                &token_file,
                &["--pod-name", "agent-0"],
                ext,
            ));
            sidecars.push(sc);
        }
        let sa_kubeconfig = dir.path().join("sa.kubeconfig");
        write_kubeconfig(&sa_kubeconfig, &sim.url(), &sim.ca_path(), &sa_token).unwrap();
        let alice_kubeconfig = dir.path().join("alice.kubeconfig");
        write_kubeconfig(&alice_kubeconfig, &sim.url(), &sim.ca_path(), ALICE_TOKEN).unwrap();
        Env {
            sim,
            _webhook: webhook,
            _rt: rt,
            notified,
            sidecars,
            dir,
            sa_kubeconfig,
            alice_kubeconfig,
        }
    }

    /// kubectl 1.32 as the app, through sidecar `i`.
    fn app(&self, i: usize) -> Command {
        let sc = &self.sidecars[i];
        let kc = self.dir.path().join(format!("app-{i}.kubeconfig"));
        if !kc.exists() {
            let token = std::fs::read_to_string(sc.local_dir.join("token")).unwrap();
            write_kubeconfig(
                &kc,
                &format!("https://{}", sc.addr),
                &sc.local_dir.join("ca.crt"),
                &token,
            )
            .unwrap();
        }
        kubectl_with("32", &kc, &self.dir.path().join(format!("cache-app-{i}")))
    }

    /// The plugin with a given kubeconfig.
    fn plugin(&self, kubeconfig: &Path) -> Command {
        let mut c = Command::new(workspace_bin("kubectl-mcp_warden"));
        c.env("KUBECONFIG", kubeconfig).stdin(Stdio::null());
        c
    }

    /// AccessRequests as the admin sees them.
    fn access_requests(&self) -> Vec<Value> {
        let out = ok(&run(
            self.sim
                .kubectl("32")
                .args(["get", "accessrequests", "-n", "default", "-o", "json"]),
            LIMIT,
        )
        .unwrap());
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    fn access_request(&self, name: &str) -> Value {
        self.access_requests()
            .into_iter()
            .find(|a| a["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no AccessRequest {name}"))
    }

    /// Waits for a Pending AccessRequest not in `seen`, for `target` configmap.
    fn wait_pending(&self, target: &str, seen: &[String]) -> String {
        wait_for(
            &format!("a pending AccessRequest for {target}"),
            Duration::from_secs(30),
            || {
                self.access_requests()
                    .into_iter()
                    .find(|a| {
                        a["spec"]["name"] == target
                            && a["status"]["state"] == "Pending"
                            && !seen.iter().any(|s| a["metadata"]["name"] == s.as_str())
                    })
                    .map(|a| a["metadata"]["name"].as_str().unwrap().to_string())
            },
        )
        .unwrap()
    }

    fn cm_exists(&self, name: &str) -> bool {
        let out = run(
            self.sim
                .kubectl("32")
                .args(["get", "configmap", name, "-n", "default"]),
            LIMIT,
        )
        .unwrap();
        if !out.status.success() {
            assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
        }
        out.status.success()
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(mut child: Child) -> (bool, String) {
    let status = wait_child(&mut child, LIMIT).expect("held kubectl did not finish");
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.success(), out)
}

#[test]
fn approvals_end_to_end_with_kubectl_and_the_plugin() {
    let env = Env::start();
    let mut seen: Vec<String> = Vec::new();

    // 1. A delete under an approve rule is held...
    let mut del = env.app(0);
    del.args(["delete", "configmap", "cm-a", "-n", "default"]);
    let mut held = spawn(del);
    let ar1 = env.wait_pending("cm-a", &seen);
    seen.push(ar1.clone());
    let obj = env.access_request(&ar1);
    assert_eq!(obj["spec"]["verb"], "delete");
    assert_eq!(obj["spec"]["resource"], "configmaps");
    assert_eq!(obj["spec"]["summary"], "delete configmaps default/cm-a");
    assert_eq!(
        obj["spec"]["requester"]["serviceAccount"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(obj["spec"]["requester"]["pod"], "agent-0");
    assert_eq!(obj["spec"]["rule"], "deletes-need-a-human");
    assert_eq!(obj["spec"]["message"], "a person must say yes to deletes");
    assert_eq!(obj["spec"]["requestHash"].as_str().unwrap().len(), 64);

    // ...while other requests through the same sidecar are served.
    for _ in 0..3 {
        let out = ok(&run(
            env.app(0).args(["get", "configmap", "keep", "-o", "name"]),
            LIMIT,
        )
        .unwrap());
        assert_eq!(out.trim(), "configmap/keep");
    }
    assert!(
        held.try_wait().unwrap().is_none(),
        "the delete was not held"
    );

    // The app cannot see or touch AccessRequests through the sidecar.
    let out = run(
        env.app(0).args(["get", "accessrequests", "-n", "default"]),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Forbidden") && err.contains("accessrequests"),
        "{err}"
    );

    // The requesting service account cannot approve its own request.
    let out = run(
        env.plugin(&env.sa_kubeconfig)
            .args(["approve", &ar1, "-n", "default"]),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot decide on it"), "{err}");
    assert_eq!(env.access_request(&ar1)["status"]["state"], "Pending");
    let out = ok(&run(
        env.plugin(&env.sa_kubeconfig)
            .args(["pending", "-n", "default"]),
        LIMIT,
    )
    .unwrap());
    assert!(out.contains(&ar1), "{out}");
    assert!(held.try_wait().unwrap().is_none());

    // 2. Alice approves with the plugin: the delete completes.
    let out = ok(&run(
        env.plugin(&env.alice_kubeconfig)
            .args(["approve", &ar1, "-n", "default", "--reason", "cleanup"]),
        LIMIT,
    )
    .unwrap());
    assert!(out.contains("decidedBy: alice"), "{out}");
    let (success, out) = finish(held);
    assert!(success, "held delete failed: {out}");
    assert!(out.contains("deleted"), "{out}");
    assert!(!env.cm_exists("cm-a"));
    let obj = env.access_request(&ar1);
    assert_eq!(obj["status"]["state"], "Used");
    assert_eq!(obj["status"]["decidedBy"], "alice");
    assert_eq!(obj["status"]["reason"], "cleanup");

    // 3. A second identical request needs a new approval: deny it.
    ok(&run(
        env.sim
            .kubectl("32")
            .args(["create", "configmap", "cm-a", "-n", "default"]),
        LIMIT,
    )
    .unwrap());
    let mut del = env.app(0);
    del.args(["delete", "configmap", "cm-a", "-n", "default"]);
    let held = spawn(del);
    let ar2 = env.wait_pending("cm-a", &seen);
    seen.push(ar2.clone());
    assert_ne!(ar1, ar2);
    ok(&run(
        env.plugin(&env.alice_kubeconfig).args([
            "deny",
            &ar2,
            "-n",
            "default",
            "--reason",
            "not today",
        ]),
        LIMIT,
    )
    .unwrap());
    let (success, out) = finish(held);
    assert!(!success);
    assert!(out.contains("Forbidden"), "{out}");
    assert!(
        out.contains(&ar2),
        "the denial names the AccessRequest: {out}"
    );
    assert!(out.contains("denied by alice"), "{out}");
    assert!(env.cm_exists("cm-a"), "a denied delete changed nothing");
    assert_eq!(env.access_request(&ar2)["status"]["state"], "Denied");
    // decidedBy is not a field anyone can type: a status write that sets
    // it is stamped back by the webhook.
    let mut forged = env.access_request(&ar2);
    forged["status"]["decidedBy"] = "bob".into();
    let forged_path = env.dir.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let alice = |args: &[&str]| {
        let mut c = kubectl_with(
            "32",
            &env.alice_kubeconfig,
            &env.dir.path().join("cache-alice"),
        );
        c.args(args);
        c
    };
    let _ = run(
        &mut alice(&[
            "replace",
            "--subresource=status",
            "-f",
            forged_path.to_str().unwrap(),
        ]),
        LIMIT,
    )
    .unwrap();
    assert_eq!(env.access_request(&ar2)["status"]["decidedBy"], "alice");

    // 3b. The client gave up while waiting: the later approval lets one
    // identical request through (and is then Used). Identical includes the
    // query: kubectl's --request-timeout adds `?timeout=1s`, so both use it.
    let out = run(
        env.app(0).args([
            "delete",
            "configmap",
            "cm-d",
            "-n",
            "default",
            "--request-timeout=1s",
        ]),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let ar_d = env.wait_pending("cm-d", &seen);
    seen.push(ar_d.clone());
    ok(&run(
        env.plugin(&env.alice_kubeconfig)
            .args(["approve", &ar_d, "-n", "default"]),
        LIMIT,
    )
    .unwrap());
    let out = ok(&run(
        env.app(0).args([
            "delete",
            "configmap",
            "cm-d",
            "-n",
            "default",
            "--request-timeout=1s",
        ]),
        LIMIT,
    )
    .unwrap());
    assert!(out.contains("deleted"), "{out}");
    assert!(!env.cm_exists("cm-d"));
    assert_eq!(env.access_request(&ar_d)["status"]["state"], "Used");
    assert!(
        !env.access_requests()
            .iter()
            .any(|a| a["spec"]["name"] == "cm-d" && a["metadata"]["name"] != ar_d.as_str()),
        "the reused approval needed no new AccessRequest"
    );

    // 4. No decision in time (sidecar 1 waits 2s): Forbidden, Expired.
    let started = Instant::now();
    let out = run(
        env.app(1)
            .args(["delete", "configmap", "cm-c", "-n", "default"]),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("Forbidden") && err.contains("not approved within"),
        "{err}"
    );
    assert!(started.elapsed() < LIMIT);
    let expired = env
        .access_requests()
        .into_iter()
        .find(|a| a["spec"]["name"] == "cm-c")
        .unwrap();
    let ar3 = expired["metadata"]["name"].as_str().unwrap().to_string();
    assert!(err.contains(&ar3), "{err}");
    assert_eq!(expired["status"]["state"], "Expired");
    // The notification carried the command line to approve it.
    let note: Value =
        serde_json::from_str(&env.notified.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    let text = note["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("kubectl mcp-warden approve {ar3} -n default")),
        "{text}"
    );
    assert!(text.contains("delete configmaps default/cm-c"), "{text}");
    assert!(env.cm_exists("cm-c"));
    // An expired request can no longer be approved.
    let out = run(
        env.plugin(&env.alice_kubeconfig)
            .args(["approve", &ar3, "-n", "default"]),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Expired"));
}
