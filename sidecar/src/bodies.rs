//! The bodies a `when:` condition reads, gathered before the decision and
//! only when the decide hook asks for them ([`DecideHook::bodies_needed`]):
//!
//! - `object`: the request body of a create, update or patch, read whole
//!   (at most [`DEFAULT_MAX_BODY_BYTES`], else the same 413 as everywhere)
//!   and decoded by [`mcp_warden_shared::body`] (JSON, YAML, protobuf); the
//!   same bytes are then forwarded and recorded, and kept as they came (with
//!   their `Content-Type`) for an approval's dry run. A body that does not
//!   decode is `None`.
//! - `oldObject`: the live object of an update, patch or delete of a named
//!   object, fetched by a GET of the request's path as JSON with the
//!   sidecar's own token, bounded by [`OLD_OBJECT_MAX_BYTES`] and
//!   [`OLD_OBJECT_TIMEOUT`]. Not found, refused, too large, too slow or not
//!   JSON is `None`. The answer is only evaluated: never logged, recorded
//!   or passed to the app.
//!
//! `None` is CEL `null`, on which a condition that reads into it fails, so
//! deny and approve rules match (fail closed). Every other request streams
//! as before: nothing is read ahead of the decision.
//!
//! [`DecideHook::bodies_needed`]: crate::hooks::DecideHook::bodies_needed

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use mcp_warden_shared::body;
use mcp_warden_shared::policy::{has_object, has_old_object};

use crate::error::Refusal;
use crate::hooks::{DecisionBodies, ProxyBody, RequestContext, full};
use crate::proxy::ProxyState;
use crate::recording::hook::{DEFAULT_MAX_BODY_BYTES, collect_limited};

/// Bound on the GET of the live object, from sending to the last byte.
pub const OLD_OBJECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the live object's size (kube-apiserver's own request limit).
pub const OLD_OBJECT_MAX_BYTES: usize = DEFAULT_MAX_BODY_BYTES;

/// Why the live object was not fetched (logged, then `oldObject` is null).
#[derive(Debug, thiserror::Error)]
pub enum OldObjectError {
    /// The request names no object.
    #[error("the request names no object")]
    NoName,
    /// The upstream URL could not be built.
    #[error("building the URL: {0}")]
    Url(String),
    /// The sidecar's token is not readable.
    #[error("the upstream token is not readable: {0}")]
    Token(String),
    /// The GET failed (connection, TLS) or the body broke or was too large.
    #[error("GET {path}: {why}")]
    Get { path: String, why: String },
    /// The GET took longer than [`OLD_OBJECT_TIMEOUT`].
    #[error("GET {path}: no answer within {OLD_OBJECT_TIMEOUT:?}")]
    Timeout { path: String },
    /// The upstream answered with something other than 200.
    #[error("GET {path}: HTTP {code}")]
    Status { path: String, code: u16 },
    /// The answer is not JSON.
    #[error("GET {path}: the answer is not JSON: {why}")]
    NotJson { path: String, why: String },
}

/// Step 2b of the pipeline: when the decide hook asks for bodies, read the
/// request body and/or fetch the live object into `ctx.bodies`, and give
/// back the request (with the same body bytes when they were read).
pub(crate) async fn read_for_decision(
    state: &ProxyState,
    ctx: &mut RequestContext,
    req: Request<ProxyBody>,
) -> Result<Request<ProxyBody>, Refusal> {
    let Some(attrs) = ctx.attrs.as_ref() else {
        return Ok(req);
    };
    if ctx.is_upgrade {
        return Ok(req);
    }
    let need = state.hooks.decide.bodies_needed(ctx);
    let want_object = need.object && has_object(&attrs.verb);
    let want_old = need.old_object && has_old_object(&attrs.verb);
    if !want_object && !want_old {
        return Ok(req);
    }
    // Boxed: reading is the rare case, and its future inline would make
    // every request's future (copied whole per request) that much larger.
    Box::pin(read_bodies(state, ctx, req, want_object, want_old)).await
}

/// The reading part of [`read_for_decision`].
async fn read_bodies(
    state: &ProxyState,
    ctx: &mut RequestContext,
    req: Request<ProxyBody>,
    want_object: bool,
    want_old: bool,
) -> Result<Request<ProxyBody>, Refusal> {
    let mut bodies = DecisionBodies::default();
    let req = if want_object {
        let (parts, body) = req.into_parts();
        let bytes = collect_limited(body, DEFAULT_MAX_BODY_BYTES).await?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        bodies.request = Some(crate::hooks::RequestBody {
            bytes: bytes.clone(),
            content_type: content_type.map(str::to_string),
        });
        match body::to_json(content_type, &bytes) {
            Ok(v) => bodies.object = Some(v),
            Err(e) => {
                tracing::info!(request_id = %ctx.request_id, content_type = content_type.unwrap_or(""), why = undecoded(&e), "request body not decoded: object is null for the policy's conditions")
            }
        }
        Request::from_parts(parts, full(bytes))
    } else {
        req
    };
    if want_old {
        match fetch_old_object(state, ctx).await {
            Ok(v) => bodies.old_object = Some(v),
            Err(e) => {
                tracing::info!(request_id = %ctx.request_id, error = %e, "live object not fetched: oldObject is null for the policy's conditions")
            }
        }
    }
    ctx.bodies = Some(Arc::new(bodies));
    Ok(req)
}

/// Why a body did not decode, without the parser's message (a YAML or
/// protobuf error may quote the body).
fn undecoded(e: &body::BodyError) -> &'static str {
    match e {
        body::BodyError::Json(_) => "the JSON does not parse",
        body::BodyError::Yaml(_) => "the YAML does not parse",
        body::BodyError::Protobuf(_) => {
            "a protobuf body that is malformed or of a kind not decoded"
        }
        body::BodyError::UnknownMediaType(_) => "a media type not decoded",
    }
}

/// GET of the request's path (without its query: a delete's `dryRun` or
/// `gracePeriodSeconds` would not be a GET's) as JSON, with the sidecar's
/// token, bounded in size and time.
async fn fetch_old_object(
    state: &ProxyState,
    ctx: &RequestContext,
) -> Result<serde_json::Value, OldObjectError> {
    if ctx.attrs.as_ref().is_none_or(|a| a.name.is_empty()) {
        return Err(OldObjectError::NoName);
    }
    let path = ctx
        .path_and_query
        .split('?')
        .next()
        .unwrap_or("")
        .to_string();
    let uri = state
        .upstream
        .uri_for(&path)
        .map_err(|e| OldObjectError::Url(e.to_string()))?;
    let token = state
        .token
        .header()
        .map_err(|e| OldObjectError::Token(e.to_string()))?;
    let mut get = Request::new(full(bytes::Bytes::new()));
    *get.uri_mut() = uri;
    let headers = get.headers_mut();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(header::AUTHORIZATION, token);
    // Names itself in the server's audit log, with the app's client.
    let ua = ctx
        .user_agent
        .as_deref()
        .and_then(|u| {
            HeaderValue::from_str(&format!("mcp-warden-sidecar (oldObject for {u})")).ok()
        })
        .unwrap_or(HeaderValue::from_static("mcp-warden-sidecar (oldObject)"));
    headers.insert(header::USER_AGENT, ua);
    let fetch = async {
        let resp = state
            .upstream
            .send(get, false)
            .await
            .map_err(|e| OldObjectError::Get {
                path: path.clone(),
                why: e.to_string(),
            })?;
        let code = resp.status();
        // Read (bounded) even on an error, so the pooled connection stays usable.
        let bytes = Limited::new(resp.into_body(), OLD_OBJECT_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| OldObjectError::Get {
                path: path.clone(),
                why: e.to_string(),
            })?
            .to_bytes();
        if code != StatusCode::OK {
            return Err(OldObjectError::Status {
                path: path.clone(),
                code: code.as_u16(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| OldObjectError::NotJson {
            path: path.clone(),
            why: e.to_string(),
        })
    };
    match tokio::time::timeout(OLD_OBJECT_TIMEOUT, fetch).await {
        Ok(r) => r,
        Err(_) => Err(OldObjectError::Timeout { path }),
    }
}
