//! The request context that flows through the pipeline, and the hook points
//! where policy, masking and recording plug in.
//!
//! Pipeline (see `proxy.rs`): authenticate → parse → the bodies
//! [`DecideHook::bodies_needed`] asks for (`crate::bodies`) → [`DecideHook`] →
//! [`RecordHook::request`] → forward → [`TransformHook`] →
//! [`RequestRecord::response`]. State of one request travels with it: the
//! decision (with its approval) in the [`RequestContext`], the recording in
//! the [`RequestRecord`] that `RecordHook::request` returns. Requests
//! refused before recording began go to [`RecordHook::refused`], after it to
//! [`RequestRecord::refused`]; refusals are typed ([`Refusal`]) and become
//! responses in [`crate::error`]. The defaults ([`Hooks::default`]) allow
//! everything except impersonation, transform nothing and record nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use mcp_warden_shared::attrs::{Impersonation, RequestAttributes};
use mcp_warden_shared::policy;
/// The decision's action is the policy's own type.
pub use mcp_warden_shared::policy::Action;
/// Which bodies a decision reads is the policy's own type.
pub use mcp_warden_shared::policy::BodyNeed;
use mcp_warden_shared::status::Status;

use crate::error::Refusal;

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
    /// The end user, when the app presented a verified end-user token
    /// instead of its local token (set by authentication).
    pub end_user: Option<Arc<mcp_warden_shared::enduser::EndUser>>,
    /// The bodies the decide hook asked for ([`DecideHook::bodies_needed`]),
    /// set just before it runs and dropped right after, so a body is not
    /// held for the rest of the request.
    pub bodies: Option<Arc<DecisionBodies>>,
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

/// What `when:` conditions read: the request body decoded to JSON
/// (`object`) and the live object (`oldObject`). `None` is CEL `null`: not
/// asked for, not decodable, or not fetched.
#[derive(Debug, Clone, Default)]
pub struct DecisionBodies {
    /// The request body as JSON.
    pub object: Option<serde_json::Value>,
    /// The live object, as the upstream answered a GET of it.
    pub old_object: Option<serde_json::Value>,
    /// The request body as it came (set with `object`): what an approval's
    /// dry run sends again.
    pub request: Option<RequestBody>,
}

/// A request body as read, with its `Content-Type`.
#[derive(Debug, Clone, Default)]
pub struct RequestBody {
    /// The bytes, as they will be forwarded.
    pub bytes: Bytes,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

impl DecisionBodies {
    /// The bodies as the policy's evaluation takes them.
    pub fn as_policy(&self) -> policy::Bodies<'_> {
        policy::Bodies {
            object: self.object.as_ref(),
            old_object: self.old_object.as_ref(),
        }
    }
}

/// Who let a request held for approval through (recorded as
/// `mcp-warden.io/approved-by` and `mcp-warden.io/access-request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The approver, as the admission webhook stamped it.
    pub by: String,
    /// `NAMESPACE/NAME` of the AccessRequest.
    pub access_request: String,
    /// The AccessRequest is a time-bounded grant (recorded as
    /// `mcp-warden.io/grant` too), not this request's own approval.
    pub grant: bool,
}

/// The decision the pipeline acts on and the recording keeps: the policy's
/// [`policy::Decision`] as the sidecar applies it ([`Decision::from_policy`]
/// is the one bridge), plus what only the sidecar knows: the refusal to
/// answer, whether impersonation goes upstream, and who approved. The
/// decide hook does any waiting (approvals) itself and returns the final
/// word: `refusal` set means the request is answered with it and never
/// forwarded.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The decision recorded (in audit mode: what enforcement would have done).
    pub action: Action,
    /// False in `mode: audit` (recorded as `mcp-warden.io/enforced: "false"`).
    pub enforced: bool,
    /// Name of the rule that decided, if any.
    pub rule: Option<String>,
    /// Set when the request must not be forwarded.
    pub refusal: Option<Refusal>,
    /// Forward the `Impersonate-*` headers (only when the policy allowed the
    /// `impersonate` verb for what they ask). Otherwise they are stripped.
    pub forward_impersonation: bool,
    /// Set when a person approved the request (an `approve` rule).
    pub approval: Option<Approval>,
    /// What the approval's dry-run preview said, recorded as
    /// `mcp-warden.io/preview` (`refused`, `shown`, `changed`).
    pub preview: Option<&'static str>,
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
            approval: None,
            preview: None,
        }
    }

    /// A deny answered with `403 Forbidden` and `message` alone (for a
    /// request that cannot be named).
    pub fn deny(rule: Option<String>, message: impl Into<String>) -> Self {
        Decision::refused(
            Action::Deny,
            rule,
            Refusal::Denied {
                message: message.into(),
            },
        )
    }

    /// An enforced `action` that refuses the request with `refusal`.
    pub fn refused(action: Action, rule: Option<String>, refusal: Refusal) -> Self {
        Decision {
            action,
            enforced: true,
            rule,
            refusal: Some(refusal),
            forward_impersonation: false,
            approval: None,
            preview: None,
        }
    }

    /// An `approve` rule's request that `approval` let through.
    pub fn approved(rule: Option<String>, approval: Approval) -> Self {
        Decision {
            action: Action::Approve,
            enforced: true,
            rule,
            refusal: None,
            forward_impersonation: false,
            approval: Some(approval),
            preview: None,
        }
    }

    /// The policy's decision on the request of `attrs` asking for `imp`, as
    /// the pipeline applies it: a blocking decision refuses with the 403
    /// naming the rule (an `approve` nobody decided blocks like a deny);
    /// impersonation goes upstream only when allowed or not enforced.
    pub fn from_policy(
        d: &policy::Decision,
        attrs: &RequestAttributes,
        imp: &Impersonation,
    ) -> Self {
        Decision {
            action: d.action,
            enforced: d.enforced,
            rule: d.rule.clone(),
            refusal: d
                .blocks()
                .then(|| Refusal::forbidden(attrs, d.refusal_reason())),
            forward_impersonation: !imp.is_empty() && (d.action == Action::Allow || !d.enforced),
            approval: None,
            preview: None,
        }
    }
}

/// Policy hook: decides whether a parsed request may be forwarded.
pub trait DecideHook: Send + Sync + 'static {
    /// Which bodies [`DecideHook::decide`] will read for this parsed request;
    /// the pipeline reads the request body or fetches the live object only
    /// then (into [`RequestContext::bodies`]). Default: none, so the
    /// request streams.
    fn bodies_needed(&self, _ctx: &RequestContext) -> BodyNeed {
        BodyNeed::default()
    }

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
    /// refuses the request (an operation that would make the server read a
    /// masked value). Default: accept.
    fn check_json_patch(
        &self,
        _ctx: &RequestContext,
        _patch: &serde_json::Value,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    /// Returns the response to send to the app. An `Err` replaces the
    /// response (a response that cannot be masked is never passed on).
    fn transform<'a>(
        &'a self,
        ctx: &'a RequestContext,
        response: http::Response<ProxyBody>,
    ) -> BoxFuture<'a, Result<http::Response<ProxyBody>, Refusal>>;
}

/// What [`RecordHook::request`] gives back: the body to forward and the
/// request's recording.
pub type RecordStart = (ProxyBody, Box<dyn RequestRecord>);

/// Recording hook.
pub trait RecordHook: Send + Sync + 'static {
    /// Called before forwarding, with the request body (which it may tee).
    /// Returns the body to forward and the request's [`RequestRecord`],
    /// which the pipeline keeps with the request and hands back with its
    /// response or refusal. An `Err` refuses the request (e.g. 503 when the
    /// event cannot be made durable in fail-closed mode) and it is not
    /// forwarded.
    fn request<'a>(
        &'a self,
        ctx: &'a RequestContext,
        parts: &'a http::request::Parts,
        body: ProxyBody,
    ) -> BoxFuture<'a, Result<RecordStart, Refusal>>;

    /// Called for requests answered by the sidecar itself before
    /// [`RecordHook::request`] accepted them (401, 400, denials, 429, a
    /// refusal of `request` itself), with the Status sent.
    fn refused(&self, ctx: &RequestContext, status: &Status);
}

/// One request's recording from [`RecordHook::request`] on. Owned by the
/// request: it ends with [`RequestRecord::response`] or
/// [`RequestRecord::refused`], or is dropped with the request when the app
/// goes away first (the implementation records what it knows then).
pub trait RequestRecord: Send + 'static {
    /// Called with the (already transformed) response the app will get; may
    /// tee the body and complete the event when it ends. Upgraded
    /// connections get the 101 response here.
    fn response(
        self: Box<Self>,
        ctx: &RequestContext,
        response: http::Response<ProxyBody>,
    ) -> http::Response<ProxyBody>;

    /// Called when the sidecar answers the request itself after recording
    /// began (upstream unreachable, no token), with the Status sent.
    fn refused(self: Box<Self>, ctx: &RequestContext, status: &Status);

    /// For an upgraded connection (exec, attach, port-forward) whose 101
    /// response has these headers: a tap that wraps the app's side of the
    /// tunnel (to record the session). Called before
    /// [`RequestRecord::response`]. Default: none.
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

/// The decide hook of the bare proxy (no policy): allow everything except
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
    ) -> BoxFuture<'a, Result<http::Response<ProxyBody>, Refusal>> {
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
    ) -> BoxFuture<'a, Result<RecordStart, Refusal>> {
        Box::pin(async move { Ok((body, Box::new(NoRecord) as Box<dyn RequestRecord>)) })
    }

    fn refused(&self, _ctx: &RequestContext, _status: &Status) {}
}

impl RequestRecord for NoRecord {
    fn response(
        self: Box<Self>,
        _ctx: &RequestContext,
        response: http::Response<ProxyBody>,
    ) -> http::Response<ProxyBody> {
        response
    }

    fn refused(self: Box<Self>, _ctx: &RequestContext, _status: &Status) {}
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
