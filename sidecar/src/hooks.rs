//! The request context that flows through the pipeline, and the hook points
//! where policy, masking and recording plug in.
//!
//! Pipeline (see `proxy.rs`): authenticate → parse → [`DecideHook`] →
//! [`RecordHook::request`] → forward → [`TransformHook`] →
//! [`RecordHook::response`]. Requests refused before forwarding go to
//! [`RecordHook::refused`]. The defaults ([`Hooks::default`]) allow
//! everything except impersonation, transform nothing and record nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use mcp_warden_shared::attrs::{Impersonation, RequestAttributes};
use mcp_warden_shared::status::{Reason, Status};

/// Error type of bodies flowing through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests and responses inside the pipeline: streamed,
/// never buffered unless a hook chooses to.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    boxed(http_body_util::Full::new(bytes.into()).map_err(|never| match never {}))
}

/// Everything known about one request, built as it passes the pipeline.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Unique id of this request (the `auditID` of its recording).
    pub request_id: uuid::Uuid,
    /// When the request arrived (monotonic, for durations).
    pub started: Instant,
    /// When the request arrived (wall clock, for records).
    pub received_at: SystemTime,
    /// The app's address (always loopback in a pod).
    pub peer: SocketAddr,
    /// HTTP method.
    pub method: http::Method,
    /// Path and query as received.
    pub path_and_query: String,
    /// `User-Agent` of the app, if any.
    pub user_agent: Option<String>,
    /// Parsed Kubernetes attributes (set after parsing).
    pub attrs: Option<RequestAttributes>,
    /// Impersonation asked for by `Impersonate-*` headers (empty if none).
    pub impersonation: Impersonation,
    /// The decision (set after the decide hook).
    pub decision: Option<Decision>,
    /// The request upgrades the connection (exec, attach, port-forward).
    pub is_upgrade: bool,
    /// The request is long-running: watch, `follow=true` logs, or upgrade.
    pub is_stream: bool,
}

impl RequestContext {
    /// The verb for logs and metrics (`unknown` before parsing).
    pub fn verb(&self) -> &str {
        self.attrs
            .as_ref()
            .map(|a| a.verb.as_str())
            .unwrap_or("unknown")
    }

    /// `resource[/subresource]` for logs and metrics.
    pub fn resource(&self) -> String {
        self.attrs
            .as_ref()
            .map(|a| a.resource_with_subresource())
            .unwrap_or_default()
    }
}

/// The decision recorded for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Needed a human's approval.
    Approve,
}

impl Action {
    /// `allow`, `deny` or `approve`, as recorded and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Approve => "approve",
        }
    }
}

/// Outcome of the decide hook. The hook does any waiting (approvals) itself
/// and returns the final word: `refusal` set means the request is answered
/// with that Status and never forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The decision recorded (in audit mode: what enforcement would have done).
    pub action: Action,
    /// False in `mode: audit` (recorded as `mcp-warden.io/enforced: "false"`).
    pub enforced: bool,
    /// Name of the rule that decided, if any.
    pub rule: Option<String>,
    /// Set when the request must not be forwarded.
    pub refusal: Option<Status>,
    /// Forward the `Impersonate-*` headers (only when the policy allowed the
    /// `impersonate` verb for what they ask). Otherwise they are stripped.
    pub forward_impersonation: bool,
}

impl Decision {
    /// An allow with no rule (the default hook's answer).
    pub fn allow() -> Self {
        Decision {
            action: Action::Allow,
            enforced: true,
            rule: None,
            refusal: None,
            forward_impersonation: false,
        }
    }

    /// A deny answered with `403 Forbidden` and `message`.
    pub fn deny(rule: Option<String>, message: impl Into<String>) -> Self {
        Decision {
            action: Action::Deny,
            enforced: true,
            rule,
            refusal: Some(Status::new(Reason::Forbidden, message)),
            forward_impersonation: false,
        }
    }
}

/// Policy hook: decides whether a parsed request may be forwarded.
pub trait DecideHook: Send + Sync + 'static {
    /// Returns the decision; may wait (approvals), never forever.
    fn decide<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Decision>;
}

/// Response hook: masks a response before it reaches the app.
pub trait TransformHook: Send + Sync + 'static {
    /// Rewrites the request before it goes upstream (e.g. the Accept header
    /// so responses that need masking come as JSON). Default: unchanged.
    fn prepare_request(&self, _ctx: &RequestContext, _parts: &mut http::request::Parts) {}

    /// Cleans the headers of a 101 answer before they reach the app (the
    /// tunnelled bytes after it are not transformed). Default: unchanged.
    fn tunnel_headers(&self, _ctx: &RequestContext, _headers: &mut http::HeaderMap) {}

    /// Judges an RFC 6902 JSON Patch body before it goes upstream: an `Err`
    /// Status refuses the request (an operation that would make the server
    /// read a masked value). Default: accept.
    fn check_json_patch(
        &self,
        _ctx: &RequestContext,
        _patch: &serde_json::Value,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Returns the response to send to the app. An `Err` Status replaces the
    /// response (a response that cannot be masked is never passed on).
    fn transform<'a>(
        &'a self,
        ctx: &'a RequestContext,
        response: http::Response<ProxyBody>,
    ) -> BoxFuture<'a, Result<http::Response<ProxyBody>, Status>>;
}

/// Recording hook.
pub trait RecordHook: Send + Sync + 'static {
    /// Called before forwarding, with the request body (which it may tee).
    /// An `Err` refuses the request (e.g. 503 when the event cannot be made
    /// durable in fail-closed mode) and it is not forwarded.
    fn request<'a>(
        &'a self,
        ctx: &'a RequestContext,
        parts: &'a http::request::Parts,
        body: ProxyBody,
    ) -> BoxFuture<'a, Result<ProxyBody, Status>>;

    /// Called with the (already transformed) response the app will get; may
    /// tee the body and complete the event when it ends. Upgraded
    /// connections get the 101 response here.
    fn response(
        &self,
        ctx: &RequestContext,
        response: http::Response<ProxyBody>,
    ) -> http::Response<ProxyBody>;

    /// Called for requests answered by the sidecar itself without forwarding
    /// (401, 400, denials, upstream failures), with the Status sent.
    fn refused(&self, ctx: &RequestContext, status: &Status);

    /// For an upgraded connection (exec, attach, port-forward) whose 101
    /// response has these headers: a tap that wraps the app's side of the
    /// tunnel (to record the session). Default: none.
    fn tunnel_tap(
        &self,
        _ctx: &RequestContext,
        _upgrade_response_headers: &http::HeaderMap,
    ) -> Option<Box<dyn TunnelTap>> {
        None
    }
}

/// The I/O of one side of an upgraded connection.
pub trait TunnelIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> TunnelIo for T {}

/// Observes the bytes of a tunnel (see [`RecordHook::tunnel_tap`]).
pub trait TunnelTap: Send + 'static {
    /// Wraps the app's side of the tunnel; bytes must pass unchanged.
    fn wrap(&self, app_side: Box<dyn TunnelIo>) -> Box<dyn TunnelIo>;

    /// Called once when the tunnel has closed (both directions done, or shutdown).
    fn finished(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The default policy hook until the policy lands: allow everything except
/// impersonation, which is refused with 403.
#[derive(Debug, Default)]
pub struct AllowExceptImpersonation;

impl DecideHook for AllowExceptImpersonation {
    fn decide<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Decision> {
        let d = if ctx.impersonation.is_empty() {
            Decision::allow()
        } else {
            Decision::deny(
                None,
                "impersonation is not allowed through mcp-warden (no policy permits the impersonate verb)",
            )
        };
        Box::pin(async move { d })
    }
}

/// Identity response transform.
#[derive(Debug, Default)]
pub struct NoTransform;

impl TransformHook for NoTransform {
    fn transform<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        response: http::Response<ProxyBody>,
    ) -> BoxFuture<'a, Result<http::Response<ProxyBody>, Status>> {
        Box::pin(async move { Ok(response) })
    }
}

/// Recorder that records nothing.
#[derive(Debug, Default)]
pub struct NoRecord;

impl RecordHook for NoRecord {
    fn request<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        _parts: &'a http::request::Parts,
        body: ProxyBody,
    ) -> BoxFuture<'a, Result<ProxyBody, Status>> {
        Box::pin(async move { Ok(body) })
    }

    fn response(
        &self,
        _ctx: &RequestContext,
        response: http::Response<ProxyBody>,
    ) -> http::Response<ProxyBody> {
        response
    }

    fn refused(&self, _ctx: &RequestContext, _status: &Status) {}
}

/// The hooks the pipeline calls.
#[derive(Clone)]
pub struct Hooks {
    /// Policy.
    pub decide: Arc<dyn DecideHook>,
    /// Masking.
    pub transform: Arc<dyn TransformHook>,
    /// Recording.
    pub record: Arc<dyn RecordHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            decide: Arc::new(AllowExceptImpersonation),
            transform: Arc::new(NoTransform),
            record: Arc::new(NoRecord),
        }
    }
}
