//! The approval's preview: what a held create, update, patch or delete
//! would do, asked of the server before anybody is asked to approve it.
//!
//! Before the AccessRequest is created, the same request goes to the server
//! again with `dryRun=All`: same method, path and query (plus
//! `dryRun=All`), same body and `Content-Type`, with the sidecar's upstream
//! token (the one the request itself would be forwarded with), through the
//! approvals' kube client. Then:
//! - the server refuses it (RBAC, validation, conflict, not found): the
//!   request is answered at once with the server's `Status`, masked with the
//!   policy's masker (and the request body's masked values scrubbed from
//!   it), and no AccessRequest is created ([`Previewed::Refused`]);
//! - it would succeed: the [`Preview`] for `status.preview`
//!   ([`Previewed::Ready`]): for an update or patch the field diff between
//!   the live object (a GET of the request's path, before the dry run) and
//!   the dry-run result, for a create the fields set, for a delete what
//!   would be deleted, every value through the same masker
//!   ([`mcp_warden_shared::preview`]). The live object's `resourceVersion`
//!   is kept: after the approval, [`still_current`] compares it with the
//!   object's resourceVersion then, so an approval only lets through what
//!   the approver saw.
//!
//! Bodies read here are only compared and masked: never logged, recorded
//! or passed to the app.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Limited};
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::mask::{MaskContext, Masker, ScrubSet};
use mcp_warden_shared::preview::{
    self, Preview, PreviewKind, hidden_strings, object_name, refusal_status, resource_version,
};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::Value;

use super::CALL_TIMEOUT;
use crate::hooks::RequestContext;
use crate::recording::hook::DEFAULT_MAX_BODY_BYTES;

/// Bound on an answer read here (the live object, the dry-run result).
pub const MAX_ANSWER_BYTES: usize = DEFAULT_MAX_BODY_BYTES;

/// Why a call of the preview failed (the preview then says so in its note;
/// after an approval, the request is refused).
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{method} {path}: {why}")]
    Call {
        method: Method,
        path: String,
        why: String,
    },
    #[error("{method} {path}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { method: Method, path: String },
    #[error("{method} {path}: HTTP {code}")]
    Status {
        method: Method,
        path: String,
        code: u16,
    },
    #[error("{method} {path}: the answer is not JSON")]
    NotJson { method: Method, path: String },
}

/// How the dry run went.
#[derive(Debug)]
pub enum Previewed {
    /// The server would refuse the request: answer it with this (masked).
    Refused(Status),
    /// The preview for the AccessRequest.
    Ready(Preview),
}

/// Verbs that change something, for which the server's dry run says what.
pub fn applies(attrs: &RequestAttributes) -> bool {
    attrs.is_resource_request
        && matches!(
            attrs.verb.as_str(),
            "create" | "update" | "patch" | "delete"
        )
        && !(attrs.verb == "delete" && attrs.name.is_empty())
}

/// The path without its query: what a GET of the object reads.
fn object_path(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap_or(path_and_query)
}

/// The request's path and query with `dryRun=All` added.
pub fn dry_run_path(path_and_query: &str) -> String {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{path_and_query}{sep}dryRun=All")
}

/// One bounded call: the code and the answer's bytes.
async fn send(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), PreviewError> {
    let call_error = |why: String| PreviewError::Call {
        method: method.clone(),
        path: object_path(path).to_string(),
        why,
    };
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::ACCEPT, "application/json");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req
        .body(kube::client::Body::from(body))
        .map_err(|e| call_error(e.to_string()))?;
    let call = async {
        let resp = client
            .send(req)
            .await
            .map_err(|e| call_error(e.to_string()))?;
        let code = resp.status().as_u16();
        // Read (bounded) even on an error, so the connection stays usable.
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| call_error(e.to_string()))?
            .to_bytes();
        Ok((code, bytes))
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(PreviewError::Timeout {
            method,
            path: object_path(path).to_string(),
        }),
    }
}

/// The live object at the request's path, as JSON.
pub async fn live_object(
    client: &kube::Client,
    path_and_query: &str,
) -> Result<Value, PreviewError> {
    let path = object_path(path_and_query);
    let (code, bytes) = send(client, Method::GET, path, None, Bytes::new()).await?;
    if code != 200 {
        return Err(PreviewError::Status {
            method: Method::GET,
            path: path.to_string(),
            code,
        });
    }
    serde_json::from_slice(&bytes).map_err(|_| PreviewError::NotJson {
        method: Method::GET,
        path: path.to_string(),
    })
}

/// The masked copy of `v`.
fn masked(masker: &Masker, attrs: &RequestAttributes, v: &Value) -> Value {
    let mut m = v.clone();
    masker.mask_value(&MaskContext::from_attrs(attrs), &mut m);
    m
}

/// Asks the server what the held request would do (see the module docs).
pub async fn run(
    client: &kube::Client,
    ctx: &RequestContext,
    attrs: &RequestAttributes,
    masker: &Masker,
) -> Previewed {
    let body = ctx.bodies.as_deref().and_then(|b| b.request.clone());
    let object = ctx.bodies.as_deref().and_then(|b| b.object.as_ref());
    let has_body = matches!(attrs.verb.as_str(), "create" | "update" | "patch");
    if has_body && body.is_none() {
        return Previewed::Ready(note_only(
            "the request body was not read, so it could not be previewed".into(),
        ));
    }
    // 1. The live object, before the dry run: its resourceVersion is what
    // the approval is checked against.
    let live = if attrs.name.is_empty() || attrs.verb == "create" {
        None
    } else {
        Some(live_object(client, &ctx.path_and_query).await)
    };
    // 2. The same request, dry run.
    let (bytes, content_type) = body.map(|b| (b.bytes, b.content_type)).unwrap_or_default();
    let answer = send(
        client,
        ctx.method.clone(),
        &dry_run_path(&ctx.path_and_query),
        content_type.as_deref(),
        bytes,
    )
    .await;
    let (code, answer) = match answer {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, error = %e, "the dry run of the held request failed");
            return Previewed::Ready(note_only(format!("the dry run failed: {e}")));
        }
    };
    let result: Option<Value> = serde_json::from_slice(&answer).ok();
    if code >= 300 {
        return Previewed::Refused(refusal(
            masker,
            attrs,
            object,
            code,
            result.as_ref().unwrap_or(&Value::Null),
        ));
    }
    // 3. What it would do.
    let result = preview::with_zero_values(&result.unwrap_or(Value::Null));
    let live = live.map(|l| l.map(|l| preview::with_zero_values(&l)));
    let rv = match &live {
        Some(Ok(l)) => resource_version(l),
        _ => String::new(),
    };
    let mut p = match (attrs.verb.as_str(), live) {
        ("delete", live) => {
            let named = match &live {
                Some(Ok(l)) => object_name(l),
                _ => object_name(&result),
            };
            Preview::new(PreviewKind::Delete, code, named, Vec::new())
        }
        ("create", _) | (_, Some(Err(PreviewError::Status { code: 404, .. }))) => {
            // A create, or an apply that would create the object.
            let changes = preview::fields_set(&result, &masked(masker, attrs, &result));
            Preview::new(PreviewKind::Create, code, object_name(&result), changes)
        }
        (_, Some(Ok(l))) => {
            let changes = preview::diff(
                &l,
                &result,
                &masked(masker, attrs, &l),
                &masked(masker, attrs, &result),
            );
            Preview::new(PreviewKind::Change, code, object_name(&l), changes)
        }
        (_, Some(Err(e))) => {
            let mut p = Preview::new(PreviewKind::Change, code, object_name(&result), Vec::new());
            p.note = format!("the live object was not readable ({e}): no field diff");
            p.summary = format!("dry run HTTP {code}; no field diff (live object not readable)");
            p
        }
        (_, None) => Preview::new(PreviewKind::Change, code, object_name(&result), Vec::new()),
    };
    p.resource_version = rv;
    Previewed::Ready(p)
}

fn note_only(note: String) -> Preview {
    Preview {
        summary: "no preview".into(),
        note,
        ..Default::default()
    }
}

/// The server's refusal as the app gets it: masked like any response, and
/// with the masked values of the request body scrubbed (a validation
/// message may quote what was sent).
fn refusal(
    masker: &Masker,
    attrs: &RequestAttributes,
    object: Option<&Value>,
    code: u16,
    answer: &Value,
) -> Status {
    let mut ctx = MaskContext::from_attrs(attrs);
    if let Some(obj) = object {
        let mut hidden = hidden_strings(obj, &masked(masker, attrs, obj));
        let decoded: Vec<String> = hidden
            .iter()
            .filter_map(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
            .filter_map(|d| String::from_utf8(d).ok())
            .collect();
        hidden.extend(decoded);
        if !hidden.is_empty() {
            ctx.scrub = Some(Arc::new(ScrubSet::new(hidden)));
        }
    }
    let mut v = answer.clone();
    masker.mask_value(&ctx, &mut v);
    refusal_status(code, &v)
}

/// After an approval: whether the live object is still at the
/// resourceVersion the preview saw. `Ok(())` when it is (or when the
/// preview saw none: there is nothing to hold the approval to); otherwise
/// the 409 `Status` saying the object changed since the approver saw it.
pub async fn still_current(
    client: &kube::Client,
    attrs: &RequestAttributes,
    path_and_query: &str,
    preview: &Preview,
    access_request: &str,
) -> Result<(), Status> {
    if preview.resource_version.is_empty() {
        return Ok(());
    }
    let conflict = |now: String| {
        Status::new(
            Reason::Conflict,
            format!(
                "mcp-warden: {} changed since the approver saw the preview of accessrequests {access_request:?} (resourceVersion {} then, {now}); the approved request was not sent, ask again",
                mcp_warden_shared::status::forbidden_subject(attrs)
                    .trim_end_matches(" is forbidden")
                    .trim_end_matches("forbidden"),
                preview.resource_version,
            ),
        )
        .with_details(&attrs.resource, &attrs.api_group, &attrs.name)
    };
    match live_object(client, path_and_query).await {
        Ok(live) => {
            let now = resource_version(&live);
            if now == preview.resource_version {
                Ok(())
            } else {
                Err(conflict(format!("{now} now")))
            }
        }
        Err(PreviewError::Status { code: 404, .. }) => Err(conflict("now gone".into())),
        Err(e) => Err(conflict(format!("not readable now: {e}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mcp_warden_shared::attrs::parse_request;
    use serde_json::json;

    #[test]
    fn only_changes_are_previewed_and_the_dry_run_keeps_the_query() {
        for (m, p, yes) in [
            ("DELETE", "/api/v1/namespaces/n/secrets/s", true),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/n/deployments/d/scale",
                true,
            ),
            ("POST", "/api/v1/namespaces/n/configmaps", true),
            ("PUT", "/api/v1/namespaces/n/configmaps/c", true),
            ("GET", "/api/v1/namespaces/n/secrets/s", false),
            ("DELETE", "/api/v1/namespaces/n/configmaps", false),
            ("GET", "/version", false),
        ] {
            assert_eq!(applies(&parse_request(m, p).unwrap()), yes, "{m} {p}");
        }
        assert_eq!(
            dry_run_path("/api/v1/namespaces/n/configmaps"),
            "/api/v1/namespaces/n/configmaps?dryRun=All"
        );
        assert_eq!(
            dry_run_path("/apis/apps/v1/namespaces/n/deployments/d?fieldManager=kubectl"),
            "/apis/apps/v1/namespaces/n/deployments/d?fieldManager=kubectl&dryRun=All"
        );
        assert_eq!(object_path("/a/b?x=1"), "/a/b");
    }

    #[test]
    fn a_refusal_never_quotes_a_masked_value() {
        let masker = mcp_warden_shared::mask::MaskingConfig::embedded_default()
            .compile()
            .unwrap();
        let attrs = parse_request("PATCH", "/api/v1/namespaces/n/secrets/s").unwrap();
        let sent = json!({"data": {"password": "c3VwZXItc2VjcmV0LXZhbHVl"}});
        let answer = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
            "reason": "Invalid",
            "message": "Secret \"s\" is invalid: data[password]: Invalid value: \"c3VwZXItc2VjcmV0LXZhbHVl\" (super-secret-value)"});
        let s = refusal(&masker, &attrs, Some(&sent), 422, &answer);
        assert_eq!(s.code(), 422);
        assert_eq!(s.reason, Reason::Invalid);
        assert!(
            s.message.starts_with("Secret \"s\" is invalid"),
            "{}",
            s.message
        );
        assert!(
            !s.message.contains("c3VwZXItc2VjcmV0LXZhbHVl"),
            "{}",
            s.message
        );
        assert!(!s.message.contains("super-secret-value"), "{}", s.message);
    }
}
