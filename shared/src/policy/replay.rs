//! `policy replay`: which recorded requests a candidate policy would decide
//! differently.
//!
//! For every recorded request, the decision "now" is the one the sidecar
//! recorded (`mcp-warden.io/decision` and `mcp-warden.io/rule`), or, given a
//! current policy, that policy's decision over the same inputs. The decision
//! "then" is the candidate's, with the recorded body as `object` (and, for a
//! delete, the object the server answered with as `oldObject`). Changes are
//! grouped by (now → then, rules, verb, group, resource, namespace) and
//! counted; [`Report::breaks_allowed`] says whether an allowed request would
//! be denied (or held), which is what a CI guard fails on.
//!
//! A request is not replayable when the candidate has a matching `when:`
//! rule that needs a body the recording does not have (level `Metadata`, a
//! body the sidecar could not decode, or `oldObject` on update/patch); such
//! requests are listed apart, with the rule. Bodies in recordings are masked,
//! so a condition over a masked field sees the mask.
//!
//! Pure: policies and recorded requests in, a report out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::recorded::Recorded;
use super::{Action, Bodies, Policy, evaluate_with};

/// One request whose decision changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedRequest {
    /// `auditID`.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// `requestURI`.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
}

/// Requests whose decision changes the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The decision now.
    pub from: Action,
    /// The candidate's decision.
    pub to: Action,
    /// The rule deciding now (empty: the default action).
    pub rule_now: String,
    /// The candidate's rule (empty: the default action).
    pub rule_then: String,
    /// Verb.
    pub verb: String,
    /// API group (empty for core and non-resource requests).
    pub api_group: String,
    /// `resource[/subresource]`, or the path of a non-resource request.
    pub resource: String,
    /// Namespace (empty for none).
    pub namespace: String,
    /// How many requests.
    pub count: usize,
    /// The requests.
    pub requests: Vec<ChangedRequest>,
}

/// A request the candidate cannot judge from the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotReplayable {
    /// `auditID`.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// `requestURI`.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Why.
    pub reason: String,
}

/// What [`replay`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Requests read.
    pub requests: usize,
    /// Requests judged by both.
    pub replayed: usize,
    /// Requests whose decision stays.
    pub unchanged: usize,
    /// Requests without a recorded decision (and no current policy given).
    pub no_decision: usize,
    /// Changes, grouped, the largest groups first.
    pub changes: Vec<Change>,
    /// Requests not replayable.
    pub not_replayable: Vec<NotReplayable>,
    /// True when a request allowed now would be denied or held.
    pub breaks_allowed: bool,
}

/// Replay `requests` against `candidate` (see the module docs).
pub fn replay(candidate: &Policy, current: Option<&Policy>, requests: &[Recorded]) -> Report {
    let mut report = Report {
        requests: requests.len(),
        ..Report::default()
    };
    type Key = (
        Action,
        Action,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let mut groups: BTreeMap<Key, Vec<ChangedRequest>> = BTreeMap::new();
    for r in requests {
        let bodies = Bodies {
            object: r.object.as_ref(),
            old_object: r.deleted_object.as_ref(),
        };
        let need = candidate.body_needed(&r.attrs, &r.identity);
        let missing = if need.object && r.object.is_none() {
            Some(match &r.object_omitted {
                Some(why) => {
                    format!("a when: rule reads object and the body was not recorded ({why})")
                }
                None => "a when: rule reads object and the body was not recorded (level Metadata?)"
                    .into(),
            })
        } else if need.old_object && r.deleted_object.is_none() {
            Some(
                "a when: rule reads oldObject, which a recording does not hold for this request"
                    .into(),
            )
        } else {
            None
        };
        if let Some(reason) = missing {
            let rules: Vec<&str> = candidate
                .rules
                .iter()
                .filter(|x| x.when.is_some() && x.matches(&r.attrs, &r.identity))
                .map(|x| x.name.as_str())
                .collect();
            report.not_replayable.push(NotReplayable {
                audit_id: r.audit_id.clone(),
                request_uri: r.request_uri.clone(),
                reason: format!("{reason}: rules {}", rules.join(", ")),
            });
            continue;
        }
        let (now, rule_now) = match current {
            Some(p) => {
                let d = evaluate_with(p, &r.attrs, &r.impersonation, &r.identity, bodies);
                (d.action, d.rule.unwrap_or_default())
            }
            None => match r.decision {
                Some(a) => (a, r.rule.clone()),
                None => {
                    report.no_decision += 1;
                    continue;
                }
            },
        };
        let then = evaluate_with(candidate, &r.attrs, &r.impersonation, &r.identity, bodies);
        report.replayed += 1;
        if then.action == now {
            report.unchanged += 1;
            continue;
        }
        if now == Action::Allow {
            report.breaks_allowed = true;
        }
        let a = &r.attrs;
        let resource = if a.is_resource_request {
            a.resource_with_subresource()
        } else {
            a.path.clone()
        };
        groups
            .entry((
                now,
                then.action,
                rule_now,
                then.rule.unwrap_or_default(),
                a.verb.clone(),
                a.api_group.clone(),
                resource,
                a.namespace.clone(),
            ))
            .or_default()
            .push(ChangedRequest {
                audit_id: r.audit_id.clone(),
                request_uri: r.request_uri.clone(),
            });
    }
    let mut changes: Vec<Change> = groups
        .into_iter()
        .map(
            |((from, to, rule_now, rule_then, verb, api_group, resource, namespace), reqs)| {
                Change {
                    from,
                    to,
                    rule_now,
                    rule_then,
                    verb,
                    api_group,
                    resource,
                    namespace,
                    count: reqs.len(),
                    requests: reqs,
                }
            },
        )
        .collect();
    changes.sort_by_key(|c| std::cmp::Reverse(c.count));
    report.changes = changes;
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::recorded::tests::event;
    use super::super::recorded::{parse_events, requests};
    use super::*;
    use serde_json::{Value, json};

    fn recorded(events: &[Value]) -> Vec<Recorded> {
        let nd: String = events.iter().map(|e| format!("{e}\n")).collect();
        requests(&parse_events(nd.as_bytes()).unwrap()).0
    }

    fn policy(rules: &str) -> Policy {
        Policy::parse(
            "c.yaml",
            &format!("apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n{rules}"),
        )
        .unwrap()
    }

    #[test]
    fn lists_exactly_the_changed_requests() {
        let pod = |img: &str| json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": img}]}});
        let reqs = recorded(&[
            event(
                "1",
                "ResponseComplete",
                "get",
                "/api/v1/namespaces/a/pods/x",
                "allow",
                "all",
                None,
            ),
            event(
                "2",
                "ResponseComplete",
                "get",
                "/api/v1/namespaces/a/pods/y",
                "allow",
                "all",
                None,
            ),
            event(
                "3",
                "ResponseComplete",
                "delete",
                "/api/v1/namespaces/a/pods/x",
                "allow",
                "all",
                None,
            ),
            event(
                "4",
                "ResponseComplete",
                "create",
                "/api/v1/namespaces/a/pods",
                "allow",
                "all",
                Some(pod("evil.io/x")),
            ),
            event(
                "5",
                "ResponseComplete",
                "create",
                "/api/v1/namespaces/a/pods",
                "allow",
                "all",
                Some(pod("ok.io/x")),
            ),
            event(
                "6",
                "ResponseComplete",
                "list",
                "/api/v1/namespaces/a/secrets",
                "deny",
                "",
                None,
            ),
        ]);
        let candidate = policy(
            "  - name: read\n    action: allow\n    verbs: [get, list]\n    resources: [pods, secrets]\n\
             \x20 - name: create\n    action: allow\n    verbs: [create]\n    resources: [pods]\n\
             \x20 - name: registry\n    action: deny\n    verbs: [create]\n    resources: [pods]\n    when: object.spec.containers.exists(c, !c.image.startsWith('ok.io/'))\n",
        );
        let r = replay(&candidate, None, &reqs);
        assert_eq!((r.requests, r.replayed, r.unchanged), (6, 6, 3));
        assert!(r.breaks_allowed);
        let got: Vec<(Action, Action, &str, &str, Vec<&str>)> = r
            .changes
            .iter()
            .map(|c| {
                (
                    c.from,
                    c.to,
                    c.rule_now.as_str(),
                    c.rule_then.as_str(),
                    c.requests.iter().map(|x| x.audit_id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Action::Allow, Action::Deny, "all", "", vec!["3"]),
                (Action::Allow, Action::Deny, "all", "registry", vec!["4"]),
                (Action::Deny, Action::Allow, "", "read", vec!["6"]),
            ]
        );
        // With a current policy, "now" is that policy's decision.
        let current = policy(
            "  - name: everything\n    action: allow\n    verbs: [\"*\"]\n    resources: [\"*\"]\n",
        );
        let r = replay(&candidate, Some(&current), &reqs);
        assert_eq!(r.changes.len(), 2);
        assert!(r.changes.iter().all(|c| c.rule_now == "everything"));
        // The same policy replayed on itself changes nothing.
        let r = replay(&candidate, Some(&candidate), &reqs);
        assert!(r.changes.is_empty() && !r.breaks_allowed);
    }

    #[test]
    fn requests_without_the_body_a_condition_needs_are_not_replayable() {
        let reqs = recorded(&[
            event(
                "1",
                "ResponseComplete",
                "create",
                "/api/v1/namespaces/a/pods",
                "allow",
                "all",
                None,
            ),
            event(
                "2",
                "ResponseComplete",
                "update",
                "/api/v1/namespaces/a/configmaps/c",
                "allow",
                "all",
                Some(json!({})),
            ),
        ]);
        let candidate = policy(
            "  - name: all\n    action: allow\n    verbs: [\"*\"]\n    resources: [\"*\"]\n\
             \x20 - name: body\n    action: deny\n    verbs: [create]\n    resources: [pods]\n    when: object.spec.hostNetwork == true\n\
             \x20 - name: old\n    action: deny\n    verbs: [update]\n    resources: [configmaps]\n    when: has(oldObject.immutable)\n",
        );
        let r = replay(&candidate, None, &reqs);
        assert_eq!(r.replayed, 0);
        assert_eq!(r.not_replayable.len(), 2);
        assert!(
            r.not_replayable[0].reason.ends_with("rules body"),
            "{:?}",
            r.not_replayable
        );
        assert!(r.not_replayable[1].reason.contains("oldObject"));
    }
}
