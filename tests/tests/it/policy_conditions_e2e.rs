//! `when:` conditions on the live path: the `mcp-warden-sidecar` binary with
//! the policy of `manifests/examples/policy-conditions.yaml`, kubectl 1.32
//! through it, kube-apisim's state checked directly (admin kubeconfig). The
//! sidecar reads the request body only for rules that read `object`, and
//! fetches the live object (with its own token) only for rules that read
//! `oldObject`. Bodies in every encoding kubectl sends (protobuf creates,
//! server-side apply, merge patches); the 413 and the recording unchanged;
//! a failing condition counted. Then the same denials in front of the real
//! kube-apiserver 1.20.
//!
//! Needs `cargo build --workspace --bins` (and, for the `realkube` test,
//! the control plane of `scripts/deps/kube-control-plane.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, fixture, run, run_ok, wait_for};
use mcp_warden_tests::realkube::RealKube;
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Upstream};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// The policy of the example ConfigMap (`data."policy.yaml"`).
fn example_policy() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/policy-conditions.yaml");
    let cm: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cm["data"]["policy.yaml"].as_str().unwrap().to_string()
}

/// Objects of the tests: a `prod-*` namespace with a Deployment, a
/// protected and an unprotected ConfigMap, and the AccessRequest CRD (the
/// scale to zero is held for approval).
const SEED: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: prod-eu}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: prod-eu, labels: {app: api}}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - {name: api, image: registry.example.com/api:1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: keep, namespace: default, labels: {mcp-warden.io/protected: "true"}}
data: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: scratch, namespace: default}
data: {k: v}
"#;

fn pod(name: &str, image: &str, privileged: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
    - name: app
      image: {image}
      securityContext: {{privileged: {privileged}}}
"#
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stderr of a command that must fail with the sidecar's 403 naming `rule`.
fn assert_forbidden_by(out: &Output, rule: &str) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "it succeeded: {}", text(&out.stdout));
    assert!(
        // `kubectl create configmap` words it `error: failed to create configmap: ... is forbidden: ...`.
        (err.contains("Error from server (Forbidden):")
            || err.contains("is forbidden: mcp-warden"))
            && err.contains(rule),
        "{err}"
    );
    err
}

struct Stack {
    sim: ApiSim,
    sidecar: Sidecar,
    collector: Collector,
    dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        Stack::start_with(&example_policy())
    }

    fn start_with(policy_yaml: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let crd = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds/accessrequests.yaml"),
        )
        .unwrap();
        let demo = std::fs::read_to_string(fixture("seed-demo.yaml")).unwrap();
        let seed = dir.path().join("seed.yaml");
        std::fs::write(&seed, format!("{demo}\n---\n{SEED}---\n{crd}")).unwrap();
        let sim = ApiSim::start(ApiSimOptions {
            seed: Some(seed),
            version: Some("v1.32.3".into()),
            ..Default::default()
        })
        .unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, policy_yaml).unwrap();
        let collector = Collector::start().unwrap();
        let sidecar = Sidecar::start(
            &sim,
            SidecarOptions::default()
                .policy(&policy)
                .collector(&collector)
                .args(["--approval-timeout", "3s"]),
        )
        .unwrap();
        Stack {
            sim,
            sidecar,
            collector,
            dir,
        }
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn through(&self, args: &[&str]) -> Output {
        run(self.sidecar.kubectl("1.32").args(args), LIMIT).unwrap()
    }

    fn direct(&self, args: &[&str]) -> String {
        run_ok(self.sim.kubectl("1.32").args(args)).unwrap()
    }

    fn exists(&self, kind: &str, name: &str, ns: &str) -> bool {
        run(
            self.sim
                .kubectl("1.32")
                .args(["get", kind, name, "-n", ns, "-o", "name"]),
            LIMIT,
        )
        .unwrap()
        .status
        .success()
    }

    /// POSTs `body` as JSON with curl: the HTTP code and the answer.
    fn post_raw(&self, path: &str, body: &Value) -> (String, Value) {
        let body_path = self.file("raw-body.json", &body.to_string());
        let out_path = self.dir.path().join("raw-out.json");
        let code = run_ok(
            std::process::Command::new("curl").args([
                "-sS".to_string(),
                "-o".into(),
                out_path.display().to_string(),
                "-w".into(),
                "%{http_code}".into(),
                "--cacert".into(),
                self.sidecar
                    .local_dir()
                    .join("ca.crt")
                    .display()
                    .to_string(),
                "-H".into(),
                format!("Authorization: Bearer {}", self.sidecar.token().unwrap()),
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                format!("@{}", body_path.display()),
                format!("{}{path}", self.sidecar.url()),
            ]),
        )
        .unwrap();
        let answer = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
        (code.trim().to_string(), answer)
    }

    fn condition_errors(&self, rule: &str) -> u64 {
        let (code, text) = self.sidecar.admin_get("/metrics").unwrap();
        assert_eq!(code, 200);
        let series = format!("mcp_warden_policy_condition_errors_total{{rule=\"{rule}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

#[test]
fn policy_conditions_judge_bodies_and_live_objects_through_the_sidecar() {
    let s = Stack::start();

    // A privileged pod: denied by its rule, nothing created.
    let f = s.file(
        "priv.yaml",
        &pod("priv", "registry.example.com/app:1", true),
    );
    let out = s.through(&["create", "-f", f.to_str().unwrap(), "-n", "default"]);
    let err = assert_forbidden_by(&out, "no-privileged-containers");
    assert!(
        err.contains("privileged containers are not allowed"),
        "{err}"
    );
    assert!(!s.exists("pod", "priv", "default"));

    // The same pod unprivileged: created (the body streams on upstream
    // after the decision, so the server got it whole).
    let f = s.file(
        "plain.yaml",
        &pod("plain", "registry.example.com/app:1", false),
    );
    let out = s.through(&["create", "-f", f.to_str().unwrap(), "-n", "default"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let img = s.direct(&[
        "get",
        "pod",
        "plain",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert_eq!(img.trim(), "registry.example.com/app:1");
    // The recording still sees the body read for the decision.
    let ev = wait_for("the create's recording", Duration::from_secs(10), || {
        s.collector.events().into_iter().find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["name"] == "plain"
                && e["stage"] == "ResponseComplete"
        })
    })
    .unwrap();
    assert_eq!(
        ev["requestObject"]["spec"]["containers"][0]["image"], "registry.example.com/app:1",
        "{ev}"
    );

    // A body over the limit, read for the decision: the same 413 `Status`
    // as without conditions, and nothing created.
    let (code, status) = s.post_raw(
        "/api/v1/namespaces/default/pods",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "huge", "annotations": {"blob": "x".repeat(4 << 20)}},
            "spec": {"containers": [{"name": "a", "image": "registry.example.com/a:1"}]},
        }),
    );
    assert_eq!(code, "413", "{status}");
    assert_eq!(status["reason"], "RequestEntityTooLarge", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("request body larger than"),
        "{status}"
    );
    assert!(!s.exists("pod", "huge", "default"));

    // An image from elsewhere: denied on create.
    let f = s.file(
        "elsewhere.yaml",
        &pod("elsewhere", "docker.io/nginx:1", false),
    );
    let out = s.through(&["create", "-f", f.to_str().unwrap(), "-n", "default"]);
    let err = assert_forbidden_by(&out, "images-from-our-registry-only");
    assert!(err.contains("registry.example.com"), "{err}");
    assert!(!s.exists("pod", "elsewhere", "default"));
    // Denied because the conditions held, not because they failed.
    assert_eq!(s.condition_errors("no-privileged-containers"), 0);
    assert_eq!(s.condition_errors("images-from-our-registry-only"), 0);

    // Scaling to zero in prod-*: held for approval (an AccessRequest naming
    // the rule), refused when nobody approves in time; replicas stay.
    let out = s.through(&[
        "scale",
        "deployment",
        "api",
        "-n",
        "prod-eu",
        "--replicas=0",
    ]);
    let err = assert_forbidden_by(&out, "not approved within");
    assert!(err.contains("deployments.apps/scale \"api\""), "{err}");
    let ars: Value =
        serde_json::from_str(&s.direct(&["get", "accessrequests", "-n", "default", "-o", "json"]))
            .unwrap();
    let items = ars["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{ars}");
    assert_eq!(
        items[0]["spec"]["rule"], "scale-to-zero-in-prod-needs-a-human",
        "{ars}"
    );
    let replicas = || {
        s.direct(&[
            "get",
            "deployment",
            "api",
            "-n",
            "prod-eu",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .trim()
        .to_string()
    };
    assert_eq!(replicas(), "1");
    // To two: no approval needed.
    let out = s.through(&[
        "scale",
        "deployment",
        "api",
        "-n",
        "prod-eu",
        "--replicas=2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(replicas(), "2");
    assert_eq!(s.condition_errors("scale-to-zero-in-prod-needs-a-human"), 0);

    // A protected ConfigMap: the live object is fetched, its label denies.
    let out = s.through(&["delete", "configmap", "keep", "-n", "default"]);
    let err = assert_forbidden_by(&out, "protected-objects-stay");
    assert!(err.contains("labelled mcp-warden.io/protected"), "{err}");
    assert!(s.exists("configmap", "keep", "default"));
    assert_eq!(s.condition_errors("protected-objects-stay"), 0);
    // An unlabelled one is deleted.
    let out = s.through(&["delete", "configmap", "scratch", "-n", "default"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!s.exists("configmap", "scratch", "default"));

    // No live object (404): oldObject is null, the condition errors, the
    // deny rule matches (fail closed) and the failure is counted.
    let out = s.through(&["delete", "configmap", "gone", "-n", "default"]);
    assert_forbidden_by(&out, "protected-objects-stay");
    assert_eq!(s.condition_errors("protected-objects-stay"), 1);
    let log = s.sidecar.log();
    assert!(
        log.contains("policy condition failed") && log.contains("protected-objects-stay"),
        "{log}"
    );
}

/// `object` whatever the encoding: kubectl 1.32's protobuf create, a
/// server-side apply (`application/apply-patch+yaml`) and a merge patch.
#[test]
fn policy_conditions_read_protobuf_apply_and_patch_bodies() {
    let s = Stack::start_with(
        r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: allow
rules:
  - name: no-bad-values
    action: deny
    verbs: [create, update, patch]
    resources: [configmaps]
    when: has(object.data) && has(object.data.k) && object.data.k == 'bad'
"#,
    );
    let out = s.through(&[
        "create",
        "configmap",
        "pb-bad",
        "--from-literal=k=bad",
        "-n",
        "default",
    ]);
    assert_forbidden_by(&out, "no-bad-values");
    assert!(!s.exists("configmap", "pb-bad", "default"));
    let out = s.through(&[
        "create",
        "configmap",
        "pb-good",
        "--from-literal=k=good",
        "-n",
        "default",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.exists("configmap", "pb-good", "default"));

    let f = s.file(
        "apply.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pb-good, namespace: default}\ndata: {k: bad}\n",
    );
    let out = s.through(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    assert_forbidden_by(&out, "no-bad-values");
    let out = s.through(&[
        "patch",
        "configmap",
        "pb-good",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"data":{"k":"bad"}}"#,
    ]);
    assert_forbidden_by(&out, "no-bad-values");
    let out = s.through(&[
        "patch",
        "configmap",
        "pb-good",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"data":{"k":"fine"}}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let k = s.direct(&[
        "get",
        "configmap",
        "pb-good",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert_eq!(k.trim(), "fine");
    // Every body was decoded: each denial was the condition holding, none
    // a failure counted as a match.
    assert_eq!(s.condition_errors("no-bad-values"), 0);
}

#[test]
fn realkube_policy_conditions_deny_a_privileged_pod_and_a_protected_delete() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "cel-conditions";
    kube.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: mcp-server, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: mcp-server, namespace: {ns}}}
rules:
  - apiGroups: [""]
    resources: [configmaps, pods]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: mcp-server, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: mcp-server}}
subjects:
  - {{kind: ServiceAccount, name: mcp-server, namespace: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: keep, namespace: {ns}, labels: {{mcp-warden.io/protected: "true"}}}}
data: {{k: v}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: scratch, namespace: {ns}}}
data: {{k: v}}
"#
    ))
    .expect("namespace, ServiceAccount, Role, RoleBinding, ConfigMaps");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let token = kube
        .service_account_token(ns, "mcp-server", 3600)
        .expect("TokenRequest");
    std::fs::write(&token_file, &token).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, example_policy()).unwrap();
    let mut opts = SidecarOptions::default().policy(&policy);
    opts.pod_namespace = Some(ns.to_string());
    let sidecar = Sidecar::start_upstream(
        &Upstream {
            url: kube.url(),
            ca_file: kube.ca_path(),
            token_file,
        },
        opts,
    )
    .expect("sidecar in front of kube-apiserver");
    let through =
        |args: &[&str]| run(sidecar.kubectl("1.32").args(args).args(["-n", ns]), LIMIT).unwrap();
    let direct_has = |kind: &str, name: &str| {
        run(
            kube.kubectl("1.32", mcp_warden_tests::realkube::ADMIN)
                .args(["get", kind, name, "-n", ns, "-o", "name"]),
            LIMIT,
        )
        .unwrap()
        .status
        .success()
    };

    let f = dir.path().join("priv.yaml");
    std::fs::write(&f, pod("priv", "registry.example.com/app:1", true)).unwrap();
    let out = through(&["create", "-f", f.to_str().unwrap()]);
    assert_forbidden_by(&out, "no-privileged-containers");
    assert!(!direct_has("pod", "priv"));

    let out = through(&["delete", "configmap", "keep"]);
    assert_forbidden_by(&out, "protected-objects-stay");
    assert!(direct_has("configmap", "keep"));
    let out = through(&["delete", "configmap", "scratch"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!direct_has("configmap", "scratch"));
}
