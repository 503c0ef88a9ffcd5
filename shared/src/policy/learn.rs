//! `policy learn`: the smallest policy that allows what a recording shows,
//! as audit2rbac does for RBAC.
//!
//! Every recorded request the sidecar allowed (or that carries no decision)
//! becomes an allow rule, every request it held for approval an approve rule;
//! denied requests are left to `defaultAction: deny` unless
//! [`LearnOptions::include_denied`] says to allow them too. Impersonation
//! checks are learned like requests; discovery is left out (allowed when no
//! rule matches).
//!
//! Rules are grouped by action, API group, resource (with subresource) and
//! namespace; a verb whose requests all named an object, among at most
//! [`LearnOptions::max_names`] names, gets `resourceNames`. Rules that then
//! differ only in their namespaces, or only in their resources, are merged.
//! Each rule carries its request count and first/last time seen as a comment.
//! With [`Learned::rbac_yaml`] the same rules become a Role per namespace
//! and a ClusterRole (cluster scope, all-namespace lists, nonResourceURLs),
//! bound to the identities seen.
//!
//! Pure: recorded requests in, YAML text out.

use std::collections::{BTreeMap, BTreeSet};

use super::Action;
use super::recorded::Recorded;
use crate::attrs::RequestAttributes;
use crate::audit::MicroTime;
use crate::identity::SERVICE_ACCOUNT_PREFIX;

/// Settings of [`learn`].
#[derive(Debug, Clone)]
pub struct LearnOptions {
    /// Most object names a rule lists in `resourceNames`; a verb that
    /// touched more gets a rule without names.
    pub max_names: usize,
    /// Learn denied requests as allowed too.
    pub include_denied: bool,
    /// `mode:` of the learned policy (`audit` unless told otherwise: run a
    /// learned policy in audit mode first).
    pub mode: super::Mode,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            max_names: 5,
            include_denied: false,
            mode: super::Mode::Audit,
        }
    }
}

/// One learned rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedRule {
    /// allow, or approve for requests that were held for a human.
    pub action: Action,
    /// Verbs seen.
    pub verbs: BTreeSet<String>,
    /// The API group (`""` for core); empty for nonResourceURLs rules.
    pub api_group: String,
    /// Resources (`resource` or `resource/subresource`).
    pub resources: BTreeSet<String>,
    /// Names, when few were touched; empty for any.
    pub resource_names: BTreeSet<String>,
    /// Namespaces; `""` is the cluster scope (and lists across namespaces).
    pub namespaces: BTreeSet<String>,
    /// Paths of non-resource requests.
    pub non_resource_urls: BTreeSet<String>,
    /// Requests this rule covers.
    pub count: usize,
    /// First time seen.
    pub first: MicroTime,
    /// Last time seen.
    pub last: MicroTime,
}

/// What [`learn`] found.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    /// The rules, in a stable order.
    pub rules: Vec<LearnedRule>,
    /// Requests learned.
    pub learned: usize,
    /// Denied requests left to the default action.
    pub denied_left_out: usize,
    /// Discovery requests left out.
    pub discovery: usize,
    /// Identities seen (usernames).
    pub users: BTreeSet<String>,
    /// `mode:` of the policy.
    pub mode: Option<super::Mode>,
}

#[derive(Default)]
struct VerbSeen {
    names: BTreeSet<String>,
    unnamed: bool,
    count: usize,
    first: Option<MicroTime>,
    last: Option<MicroTime>,
}

impl VerbSeen {
    fn add(&mut self, name: &str, at: MicroTime) {
        if name.is_empty() {
            self.unnamed = true;
        } else {
            self.names.insert(name.to_string());
        }
        self.count += 1;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }
}

/// Verbs that share one rule, with the names the rule lists.
type VerbGroup<'a> = (BTreeSet<String>, Vec<(&'a String, &'a VerbSeen)>);

/// Learn the rules that allow `requests` (see the module docs).
pub fn learn(requests: &[Recorded], opts: &LearnOptions) -> Learned {
    let mut out = Learned {
        mode: Some(opts.mode),
        ..Learned::default()
    };
    // (action, group, resource, namespace) -> verb -> seen
    let mut res: BTreeMap<(Action, String, String, String), BTreeMap<String, VerbSeen>> =
        BTreeMap::new();
    // (action, path) -> verb -> seen
    let mut nonres: BTreeMap<(Action, String), BTreeMap<String, VerbSeen>> = BTreeMap::new();
    for r in requests {
        let action = match r.decision {
            None | Some(Action::Allow) => Action::Allow,
            Some(Action::Approve) => Action::Approve,
            Some(Action::Deny) if opts.include_denied => Action::Allow,
            Some(Action::Deny) => {
                out.denied_left_out += 1;
                continue;
            }
        };
        if r.attrs.is_discovery() && r.impersonation.is_empty() {
            out.discovery += 1;
            continue;
        }
        out.learned += 1;
        out.users.insert(r.identity.username.clone());
        let mut all: Vec<RequestAttributes> = vec![r.attrs.clone()];
        all.extend(
            super::impersonation_checks(&r.impersonation)
                .into_iter()
                .map(|(_, a)| a),
        );
        for a in all {
            if a.is_resource_request {
                res.entry((
                    action,
                    a.api_group.clone(),
                    a.resource_with_subresource(),
                    a.namespace.clone(),
                ))
                .or_default()
                .entry(a.verb.clone())
                .or_default()
                .add(&a.name, r.received);
            } else if !a.is_discovery() {
                nonres
                    .entry((action, a.path.clone()))
                    .or_default()
                    .entry(a.verb.clone())
                    .or_default()
                    .add("", r.received);
            }
        }
    }

    let mut rules = Vec::new();
    for ((action, group, resource, ns), verbs) in res {
        // Verbs without names (or with too many) share one rule; named verbs
        // with the same names share one.
        let mut unnamed: Vec<(&String, &VerbSeen)> = Vec::new();
        let mut named: BTreeMap<&BTreeSet<String>, Vec<(&String, &VerbSeen)>> = BTreeMap::new();
        for (v, seen) in &verbs {
            if seen.unnamed || seen.names.len() > opts.max_names {
                unnamed.push((v, seen));
            } else {
                named.entry(&seen.names).or_default().push((v, seen));
            }
        }
        let mut groups: Vec<VerbGroup<'_>> = Vec::new();
        if !unnamed.is_empty() {
            groups.push((BTreeSet::new(), unnamed));
        }
        groups.extend(named.into_iter().map(|(n, v)| (n.clone(), v)));
        for (names, vs) in groups {
            rules.push(LearnedRule {
                action,
                verbs: vs.iter().map(|(v, _)| (*v).clone()).collect(),
                api_group: group.clone(),
                resources: BTreeSet::from([resource.clone()]),
                resource_names: names,
                namespaces: BTreeSet::from([ns.clone()]),
                non_resource_urls: BTreeSet::new(),
                count: vs.iter().map(|(_, s)| s.count).sum(),
                first: vs
                    .iter()
                    .filter_map(|(_, s)| s.first)
                    .min()
                    .unwrap_or_default(),
                last: vs
                    .iter()
                    .filter_map(|(_, s)| s.last)
                    .max()
                    .unwrap_or_default(),
            });
        }
    }
    for ((action, path), verbs) in nonres {
        rules.push(LearnedRule {
            action,
            verbs: verbs.keys().cloned().collect(),
            api_group: String::new(),
            resources: BTreeSet::new(),
            resource_names: BTreeSet::new(),
            namespaces: BTreeSet::new(),
            non_resource_urls: BTreeSet::from([path]),
            count: verbs.values().map(|s| s.count).sum(),
            first: verbs
                .values()
                .filter_map(|s| s.first)
                .min()
                .unwrap_or_default(),
            last: verbs
                .values()
                .filter_map(|s| s.last)
                .max()
                .unwrap_or_default(),
        });
    }
    // Merge rules equal but for one field: namespaces, then resources, then paths.
    let rules = merge(
        rules,
        |r| {
            let mut k = r.clone();
            k.namespaces.clear();
            k
        },
        |into, from| into.namespaces.extend(from.namespaces.iter().cloned()),
    );
    let rules = merge(
        rules,
        |r| {
            let mut k = r.clone();
            k.resources.clear();
            k
        },
        |into, from| into.resources.extend(from.resources.iter().cloned()),
    );
    let rules = merge(
        rules,
        |r| {
            let mut k = r.clone();
            k.non_resource_urls.clear();
            k
        },
        |into, from| {
            into.non_resource_urls
                .extend(from.non_resource_urls.iter().cloned())
        },
    );
    out.rules = rules;
    out
}

/// Merge rules whose `key` (the rule with one field cleared, counts and
/// times ignored) is equal.
fn merge(
    rules: Vec<LearnedRule>,
    key: impl Fn(&LearnedRule) -> LearnedRule,
    join: impl Fn(&mut LearnedRule, &LearnedRule),
) -> Vec<LearnedRule> {
    let mut out: Vec<LearnedRule> = Vec::new();
    let norm = |r: &LearnedRule| {
        let mut k = key(r);
        k.count = 0;
        k.first = MicroTime::default();
        k.last = MicroTime::default();
        k
    };
    for r in rules {
        let k = norm(&r);
        if let Some(into) = out.iter_mut().find(|o| norm(o) == k) {
            join(into, &r);
            into.count += r.count;
            into.first = into.first.min(r.first);
            into.last = into.last.max(r.last);
        } else {
            out.push(r);
        }
    }
    out
}

/// A YAML flow list of JSON-quoted strings (`["get", "list"]`).
fn flow<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| serde_json::Value::String(s.clone()).to_string())
        .collect();
    format!("[{}]", v.join(", "))
}

fn rule_name(i: usize, r: &LearnedRule) -> String {
    let what = r
        .resources
        .iter()
        .next()
        .or_else(|| r.non_resource_urls.iter().next())
        .map(|s| {
            s.trim_matches('/')
                .replace(['/', '.', '*'], "-")
                .trim_matches('-')
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "root".into());
    let ns = match r.namespaces.iter().collect::<Vec<_>>().as_slice() {
        [one] if !one.is_empty() => format!("-in-{one}"),
        _ => String::new(),
    };
    format!("{:02}-{}-{what}{ns}", i + 1, r.action)
}

impl Learned {
    /// The policy, as a commented YAML document.
    pub fn policy_yaml(&self) -> String {
        let mode = self.mode.unwrap_or(super::Mode::Audit);
        let mut y = String::new();
        y.push_str("# Learned by `mcp-warden-sidecar policy learn`: the smallest policy that\n");
        y.push_str(&format!(
            "# allows the {} requests recorded{}.\n",
            self.learned,
            match (
                self.rules.iter().map(|r| r.first).min(),
                self.rules.iter().map(|r| r.last).max()
            ) {
                (Some(f), Some(l)) => format!(" from {f} to {l}"),
                _ => String::new(),
            }
        ));
        if self.denied_left_out > 0 {
            y.push_str(&format!(
                "# {} denied request(s) were not learned: defaultAction denies them.\n",
                self.denied_left_out
            ));
        }
        if self.discovery > 0 {
            y.push_str(&format!(
                "# {} discovery request(s) need no rule (discovery is allowed unless denied).\n",
                self.discovery
            ));
        }
        if mode == super::Mode::Audit {
            y.push_str("# mode: audit decides and records without blocking: run it so first,\n");
            y.push_str(
                "# check `policy replay` and the recorded decisions, then switch to enforce.\n",
            );
        }
        y.push_str(&format!(
            "apiVersion: {}\nkind: {}\nmode: {}\ndefaultAction: deny\n",
            super::API_VERSION,
            super::KIND,
            mode.as_str()
        ));
        if self.rules.is_empty() {
            return y;
        }
        y.push_str("rules:\n");
        for (i, r) in self.rules.iter().enumerate() {
            y.push_str(&format!(
                "  # {} request{}, first {}, last {}\n",
                r.count,
                if r.count == 1 { "" } else { "s" },
                r.first,
                r.last
            ));
            y.push_str(&format!("  - name: {}\n", rule_name(i, r)));
            y.push_str(&format!("    action: {}\n", r.action));
            y.push_str(&format!("    verbs: {}\n", flow(&r.verbs)));
            if r.non_resource_urls.is_empty() {
                y.push_str(&format!("    apiGroups: {}\n", flow([&r.api_group])));
                y.push_str(&format!("    resources: {}\n", flow(&r.resources)));
                if !r.resource_names.is_empty() {
                    y.push_str(&format!("    resourceNames: {}\n", flow(&r.resource_names)));
                }
                y.push_str(&format!("    namespaces: {}\n", flow(&r.namespaces)));
            } else {
                y.push_str(&format!(
                    "    nonResourceURLs: {}\n",
                    flow(&r.non_resource_urls)
                ));
            }
        }
        y
    }

    /// RBAC for the same rules: a Role and RoleBinding per namespace, and a
    /// ClusterRole and ClusterRoleBinding for the cluster scope (cluster
    /// objects, lists across namespaces, nonResourceURLs), named `name` and
    /// bound to the identities seen; `---`-separated documents.
    pub fn rbac_yaml(&self, name: &str) -> String {
        let mut namespaced: BTreeMap<&str, Vec<&LearnedRule>> = BTreeMap::new();
        let mut cluster: Vec<&LearnedRule> = Vec::new();
        for r in &self.rules {
            if !r.non_resource_urls.is_empty() {
                cluster.push(r);
                continue;
            }
            for ns in &r.namespaces {
                if ns.is_empty() {
                    cluster.push(r);
                } else {
                    namespaced.entry(ns).or_default().push(r);
                }
            }
        }
        let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let rules_yaml = |rules: &[&LearnedRule]| {
            let mut y = String::from("rules:\n");
            for r in rules {
                if r.non_resource_urls.is_empty() {
                    y.push_str(&format!("  - apiGroups: {}\n", flow([&r.api_group])));
                    y.push_str(&format!("    resources: {}\n", flow(&r.resources)));
                    if !r.resource_names.is_empty() {
                        y.push_str(&format!("    resourceNames: {}\n", flow(&r.resource_names)));
                    }
                } else {
                    y.push_str(&format!(
                        "  - nonResourceURLs: {}\n",
                        flow(&r.non_resource_urls)
                    ));
                }
                y.push_str(&format!("    verbs: {}\n", flow(&r.verbs)));
            }
            y
        };
        let subjects = {
            let mut y = String::from("subjects:\n");
            for u in &self.users {
                match u
                    .strip_prefix(SERVICE_ACCOUNT_PREFIX)
                    .and_then(|rest| rest.split_once(':'))
                {
                    Some((ns, sa)) => y.push_str(&format!(
                        "  - kind: ServiceAccount\n    name: {}\n    namespace: {}\n",
                        quote(sa),
                        quote(ns)
                    )),
                    None => y.push_str(&format!(
                        "  - kind: User\n    apiGroup: rbac.authorization.k8s.io\n    name: {}\n",
                        quote(u)
                    )),
                }
            }
            y
        };
        let mut docs = Vec::new();
        if !cluster.is_empty() {
            docs.push(format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {}\n{}",
                quote(name),
                rules_yaml(&cluster)
            ));
            docs.push(format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {}\n{subjects}",
                quote(name),
                quote(name)
            ));
        }
        for (ns, rules) in namespaced {
            docs.push(format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {}\n  namespace: {}\n{}",
                quote(name),
                quote(ns),
                rules_yaml(&rules)
            ));
            docs.push(format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {}\n  namespace: {}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {}\n{subjects}",
                quote(name),
                quote(ns),
                quote(name)
            ));
        }
        let mut y = format!(
            "# RBAC learned by `mcp-warden-sidecar policy learn --rbac` from {} requests.\n",
            self.learned
        );
        y.push_str(&docs.join("---\n"));
        y
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::recorded::tests::event;
    use super::super::recorded::{parse_events, requests};
    use super::super::{Policy, evaluate};
    use super::*;
    use serde_json::Value;

    fn recorded(events: &[Value]) -> Vec<Recorded> {
        let nd: String = events.iter().map(|e| format!("{e}\n")).collect();
        requests(&parse_events(nd.as_bytes()).unwrap()).0
    }

    fn session() -> Vec<Recorded> {
        let mut ev = Vec::new();
        let mut n = 0;
        let mut add = |verb: &str, uri: &str, decision: &str| {
            n += 1;
            ev.push(event(
                &format!("id-{n}"),
                "ResponseComplete",
                verb,
                uri,
                decision,
                "r",
                None,
            ));
        };
        add("get", "/api", "allow");
        add("list", "/api/v1/namespaces/shop/pods", "allow");
        add("get", "/api/v1/namespaces/shop/pods/web-0", "allow");
        add("get", "/api/v1/namespaces/shop/pods/web-1/log", "allow");
        add("list", "/api/v1/namespaces/dev/pods", "allow");
        add(
            "get",
            "/api/v1/namespaces/shop/configmaps/settings",
            "allow",
        );
        add(
            "patch",
            "/api/v1/namespaces/shop/configmaps/settings",
            "allow",
        );
        add("list", "/api/v1/pods", "allow");
        add(
            "get",
            "/apis/apps/v1/namespaces/shop/deployments/web",
            "allow",
        );
        add(
            "patch",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            "approve",
        );
        add("delete", "/api/v1/namespaces/shop/secrets/db", "deny");
        add("get", "/healthz", "allow");
        for i in 0..7 {
            add(
                "get",
                &format!("/api/v1/namespaces/shop/services/s{i}"),
                "allow",
            );
        }
        recorded(&ev)
    }

    #[test]
    fn learned_policy_allows_exactly_the_session() {
        let reqs = session();
        let l = learn(&reqs, &LearnOptions::default());
        assert_eq!(l.denied_left_out, 1);
        assert_eq!(l.discovery, 1);
        let yaml = l.policy_yaml();
        let p = Policy::parse("learned.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(p.mode, super::super::Mode::Audit);
        // Every recorded request gets the decision it got.
        for r in &reqs {
            let d = evaluate(&p, &r.attrs, &r.impersonation, &r.identity);
            assert_eq!(
                Some(d.action),
                r.decision,
                "{} {}\n{yaml}",
                r.attrs.verb,
                r.request_uri
            );
        }
        // Names: one pod read by name, the configmap read and patched; more
        // than 5 services, so no names.
        assert!(yaml.contains(r#"resourceNames: ["settings"]"#), "{yaml}");
        assert!(!yaml.contains(r#""s1""#), "{yaml}");
        // pods listed in two namespaces: one rule with both.
        assert!(
            yaml.contains(r#"namespaces: ["", "dev", "shop"]"#),
            "{yaml}"
        );
        assert!(
            yaml.contains("# 2 requests, first 2026-12-06T10:00:00.000000Z"),
            "{yaml}"
        );
        // Outside the session: denied.
        for (m, path) in [
            ("DELETE", "/api/v1/namespaces/shop/pods/web-0"),
            ("GET", "/api/v1/namespaces/shop/pods/web-9"),
            ("GET", "/api/v1/namespaces/prod/configmaps/settings"),
            ("PATCH", "/api/v1/namespaces/shop/configmaps/other"),
            ("GET", "/api/v1/namespaces/shop/secrets/db"),
        ] {
            let a = crate::attrs::parse_request(m, path).unwrap();
            let d = evaluate(&p, &a, &Default::default(), &reqs[0].identity);
            assert_eq!(d.action, Action::Deny, "{m} {path}");
        }
    }

    #[test]
    fn rbac_roles_per_namespace_and_cluster() {
        let l = learn(&session(), &LearnOptions::default());
        let y = l.rbac_yaml("mcp-learned");
        let docs: Vec<&str> = y.split("---\n").collect();
        let kinds: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.lines().find_map(|l| l.strip_prefix("kind: ")))
            .collect();
        assert_eq!(
            kinds,
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Role",
                "RoleBinding"
            ],
            "{y}"
        );
        assert!(y.contains("nonResourceURLs: [\"/healthz\"]"), "{y}");
        assert!(
            y.contains("kind: ServiceAccount\n    name: \"mcp\"\n    namespace: \"agents\""),
            "{y}"
        );
        // Every document is YAML.
        for d in docs {
            let v: serde_json::Value = serde_saphyr::from_str(d).unwrap();
            assert!(v["kind"].is_string());
        }
    }
}
