//! `policy check` lints: rules that are valid but almost certainly not what
//! was meant. Each is a warning with the rule's path (`rules[2].verbs`);
//! errors stay with the parser.
//!
//! - A rule that can never match: a verb that never reaches the listed
//!   resources (`impersonate` outside users/groups/serviceaccounts/uids/
//!   userextras; `create` or `deletecollection` with `resourceNames`, since
//!   those requests carry no name), a built-in resource under a built-in
//!   group it does not belong to (`pods` in `apps`), an allow rule for a
//!   cluster-scoped resource whose `namespaces` lack `""` and `"*"`.
//! - A rule shadowed by another of the same action that matches everything
//!   it matches (the later of two equal rules is reported).
//! - An allow rule on `resources: ["*"]` with verbs beyond get, list, watch.
//! - A `when:` that reads `oldObject` while none of the rule's verbs has one
//!   (update, patch, delete), or `object` while none carries a body
//!   (create, update, patch).
//!
//! Pure: a policy in, warnings out.

use globset::Glob;

use super::{Action, Policy, Rule};

/// One warning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lint {
    /// Path of the field, e.g. `rules[2].apiGroups`.
    pub path: String,
    /// Line of the rule.
    pub line: u64,
    /// The rule's name.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

/// API groups that ship with Kubernetes (their resources are known).
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "admissionregistration.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "certificates.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "apiregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

/// Built-in resources and the groups that serve them.
const RESOURCE_GROUPS: &[(&str, &[&str])] = &[
    ("pods", &[""]),
    ("services", &[""]),
    ("configmaps", &[""]),
    ("secrets", &[""]),
    ("serviceaccounts", &[""]),
    ("namespaces", &[""]),
    ("nodes", &[""]),
    ("persistentvolumes", &[""]),
    ("persistentvolumeclaims", &[""]),
    ("endpoints", &[""]),
    ("events", &["", "events.k8s.io"]),
    ("limitranges", &[""]),
    ("resourcequotas", &[""]),
    ("replicationcontrollers", &[""]),
    ("podtemplates", &[""]),
    ("deployments", &["apps"]),
    ("statefulsets", &["apps"]),
    ("daemonsets", &["apps"]),
    ("replicasets", &["apps"]),
    ("controllerrevisions", &["apps"]),
    ("jobs", &["batch"]),
    ("cronjobs", &["batch"]),
    ("horizontalpodautoscalers", &["autoscaling"]),
    ("poddisruptionbudgets", &["policy"]),
    ("ingresses", &["networking.k8s.io"]),
    ("ingressclasses", &["networking.k8s.io"]),
    ("networkpolicies", &["networking.k8s.io"]),
    ("roles", &["rbac.authorization.k8s.io"]),
    ("rolebindings", &["rbac.authorization.k8s.io"]),
    ("clusterroles", &["rbac.authorization.k8s.io"]),
    ("clusterrolebindings", &["rbac.authorization.k8s.io"]),
    ("storageclasses", &["storage.k8s.io"]),
    ("customresourcedefinitions", &["apiextensions.k8s.io"]),
    ("leases", &["coordination.k8s.io"]),
    ("endpointslices", &["discovery.k8s.io"]),
    ("certificatesigningrequests", &["certificates.k8s.io"]),
    ("priorityclasses", &["scheduling.k8s.io"]),
];

/// Built-in cluster-scoped resources (requests for them carry no namespace).
const CLUSTER_SCOPED: &[&str] = &[
    "nodes",
    "persistentvolumes",
    "clusterroles",
    "clusterrolebindings",
    "storageclasses",
    "customresourcedefinitions",
    "ingressclasses",
    "certificatesigningrequests",
    "priorityclasses",
];

const IMPERSONATE_RESOURCES: &[&str] = &["users", "groups", "serviceaccounts", "uids"];

fn has_verb(r: &Rule, verbs: &[&str]) -> bool {
    r.verbs
        .iter()
        .any(|v| v == "*" || verbs.contains(&v.as_str()))
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

/// Whether pattern list `wide` covers every value `narrow` can match
/// (empty = any).
fn covers_patterns(wide: &[String], narrow: &[String]) -> bool {
    if wide.is_empty() {
        return true;
    }
    if narrow.is_empty() {
        return false;
    }
    narrow.iter().all(|n| {
        wide.iter().any(|w| {
            w == "*" || w == n || {
                !is_glob(n)
                    && Glob::new(w)
                        .map(|g| g.compile_matcher().is_match(n))
                        .unwrap_or(false)
            }
        })
    })
}

fn covers_resource(wide: &str, narrow: &str) -> bool {
    if wide == "*" || wide == narrow {
        return true;
    }
    match (wide.split_once('/'), narrow.split_once('/')) {
        // `*/x` only under `*/x` or `*/*`: `wr == nr` is then `*` too.
        (Some((wr, ws)), Some((nr, ns))) => (wr == "*" || wr == nr) && (ws == "*" || ws == ns),
        _ => false,
    }
}

fn covers_list(wide: &[String], narrow: &[String]) -> bool {
    wide.iter().any(|w| w == "*") || narrow.iter().all(|n| wide.contains(n))
}

/// Whether rule `a` matches every request `b` matches.
fn covers(a: &Rule, b: &Rule) -> bool {
    a.action == b.action
        // Tool rules judge tool calls, not requests.
        && !a.is_tool_rule()
        && !b.is_tool_rule()
        && a.when.is_none()
        && covers_list(&a.verbs, &b.verbs)
        && covers_patterns(&a.service_accounts, &b.service_accounts)
        && covers_patterns(&a.users, &b.users)
        && covers_patterns(&a.groups, &b.groups)
        && if b.non_resource_urls.is_empty() {
            a.non_resource_urls.is_empty()
                && covers_list(&a.api_groups, &b.api_groups)
                && b.resources
                    .iter()
                    .all(|n| a.resources.iter().any(|w| covers_resource(w, n)))
                && covers_patterns(&a.resource_names, &b.resource_names)
                && covers_patterns(&a.namespaces, &b.namespaces)
        } else {
            !a.non_resource_urls.is_empty()
                && b.non_resource_urls.iter().all(|n| {
                    a.non_resource_urls.iter().any(|w| {
                        w == "*" || w == n || w.strip_suffix('*').is_some_and(|p| n.starts_with(p))
                    })
                })
        }
}

/// The warnings for a policy, in rule order.
pub fn lint(policy: &Policy) -> Vec<Lint> {
    let mut out = Vec::new();
    for (i, r) in policy.rules.iter().enumerate() {
        let mut warn = |field: &str, message: String| {
            out.push(Lint {
                path: if field.is_empty() {
                    format!("rules[{i}]")
                } else {
                    format!("rules[{i}].{field}")
                },
                line: r.line,
                rule: r.name.clone(),
                message,
            })
        };
        let resource_rule = r.non_resource_urls.is_empty() && !r.is_tool_rule();
        // Never matches.
        if resource_rule {
            if r.verbs.iter().all(|v| v == "impersonate")
                && !r.resources.iter().any(|res| {
                    res == "*"
                        || IMPERSONATE_RESOURCES.contains(&res.as_str())
                        || res.starts_with("userextras/")
                        || res.starts_with("*/")
                })
            {
                warn(
                    "verbs",
                    format!(
                        "impersonate only applies to {} and userextras/KEY: this rule never matches",
                        IMPERSONATE_RESOURCES.join(", ")
                    ),
                );
            }
            if !r.resource_names.is_empty()
                && !r.verbs.is_empty()
                && r.verbs
                    .iter()
                    .all(|v| v == "create" || v == "deletecollection")
            {
                warn(
                    "resourceNames",
                    "create and deletecollection requests carry no object name, so a rule with resourceNames never matches them".into(),
                );
            }
            if !r.api_groups.iter().any(|g| g == "*")
                && r.api_groups
                    .iter()
                    .all(|g| BUILTIN_GROUPS.contains(&g.as_str()))
            {
                for res in &r.resources {
                    let base = res.split('/').next().unwrap_or_default();
                    if let Some((_, groups)) = RESOURCE_GROUPS.iter().find(|(n, _)| *n == base)
                        && !r.api_groups.iter().any(|g| groups.contains(&g.as_str()))
                    {
                        let want: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
                        warn(
                            "apiGroups",
                            format!(
                                "{res:?} is served by group {} only, not {:?}: this resource never matches",
                                want.join(" or "),
                                r.api_groups
                            ),
                        );
                    }
                }
            }
            if r.action == Action::Allow
                && !r.namespaces.is_empty()
                && !r.namespaces.iter().any(|n| n.is_empty() || n == "*")
            {
                for res in &r.resources {
                    let base = res.split('/').next().unwrap_or_default();
                    if CLUSTER_SCOPED.contains(&base) {
                        warn(
                            "namespaces",
                            format!(
                                "{res:?} is cluster-scoped: its requests have no namespace, so an allow rule needs \"\" in namespaces to match them"
                            ),
                        );
                    }
                }
            }
        }
        // Wide allow.
        if r.action == Action::Allow
            && r.resources.iter().any(|x| x == "*")
            && r.verbs
                .iter()
                .any(|v| !matches!(v.as_str(), "get" | "list" | "watch"))
        {
            warn(
                "verbs",
                format!(
                    "allows {:?} on every resource (resources: [\"*\"]): wider than read-only; name the resources that need writing",
                    r.verbs
                ),
            );
        }
        // Conditions on bodies the verbs do not have.
        if let Some(c) = &r.when {
            if c.uses_old_object() && !has_verb(r, &["update", "patch", "delete"]) {
                warn(
                    "when",
                    format!(
                        "reads oldObject, which is always null for verbs {:?} (only update, patch and delete have one)",
                        r.verbs
                    ),
                );
            }
            if c.uses_object() && !has_verb(r, &["create", "update", "patch"]) {
                warn(
                    "when",
                    format!(
                        "reads object, which is always null for verbs {:?} (only create, update and patch carry one)",
                        r.verbs
                    ),
                );
            }
        }
    }
    // Shadowed rules.
    for (i, b) in policy.rules.iter().enumerate() {
        let by = policy
            .rules
            .iter()
            .enumerate()
            .find(|(j, a)| *j != i && covers(a, b) && (!covers(b, a) || *j < i));
        if let Some((j, a)) = by {
            out.push(Lint {
                path: format!("rules[{i}]"),
                line: b.line,
                rule: b.name.clone(),
                message: format!(
                    "shadowed by rules[{j}] ({:?}, line {}): every request this rule matches, that {} rule matches too, so this one never decides",
                    a.name, a.line, a.action
                ),
            });
        }
    }
    out.sort_by_key(|l| l.line);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lints(rules: &str) -> Vec<(String, String)> {
        let p = Policy::parse(
            "l.yaml",
            &format!("apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n{rules}"),
        )
        .unwrap();
        lint(&p).into_iter().map(|l| (l.path, l.message)).collect()
    }

    #[test]
    fn each_lint() {
        let l = lints(
            r#"  - name: read
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: read-pods
    action: allow
    verbs: [get]
    resources: [pods]
    namespaces: [shop]
  - name: pods-in-apps
    action: allow
    verbs: [get]
    apiGroups: [apps]
    resources: [pods, deployments]
  - name: imp
    action: allow
    verbs: [impersonate]
    resources: [pods]
  - name: create-named
    action: allow
    verbs: [create]
    resources: [configmaps]
    resourceNames: [a]
  - name: write-all
    action: allow
    verbs: [get, patch]
    resources: ["*"]
  - name: old-on-create
    action: deny
    verbs: [create]
    resources: [pods]
    when: has(oldObject.metadata)
  - name: nodes-in-ns
    action: allow
    verbs: [delete]
    resources: [nodes]
    namespaces: [shop]
"#,
        );
        let has = |path: &str, text: &str| {
            assert!(
                l.iter().any(|(p, m)| p == path && m.contains(text)),
                "no {path}: {text} in {l:#?}"
            )
        };
        has("rules[1]", "shadowed by rules[0] (\"read\"");
        has(
            "rules[2].apiGroups",
            "\"pods\" is served by group \"\" only",
        );
        has("rules[3].verbs", "impersonate only applies");
        has("rules[4].resourceNames", "carry no object name");
        has("rules[5].verbs", "wider than read-only");
        has("rules[6].when", "oldObject, which is always null");
        has("rules[7].namespaces", "cluster-scoped");
        // deployments in apps is fine; the wide rule is not shadowed by anything.
        assert!(
            !l.iter().any(|(_, m)| m.contains("\"deployments\"")),
            "{l:#?}"
        );
        assert!(!l.iter().any(|(p, _)| p == "rules[0]"), "{l:#?}");
        // rules[2] get on deployments is shadowed by read ("*"), and so are
        // rules 3, 4? No: impersonate and create are not read verbs.
        assert!(
            !l.iter()
                .any(|(p, m)| p == "rules[4]" && m.contains("shadowed")),
            "{l:#?}"
        );
    }

    #[test]
    fn clean_policies_have_no_lints() {
        assert!(
            lint(&Policy::embedded_default()).is_empty(),
            "{:?}",
            lint(&Policy::embedded_default())
        );
        let l = lints(
            r#"  - name: a
    action: allow
    verbs: [get]
    resources: [pods]
    namespaces: ["team-*"]
  - name: b
    action: allow
    verbs: [get]
    resources: [pods]
    namespaces: ["team-1", "other"]
  - name: c
    action: deny
    verbs: [delete]
    resources: [configmaps]
    when: has(oldObject.metadata.labels)
"#,
        );
        assert!(l.is_empty(), "{l:?}");
        // Equal rules: the later one is reported, once.
        let l = lints(
            "  - name: a\n    action: allow\n    verbs: [get]\n    resources: [pods]\n  - name: b\n    action: allow\n    verbs: [get]\n    resources: [pods]\n",
        );
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].0, "rules[1]");
    }
}
