//! Just-in-time approvals: the [`DecideHook`] that holds a request while a
//! human decides.
//!
//! [`ApprovalDecider`] wraps the [`PolicyDecider`]. On an enforced `approve`
//! decision it creates an `AccessRequest` (`mcp-warden.io/v1alpha1`) in the
//! pod's namespace with the sidecar's own (real) token, optionally notifies
//! `--approval-notify-url`, and watches that object: Approved → the request
//! is forwarded (the AccessRequest is marked Used, the approver is recorded
//! as `mcp-warden.io/approved-by`); Denied, deleted, or no decision within
//! `--approval-timeout` → 403 `Status` naming the AccessRequest (on timeout it
//! is marked Expired). Waiting is async: a held request never blocks others.
//!
//! Reuse: when the client went away while waiting, the approval that comes
//! later is valid for one identical request (same `requestHash`) within
//! `--approval-reuse-window` of the decision, and is then marked Used.
//!
//! Built-in rule ahead of the policy: the app can never read or change
//! `accessrequests.mcp-warden.io` through the sidecar (else it could approve
//! its own requests with the sidecar's token).
//!
//! Limitation: the decide hook sees no request body, so `requestHash` covers
//! the method and the path with query only. Reuse is therefore limited to
//! GET/HEAD/DELETE/OPTIONS (a DELETE's DeleteOptions body is not covered); a
//! create, update or patch goes through only as the request that was held.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::identity::Identity;
use mcp_warden_shared::policy;
use serde_json::{Value, json};
use sha2::Digest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{ApprovalConfig, Config};
use crate::error::Refusal;
use crate::forward::{self, Upstream};
use crate::hooks::{self, DecideHook, RequestContext};
use crate::policy_store::PolicyDecider;
use crate::token::TokenSource;

/// Recorded on the events of approved requests: who approved.
pub const ANN_APPROVED_BY: &str = "mcp-warden.io/approved-by";
/// Recorded on the events of approved requests: `NAMESPACE/NAME` of the AccessRequest.
pub const ANN_ACCESS_REQUEST: &str = "mcp-warden.io/access-request";

/// Group of the AccessRequest resource.
pub const GROUP: &str = "mcp-warden.io";
/// Plural of the AccessRequest resource.
pub const RESOURCE: &str = "accessrequests";
/// Rule name of the built-in refusal of AccessRequest access by the app.
pub const BUILTIN_RULE: &str = "mcp-warden:accessrequests";

/// Bound on each API call the decider makes (not on the wait itself).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest single watch call (re-established until the approval timeout).
const WATCH_SLICE: Duration = Duration::from_secs(60);
/// Largest API response read (lists of AccessRequests included).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Errors of the approval machinery (all end in a 403, fail closed).
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("building the approval client: {0}")]
    Setup(String),
    #[error("the upstream token is not readable: {0}")]
    Token(String),
    #[error("{method} {path}: {message}")]
    Call {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("{method} {path}: HTTP {code}: {message}")]
    Api {
        method: &'static str,
        path: String,
        code: u16,
        message: String,
    },
    #[error("--approval-notify-url {0:?}: must be https, or http to a loopback address")]
    NotifyUrl(String),
}

/// At start, an approval error is a configuration error naming its setting.
impl From<ApprovalError> for crate::config::ConfigError {
    fn from(e: ApprovalError) -> Self {
        let (flag, env) = match &e {
            ApprovalError::NotifyUrl(_) => {
                ("approval-notify-url", "MCP_WARDEN_APPROVAL_NOTIFY_URL")
            }
            ApprovalError::Token(_) => ("upstream-token-file", "MCP_WARDEN_UPSTREAM_TOKEN_FILE"),
            _ => ("upstream-ca-file", "MCP_WARDEN_UPSTREAM_CA_FILE"),
        };
        crate::config::ConfigError {
            flag,
            env,
            message: e.to_string(),
        }
    }
}

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

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The AccessRequest the sidecar creates.
#[allow(clippy::too_many_arguments)]
pub fn access_request(
    attrs: &RequestAttributes,
    hash: &str,
    requester: &str,
    pod: &str,
    rule: &str,
    message: &str,
    expires_at: OffsetDateTime,
) -> Value {
    let mut spec = json!({
        "verb": attrs.verb, "resource": attrs.resource,
        "requestHash": hash, "requester": {"serviceAccount": requester},
        "expiresAt": rfc3339(expires_at),
    });
    // Optional strings are omitted when empty, never sent as "" or null: a
    // kube-apiserver 1.20 built with Go >= 1.18 reads "" as null in its CRD
    // schema validation ("must be of type string: \"null\""), and an absent
    // field is what every server and every reader expects for "none".
    for (key, value) in [
        ("group", attrs.api_group.as_str()),
        ("subresource", attrs.subresource.as_str()),
        ("namespace", attrs.namespace.as_str()),
        ("name", attrs.name.as_str()),
        ("summary", summary(attrs).as_str()),
        ("rule", rule),
        ("message", message),
    ] {
        if !value.is_empty() {
            spec[key] = json!(value);
        }
    }
    if !pod.is_empty() {
        spec["requester"]["pod"] = json!(pod);
    }
    json!({
        "apiVersion": format!("{GROUP}/v1alpha1"),
        "kind": "AccessRequest",
        "metadata": {"generateName": name_prefix(attrs), "labels": {"app.kubernetes.io/managed-by": "mcp-warden"}},
        "spec": spec,
    })
}

fn st<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// An approval of ours for `hash` that is still reusable at `now`.
pub fn reusable(
    item: &Value,
    hash: &str,
    requester: &str,
    now: OffsetDateTime,
    window: Duration,
) -> bool {
    if st(item, "/spec/requestHash") != hash
        || st(item, "/spec/requester/serviceAccount") != requester
        || st(item, "/status/state") != "Approved"
    {
        return false;
    }
    let Ok(at) = OffsetDateTime::parse(st(item, "/status/decidedAt"), &Rfc3339) else {
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

/// How waiting ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Approved { by: String },
    Denied { by: String, reason: String },
    Expired { by: String },
    Deleted,
    TimedOut,
}

fn outcome_of(obj: &Value) -> Option<Outcome> {
    let by = st(obj, "/status/decidedBy").to_string();
    match st(obj, "/status/state") {
        "Approved" => Some(Outcome::Approved { by }),
        "Denied" => Some(Outcome::Denied {
            by,
            reason: st(obj, "/status/reason").to_string(),
        }),
        "Expired" => Some(Outcome::Expired { by }),
        // Used by someone else: not ours to forward.
        "Used" => Some(Outcome::Deleted),
        _ => None,
    }
}

/// Thin client for the AccessRequest API with the sidecar's real token.
struct Api {
    upstream: Upstream,
    token: Arc<TokenSource>,
    namespace: String,
}

impl Api {
    fn collection(&self) -> String {
        format!(
            "/apis/{GROUP}/v1alpha1/namespaces/{}/{RESOURCE}",
            self.namespace
        )
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<hooks::ProxyBody>, ApprovalError> {
        let mname: &'static str = method_name(&method);
        let call = |message: String| ApprovalError::Call {
            method: mname,
            path: path.to_string(),
            message,
        };
        let uri = self
            .upstream
            .uri_for(path)
            .map_err(|e| call(e.to_string()))?;
        let auth = self
            .token
            .header()
            .map_err(|e| ApprovalError::Token(e.to_string()))?;
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| call(e.to_string()))?,
            None => Vec::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "mcp-warden-sidecar/approvals");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let mut req = req
            .body(hooks::full(Bytes::from(bytes)))
            .map_err(|e| call(e.to_string()))?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        Ok(req)
    }

    /// One JSON call, bounded by [`CALL_TIMEOUT`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApprovalError> {
        let mname = method_name(&method);
        let req = self.request(method, path, body)?;
        let call = |message: String| ApprovalError::Call {
            method: mname,
            path: path.to_string(),
            message,
        };
        let fut = async {
            let resp = self
                .upstream
                .send(req, false)
                .await
                .map_err(|e| call(e.to_string()))?;
            let code = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| call(e.to_string()))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !code.is_success() {
                let message = v
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
                return Err(ApprovalError::Api {
                    method: mname,
                    path: path.to_string(),
                    code: code.as_u16(),
                    message,
                });
            }
            Ok(v)
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err(call(format!("no answer within {CALL_TIMEOUT:?}"))))
    }

    async fn set_status(
        &self,
        obj: &Value,
        state: &str,
        reason: &str,
    ) -> Result<Value, ApprovalError> {
        let name = st(obj, "/metadata/name");
        let mut o = obj.clone();
        o["status"]["state"] = json!(state);
        if !reason.is_empty() {
            o["status"]["reason"] = json!(reason);
        }
        let path = format!("{}/{name}/status", self.collection());
        self.call(Method::PUT, &path, Some(&o)).await
    }

    /// Watches one AccessRequest (from `rv`) until it has a decision or the
    /// slice ends; returns the last object seen.
    async fn watch_once(
        &self,
        name: &str,
        rv: &str,
        slice: Duration,
    ) -> Result<Option<Value>, ApprovalError> {
        let path = format!(
            "{}?watch=1&fieldSelector=metadata.name%3D{name}&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds={}",
            self.collection(),
            slice.as_secs().max(1)
        );
        let req = self.request(Method::GET, &path, None)?;
        let call = |message: String| ApprovalError::Call {
            method: "WATCH",
            path: path.clone(),
            message,
        };
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.upstream.send(req, false))
            .await
            .map_err(|_| call("no answer".into()))?
            .map_err(|e| call(e.to_string()))?;
        if resp.status() != StatusCode::OK {
            return Err(ApprovalError::Api {
                method: "WATCH",
                path: path.clone(),
                code: resp.status().as_u16(),
                message: "watch refused".into(),
            });
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut last = None;
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| call(e.to_string()))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                if buf.len() > MAX_RESPONSE {
                    return Err(call("watch event too large".into()));
                }
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    match st(&ev, "/type") {
                        "ADDED" | "MODIFIED" => {
                            let obj = ev["object"].clone();
                            let decided = outcome_of(&obj).is_some();
                            last = Some(obj);
                            if decided {
                                return Ok(());
                            }
                        }
                        "DELETED" => {
                            last = Some(json!({"status": {"state": "Used"}, "deleted": true}));
                            return Ok(());
                        }
                        "ERROR" => return Ok(()),
                        _ => {}
                    }
                }
            }
            Ok(())
        };
        // The server ends the watch after timeoutSeconds; this bound is a backstop.
        if let Ok(r) = tokio::time::timeout(slice + Duration::from_secs(5), read).await {
            r?;
        }
        Ok(last)
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "REQUEST",
    }
}

/// POSTs Slack-compatible `{"text": ...}` notifications.
struct Notifier {
    url: Uri,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<Bytes>,
    >,
}

impl Notifier {
    fn new(url: Uri) -> Result<Self, ApprovalError> {
        let loopback = url
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        match url.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(ApprovalError::NotifyUrl(url.to_string())),
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ApprovalError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(conn);
        Ok(Notifier { url, client })
    }

    async fn send(&self, text: String) {
        let body = json!({ "text": text }).to_string();
        let req = match Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(Bytes::from(body)))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "approval notification not built");
                return;
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(r)) if r.status().is_success() => {}
            Ok(Ok(r)) => {
                tracing::warn!(code = r.status().as_u16(), "approval notification refused")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "approval notification failed"),
            Err(_) => tracing::warn!("approval notification timed out"),
        }
    }
}

/// The policy decider with approvals (see the module docs).
pub struct ApprovalDecider {
    inner: PolicyDecider,
    api: Arc<Api>,
    requester: String,
    pod: String,
    config: ApprovalConfig,
    notifier: Option<Arc<Notifier>>,
}

impl std::fmt::Debug for ApprovalDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalDecider")
            .field("requester", &self.requester)
            .field("namespace", &self.api.namespace)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ApprovalDecider {
    /// Wraps `inner`. AccessRequests go to the sidecar's upstream, with its
    /// token, in `sidecar.namespace()`; `identity` is the pod's (the
    /// requester the webhook will not let approve).
    pub fn new(
        inner: PolicyDecider,
        sidecar: &Config,
        identity: &Identity,
        config: ApprovalConfig,
    ) -> Result<Self, ApprovalError> {
        let roots = forward::load_roots(&sidecar.upstream_ca_file)
            .map_err(|e| ApprovalError::Setup(e.to_string()))?;
        let upstream = Upstream::new(
            sidecar.upstream.clone(),
            roots,
            sidecar.upstream_connect_timeout,
        )
        .map_err(|e| ApprovalError::Setup(e.to_string()))?;
        let notifier = config
            .approval_notify_url
            .clone()
            .map(Notifier::new)
            .transpose()?
            .map(Arc::new);
        Ok(ApprovalDecider {
            inner,
            api: Arc::new(Api {
                upstream,
                token: Arc::new(TokenSource::new(&sidecar.upstream_token_file)),
                namespace: sidecar.namespace(),
            }),
            requester: identity.username.clone(),
            pod: sidecar
                .pod_name
                .clone()
                .or_else(|| identity.pod_name.clone())
                .unwrap_or_default(),
            config,
            notifier,
        })
    }

    fn refuse(attrs: &RequestAttributes, rule: Option<String>, message: String) -> hooks::Decision {
        hooks::Decision::refused(
            hooks::Action::Approve,
            rule,
            Refusal::forbidden(attrs, message),
        )
    }

    /// Holds the request until it is approved, denied or times out.
    async fn hold(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
        d: &policy::Decision,
    ) -> hooks::Decision {
        let hash = request_hash(ctx.method.as_str(), &ctx.path_and_query, b"");
        let rule = d.rule.clone();
        let granted = |by: String, access_request: String| {
            hooks::Decision::approved(rule.clone(), hooks::Approval { by, access_request })
        };
        let ns = self.api.namespace.clone();
        // 1. An approval whose client went away? Only where the hash covers
        // what matters: the decide hook sees no body, so a create, update or
        // patch is only ever let through as the very request that was held.
        let reuse = if reusable_method(&ctx.method) {
            match self.try_reuse(&hash).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot look for reusable approvals");
                    None
                }
            }
        } else {
            None
        };
        if let Some((by, name)) = reuse {
            tracing::info!(request_id = %ctx.request_id, access_request = %name, approved_by = %by, "reusing an approval");
            return granted(by, format!("{ns}/{name}"));
        }
        // 2. Ask.
        let now = OffsetDateTime::now_utc();
        let expires = now
            + time::Duration::try_from(self.config.approval_timeout)
                .unwrap_or(time::Duration::minutes(5));
        let body = access_request(
            attrs,
            &hash,
            &self.requester,
            &self.pod,
            rule.as_deref().unwrap_or(""),
            d.message.as_deref().unwrap_or(&d.explanation),
            expires,
        );
        let created = match self
            .api
            .call(Method::POST, &self.api.collection(), Some(&body))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot create the AccessRequest");
                return Self::refuse(
                    attrs,
                    rule,
                    format!(
                        "mcp-warden: approval required (rule {:?}) but the AccessRequest could not be created: {e}",
                        d.rule.as_deref().unwrap_or("")
                    ),
                );
            }
        };
        let name = st(&created, "/metadata/name").to_string();
        let ar = format!("{ns}/{name}");
        // Pending, so `kubectl get accessrequests` shows the state column.
        let mut current = match self.api.set_status(&created, "Pending", "").await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "could not mark the AccessRequest Pending");
                created
            }
        };
        tracing::info!(request_id = %ctx.request_id, access_request = %ar, summary = %summary(attrs), rule = rule.as_deref().unwrap_or(""), timeout = ?self.config.approval_timeout, "holding request for approval");
        if let Some(n) = &self.notifier {
            let n = n.clone();
            let text = format!(
                "mcp-warden: {} wants to {} (rule {}). AccessRequest {ar} expires at {}. To allow it, run: kubectl mcp-warden approve {name} -n {ns}",
                self.requester,
                summary(attrs),
                rule.as_deref().unwrap_or("-"),
                rfc3339(expires),
            );
            tokio::spawn(async move { n.send(text).await });
        }
        // 3. Wait.
        let deadline = tokio::time::Instant::now() + self.config.approval_timeout;
        let outcome = loop {
            if let Some(o) = outcome_of(&current) {
                break o;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break Outcome::TimedOut;
            }
            let rv = st(&current, "/metadata/resourceVersion").to_string();
            let slice = left.min(WATCH_SLICE);
            match tokio::time::timeout(left, self.api.watch_once(&name, &rv, slice)).await {
                Err(_) => break Outcome::TimedOut,
                Ok(Ok(Some(obj))) if obj.get("deleted").is_some() => break Outcome::Deleted,
                Ok(Ok(Some(obj))) => current = obj,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    // Watch ended or failed: re-read (bounded) and go on.
                    tokio::time::sleep(Duration::from_millis(200).min(left)).await;
                    match self
                        .api
                        .call(
                            Method::GET,
                            &format!("{}/{name}", self.api.collection()),
                            None,
                        )
                        .await
                    {
                        Ok(o) => current = o,
                        Err(ApprovalError::Api { code: 404, .. }) => break Outcome::Deleted,
                        Err(e) => tracing::debug!(error = %e, "re-reading the AccessRequest"),
                    }
                }
            }
        };
        match outcome {
            Outcome::Approved { by } => {
                // Single use: consume it before forwarding.
                match self.api.set_status(&current, "Used", "").await {
                    Ok(_) => {
                        tracing::info!(request_id = %ctx.request_id, access_request = %ar, approved_by = %by, "approved");
                        granted(by, ar)
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %ctx.request_id, access_request = %ar, error = %e, "approved, but could not mark it Used");
                        Self::refuse(
                            attrs,
                            rule,
                            format!(
                                "mcp-warden: accessrequests {name:?} in {ns} was approved by {by} but could not be marked Used: {e}"
                            ),
                        )
                    }
                }
            }
            Outcome::Denied { by, reason } => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                };
                Self::refuse(
                    attrs,
                    rule,
                    format!("mcp-warden: accessrequests {name:?} in {ns} was denied by {by}{why}"),
                )
            }
            Outcome::Expired { .. } => Self::refuse(
                attrs,
                rule,
                format!(
                    "mcp-warden: accessrequests {name:?} in {ns} expired before it was approved"
                ),
            ),
            Outcome::Deleted => Self::refuse(
                attrs,
                rule,
                format!(
                    "mcp-warden: accessrequests {name:?} in {ns} was deleted or used before it was approved"
                ),
            ),
            Outcome::TimedOut => {
                let reason = format!("no decision within {:?}", self.config.approval_timeout);
                if let Err(e) = self.api.set_status(&current, "Expired", &reason).await {
                    tracing::warn!(access_request = %ar, error = %e, "could not mark the AccessRequest Expired");
                }
                tracing::info!(request_id = %ctx.request_id, access_request = %ar, "approval timed out");
                Self::refuse(
                    attrs,
                    rule,
                    format!(
                        "mcp-warden: accessrequests {name:?} in {ns} was not approved within {:?} (now Expired)",
                        self.config.approval_timeout
                    ),
                )
            }
        }
    }

    /// Consumes a reusable approval for `hash`, if there is one.
    async fn try_reuse(&self, hash: &str) -> Result<Option<(String, String)>, ApprovalError> {
        let list = self
            .api
            .call(Method::GET, &self.api.collection(), None)
            .await?;
        let now = OffsetDateTime::now_utc();
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for item in items {
            if !reusable(
                &item,
                hash,
                &self.requester,
                now,
                self.config.approval_reuse_window,
            ) {
                continue;
            }
            // The resourceVersion makes this a compare-and-swap: two
            // requests cannot both consume the same approval.
            let mut o = item.clone();
            if o.get("apiVersion").is_none() {
                o["apiVersion"] = json!(format!("{GROUP}/v1alpha1"));
                o["kind"] = json!("AccessRequest");
            }
            match self.api.set_status(&o, "Used", "").await {
                Ok(_) => {
                    return Ok(Some((
                        st(&item, "/status/decidedBy").to_string(),
                        st(&item, "/metadata/name").to_string(),
                    )));
                }
                Err(ApprovalError::Api { code: 409, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// True for requests that touch AccessRequests (any verb, any version).
pub fn touches_access_requests(attrs: &RequestAttributes) -> bool {
    attrs.is_resource_request && attrs.api_group == GROUP && attrs.resource == RESOURCE
}

impl DecideHook for ApprovalDecider {
    fn decide<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, hooks::Decision> {
        Box::pin(async move {
            let Some(attrs) = &ctx.attrs else {
                return hooks::Decision::deny(
                    None,
                    "mcp-warden policy: the request was not parsed",
                );
            };
            if touches_access_requests(attrs) {
                tracing::info!(request_id = %ctx.request_id, verb = %attrs.verb, "refused: the app may not touch accessrequests");
                let mut d = Self::refuse(
                    attrs,
                    Some(BUILTIN_RULE.into()),
                    format!(
                        "mcp-warden: rule {BUILTIN_RULE:?}: the app cannot read or change accessrequests.{GROUP} (approvals are decided by people)"
                    ),
                );
                d.action = hooks::Action::Deny;
                return d;
            }
            let (_, d) = self.inner.evaluate(attrs, &ctx.impersonation);
            if d.action == policy::Action::Approve && d.enforced {
                return self.hold(ctx, attrs, &d).await;
            }
            // Everything else exactly as the policy decider does it.
            self.inner.decide(ctx).await
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
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
        let o = access_request(
            &a,
            &h,
            "system:serviceaccount:mcp:agent",
            "agent-0",
            "deletes",
            "why",
            datetime!(2026-11-22 01:05:00.5 UTC),
        );
        assert_eq!(o["metadata"]["generateName"], "delete-deployments-");
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
    /// empty strings as `null` (issue 12), and the object must match the CRD.
    #[test]
    fn access_request_omits_empty_optional_fields() {
        let a = mcp_warden_shared::attrs::parse_request(
            "DELETE",
            "/api/v1/namespaces/prod/configmaps/scratch",
        )
        .unwrap();
        let o = access_request(
            &a,
            "h",
            "system:serviceaccount:mcp:agent",
            "",
            "deletes",
            "",
            datetime!(2026-11-22 01:05:00 UTC),
        );
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
    fn reuse_needs_same_hash_requester_and_a_fresh_approval() {
        let now = datetime!(2026-11-22 01:00:00 UTC);
        let item = json!({"spec": {"requestHash": "h", "requester": {"serviceAccount": "sa"}},
            "status": {"state": "Approved", "decidedAt": "2026-11-22T00:55:00Z", "decidedBy": "alice"}});
        let w = Duration::from_secs(600);
        assert!(reusable(&item, "h", "sa", now, w));
        assert!(!reusable(&item, "other", "sa", now, w));
        assert!(!reusable(&item, "h", "other-sa", now, w));
        assert!(!reusable(&item, "h", "sa", now, Duration::from_secs(60)));
        let mut used = item.clone();
        used["status"]["state"] = json!("Used");
        assert!(!reusable(&used, "h", "sa", now, w));
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

    #[tokio::test]
    async fn the_recording_names_the_approver() {
        use crate::recording::hook::RecordingHook;
        use crate::recording::{Recorder, RecordingConfig};
        use mcp_warden_shared::audit::{Level, UserInfo};
        let d = tempfile::tempdir().unwrap();
        let (rec, _h) =
            Recorder::start(RecordingConfig::new(d.path()), std::future::pending()).unwrap();
        let masker = Arc::new(
            mcp_warden_shared::mask::MaskingConfig::embedded_default()
                .compile()
                .unwrap(),
        );
        let hook = RecordingHook::new(
            rec,
            UserInfo::default(),
            Arc::new(move || masker.clone()),
            Arc::new(|| Level::Metadata),
            Arc::new(String::new),
        );
        let mut ctx = RequestContext {
            request_id: uuid::Uuid::new_v4(),
            started: std::time::Instant::now(),
            received_at: std::time::SystemTime::now(),
            peer: "127.0.0.1:1".parse().unwrap(),
            method: Method::DELETE,
            path_and_query: "/apis/apps/v1/namespaces/prod/deployments/web".into(),
            user_agent: None,
            attrs: Some(attrs()),
            impersonation: Default::default(),
            decision: None,
            is_upgrade: false,
            is_stream: false,
        };
        let e = hook.base_event(&ctx, Level::Metadata);
        assert!(!e.annotations.contains_key(ANN_APPROVED_BY));
        ctx.decision = Some(hooks::Decision::approved(
            None,
            hooks::Approval {
                by: "alice".into(),
                access_request: "prod/delete-deployments-x".into(),
            },
        ));
        let e = hook.base_event(&ctx, Level::Metadata);
        assert_eq!(e.annotations[ANN_APPROVED_BY], "alice");
        assert_eq!(
            e.annotations[ANN_ACCESS_REQUEST],
            "prod/delete-deployments-x"
        );
    }
}
