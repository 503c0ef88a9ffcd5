//! The MCP front: with `--mcp-upstream`, the sidecar also stands in front of
//! the MCP server's own HTTP endpoint (`--mcp-listen`, the pod's
//! `mcp-warden.io/mcp-port` annotation), a reverse proxy for the streamable
//! HTTP transport (POST answered with JSON or an event stream, the GET event
//! stream, DELETE of a session) and the older SSE transport (GET `/sse`,
//! POST `/messages?sessionId=`).
//!
//! On the way it reads the JSON-RPC traffic (`shared::mcp`) without holding
//! streams back: a POST body is read whole up to a bound (it is what the
//! policy judges), responses pass chunk by chunk while their events are
//! parsed ([`tap`]). The user is the verified `Authorization: Bearer` token
//! (when a verifier is configured; without one there is no user); the
//! session is `Mcp-Session-Id` (or the SSE transport's `sessionId`). Each
//! `tools/call` is judged by the policy's `tools:` rules
//! (`policy::evaluate_tool`): a blocked call is answered with a JSON-RPC
//! error naming the rule and never reaches the server; an allowed one is
//! in flight ([`registry`]) from its forwarding to its response, and is
//! recorded as an event of its own (`shared::mcp::tool_call_event`) in the
//! recording stream. The API proxy's recording names the calls in flight
//! on every API request ([`registry::ToolCalls::link_annotations`]).
//!
//! An enforced `approve` tool rule holds the call for a person with the
//! approvals flow of API requests ([`ApprovalDecider::hold_tool_call`]):
//! approved, it is forwarded as an allowed call naming its approval;
//! otherwise it is refused like a denied one, the error naming the
//! decision. The held POST waits on its own (other requests of the session
//! go on); on the SSE transport, whose client sends a session's messages
//! one at a time, the POST is answered `202` at once and the call waits in
//! a task of its own. Without approvals (none given to the front) the call
//! is refused, saying so.

pub mod registry;
mod tap;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::audit::{self, MicroTime, UserInfo};
use mcp_warden_shared::enduser::EndUser;
use mcp_warden_shared::identity::Identity;
use mcp_warden_shared::mcp::{self as jr, CallEnd, InFlightCall, Message, Outcome, ToolCallRecord};
use mcp_warden_shared::policy::{self, Action};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::approval::ApprovalDecider;
use crate::approval::access_request::ToolCall;
use crate::approval::decider::Answer;
use crate::enduser::VerifyBearer;
use crate::hooks::{Approval, ProxyBody, boxed, full};
use crate::listener::{self, Handler};
use crate::policy_store::LoadedPolicy;
use crate::recording::Recorder;
pub use registry::{PendingCall, ToolCalls};
use tap::{Mode, Scope, Tap};

/// The header naming a streamable HTTP session.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The most bytes of a POST body (and of a JSON response) read.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// The most bytes of one server-sent event read.
pub const DEFAULT_MAX_EVENT: usize = 4 << 20;

/// How long a call whose POST was answered `202 Accepted` waits for its
/// answer on another stream before it ends as `no-response` (and stops being
/// named on API requests).
pub const ANSWER_ELSEWHERE_TIMEOUT: Duration = Duration::from_secs(300);

/// Events of the sidecar's own waiting for their place in one SSE stream.
const INJECT_QUEUE: usize = 64;

/// The policy in force (the store's current one).
pub type PolicySource = Arc<dyn Fn() -> Arc<LoadedPolicy> + Send + Sync>;

/// The MCP front's settings (`--mcp-upstream`, `--mcp-listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    /// The MCP server's own endpoint, on loopback.
    pub upstream: SocketAddr,
    /// Where the front listens (plain HTTP; the pod IP in a pod).
    pub listen: SocketAddr,
}

/// The MCP front (see the module docs).
pub struct McpFront {
    upstream: SocketAddr,
    client: Client<HttpConnector, ProxyBody>,
    verifier: Option<Arc<dyn VerifyBearer>>,
    policy: PolicySource,
    identity: Identity,
    recorder: Recorder,
    calls: Arc<ToolCalls>,
    max_body: usize,
    max_event: usize,
    /// The open `GET /sse` streams of the SSE transport, by session: where
    /// the answer to a refused `POST /messages` goes.
    sse_streams: std::sync::Mutex<std::collections::HashMap<String, mpsc::Sender<Bytes>>>,
    /// Holds the calls an enforced `approve` tool rule matches for a
    /// person's decision; without it they are refused.
    approvals: Option<Arc<ApprovalDecider>>,
}

impl std::fmt::Debug for McpFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpFront")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

fn micro(t: SystemTime) -> MicroTime {
    MicroTime::from_unix_micros(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0),
    )
}

/// The `sessionId` of a query string (the SSE transport's session).
pub(crate) fn session_from_query(query: Option<&str>) -> Option<String> {
    let q = mcp_warden_shared::attrs::query::Query::parse(query?);
    q.get("sessionId")
        .or_else(|| q.get("session_id"))
        .map(str::to_string)
}

/// Hop-by-hop headers, never passed on by a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A JSON-RPC body with an HTTP status.
fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn unauthorized(why: &str) -> Response<ProxyBody> {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        &jr::error_response(None, jr::UNAUTHENTICATED, why, None),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// The error of a call not forwarded because another call of its batch was
/// refused (`blocker`, that call's tool).
fn not_forwarded(blocker: &str) -> String {
    format!("mcp-warden: not forwarded: its batch holds a refused tool call ({blocker})")
}

/// The error of a held call that was not approved: the rule and the
/// approvals' `message` (who denied it, or that it expired).
fn approval_refusal(p: &PendingCall, message: &str) -> String {
    let mut m = format!(
        "mcp-warden policy: tool call {:?} was held for approval by rule {:?} and not approved",
        p.call.tool,
        p.decision.rule.as_deref().unwrap_or_default()
    );
    if let Some(msg) = &p.decision.message {
        m.push_str(&format!(" (rule's message: {msg})"));
    }
    m.push_str(": ");
    m.push_str(message);
    m
}

/// What a tool call looks like before it is decided or forwarded.
struct Incoming<'a> {
    session: &'a str,
    user: Option<&'a EndUser>,
    received: SystemTime,
    started: Instant,
    path: &'a str,
    peer: SocketAddr,
    user_agent: &'a str,
}

impl McpFront {
    /// A front forwarding to `upstream`, judging with `policy`'s tool rules
    /// as the pod `identity`, recording with `recorder`, keeping the calls
    /// in flight in `calls`; `verifier` authenticates end users (none: no
    /// user, every request passes on).
    pub fn new(
        upstream: SocketAddr,
        policy: PolicySource,
        identity: Identity,
        recorder: Recorder,
        calls: Arc<ToolCalls>,
        verifier: Option<Arc<dyn VerifyBearer>>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        McpFront {
            upstream,
            client: Client::builder(TokioExecutor::new()).build(http),
            verifier,
            policy,
            identity,
            recorder,
            calls,
            max_body: DEFAULT_MAX_BODY,
            max_event: DEFAULT_MAX_EVENT,
            sse_streams: Default::default(),
            approvals: None,
        }
    }

    /// Holds the calls an enforced `approve` tool rule matches with the
    /// approvals' AccessRequests (else they are refused).
    pub fn with_approvals(mut self, approvals: Arc<ApprovalDecider>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    fn sse_streams(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, mpsc::Sender<Bytes>>> {
        self.sse_streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the calls of `keys` still in flight after
    /// [`ANSWER_ELSEWHERE_TIMEOUT`] as `no-response`.
    pub(crate) fn expire_later(self: Arc<Self>, keys: Vec<u64>) {
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        h.spawn(async move {
            tokio::time::sleep(ANSWER_ELSEWHERE_TIMEOUT).await;
            for k in keys {
                if let Some(p) = self.calls.take(k) {
                    self.record(p, CallEnd::NoResponse);
                }
            }
        });
    }

    pub(crate) fn register_sse_stream(&self, session: &str, tx: mpsc::Sender<Bytes>) {
        self.sse_streams().insert(session.to_string(), tx);
    }

    pub(crate) fn unregister_sse_stream(&self, session: &str, tx: &mpsc::Sender<Bytes>) {
        let mut g = self.sse_streams();
        if g.get(session).is_some_and(|t| t.same_channel(tx)) {
            g.remove(session);
        }
    }

    /// The registry of calls in flight.
    pub fn calls(&self) -> &Arc<ToolCalls> {
        &self.calls
    }

    /// Serves the front on `listener` (plain HTTP) until the returned
    /// server is shut down.
    pub fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        cfg: listener::ListenerConfig,
        metrics: Arc<crate::Metrics>,
    ) -> listener::Served {
        let front = self;
        let handler: Handler = Arc::new(move |req, peer| {
            let front = front.clone();
            Box::pin(async move { front.handle(req, peer).await })
        });
        listener::serve(listener, cfg, None, handler, metrics)
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<ProxyBody>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let received = SystemTime::now();
        let started = Instant::now();
        let user = match &self.verifier {
            None => None,
            Some(v) => {
                let Some(token) = bearer(req.headers()) else {
                    return unauthorized(
                        "mcp-warden: a bearer token is required (Authorization: Bearer)",
                    );
                };
                match v.verify(token).await {
                    Ok(u) => Some(u),
                    Err(e) => {
                        tracing::info!(error = %e, "MCP request refused: bearer token not accepted");
                        return unauthorized(&format!(
                            "mcp-warden: the bearer token was not accepted: {e}"
                        ));
                    }
                }
            }
        };
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| session_from_query(req.uri().query()))
            .unwrap_or_default();
        if req.method() != Method::POST {
            return self.forward_stream(req, session).await;
        }
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (parts, body) = req.into_parts();
        let bytes = match crate::recording::hook::collect_limited(body, self.max_body).await {
            Ok(b) => b,
            Err(e) => {
                let status = match e {
                    crate::error::Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return json_response(
                    status,
                    &jr::error_response(
                        None,
                        jr::INVALID_REQUEST,
                        &format!("mcp-warden: {e}"),
                        None,
                    ),
                );
            }
        };
        // What the sidecar cannot read, it does not forward: a tool call in
        // it could not be judged.
        let batch = match jr::parse_body(&bytes) {
            Ok(b) => b,
            Err(e) => {
                let code = match e {
                    jr::McpError::NotJson { .. } => jr::PARSE_ERROR,
                    _ => jr::INVALID_REQUEST,
                };
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &jr::error_response(None, code, &format!("mcp-warden: {e}"), None),
                );
            }
        };
        let incoming = Incoming {
            session: &session,
            user: user.as_ref(),
            received,
            started,
            path: &path,
            peer,
            user_agent: &user_agent,
        };
        let loaded = (self.policy)();
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        let mut held = Vec::new();
        for m in &batch.messages {
            match m.tool_call() {
                None => {}
                Some(Err(e)) => {
                    let id = match m {
                        Message::Request { id, .. } => Some(id),
                        _ => None,
                    };
                    return json_response(
                        StatusCode::OK,
                        &jr::error_response(
                            id,
                            jr::INVALID_REQUEST,
                            &format!("mcp-warden: {e}"),
                            None,
                        ),
                    );
                }
                Some(Ok(tc)) => {
                    let mut arguments = tc.arguments;
                    jr::mask_arguments(&loaded.masker, &mut arguments);
                    // `users:`/`groups:` on a tool rule judge the caller.
                    let who = Identity {
                        end_user: incoming.user.cloned(),
                        ..self.identity.clone()
                    };
                    let decision = policy::evaluate_tool(&loaded.policy, &tc.name, &who);
                    let pending = self.pending(&incoming, tc.id, tc.name, arguments, decision);
                    if !pending.decision.blocks() {
                        allowed.push(pending);
                    } else if pending.decision.action == Action::Approve && self.approvals.is_some()
                    {
                        held.push(pending);
                    } else {
                        refused.push(pending);
                    }
                }
            }
        }
        if refused.is_empty()
            && !(allowed.is_empty() && held.is_empty())
            && self.recorder.must_refuse()
        {
            self.recorder.count_refused_request();
            let why = "mcp-warden: the recording is unavailable (spool full or unwritable); tool calls are refused until it recovers";
            let calls = held.into_iter().chain(allowed).chain(refused);
            return self.refuse(
                &batch,
                &session,
                calls.map(|p| (p, None)).collect(),
                Some(why),
            );
        }
        if !refused.is_empty() {
            // Nobody is asked about a call that cannot be forwarded anyway.
            let blocker = refused[0].call.tool.clone();
            let mut calls: Vec<_> = refused.into_iter().map(|p| (p, None)).collect();
            calls.extend(held.into_iter().map(|p| {
                let why = not_forwarded(&blocker);
                (p, Some(why))
            }));
            calls.extend(allowed.into_iter().map(|p| (p, None)));
            return self.refuse(&batch, &session, calls, None);
        }
        if held.is_empty() {
            return self.forward(parts, bytes, &session, allowed).await;
        }
        // The SSE transport's client sends a session's messages one after
        // the other, each waiting for its POST's answer, and reads the
        // answers from its GET stream: the POST is accepted at once and the
        // call waits for its approval on its own.
        if self.sse_streams().contains_key(&session) {
            let front = self.clone();
            tokio::spawn(async move {
                let resp = front
                    .hold_and_forward(parts, bytes, batch, session, allowed, held)
                    .await;
                // The server's own answer to the POST: read to its end, so
                // its tap sees it.
                let _ = resp.into_body().collect().await;
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::ACCEPTED;
            return r;
        }
        self.hold_and_forward(parts, bytes, batch, session, allowed, held)
            .await
    }

    /// Holds the calls an enforced `approve` tool rule matched until a
    /// person decides (the approvals' AccessRequests, one per call, asked
    /// at once); all approved: they are forwarded with the rest of their
    /// body, as allowed calls that name their approval. Otherwise the body
    /// is refused, each held call with its decision.
    async fn hold_and_forward(
        self: Arc<Self>,
        parts: http::request::Parts,
        bytes: Bytes,
        batch: jr::Batch,
        session: String,
        mut allowed: Vec<PendingCall>,
        held: Vec<PendingCall>,
    ) -> Response<ProxyBody> {
        let Some(approvals) = self.approvals.clone() else {
            let calls = held.into_iter().chain(allowed).map(|p| (p, None));
            return self.refuse(&batch, &session, calls.collect(), None);
        };
        let answers = futures::future::join_all(held.iter().map(|p| {
            let call = ToolCall {
                tool: &p.call.tool,
                session: &p.call.session,
                user: p.call.user.as_deref(),
                masked_arguments: &p.arguments,
            };
            let approvals = approvals.clone();
            async move {
                approvals
                    .hold_tool_call(&p.call.call_id, &call, &p.decision)
                    .await
            }
        }))
        .await;
        let all_approved = answers.iter().all(|a| matches!(a, Answer::Approved { .. }));
        let mut calls = Vec::new();
        let mut ok = Vec::new();
        for (p, a) in held.into_iter().zip(answers) {
            match a {
                Answer::Approved {
                    by,
                    access_request,
                    current,
                } => {
                    if !all_approved {
                        approvals
                            .expire(
                                &current,
                                "its batch holds a tool call that was not approved",
                            )
                            .await;
                        let why = not_forwarded(&p.call.tool);
                        calls.push((p, Some(why)));
                        continue;
                    }
                    match approvals
                        .consume(&p.call.call_id, &current, &by, &access_request)
                        .await
                    {
                        Ok(()) => ok.push((p, by, access_request)),
                        Err(message) => {
                            let m = approval_refusal(&p, &message);
                            calls.push((p, Some(m)));
                        }
                    }
                }
                Answer::Refused { message } => {
                    let m = approval_refusal(&p, &message);
                    calls.push((p, Some(m)));
                }
            }
        }
        if !calls.is_empty() {
            let blocker = calls[0].0.call.tool.clone();
            for (p, by, ar) in ok {
                // Approved and Used, but not forwarded: its event says so.
                let mut p = p;
                p.approval = Some(Approval {
                    by,
                    access_request: ar,
                    grant: false,
                });
                calls.push((p, Some(not_forwarded(&blocker))));
            }
            calls.extend(allowed.into_iter().map(|p| (p, None)));
            return self.refuse(&batch, &session, calls, None);
        }
        for (mut p, by, ar) in ok {
            tracing::info!(tool = %p.call.tool, session = %p.call.session, approved_by = %by, access_request = %ar, "held tool call approved: forwarded");
            p.approval = Some(Approval {
                by,
                access_request: ar,
                grant: false,
            });
            allowed.push(p);
        }
        self.forward(parts, bytes, &session, allowed).await
    }

    /// Forwards a body whose tool calls (`allowed`) may all pass; they are
    /// in flight until their answers pass.
    async fn forward(
        self: Arc<Self>,
        parts: http::request::Parts,
        bytes: Bytes,
        session: &str,
        allowed: Vec<PendingCall>,
    ) -> Response<ProxyBody> {
        let calls: Vec<(jr::RpcId, u64)> = allowed
            .into_iter()
            .map(|p| (p.rpc_id.clone(), self.calls.begin(p)))
            .collect();
        for (id, _) in &calls {
            tracing::debug!(jsonrpc_id = %id, session = %session, "tool call forwarded");
        }
        let req = Request::from_parts(parts, full(bytes));
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(resp) => {
                for (_, key) in calls {
                    if let Some(p) = self.calls.take(key) {
                        self.record(p, CallEnd::NoResponse);
                    }
                }
                return resp;
            }
        };
        if calls.is_empty() {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let mode = if is_event_stream(&parts.headers) {
            Mode::Sse(jr::SseParser::new(self.max_event))
        } else {
            Mode::Json {
                buf: Vec::new(),
                over: false,
            }
        };
        let leave_pending = parts.status == StatusCode::ACCEPTED;
        let scope = Scope::Owned {
            calls,
            leave_pending,
        };
        let tap = Tap::new(body, self.clone(), mode, scope);
        Response::from_parts(parts, tap.boxed_unsync())
    }

    fn pending(
        &self,
        inc: &Incoming<'_>,
        rpc_id: jr::RpcId,
        tool: String,
        arguments: Value,
        decision: policy::Decision,
    ) -> PendingCall {
        PendingCall {
            call: InFlightCall {
                call_id: uuid::Uuid::new_v4().to_string(),
                tool,
                jsonrpc_id: rpc_id.as_json().to_string(),
                session: inc.session.to_string(),
                user: inc.user.map(|u| u.username.clone()),
            },
            rpc_id,
            arguments,
            decision,
            user: inc.user.cloned(),
            received: inc.received,
            started: inc.started,
            path: inc.path.to_string(),
            peer: inc.peer,
            user_agent: inc.user_agent.to_string(),
            approval: None,
        }
    }

    /// Answers a body holding a refused tool call without forwarding any of
    /// it: each refused call gets its error (its own message when one is
    /// given: a held call's decision, or why it was not forwarded); the rest
    /// of a batch gets an error saying it was not forwarded.
    fn refuse(
        &self,
        batch: &jr::Batch,
        session: &str,
        calls: Vec<(PendingCall, Option<String>)>,
        why: Option<&str>,
    ) -> Response<ProxyBody> {
        let blocker = calls
            .iter()
            .find(|(c, m)| m.is_some() || c.decision.blocks())
            .map(|(c, _)| c.call.tool.clone());
        let mut answers = Vec::new();
        let mut answered = Vec::new();
        for (p, given) in calls {
            let rule = p.decision.rule.clone().unwrap_or_default();
            let data =
                json!({"rule": rule, "decision": p.decision.action.as_str(), "tool": p.call.tool});
            let (message, data) = match (why, given) {
                (Some(w), _) => (w.to_string(), None),
                (None, Some(m)) => (m, Some(data)),
                (None, None) if p.decision.blocks() => {
                    let what = match p.decision.action {
                        Action::Approve => {
                            "tool call needs a human's approval, and approvals are not configured: refused"
                        }
                        _ => "tool call denied",
                    };
                    let mut m = format!(
                        "mcp-warden policy: {what} by rule {rule:?} (tool {:?})",
                        p.call.tool
                    );
                    if let Some(msg) = &p.decision.message {
                        m.push_str(": ");
                        m.push_str(msg);
                    }
                    (m, Some(data))
                }
                (None, None) => (not_forwarded(blocker.as_deref().unwrap_or_default()), None),
            };
            tracing::info!(tool = %p.call.tool, rule = ?p.decision.rule, session = %p.call.session, "tool call refused");
            answers.push(jr::error_response(
                Some(&p.rpc_id),
                jr::POLICY_REFUSED,
                &message,
                data,
            ));
            answered.push(p.rpc_id.clone());
            self.record(p, CallEnd::Refused { message });
        }
        // Other requests of a batch are not forwarded either.
        for m in &batch.messages {
            if let Message::Request { id, .. } = m
                && !answered.contains(id)
            {
                answers.push(jr::error_response(
                    Some(id),
                    jr::POLICY_REFUSED,
                    "mcp-warden: not forwarded: its batch holds a refused tool call",
                    None,
                ));
            }
        }
        let body = if batch.is_batch {
            Value::Array(answers)
        } else {
            answers.into_iter().next().unwrap_or(Value::Null)
        };
        // The SSE transport reads answers from its GET stream only: the
        // answer goes there, the POST is accepted as the server would.
        let stream = self.sse_streams().get(session).cloned();
        if let Some(tx) = stream {
            let event = Bytes::from(format!("event: message\ndata: {body}\n\n"));
            if tx.try_send(event).is_ok() {
                let mut r = Response::new(full(""));
                *r.status_mut() = StatusCode::ACCEPTED;
                return r;
            }
        }
        json_response(StatusCode::OK, &body)
    }

    /// GET and DELETE: streamed both ways; an event stream is read for the
    /// answers of its session's calls.
    async fn forward_stream(
        self: Arc<Self>,
        req: Request<ProxyBody>,
        session: String,
    ) -> Response<ProxyBody> {
        let is_get = req.method() == Method::GET;
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if !is_get || !is_event_stream(resp.headers()) {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let tap = Tap::new(
            body,
            self.clone(),
            Mode::Sse(jr::SseParser::new(self.max_event)),
            Scope::Session {
                session,
                legacy: false,
            },
        );
        Response::from_parts(parts, tap.boxed_unsync())
    }

    /// Sends a request to the MCP server; a failure is a 502 with a
    /// JSON-RPC error body.
    async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Response<ProxyBody>> {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = match format!("http://{}{pq}", self.upstream).parse() {
            Ok(u) => u,
            Err(e) => {
                return Err(json_response(
                    StatusCode::BAD_REQUEST,
                    &jr::error_response(
                        None,
                        jr::INVALID_REQUEST,
                        &format!("mcp-warden: bad path: {e}"),
                        None,
                    ),
                ));
            }
        };
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, boxed(body)))
            }
            Err(e) => {
                tracing::warn!(upstream = %self.upstream, error = %e, "MCP server unreachable");
                Err(json_response(
                    StatusCode::BAD_GATEWAY,
                    &jr::error_response(
                        None,
                        -32603,
                        &format!(
                            "mcp-warden: the MCP server at {} is unreachable",
                            self.upstream
                        ),
                        None,
                    ),
                ))
            }
        }
    }

    /// Records a tool call's event (spawned: the response is not held).
    pub(crate) fn record(&self, p: PendingCall, end: CallEnd) {
        let loaded = (self.policy)();
        let end = match end {
            CallEnd::Answered(Outcome::Error { code, message }) => {
                let (masked, _) = loaded.masker.mask_log_line(&message);
                CallEnd::Answered(Outcome::Error {
                    code,
                    message: masked.into_owned(),
                })
            }
            other => other,
        };
        let attrs = RequestAttributes {
            verb: jr::TOOL_CALL_VERB.to_string(),
            path: p.path.split('?').next().unwrap_or("").to_string(),
            ..Default::default()
        };
        let user = match &p.user {
            Some(u) => UserInfo::new(u.username.clone(), "", u.groups.clone(), Default::default()),
            None => UserInfo::new(
                "system:anonymous",
                "",
                vec!["system:unauthenticated".into()],
                Default::default(),
            ),
        };
        let info = audit::RequestInfo {
            audit_id: &p.call.call_id,
            request_uri: &p.path,
            attrs: &attrs,
            user: Arc::new(user),
            impersonated_user: None,
            source_ips: vec![audit::source_ip(p.peer.ip())],
            user_agent: &p.user_agent,
            level: loaded.policy.recording.level,
            received: micro(p.received),
            decision: audit::DecisionInfo {
                decision: p.decision.action.as_str().to_string(),
                rule: p.decision.rule.clone().unwrap_or_default(),
                policy_hash: loaded.short_hash().to_string(),
                enforced: p.decision.enforced,
            },
            pod: self.recorder.pod(),
            cluster: self.recorder.cluster_name(),
        };
        let mut event = jr::tool_call_event(
            info,
            &ToolCallRecord {
                call: &p.call,
                arguments: &p.arguments,
                end: &end,
                ended: micro(SystemTime::now()),
            },
        );
        if let Some(a) = &p.approval {
            let ann = &mut event.annotations;
            ann.insert(crate::approval::ANN_APPROVED_BY.into(), a.by.clone());
            ann.insert(
                crate::approval::ANN_ACCESS_REQUEST.into(),
                a.access_request.clone(),
            );
        }
        tracing::info!(
            tool = %p.call.tool,
            outcome = end.name(),
            session = %p.call.session,
            duration_ms = p.started.elapsed().as_millis() as u64,
            "tool call"
        );
        let recorder = self.recorder.clone();
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            recorder.stats().events_lost.inc();
            tracing::error!(audit_id = %event.audit_id, "no runtime to record the tool call on");
            return;
        };
        h.spawn(async move {
            let _ = recorder.record(&event).await;
        });
    }
}
