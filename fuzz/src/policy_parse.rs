//! `policy_parse`: `shared::policy::Policy::parse_bytes` on arbitrary bytes
//! (a policy file as the ConfigMap volume would hold it).
//!
//! Properties, beyond "never panics" (a panic here would take down a policy
//! reload):
//! - an invalid file gives at least one problem, each with a message, and its
//!   report prints;
//! - a valid file parses the same way twice (same hash, same rules), its
//!   masking section compiles, and evaluating a few requests against it
//!   obeys "deny beats approve beats allow": the decision is at least as
//!   strict as every rule that matches the request, and a tool call's is the
//!   strictest matching tool rule's (allow when none matches).

use mcp_warden_shared::attrs::{Impersonation, parse_request};
use mcp_warden_shared::identity::Identity;
use mcp_warden_shared::policy::{Action, Policy, evaluate, evaluate_tool};

const REQUESTS: [(&str, &str); 8] = [
    ("GET", "/api/v1/namespaces/default/secrets/db"),
    ("GET", "/api/v1/namespaces/default/pods?watch=1"),
    (
        "POST",
        "/api/v1/namespaces/default/pods/web/exec?command=sh",
    ),
    ("DELETE", "/apis/apps/v1/namespaces/prod/deployments"),
    ("PATCH", "/apis/mcp-warden.io/v1alpha1/accessrequests/x"),
    ("GET", "/version"),
    ("GET", "/apis"),
    (
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
    ),
];

const TOOLS: [&str; 3] = ["pods_delete", "helm_install", "resources_list"];

/// The property check; panics on a violation.
pub fn check(data: &[u8]) {
    match Policy::parse_bytes("fuzz.yaml", data) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            for p in &e.problems {
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
            }
            let _ = e.to_string();
            let _ = e.lines();
        }
        Ok(policy) => {
            let again = Policy::parse_bytes("fuzz.yaml", data).expect("parses twice");
            assert_eq!(policy.hash(), again.hash());
            assert_eq!(policy.rules.len(), again.rules.len());
            policy
                .masking
                .compile()
                .expect("a valid policy's masking compiles");
            let who = [
                Identity::service_account("default", "mcp"),
                Identity::user("jane"),
            ];
            let imp = [
                Impersonation::default(),
                Impersonation {
                    user: Some("admin".into()),
                    groups: vec!["system:masters".into()],
                    ..Impersonation::default()
                },
            ];
            for (method, target) in REQUESTS {
                let attrs = parse_request(method, target).expect("fixed requests parse");
                for w in &who {
                    let strictest = policy
                        .rules
                        .iter()
                        .filter(|r| r.matches(&attrs, w))
                        .map(|r| r.action)
                        .max();
                    let d = evaluate(&policy, &attrs, &imp[0], w);
                    if let Some(s) = strictest {
                        assert!(
                            d.action >= s,
                            "{method} {target}: decision {:?} weaker than a matching rule's {s:?}",
                            d.action
                        );
                        assert!(d.rule.is_some(), "a matching rule but no deciding rule");
                    }
                    let d2 = evaluate(&policy, &attrs, &imp[1], w);
                    assert!(
                        d2.action >= d.action,
                        "impersonation made a decision weaker"
                    );
                    let _ = d.forbidden_message(&attrs);
                }
            }
            // Tool calls: the strictest matching tool rule decides; none
            // matching allows.
            for tool in TOOLS {
                for w in &who {
                    let strictest = policy
                        .rules
                        .iter()
                        .filter(|r| r.matches_tool(tool, w))
                        .map(|r| r.action)
                        .max();
                    let d = evaluate_tool(&policy, tool, w);
                    match strictest {
                        Some(s) => {
                            assert_eq!(d.action, s, "tool {tool}: not the strictest rule's action");
                            assert!(
                                d.rule.is_some(),
                                "a matching tool rule but no deciding rule"
                            );
                        }
                        None => {
                            assert_eq!(d.action, Action::Allow, "tool {tool}: no rule, not allowed")
                        }
                    }
                }
            }
        }
    }
}
