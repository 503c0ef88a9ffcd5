//! The sidecar in front of a real kube-apiserver (1.20.2, built from Debian's
//! source by `scripts/deps/kube-control-plane.sh`; see `realkube.rs`).
//!
//! Each test gets its own namespace and ServiceAccount, bound to a
//! least-privilege Role (configmaps: everything; secrets: read; nothing
//! else), and runs a sidecar that holds a TokenRequest token of that
//! ServiceAccount, with a policy that allows configmaps and reads, refuses
//! secrets, and masks configmap keys that look secret. Through it, kubectl
//! 1.32, the Python client and kube-rs get, list (Table too), watch, create
//! (JSON and protobuf), update, patch (JSON, merge, strategic, server-side
//! apply), delete and dry-run; a policy denial is the sidecar's 403 naming
//! the rule, and the server's own RBAC 403 comes through unchanged.
//!
//! Then the recording is held against the server's own audit log: for every
//! request of that ServiceAccount the server audited there is exactly one
//! sidecar `ResponseComplete` with the same verb, requestURI, objectRef
//! (name included on create), response code and user; nothing the sidecar
//! refused is in the server's log; every written body's `requestObject` is
//! there, masked, whatever its encoding (JSON, YAML, protobuf).
//!
//! Needs `cargo build --workspace --bins` and the control plane
//! (`bash scripts/deps/kube-control-plane.sh`; scripts/test.sh runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mcp_warden_tests::harness::{python_script, require_python_kubernetes, run, run_ok, wait_for};
use mcp_warden_tests::realkube::{ADMIN, RealKube, https_get};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Upstream};
use serde_json::{Value, json};

/// Bound for events to reach the collector and the server's audit log.
const SETTLE: Duration = Duration::from_secs(30);

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: deny
rules:
  - name: configmaps
    action: allow
    verbs: ["*"]
    resources: [configmaps]
  - name: reads
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: deployments
    action: allow
    verbs: [create, delete]
    apiGroups: [apps]
    resources: [deployments]
  - name: no-secrets
    action: deny
    verbs: ["*"]
    resources: [secrets]
    message: secrets are off limits here
masking:
  rules:
    - resources: [configmaps]
      keys: "(?i)(password|secret|token|apikey)"
recording:
  level: RequestResponse
"#;

/// Marks the test's own requests that go to the server directly, not
/// through the sidecar.
const DIRECT_MARK: &str = "mcp-warden-test=direct";

/// Values that must never appear in any record.
const SECRETS: &[&str] = &[
    "hunter2",
    "ssa-s3cr3t",
    "k-123-apikey",
    "py-hunter2",
    "rs-hunter2",
];

/// One test's namespace, ServiceAccount, sidecar and collector.
struct Tenant {
    kube: &'static RealKube,
    ns: String,
    user: String,
    collector: Collector,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

fn tenant(ns: &str) -> Tenant {
    let kube = RealKube::shared().expect("the real control plane");
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
    resources: [configmaps]
    verbs: ["*"]
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [create, get, list, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: mcp-server, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: mcp-server}}
subjects:
  - {{kind: ServiceAccount, name: mcp-server, namespace: {ns}}}
"#
    ))
    .expect("namespace, ServiceAccount, Role, RoleBinding");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let token = kube
        .service_account_token(ns, "mcp-server", 3600)
        .expect("TokenRequest");
    std::fs::write(&token_file, &token).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let collector = Collector::start().expect("collector");
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector);
    opts.pod_namespace = Some(ns.to_string());
    let sidecar = Sidecar::start_upstream(
        &Upstream {
            url: kube.url(),
            ca_file: kube.ca_path(),
            token_file: token_file.clone(),
        },
        opts,
    )
    .expect("sidecar in front of kube-apiserver");
    Tenant {
        kube,
        ns: ns.to_string(),
        user: format!("system:serviceaccount:{ns}:mcp-server"),
        collector,
        sidecar,
        _dir: dir,
    }
}

impl Tenant {
    fn kubectl(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.sidecar.kubectl("1.32");
        c.args(args).args(["-n", &self.ns]);
        c
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.kubectl(args)).unwrap_or_else(|e| panic!("{e}\n{}", self.sidecar.log()))
    }

    /// kubectl that must fail; returns its stderr.
    fn kubectl_err(&self, args: &[&str]) -> String {
        let out = run(&mut self.kubectl(args), Duration::from_secs(60)).unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self._dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The server's 403 for listing pods, asked directly with the real
    /// token and through the sidecar: identical bodies.
    fn rbac_403_is_passed_through(&self) {
        // The direct request is the ServiceAccount's too: marked, so that
        // the recording check leaves it out (the server ignores the parameter).
        let path = format!("/api/v1/namespaces/{}/pods", self.ns);
        let real = std::fs::read_to_string(self._dir.path().join("token")).unwrap();
        let direct = https_get(
            self.kube.addr(),
            self.kube.ca_pem(),
            real.trim(),
            &format!("{path}?{DIRECT_MARK}"),
        )
        .unwrap();
        let local_ca = std::fs::read_to_string(self.sidecar.local_dir().join("ca.crt")).unwrap();
        let addr = self
            .sidecar
            .url()
            .trim_start_matches("https://")
            .parse()
            .unwrap();
        let via = https_get(addr, &local_ca, &self.sidecar.token().unwrap(), &path).unwrap();
        assert_eq!(direct.0, 403, "{direct:?}");
        assert_eq!(via, direct, "the server's 403 passes through unchanged");
        let v: Value = serde_json::from_str(&via.1).unwrap();
        assert_eq!(v["reason"], "Forbidden");
        assert!(
            v["message"].as_str().unwrap().contains(&format!(
                "User \"{}\" cannot list resource \"pods\"",
                self.user
            )),
            "{v}"
        );
    }

    /// The recording held against the server's audit log (module docs).
    fn check_recording(&self) {
        let key = |e: &Value| -> String {
            let o = &e["objectRef"];
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            format!(
                "{} {} [{}/{} {}/{}/{}/{}] {} {} {} {}",
                s(&e["verb"]),
                s(&e["requestURI"]),
                s(&o["apiGroup"]),
                s(&o["apiVersion"]),
                s(&o["namespace"]),
                s(&o["resource"]),
                s(&o["name"]),
                s(&o["subresource"]),
                e["responseStatus"]["code"],
                s(&e["user"]["username"]),
                s(&e["user"]["uid"]),
                e["user"]["groups"],
            )
        };
        let tally = |events: &[Value]| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for e in events {
                *m.entry(key(e)).or_default() += 1;
            }
            m
        };
        let mut last = String::new();
        let settled = wait_for(
            "the recording to match the server's audit log",
            SETTLE,
            || {
                let server: Vec<Value> = self
                    .kube
                    .audit_events()
                    .into_iter()
                    .filter(|e| {
                        e["stage"] == "ResponseComplete"
                            && e["user"]["username"] == self.user.as_str()
                            // The sidecar's own calls (the grants watch, an
                            // approval's AccessRequest) are not the app's.
                            && !e["userAgent"]
                                .as_str()
                                .unwrap_or("")
                                .starts_with("mcp-warden-sidecar/")
                            && !e["requestURI"]
                                .as_str()
                                .unwrap_or("")
                                .ends_with(DIRECT_MARK)
                    })
                    .collect();
                let ours: Vec<Value> = self
                    .collector
                    .events()
                    .into_iter()
                    .filter(|e| e["stage"] == "ResponseComplete")
                    .collect();
                let (refused, forwarded): (Vec<Value>, Vec<Value>) = ours
                    .into_iter()
                    .partition(|e| e["annotations"]["mcp-warden.io/decision"] == "deny");
                let (s, f) = (tally(&server), tally(&forwarded));
                if s == f && !s.is_empty() {
                    return Some((server, forwarded, refused));
                }
                let only_server: Vec<_> = s.iter().filter(|(k, n)| f.get(*k) != Some(n)).collect();
                let only_ours: Vec<_> = f.iter().filter(|(k, n)| s.get(*k) != Some(n)).collect();
                last = format!("server only: {only_server:#?}\nsidecar only: {only_ours:#?}");
                std::thread::sleep(Duration::from_millis(200));
                None
            },
        );
        let (server, forwarded, refused) = settled.unwrap_or_else(|e| panic!("{e}\n{last}"));
        eprintln!(
            "{} requests audited by the server and recorded by the sidecar",
            server.len()
        );

        // Nothing the sidecar refused reached the server.
        assert!(
            !refused.is_empty(),
            "the test makes the policy refuse something"
        );
        for r in &refused {
            let uri = r["requestURI"].as_str().unwrap();
            assert!(
                !server
                    .iter()
                    .any(|e| e["requestURI"] == uri && e["verb"] == r["verb"]),
                "refused {uri} is in the server's audit log"
            );
            assert_eq!(r["responseStatus"]["code"], 403);
        }

        // Every written body is recorded, decoded and masked; a create names its object.
        for e in &forwarded {
            let verb = e["verb"].as_str().unwrap_or("");
            let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
            if matches!(verb, "create" | "update" | "patch") && code < 300 {
                // A protobuf body of a kind the sidecar does not decode
                // (kubectl's `create deployment`) says why it is missing.
                let omitted = e["annotations"]["mcp-warden.io/request-object-omitted"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("protobuf bodies of kind"));
                assert!(
                    e.get("requestObject").is_some_and(|o| !o.is_null()) || omitted,
                    "no requestObject: {e}"
                );
                if verb == "create" {
                    assert!(
                        e["objectRef"]["name"]
                            .as_str()
                            .is_some_and(|n| !n.is_empty()),
                        "{e}"
                    );
                }
            }
        }
        let all =
            serde_json::to_string(&forwarded).unwrap() + &serde_json::to_string(&refused).unwrap();
        for s in SECRETS {
            assert!(!all.contains(s), "{s} in the sidecar's recording");
        }
    }

    /// The sidecar's `ResponseComplete` events with this verb and resource name.
    fn recorded(&self, verb: &str, name: &str) -> Vec<Value> {
        self.collector
            .events()
            .into_iter()
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["verb"] == verb
                    && e["objectRef"]["name"] == name
            })
            .collect()
    }
}

#[test]
fn kubectl_through_the_sidecar_matches_the_servers_audit_log() {
    let t = tenant("rk-kubectl");
    // Table (kubectl's default output) of an empty list.
    let out = t.kubectl_ok(&["get", "configmaps"]);
    assert!(out.contains("kube-root-ca.crt"), "{out}");
    // create: kubectl 1.32 sends a protobuf body.
    t.kubectl_ok(&[
        "create",
        "configmap",
        "scratch",
        "--from-literal=password=hunter2",
        "--from-literal=color=blue",
    ]);
    let got: Value =
        serde_json::from_str(&t.kubectl_ok(&["get", "configmap", "scratch", "-o", "json"]))
            .unwrap();
    assert_eq!(got["data"]["color"], "blue");
    assert_ne!(got["data"]["password"], "hunter2", "responses are masked");
    let list: Value =
        serde_json::from_str(&t.kubectl_ok(&["get", "configmaps", "-o", "json"])).unwrap();
    assert!(list["items"].as_array().unwrap().len() >= 2);
    // patches: JSON, merge, strategic (kubectl's default).
    t.kubectl_ok(&[
        "patch",
        "configmap",
        "scratch",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/size","value":"big"}]"#,
    ]);
    t.kubectl_ok(&[
        "patch",
        "configmap",
        "scratch",
        "--type=merge",
        "-p",
        r#"{"data":{"shape":"round"}}"#,
    ]);
    t.kubectl_ok(&[
        "patch",
        "configmap",
        "scratch",
        "-p",
        r#"{"data":{"apikey":"k-123-apikey"}}"#,
    ]);
    // server-side apply (YAML body) and update (PUT).
    let ssa = t.file(
        "ssa.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {}\ndata:\n  db_password: ssa-s3cr3t\n  mode: fast\n",
            t.ns
        ),
    );
    t.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=rk-test",
        "-f",
        ssa.to_str().unwrap(),
    ]);
    let put = t.file(
        "put.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {}\ndata:\n  mode: slow\n", t.ns),
    );
    t.kubectl_ok(&["replace", "-f", put.to_str().unwrap()]);
    // dry run: nothing stored.
    t.kubectl_ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
    ]);
    let err = t.kubectl_err(&["get", "configmap", "dry"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    // watch, ended by the server's timeout.
    let out = t.kubectl_ok(&[
        "get",
        "configmaps",
        "--watch",
        "--request-timeout=3s",
        "-o",
        "name",
    ]);
    assert!(out.contains("configmap/scratch"), "{out}");
    // delete.
    t.kubectl_ok(&["delete", "configmap", "applied"]);
    // a protobuf create of a kind the sidecar does not decode.
    t.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/web:1",
    ]);
    t.kubectl_ok(&["delete", "deployment", "web"]);
    // the policy's refusal, named.
    let err = t.kubectl_err(&["get", "secrets"]);
    assert!(
        err.contains("Error from server (Forbidden)") && err.contains("no-secrets"),
        "{err}"
    );
    // the server's RBAC refusal, unchanged.
    let err = t.kubectl_err(&["get", "pods"]);
    assert!(
        err.contains(&format!(
            "pods is forbidden: User \"{}\" cannot list resource \"pods\"",
            t.user
        )),
        "{err}"
    );
    t.rbac_403_is_passed_through();

    t.check_recording();

    // kubectl's protobuf create: named, decoded, masked.
    let created = t.recorded("create", "scratch");
    assert_eq!(created.len(), 1, "{created:#?}");
    let ro = &created[0]["requestObject"];
    assert_eq!(ro["kind"], "ConfigMap");
    assert_eq!(ro["data"]["color"], "blue");
    assert!(
        ro["data"]["password"]
            .as_str()
            .is_some_and(|p| p != "hunter2"),
        "{ro}"
    );
    // The server saw the same name (its own audit event).
    assert!(t.kube.audit_events().iter().any(|e| e["verb"] == "create"
        && e["user"]["username"] == t.user.as_str()
        && e["objectRef"]["name"] == "scratch"));
    // The Deployment: named from the envelope, body left out, and why.
    let dep = t.recorded("create", "web");
    assert_eq!(dep.len(), 1, "{dep:#?}");
    assert!(
        dep[0].get("requestObject").is_none_or(Value::is_null),
        "{dep:#?}"
    );
    assert_eq!(
        dep[0]["annotations"]["mcp-warden.io/request-object-omitted"],
        "protobuf bodies of kind Deployment (apps/v1) are not decoded"
    );
    // The server-side apply body (YAML) is recorded, masked.
    let applied = t.recorded("patch", "applied");
    assert!(
        applied
            .iter()
            .any(|e| e["requestObject"]["data"]["mode"] == "fast"),
        "{applied:#?}"
    );
}

#[test]
fn python_client_through_the_sidecar_matches_the_servers_audit_log() {
    require_python_kubernetes().unwrap();
    let t = tenant("rk-python");
    let out = run_ok(
        t.sidecar
            .python(&python_script("realkube_client.py"))
            .arg(&t.ns),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", t.sidecar.log()));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"], "py-cm");
    assert_eq!(v["dry_run_name"], "py-dry");
    assert_eq!(v["got"], "green");
    assert_eq!(v["listed"], json!(["py-cm"]));
    assert_eq!(v["replaced"]["color"], "blue");
    assert_eq!(v["replaced"]["shape"], "round");
    assert_eq!(v["replaced"]["size"], "big");
    assert_ne!(v["replaced"]["db_password"], "py-hunter2");
    assert!(
        v["watched"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "ADDED py-cm"),
        "{v}"
    );
    assert_eq!(v["policy_denial"]["code"], 403);
    assert!(
        v["policy_denial"]["message"]
            .as_str()
            .unwrap()
            .contains("no-secrets"),
        "{v}"
    );
    assert_eq!(v["rbac_denial"]["code"], 403);
    assert!(
        v["rbac_denial"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot list resource \"pods\""),
        "{v}"
    );
    t.check_recording();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_through_the_sidecar_matches_the_servers_audit_log() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
    use kube::api::{
        DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
    };
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::{Api, Client, Config};

    let t = tokio::task::spawn_blocking(|| tenant("rk-kube-rs"))
        .await
        .unwrap();
    let kc = Kubeconfig::read_from(t.sidecar.kubeconfig_path()).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(cfg).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &t.ns);

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "rs-cm", "labels": {"made-by": "kube-rs"}},
        "data": {"color": "red", "token": "rs-hunter2"}
    }))
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("rs-cm"));
    let dry = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(json!({"metadata": {"name": "rs-dry"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("rs-dry"));
    assert!(cms.get_opt("rs-dry").await.unwrap().is_none());
    let got = cms.get("rs-cm").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["color"], "red");
    let listed = cms
        .list(&ListParams::default().labels("made-by=kube-rs"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    let pp = PatchParams::default();
    cms.patch(
        "rs-cm",
        &pp,
        &Patch::Merge(json!({"data": {"shape": "square"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "rs-cm",
        &pp,
        &Patch::Strategic(json!({"data": {"size": "small"}})),
    )
    .await
    .unwrap();
    let ops =
        serde_json::from_value(json!([{"op": "add", "path": "/data/weight", "value": "light"}]))
            .unwrap();
    cms.patch("rs-cm", &pp, &Patch::Json::<()>(ops))
        .await
        .unwrap();
    let ssa = PatchParams::apply("rk-kube-rs").force();
    cms.patch(
        "rs-applied",
        &ssa,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rs-applied"}, "data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let mut cur = cms.get("rs-cm").await.unwrap();
    cur.data
        .get_or_insert_default()
        .insert("color".into(), "purple".into());
    let replaced = cms
        .replace("rs-cm", &PostParams::default(), &cur)
        .await
        .unwrap();
    let data = replaced.data.unwrap();
    assert_eq!(
        (
            data["color"].as_str(),
            data["shape"].as_str(),
            data["size"].as_str(),
            data["weight"].as_str()
        ),
        ("purple", "square", "small", "light")
    );
    assert_ne!(data["token"], "rs-hunter2");

    let mut stream = cms
        .watch(
            &WatchParams::default().labels("made-by=kube-rs").timeout(2),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
    {
        if let WatchEvent::Added(o) = ev.unwrap() {
            seen.push(o.metadata.name.unwrap_or_default());
        }
    }
    assert_eq!(seen, vec!["rs-cm".to_string()]);
    cms.delete("rs-cm", &DeleteParams::default()).await.unwrap();
    cms.delete("rs-applied", &DeleteParams::default())
        .await
        .unwrap();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &t.ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(s.message.contains("no-secrets"), "{s:?}");
        }
        other => panic!("expected the policy's 403, got {other:?}"),
    }
    let pods: Api<Pod> = Api::namespaced(client, &t.ns);
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(s.message.contains("cannot list resource \"pods\""), "{s:?}");
        }
        other => panic!("expected the server's 403, got {other:?}"),
    }
    tokio::task::spawn_blocking(move || {
        t.rbac_403_is_passed_through();
        t.check_recording();
    })
    .await
    .unwrap();
}

/// `/usr/bin/kubectl` picks a bundled kubectl by the server's version; a
/// 1.20 server gets one that works with it.
#[test]
fn the_kubectl_dispatcher_works_with_a_1_20_server() {
    let kube = RealKube::shared().expect("the real control plane");
    let out = run_ok(
        kube.kubectl_dispatcher(ADMIN)
            .args(["version", "-o", "json"]),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.20.2", "{v}");
    eprintln!(
        "the dispatcher picked kubectl {} for a {} server",
        v["clientVersion"]["gitVersion"], v["serverVersion"]["gitVersion"]
    );
    let out = run_ok(
        kube.kubectl_dispatcher(ADMIN)
            .args(["get", "namespaces", "-o", "name"]),
    )
    .unwrap();
    assert!(out.contains("namespace/default"), "{out}");
}
