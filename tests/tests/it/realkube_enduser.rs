//! End users on the real kube-apiserver (1.20.2, see `realkube.rs`): the
//! sidecar with `--oidc-*` (a test issuer on loopback) and
//! `--impersonate-end-user`, its ServiceAccount granted `impersonate` by the
//! chart's `endUsers.impersonation` as `helm template` renders it (any user,
//! exactly the group `oidc:dev`, the extra `mcp-warden.io-pod`).
//!
//! The server's own audit log shows the ServiceAccount as `user` and the
//! person (with the pod as extra) as `impersonatedUser`; the server's RBAC
//! judges the person: alice (bound to a Role) reads, carol (no RBAC) gets
//! the server's own 403 naming her, and a user in a group outside the grant
//! gets the server's 403 for the impersonation. The sidecar records the
//! same `user`/`impersonatedUser`.
//!
//! Needs `cargo build --workspace --bins`, the control plane
//! (`bash scripts/deps/kube-control-plane.sh`) and helm (`scripts/deps/helm.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mcp_warden_tests::chart::helm;
use mcp_warden_tests::harness::{run_ok, wait_for};
use mcp_warden_tests::oidc::TestIssuer;
use mcp_warden_tests::realkube::{RealKube, https_get};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, Upstream};
use serde_json::{Value, json};

const NS: &str = "enduser-imp";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: configmap-reads
    action: allow
    verbs: [get, list]
    resources: [configmaps]
"#;

#[test]
fn impersonated_end_users_are_judged_and_audited_by_the_server() {
    let kube = RealKube::shared().expect("the real control plane");
    kube.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: mcp-server, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {NS}}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-reads, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
  - {{kind: User, name: alice@example.com, apiGroup: rbac.authorization.k8s.io}}
"#
    ))
    .expect("namespace, ServiceAccount, alice's Role");
    // The grant exactly as the chart renders it.
    let grant = run_ok(Command::new(helm()).args([
        "template",
        "mcp-warden",
        &repo().join("charts/mcp-warden").display().to_string(),
        "--namespace",
        "mcp-warden",
        "-s",
        "templates/enduser-impersonation.yaml",
        "--set",
        "endUsers.impersonation.enabled=true",
        "--set",
        "endUsers.impersonation.groups={oidc:dev}",
        "--set",
        &format!("mcpNamespaces[0].name={NS}"),
        "--set",
        "mcpNamespaces[0].serviceAccounts={mcp-server}",
    ]))
    .expect("helm template of the chart's endUsers.impersonation");
    assert!(grant.contains("kind: ClusterRoleBinding"), "{grant}");
    kube.apply(&grant).expect("the chart's impersonation grant");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        kube.service_account_token(NS, "mcp-server", 3600)
            .expect("TokenRequest"),
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let issuer = TestIssuer::start().unwrap();
    let collector = Collector::start().unwrap();
    let mut args = issuer.sidecar_args();
    args.push("--impersonate-end-user".into());
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args(args);
    opts.pod_namespace = Some(NS.to_string());
    let sidecar = Sidecar::start_upstream(
        &Upstream {
            url: kube.url(),
            ca_file: kube.ca_path(),
            token_file: token_file.clone(),
        },
        opts,
    )
    .expect("sidecar in front of kube-apiserver");
    let addr: SocketAddr = sidecar
        .url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(sidecar.local_dir().join("ca.crt")).unwrap();
    let path = format!("/api/v1/namespaces/{NS}/configmaps");
    let get = |token: &str| https_get(addr, &ca, token, &path).unwrap();
    let sa = format!("system:serviceaccount:{NS}:mcp-server");

    // alice: the server authorizes her through her own RoleBinding.
    let alice = issuer.token("alice@example.com", &["dev"]).unwrap();
    let (code, body) = get(&alice);
    assert_eq!(code, 200, "{body}\n{}", sidecar.log());

    // carol has no RBAC: the server's own 403, naming her.
    let carol = issuer.token("carol@example.com", &[]).unwrap();
    let (code, body) = get(&carol);
    assert_eq!(code, 403, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        format!(
            "configmaps is forbidden: User \"carol@example.com\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"{NS}\""
        ),
        "{body}"
    );

    // dave is in a group the ServiceAccount may not assume: the server
    // refuses the impersonation itself.
    let dave = issuer.token("dave@example.com", &["admins"]).unwrap();
    let (code, body) = get(&dave);
    assert_eq!(code, 403, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        format!(
            "groups \"oidc:admins\" is forbidden: User \"{sa}\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"
        ),
        "{body}"
    );

    // The server's audit log: the ServiceAccount authenticated, alice acted
    // (with the pod named in the extra).
    let audited = wait_for(
        "alice in the server's audit log",
        Duration::from_secs(30),
        || {
            kube.audit_events().into_iter().find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["impersonatedUser"]["username"] == "alice@example.com"
                    && e["requestURI"] == path.as_str()
            })
        },
    )
    .unwrap();
    assert_eq!(audited["user"]["username"], sa.as_str(), "{audited}");
    assert_eq!(audited["responseStatus"]["code"], 200, "{audited}");
    let groups = audited["impersonatedUser"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(groups.contains(&json!("oidc:dev")), "{audited}");
    assert_eq!(
        audited["impersonatedUser"]["extra"]["mcp-warden.io-pod"],
        json!(["mcp-server-0"]),
        "{audited}"
    );
    let carol_audited = wait_for(
        "carol in the server's audit log",
        Duration::from_secs(30),
        || {
            kube.audit_events().into_iter().find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["impersonatedUser"]["username"] == "carol@example.com"
            })
        },
    )
    .unwrap();
    assert_eq!(carol_audited["user"]["username"], sa.as_str());
    assert_eq!(carol_audited["responseStatus"]["code"], 403);

    // The sidecar records the same pair.
    let recorded = wait_for("alice in the recording", Duration::from_secs(30), || {
        collector.events().into_iter().find(|e| {
            e["stage"] == "ResponseComplete"
                && e["impersonatedUser"]["username"] == "alice@example.com"
        })
    })
    .unwrap();
    assert_eq!(recorded["user"]["username"], sa.as_str(), "{recorded}");
    assert_eq!(recorded["impersonatedUser"]["groups"], json!(["oidc:dev"]));
    assert_eq!(recorded["responseStatus"]["code"], 200);
}

#[test]
fn without_impersonation_the_service_account_acts_and_the_person_is_recorded() {
    let kube = RealKube::shared().expect("the real control plane");
    let ns = "enduser-noimp";
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
metadata: {{name: configmap-reader, namespace: {ns}}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: mcp-server, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
  - {{kind: ServiceAccount, name: mcp-server, namespace: {ns}}}
"#
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        kube.service_account_token(ns, "mcp-server", 3600).unwrap(),
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let issuer = TestIssuer::start().unwrap();
    let collector = Collector::start().unwrap();
    let mut opts = SidecarOptions::default()
        .policy(&policy)
        .collector(&collector)
        .args(issuer.sidecar_args());
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
    let addr: SocketAddr = sidecar
        .url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(sidecar.local_dir().join("ca.crt")).unwrap();
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    // carol has no RBAC of her own, but the request is the ServiceAccount's.
    let carol = issuer.token("carol@example.com", &[]).unwrap();
    let (code, body) = https_get(addr, &ca, &carol, &path).unwrap();
    assert_eq!(code, 200, "{body}");
    let sa = format!("system:serviceaccount:{ns}:mcp-server");
    let audited = wait_for(
        "the request in the server's audit log",
        Duration::from_secs(30),
        || {
            kube.audit_events().into_iter().find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["requestURI"] == path.as_str()
                    && e["user"]["username"] == sa.as_str()
            })
        },
    )
    .unwrap();
    assert!(audited.get("impersonatedUser").is_none(), "{audited}");
    let recorded = wait_for("carol in the recording", Duration::from_secs(30), || {
        collector.events().into_iter().find(|e| {
            e["stage"] == "ResponseComplete"
                && e["impersonatedUser"]["username"] == "carol@example.com"
        })
    })
    .unwrap();
    assert_eq!(recorded["user"]["username"], sa.as_str());
}
