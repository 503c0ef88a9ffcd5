//! The `when:` examples of `manifests/examples/policy-conditions.yaml` (also
//! in docs/policy.md), over JSON bodies and over protobuf bodies decoded the
//! way the sidecar decodes them ([`crate::body::to_json`]).

#![allow(clippy::unwrap_used)]

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Value, json};

use super::*;
use crate::attrs::parse_request;
use crate::body;
use crate::proto;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn example() -> Policy {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/examples/policy-conditions.yaml"),
    )
    .unwrap();
    let cm: Value = serde_saphyr::from_str(&text).unwrap();
    Policy::parse(
        "policy-conditions.yaml",
        cm["data"]["policy.yaml"].as_str().unwrap(),
    )
    .unwrap()
}

fn who() -> Identity {
    Identity::service_account("agents", "mcp")
}

/// Decide `METHOD path` with a body (by content type) and a live object,
/// as the sidecar does: decode, then evaluate with what `body_needed` asks.
fn decide(
    p: &Policy,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    live: Option<(&str, &[u8])>,
) -> Decision {
    let attrs = parse_request(method, path).unwrap();
    let need = p.body_needed(&attrs, &who());
    let object = body
        .filter(|_| need.object)
        .and_then(|(ct, b)| body::to_json(Some(ct), b).ok());
    let old = live
        .filter(|_| need.old_object)
        .and_then(|(ct, b)| body::to_json(Some(ct), b).ok());
    evaluate_with(
        p,
        &attrs,
        &Impersonation::default(),
        &who(),
        Bodies {
            object: object.as_ref(),
            old_object: old.as_ref(),
        },
    )
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn pod_json(image: &str, privileged: Option<bool>) -> Vec<u8> {
    let mut c = json!({"name": "app", "image": image});
    if let Some(p) = privileged {
        c["securityContext"] = json!({"privileged": p});
    }
    json_bytes(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"initContainers": [{"name": "init", "image": "registry.example.com/init:1"}], "containers": [c]}
    }))
}

fn pod_proto(image: &str, privileged: Option<bool>) -> Vec<u8> {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: Some("app".into()),
                image: Some(image.into()),
                security_context: privileged.map(|p| core::SecurityContext {
                    privileged: Some(p),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    proto::encode("v1", "Pod", &pod)
}

fn config_map_proto(labels: &[(&str, &str)]) -> Vec<u8> {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: Some("settings".into()),
            namespace: Some("shop".into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    proto::encode("v1", "ConfigMap", &cm)
}

fn action_rule(d: &Decision) -> (Action, Option<&str>) {
    (d.action, d.rule.as_deref())
}

#[test]
fn the_example_policy_parses_and_every_rule_is_there() {
    let p = example();
    for name in [
        "no-privileged-containers",
        "scale-to-zero-in-prod-needs-a-human",
        "protected-objects-stay",
        "images-from-our-registry-only",
    ] {
        assert!(p.rule(name).unwrap().when.is_some(), "{name}");
    }
}

#[test]
fn privileged_containers_are_denied() {
    let p = example();
    let path = "/api/v1/namespaces/shop/pods";
    let ok = "registry.example.com/web:1";
    let d = decide(
        &p,
        "POST",
        path,
        Some(("application/json", &pod_json(ok, Some(true)))),
        None,
    );
    assert_eq!(
        action_rule(&d),
        (Action::Deny, Some("no-privileged-containers"))
    );
    assert!(d.condition_errors.is_empty(), "{d:?}");
    for safe in [None, Some(false)] {
        let d = decide(
            &p,
            "POST",
            path,
            Some(("application/json", &pod_json(ok, safe))),
            None,
        );
        assert_eq!(
            action_rule(&d),
            (Action::Allow, Some("manage-workloads")),
            "{safe:?}"
        );
    }
    // A patch that does not touch the containers is not judged by them.
    let d = decide(
        &p,
        "PATCH",
        "/api/v1/namespaces/shop/pods/web",
        Some((
            "application/merge-patch+json",
            br#"{"metadata":{"labels":{"a":"b"}}}"#,
        )),
        None,
    );
    assert_eq!(d.action, Action::Allow);
    // Protobuf Pods are not decoded (crate::proto decodes the kinds kubectl
    // sends as protobuf): `object` is null, the condition fails, and a deny
    // rule fails closed, even for a pod that would pass.
    for privileged in [Some(true), None] {
        let d = decide(
            &p,
            "POST",
            path,
            Some((PROTOBUF, &pod_proto(ok, privileged))),
            None,
        );
        assert_eq!(
            action_rule(&d),
            (Action::Deny, Some("no-privileged-containers"))
        );
        assert!(!d.condition_errors.is_empty());
    }
}

#[test]
fn scale_to_zero_in_prod_waits_for_a_human() {
    let p = example();
    let zero = br#"{"spec":{"replicas":0}}"#;
    let two = br#"{"spec":{"replicas":2}}"#;
    let scale = |ns: &str| format!("/apis/apps/v1/namespaces/{ns}/deployments/web/scale");
    let merge = "application/merge-patch+json";
    let d = decide(&p, "PATCH", &scale("prod-eu"), Some((merge, zero)), None);
    assert_eq!(
        action_rule(&d),
        (Action::Approve, Some("scale-to-zero-in-prod-needs-a-human"))
    );
    let d = decide(&p, "PATCH", &scale("prod-eu"), Some((merge, two)), None);
    assert_eq!(d.action, Action::Allow);
    let d = decide(&p, "PATCH", &scale("staging"), Some((merge, zero)), None);
    assert_eq!(d.action, Action::Allow);
    // A full Deployment written with replicas 0 (kubectl apply, JSON).
    let dep = json_bytes(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 0, "template": {}}}));
    let d = decide(
        &p,
        "PUT",
        "/apis/apps/v1/namespaces/prod-1/deployments/web",
        Some(("application/json", &dep)),
        None,
    );
    assert_eq!(d.action, Action::Approve);
    // An autoscaling/v1 Scale in protobuf is not decoded: fails closed (approve).
    let d = decide(
        &p,
        "PUT",
        &scale("prod-eu"),
        Some((PROTOBUF, &pod_proto("x", None))),
        None,
    );
    assert_eq!(d.action, Action::Approve);
    assert!(!d.condition_errors.is_empty());
}

#[test]
fn protected_objects_are_not_deleted() {
    let p = example();
    let path = "/api/v1/namespaces/shop/configmaps/settings";
    let attrs = parse_request("DELETE", path).unwrap();
    assert_eq!(
        p.body_needed(&attrs, &who()),
        BodyNeed {
            object: false,
            old_object: true
        }
    );
    let protected = json_bytes(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"mcp-warden.io/protected": "true"}}}));
    let plain = json_bytes(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "shop"}}}));
    let unlabelled = json_bytes(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"}}));
    let d = decide(
        &p,
        "DELETE",
        path,
        None,
        Some(("application/json", &protected)),
    );
    assert_eq!(
        action_rule(&d),
        (Action::Deny, Some("protected-objects-stay"))
    );
    for live in [&plain, &unlabelled] {
        let d = decide(&p, "DELETE", path, None, Some(("application/json", live)));
        assert_eq!(action_rule(&d), (Action::Allow, Some("manage-workloads")));
    }
    // The live object read as protobuf, decoded.
    let d = decide(
        &p,
        "DELETE",
        path,
        None,
        Some((
            PROTOBUF,
            &config_map_proto(&[("mcp-warden.io/protected", "")]),
        )),
    );
    assert_eq!(
        action_rule(&d),
        (Action::Deny, Some("protected-objects-stay"))
    );
    let d = decide(
        &p,
        "DELETE",
        path,
        None,
        Some((PROTOBUF, &config_map_proto(&[("app", "shop")]))),
    );
    assert_eq!(d.action, Action::Allow);
    // No live object (not fetched, or gone): fails closed.
    let d = decide(&p, "DELETE", path, None, None);
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.condition_errors.len(), 1);
    // Other verbs never need it.
    let get = parse_request("GET", path).unwrap();
    assert_eq!(p.body_needed(&get, &who()), BodyNeed::default());
}

#[test]
fn images_outside_the_registry_are_denied_on_create() {
    let p = example();
    let path = "/api/v1/namespaces/shop/pods";
    let d = decide(
        &p,
        "POST",
        path,
        Some(("application/json", &pod_json("docker.io/nginx", None))),
        None,
    );
    assert_eq!(
        action_rule(&d),
        (Action::Deny, Some("images-from-our-registry-only"))
    );
    let d = decide(
        &p,
        "POST",
        path,
        Some((
            "application/json",
            &pod_json("registry.example.com/nginx:1", None),
        )),
        None,
    );
    assert_eq!(d.action, Action::Allow);
    // YAML bodies are decoded too.
    let y = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\nspec:\n  containers:\n  - name: a\n    image: quay.io/x\n";
    let d = decide(&p, "POST", path, Some(("application/yaml", y)), None);
    assert_eq!(d.action, Action::Deny);
    // Protobuf pods: not decoded, so fail closed.
    let d = decide(
        &p,
        "POST",
        path,
        Some((PROTOBUF, &pod_proto("registry.example.com/a", None))),
        None,
    );
    assert_eq!(d.action, Action::Deny);
    // Only on create: an update is judged by the other rules.
    let d = decide(
        &p,
        "PUT",
        "/api/v1/namespaces/shop/pods/web",
        Some(("application/json", &pod_json("docker.io/nginx", None))),
        None,
    );
    assert_eq!(d.action, Action::Allow);
}

#[test]
fn allow_rules_fail_closed_and_bad_expressions_name_the_rule() {
    let p = Policy::parse(
        "t.yaml",
        r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
rules:
  - name: create-small
    action: allow
    verbs: [create]
    resources: [configmaps]
    when: size(object.data) < 3
"#,
    )
    .unwrap();
    let path = "/api/v1/namespaces/shop/configmaps";
    let small = br#"{"data":{"a":"1"}}"#;
    let d = decide(&p, "POST", path, Some(("application/json", small)), None);
    assert_eq!(d.action, Action::Allow);
    // No data: the condition errors, the allow rule does not match.
    let d = decide(&p, "POST", path, Some(("application/json", b"{}")), None);
    assert_eq!((d.action, d.rule.as_deref()), (Action::Deny, None));
    assert_eq!(d.condition_errors[0].rule, "create-small");
    // Protobuf ConfigMaps are decoded.
    let d = decide(
        &p,
        "POST",
        path,
        Some((PROTOBUF, &config_map_proto(&[]))),
        None,
    );
    assert_eq!(d.action, Action::Deny);

    let e = Policy::parse(
        "t.yaml",
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    action: deny\n    verbs: [create]\n    resources: [pods]\n  - name: b\n    action: deny\n    verbs: [create]\n    resources: [pods]\n    when: object.spec.containers.exists(c, c.image ==)\n",
    )
    .unwrap_err();
    let lines = e.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("t.yaml:12:11: rules[1].when: invalid CEL expression: column "),
        "{}",
        lines[0]
    );
    let e = Policy::parse(
        "t.yaml",
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    action: deny\n    verbs: [create]\n    resources: [pods]\n    when: obj.spec == 1\n",
    )
    .unwrap_err();
    assert!(
        e.lines()[0]
            .contains("rules[0].when: invalid CEL expression: column 1: unknown variable \"obj\""),
        "{e}"
    );
}

/// The examples shown in docs/policy.md are the tested ones.
#[test]
fn docs_examples_are_the_tested_ones() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md"),
    )
    .unwrap();
    let block = doc
        .split("### Examples")
        .nth(1)
        .unwrap()
        .split("```\n")
        .nth(1)
        .unwrap();
    let rules: Value = serde_saphyr::from_str(block).unwrap();
    let rules = rules.as_array().unwrap();
    assert_eq!(rules.len(), 4);
    let p = example();
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    for r in rules {
        let name = r["name"].as_str().unwrap();
        let rule = p
            .rule(name)
            .unwrap_or_else(|| panic!("{name} not in the example"));
        assert_eq!(
            squash(r["when"].as_str().unwrap()),
            squash(&rule.when.as_ref().unwrap().source),
            "{name}"
        );
        assert_eq!(r["action"].as_str(), Some(rule.action.as_str()), "{name}");
    }
}
