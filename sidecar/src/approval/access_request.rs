//! What the sidecar writes into an AccessRequest and how it reads one back:
//! the object for a held request, the request hash, whether an approval may
//! be reused, and how waiting ended. Pure functions over
//! [`mcp_warden_shared::access_request`].

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use kube::api::ObjectMeta;
use mcp_warden_shared::access_request::{
    AccessRequest, AccessRequestSpec, GROUP, RESOURCE, Requester, State,
};
use mcp_warden_shared::attrs::RequestAttributes;
use sha2::Digest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `sha256(METHOD "\n" PATH?QUERY "\n" BODY)`, hex.
pub fn request_hash(method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// "delete deployments.apps prod/web".
pub fn summary(attrs: &RequestAttributes) -> String {
    let mut res = attrs.resource.clone();
    if !attrs.api_group.is_empty() {
        res = format!("{res}.{}", attrs.api_group);
    }
    if !attrs.subresource.is_empty() {
        res = format!("{res}/{}", attrs.subresource);
    }
    let target = match (attrs.namespace.as_str(), attrs.name.as_str()) {
        ("", "") => String::new(),
        ("", n) => format!(" {n}"),
        (ns, "") => format!(" in {ns}"),
        (ns, n) => format!(" {ns}/{n}"),
    };
    if attrs.is_resource_request {
        format!("{} {res}{target}", attrs.verb)
    } else {
        format!("{} {}", attrs.verb, attrs.path)
    }
}

/// DNS-1123 prefix for `generateName`: `delete-deployments-`.
fn name_prefix(attrs: &RequestAttributes) -> String {
    let raw = format!("{}-{}", attrs.verb, attrs.resource);
    let mut p: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    p.truncate(40);
    let p = p.trim_matches('-');
    if p.is_empty() {
        "request-".into()
    } else {
        format!("{p}-")
    }
}

/// RFC 3339 in whole seconds, as `expiresAt` and the notification show it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The AccessRequest the sidecar creates. Empty optional fields stay out of
/// the object (see [`mcp_warden_shared::access_request`]).
#[allow(clippy::too_many_arguments)]
pub fn access_request(
    attrs: &RequestAttributes,
    hash: &str,
    requester: &str,
    pod: &str,
    rule: &str,
    message: &str,
    expires_at: OffsetDateTime,
) -> AccessRequest {
    AccessRequest {
        metadata: ObjectMeta {
            generate_name: Some(name_prefix(attrs)),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "mcp-warden".to_string(),
            )])),
            ..Default::default()
        },
        spec: AccessRequestSpec {
            verb: attrs.verb.clone(),
            group: attrs.api_group.clone(),
            resource: attrs.resource.clone(),
            subresource: attrs.subresource.clone(),
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            request_hash: hash.to_string(),
            summary: summary(attrs),
            requester: Requester {
                service_account: requester.to_string(),
                pod: pod.to_string(),
            },
            rule: rule.to_string(),
            message: message.to_string(),
            expires_at: rfc3339(expires_at),
            grant: None,
        },
        status: None,
    }
}

/// `spec.verb` of an AccessRequest for a held MCP tool call.
pub const TOOL_CALL_VERB: &str = "tools/call";
/// `spec.resource` of an AccessRequest for a held MCP tool call.
pub const TOOL_CALL_RESOURCE: &str = "tools";
/// The longest masked arguments (as compact JSON) shown in the summary of a
/// held tool call; longer ones are left out.
pub const TOOL_SUMMARY_ARGUMENTS: usize = 200;

/// A held MCP tool call, as its AccessRequest describes it.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// The tool's name.
    pub tool: &'a str,
    /// The MCP session (`Mcp-Session-Id` or the SSE transport's
    /// `sessionId`); empty if none.
    pub session: &'a str,
    /// The verified end user's name, if any.
    pub user: Option<&'a str>,
    /// The call's arguments, already masked: they are shown and hashed.
    pub masked_arguments: &'a serde_json::Value,
}

/// "call tool pods_delete {"name":"web-0"} (session S, user alice@example.com)":
/// the masked arguments only when short.
pub fn tool_summary(call: &ToolCall<'_>) -> String {
    let mut s = format!("call tool {}", call.tool);
    let args = call.masked_arguments.to_string();
    let empty = match call.masked_arguments {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if !empty && args.len() <= TOOL_SUMMARY_ARGUMENTS {
        s.push(' ');
        s.push_str(&args);
    }
    let mut ctx = Vec::new();
    if !call.session.is_empty() {
        ctx.push(format!("session {}", call.session));
    }
    if let Some(u) = call.user {
        ctx.push(format!("user {u}"));
    }
    if !ctx.is_empty() {
        s.push_str(&format!(" ({})", ctx.join(", ")));
    }
    s
}

/// The AccessRequest for a held MCP tool call: verb `tools/call`, resource
/// `tools`, name the tool; the hash covers the tool and its masked
/// arguments (never the unmasked ones).
pub fn tool_call_access_request(
    call: &ToolCall<'_>,
    requester: &Requester,
    rule: &str,
    message: &str,
    expires_at: OffsetDateTime,
) -> AccessRequest {
    let attrs = RequestAttributes {
        verb: "call".into(),
        resource: format!("tool-{}", call.tool),
        ..Default::default()
    };
    AccessRequest {
        metadata: ObjectMeta {
            generate_name: Some(name_prefix(&attrs)),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "mcp-warden".to_string(),
            )])),
            ..Default::default()
        },
        spec: AccessRequestSpec {
            verb: TOOL_CALL_VERB.into(),
            resource: TOOL_CALL_RESOURCE.into(),
            name: call.tool.to_string(),
            request_hash: request_hash(
                TOOL_CALL_VERB,
                call.tool,
                call.masked_arguments.to_string().as_bytes(),
            ),
            summary: tool_summary(call),
            requester: requester.clone(),
            rule: rule.to_string(),
            message: message.to_string(),
            expires_at: rfc3339(expires_at),
            ..Default::default()
        },
        status: None,
    }
}

/// An approval of ours for `hash` that is still reusable at `now`.
pub fn reusable(
    item: &AccessRequest,
    hash: &str,
    requester: &str,
    now: OffsetDateTime,
    window: Duration,
) -> bool {
    if item.spec.request_hash != hash
        || item.spec.requester.service_account != requester
        || item.state() != State::Approved
    {
        return false;
    }
    let Ok(at) = OffsetDateTime::parse(&item.status().decided_at, &Rfc3339) else {
        return false;
    };
    now >= at - time::Duration::seconds(5) && now - at <= window
}

/// Methods whose meaning the hash (method, path, query) fully captures.
/// DELETE's optional DeleteOptions body is not part of it.
pub fn reusable_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    )
}

/// True for requests that touch AccessRequests (any verb, any version).
pub fn touches_access_requests(attrs: &RequestAttributes) -> bool {
    attrs.is_resource_request && attrs.api_group == GROUP && attrs.resource == RESOURCE
}

/// How waiting ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Approved { by: String },
    Denied { by: String, reason: String },
    Expired { by: String },
    Deleted,
    TimedOut,
}

/// The outcome an AccessRequest shows, or `None` while it is undecided.
pub fn outcome_of(obj: &AccessRequest) -> Option<Outcome> {
    let status = obj.status();
    let by = status.decided_by;
    match obj.state() {
        State::Approved => Some(Outcome::Approved { by }),
        State::Denied => Some(Outcome::Denied {
            by,
            reason: status.reason,
        }),
        State::Expired => Some(Outcome::Expired { by }),
        // Used by someone else: not ours to forward.
        State::Used => Some(Outcome::Deleted),
        State::Pending | State::Other(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use time::macros::datetime;

    fn attrs() -> RequestAttributes {
        mcp_warden_shared::attrs::parse_request(
            "DELETE",
            "/apis/apps/v1/namespaces/prod/deployments/web",
        )
        .unwrap()
    }

    #[test]
    fn summary_hash_and_object() {
        let a = attrs();
        assert_eq!(summary(&a), "delete deployments.apps prod/web");
        let h = request_hash(
            "DELETE",
            "/apis/apps/v1/namespaces/prod/deployments/web",
            b"",
        );
        assert_eq!(h.len(), 64);
        assert_ne!(
            h,
            request_hash(
                "DELETE",
                "/apis/apps/v1/namespaces/prod/deployments/web2",
                b""
            )
        );
        assert_ne!(
            h,
            request_hash(
                "DELETE",
                "/apis/apps/v1/namespaces/prod/deployments/web",
                b"{}"
            )
        );
        let o = serde_json::to_value(access_request(
            &a,
            &h,
            "system:serviceaccount:mcp:agent",
            "agent-0",
            "deletes",
            "why",
            datetime!(2026-11-22 01:05:00.5 UTC),
        ))
        .unwrap();
        assert_eq!(o["apiVersion"], "mcp-warden.io/v1alpha1");
        assert_eq!(o["kind"], "AccessRequest");
        assert_eq!(o["metadata"]["generateName"], "delete-deployments-");
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "mcp-warden"
        );
        assert_eq!(o["spec"]["expiresAt"], "2026-11-22T01:05:00Z");
        assert_eq!(
            o["spec"]["requester"]["serviceAccount"],
            "system:serviceaccount:mcp:agent"
        );
        assert_eq!(o["spec"]["group"], "apps");
        assert!(o.get("status").is_none());
    }

    /// A core-group request without a subresource (`kubectl delete configmap`)
    /// sends no `group`/`subresource` at all: kube-apiserver 1.20 refused the
    /// empty strings as `null`, and the object must match the CRD.
    #[test]
    fn access_request_omits_empty_optional_fields() {
        let a = mcp_warden_shared::attrs::parse_request(
            "DELETE",
            "/api/v1/namespaces/prod/configmaps/scratch",
        )
        .unwrap();
        let o = serde_json::to_value(access_request(
            &a,
            "h",
            "system:serviceaccount:mcp:agent",
            "",
            "deletes",
            "",
            datetime!(2026-11-22 01:05:00 UTC),
        ))
        .unwrap();
        let spec = o["spec"].as_object().unwrap();
        for absent in ["group", "subresource", "message"] {
            assert!(!spec.contains_key(absent), "{absent} sent: {o}");
        }
        assert!(o["spec"]["requester"].get("pod").is_none(), "{o}");
        fn no_null_or_empty(v: &Value, at: &str) {
            match v {
                Value::Null => panic!("{at} is null"),
                Value::String(s) => assert!(!s.is_empty(), "{at} is empty"),
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, c)| no_null_or_empty(c, &format!("{at}.{k}"))),
                Value::Array(a) => a.iter().for_each(|c| no_null_or_empty(c, at)),
                _ => {}
            }
        }
        no_null_or_empty(&o, "");
        assert_eq!(o["spec"]["namespace"], "prod");
        assert_eq!(o["spec"]["name"], "scratch");
        assert_eq!(o["spec"]["resource"], "configmaps");
        assert_eq!(o["spec"]["rule"], "deletes");
    }

    #[test]
    fn a_held_tool_call_asks_for_the_tool() {
        let args = json!({"namespace": "default", "name": "web-0"});
        let call = ToolCall {
            tool: "pods_delete",
            session: "S1",
            user: Some("alice@example.com"),
            masked_arguments: &args,
        };
        let requester = Requester {
            service_account: "system:serviceaccount:mcp:agent".into(),
            pod: "agent-0".into(),
        };
        let o = serde_json::to_value(tool_call_access_request(
            &call,
            &requester,
            "tool-deletes",
            "a person decides",
            datetime!(2026-11-22 01:05:00.5 UTC),
        ))
        .unwrap();
        assert_eq!(o["metadata"]["generateName"], "call-tool-pods-delete-");
        let spec = o["spec"].as_object().unwrap();
        assert_eq!(spec["verb"], "tools/call");
        assert_eq!(spec["resource"], "tools");
        assert_eq!(spec["name"], "pods_delete");
        assert_eq!(
            spec["summary"],
            r#"call tool pods_delete {"namespace":"default","name":"web-0"} (session S1, user alice@example.com)"#
        );
        assert_eq!(spec["rule"], "tool-deletes");
        assert_eq!(spec["message"], "a person decides");
        assert_eq!(spec["expiresAt"], "2026-11-22T01:05:00Z");
        assert_eq!(
            spec["requester"]["serviceAccount"],
            "system:serviceaccount:mcp:agent"
        );
        assert_eq!(spec["requester"]["pod"], "agent-0");
        for absent in ["group", "subresource", "namespace", "grant"] {
            assert!(!spec.contains_key(absent), "{absent} sent: {o}");
        }
        assert_eq!(spec["requestHash"].as_str().unwrap().len(), 64);
        let other = json!({"namespace": "default", "name": "web-1"});
        let h2 = tool_call_access_request(
            &ToolCall {
                masked_arguments: &other,
                ..call
            },
            &requester,
            "r",
            "",
            datetime!(2026-11-22 01:05:00 UTC),
        );
        assert_ne!(spec["requestHash"], h2.spec.request_hash.as_str());
    }

    #[test]
    fn a_tool_summary_leaves_long_arguments_and_missing_context_out() {
        let long = json!({"script": "x".repeat(TOOL_SUMMARY_ARGUMENTS)});
        let none = json!({});
        let s = tool_summary(&ToolCall {
            tool: "run",
            session: "",
            user: None,
            masked_arguments: &long,
        });
        assert_eq!(s, "call tool run");
        let s = tool_summary(&ToolCall {
            tool: "run",
            session: "S",
            user: None,
            masked_arguments: &none,
        });
        assert_eq!(s, "call tool run (session S)");
    }

    #[test]
    fn reuse_needs_same_hash_requester_and_a_fresh_approval() {
        let now = datetime!(2026-11-22 01:00:00 UTC);
        let item: AccessRequest = serde_json::from_value(json!({"metadata": {},
            "spec": {"requestHash": "h", "requester": {"serviceAccount": "sa"}},
            "status": {"state": "Approved", "decidedAt": "2026-11-22T00:55:00Z", "decidedBy": "alice"}}))
        .unwrap();
        let w = Duration::from_secs(600);
        assert!(reusable(&item, "h", "sa", now, w));
        assert!(!reusable(&item, "other", "sa", now, w));
        assert!(!reusable(&item, "h", "other-sa", now, w));
        assert!(!reusable(&item, "h", "sa", now, Duration::from_secs(60)));
        let used = item.with_state(State::Used, "");
        assert!(!reusable(&used, "h", "sa", now, w));
    }

    #[test]
    fn outcomes_follow_the_state() {
        let ar = |status: Value| -> AccessRequest {
            serde_json::from_value(json!({"metadata": {}, "spec": {}, "status": status})).unwrap()
        };
        assert_eq!(outcome_of(&ar(json!({}))), None);
        assert_eq!(outcome_of(&ar(json!({"state": "Pending"}))), None);
        assert_eq!(
            outcome_of(&ar(json!({"state": "Approved", "decidedBy": "alice"}))),
            Some(Outcome::Approved { by: "alice".into() })
        );
        assert_eq!(
            outcome_of(&ar(
                json!({"state": "Denied", "decidedBy": "bob", "reason": "no"})
            )),
            Some(Outcome::Denied {
                by: "bob".into(),
                reason: "no".into()
            })
        );
        assert_eq!(
            outcome_of(&ar(json!({"state": "Used"}))),
            Some(Outcome::Deleted)
        );
    }

    #[test]
    fn accessrequests_are_off_limits() {
        let a = mcp_warden_shared::attrs::parse_request(
            "GET",
            "/apis/mcp-warden.io/v1alpha1/namespaces/x/accessrequests",
        )
        .unwrap();
        assert!(touches_access_requests(&a));
        let a = mcp_warden_shared::attrs::parse_request(
            "PUT",
            "/apis/mcp-warden.io/v1alpha1/namespaces/x/accessrequests/a/status",
        )
        .unwrap();
        assert!(touches_access_requests(&a));
        assert!(!touches_access_requests(&attrs()));
    }

    #[test]
    fn only_bodiless_requests_reuse_approvals() {
        assert!(reusable_method(&Method::DELETE));
        assert!(reusable_method(&Method::GET));
        assert!(!reusable_method(&Method::PATCH));
        assert!(!reusable_method(&Method::PUT));
        assert!(!reusable_method(&Method::POST));
    }
}
