//! The request pipeline: authenticate → parse → [bodies a `when:` rule
//! reads] → decide → record request → forward → transform response →
//! record response.
//!
//! Each step is a small function; the hooks of [`crate::hooks::Hooks`] are
//! where policy, masking and recording plug in. Every request the sidecar
//! answers itself gets a Kubernetes `Status` (see [`crate::error`]) and is
//! never forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use mcp_warden_shared::attrs::{impersonation_from_headers, parse_request};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::enduser::VerifyBearer;
use crate::error::Refusal;
use crate::forward::{
    Upstream, is_upgrade_request, strip_hop_by_hop, strip_impersonation, strip_untrusted,
};
use crate::hooks::{BoxError, Hooks, ProxyBody, RequestContext, RequestRecord, TunnelIo, boxed};
use crate::local::LocalToken;
use crate::metrics::{Metrics, StreamGuard, VerbLabels};
use crate::recording::hook::{DEFAULT_MAX_BODY_BYTES, collect_limited};
use crate::token::TokenSource;

/// Shared state of the app-facing server.
pub struct ProxyState {
    /// The token the app must present.
    pub local_token: LocalToken,
    /// Pooled upstream clients.
    pub upstream: Upstream,
    /// The real token.
    pub token: Arc<TokenSource>,
    /// Caps on requests in flight (429 past them).
    pub inflight: crate::inflight::Inflight,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Policy, masking and recording hooks.
    pub hooks: Hooks,
    /// Cancelled at shutdown: ends open streams and tunnels.
    pub streams_closed: CancellationToken,
    /// Verifies end-user tokens (`--oidc-*`); `None`: only the local token.
    pub end_users: Option<Arc<dyn VerifyBearer>>,
    /// Requests of an end user go upstream impersonating them
    /// (`--impersonate-end-user`), with this pod name as the extra
    /// `mcp-warden.io-pod`.
    pub impersonate_end_user: Option<ImpersonateEndUser>,
}

/// How an end user's requests are sent upstream when impersonated.
#[derive(Debug, Clone, Default)]
pub struct ImpersonateEndUser {
    /// The pod's name, sent as `Impersonate-Extra-mcp-warden.io-pod`.
    pub pod: Option<String>,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState").finish_non_exhaustive()
    }
}

/// Handles one request from the app. Never fails: errors become Status responses.
pub async fn handle(
    state: Arc<ProxyState>,
    req: Request<ProxyBody>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut ctx = new_context(&req, peer);
    let resp = match pipeline(&state, &mut ctx, req).await {
        Ok(resp) => resp,
        Err(Answered { refusal, record }) => {
            let status = refusal.status();
            if let Refusal::Upstream(_) | Refusal::UpstreamToken(_) = &refusal {
                tracing::warn!(request_id = %ctx.request_id, error = %refusal, "request failed");
            }
            match record {
                Some(record) => record.refused(&ctx, &status),
                None => state.hooks.record.refused(&ctx, &status),
            }
            crate::error::status_response(&status)
        }
    };
    log_request(&state, &ctx, resp.status());
    Ok(resp)
}

fn new_context<B>(req: &Request<B>, peer: SocketAddr) -> RequestContext {
    RequestContext {
        // From the thread's CSPRNG (seeded from the OS): `Uuid::new_v4`
        // asks the kernel (`getrandom`) for every request.
        request_id: uuid::Builder::from_random_bytes(rand::random()).into_uuid(),
        started: Instant::now(),
        received_at: SystemTime::now(),
        peer,
        method: req.method().clone(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        attrs: None,
        impersonation: Default::default(),
        end_user: None,
        bodies: None,
        decision: None,
        is_upgrade: false,
        is_stream: false,
    }
}

/// A request the sidecar answers itself, with its recording when that had
/// begun (the recording then ends with the refusal).
struct Answered {
    refusal: Refusal,
    record: Option<Box<dyn RequestRecord>>,
}

impl From<Refusal> for Answered {
    fn from(refusal: Refusal) -> Self {
        Answered {
            refusal,
            record: None,
        }
    }
}

async fn pipeline(
    state: &ProxyState,
    ctx: &mut RequestContext,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Answered> {
    ctx.end_user = authenticate_request(state, req.headers()).await?;
    parse(ctx, &req)?;
    if ctx.end_user.is_some() && !ctx.impersonation.is_empty() {
        return Err(Refusal::EndUserImpersonates.into());
    }
    let mut req = crate::bodies::read_for_decision(state, ctx, req).await?;
    decide(state, ctx).await?;
    let admitted = state.inflight.admit(ctx)?;
    let client_upgrade = ctx.is_upgrade.then(|| hyper::upgrade::on(&mut req));
    let req = check_json_patch(state, ctx, req).await?;
    // From here on the request's recording travels with it: handed back
    // with the response or the refusal, or dropped with the request.
    let (upstream_req, record) = prepare_upstream_request(state, ctx, req).await?;
    let mut resp = match forward_once_more_on_rotation(state, ctx, upstream_req).await {
        Ok(resp) => resp,
        Err(refusal) => {
            return Err(Answered {
                refusal,
                record: Some(record),
            });
        }
    };
    if let Some(client_upgrade) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return Ok(admitted.hold(tunnel(state, ctx, record, client_upgrade, &mut resp)));
    }
    if ctx.is_upgrade {
        // Refused upgrade (a Status, a redirect...): an ordinary response,
        // masked and recorded as one.
        ctx.is_upgrade = false;
        ctx.is_stream = ctx.attrs.as_ref().is_some_and(|a| a.long_running);
    }
    let resp = respond(state, ctx, record, resp).await;
    Ok(admitted.hold(resp))
}

/// Step 5 with its retry: a bodiless request the upstream answers 401 is
/// sent again when the token has just been rotated.
async fn forward_once_more_on_rotation(
    state: &ProxyState,
    ctx: &RequestContext,
    upstream_req: Request<ProxyBody>,
) -> Result<Response<Incoming>, Refusal> {
    let replay = replayable(ctx, &upstream_req);
    let resp = forward(state, ctx, upstream_req).await?;
    if resp.status() == StatusCode::UNAUTHORIZED
        && let Some(replay) = replay
        && let Some(retry) = retry_with_rotated_token(state, replay)?
    {
        tracing::info!(request_id = %ctx.request_id, "upstream refused the token; retrying with the rotated one");
        // Boxed: the retry is rare, and a second `forward` held inline
        // would grow every request's future.
        return Box::pin(forward(state, ctx, retry)).await;
    }
    Ok(resp)
}

/// Step 1: the local token, `Authorization: Bearer <token>` with the scheme
/// in any case.
pub fn authenticate(local: &LocalToken, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = bearer_token(headers)?;
    if local.matches(token) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
}

/// Step 1 with end users: the local token (`None`: the app itself), or a
/// JWT the end-user verifier accepts (the user it names). A JWT it rejects
/// is a 401 naming why; neither the token nor its claims are logged.
pub async fn authenticate_request(
    state: &ProxyState,
    headers: &HeaderMap,
) -> Result<Option<Arc<crate::enduser::EndUser>>, Refusal> {
    let token = bearer_token(headers)?;
    if state.local_token.matches(token) {
        return Ok(None);
    }
    let Some(verifier) = &state.end_users else {
        return Err(Refusal::Unauthorized);
    };
    if !crate::enduser::looks_like_jwt(token) {
        return Err(Refusal::Unauthorized);
    }
    let token = std::str::from_utf8(token).map_err(|_| Refusal::Unauthorized)?;
    match verifier.verify(token).await {
        Ok(user) => Ok(Some(Arc::new(user))),
        Err(why) => Err(Refusal::EndUserRejected {
            why: why.to_string(),
        }),
    }
}

/// The token of the one `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<&[u8], Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refusal::Unauthorized);
    };
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|b| *b == b' ') else {
        return Err(Refusal::Unauthorized);
    };
    let (scheme, rest) = bytes.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Refusal::Unauthorized);
    }
    Ok(rest.trim_ascii())
}

/// Step 2: Kubernetes attributes and impersonation; non-canonical paths are
/// refused. An upgrade is honoured only where the sidecar tunnels one (the
/// connect subresources); anywhere else the upgrade headers are dropped
/// (see `prepare_upstream_request`) and the request is an ordinary one,
/// masked and recorded like any other.
fn parse<B: http_body::Body>(ctx: &mut RequestContext, req: &Request<B>) -> Result<(), Refusal> {
    let attrs = parse_request(req.method().as_str(), &ctx.path_and_query)?;
    ctx.impersonation = impersonation_from_headers(req.headers())?;
    let asks_upgrade = is_upgrade_request(req);
    if asks_upgrade && !attrs.upgrade_allowed() && attrs.long_running {
        // A WebSocket watch would be answered 101 and then framed: refused
        // rather than quietly turned into a plain watch the client cannot read.
        return Err(Refusal::Upgrade(
            "a watch over a connection upgrade (WebSocket) is not supported; \
             use a plain HTTP watch",
        ));
    }
    ctx.is_upgrade = asks_upgrade && attrs.upgrade_allowed();
    if ctx.is_upgrade && !req.body().is_end_stream() {
        return Err(Refusal::Upgrade("an upgrade request carries no body"));
    }
    ctx.is_stream = ctx.is_upgrade || attrs.long_running;
    ctx.attrs = Some(attrs);
    Ok(())
}

/// Step 3: the policy hook (with the bodies it asked for, read in step 2b
/// by [`crate::bodies::read_for_decision`]).
async fn decide(state: &ProxyState, ctx: &mut RequestContext) -> Result<(), Refusal> {
    let decision = state.hooks.decide.decide(ctx).await;
    ctx.bodies = None;
    let refusal = decision.refusal.clone();
    ctx.decision = Some(decision);
    match refusal {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// Step 3b: an RFC 6902 JSON Patch is read whole (size-limited) and judged
/// by the transform hook before anything is forwarded: `copy`, `move` and
/// `test` could otherwise make the server read values that masking hides.
/// A JSON Patch that is not JSON is refused here, since what cannot be
/// judged must not reach the server.
async fn check_json_patch(
    state: &ProxyState,
    ctx: &RequestContext,
    req: Request<ProxyBody>,
) -> Result<Request<ProxyBody>, Refusal> {
    if req.method() != http::Method::PATCH || !is_json_patch(req.headers()) {
        return Ok(req);
    }
    // Boxed for the same reason as the retry in
    // `forward_once_more_on_rotation`: rare, and large inline.
    Box::pin(judge_json_patch(state, ctx, req)).await
}

/// The reading and judging part of [`check_json_patch`].
async fn judge_json_patch(
    state: &ProxyState,
    ctx: &RequestContext,
    req: Request<ProxyBody>,
) -> Result<Request<ProxyBody>, Refusal> {
    let (parts, body) = req.into_parts();
    let bytes = collect_limited(body, DEFAULT_MAX_BODY_BYTES).await?;
    let patch: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Refusal::PatchNotJson { why: e.to_string() })?;
    state.hooks.transform.check_json_patch(ctx, &patch)?;
    Ok(Request::from_parts(parts, crate::hooks::full(bytes)))
}

fn is_json_patch(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json-patch+json"))
}

/// Step 4: the request as the upstream gets it: the app's credentials and
/// hop-by-hop headers removed, the recording hook given the body (it
/// returns the request's recording), the real token added last (so no hook
/// ever sees it).
async fn prepare_upstream_request(
    state: &ProxyState,
    ctx: &RequestContext,
    req: Request<ProxyBody>,
) -> Result<(Request<ProxyBody>, Box<dyn RequestRecord>), Answered> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    strip_hop_by_hop(headers, ctx.is_upgrade);
    strip_untrusted(headers);
    let forward_impersonation = ctx
        .decision
        .as_ref()
        .is_some_and(|d| d.forward_impersonation);
    if !forward_impersonation {
        strip_impersonation(headers);
    }
    // The request's own path and query, already parsed (and checked),
    // when it still is what the context recorded: parsing it again cost
    // ~900 instructions a request.
    let uri = match parts.uri.path_and_query() {
        Some(pq) if pq.as_str() == ctx.path_and_query => state.upstream.uri_with(pq.clone()),
        _ => state.upstream.uri_for(&ctx.path_and_query),
    };
    parts.uri = uri.map_err(|e| Refusal::Build(e.to_string()))?;
    // The client picks HTTP/2 per connection when the upstream offers it.
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    state.hooks.transform.prepare_request(ctx, &mut parts);
    let (body, record) = state.hooks.record.request(ctx, &parts, body).await?;
    let token = match state.token.header() {
        Ok(token) => token,
        Err(e) => {
            return Err(Answered {
                refusal: e.into(),
                record: Some(record),
            });
        }
    };
    parts.headers.insert(header::AUTHORIZATION, token);
    // The sidecar's own impersonation of the end user, added after the
    // app's Impersonate-* headers were judged and stripped.
    if let (Some(user), Some(imp)) = (&ctx.end_user, &state.impersonate_end_user) {
        for (name, value) in crate::enduser::impersonation_headers(user, imp.pod.as_deref()) {
            // Bytes, not str: a UTF-8 name is sent as is (kube-apiserver
            // reads header values as bytes); control characters are refused.
            match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(v) => {
                    parts.headers.append(name, v);
                }
                Err(_) => {
                    return Err(Answered {
                        refusal: Refusal::EndUserRejected {
                            why: "the user or a group name cannot be sent in a header".into(),
                        },
                        record: Some(record),
                    });
                }
            }
        }
    }
    Ok((Request::from_parts(parts, body), record))
}

/// What is needed to send a bodiless request again.
struct Replay {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
}

/// A request without a body (GET, DELETE without options, ...) can be sent
/// again if the upstream refuses a token that has just been rotated.
fn replayable(ctx: &RequestContext, req: &Request<ProxyBody>) -> Option<Replay> {
    use http_body::Body as _;
    (!ctx.is_upgrade && req.body().is_end_stream()).then(|| Replay {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    })
}

/// After a 401: re-read the token file now; if the token changed, the
/// request again with the new one (a rotation the check interval had not
/// noticed yet). `None` when the token is unchanged: the 401 stands.
fn retry_with_rotated_token(
    state: &ProxyState,
    replay: Replay,
) -> Result<Option<Request<ProxyBody>>, Refusal> {
    state.token.invalidate();
    let fresh = state.token.header()?;
    if replay.headers.get(header::AUTHORIZATION) == Some(&fresh) {
        return Ok(None);
    }
    let mut req = Request::new(crate::hooks::full(Bytes::new()));
    *req.method_mut() = replay.method;
    *req.uri_mut() = replay.uri;
    *req.headers_mut() = replay.headers;
    req.headers_mut().insert(header::AUTHORIZATION, fresh);
    Ok(Some(req))
}

/// Step 5: send upstream; latency is measured to the response headers.
async fn forward(
    state: &ProxyState,
    ctx: &RequestContext,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, Refusal> {
    let t0 = Instant::now();
    // Long-running requests (watch, follow) go over connections of their
    // own (forward::StreamPool): multiplexed on the one pooled HTTP/2
    // connection they would hit the upstream's concurrent-stream limit, and
    // every watch past it would queue forever (the 1,000-watch benchmark).
    let result = state
        .upstream
        .send(req, ctx.is_upgrade || ctx.is_stream)
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    match result {
        Ok(resp) => {
            state
                .metrics
                .upstream_latency
                .get_or_create(&VerbLabels {
                    verb: ctx.verb().to_string(),
                })
                .observe(elapsed);
            Ok(resp)
        }
        Err(e) => {
            state.metrics.upstream_errors.inc();
            Err(Refusal::Upstream(error_chain(&e)))
        }
    }
}

/// `e`'s message, then each of its sources', joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Step 6: the response for the app: hop-by-hop headers removed, the
/// transform hook (masking), the request's recording, and for streams the
/// shutdown-aware body.
async fn respond(
    state: &ProxyState,
    ctx: &RequestContext,
    record: Box<dyn RequestRecord>,
    resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let resp = Response::from_parts(parts, boxed(body));
    let resp = match state.hooks.transform.transform(ctx, resp).await {
        Ok(r) => r,
        Err(refusal) => {
            tracing::warn!(request_id = %ctx.request_id, message = %refusal, "response replaced by the transform hook");
            refusal.response()
        }
    };
    let resp = record.response(ctx, resp);
    if ctx.is_stream {
        let guard = StreamGuard::new(&state.metrics);
        let closed = state.streams_closed.clone().cancelled_owned();
        resp.map(|b| {
            boxed(StreamBody {
                inner: b,
                closed: Box::pin(closed),
                _guard: guard,
            })
        })
    } else {
        resp
    }
}

/// Upgraded connections: answer 101 to the app and copy bytes both ways
/// until either side closes or the sidecar shuts down.
fn tunnel(
    state: &ProxyState,
    ctx: &RequestContext,
    record: Box<dyn RequestRecord>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    upstream_resp: &mut Response<Incoming>,
) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut *upstream_resp);
    let mut headers = upstream_resp.headers().clone();
    strip_hop_by_hop(&mut headers, true);
    state.hooks.transform.tunnel_headers(ctx, &mut headers);
    let mut resp = Response::new(crate::hooks::full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    let guard = StreamGuard::new(&state.metrics);
    let closed = state.streams_closed.clone();
    let request_id = ctx.request_id;
    let tap = record.tunnel_tap(ctx, resp.headers());
    tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%request_id, error = %e, "upgrade failed");
                if let Some(tap) = tap {
                    tap.finished().await;
                }
                return;
            }
        };
        let client: Box<dyn TunnelIo> = Box::new(TokioIo::new(client));
        let mut client = match &tap {
            Some(t) => t.wrap(client),
            None => client,
        };
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
                Ok((up, down)) => tracing::debug!(%request_id, bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(e) => tracing::debug!(%request_id, error = %e, "tunnel ended"),
            },
            _ = closed.cancelled() => tracing::debug!(%request_id, "tunnel closed by shutdown"),
        }
        drop(client);
        if let Some(tap) = tap {
            tap.finished().await;
        }
    });
    record.response(ctx, resp)
}

fn log_request(state: &ProxyState, ctx: &RequestContext, code: StatusCode) {
    let verb = ctx.verb();
    let resource = ctx.resource();
    state.metrics.count_request(verb, &resource, code.as_u16());
    if !crate::logging::wants_access_log(verb, code.as_u16()) {
        return;
    }
    let (namespace, name, group) = ctx
        .attrs
        .as_ref()
        .map(|a| (a.namespace.as_str(), a.name.as_str(), a.api_group.as_str()))
        .unwrap_or(("", "", ""));
    let decision = ctx
        .decision
        .as_ref()
        .map(|d| d.action.as_str())
        .unwrap_or("");
    let rule = ctx
        .decision
        .as_ref()
        .and_then(|d| d.rule.as_deref())
        .unwrap_or("");
    let path = ctx.path_and_query.split('?').next().unwrap_or("");
    tracing::info!(
        request_id = %ctx.request_id,
        verb,
        group,
        resource = %resource,
        namespace,
        name,
        path,
        code = code.as_u16(),
        duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        decision,
        rule,
        stream = ctx.is_stream,
        end_user = ctx.end_user.as_deref().map(|u| u.username.as_str()).unwrap_or(""),
        "request"
    );
}

/// A streamed body that ends cleanly when the sidecar shuts down, and counts
/// as an open stream while alive.
struct StreamBody {
    inner: ProxyBody,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    _guard: StreamGuard,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // The body may end early at shutdown, so no exact length is promised.
        http_body::SizeHint::default()
    }
}

/// `HeaderValue` of a bearer token, for tests and tools.
pub fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for x in v {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(x).unwrap());
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        let t = LocalToken::generate();
        let tok = t.expose().to_string();
        assert!(authenticate(&t, &headers(&[&format!("Bearer {tok}")])).is_ok());
        assert!(authenticate(&t, &headers(&[&format!("bearer {tok}")])).is_ok());
        assert!(authenticate(&t, &headers(&[&format!("BEARER  {tok}")])).is_ok());
        assert!(authenticate(&t, &headers(&[])).is_err());
        assert!(authenticate(&t, &headers(&[&format!("Basic {tok}")])).is_err());
        assert!(authenticate(&t, &headers(&[&format!("Bearer {tok}x")])).is_err());
        assert!(
            authenticate(
                &t,
                &headers(&[&format!("Bearer {}", &tok[..tok.len() - 1])])
            )
            .is_err()
        );
        assert!(authenticate(&t, &headers(&[&format!("Bearer{tok}")])).is_err());
        assert!(
            authenticate(
                &t,
                &headers(&[&format!("Bearer {tok}"), &format!("Bearer {tok}")])
            )
            .is_err()
        );
    }
}
