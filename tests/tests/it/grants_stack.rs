//! Time-bounded grants in the deployed stack, on kube-apisim: the
//! `mcp-warden-sidecar` binary, the collector, kube-apisim calling the
//! `mcp-warden-webhook` binary for AccessRequest status updates, and the
//! `kubectl-mcp_warden` plugin for approvers. The same scenario
//! ([`grant_scenario`]) runs on the real kube-apiserver in
//! `realkube_grants`.
//!
//! - alice grants the sidecar's ServiceAccount the `deletes-need-a-human`
//!   rule for a few seconds: `grants` lists it with the time left, three
//!   deletes pass without a hold, each recorded with the grant and alice;
//!   after the window the fourth is held again.
//! - A held delete approved with `--for 1h` goes through and the next
//!   passes under the grant that came with it; bob revokes that grant and
//!   the delete after is held at once.
//! - The ServiceAccount cannot grant itself, and a window over the
//!   webhook's cap (1h) is refused; both are left Expired.
//! - A grant on a `grant: false` rule is ended by the sidecar (Expired, the
//!   reason naming the rule) and the request is held.
//!
//! Needs `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, run, wait_child, wait_for, workspace_bin, write_kubeconfig,
};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Webhook, WebhookOptions};
use serde_json::Value;

/// Bound for one kubectl or plugin run.
const LIMIT: Duration = Duration::from_secs(60);
/// Bound for a held request to show up, for a grant to come into effect or
/// end, and for a recorded event.
const SETTLE: Duration = Duration::from_secs(60);

/// The policy both scenarios run under.
pub(crate) const POLICY: &str = r#"
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
  - name: secrets-each-time
    action: approve
    verbs: [delete]
    apiGroups: [""]
    resources: [secrets]
    grant: false
"#;

/// The ConfigMaps the scenario deletes (all in its namespace).
pub(crate) const CONFIGMAPS: [&str; 7] = ["g1", "g2", "g3", "g4", "g5", "g6", "g7"];
/// The Secret whose rule forbids grants.
pub(crate) const SECRET: &str = "never-granted";

/// Where the scenario runs.
pub(crate) struct Env<'a> {
    /// The sidecar, with the ServiceAccount's token and [`POLICY`].
    pub sidecar: &'a Sidecar,
    /// Its recording.
    pub collector: &'a Collector,
    /// Namespace of the ServiceAccount, the objects and the AccessRequests.
    pub ns: &'a str,
    /// The ServiceAccount the sidecar runs as.
    pub sa: &'a str,
    /// Kubeconfigs of two approvers and of the ServiceAccount itself.
    pub alice: &'a Path,
    pub bob: &'a Path,
    pub own: &'a Path,
    /// The namespace's AccessRequests, as an administrator reads them.
    pub access_requests: &'a dyn Fn() -> Vec<Value>,
}

pub(crate) fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    run(
        Command::new(workspace_bin("kubectl-mcp_warden"))
            .env("KUBECONFIG", kubeconfig)
            .args(args),
        LIMIT,
    )
    .unwrap()
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Env<'_> {
    pub(crate) fn ar(&self, name: &str) -> Value {
        (self.access_requests)()
            .into_iter()
            .find(|a| a["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no AccessRequest {name}"))
    }

    /// `grant --service-account SA --rule RULE --for WINDOW` as `who`: the
    /// output and, when granted, the grant's name.
    pub(crate) fn grant(&self, who: &Path, rule: &str, window: &str) -> (Output, Option<String>) {
        let out = plugin(
            who,
            &[
                "grant",
                "--service-account",
                self.sa,
                "-n",
                self.ns,
                "--rule",
                rule,
                "--for",
                window,
                "--reason",
                "grants e2e",
            ],
        );
        let name = String::from_utf8_lossy(&out.stdout)
            .split_once("accessrequest.mcp-warden.io/")
            .and_then(|(_, rest)| rest.split_once(" granted"))
            .map(|(n, _)| n.to_string());
        (out, name)
    }

    /// Grants and waits (bounded) until the sidecar has it in effect.
    pub(crate) fn granted(&self, rule: &str, window: &str) -> String {
        let (out, name) = self.grant(self.alice, rule, window);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("decidedBy: alice"),
            "{}",
            text(&out)
        );
        let name = name.unwrap();
        wait_for("the grant in effect in the sidecar", SETTLE, || {
            self.sidecar
                .log()
                .lines()
                .any(|l| l.contains("grant in effect") && l.contains(&name))
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", self.sidecar.log()));
        name
    }

    pub(crate) fn delete(&self, kind: &str, name: &str) -> Child {
        self.sidecar
            .kubectl("1.32")
            .args(["delete", kind, name, "-n", self.ns])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A delete that passes without a hold.
    pub(crate) fn passes(&self, name: &str) {
        let mut child = self.delete("configmap", name);
        let status = wait_child(&mut child, LIMIT).expect("the delete did not finish");
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        assert!(
            status.success(),
            "{err}\nsidecar log:\n{}",
            self.sidecar.log()
        );
        assert!(
            !(self.access_requests)()
                .iter()
                .any(|a| a["spec"]["name"] == name),
            "{name} was held"
        );
    }

    /// A delete that is held: the AccessRequest appears; alice denies it
    /// and the delete ends refused.
    pub(crate) fn held(&self, kind: &str, name: &str) {
        let mut child = self.delete(kind, name);
        let ar = wait_for("the held request's AccessRequest", SETTLE, || {
            let found = (self.access_requests)()
                .into_iter()
                .find(|a| a["spec"]["name"] == name && a["status"]["state"] == "Pending");
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            found
        })
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", self.sidecar.log()));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the delete was not held"
        );
        let ar_name = ar["metadata"]["name"].as_str().unwrap();
        let out = plugin(self.alice, &["deny", ar_name, "-n", self.ns]);
        assert!(out.status.success(), "{}", text(&out));
        let status = wait_child(&mut child, LIMIT).expect("the held delete did not finish");
        assert!(!status.success(), "the denied delete went through");
    }

    pub(crate) fn recorded(&self, name: &str) -> Value {
        wait_for("the recorded delete", SETTLE, || {
            self.collector.events().into_iter().find(|e| {
                e["verb"] == "delete"
                    && e["stage"] == "ResponseComplete"
                    && e["objectRef"]["name"] == name
            })
        })
        .unwrap()
    }

    /// The grant's state once the sidecar or a person has ended it.
    pub(crate) fn ended(&self, name: &str) -> Value {
        wait_for("the grant Expired", SETTLE, || {
            let a = self.ar(name);
            if a["status"]["state"] == "Expired" {
                return Some(a);
            }
            std::thread::sleep(Duration::from_millis(100));
            None
        })
        .unwrap()
    }
}

/// The grants scenario (see the module docs).
pub(crate) fn grant_scenario(env: &Env<'_>) {
    let ns = env.ns;
    let [c1, c2, c3, c4, c5, c6, c7] = CONFIGMAPS;

    // A short window: `grants` lists it with the time left, three deletes
    // pass without a hold, each recorded with the grant and its approver.
    let g = env.granted("deletes-need-a-human", "8s");
    let out = plugin(env.alice, &["grants", "-n", ns]);
    let list = text(&out);
    assert!(out.status.success(), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with(&g))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains(&format!("serviceaccount/{}", env.sa))
            && row.contains("deletes-need-a-human")
            && row.contains("alice"),
        "{list}"
    );
    let left: u64 = row
        .split_whitespace()
        .last()
        .and_then(|l| l.strip_suffix('s'))
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("{list}"));
    assert!((1..=8).contains(&left), "{list}");
    for name in [c1, c2, c3] {
        env.passes(name);
    }
    for name in [c1, c2, c3] {
        let ann = &env.recorded(name)["annotations"];
        assert_eq!(ann["mcp-warden.io/decision"], "approve", "{ann}");
        assert_eq!(ann["mcp-warden.io/rule"], "deletes-need-a-human", "{ann}");
        assert_eq!(ann["mcp-warden.io/grant"], format!("{ns}/{g}"), "{ann}");
        assert_eq!(ann["mcp-warden.io/approved-by"], "alice", "{ann}");
    }
    // After the window the fourth is held again.
    wait_for("the window to end", SETTLE, || {
        let out = plugin(env.alice, &["grants", "-n", ns]);
        if String::from_utf8_lossy(&out.stdout).contains(&g) {
            std::thread::sleep(Duration::from_millis(250));
            return None;
        }
        Some(())
    })
    .unwrap();
    env.held("configmap", c4);

    // A held request approved with a window: it goes through, and its
    // requester's next delete passes without a hold.
    let mut child = env.delete("configmap", c5);
    let ar = wait_for("the held request's AccessRequest", SETTLE, || {
        let found = (env.access_requests)()
            .into_iter()
            .find(|a| a["spec"]["name"] == c5 && a["status"]["state"] == "Pending");
        if found.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", env.sidecar.log()));
    let held_name = ar["metadata"]["name"].as_str().unwrap();
    let out = plugin(env.alice, &["approve", held_name, "-n", ns, "--for", "1h"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("approved (decidedBy: alice)"), "{said}");
    let g = said
        .lines()
        .find(|l| l.contains(" granted (decidedBy: alice)"))
        .and_then(|l| l.strip_prefix("accessrequest.mcp-warden.io/"))
        .and_then(|l| l.split_once(' '))
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| panic!("{said}"));
    let status = wait_child(&mut child, LIMIT).expect("the approved delete did not finish");
    assert!(status.success(), "sidecar log:\n{}", env.sidecar.log());
    wait_for("the grant in effect in the sidecar", SETTLE, || {
        env.sidecar
            .log()
            .lines()
            .any(|l| l.contains("grant in effect") && l.contains(&g))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", env.sidecar.log()));
    let grant = env.ar(&g);
    assert_eq!(
        grant["spec"]["grant"]["rule"], "deletes-need-a-human",
        "{grant}"
    );
    env.passes(c6);

    // Revoked: the next delete is held.
    let out = plugin(env.bob, &["revoke", &g, "-n", ns, "--reason", "enough"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revoked (by bob)"), "{}", text(&out));
    wait_for(
        "the sidecar to drop the revoked grant",
        Duration::from_secs(10),
        || {
            env.sidecar
                .log()
                .lines()
                .any(|l| l.contains("grant ended") && l.contains(&g))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", env.sidecar.log()));
    env.held("configmap", c7);
    let revoked = env.ar(&g);
    assert_eq!(revoked["status"]["state"], "Expired", "{revoked}");
    assert_eq!(revoked["status"]["reason"], "revoked: enough", "{revoked}");

    // Refused at admission: a self-grant, and a window over the cap. The
    // plugin leaves what it created Expired.
    let names = |v: Vec<Value>| -> std::collections::BTreeSet<String> {
        v.iter()
            .filter_map(|a| a["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let before = names((env.access_requests)());
    let (out, _) = env.grant(env.own, "deletes-need-a-human", "5m");
    let err = text(&out);
    assert!(!out.status.success(), "self-grant went through: {err}");
    assert!(
        err.contains("admission webhook") && err.contains("cannot decide on it"),
        "{err}"
    );
    let (out, _) = env.grant(env.alice, "deletes-need-a-human", "2h");
    let err = text(&out);
    assert!(!out.status.success(), "a 2h grant went through: {err}");
    assert!(
        err.contains("a grant of 2h is longer than the allowed 1h"),
        "{err}"
    );
    let refused: Vec<Value> = (env.access_requests)()
        .into_iter()
        .filter(|a| !before.contains(a["metadata"]["name"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for a in &refused {
        assert_eq!(a["status"]["state"], "Expired", "{a}");
        assert!(
            a["status"]["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("not approved: "),
            "{a}"
        );
    }

    // `grant: false`: the sidecar ends the grant and holds the request.
    let g = env.granted("secrets-each-time", "5m");
    env.held("secret", SECRET);
    let ended = env.ended(&g);
    assert!(
        ended["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not allow grants (grant: false)"),
        "{ended}"
    );
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The objects the scenario needs, as a kube-apisim seed or a List.
pub(crate) fn objects(ns: &str) -> Vec<Value> {
    let mut docs: Vec<Value> = CONFIGMAPS
        .iter()
        .map(|n| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": n, "namespace": ns}, "data": {"k": "v"}})
        })
        .collect();
    docs.push(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": ns}, "data": {"k": "dg=="}}));
    docs
}

const WEBHOOK_CRD: &str = r#"
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
fn grants_on_kube_apisim_pass_for_their_window_end_on_revoke_and_are_refused_when_they_must_be() {
    let dir = tempfile::tempdir().unwrap();
    let ns = "default";
    let crd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds/accessrequests.yaml"),
    )
    .unwrap();
    let mut seed = format!("{WEBHOOK_CRD}---\n{crd}");
    for o in objects(ns) {
        seed.push_str(&format!("---\n{o}\n"));
    }
    let seed_file = dir.path().join("seed.yaml");
    std::fs::write(&seed_file, seed).unwrap();
    let sim = ApiSim::start(ApiSimOptions {
        seed: Some(seed_file),
        version: Some("v1.32.3".into()),
        extra_users: vec!["alice=alice-token".into(), "bob=bob-token".into()],
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

    // The sidecar runs with the ServiceAccount's token.
    let sa = "default";
    let token = ok(&run(
        sim.kubectl("32").args(["create", "token", sa, "-n", ns]),
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
        .args(["--approval-timeout", "45s"]);
    opts.upstream_token_file = Some(token_file);
    let sidecar = Sidecar::start(&sim, opts).unwrap();

    let kubeconfig = |name: &str, token: &str| -> PathBuf {
        let p = dir.path().join(format!("{name}.kubeconfig"));
        write_kubeconfig(&p, &sim.url(), &sim.ca_path(), token).unwrap();
        p
    };
    let (alice, bob, own) = (
        kubeconfig("alice", "alice-token"),
        kubeconfig("bob", "bob-token"),
        kubeconfig("own", token.trim()),
    );
    let access_requests = || -> Vec<Value> {
        let out = run(
            sim.kubectl("32")
                .args(["get", "accessrequests", "-n", ns, "-o", "json"]),
            LIMIT,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["items"].as_array().cloned().unwrap_or_default()
    };
    grant_scenario(&Env {
        sidecar: &sidecar,
        collector: &collector,
        ns,
        sa,
        alice: &alice,
        bob: &bob,
        own: &own,
        access_requests: &access_requests,
    });
}
