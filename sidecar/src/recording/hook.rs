//! [`RecordingHook`]: the proxy's [`RecordHook`] backed by the [`Recorder`].
//!
//! What it does at each hook point (the integration contract):
//! - `request` (after the decision, before forwarding):
//!   1. fail-closed and `Recorder::preflight()` false → `Err(503 Status)`:
//!      the request is not forwarded;
//!   2. when the level records requests, a mutating request's body is read
//!      (at most `max_body_bytes`, else `413`), masked with the masking
//!      engine and kept for `requestObject`; the same bytes go upstream;
//!   3. a mutating request's `RequestReceived` event is made durable;
//!      if that fails in fail-closed mode → `Err(503 Status)`;
//!   4. the request's [`RequestRecord`] (its event, the masked request
//!      body) is returned; the pipeline keeps it with the request and the
//!      steps below are its methods.
//! - `response` (after masking): long-running requests (watch, follow logs,
//!   upgrades) record `ResponseStarted` at once; the body is passed through
//!   untouched while up to `max_body_bytes` of it are kept, and when it ends
//!   (the end held back until the event is durable) or is dropped
//!   `ResponseComplete` is recorded with the response status
//!   (`status`/`reason`/`message` from a `Status` body), the masked
//!   `responseObject` as the level asks, and `mcp-warden.io/masked`.
//! - `refused` (answered by the sidecar itself): `ResponseComplete` with the
//!   refusal's `Status`.
//! - a request dropped before either (the app went away while it was
//!   forwarded): `ResponseComplete` with code 499 saying so, since the
//!   upstream may have acted on it.
//! - `tunnel_tap` (exec/attach over WebSocket): the session as an asciicast,
//!   spooled when the tunnel closes.
//!
//! Events after forwarding cannot stop the request any more; a failure to
//! record them is counted in `events_lost`.

use std::collections::BTreeMap;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::audit::{
    self, Event, EventView, Level, MicroTime, ResponseStatus, Stage, UserInfo,
};
use mcp_warden_shared::body;
use mcp_warden_shared::mask::MaskContext;
use mcp_warden_shared::status::Status;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Recorder;
use super::asciicast::{self, SessionMeta, SessionTap};
use crate::error::Refusal;
use crate::hooks::{
    BoxError, ProxyBody, RecordHook, RecordStart, RequestContext, RequestRecord, TunnelIo,
    TunnelTap, boxed, full,
};
use crate::mask_body::{MaskCount, MaskerSource};

/// The audit level in force (from the policy's `recording.level`).
pub type LevelSource = Arc<dyn Fn() -> Level + Send + Sync>;
/// The hash of the policy in force.
pub type PolicyHashSource = Arc<dyn Fn() -> String + Send + Sync>;
/// Annotations added to a request's events when it is received (the MCP
/// tool calls in flight then, `crate::mcp::ToolCalls::link_annotations`).
pub type AnnotationSource = Arc<dyn Fn() -> audit::Annotations + Send + Sync>;

/// kube-apiserver's limit on request bodies; also what we keep of a response.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 << 20;
/// The code recorded for a request whose app went away before its
/// response (nginx's "client closed request"; Kubernetes has none).
pub const CLIENT_GONE_CODE: u16 = 499;

/// The recording hook (see the module docs).
pub struct RecordingHook {
    recorder: Recorder,
    /// Shared with every event it records (see [`Event::user`]).
    user: Arc<UserInfo>,
    masker: MaskerSource,
    level: LevelSource,
    policy_hash: PolicyHashSource,
    max_body_bytes: usize,
    links: Option<AnnotationSource>,
}

impl std::fmt::Debug for RecordingHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingHook").finish_non_exhaustive()
    }
}

fn micro(t: SystemTime) -> MicroTime {
    MicroTime::from_unix_micros(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0),
    )
}

/// Encode `event` now and record it on the current runtime if there is one
/// (Drop may run outside).
fn spawn_record(recorder: Recorder, event: &EventView<'_>) {
    let Ok(h) = tokio::runtime::Handle::try_current() else {
        recorder.stats().events_lost.inc();
        tracing::error!(audit_id = %event.audit_id, "no runtime to record the event on");
        return;
    };
    let json = match event.to_json_vec() {
        Ok(json) => json,
        Err(e) => {
            let _ = recorder.encode_failed(event.audit_id, e);
            return;
        }
    };
    let audit_id = event.audit_id.to_string();
    h.spawn(async move {
        let _ = recorder.record_json(&audit_id, json).await;
    });
}

impl RecordingHook {
    /// A hook recording as `user` (the pod's service account, from its
    /// token), masking request bodies with `masker`.
    pub fn new(
        recorder: Recorder,
        user: UserInfo,
        masker: MaskerSource,
        level: LevelSource,
        policy_hash: PolicyHashSource,
    ) -> Self {
        Self {
            recorder,
            user: Arc::new(user),
            masker,
            level,
            policy_hash,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            links: None,
        }
    }

    /// Adds `links()` to the annotations of every request's events, taken
    /// when the request is received.
    pub fn with_links(mut self, links: AnnotationSource) -> Self {
        self.links = Some(links);
        self
    }

    /// Change the request/response body limit.
    pub fn with_max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The `RequestReceived` event of a request.
    pub fn base_event(&self, ctx: &RequestContext, level: Level) -> Event {
        let fallback;
        let attrs = match &ctx.attrs {
            Some(a) => a,
            None => {
                fallback = RequestAttributes {
                    verb: ctx.method.as_str().to_ascii_lowercase(),
                    path: ctx
                        .path_and_query
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    ..Default::default()
                };
                &fallback
            }
        };
        let mut id_buf = uuid::Uuid::encode_buffer();
        let audit_id: &str = ctx.request_id.hyphenated().encode_lower(&mut id_buf);
        let decision = match &ctx.decision {
            Some(d) => audit::DecisionInfo {
                decision: d.action.as_str().to_string(),
                rule: d.rule.clone().unwrap_or_default(),
                policy_hash: (self.policy_hash)(),
                enforced: d.enforced,
            },
            None => audit::DecisionInfo {
                decision: String::new(),
                rule: String::new(),
                policy_hash: (self.policy_hash)(),
                enforced: true,
            },
        };
        let info = audit::RequestInfo {
            audit_id,
            request_uri: &ctx.path_and_query,
            attrs,
            user: self.user.clone(),
            impersonated_user: match &ctx.end_user {
                Some(u) => Some(UserInfo::from_end_user(u)),
                None => UserInfo::from_impersonation(&ctx.impersonation),
            },
            source_ips: vec![audit::source_ip(ctx.peer.ip())],
            user_agent: ctx.user_agent.as_deref().unwrap_or(""),
            level,
            received: micro(ctx.received_at),
            decision,
            pod: self.recorder.pod(),
            cluster: self.recorder.cluster_name(),
        };
        let mut e = Event::from_request(info);
        if let Some(a) = ctx.decision.as_ref().and_then(|d| d.approval.as_ref()) {
            e.annotations
                .insert(crate::approval::ANN_APPROVED_BY.into(), a.by.clone());
            e.annotations.insert(
                crate::approval::ANN_ACCESS_REQUEST.into(),
                a.access_request.clone(),
            );
            if a.grant {
                e.annotations
                    .insert(crate::approval::ANN_GRANT.into(), a.access_request.clone());
            }
        }
        if let Some(p) = ctx.decision.as_ref().and_then(|d| d.preview) {
            e.annotations.insert(
                mcp_warden_shared::contract::ANN_PREVIEW.into(),
                p.to_string(),
            );
        }
        if let Some(u) = &ctx.end_user {
            e.annotations
                .insert(audit::ANN_END_USER_ISSUER.into(), u.issuer.clone());
        }
        if let Some(links) = &self.links {
            e.annotations.extend(links());
        }
        if ctx.decision.is_none() {
            e.annotations.remove(audit::ANN_DECISION);
            e.annotations.remove(audit::ANN_RULE);
        }
        e
    }

    /// The written body as the record keeps it: decoded whatever its
    /// encoding (JSON, YAML, Kubernetes protobuf), masked, with the object's
    /// name; or, when it cannot be read, why (never the raw bytes).
    fn mask_request(
        &self,
        attrs: Option<&RequestAttributes>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> RequestBody {
        let Some(attrs) = attrs else {
            return RequestBody::default();
        };
        let ctx = MaskContext::from_attrs(attrs);
        let masker = (self.masker)();
        let not_json = |e: &dyn std::fmt::Display| format!("the JSON body does not parse: {e}");
        let decoded = match body::encoding(content_type, body) {
            // JSON keeps the strict path (duplicate keys are masked too); the
            // masked bytes are recorded as they are, never parsed again into
            // a tree.
            body::Encoding::Json => masker
                .mask_json_bytes(&ctx, body)
                .map_err(|e| not_json(&e))
                .and_then(|(masked, n)| {
                    let raw =
                        audit::raw_json(&masked).ok_or_else(|| not_json(&"not one JSON value"))?;
                    Ok((object_name(raw.get()), raw.into_owned(), n))
                }),
            _ => body::to_json(content_type, body)
                .map_err(|e| e.to_string())
                .and_then(|mut v| {
                    let n = masker.mask_value(&ctx, &mut v);
                    let name = v
                        .pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .map(str::to_string);
                    serde_json::value::to_raw_value(&v)
                        .map(|raw| (name, raw, n))
                        .map_err(|e| e.to_string())
                }),
        };
        match decoded {
            Ok((name, raw, n)) => RequestBody {
                name,
                object: Some(raw),
                masked: n as u64,
                omitted: None,
            },
            // Not readable: kept out of the record rather than recorded
            // unmasked; a protobuf envelope still names the object.
            Err(why) => RequestBody {
                name: body::object_name(content_type, body),
                object: None,
                masked: 0,
                omitted: Some(why),
            },
        }
    }
}

/// `metadata.name` of a JSON object, read without building the object.
fn object_name(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        metadata: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        name: Option<std::borrow::Cow<'a, str>>,
    }
    let named: Named<'_> = serde_json::from_str(json).ok()?;
    named.metadata?.name.map(std::borrow::Cow::into_owned)
}

/// A written body as the record keeps it (see `RecordingHook::mask_request`).
#[derive(Default)]
struct RequestBody {
    /// Masked, raw JSON.
    object: Option<Box<RawValue>>,
    masked: u64,
    name: Option<String>,
    omitted: Option<String>,
}

impl RecordingHook {
    /// For an exec/attach WebSocket upgrade whose 101 response (headers
    /// given) negotiated a `channel.k8s.io` subprotocol: a tap to wrap the
    /// app's side of the tunnel with. `None` for anything else (port-forward,
    /// SPDY — not decoded).
    pub fn session_tap(
        ctx: &RequestContext,
        upgrade_response_headers: &http::HeaderMap,
    ) -> Option<SessionTap> {
        let attrs = ctx.attrs.as_ref()?;
        if !matches!(attrs.subresource.as_str(), "exec" | "attach") {
            return None;
        }
        let proto = upgrade_response_headers
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())?
            .trim()
            .to_string();
        if !proto.contains("channel.k8s.io") {
            return None;
        }
        let query = ctx
            .path_and_query
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("");
        let (command, container) = asciicast::exec_query(query);
        let audit_id = ctx.request_id.to_string();
        let meta = SessionMeta {
            title: asciicast::session_title(
                &audit_id,
                &attrs.subresource,
                &attrs.namespace,
                &attrs.name,
                container.as_deref(),
                &command,
            ),
            audit_id,
            started_unix_secs: ctx
                .received_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            env: BTreeMap::from([("TERM".to_string(), "xterm-256color".to_string())]),
        };
        Some(SessionTap::new(meta, &proto))
    }
}

/// Records the bytes of an exec/attach tunnel as an asciicast.
struct CastTap {
    tap: SessionTap,
    recorder: Recorder,
}

impl TunnelTap for CastTap {
    fn wrap(&self, app_side: Box<dyn TunnelIo>) -> Box<dyn TunnelIo> {
        Box::new(self.tap.wrap(app_side))
    }

    fn finished(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let cast = self.tap.finish();
            let audit_id = self.tap.audit_id();
            if let Err(e) = self.recorder.record_session(&audit_id, &cast).await {
                tracing::error!(audit_id = %audit_id, error = %e, "session recording not durable");
            }
        })
    }
}

impl RecordHook for RecordingHook {
    fn request<'a>(
        &'a self,
        ctx: &'a RequestContext,
        parts: &'a http::request::Parts,
        body: ProxyBody,
    ) -> BoxFuture<'a, Result<RecordStart, Refusal>> {
        Box::pin(async move {
            if self.recorder.must_refuse() {
                self.recorder.count_refused_request();
                return Err(Refusal::NotRecordable {
                    why: "spool full or unwritable",
                });
            }
            let level = (self.level)();
            let mutating = audit::is_mutating(ctx.verb());
            let mut body = body;
            let mut written = RequestBody::default();
            if level.includes_request() && mutating && !ctx.is_upgrade {
                let bytes = collect_limited(body, self.max_body_bytes).await?;
                if !bytes.is_empty() {
                    let content_type = parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok());
                    written = self.mask_request(ctx.attrs.as_ref(), content_type, &bytes);
                }
                body = full(bytes);
            }
            let mut base = self.base_event(ctx, level);
            // As kube-apiserver does for a create: the name comes from the
            // request object when the URL has none.
            if let (Some(r), Some(name)) = (base.object_ref.as_mut(), written.name.as_deref())
                && r.name.is_empty()
            {
                r.name = name.to_string();
            }
            if let Some(why) = &written.omitted {
                base.annotations
                    .insert(audit::ANN_REQUEST_OBJECT_OMITTED.into(), why.clone());
            }
            if mutating && let Err(e) = self.recorder.record(&base).await {
                tracing::error!(request_id = %ctx.request_id, error = %e, "refusing request: RequestReceived not durable");
                self.recorder.count_refused_request();
                return Err(Refusal::NotRecordable {
                    why: "the event is not durable",
                });
            }
            let record = PendingRecord {
                recorder: self.recorder.clone(),
                max_body_bytes: self.max_body_bytes,
                request_object: written.object.filter(|_| base.level.includes_request()),
                base: Some(base),
                masked_in_request: written.masked,
            };
            Ok((body, Box::new(record) as Box<dyn RequestRecord>))
        })
    }

    fn refused(&self, ctx: &RequestContext, status: &Status) {
        let base = self.base_event(ctx, (self.level)());
        record_refused(&self.recorder, base.view(), status);
    }
}

/// Records `ResponseComplete` of a request the sidecar answered itself.
fn record_refused(recorder: &Recorder, base: EventView<'_>, status: &Status) {
    let rs = ResponseStatus {
        status: "Failure".into(),
        message: status.message.clone(),
        reason: status.reason.as_str().to_string(),
        details: status
            .details
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok()),
        code: i32::from(status.code()),
        ..ResponseStatus::default()
    };
    let done = base.at_stage(Stage::ResponseComplete, micro(SystemTime::now()), &rs);
    spawn_record(recorder.clone(), &done);
}

/// One request's recording between [`RecordingHook::request`] and its
/// response or refusal (its [`RequestRecord`]).
struct PendingRecord {
    recorder: Recorder,
    max_body_bytes: usize,
    /// The request's event; taken when the record is handed on, so what is
    /// left at drop was never answered.
    base: Option<Event>,
    /// The masked request body, raw, when the level records it.
    request_object: Option<Box<RawValue>>,
    masked_in_request: u64,
}

impl PendingRecord {
    /// The request's event with its request body, at no stage yet.
    fn view<'a>(base: &'a Event, request_object: Option<&'a RawValue>) -> EventView<'a> {
        base.view().with_request_object(request_object)
    }
}

impl RequestRecord for PendingRecord {
    fn response(
        mut self: Box<Self>,
        ctx: &RequestContext,
        response: http::Response<ProxyBody>,
    ) -> http::Response<ProxyBody> {
        let Some(mut base) = self.base.take() else {
            return response;
        };
        let request_object = self.request_object.take();
        let code = response.status().as_u16();
        if ctx.is_stream || ctx.is_upgrade {
            let status = ResponseStatus::from_code(code);
            let started = PendingRecord::view(&base, request_object.as_deref()).at_stage(
                Stage::ResponseStarted,
                micro(SystemTime::now()),
                &status,
            );
            spawn_record(self.recorder.clone(), &started);
        }
        let keep_body =
            (base.level.includes_response() && !ctx.is_stream && !ctx.is_upgrade) || code >= 300;
        let gzip = response
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mask_count = response.extensions().get::<MaskCount>().cloned();
        let recorder = self.recorder.clone();
        let limit = self.max_body_bytes;
        let masked_in_request = self.masked_in_request;
        let on_end = Box::new(move |body: Option<Vec<u8>>| {
            let plain = body.and_then(|b| plain_body(b, gzip, limit));
            // The bytes as they went to the app (masked), as they are. A
            // body the masker wrote whole from one JSON document is JSON
            // already: only its framing is checked; anything else is
            // validated here.
            let document = !gzip
                && mask_count
                    .as_ref()
                    .is_some_and(MaskCount::whole_json_document);
            let text = plain
                .as_deref()
                .filter(|_| document)
                .and_then(audit::one_line_json_text);
            debug_assert!(
                text.is_none_or(|t| serde_json::from_str::<&RawValue>(t).is_ok()),
                "the masker's output for a whole document is not one JSON value"
            );
            let raw = match text {
                Some(_) => None,
                None => plain.as_deref().and_then(audit::raw_json),
            };
            let mut status = ResponseStatus::from_code(code);
            if code >= 300
                && let Some(json) = text.or(raw.as_ref().map(|r| r.get()))
            {
                status_fields(json, &mut status);
            }
            let masked = masked_in_request + mask_count.map(|m| m.current() as u64).unwrap_or(0);
            base.annotations
                .insert(audit::ANN_MASKED.into(), masked.to_string());
            let done = PendingRecord::view(&base, request_object.as_deref())
                .at_stage(Stage::ResponseComplete, micro(SystemTime::now()), &status)
                .with_response_object(raw.as_deref())
                .with_response_json_text(text);
            let json = done.to_json_vec();
            let fut: BoxFuture<'static, ()> = Box::pin(async move {
                // A failure is counted (events_lost) and logged by the recorder.
                let _ = match json {
                    Ok(json) => recorder.record_json(&base.audit_id, json).await,
                    Err(e) => recorder.encode_failed(&base.audit_id, e),
                };
            });
            fut
        });
        let (parts, body) = response.into_parts();
        let tee = TeeBody {
            inner: body,
            buf: Vec::new(),
            limit: if keep_body { limit } else { 0 },
            overflow: false,
            on_end: Some(on_end),
            recording: None,
            held: None,
            done: false,
        };
        http::Response::from_parts(parts, boxed(tee))
    }

    fn refused(mut self: Box<Self>, _ctx: &RequestContext, status: &Status) {
        if let Some(base) = self.base.take() {
            let view = PendingRecord::view(&base, self.request_object.as_deref());
            record_refused(&self.recorder, view, status);
        }
    }

    fn tunnel_tap(
        &self,
        ctx: &RequestContext,
        upgrade_response_headers: &http::HeaderMap,
    ) -> Option<Box<dyn TunnelTap>> {
        let tap = RecordingHook::session_tap(ctx, upgrade_response_headers)?;
        Some(Box::new(CastTap {
            tap,
            recorder: self.recorder.clone(),
        }))
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        // The app went away while its request was forwarded: the upstream
        // may have acted on it, so the record says the outcome is unknown
        // rather than leaving a request without an end.
        if let Some(base) = self.base.take() {
            let rs = ResponseStatus::failure(
                CLIENT_GONE_CODE,
                "",
                "mcp-warden: the client went away before the response; whether the API server acted on the request is unknown",
            );
            let done = PendingRecord::view(&base, self.request_object.as_deref()).at_stage(
                Stage::ResponseComplete,
                micro(SystemTime::now()),
                &rs,
            );
            spawn_record(self.recorder.clone(), &done);
        }
    }
}

/// How much of an oversized body is read and discarded before the 413 is
/// sent, and for how long at most.
const DRAIN_MAX_BYTES: usize = 16 << 20;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards what is left of a refused body (bounded in bytes and
/// time). Answering while the client is still uploading makes the server
/// close with unread data, the kernel then resets the connection, and the
/// client sees "connection reset" instead of the 413 `Status` (HTTP/1.1);
/// over HTTP/2 the stream is reset before the answer. Draining first lets
/// the client read why it was refused.
async fn drain(mut body: ProxyBody) {
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while seen < DRAIN_MAX_BYTES {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map_or(0, Bytes::len),
                _ => return,
            }
        }
    })
    .await;
}

/// Read a whole request body, refusing one larger than `max` with 413.
pub(crate) async fn collect_limited(mut body: ProxyBody, max: usize) -> Result<Bytes, Refusal> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refusal::BodyUnreadable { why: e.to_string() })?;
        if let Some(d) = frame.data_ref() {
            if buf.len() + d.len() > max {
                drain(body).await;
                return Err(Refusal::BodyTooLarge { max });
            }
            buf.extend_from_slice(d);
        }
    }
    Ok(buf.freeze())
}

/// A kept response body as plain bytes: gunzipped (within `limit`) when the
/// app got it compressed (a body that was not masked); `None` when empty or
/// undecodable.
fn plain_body(b: Vec<u8>, gzip: bool, limit: usize) -> Option<Vec<u8>> {
    if b.is_empty() {
        return None;
    }
    if !gzip {
        return Some(b);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= limit).then_some(out)
}

/// `status`, `message`, `reason` and `details` of a `Status` body into the
/// recorded response status, as kube-apiserver records a failure; read
/// without building the rest of the body. Anything else leaves it alone.
fn status_fields(json: &str, status: &mut ResponseStatus) {
    #[derive(Deserialize)]
    struct StatusBody<'a> {
        #[serde(borrow, default)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        status: serde_json::Value,
        #[serde(default)]
        message: serde_json::Value,
        #[serde(default)]
        reason: serde_json::Value,
        /// Present (even as `null`) or not.
        #[serde(default, deserialize_with = "present")]
        details: Option<serde_json::Value>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<serde_json::Value>, D::Error> {
        serde_json::Value::deserialize(d).map(Some)
    }
    let Ok(body) = serde_json::from_str::<StatusBody<'_>>(json) else {
        return;
    };
    if body.kind.as_deref() != Some("Status") {
        return;
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    status.status = s(&body.status);
    status.message = s(&body.message);
    status.reason = s(&body.reason);
    status.details = body.details;
}

/// Builds (and returns, not yet run) the recording of `ResponseComplete`.
type OnEnd = Box<dyn FnOnce(Option<Vec<u8>>) -> BoxFuture<'static, ()> + Send>;

/// Passes a body through unchanged, keeping up to `limit` bytes of it, and
/// records `ResponseComplete` once: with the bytes when the body ended
/// complete and within the limit, else with `None`.
///
/// The end of the body reaches the client only after that event is durable
/// (the last data frame is held back while it is written), so a client that
/// got a complete answer can count on its record surviving a crash of the
/// sidecar right after. A body dropped early (client gone) records in the
/// background.
struct TeeBody {
    inner: ProxyBody,
    buf: Vec<u8>,
    limit: usize,
    overflow: bool,
    on_end: Option<OnEnd>,
    /// The `ResponseComplete` write in progress at the end of the body.
    recording: Option<BoxFuture<'static, ()>>,
    /// The last data frame, released once `recording` finished.
    held: Option<Frame<Bytes>>,
    /// Everything, including the end, has been passed on.
    done: bool,
}

impl TeeBody {
    fn end_record(&mut self, complete: bool) -> Option<BoxFuture<'static, ()>> {
        let f = self.on_end.take()?;
        let body =
            (complete && !self.overflow && self.limit > 0).then(|| std::mem::take(&mut self.buf));
        Some(f(body))
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        if let Some(d) = frame.data_ref()
            && !self.overflow
            && self.limit > 0
        {
            if self.buf.len() + d.len() <= self.limit {
                self.buf.extend_from_slice(d);
            } else {
                self.overflow = true;
                self.buf = Vec::new();
            }
        }
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(rec) = this.recording.as_mut() {
                if rec.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.recording = None;
                this.done = true;
                if let Some(last) = this.held.take() {
                    // The body's last frame: `is_end_stream` is now true,
                    // so the stream ends with it, not with an empty frame.
                    return Poll::Ready(Some(Ok(last)));
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.keep(&frame);
                    if this.inner.is_end_stream() {
                        let Some(rec) = this.end_record(true) else {
                            this.done = true;
                            return Poll::Ready(Some(Ok(frame)));
                        };
                        // The last frame: held until the record is durable.
                        this.held = Some(frame);
                        this.recording = Some(rec);
                        continue;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => match this.end_record(true) {
                    Some(rec) => this.recording = Some(rec),
                    None => this.done = true,
                },
                Poll::Ready(Some(Err(e))) => {
                    if let Some(rec) = this.end_record(false) {
                        spawn_future(rec);
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never before the record is written: the end must wait for it.
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        let mut h = self.inner.size_hint();
        if let Some(f) = &self.held
            && let Some(d) = f.data_ref()
        {
            // Upper first: `set_lower` must never exceed the upper bound.
            let n = d.len() as u64;
            if let Some(u) = h.upper() {
                h.set_upper(u.saturating_add(n));
            }
            h.set_lower(h.lower().saturating_add(n));
        }
        h
    }
}

/// Run a record future on the current runtime if there is one (Drop may
/// run outside); otherwise it is lost, and counted so by the recorder.
fn spawn_future(fut: BoxFuture<'static, ()>) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(fut);
    } else {
        tracing::error!("no runtime to record ResponseComplete on");
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // A body hyper never polled because it was empty is complete too.
        let complete = self.held.is_none() && self.inner.is_end_stream();
        if let Some(rec) = self.recording.take() {
            spawn_future(rec);
        } else if let Some(rec) = self.end_record(complete) {
            spawn_future(rec);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hooks::Decision;
    use crate::recording::RecordingConfig;
    use mcp_warden_shared::mask::MaskingConfig;
    use mcp_warden_tests::collector::{self, CollectorConfig};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// The end of a body (its last frame, then the end) is released only
    /// once the `ResponseComplete` write finished.
    #[tokio::test]
    async fn body_end_waits_for_the_record() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let written = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Option<Option<Vec<u8>>>>> = Arc::new(Mutex::new(None));
        let (w, s) = (written.clone(), seen.clone());
        let on_end: OnEnd = Box::new(move |body| {
            *s.lock().unwrap() = Some(body);
            Box::pin(async move {
                let _ = rx.await;
                w.store(true, Ordering::SeqCst);
            })
        });
        let mut tee = TeeBody {
            inner: full(Bytes::from_static(b"{\"kind\":\"Pod\"}")),
            buf: Vec::new(),
            limit: 1024,
            overflow: false,
            on_end: Some(on_end),
            recording: None,
            held: None,
            done: false,
        };
        let mut frame = Box::pin(tee.frame());
        // Not released while the record is pending.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut frame)
                .await
                .is_err()
        );
        assert_eq!(
            seen.lock().unwrap().clone(),
            Some(Some(b"{\"kind\":\"Pod\"}".to_vec()))
        );
        tx.send(()).unwrap();
        let f = frame.await.unwrap().unwrap();
        assert!(written.load(Ordering::SeqCst));
        // The end goes with the last frame (END_STREAM on it over HTTP/2).
        assert!(tee.is_end_stream());
        assert_eq!(
            f.into_data().unwrap(),
            Bytes::from_static(b"{\"kind\":\"Pod\"}")
        );
        assert!(tee.frame().await.is_none());
        assert!(tee.is_end_stream());
    }

    fn ctx(verb: &str, resource: &str, name: &str, stream: bool) -> RequestContext {
        RequestContext {
            request_id: uuid::Uuid::new_v4(),
            started: Instant::now(),
            received_at: SystemTime::now(),
            peer: "127.0.0.1:40000".parse().unwrap(),
            method: http::Method::POST,
            path_and_query: format!("/api/v1/namespaces/default/{resource}"),
            user_agent: Some("kubectl/v1.33.0".into()),
            attrs: Some(RequestAttributes {
                is_resource_request: true,
                path: format!("/api/v1/namespaces/default/{resource}"),
                verb: verb.into(),
                api_prefix: "api".into(),
                api_version: "v1".into(),
                namespace: "default".into(),
                resource: resource.into(),
                name: name.into(),
                ..Default::default()
            }),
            impersonation: Default::default(),
            end_user: None,
            bodies: None,
            decision: Some(Decision::allow()),
            is_upgrade: false,
            is_stream: stream,
        }
    }

    /// Fail-closed with a full spool: `/readyz` says not ready (condition
    /// `recording`), and every refused request is counted although its own
    /// events cannot be stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_spool_makes_readyz_unready_and_refusals_are_counted() {
        use crate::admin::{Check, Readiness};
        let d = tempfile::tempdir().unwrap();
        // Nothing listens there: nothing is ever acknowledged.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let mut cfg = RecordingConfig::new(d.path().join("spool"));
        cfg.collector_url = Some(format!("http://{addr}/audit").parse().unwrap());
        cfg.spool_max_bytes = 8 * 1024;
        let (_stop, mut srx) = tokio::sync::watch::channel(false);
        let (rec, _h) = Recorder::start(cfg, async move {
            let _ = srx.wait_for(|s| *s).await;
        })
        .unwrap();
        let masker = Arc::new(MaskingConfig::embedded_default().compile().unwrap());
        let hook = RecordingHook::new(
            rec.clone(),
            UserInfo::new(
                "system:serviceaccount:default:mcp",
                "u-1",
                vec![],
                Default::default(),
            ),
            Arc::new(move || masker.clone()),
            Arc::new(|| Level::Metadata),
            Arc::new(|| "hash-1".to_string()),
        );
        let readiness = Readiness::new();
        let r = rec.clone();
        readiness.set_live("recording", Arc::new(move || r.readiness_check()));
        assert_eq!(readiness.report().1["recording"], Check::Ok);

        let c = ctx("get", "pods", "", false);
        let mut stored = 0;
        while rec
            .record(&hook.base_event(&c, Level::Metadata))
            .await
            .is_ok()
        {
            stored += 1;
            assert!(stored < 10_000, "the spool never filled");
        }
        let (ready, checks) = readiness.report();
        assert!(!ready);
        assert!(
            matches!(checks["recording"], Check::Failing(_)),
            "{checks:?}"
        );

        let (parts, _) = http::Request::new(()).into_parts();
        for _ in 0..3 {
            let Err(refusal) = hook.request(&c, &parts, full(Bytes::new())).await else {
                panic!("a request was let through with a full spool");
            };
            let status = refusal.status();
            assert_eq!(status.code(), 503);
            hook.refused(&c, &status);
        }
        assert_eq!(rec.stats().requests_refused.get(), 3);
    }

    #[tokio::test]
    async fn session_taps_only_for_websocket_exec_and_attach() {
        let mut c = ctx("create", "pods", "web-0", true);
        c.is_upgrade = true;
        c.path_and_query = "/api/v1/namespaces/default/pods/web-0/exec?command=sh&command=-c&command=ls%20-l&container=app&stdin=true".into();
        let mut h = http::HeaderMap::new();
        h.insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static("v5.channel.k8s.io"),
        );
        assert!(
            RecordingHook::session_tap(&c, &h).is_none(),
            "not an exec subresource yet"
        );
        c.attrs.as_mut().unwrap().subresource = "exec".into();
        let tap = RecordingHook::session_tap(&c, &h).unwrap();
        let cast = String::from_utf8(tap.finish()).unwrap();
        let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
        assert_eq!(
            header["title"],
            format!(
                "{} kubectl exec default/web-0 -c app -- sh -c ls -l",
                c.request_id
            )
        );
        assert!(
            RecordingHook::session_tap(&c, &http::HeaderMap::new()).is_none(),
            "SPDY: no subprotocol header"
        );
        c.attrs.as_mut().unwrap().subresource = "portforward".into();
        assert!(RecordingHook::session_tap(&c, &h).is_none());
    }

    /// A written body is recorded decoded and masked whatever its encoding;
    /// a protobuf body of a kind not decoded is left out with the reason,
    /// and its envelope still names the object.
    #[tokio::test]
    async fn written_bodies_are_decoded_whatever_their_encoding() {
        let d = tempfile::tempdir().unwrap();
        let cfg = RecordingConfig::new(d.path().join("spool"));
        let (stop, mut srx) = tokio::sync::watch::channel(false);
        let (rec, handle) = Recorder::start(cfg, async move {
            let _ = srx.wait_for(|s| *s).await;
        })
        .unwrap();
        let masker = Arc::new(MaskingConfig::embedded_default().compile().unwrap());
        let hook = RecordingHook::new(
            rec,
            UserInfo::new(
                "system:serviceaccount:default:mcp",
                "u-1",
                vec![],
                Default::default(),
            ),
            Arc::new(move || masker.clone()),
            Arc::new(|| Level::RequestResponse),
            Arc::new(|| "hash-1".to_string()),
        );
        let pb = Some("application/vnd.kubernetes.protobuf");
        let fixture = |name: &str| {
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/fixtures/protobuf")
                    .join(name),
            )
            .unwrap()
        };

        // kubectl 1.32 `create configmap scratch --from-literal=password=hunter2 ...`
        let c = ctx("create", "configmaps", "", false);
        let r = hook.mask_request(c.attrs.as_ref(), pb, &fixture("configmap.pb"));
        assert_eq!(r.name.as_deref(), Some("scratch"));
        assert!(r.omitted.is_none());
        let o: serde_json::Value = serde_json::from_str(r.object.unwrap().get()).unwrap();
        assert_eq!(o["data"]["color"], "blue");
        assert!(!o.to_string().contains("hunter2"), "{o}");
        assert_eq!(r.masked, 1);

        // `create secret generic s1 --from-literal=token=abc`: base64 "YWJj" masked.
        let c = ctx("create", "secrets", "", false);
        let r = hook.mask_request(c.attrs.as_ref(), pb, &fixture("secret.pb"));
        assert_eq!(r.name.as_deref(), Some("s1"));
        assert!(!r.object.unwrap().to_string().contains("YWJj"));

        // `create deployment d1`: not decoded, named, and why.
        let c = ctx("create", "deployments", "", false);
        let r = hook.mask_request(c.attrs.as_ref(), pb, &fixture("deployment.pb"));
        assert_eq!(r.name.as_deref(), Some("d1"));
        assert!(r.object.is_none());
        assert_eq!(
            r.omitted.as_deref(),
            Some("protobuf bodies of kind Deployment (apps/v1) are not decoded")
        );

        // server-side apply (YAML).
        let c = ctx("patch", "configmaps", "app", false);
        let y =
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  apikey: s3cr3t\n";
        let r = hook.mask_request(c.attrs.as_ref(), Some("application/apply-patch+yaml"), y);
        let o: serde_json::Value = serde_json::from_str(r.object.unwrap().get()).unwrap();
        assert_eq!(o["metadata"]["name"], "app");
        assert!(!o.to_string().contains("s3cr3t"), "{o}");

        // Garbage: never recorded raw.
        let r = hook.mask_request(c.attrs.as_ref(), Some("application/json"), b"{nope");
        assert!(r.object.is_none());
        assert!(
            r.omitted
                .unwrap()
                .starts_with("the JSON body does not parse")
        );

        stop.send(true).unwrap();
        handle.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hook_records_masked_bodies_stages_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ccfg = CollectorConfig::new(d.path().join("out"));
        let ctl = ccfg.control.clone();
        let (cstop, crx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(collector::run(listener, ccfg, async {
            let _ = crx.await;
        }));
        let mut cfg = RecordingConfig::new(d.path().join("spool"));
        cfg.collector_url = Some(format!("http://{addr}/audit").parse().unwrap());
        cfg.batch_max_delay = Duration::from_millis(20);
        cfg.pod = "default/mcp-0".into();
        let (stop, mut srx) = tokio::sync::watch::channel(false);
        let (rec, handle) = Recorder::start(cfg, async move {
            let _ = srx.wait_for(|s| *s).await;
        })
        .unwrap();
        let masker = Arc::new(MaskingConfig::embedded_default().compile().unwrap());
        let hook = RecordingHook::new(
            rec.clone(),
            UserInfo::new(
                "system:serviceaccount:default:mcp",
                "u-1",
                vec![],
                Default::default(),
            ),
            Arc::new(move || masker.clone()),
            Arc::new(|| Level::RequestResponse),
            Arc::new(|| "hash-1".to_string()),
        );

        // create secret: the body goes upstream unchanged, the record is masked.
        let c = ctx("create", "secrets", "", false);
        let secret = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db"},"data":{"password":"aHVudGVyMg=="}}"#;
        let (parts, _) = http::Request::new(()).into_parts();
        let (fwd, record) = hook
            .request(&c, &parts, full(Bytes::from_static(secret)))
            .await
            .unwrap();
        assert_eq!(
            fwd.collect().await.unwrap().to_bytes(),
            Bytes::from_static(secret)
        );
        let resp = http::Response::builder()
            .status(201)
            .body(full(Bytes::from_static(
                br#"{"kind":"Secret","metadata":{"name":"db"},"data":{"password":"KioqKg=="}}"#,
            )))
            .unwrap();
        let resp = record.response(&c, resp);
        resp.into_body().collect().await.unwrap();

        // a watch: ResponseStarted, then ResponseComplete when the stream ends.
        let w = ctx("watch", "pods", "", true);
        let (body, record) = hook.request(&w, &parts, full(Bytes::new())).await.unwrap();
        drop(body);
        let resp = record.response(
            &w,
            http::Response::new(full(Bytes::from_static(b"{\"type\":\"ADDED\"}\n"))),
        );
        resp.into_body().collect().await.unwrap();

        // a denial answered by the sidecar.
        let mut del = ctx("delete", "secrets", "db", false);
        del.decision = Some(Decision::deny(
            Some("no-deletes".into()),
            "deletes need a human",
        ));
        hook.refused(
            &del,
            &del.decision
                .as_ref()
                .unwrap()
                .refusal
                .as_ref()
                .unwrap()
                .status(),
        );

        // the app went away while its request was forwarded: the record
        // still ends, saying so.
        let gone = ctx("delete", "configmaps", "old", false);
        let (_, record) = hook
            .request(&gone, &parts, full(Bytes::new()))
            .await
            .unwrap();
        drop(record);

        let out = d.path().join("out");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ctl.events.load(std::sync::atomic::Ordering::SeqCst) < 7 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let events = collector::read_events(&out).unwrap();
        let of = |id: &uuid::Uuid, stage: Stage| {
            events
                .iter()
                .filter(|e| e.audit_id == id.to_string() && e.stage == stage)
                .cloned()
                .collect::<Vec<_>>()
        };
        let rr = of(&c.request_id, Stage::RequestReceived);
        assert_eq!(rr.len(), 1, "mutating request recorded before forwarding");
        let done = of(&c.request_id, Stage::ResponseComplete);
        assert_eq!(done.len(), 1);
        let done = &done[0];
        assert_eq!(done.verb, "create");
        assert_eq!(done.response_status.as_ref().unwrap().code, 201);
        assert_eq!(done.user.username, "system:serviceaccount:default:mcp");
        assert_eq!(done.annotations[audit::ANN_DECISION], "allow");
        assert_eq!(done.annotations[audit::ANN_POLICY_HASH], "hash-1");
        assert_eq!(done.annotations[audit::ANN_POD], "default/mcp-0");
        assert_eq!(done.annotations[audit::ANN_MASKED], "1");
        let req_obj = done.request_object.as_ref().unwrap().to_string();
        assert!(
            req_obj.contains("password") && !req_obj.contains("aHVudGVyMg=="),
            "{req_obj}"
        );
        assert_eq!(
            done.response_object.as_ref().unwrap()["data"]["password"],
            "KioqKg=="
        );
        let all = std::fs::read_to_string(out.join("events.ndjson")).unwrap();
        assert!(
            !all.contains("aHVudGVyMg=="),
            "no secret bytes anywhere in the record"
        );

        assert_eq!(of(&w.request_id, Stage::ResponseStarted).len(), 1);
        assert_eq!(of(&w.request_id, Stage::ResponseComplete).len(), 1);
        assert!(
            of(&w.request_id, Stage::RequestReceived).is_empty(),
            "reads are recorded once complete"
        );

        let denied = of(&del.request_id, Stage::ResponseComplete);
        assert_eq!(denied.len(), 1);
        let st = denied[0].response_status.as_ref().unwrap();
        assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
        assert_eq!(denied[0].annotations[audit::ANN_DECISION], "deny");
        assert_eq!(denied[0].annotations[audit::ANN_RULE], "no-deletes");

        assert_eq!(of(&gone.request_id, Stage::RequestReceived).len(), 1);
        let gone = of(&gone.request_id, Stage::ResponseComplete);
        assert_eq!(gone.len(), 1);
        let st = gone[0].response_status.as_ref().unwrap();
        assert_eq!(st.code, i32::from(CLIENT_GONE_CODE));
        assert!(st.message.contains("went away"), "{}", st.message);

        stop.send(true).unwrap();
        handle.await.unwrap();
        cstop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
