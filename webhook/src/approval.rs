//! Admission for `AccessRequest` status updates: who decided, and whether
//! they may. Pure: AdmissionReview JSON in, AdmissionReview JSON out.
//!
//! Served twice, as kube-apiserver calls mutating webhooks before validating
//! ones:
//! - `POST /mutate-accessrequests` stamps `status.decidedBy` (the
//!   authenticated `request.userInfo.username`, never a value the client
//!   typed) and `status.decidedAt` on every decision, keeps both unchanged
//!   otherwise, and refuses what is not allowed (below);
//! - `POST /validate-accessrequests` runs the same checks and additionally
//!   requires that the stored `decidedBy` is exactly the requesting user on a
//!   decision, so no later mutating webhook or typed value can forge it.
//!
//! Rules: states move only Pending→Approved|Denied|Expired and
//! Approved→Used|Expired; the requesting service account
//! (`spec.requester.serviceAccount`) may not approve or deny its own request;
//! nobody may approve or deny once `spec.expiresAt` has passed.
//!
//! Grants (`spec.grant`, see [`mcp_warden_shared::grant`]) are approved the
//! same way, with three more checks on the approval: the grant is well
//! formed and its window is at most the webhook's `--max-grant` (default
//! 1h; each sidecar also caps it with its policy's `approval.maxGrant`); the
//! approver is not the identity it is for (its ServiceAccount, or any token
//! bound to the granted pod: a self-grant); and, in the validating pass,
//! `status.decidedAt` is the admission time within [`DECIDED_AT_SLACK`],
//! since the window starts there and a typed time would move it.

use std::time::Duration;

use base64::Engine;
use mcp_warden_shared::access_request::{AccessRequest, GROUP, RESOURCE, State};
use mcp_warden_shared::contract::USER_EXTRA_POD_NAME;
use mcp_warden_shared::grant::{self, GrantError};
use mcp_warden_shared::status::{Reason, Status};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::admission::ADMISSION_API_VERSION;

pub use mcp_warden_shared::contract::{
    ACCESS_REQUEST_MUTATE_PATH as MUTATE_PATH, ACCESS_REQUEST_VALIDATE_PATH as VALIDATE_PATH,
};

/// Which endpoint is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stamp `decidedBy`/`decidedAt` with a JSON Patch.
    Mutate,
    /// Verify only.
    Validate,
}

/// Why a status update is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("status.state {0:?} is not one of Pending, Approved, Denied, Expired, Used")]
    UnknownState(String),
    #[error("an AccessRequest cannot go from {from} to {to}")]
    Transition { from: String, to: String },
    #[error(
        "{user} requested this access and cannot decide on it: another person must approve or deny it"
    )]
    SelfDecision { user: String },
    #[error("the AccessRequest expired at {expires_at}: it can no longer be approved or denied")]
    Expired { expires_at: String },
    #[error(
        "status.decidedBy is set by the admission webhook from the authenticated user ({expected:?}), not {got:?}"
    )]
    ForgedDecider { expected: String, got: String },
    #[error("status.decidedBy and status.decidedAt cannot change without a decision")]
    DecisionFieldsChanged,
    #[error("{user} is who this grant is for and cannot approve it: another person must")]
    SelfGrant { user: String },
    #[error("the grant cannot be approved: {0}")]
    Grant(GrantError),
    #[error(
        "status.decidedAt {got:?} of a grant must be the time of its approval ({now}): the window starts there"
    )]
    GrantStart { got: String, now: String },
    #[error(
        "status.preview is written once, with the Pending state, by the sidecar that asks: {user} cannot change what the approver is shown"
    )]
    PreviewChanged { user: String },
    #[error("the admission request is malformed: {0}")]
    Malformed(String),
}

/// How far a grant's stored `decidedAt` may be from the validating
/// webhook's clock (the mutating pass stamps it moments before).
pub const DECIDED_AT_SLACK: Duration = Duration::from_secs(30);

/// The grant checks on an approval (see the module docs); `Ok` for
/// anything that is not the approval of a grant.
pub fn judge_grant(
    old: &AccessRequest,
    new: &AccessRequest,
    username: &str,
    pod_names: &[String],
    now: OffsetDateTime,
    max_grant: Duration,
    mode: Mode,
) -> Result<(), Refusal> {
    // spec cannot change through the status subresource: `old` is what was
    // asked.
    let Some(g) = &old.spec.grant else {
        return Ok(());
    };
    if old.state() == State::Approved || new.state() != State::Approved {
        return Ok(());
    }
    if grant::is_self_grant(old, username, pod_names) {
        return Err(Refusal::SelfGrant {
            user: username.to_string(),
        });
    }
    grant::validate(
        old.namespace(),
        &old.spec.requester.service_account,
        g,
        max_grant,
    )
    .map_err(Refusal::Grant)?;
    if mode == Mode::Validate {
        let got = new.status().decided_at;
        let close = OffsetDateTime::parse(&got, &Rfc3339)
            .ok()
            .and_then(|t| Duration::try_from((t - now).abs()).ok())
            .is_some_and(|d| d <= DECIDED_AT_SLACK);
        if !close {
            return Err(Refusal::GrantStart {
                got,
                now: now.format(&Rfc3339).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// The outcome for an allowed update: the JSON Patch to apply (mutating
/// mode only; empty when nothing needs stamping).
pub type Stamp = Vec<Value>;

/// A string of the AdmissionReview envelope.
fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// An empty optional string is an absent one.
fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Reads an AccessRequest out of an admission request.
pub fn access_request(v: &Value) -> Result<AccessRequest, Refusal> {
    AccessRequest::deserialize(v)
        .map_err(|e| Refusal::Malformed(format!("not an AccessRequest: {e}")))
}

/// Judges one status update. `old`/`new` are the whole objects, `username`
/// the authenticated user, `now` the time of the decision.
pub fn judge(
    old: &AccessRequest,
    new: &AccessRequest,
    username: &str,
    now: OffsetDateTime,
    mode: Mode,
) -> Result<Stamp, Refusal> {
    let (from, to) = (old.state(), new.state());
    for state in [&from, &to] {
        if let State::Other(other) = state {
            return Err(Refusal::UnknownState(other.clone()));
        }
    }
    let transition = from != to;
    if transition {
        let ok = matches!(
            (&from, &to),
            (
                State::Pending,
                State::Approved | State::Denied | State::Expired
            ) | (State::Approved, State::Used | State::Expired)
        );
        if !ok {
            return Err(Refusal::Transition {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    }
    // The approver decides on what the preview shows: it is written once,
    // by the sidecar right after it creates the request (still Pending, no
    // decision in the same update), and never changed or removed after. The
    // sidecar refuses the held request when its preview cannot be written,
    // so an approval always concerns the sidecar's own preview.
    let (old_preview, new_preview) = (&old.status().preview, &new.status().preview);
    if new_preview != old_preview
        && (old_preview.is_some() || from != State::Pending || to != State::Pending)
    {
        return Err(Refusal::PreviewChanged {
            user: username.to_string(),
        });
    }
    if transition && to.is_human_decision() {
        let requester = opt(&new.spec.requester.service_account)
            .or_else(|| opt(&old.spec.requester.service_account));
        if requester == Some(username) {
            return Err(Refusal::SelfDecision {
                user: username.to_string(),
            });
        }
        // Expiry comes from the stored object: spec is not writable through
        // the status subresource, but `old` is what was asked.
        if let Some(exp) = opt(&old.spec.expires_at) {
            let at = OffsetDateTime::parse(exp, &Rfc3339)
                .map_err(|e| Refusal::Malformed(format!("spec.expiresAt {exp:?}: {e}")))?;
            if now >= at {
                return Err(Refusal::Expired {
                    expires_at: exp.to_string(),
                });
            }
        }
    }
    // Decision fields: set by the webhook on a decision (any transition
    // except Approved→Used, which consumes an existing decision), otherwise
    // carried over unchanged.
    let decides = transition && !(from == State::Approved && to == State::Used);
    let (old_status, new_status) = (old.status(), new.status());
    let old_by = opt(&old_status.decided_by);
    let old_at = opt(&old_status.decided_at);
    let new_by = opt(&new_status.decided_by);
    let new_at = opt(&new_status.decided_at);
    match mode {
        Mode::Validate => {
            if decides {
                if new_by != Some(username) {
                    return Err(Refusal::ForgedDecider {
                        expected: username.to_string(),
                        got: new_by.unwrap_or("").to_string(),
                    });
                }
            } else if new_by != old_by || new_at != old_at {
                return Err(Refusal::DecisionFieldsChanged);
            }
            Ok(Vec::new())
        }
        Mode::Mutate => {
            let (want_by, want_at) = if decides {
                let at = now
                    .replace_nanosecond(0)
                    .unwrap_or(now)
                    .format(&Rfc3339)
                    .map_err(|e| Refusal::Malformed(e.to_string()))?;
                (Some(username.to_string()), Some(at))
            } else {
                (old_by.map(str::to_string), old_at.map(str::to_string))
            };
            let mut ops = Vec::new();
            if new.status.is_none() {
                ops.push(json!({"op": "add", "path": "/status", "value": {}}));
            }
            for (field, cur, want) in [
                ("decidedBy", new_by, want_by),
                ("decidedAt", new_at, want_at),
            ] {
                let path = format!("/status/{field}");
                match (cur, want) {
                    (c, Some(w)) if c != Some(w.as_str()) => {
                        ops.push(json!({"op": "add", "path": path, "value": w}));
                    }
                    (Some(_), None) => ops.push(json!({"op": "remove", "path": path})),
                    _ => {}
                }
            }
            Ok(ops)
        }
    }
}

/// HTTP status and JSON body for one AdmissionReview body; grants may last
/// at most `max_grant`.
pub fn answer(body: &[u8], mode: Mode, now: OffsetDateTime, max_grant: Duration) -> (u16, Value) {
    let bad = |m: String| {
        let st = Status::new(Reason::BadRequest, m);
        (st.code(), st.to_value())
    };
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("the body is not a JSON AdmissionReview: {e}")),
    };
    if v.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
        || v.get("apiVersion").and_then(Value::as_str) != Some(ADMISSION_API_VERSION)
    {
        return bad(format!(
            "the body is not an {ADMISSION_API_VERSION} AdmissionReview"
        ));
    }
    let Some(req) = v.get("request").filter(|r| r.is_object()) else {
        return bad("the AdmissionReview has no request".into());
    };
    let Some(uid) = s(req, "/uid").filter(|u| !u.is_empty()) else {
        return bad("the AdmissionReview request has no uid".into());
    };
    let respond = |response: Value| {
        (
            200,
            json!({"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}),
        )
    };
    let deny = |reason: Reason, msg: String| {
        let st = Status::new(reason, msg);
        respond(json!({"uid": uid, "allowed": false, "status": st.to_value()}))
    };
    let is_ar =
        s(req, "/resource/group") == Some(GROUP) && s(req, "/resource/resource") == Some(RESOURCE);
    let op = s(req, "/operation").unwrap_or("");
    let sub = s(req, "/subResource").unwrap_or("");
    if !is_ar || op != "UPDATE" || sub != "status" {
        return respond(json!({"uid": uid, "allowed": true}));
    }
    let (Some(old), Some(new)) = (
        req.get("oldObject").filter(|o| o.is_object()),
        req.get("object").filter(|o| o.is_object()),
    ) else {
        return deny(
            Reason::BadRequest,
            "an AccessRequest status update needs object and oldObject".into(),
        );
    };
    let Some(user) = s(req, "/userInfo/username").filter(|u| !u.is_empty()) else {
        return deny(
            Reason::Forbidden,
            "the admission request has no userInfo.username".into(),
        );
    };
    let pod_names: Vec<String> = req
        .pointer("/userInfo/extra")
        .and_then(|e| e.get(USER_EXTRA_POD_NAME))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    // Read raw: the refusal names the object even when it does not parse.
    let name = s(new, "/metadata/name").unwrap_or("");
    let judged = access_request(old).and_then(|old| {
        let new = access_request(new)?;
        let ops = judge(&old, &new, user, now, mode)?;
        judge_grant(&old, &new, user, &pod_names, now, max_grant, mode)?;
        Ok((ops, new.state()))
    });
    match judged {
        Err(r) => {
            tracing::info!(user, name, refusal = %r, "access request decision refused");
            let reason = match r {
                Refusal::Malformed(_) | Refusal::UnknownState(_) => Reason::BadRequest,
                _ => Reason::Forbidden,
            };
            deny(reason, format!("accessrequests {name:?}: {r}"))
        }
        Ok((ops, state)) => {
            tracing::info!(
                user,
                name,
                state = %state,
                "access request status update allowed"
            );
            let mut r = json!({"uid": uid, "allowed": true});
            if mode == Mode::Mutate && !ops.is_empty() {
                let bytes = serde_json::to_vec(&ops).unwrap_or_default();
                r["patchType"] = json!("JSONPatch");
                r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            respond(r)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const SA: &str = "system:serviceaccount:mcp:agent";

    /// The objects as the admission request carries them.
    fn judge(
        old: &Value,
        new: &Value,
        username: &str,
        now: OffsetDateTime,
        mode: Mode,
    ) -> Result<Stamp, Refusal> {
        super::judge(
            &access_request(old)?,
            &access_request(new)?,
            username,
            now,
            mode,
        )
    }
    const NOW: OffsetDateTime = datetime!(2026-11-22 01:00:00 UTC);

    fn ar(state: Option<&str>, by: Option<&str>) -> Value {
        let mut v = json!({
            "apiVersion": "mcp-warden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "ar-1", "namespace": "mcp"},
            "spec": {"verb": "delete", "requester": {"serviceAccount": SA, "pod": "p"},
                     "expiresAt": "2026-11-22T01:05:00Z"},
        });
        if let Some(st) = state {
            v["status"] = json!({"state": st});
        }
        if let Some(b) = by {
            v["status"]["decidedBy"] = json!(b);
            v["status"]["decidedAt"] = json!("2026-11-22T00:59:00Z");
        }
        v
    }

    fn apply(obj: &Value, ops: &[Value]) -> Value {
        let mut o = obj.clone();
        let p: json_patch::Patch = serde_json::from_value(json!(ops)).unwrap();
        json_patch::patch(&mut o, &p).unwrap();
        o
    }

    #[test]
    fn approval_is_stamped_with_the_authenticated_user() {
        let old = ar(Some("Pending"), None);
        let mut new = ar(Some("Approved"), None);
        new["status"]["decidedBy"] = json!("somebody-else");
        let ops = judge(&old, &new, "alice", NOW, Mode::Mutate).unwrap();
        let stamped = apply(&new, &ops);
        assert_eq!(stamped["status"]["decidedBy"], "alice");
        assert_eq!(stamped["status"]["decidedAt"], "2026-11-22T01:00:00Z");
        judge(&old, &stamped, "alice", NOW, Mode::Validate).unwrap();
        // Without stamping, the typed value is refused.
        assert!(matches!(
            judge(&old, &new, "alice", NOW, Mode::Validate),
            Err(Refusal::ForgedDecider { .. })
        ));
        // A new object without status at all also gets stamped.
        let old = ar(None, None);
        let new = ar(Some("Denied"), None);
        let ops = judge(&old, &new, "bob", NOW, Mode::Mutate).unwrap();
        assert_eq!(apply(&new, &ops)["status"]["decidedBy"], "bob");
    }

    #[test]
    fn requester_cannot_decide_its_own_request() {
        let old = ar(Some("Pending"), None);
        for st in ["Approved", "Denied"] {
            let r = judge(&old, &ar(Some(st), None), SA, NOW, Mode::Mutate);
            assert!(
                matches!(r, Err(Refusal::SelfDecision { .. })),
                "{st}: {r:?}"
            );
        }
        // ...but it may expire it (the sidecar does on timeout) and use it.
        judge(&old, &ar(Some("Expired"), None), SA, NOW, Mode::Mutate).unwrap();
        let approved = ar(Some("Approved"), Some("alice"));
        let ops = judge(&approved, &ar(Some("Used"), None), SA, NOW, Mode::Mutate).unwrap();
        let used = apply(&ar(Some("Used"), None), &ops);
        assert_eq!(used["status"]["decidedBy"], "alice");
        judge(&approved, &used, SA, NOW, Mode::Validate).unwrap();
    }

    #[test]
    fn expired_requests_cannot_be_decided() {
        let old = ar(Some("Pending"), None);
        let later = datetime!(2026-11-22 01:05:00 UTC);
        let r = judge(
            &old,
            &ar(Some("Approved"), None),
            "alice",
            later,
            Mode::Mutate,
        );
        assert!(matches!(r, Err(Refusal::Expired { .. })), "{r:?}");
        let mut bad = old.clone();
        bad["spec"]["expiresAt"] = json!("tomorrow");
        let r = judge(
            &bad,
            &ar(Some("Approved"), None),
            "alice",
            NOW,
            Mode::Mutate,
        );
        assert!(matches!(r, Err(Refusal::Malformed(_))), "{r:?}");
    }

    #[test]
    fn only_forward_transitions() {
        let cases = [
            ("Approved", "Pending"),
            ("Approved", "Denied"),
            ("Denied", "Approved"),
            ("Expired", "Approved"),
            ("Used", "Approved"),
            ("Pending", "Used"),
            ("Used", "Pending"),
        ];
        for (from, to) in cases {
            let r = judge(
                &ar(Some(from), Some("alice")),
                &ar(Some(to), Some("alice")),
                "bob",
                NOW,
                Mode::Mutate,
            );
            assert!(
                matches!(r, Err(Refusal::Transition { .. })),
                "{from}->{to}: {r:?}"
            );
        }
        let r = judge(
            &ar(Some("Pending"), None),
            &ar(Some("Maybe"), None),
            "bob",
            NOW,
            Mode::Mutate,
        );
        assert!(matches!(r, Err(Refusal::UnknownState(_))));
    }

    #[test]
    fn the_preview_is_written_once_while_pending() {
        let with_preview = |state: &str, summary: &str| {
            let mut v = ar(Some(state), None);
            v["status"]["preview"] = json!({"code": 200, "kind": "Change", "summary": summary});
            v
        };
        // The sidecar (the requester) writes it while the request waits.
        let r = judge(
            &ar(None, None),
            &with_preview("Pending", "1 field: spec.replicas 3 → 0"),
            SA,
            NOW,
            Mode::Validate,
        );
        assert!(r.is_ok(), "{r:?}");
        // An approver cannot rewrite it, nor approve with a rewritten one.
        let old = with_preview("Pending", "1 field: spec.replicas 3 → 0");
        for (state, user) in [("Pending", "bob"), ("Approved", "bob")] {
            let r = judge(
                &old,
                &with_preview(state, "nothing changes"),
                user,
                NOW,
                Mode::Validate,
            );
            assert!(
                matches!(r, Err(Refusal::PreviewChanged { .. })),
                "{state} by {user}: {r:?}"
            );
        }
        // Nor anyone once it is decided, nor together with a decision.
        let decided = {
            let mut v = with_preview("Approved", "1 field: spec.replicas 3 → 0");
            v["status"]["decidedBy"] = json!("bob");
            v["status"]["decidedAt"] = json!("2026-11-22T00:59:00Z");
            v
        };
        let mut changed = decided.clone();
        changed["status"]["preview"]["summary"] = json!("nothing changes");
        let r = judge(&decided, &changed, SA, NOW, Mode::Validate);
        assert!(matches!(r, Err(Refusal::PreviewChanged { .. })), "{r:?}");
        let r = judge(
            &ar(Some("Pending"), None),
            &with_preview("Approved", "nothing changes"),
            "bob",
            NOW,
            Mode::Validate,
        );
        assert!(matches!(r, Err(Refusal::PreviewChanged { .. })), "{r:?}");
        // Approving without touching it is fine.
        let ok = judge(
            &old,
            &with_preview("Approved", "1 field: spec.replicas 3 → 0"),
            "bob",
            NOW,
            Mode::Mutate,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn decision_fields_cannot_be_rewritten_later() {
        let old = ar(Some("Approved"), Some("alice"));
        let new = ar(Some("Approved"), Some("mallory"));
        // Mutating puts the old values back; validating refuses the change.
        let ops = judge(&old, &new, "mallory", NOW, Mode::Mutate).unwrap();
        assert_eq!(apply(&new, &ops)["status"]["decidedBy"], "alice");
        assert_eq!(
            judge(&old, &new, "mallory", NOW, Mode::Validate),
            Err(Refusal::DecisionFieldsChanged)
        );
        // A Pending request cannot carry a decider.
        let ops = judge(
            &ar(Some("Pending"), None),
            &ar(Some("Pending"), Some("mallory")),
            "mallory",
            NOW,
            Mode::Mutate,
        )
        .unwrap();
        let fixed = apply(&ar(Some("Pending"), Some("mallory")), &ops);
        assert!(fixed["status"].get("decidedBy").is_none());
    }

    fn review(op: &str, sub: &str, user: Option<&str>, old: Value, new: Value) -> Vec<u8> {
        let mut r = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "operation": op, "subResource": sub,
            "resource": {"group": "mcp-warden.io", "version": "v1alpha1", "resource": "accessrequests"},
            "oldObject": old, "object": new}});
        if let Some(u) = user {
            r["request"]["userInfo"] = json!({"username": u});
        }
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn reviews_in_and_out() {
        let body = review(
            "UPDATE",
            "status",
            Some("alice"),
            ar(Some("Pending"), None),
            ar(Some("Approved"), None),
        );
        let (code, v) = answer(&body, Mode::Mutate, NOW, grant::DEFAULT_MAX_GRANT);
        assert_eq!(code, 200);
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            apply(&ar(Some("Approved"), None), &ops)["status"]["decidedBy"],
            "alice"
        );

        let body = review(
            "UPDATE",
            "status",
            Some(SA),
            ar(Some("Pending"), None),
            ar(Some("Approved"), None),
        );
        let (_, v) = answer(&body, Mode::Validate, NOW, grant::DEFAULT_MAX_GRANT);
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot decide")
        );

        let body = review(
            "UPDATE",
            "status",
            None,
            ar(Some("Pending"), None),
            ar(Some("Approved"), None),
        );
        assert_eq!(
            answer(&body, Mode::Mutate, NOW, grant::DEFAULT_MAX_GRANT).1["response"]["allowed"],
            false
        );
        // Other operations pass untouched.
        let body = review("CREATE", "", Some("x"), json!(null), ar(None, None));
        let (_, v) = answer(&body, Mode::Mutate, NOW, grant::DEFAULT_MAX_GRANT);
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none());
        // Garbage is a 400 Status.
        let (code, v) = answer(b"[1,2", Mode::Mutate, NOW, grant::DEFAULT_MAX_GRANT);
        assert_eq!(code, 400);
        assert_eq!(v["kind"], "Status");
    }

    fn grant_ar(scope: Value, duration: &str, state: Option<&str>) -> Value {
        let mut v = ar(state, None);
        v["spec"] = json!({"requester": {"serviceAccount": SA}, "expiresAt": "2026-11-22T01:05:00Z",
            "rule": "deletes", "grant": {"rule": "deletes", "duration": duration}});
        for (k, val) in scope.as_object().unwrap() {
            v["spec"]["grant"][k] = val.clone();
        }
        v
    }

    fn review_with_extra(user: &str, pod: Option<&str>, old: Value, new: Value) -> Vec<u8> {
        let mut r: Value =
            serde_json::from_slice(&review("UPDATE", "status", Some(user), old, new)).unwrap();
        if let Some(p) = pod {
            r["request"]["userInfo"]["extra"] = json!({USER_EXTRA_POD_NAME: [p]});
        }
        serde_json::to_vec(&r).unwrap()
    }

    fn refusal(body: &[u8], mode: Mode, max: Duration) -> Option<String> {
        let (_, v) = answer(body, mode, NOW, max);
        if v["response"]["allowed"] == true {
            return None;
        }
        Some(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    #[test]
    fn grants_are_approved_by_someone_else_within_the_cap() {
        let max = Duration::from_secs(3600);
        let sa = json!({"serviceAccount": "agent"});
        let approve = |scope: &Value, d: &str| {
            (
                grant_ar(scope.clone(), d, Some("Pending")),
                grant_ar(scope.clone(), d, Some("Approved")),
            )
        };
        // alice grants 30m: stamped like any approval.
        let (old, new) = approve(&sa, "30m");
        let body = review_with_extra("alice", None, old.clone(), new.clone());
        assert_eq!(refusal(&body, Mode::Mutate, max), None);
        let ops = super::judge(
            &access_request(&old).unwrap(),
            &access_request(&new).unwrap(),
            "alice",
            NOW,
            Mode::Mutate,
        )
        .unwrap();
        let stamped = apply(&new, &ops);
        let body = review_with_extra("alice", None, old.clone(), stamped.clone());
        assert_eq!(refusal(&body, Mode::Validate, max), None);
        // The ServiceAccount it is for cannot grant itself.
        let body = review_with_extra(SA, None, old.clone(), new.clone());
        let m = refusal(&body, Mode::Mutate, max).unwrap();
        assert!(m.contains("cannot"), "{m}");
        // Nor can any token bound to the granted pod.
        let pod = json!({"pod": "web-0"});
        let (pold, pnew) = approve(&pod, "30m");
        let other = "system:serviceaccount:mcp:other";
        let m = refusal(
            &review_with_extra(other, Some("web-0"), pold.clone(), pnew.clone()),
            Mode::Mutate,
            max,
        )
        .unwrap();
        assert!(m.contains("is who this grant is for"), "{m}");
        assert_eq!(
            refusal(
                &review_with_extra(other, Some("web-1"), pold, pnew),
                Mode::Mutate,
                max
            ),
            None
        );
        // Over the cap: refused, naming both.
        let (lold, lnew) = approve(&sa, "2h");
        let m = refusal(
            &review_with_extra("alice", None, lold, lnew),
            Mode::Mutate,
            max,
        )
        .unwrap();
        assert!(
            m.contains("a grant of 2h is longer than the allowed 1h"),
            "{m}"
        );
        // Malformed: no scope.
        let (bold, bnew) = approve(&json!({}), "5m");
        let m = refusal(
            &review_with_extra("alice", None, bold, bnew),
            Mode::Mutate,
            max,
        )
        .unwrap();
        assert!(
            m.contains("exactly one of a pod and a ServiceAccount"),
            "{m}"
        );
        // A typed decidedAt would move the window: the validating pass
        // wants the admission time.
        let mut forged = stamped.clone();
        forged["status"]["decidedAt"] = json!("2026-11-22T05:00:00Z");
        let m = refusal(
            &review_with_extra("alice", None, old.clone(), forged),
            Mode::Validate,
            max,
        )
        .unwrap();
        assert!(m.contains("window starts there"), "{m}");
        // Revoking (Approved -> Expired) is not an approval: no grant checks.
        let approved = apply(&grant_ar(sa.clone(), "2h", Some("Approved")), &[]);
        let expired = grant_ar(sa, "2h", Some("Expired"));
        assert_eq!(
            refusal(
                &review_with_extra("bob", None, approved, expired),
                Mode::Mutate,
                max
            ),
            None
        );
    }
}
