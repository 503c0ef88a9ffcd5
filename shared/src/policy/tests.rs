//! Unit tests of policy parsing and evaluation.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::attrs::parse_request;

fn who_sa(r: &str) -> Identity {
    Identity::from_service_account_ref(r).unwrap()
}

fn imp_user(user: &str, groups: &[&str]) -> Impersonation {
    Impersonation {
        user: Some(user.to_string()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Impersonation::default()
    }
}

fn decide(p: &Policy, method: &str, path: &str, who: &Identity, imp: &Impersonation) -> Decision {
    let attrs = parse_request(method, path).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    evaluate(p, &attrs, imp, who)
}

const TABLE_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: read-all
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: no-logs-in-kube-system
    action: deny
    verbs: [get]
    resources: [pods/log]
    namespaces: [kube-system]
  - name: scale-any
    action: allow
    verbs: [update, patch]
    apiGroups: [apps]
    resources: ["*/scale"]
  - name: deploy-in-dev
    action: allow
    verbs: [create, update, patch, delete]
    apiGroups: [apps]
    resources: [deployments]
    namespaces: ["dev-*", "team-?"]
  - name: delete-approval
    action: approve
    verbs: [delete, deletecollection]
    resources: ["*"]
  - name: web-config-edit
    action: allow
    verbs: [update, patch]
    apiGroups: [""]
    resources: [configmaps]
    resourceNames: [web-config, "feature-*"]
  - name: ci-creates-jobs
    action: allow
    verbs: [create]
    apiGroups: [batch]
    resources: [jobs]
    serviceAccounts: ["ci/*"]
  - name: no-nodes
    action: deny
    verbs: ["*"]
    resources: [nodes]
    namespaces: [""]
  - name: crds-anywhere
    action: allow
    verbs: [create]
    apiGroups: [apiextensions.k8s.io]
    resources: [customresourcedefinitions]
    namespaces: ["*"]
  - name: no-prod-secrets
    action: deny
    verbs: ["*"]
    resources: [secrets]
    namespaces: ["prod-*"]
    message: secrets in production are off limits
  - name: metrics-url
    action: allow
    verbs: [get]
    nonResourceURLs: [/metrics, /debug/*]
  - name: no-openapi
    action: deny
    verbs: [get]
    nonResourceURLs: [/openapi/*]
  - name: impersonate-viewer
    action: allow
    verbs: [impersonate]
    resources: [users, groups]
    resourceNames: [viewer, "system:authenticated"]
  - name: impersonate-sandbox-sa
    action: approve
    verbs: [impersonate]
    resources: [serviceaccounts]
    namespaces: [sandbox]
  - name: locked-pod-subresources
    action: deny
    verbs: ["*"]
    resources: ["pods/*"]
    namespaces: [locked]
"#;

/// method, path, who, impersonation, expected action, expected rule
type Row<'a> = (
    &'a str,
    &'a str,
    &'a Identity,
    Impersonation,
    Action,
    Option<&'a str>,
);

#[test]
fn evaluation_table() {
    let p = Policy::parse("table.yaml", TABLE_POLICY).unwrap();
    let me = who_sa("agents/mcp");
    let ci = who_sa("ci/runner");
    let jane = Identity::user("jane");
    let none = Impersonation::default();
    use Action::*;
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // plain allow / default deny
        ("GET", "/api/v1/namespaces/default/pods", &me, none.clone(), Allow, Some("read-all")),
        ("POST", "/api/v1/namespaces/default/pods", &me, none.clone(), Deny, None),
        // subresources: "*" covers them, "pods/log" names one, "pods/*" all of pods', "*/scale" one of any
        ("GET", "/api/v1/namespaces/default/pods/web-0/log", &me, none.clone(), Allow, Some("read-all")),
        ("GET", "/api/v1/namespaces/kube-system/pods/dns-0/log", &me, none.clone(), Deny, Some("no-logs-in-kube-system")),
        ("GET", "/api/v1/namespaces/kube-system/pods/dns-0", &me, none.clone(), Allow, Some("read-all")),
        ("PUT", "/apis/apps/v1/namespaces/x/deployments/web/scale", &me, none.clone(), Allow, Some("scale-any")),
        ("PATCH", "/apis/apps/v1/namespaces/x/statefulsets/db/scale", &me, none.clone(), Allow, Some("scale-any")),
        ("PUT", "/apis/apps/v1/namespaces/x/deployments/web", &me, none.clone(), Deny, None),
        ("GET", "/api/v1/namespaces/locked/pods/p/log", &me, none.clone(), Deny, Some("locked-pod-subresources")),
        ("GET", "/api/v1/namespaces/locked/pods/p", &me, none.clone(), Allow, Some("read-all")),
        // exec over WebSocket (GET) is create: read rules do not allow it
        ("GET", "/api/v1/namespaces/default/pods/p/exec?command=sh", &me, none.clone(), Deny, None),
        // namespace globs
        ("POST", "/apis/apps/v1/namespaces/dev-1/deployments", &me, none.clone(), Allow, Some("deploy-in-dev")),
        ("POST", "/apis/apps/v1/namespaces/team-a/deployments", &me, none.clone(), Allow, Some("deploy-in-dev")),
        ("POST", "/apis/apps/v1/namespaces/team-ab/deployments", &me, none.clone(), Deny, None),
        ("POST", "/apis/apps/v1/namespaces/prod/deployments", &me, none.clone(), Deny, None),
        // precedence: approve beats allow, deny beats approve
        ("DELETE", "/apis/apps/v1/namespaces/dev-1/deployments/web", &me, none.clone(), Approve, Some("delete-approval")),
        ("DELETE", "/api/v1/namespaces/dev-1/pods?labelSelector=app%3Dweb", &me, none.clone(), Approve, Some("delete-approval")),
        ("DELETE", "/api/v1/namespaces/prod-eu/secrets/db", &me, none.clone(), Deny, Some("no-prod-secrets")),
        ("GET", "/api/v1/namespaces/prod-eu/secrets/db", &me, none.clone(), Deny, Some("no-prod-secrets")),
        ("GET", "/api/v1/namespaces/staging/secrets/db", &me, none.clone(), Allow, Some("read-all")),
        // the namespace object itself carries its own name as namespace
        ("DELETE", "/api/v1/namespaces/prod-eu", &me, none.clone(), Approve, Some("delete-approval")),
        // all-namespace requests: deny rules for some namespaces cover them, allow rules need "" or "*"
        ("GET", "/api/v1/secrets", &me, none.clone(), Deny, Some("no-prod-secrets")),
        ("GET", "/api/v1/pods", &me, none.clone(), Allow, Some("read-all")),
        ("POST", "/apis/apps/v1/deployments", &me, none.clone(), Deny, None),
        // cluster-scoped: "" and "*" match, globs do not
        ("GET", "/api/v1/nodes/n1", &me, none.clone(), Deny, Some("no-nodes")),
        ("GET", "/api/v1/namespaces/default/nodes/n1", &me, none.clone(), Allow, Some("read-all")),
        ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &me, none.clone(), Allow, Some("crds-anywhere")),
        // resourceNames (exact and glob); never for requests without a name
        ("PATCH", "/api/v1/namespaces/a/configmaps/web-config", &me, none.clone(), Allow, Some("web-config-edit")),
        ("PUT", "/api/v1/namespaces/a/configmaps/feature-x", &me, none.clone(), Allow, Some("web-config-edit")),
        ("PATCH", "/api/v1/namespaces/a/configmaps/other", &me, none.clone(), Deny, None),
        ("PATCH", "/apis/example.com/v1/namespaces/a/configmaps/web-config", &me, none.clone(), Deny, None),
        // serviceAccounts
        ("POST", "/apis/batch/v1/namespaces/ci/jobs", &ci, none.clone(), Allow, Some("ci-creates-jobs")),
        ("POST", "/apis/batch/v1/namespaces/ci/jobs", &me, none.clone(), Deny, None),
        ("POST", "/apis/batch/v1/namespaces/ci/jobs", &jane, none.clone(), Deny, None),
        // nonResourceURLs and discovery
        ("GET", "/metrics", &me, none.clone(), Allow, Some("metrics-url")),
        ("GET", "/debug/pprof/heap", &me, none.clone(), Allow, Some("metrics-url")),
        ("POST", "/metrics", &me, none.clone(), Deny, None),
        ("GET", "/healthz", &me, none.clone(), Deny, None),
        ("GET", "/api", &me, none.clone(), Allow, None),
        ("GET", "/api/v1", &me, none.clone(), Allow, None),
        ("GET", "/apis", &me, none.clone(), Allow, None),
        ("GET", "/apis/apps", &me, none.clone(), Allow, None),
        ("GET", "/apis/apps/v1", &me, none.clone(), Allow, None),
        ("GET", "/version", &me, none.clone(), Allow, None),
        ("GET", "/openapi/v3/apis/apps/v1", &me, none.clone(), Deny, Some("no-openapi")),
        ("POST", "/api", &me, none.clone(), Deny, None),
        // impersonation: both the impersonation and the request must pass
        ("GET", "/api/v1/namespaces/a/pods", &me, imp_user("viewer", &[]), Allow, Some("read-all")),
        ("GET", "/api/v1/namespaces/a/pods", &me, imp_user("viewer", &["system:authenticated"]), Allow, Some("read-all")),
        ("GET", "/api/v1/namespaces/a/pods", &me, imp_user("admin", &[]), Deny, None),
        ("GET", "/api/v1/namespaces/a/pods", &me, imp_user("viewer", &["system:masters"]), Deny, None),
        ("GET", "/api/v1/namespaces/a/pods", &me, imp_user("system:serviceaccount:sandbox:bot", &[]), Approve, Some("impersonate-sandbox-sa")),
        ("GET", "/api/v1/namespaces/a/pods", &me, imp_user("system:serviceaccount:prod:bot", &[]), Deny, None),
        ("DELETE", "/api/v1/namespaces/prod-1/secrets/s", &me, imp_user("viewer", &[]), Deny, Some("no-prod-secrets")),
        ("POST", "/api/v1/namespaces/a/pods", &me, imp_user("viewer", &[]), Deny, None),
    ];
    for (m, path, who, imp, action, rule) in rows {
        let d = decide(&p, m, path, who, &imp);
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (action, rule),
            "{m} {path} as {} impersonating {imp:?}: {d:?}",
            who.username
        );
        assert!(d.enforced);
    }
}

#[test]
fn decision_details() {
    let p = Policy::parse("table.yaml", TABLE_POLICY).unwrap();
    let me = who_sa("agents/mcp");
    let none = Impersonation::default();

    let d = decide(
        &p,
        "GET",
        "/api/v1/namespaces/prod-1/secrets/db",
        &me,
        &none,
    );
    assert_eq!(
        d.message.as_deref(),
        Some("secrets in production are off limits")
    );
    assert_eq!(d.explanation.to_string(), "rule \"no-prod-secrets\" (deny)");
    assert!(d.blocks());
    let attrs = parse_request("GET", "/api/v1/namespaces/prod-1/secrets/db").unwrap();
    assert_eq!(
        d.forbidden_message(&attrs),
        "secrets \"db\" is forbidden: mcp-warden policy: denied: rule \"no-prod-secrets\" (deny): secrets in production are off limits"
    );

    let d = decide(
        &p,
        "POST",
        "/apis/apps/v1/namespaces/prod/deployments",
        &me,
        &none,
    );
    assert_eq!(
        d.explanation.to_string(),
        "no rule matched, defaultAction deny"
    );
    let attrs = parse_request("POST", "/apis/apps/v1/namespaces/prod/deployments").unwrap();
    assert_eq!(
        d.forbidden_message(&attrs),
        "deployments.apps is forbidden: mcp-warden policy: denied: no rule matched, defaultAction deny"
    );

    let d = decide(
        &p,
        "GET",
        "/api/v1/namespaces/a/pods",
        &me,
        &imp_user("admin", &[]),
    );
    assert_eq!(
        d.explanation.to_string(),
        "impersonating user \"admin\": no rule matched, defaultAction deny"
    );

    let d = decide(
        &p,
        "DELETE",
        "/api/v1/namespaces/dev/pods/web-0",
        &me,
        &none,
    );
    let attrs = parse_request("DELETE", "/api/v1/namespaces/dev/pods/web-0").unwrap();
    assert!(d.forbidden_message(&attrs).contains("approval required"));
    assert!(d.forbidden_message(&attrs).contains("delete-approval"));

    let d = decide(&p, "GET", "/api", &me, &none);
    assert_eq!(
        d.explanation.to_string(),
        "discovery request, no rule matched (allowed)"
    );
    assert!(!d.blocks());
}

#[test]
fn precedence_does_not_depend_on_order() {
    let rules = [
        "  - {name: a-allow, action: allow, verbs: [\"*\"], resources: [\"*\"]}\n",
        "  - {name: b-approve, action: approve, verbs: [delete], resources: [\"*\"]}\n",
        "  - {name: c-deny, action: deny, verbs: [delete], resources: [pods]}\n",
        "  - {name: d-allow, action: allow, verbs: [delete], resources: [pods]}\n",
    ];
    let head = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n";
    let orders = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
    for order in orders {
        let yaml = format!(
            "{head}{}",
            order.iter().map(|&i| rules[i]).collect::<String>()
        );
        let p = Policy::parse("order.yaml", &yaml).unwrap();
        let me = who_sa("a/b");
        let none = Impersonation::default();
        let d = decide(&p, "DELETE", "/api/v1/namespaces/x/pods/p", &me, &none);
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (Action::Deny, Some("c-deny")),
            "{order:?}"
        );
        let d = decide(
            &p,
            "DELETE",
            "/api/v1/namespaces/x/configmaps/c",
            &me,
            &none,
        );
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (Action::Approve, Some("b-approve")),
            "{order:?}"
        );
        let d = decide(&p, "GET", "/api/v1/namespaces/x/configmaps/c", &me, &none);
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (Action::Allow, Some("a-allow")),
            "{order:?}"
        );
    }
}

#[test]
fn audit_mode_and_default_allow() {
    let yaml = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nmode: audit\ndefaultAction: allow\nrules:\n  - name: no-deletes\n    action: deny\n    verbs: [delete]\n    resources: [\"*\"]\n";
    let p = Policy::parse("audit.yaml", yaml).unwrap();
    assert_eq!(p.mode, Mode::Audit);
    let me = who_sa("a/b");
    let none = Impersonation::default();
    let d = decide(&p, "DELETE", "/api/v1/namespaces/x/pods/p", &me, &none);
    assert_eq!(
        (d.action, d.rule.as_deref(), d.enforced),
        (Action::Deny, Some("no-deletes"), false)
    );
    assert!(!d.blocks());
    let d = decide(&p, "POST", "/api/v1/namespaces/x/pods", &me, &none);
    assert_eq!(
        (d.action, d.rule.as_deref(), d.enforced),
        (Action::Allow, None, false)
    );
    // Policy with no rules at all: only the default.
    let p = Policy::parse(
        "none.yaml",
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\ndefaultAction: approve\n",
    )
    .unwrap();
    let d = decide(&p, "POST", "/api/v1/namespaces/x/pods", &me, &none);
    assert_eq!(
        (d.action, d.rule, d.enforced),
        (Action::Approve, None, true)
    );
    // Omitted defaultAction is deny; omitted mode is enforce.
    let p = Policy::parse(
        "min.yaml",
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\n",
    )
    .unwrap();
    assert_eq!((p.default_action, p.mode), (Action::Deny, Mode::Enforce));
    assert_eq!(p.masking, MaskingConfig::embedded_default());
    assert_eq!(p.recording.level, Level::RequestResponse);
}

#[test]
fn embedded_default_policy() {
    let p = Policy::parse(EMBEDDED_DEFAULT_NAME, EMBEDDED_DEFAULT_YAML).unwrap();
    assert_eq!(p.hash(), Policy::embedded_default().hash());
    assert_eq!(p.masking, MaskingConfig::embedded_default());
    assert_eq!(p.default_action, Action::Deny);
    assert_eq!(p.mode, Mode::Enforce);
    let me = who_sa("agents/mcp");
    let none = Impersonation::default();
    use Action::*;
    #[rustfmt::skip]
    let rows = [
        ("GET", "/api/v1/namespaces/default/pods?limit=500", Allow, Some("read-only")),
        ("GET", "/api/v1/namespaces/default/pods?watch=true", Allow, Some("read-only")),
        ("GET", "/api/v1/namespaces/default/secrets/db", Allow, Some("read-only")),
        ("GET", "/api/v1/namespaces/default/pods/web-0/log?follow=true", Allow, Some("read-only")),
        ("GET", "/apis/apps/v1/deployments", Allow, Some("read-only")),
        ("POST", "/api/v1/namespaces/default/pods/web-0/exec?command=sh", Deny, Some("no-exec-attach-portforward-proxy")),
        ("GET", "/api/v1/namespaces/default/pods/web-0/exec?command=sh", Deny, Some("no-exec-attach-portforward-proxy")),
        ("GET", "/api/v1/namespaces/default/pods/web-0/attach?stdout=true", Deny, Some("no-exec-attach-portforward-proxy")),
        ("POST", "/api/v1/namespaces/default/pods/web-0/portforward", Deny, Some("no-exec-attach-portforward-proxy")),
        ("GET", "/api/v1/namespaces/default/services/web/proxy/x", Deny, Some("no-exec-attach-portforward-proxy")),
        ("GET", "/api/v1/nodes/n1/proxy/metrics", Deny, Some("no-exec-attach-portforward-proxy")),
        ("POST", "/api/v1/namespaces/default/serviceaccounts/mcp/token", Deny, Some("no-token-requests")),
        ("DELETE", "/api/v1/namespaces/default/pods/web-0", Deny, None),
        ("DELETE", "/api/v1/namespaces/default/pods", Deny, None),
        ("POST", "/api/v1/namespaces/default/configmaps", Deny, None),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web", Deny, None),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", Allow, Some("self-access-reviews")),
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Deny, None),
        ("GET", "/version", Allow, Some("public-info")),
        ("GET", "/api", Allow, None),
        ("GET", "/apis/apps/v1", Allow, None),
        ("GET", "/openapi/v3/apis/apps/v1", Allow, None),
        ("GET", "/healthz", Allow, Some("public-info")),
        ("GET", "/readyz/etcd", Allow, Some("public-info")),
        ("GET", "/metrics", Deny, None),
    ];
    for (m, path, action, rule) in rows {
        let d = decide(&p, m, path, &me, &none);
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (action, rule),
            "{m} {path}: {d:?}"
        );
    }
    // No impersonation in the default policy.
    let d = decide(&p, "GET", "/api/v1/pods", &me, &imp_user("viewer", &[]));
    assert_eq!(d.action, Action::Deny);
}

#[test]
fn design_example_policy() {
    let src = include_str!("../../../tests/fixtures/policies/example.yaml");
    let p = Policy::parse("example.yaml", src).unwrap();
    assert_eq!(p.rules.len(), 3);
    assert_eq!(
        p.rules[1].message.as_deref(),
        Some("secrets in production are off limits")
    );
    assert_eq!(p.masking.detectors.len(), 4);
    assert_eq!(p.recording.level, Level::RequestResponse);
    let me = who_sa("agents/mcp");
    let none = Impersonation::default();
    #[rustfmt::skip]
    let rows = [
        ("GET", "/api/v1/namespaces/default/pods/web-0", Action::Allow, Some("read-everything")),
        ("GET", "/api/v1/nodes", Action::Allow, Some("read-everything")),
        ("GET", "/api/v1/namespaces/prod-eu/secrets/db", Action::Deny, Some("no-secrets-in-prod")),
        ("GET", "/api/v1/namespaces/dev/secrets/db", Action::Allow, Some("read-everything")),
        ("DELETE", "/api/v1/namespaces/prod/pods/web-0", Action::Approve, Some("deletes-need-a-human")),
        ("DELETE", "/api/v1/namespaces/prod-1/secrets/s", Action::Deny, Some("no-secrets-in-prod")),
        ("DELETE", "/api/v1/namespaces/default/pods", Action::Approve, Some("deletes-need-a-human")),
        ("POST", "/api/v1/namespaces/default/pods", Action::Deny, None),
    ];
    for (m, path, action, rule) in rows {
        let d = decide(&p, m, path, &me, &none);
        assert_eq!((d.action, d.rule.as_deref()), (action, rule), "{m} {path}");
    }
}

#[test]
fn hash_is_of_the_source_bytes() {
    let a = Policy::parse("a", TABLE_POLICY).unwrap();
    let b = Policy::parse("b", TABLE_POLICY).unwrap();
    let c = Policy::parse("c", &format!("{TABLE_POLICY}# comment\n")).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
    assert_eq!(a.hash().len(), 64);
    assert_eq!(a.short_hash(), &a.hash()[..12]);
    assert_eq!(a.hash(), sha256_hex(TABLE_POLICY.as_bytes()));
}

/// (fixture file, source, line, field, text the message must contain)
#[rustfmt::skip]
fn bad_policies() -> Vec<(&'static str, &'static str, u64, &'static str, &'static str)> {
    macro_rules! fx {
        ($f:literal) => { ($f, include_str!(concat!("../../../tests/fixtures/policies/", $f))) };
    }
    let rows: Vec<((&str, &str), u64, &str, &str)> = vec![
        (fx!("bad-unknown-field.yaml"), 7, "rules[0].verb", "unknown field \"verb\"; did you mean \"verbs\"?"),
        (fx!("bad-unknown-top-field.yaml"), 3, "defaultaction", "did you mean \"defaultAction\"?"),
        (fx!("bad-api-version.yaml"), 1, "apiVersion", "must be \"mcp-warden.io/v1alpha1\", found \"mcp-warden.io/v1\""),
        (fx!("bad-kind.yaml"), 2, "kind", "must be \"Policy\", found \"Polcy\""),
        (fx!("bad-mode.yaml"), 3, "mode", "unknown mode \"enforcing\""),
        (fx!("bad-action.yaml"), 5, "rules[0].action", "unknown action \"block\""),
        (fx!("bad-default-action.yaml"), 3, "defaultAction", "unknown action \"reject\""),
        (fx!("bad-verb.yaml"), 6, "rules[0].verbs[1]", "unknown verb \"read\""),
        (fx!("bad-verb-case.yaml"), 6, "rules[0].verbs[0]", "verbs are lower case: write \"get\""),
        (fx!("bad-duplicate-name.yaml"), 12, "rules[2].name", "duplicate rule name \"reads\" (first used on line 4)"),
        (fx!("bad-glob.yaml"), 8, "rules[0].namespaces[0]", "invalid glob \"prod-[a-\""),
        (fx!("bad-regex.yaml"), 11, "masking.rules[0].keys", "invalid regex"),
        (fx!("bad-empty-verbs.yaml"), 6, "rules[0].verbs", "must not be an empty list"),
        (fx!("bad-empty-rules.yaml"), 4, "rules", "is an empty list"),
        (fx!("bad-missing-name.yaml"), 4, "rules[0].name", "missing"),
        (fx!("bad-yaml-syntax.yaml"), 7, "", "invalid YAML"),
        (fx!("bad-resource-and-url.yaml"), 8, "rules[0].nonResourceURLs", "not both"),
        (fx!("bad-non-resource-url.yaml"), 7, "rules[0].nonResourceURLs[0]", "must be a path starting with '/'"),
        (fx!("bad-service-account.yaml"), 8, "rules[0].serviceAccounts[0]", "write service accounts as NAMESPACE/NAME"),
        (fx!("bad-api-group.yaml"), 7, "rules[0].apiGroups[0]", "the core group is \"\""),
        (fx!("bad-recording-level.yaml"), 9, "recording.level", "unknown level \"Full\""),
        (fx!("bad-masking-field.yaml"), 11, "masking.rules[0].fieldz", "unknown field \"fieldz\" (known fields: resources, fields, keys, envNames)"),
        (fx!("bad-detector.yaml"), 9, "masking.detectors[1]", "unknown detector \"ssn\""),
        (fx!("bad-verbs-not-a-list.yaml"), 6, "rules[0].verbs", "must be a list, found a string: write [\"get\"]"),
        (fx!("bad-duplicate-key.yaml"), 6, "", "duplicate mapping key"),
        (fx!("bad-http-verb-on-resource.yaml"), 6, "rules[0].verbs[0]", "verb \"post\" is an HTTP method"),
        (fx!("bad-resource.yaml"), 7, "rules[0].resources[0]", "put the API group in apiGroups"),
        (fx!("bad-boolean-action.yaml"), 5, "rules[0].action", "found a boolean"),
        (fx!("bad-empty-file.yaml"), 1, "", "the policy is empty"),
        (fx!("bad-no-resources.yaml"), 4, "rules[0].resources", "a rule needs resources"),
        (fx!("bad-many-errors.yaml"), 14, "rules[1].colour", "unknown field \"colour\""),
    ];
    rows.into_iter().map(|((f, s), l, field, text)| (f, s, l, field, text)).collect()
}

#[test]
fn bad_policies_name_file_line_and_field() {
    let table = bad_policies();
    assert!(table.len() >= 15);
    for (file, src, line, field, text) in table {
        let errs = match Policy::parse(file, src) {
            Ok(_) => panic!("{file} parsed"),
            Err(e) => e,
        };
        let shown = errs.to_string();
        let hit = errs
            .problems
            .iter()
            .find(|p| p.line == line && p.field == field && p.message.contains(text));
        assert!(
            hit.is_some(),
            "{file}: want line {line} field {field:?} text {text:?}, got:\n{shown}"
        );
        // The rendered text names file, line and field.
        let want = format!("{file}:{line}:");
        assert!(shown.contains(&want), "{file}: {shown}");
        assert!(shown.contains(field), "{file}: {shown}");
    }
}

#[test]
fn every_bad_fixture_is_tested() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policies");
    let tested: Vec<&str> = bad_policies().iter().map(|r| r.0).collect();
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("bad-") {
            n += 1;
            assert!(
                tested.contains(&name.as_str()),
                "{name} is not in the table"
            );
        }
    }
    assert_eq!(n, tested.len());
}

#[test]
fn all_errors_are_reported_at_once() {
    let src = include_str!("../../../tests/fixtures/policies/bad-many-errors.yaml");
    let errs = Policy::parse("many.yaml", src).unwrap_err();
    let got: Vec<(u64, &str)> = errs
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, "mode"),
            (7, "rules[0].verbs[1]"),
            (9, "rules[0].namespaces[0]"),
            (11, "rules[1].action"),
            (14, "rules[1].colour"),
            (16, "recording.level"),
        ],
        "{errs}"
    );
    assert!(
        errs.to_string()
            .starts_with("invalid policy many.yaml: 6 errors\n")
    );
}

#[test]
fn non_utf8_is_an_error_with_a_line() {
    let mut bytes = b"apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\n# caf".to_vec();
    bytes.push(0xe9);
    let e = Policy::parse_bytes("latin1.yaml", &bytes).unwrap_err();
    assert_eq!(e.problems[0].line, 3);
    assert!(
        e.to_string()
            .contains("latin1.yaml:3:6: the file is not valid UTF-8"),
        "{e}"
    );
}

#[test]
fn more_validation_cases() {
    let head = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n";
    #[rustfmt::skip]
    let cases = [
        ("  - {name: r, action: allow, verbs: [get], resources: [Pods]}\n", "rules[0].resources[0]"),
        ("  - {name: r, action: allow, verbs: [get], resources: [\"*/*\"]}\n", "rules[0].resources[0]"),
        ("  - {name: r, action: allow, verbs: [list], nonResourceURLs: [/healthz]}\n", "rules[0].verbs[0]"),
        ("  - {name: r, action: allow, verbs: [use], resources: [podsecuritypolicies]}\n", "rules[0].verbs[0]"),
        ("  - {name: r, action: allow, verbs: [get], nonResourceURLs: [\"/a*b\"]}\n", "rules[0].nonResourceURLs[0]"),
        ("  - {name: r, action: allow, verbs: [get], nonResourceURLs: [/a], namespaces: [x]}\n", "rules[0].namespaces"),
        ("  - {name: r, action: allow, verbs: [get], resources: [pods], namespaces: [Prod]}\n", "rules[0].namespaces[0]"),
        ("  - {name: r, action: allow, verbs: [get], resources: [pods], resourceNames: [\"\"]}\n", "rules[0].resourceNames[0]"),
        ("  - {name: r, action: allow, verbs: [get], resources: [pods], serviceAccounts: [agents]}\n", "rules[0].serviceAccounts[0]"),
        ("  - {name: r, action: allow, verbs: [get], apiGroups: [apps/v1], resources: [pods]}\n", "rules[0].apiGroups[0]"),
        ("  - {name: \"\", action: allow, verbs: [get], resources: [pods]}\n", "rules[0].name"),
        ("  - just-a-string\n", "rules[0]"),
        ("  - {name: r, action: allow, verbs: [get], resources: [pods], message: [a]}\n", "rules[0].message"),
    ];
    for (rule, field) in cases {
        let e = Policy::parse("x.yaml", &format!("{head}{rule}")).unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.field == field && p.line == 4),
            "{rule}: want {field} on line 4, got {e}"
        );
    }
    for (doc, field) in [
        ("- a\n", ""),
        (
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules: {a: 1}\n",
            "rules",
        ),
        (
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nmasking: [a]\n",
            "masking",
        ),
        (
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrecording: RequestResponse\n",
            "recording",
        ),
        // A wrongly typed masking value is named by its own path.
        (
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nmasking:\n  rules:\n    - resources: secrets\n",
            "masking.rules[0].resources",
        ),
        (
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nmasking:\n  detektors: [jwt]\n",
            "masking.detektors",
        ),
        ("kind: Policy\n", "apiVersion"),
        ("apiVersion: mcp-warden.io/v1alpha1\n", "kind"),
    ] {
        let e = Policy::parse("x.yaml", doc).unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.field == field),
            "{doc}: want {field}, got {e}"
        );
    }
    // A masking rule that masks nothing is the masking module's error, placed on its line.
    let doc = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nmasking:\n  rules:\n    - resources: [secrets]\n";
    let e = Policy::parse("m.yaml", doc).unwrap_err();
    assert_eq!(
        (e.problems[0].line, e.problems[0].field.as_str()),
        (5, "masking.rules[0]"),
        "{e}"
    );
}

#[test]
fn impersonation_checks_follow_rbac() {
    let imp = Impersonation {
        user: Some("system:serviceaccount:ns1:sa1".into()),
        groups: vec!["g1".into()],
        uid: Some("u-1".into()),
        extra: vec![("scopes".into(), "view".into())],
    };
    let checks = impersonation_checks(&imp);
    let got: Vec<(String, String, String, String, String)> = checks
        .iter()
        .map(|(_, a)| {
            (
                a.verb.clone(),
                a.api_group.clone(),
                a.resource_with_subresource(),
                a.namespace.clone(),
                a.name.clone(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (
                s("impersonate"),
                s(""),
                s("serviceaccounts"),
                s("ns1"),
                s("sa1")
            ),
            (s("impersonate"), s(""), s("groups"), s(""), s("g1")),
            (
                s("impersonate"),
                s("authentication.k8s.io"),
                s("uids"),
                s(""),
                s("u-1")
            ),
            (
                s("impersonate"),
                s("authentication.k8s.io"),
                s("userextras/scopes"),
                s(""),
                s("view")
            ),
        ]
    );
}

#[test]
fn alias_bomb_is_refused() {
    let mut doc = String::from(
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\na0: &a0 [x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = Policy::parse("bomb.yaml", &doc).unwrap_err();
    assert!(!e.problems.is_empty());
}

/// The policy's `apiVersion` is in the group the cluster contract names.
#[test]
fn api_version_is_in_the_contract_group() {
    assert_eq!(
        API_VERSION,
        format!(
            "{}/{}",
            crate::contract::API_GROUP,
            crate::access_request::VERSION
        )
    );
}

const END_USER_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: alice-deletes-in-dev
    action: allow
    verbs: [delete]
    resources: [pods]
    namespaces: ["dev-*"]
    users: ["alice@*", "https://idp.example.com#*"]
  - name: nobody-deletes-in-prod
    action: deny
    verbs: [delete]
    resources: [pods]
    namespaces: ["prod-*"]
    users: ["*"]
  - name: sre-reads-secrets
    action: allow
    verbs: [get]
    resources: [secrets]
    groups: ["oidc:sre", "oidc:platform/*"]
  - name: reads
    action: allow
    verbs: [get, list]
    resources: [pods]
"#;

fn with_end_user(user: &str, groups: &[&str]) -> Identity {
    Identity {
        end_user: Some(crate::enduser::EndUser::named(
            user,
            groups.iter().map(|g| g.to_string()).collect(),
        )),
        ..who_sa("mcp/server")
    }
}

#[test]
fn users_and_groups_match_the_end_user_and_never_a_request_without_one() {
    let p = Policy::parse("p.yaml", END_USER_POLICY).unwrap();
    let none = Impersonation::default();
    let app = who_sa("mcp/server");
    let alice = with_end_user("alice@example.com", &["oidc:dev"]);
    let url_named = with_end_user("https://idp.example.com#u-1", &[]);
    let bob = with_end_user("bob@example.com", &["oidc:platform/sre-oncall"]);
    let del_dev = ("DELETE", "/api/v1/namespaces/dev-1/pods/web");
    let del_prod = ("DELETE", "/api/v1/namespaces/prod-1/pods/web");
    let secret = ("GET", "/api/v1/namespaces/dev-1/secrets/s");
    type Case<'a> = (&'a Identity, (&'a str, &'a str), Action, Option<&'a str>);
    let cases: &[Case] = &[
        (&alice, del_dev, Action::Allow, Some("alice-deletes-in-dev")),
        // `*` in users and groups also crosses `/` and `:`.
        (
            &url_named,
            del_dev,
            Action::Allow,
            Some("alice-deletes-in-dev"),
        ),
        (&bob, del_dev, Action::Deny, None),
        // No end user: a rule with users matches neither for allow nor deny.
        (&app, del_dev, Action::Deny, None),
        (
            &alice,
            del_prod,
            Action::Deny,
            Some("nobody-deletes-in-prod"),
        ),
        (&app, del_prod, Action::Deny, None),
        (&bob, secret, Action::Allow, Some("sre-reads-secrets")),
        (&alice, secret, Action::Deny, None),
        (&app, secret, Action::Deny, None),
        // Rules without users/groups match with or without an end user.
        (
            &alice,
            ("GET", "/api/v1/namespaces/x/pods"),
            Action::Allow,
            Some("reads"),
        ),
        (
            &app,
            ("GET", "/api/v1/namespaces/x/pods"),
            Action::Allow,
            Some("reads"),
        ),
    ];
    for (who, (m, path), action, rule) in cases {
        let d = decide(&p, m, path, who, &none);
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (*action, *rule),
            "{m} {path} by {:?}",
            who.end_user
        );
    }
}

#[test]
fn users_and_groups_patterns_are_checked() {
    for (rule, field) in [
        (
            "  - {name: r, action: allow, verbs: [get], resources: [pods], users: [\"\"]}\n",
            "rules[0].users[0]",
        ),
        (
            "  - {name: r, action: allow, verbs: [get], resources: [pods], groups: [\"a\\tb\"]}\n",
            "rules[0].groups[0]",
        ),
        (
            "  - {name: r, action: allow, verbs: [get], resources: [pods], groups: [\"[\"]}\n",
            "rules[0].groups[0]",
        ),
        (
            "  - {name: r, action: allow, verbs: [get], resources: [pods], users: alice}\n",
            "rules[0].users",
        ),
    ] {
        let src = format!("apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n{rule}");
        let e = Policy::parse("p.yaml", &src).unwrap_err().to_string();
        assert!(e.contains(field), "{field} not in {e}");
    }
}

#[test]
fn a_users_rule_is_not_shadowed_by_a_wider_one_but_shadows_a_narrower() {
    let src = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
rules:
  - {name: alice, action: allow, verbs: [get], resources: [pods], users: ["alice@*"]}
  - {name: everyone, action: allow, verbs: [get], resources: [pods]}
  - {name: alice-again, action: allow, verbs: [get], resources: [pods], users: [alice@example.com]}
"#;
    let p = Policy::parse("p.yaml", src).unwrap();
    let lints = lint::lint(&p);
    let shadowed: Vec<&str> = lints
        .iter()
        .filter(|l| l.message.contains("shadow"))
        .map(|l| l.rule.as_str())
        .collect();
    assert!(!shadowed.contains(&"everyone"), "{lints:?}");
    assert!(shadowed.contains(&"alice-again"), "{lints:?}");
}

#[test]
fn grants_are_allowed_per_rule_and_capped_by_the_approval_section() {
    let p = Policy::parse(
        "p.yaml",
        r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
approval:
  maxGrant: 15m
rules:
  - name: deletes
    action: approve
    verbs: [delete]
    resources: [configmaps]
  - name: never-for-long
    action: approve
    verbs: [delete]
    resources: [secrets]
    grant: false
"#,
    )
    .unwrap();
    assert_eq!(
        p.approval.max_grant,
        std::time::Duration::from_secs(15 * 60)
    );
    assert!(p.rule("deletes").unwrap().grant);
    assert!(!p.rule("never-for-long").unwrap().grant);
    assert_eq!(
        Policy::embedded_default().approval.max_grant,
        crate::grant::DEFAULT_MAX_GRANT
    );

    let bad = Policy::parse(
        "p.yaml",
        r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
approval:
  maxGrant: forever
  other: 1
rules:
  - name: r
    action: approve
    verbs: [delete]
    resources: [pods]
    grant: "no"
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("approval.maxGrant"), "{bad}");
    assert!(bad.contains("approval.other"), "{bad}");
    assert!(
        bad.contains("rules[0].grant") && bad.contains("must be true or false"),
        "{bad}"
    );
}

const TOOL_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: read-all
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: no-deletes-by-tool
    action: deny
    tools: ["*_delete"]
    message: ask the platform team
  - name: helm-needs-a-human
    action: approve
    tools: ["helm_*"]
  - name: helm-list-ok
    action: allow
    tools: [helm_list]
  - name: pods-ok
    action: allow
    tools: ["pods_*"]
    serviceAccounts: ["mcp/*"]
"#;

#[test]
fn tool_rules_decide_tool_calls_deny_beats_approve_beats_allow() {
    let p = Policy::parse("t.yaml", TOOL_POLICY).unwrap();
    let sa = who_sa("mcp/kubernetes-mcp-server");
    let d = evaluate_tool(&p, "resources_delete", &sa);
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.rule.as_deref(), Some("no-deletes-by-tool"));
    assert!(d.blocks());
    assert!(
        d.refusal_reason().contains("no-deletes-by-tool"),
        "{}",
        d.refusal_reason()
    );
    assert!(d.refusal_reason().contains("ask the platform team"));
    // approve beats allow whatever the order.
    assert_eq!(evaluate_tool(&p, "helm_list", &sa).action, Action::Approve);
    let d = evaluate_tool(&p, "pods_list", &sa);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Allow, Some("pods-ok"))
    );
    // serviceAccounts narrows a tool rule too.
    let other = who_sa("other/x");
    let d = evaluate_tool(&p, "pods_list", &other);
    assert_eq!((d.action, d.rule.as_deref()), (Action::Allow, None));
    // No tool rule matches: allowed, defaultAction is for API requests.
    let d = evaluate_tool(&p, "events_list", &sa);
    assert_eq!((d.action, d.rule), (Action::Allow, None));
    assert!(d.explanation.to_string().contains("no tools rule matched"));
}

#[test]
fn tool_rules_never_match_api_requests() {
    let p = Policy::parse("t.yaml", TOOL_POLICY).unwrap();
    let sa = who_sa("mcp/kubernetes-mcp-server");
    let d = decide(
        &p,
        "DELETE",
        "/api/v1/namespaces/dev/pods/x",
        &sa,
        &Impersonation::default(),
    );
    assert_eq!((d.action, d.rule), (Action::Deny, None));
    let d = decide(
        &p,
        "GET",
        "/api/v1/namespaces/dev/pods",
        &sa,
        &Impersonation::default(),
    );
    assert_eq!(d.rule.as_deref(), Some("read-all"));
    assert!(lint::lint(&p).is_empty(), "{:?}", lint::lint(&p));
}

#[test]
fn tool_rules_in_audit_mode_are_not_enforced() {
    let src = TOOL_POLICY.replace("defaultAction: deny", "mode: audit\ndefaultAction: deny");
    let p = Policy::parse("t.yaml", &src).unwrap();
    let d = evaluate_tool(&p, "resources_delete", &who_sa("mcp/x"));
    assert_eq!(d.action, Action::Deny);
    assert!(!d.enforced);
    assert!(!d.blocks());
}

#[test]
fn tool_rules_refuse_api_fields_and_bad_globs() {
    for (rule, field, why) in [
        (
            "{name: r, action: deny, tools: [x], verbs: [get]}",
            "rules[0].verbs",
            "does not apply to a tools rule",
        ),
        (
            "{name: r, action: deny, tools: [x], resources: [pods]}",
            "rules[0].resources",
            "does not apply to a tools rule",
        ),
        (
            "{name: r, action: deny, tools: [x], when: \"true\"}",
            "rules[0].when",
            "does not apply to a tools rule",
        ),
        (
            "{name: r, action: deny, tools: []}",
            "rules[0].tools",
            "must not be an empty list",
        ),
        (
            "{name: r, action: deny, tools: [\"a b\"]}",
            "rules[0].tools[0]",
            "not a tool name glob",
        ),
        (
            "{name: r, action: deny, tools: [\"[\"]}",
            "rules[0].tools[0]",
            "invalid glob",
        ),
    ] {
        let src = format!("apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  - {rule}\n");
        let e = Policy::parse("t.yaml", &src).unwrap_err();
        let text = e.to_string();
        assert!(
            e.problems
                .iter()
                .any(|p| p.field == field && p.message.contains(why)),
            "{rule}: {text}"
        );
    }
}

#[test]
fn tool_rules_with_users_or_groups_judge_the_caller() {
    let p = Policy::parse(
        "t.yaml",
        r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
rules:
  - {name: sre-may-delete, action: allow, tools: [pods_delete], groups: ["oidc:sre"]}
  - {name: others-may-not, action: deny, tools: [pods_delete], users: ["*"]}
  - {name: nobody-else, action: deny, tools: [helm_*]}
"#,
    )
    .unwrap();
    let sre = with_end_user("alice@example.com", &["oidc:sre"]);
    let dev = with_end_user("bob@example.com", &["oidc:dev"]);
    let anonymous = who_sa("mcp/server");
    let d = evaluate_tool(&p, "pods_delete", &sre);
    // Deny beats allow among matching tool rules: alice matches both.
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("others-may-not"))
    );
    let d = evaluate_tool(&p, "pods_delete", &dev);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("others-may-not"))
    );
    // Without an end user neither rule matches; no tool rule: allowed.
    let d = evaluate_tool(&p, "pods_delete", &anonymous);
    assert_eq!((d.action, d.rule), (Action::Allow, None));
    let d = evaluate_tool(&p, "helm_install", &anonymous);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("nobody-else"))
    );
    let e = Policy::parse(
        "t.yaml",
        "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  - {name: r, action: approve, tools: [x], grant: false}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rules[0].grant"), "{e}");
}

#[test]
fn non_resource_urls_may_end_in_any_character() {
    // Found by the policy_parse fuzz target: the check for a '*' before the
    // last character sliced the URL at a byte that split 'ſ'.
    let src = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  - name: heap\n    action: allow\n    verbs: [get]\n    nonResourceURLs: [/heapAſ, /ſ*]\n";
    assert!(Policy::parse("p.yaml", src).is_ok());
    let bad = src.replace("/ſ*]", "/ſ*ſ]");
    let e = Policy::parse("p.yaml", &bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("'*' is only allowed as the last character"),
        "{e}"
    );
}
