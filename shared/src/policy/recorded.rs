//! Recorded requests: audit events (as the sidecar records them and the
//! collector stores them) read back as the inputs of a policy decision, for
//! `policy learn` and `policy replay`.
//!
//! [`parse_events`] reads an `EventList` or NDJSON (one event per line);
//! [`requests`] folds the stages of each request (one `auditID`) into one
//! [`Recorded`]: its attributes (the request line re-parsed from `verb` and
//! `requestURI`), who made it, the impersonation it asked for, the body
//! recorded at level `Request` or `RequestResponse`, and the decision the
//! sidecar recorded in its annotations.
//!
//! Pure: bytes and events in, values out.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Action;
use crate::attrs::{Impersonation, RequestAttributes, parse_request};
use crate::audit::{
    ANN_DECISION, ANN_END_USER_ISSUER, ANN_REQUEST_OBJECT_OMITTED, ANN_RULE, Event, EventList,
    MicroTime, Stage,
};
use crate::identity::{Identity, SERVICE_ACCOUNT_PREFIX};

/// Why events could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// The file is neither an `EventList` nor NDJSON events.
    #[error("line {line}: not an audit event: {message}")]
    Line {
        /// 1-based line of the NDJSON file (1 for an `EventList`).
        line: usize,
        /// What serde said.
        message: String,
    },
}

/// Read an `EventList` (JSON) or NDJSON events (one per line, blank lines
/// skipped), as the collector stores them (`events.ndjson`,
/// `bodies/<n>.json|ndjson`).
pub fn parse_events(bytes: &[u8]) -> Result<Vec<Event>, EventsError> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{')
        && let Ok(list) = serde_json::from_str::<EventList>(trimmed)
        && list.kind == "EventList"
    {
        return Ok(list.items);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e = serde_json::from_str::<Event>(line).map_err(|e| EventsError::Line {
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(e);
    }
    Ok(out)
}

/// One recorded request, its stages folded together.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `auditID`.
    pub audit_id: String,
    /// `requestURI` as recorded (token-like query values redacted).
    pub request_uri: String,
    /// The attributes, re-parsed from the HTTP method the verb implies and
    /// the URI.
    pub attrs: RequestAttributes,
    /// Who made it (the pod's service account).
    pub identity: Identity,
    /// The `Impersonate-*` headers it carried.
    pub impersonation: Impersonation,
    /// The recorded request body (`requestObject`, already masked).
    pub object: Option<Value>,
    /// For a delete, the object the server answered with (the object as it
    /// was deleted), which stands in for the live object.
    pub deleted_object: Option<Value>,
    /// Why the body is missing although the level asks for it.
    pub object_omitted: Option<String>,
    /// The decision recorded (`mcp-warden.io/decision`); `None` when the
    /// event has none (a request answered before the policy, e.g. a `400`).
    pub decision: Option<Action>,
    /// The rule recorded (`mcp-warden.io/rule`); empty for the default.
    pub rule: String,
    /// When it was received.
    pub received: MicroTime,
    /// The response code, when a response was recorded.
    pub code: Option<i32>,
}

/// An event that is not a request a policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `auditID`.
    pub audit_id: String,
    /// `requestURI`.
    pub request_uri: String,
    /// Why.
    pub reason: String,
}

/// The HTTP method a recorded verb comes from.
fn method_for(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "get" | "list" | "watch" => "GET",
        "create" | "post" => "POST",
        "update" | "put" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        "head" => "HEAD",
        "options" => "OPTIONS",
        _ => return None,
    })
}

fn identity_of(e: &Event) -> Identity {
    let u = &e.user;
    let mut id = match u
        .username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, name)) => Identity::service_account(ns, name),
        None => Identity::user(&u.username),
    };
    if !u.groups.is_empty() {
        id.groups = u.groups.clone();
    }
    id.uid = u.uid.clone();
    if let Some(end_user) = end_user_of(e) {
        id.end_user = Some(end_user);
    }
    id
}

/// The end user of a request made with an end-user token (its
/// `impersonatedUser`, marked by [`ANN_END_USER_ISSUER`]).
fn end_user_of(e: &Event) -> Option<crate::enduser::EndUser> {
    let issuer = e.annotations.get(ANN_END_USER_ISSUER)?;
    let u = e.impersonated_user.as_ref()?;
    Some(crate::enduser::EndUser {
        username: u.username.clone(),
        groups: u.groups.clone(),
        issuer: issuer.clone(),
        subject: String::new(),
    })
}

fn impersonation_of(e: &Event) -> Impersonation {
    // An end user's request carried no Impersonate-* headers of the app's.
    if e.annotations.contains_key(ANN_END_USER_ISSUER) {
        return Impersonation::default();
    }
    let Some(u) = &e.impersonated_user else {
        return Impersonation::default();
    };
    Impersonation {
        user: (!u.username.is_empty()).then(|| u.username.clone()),
        groups: u.groups.clone(),
        uid: (!u.uid.is_empty()).then(|| u.uid.clone()),
        extra: u
            .extra
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect(),
    }
}

fn stage_rank(s: Stage) -> u8 {
    match s {
        Stage::RequestReceived => 0,
        Stage::ResponseStarted => 1,
        Stage::ResponseComplete => 2,
        Stage::Panic => 3,
    }
}

/// Fold events into requests (in order of first appearance), one per
/// `auditID`; events that are not policy decisions are returned apart.
pub fn requests(events: &[Event]) -> (Vec<Recorded>, Vec<Skipped>) {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for e in events {
        let v = by_id.entry(e.audit_id.clone()).or_default();
        if v.is_empty() {
            order.push(e.audit_id.clone());
        }
        v.push(e);
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for id in order {
        let Some(stages) = by_id.get(&id) else {
            continue;
        };
        let Some(last) = stages.iter().max_by_key(|e| stage_rank(e.stage)).copied() else {
            continue;
        };
        let skip = |reason: String| Skipped {
            audit_id: id.clone(),
            request_uri: last.request_uri.clone(),
            reason,
        };
        let Some(method) = method_for(&last.verb) else {
            skipped.push(skip(format!("unknown verb {:?}", last.verb)));
            continue;
        };
        let attrs = match parse_request(method, &last.request_uri) {
            Ok(a) => a,
            Err(e) => {
                skipped.push(skip(format!("the request line does not parse: {e}")));
                continue;
            }
        };
        if attrs.verb != last.verb {
            skipped.push(skip(format!(
                "recorded verb {:?} but the request line reads as {:?}",
                last.verb, attrs.verb
            )));
            continue;
        }
        let ann = |k: &str| {
            stages
                .iter()
                .rev()
                .find_map(|e| e.annotations.get(k).cloned())
        };
        let decision = ann(ANN_DECISION).and_then(|d| Action::from_name(&d));
        let object = stages.iter().find_map(|e| e.request_object.clone());
        let deleted_object = (attrs.verb == "delete")
            .then(|| {
                stages
                    .iter()
                    .find_map(|e| e.response_object.clone())
                    .filter(|o| o.get("kind").and_then(Value::as_str) != Some("Status"))
            })
            .flatten();
        out.push(Recorded {
            audit_id: id.clone(),
            request_uri: last.request_uri.clone(),
            identity: identity_of(last),
            impersonation: impersonation_of(last),
            object,
            deleted_object,
            object_omitted: ann(ANN_REQUEST_OBJECT_OMITTED),
            decision,
            rule: ann(ANN_RULE).unwrap_or_default(),
            received: stages
                .iter()
                .map(|e| e.request_received_timestamp)
                .min()
                .unwrap_or_default(),
            code: last.response_status.as_ref().map(|s| s.code),
            attrs,
        });
    }
    (out, skipped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An event as the sidecar records it.
    pub(crate) fn event(
        id: &str,
        stage: &str,
        verb: &str,
        uri: &str,
        decision: &str,
        rule: &str,
        object: Option<Value>,
    ) -> Value {
        let mut e = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": id, "stage": stage, "requestURI": uri, "verb": verb,
            "user": {"username": "system:serviceaccount:agents:mcp",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:agents", "system:authenticated"]},
            "requestReceivedTimestamp": "2026-12-06T10:00:00.000000Z",
            "stageTimestamp": "2026-12-06T10:00:01.000000Z",
            "annotations": {"mcp-warden.io/decision": decision, "mcp-warden.io/rule": rule},
        });
        if let Some(o) = object {
            e["requestObject"] = o;
        }
        if stage == "ResponseComplete" {
            e["responseStatus"] = json!({"metadata": {}, "code": 200});
        }
        e
    }

    #[test]
    fn an_end_users_request_is_read_back_as_that_end_user_not_impersonation() {
        let uri = "/api/v1/namespaces/shop/pods";
        let mut by_user = event("u", "ResponseComplete", "list", uri, "allow", "r", None);
        by_user["impersonatedUser"] =
            json!({"username": "alice@example.com", "groups": ["oidc:dev"]});
        by_user["annotations"][ANN_END_USER_ISSUER] = json!("https://idp.example.com");
        let mut by_headers = by_user.clone();
        by_headers["auditID"] = json!("h");
        by_headers["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(ANN_END_USER_ISSUER);
        let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [by_user, by_headers]});
        let (reqs, _) = requests(&parse_events(list.to_string().as_bytes()).unwrap());
        let u = reqs.iter().find(|r| r.audit_id == "u").unwrap();
        let end_user = u.identity.end_user.as_ref().unwrap();
        assert_eq!(
            (
                end_user.username.as_str(),
                end_user.groups.as_slice(),
                end_user.issuer.as_str()
            ),
            (
                "alice@example.com",
                &["oidc:dev".to_string()][..],
                "https://idp.example.com"
            )
        );
        assert!(u.impersonation.is_empty());
        let h = reqs.iter().find(|r| r.audit_id == "h").unwrap();
        assert!(h.identity.end_user.is_none());
        assert_eq!(h.impersonation.user.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn eventlist_and_ndjson_fold_into_requests() {
        let a = event(
            "a",
            "RequestReceived",
            "create",
            "/api/v1/namespaces/shop/configmaps",
            "allow",
            "r",
            None,
        );
        let a2 = event(
            "a",
            "ResponseComplete",
            "create",
            "/api/v1/namespaces/shop/configmaps",
            "allow",
            "r",
            Some(json!({"data": {}})),
        );
        let b = event(
            "b",
            "ResponseComplete",
            "watch",
            "/api/v1/namespaces/shop/pods?watch=true",
            "deny",
            "",
            None,
        );
        let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [a, a2, b]});
        let from_list = parse_events(list.to_string().as_bytes()).unwrap();
        let nd: String = from_list
            .iter()
            .map(|e| format!("{}\n\n", e.to_json_line().unwrap()))
            .collect();
        let from_nd = parse_events(nd.as_bytes()).unwrap();
        assert_eq!(from_list, from_nd);
        let (reqs, skipped) = requests(&from_nd);
        assert!(skipped.is_empty());
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].attrs.verb, "create");
        assert_eq!(reqs[0].object, Some(json!({"data": {}})));
        assert_eq!(reqs[0].decision, Some(Action::Allow));
        assert_eq!(reqs[0].code, Some(200));
        assert_eq!(
            reqs[0].identity.service_account_ref().as_deref(),
            Some("agents/mcp")
        );
        assert_eq!(reqs[1].attrs.verb, "watch");
        assert_eq!(reqs[1].decision, Some(Action::Deny));
        assert!(matches!(
            parse_events(b"{\"kind\":\"nope\"}\n"),
            Err(EventsError::Line { line: 1, .. })
        ));
        let bad = event(
            "c",
            "ResponseComplete",
            "list",
            "/api/v1/namespaces/%2F/pods",
            "allow",
            "",
            None,
        );
        let (_, skipped) = requests(&parse_events(bad.to_string().as_bytes()).unwrap());
        assert_eq!(skipped.len(), 1);
    }
}
