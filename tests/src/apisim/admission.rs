//! Admission webhooks, as kube-apiserver calls them, for UPDATE requests
//! (updates, patches, applies to existing objects; status subresource
//! included): every `MutatingWebhookConfiguration` whose rules match is called
//! first (its JSONPatch applied), then every `ValidatingWebhookConfiguration`.
//!
//! The configurations are read from the store, at their real paths
//! (`admissionregistration.k8s.io/v1`; seed a CRD for each kind, kube-apisim
//! has no built-in admissionregistration types). Each call is an
//! `admission.k8s.io/v1` AdmissionReview POSTed over HTTPS to
//! `clientConfig.url`, trusting `clientConfig.caBundle`, with `userInfo` from
//! the bearer token the request authenticated with, `oldObject`, `object` and
//! `subResource`. `allowed: false` fails the request with the webhook's
//! Status; a call that fails follows `failurePolicy` (default Fail).
//!
//! Differences from kube-apiserver (test stand-in): only `clientConfig.url`
//! is reachable (webhooks with a `service` reference are skipped with a log
//! line), `namespaceSelector`/`objectSelector`/`matchConditions` are not
//! evaluated, and reinvocation is not done.

use super::auth::User;
use super::registry::ResourceInfo;
use super::store::Store;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const MUTATING: &str = "admissionregistration.k8s.io/mutatingwebhookconfigurations";
const VALIDATING: &str = "admissionregistration.k8s.io/validatingwebhookconfigurations";

/// Largest webhook response read.
const MAX_RESPONSE: usize = 3 * 1024 * 1024;

/// What one webhook call can fail with (before `failurePolicy` applies).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("clientConfig.url {0:?} is not an https URL")]
    Url(String),
    #[error("clientConfig.caBundle: {0}")]
    CaBundle(String),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("the webhook answered HTTP {0}")]
    Http(u16),
    #[error("the response is not an AdmissionReview: {0}")]
    Response(String),
    #[error("the webhook did not answer within {0:?}")]
    Timeout(Duration),
}

/// Runs the admission chain for an UPDATE of `old` into `new`; returns the
/// (possibly mutated) object to store, or the Status that refuses it.
#[allow(clippy::too_many_arguments)]
pub fn admit_update(
    store: &Store,
    user: &User,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    old: &Value,
    mut new: Value,
    dry_run: bool,
) -> Result<Value, Status> {
    for (gr, mutating) in [(MUTATING, true), (VALIDATING, false)] {
        let Ok(page) = store.list(gr, None, &|_| true, None, None, false) else {
            continue;
        };
        for config in page.items {
            let hooks = config
                .get("webhooks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for hook in hooks {
                if !matches(&hook, ri, sub, "UPDATE") {
                    continue;
                }
                let hook_name = hook["name"].as_str().unwrap_or("").to_string();
                let Some(url) = hook.pointer("/clientConfig/url").and_then(Value::as_str) else {
                    tracing::warn!(webhook = %hook_name, "skipping webhook without clientConfig.url (kube-apisim cannot reach services)");
                    continue;
                };
                let review = review(user, ri, ns, name, sub, old, &new, dry_run);
                let timeout =
                    Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).min(30));
                let ca = hook
                    .pointer("/clientConfig/caBundle")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let result = call_blocking(url.to_string(), ca.to_string(), review, timeout);
                let resp = match result {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(webhook = %hook_name, error = %e, "admission webhook call failed");
                        if hook["failurePolicy"].as_str() == Some("Ignore") {
                            continue;
                        }
                        return Err(Status::new(
                            Reason::InternalError,
                            format!(
                                "Internal error occurred: failed calling webhook \"{hook_name}\": {e}"
                            ),
                        ));
                    }
                };
                tracing::info!(webhook = %hook_name, allowed = resp["allowed"].as_bool().unwrap_or(false), "admission webhook answered");
                if resp["allowed"].as_bool() != Some(true) {
                    return Err(denial(&hook_name, &resp));
                }
                if mutating
                    && resp["patchType"].as_str() == Some("JSONPatch")
                    && let Some(p) = resp["patch"].as_str()
                {
                    new = apply_patch(&hook_name, &new, p)?;
                }
            }
        }
    }
    Ok(new)
}

fn denial(hook: &str, resp: &Value) -> Status {
    let st = &resp["status"];
    let msg = st["message"].as_str().unwrap_or("");
    let code = st["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(403);
    let reason = st["reason"]
        .as_str()
        .and_then(|r| serde_json::from_value::<Reason>(json!(r)).ok())
        .unwrap_or(match code {
            400 => Reason::BadRequest,
            422 => Reason::Invalid,
            409 => Reason::Conflict,
            _ => Reason::Forbidden,
        });
    let mut s = Status::new(
        reason,
        format!("admission webhook \"{hook}\" denied the request: {msg}"),
    );
    s.code = Some(code);
    s
}

fn apply_patch(hook: &str, obj: &Value, b64: &str) -> Result<Value, Status> {
    let fail = |m: String| {
        Status::new(
            Reason::InternalError,
            format!("Internal error occurred: webhook \"{hook}\" returned an unusable patch: {m}"),
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| fail(e.to_string()))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
    let mut out = obj.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| fail(e.to_string()))?;
    Ok(out)
}

fn list_has(v: &Value, want: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|x| x == "*" || x == want))
}

/// Whether one webhook's `rules` cover this operation on this resource.
fn matches(hook: &Value, ri: &ResourceInfo, sub: Option<&str>, op: &str) -> bool {
    let Some(rules) = hook.get("rules").and_then(Value::as_array) else {
        return false;
    };
    rules.iter().any(|r| {
        list_has(&r["operations"], op)
            && list_has(&r["apiGroups"], &ri.group)
            && list_has(&r["apiVersions"], &ri.version)
            && r["resources"].as_array().is_some_and(|res| {
                res.iter().filter_map(Value::as_str).any(|pat| {
                    if pat == "*/*" {
                        return true;
                    }
                    let (pr, ps) = match pat.split_once('/') {
                        Some((a, b)) => (a, Some(b)),
                        None => (pat, None),
                    };
                    (pr == "*" || pr == ri.resource)
                        && match (ps, sub) {
                            (None, None) => true,
                            (Some("*"), Some(_)) => true,
                            (Some(p), Some(s)) => p == s,
                            _ => false,
                        }
                })
            })
    })
}

#[allow(clippy::too_many_arguments)]
fn review(
    user: &User,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    old: &Value,
    new: &Value,
    dry_run: bool,
) -> Value {
    let gvk = json!({"group": ri.group, "version": ri.version, "kind": ri.kind});
    let gvr = json!({"group": ri.group, "version": ri.version, "resource": ri.resource});
    let mut req = json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": name, "operation": "UPDATE",
        "userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups},
        "object": new, "oldObject": old, "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
    });
    if let Some(s) = sub {
        req["subResource"] = json!(s);
        req["requestSubResource"] = json!(s);
    }
    if !ns.is_empty() {
        req["namespace"] = json!(ns);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

/// The handler is synchronous; the call runs on its own small runtime in a
/// scoped thread (and, on a multi-thread runtime, without stalling others).
fn call_blocking(
    url: String,
    ca: String,
    review: Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let work = move || {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CallError::Connect(e.to_string()))?;
                rt.block_on(async {
                    tokio::time::timeout(timeout, call(&url, &ca, &review))
                        .await
                        .map_err(|_| CallError::Timeout(timeout))?
                })
            })
            .join()
            .unwrap_or_else(|_| Err(CallError::Connect("webhook client thread panicked".into())))
        })
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

async fn call(url: &str, ca_b64: &str, review: &Value) -> Result<Value, CallError> {
    let uri: http::Uri = url.parse().map_err(|_| CallError::Url(url.into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(CallError::Url(url.into()));
    }
    let host = uri.host().ok_or_else(|| CallError::Url(url.into()))?;
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| CallError::CaBundle(e.to_string()))?;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| CallError::CaBundle(e.to_string()))?;
        roots
            .add(c)
            .map_err(|e| CallError::CaBundle(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(CallError::CaBundle("no certificates".into()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CallError::Connect(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = rustls_pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|_| CallError::Url(url.into()))?;
    let tcp =
        tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| CallError::Connect(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| CallError::Connect(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| CallError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = serde_json::to_vec(review).map_err(|e| CallError::Response(e.to_string()))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = http::Request::post(path)
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(host),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CallError::Connect(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| CallError::Connect(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(CallError::Http(resp.status().as_u16()));
    }
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| CallError::Response(e.to_string()))?
        .to_bytes();
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| CallError::Response(e.to_string()))?;
    let uid = review.pointer("/request/uid");
    match v.get("response") {
        Some(r) if r.get("uid") == uid => Ok(r.clone()),
        Some(_) => Err(CallError::Response(
            "response.uid does not match the request".into(),
        )),
        None => Err(CallError::Response("no response".into())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ri() -> ResourceInfo {
        ResourceInfo {
            group: "mcp-warden.io".into(),
            version: "v1alpha1".into(),
            resource: "accessrequests".into(),
            singular: "accessrequest".into(),
            kind: "AccessRequest".into(),
            list_kind: "AccessRequestList".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            subresources: vec![("status".into(), vec![])],
            custom: true,
            printer_columns: vec![],
            schema: None,
        }
    }

    #[test]
    fn rules_match_like_kube_apiserver() {
        let hook = |res: &str| {
            json!({"rules": [{"operations": ["UPDATE"], "apiGroups": ["mcp-warden.io"],
                "apiVersions": ["*"], "resources": [res]}]})
        };
        assert!(matches(
            &hook("accessrequests/status"),
            &ri(),
            Some("status"),
            "UPDATE"
        ));
        assert!(!matches(
            &hook("accessrequests/status"),
            &ri(),
            None,
            "UPDATE"
        ));
        assert!(!matches(
            &hook("accessrequests"),
            &ri(),
            Some("status"),
            "UPDATE"
        ));
        assert!(matches(&hook("accessrequests"), &ri(), None, "UPDATE"));
        assert!(matches(&hook("*/*"), &ri(), Some("status"), "UPDATE"));
        assert!(matches(&hook("*/status"), &ri(), Some("status"), "UPDATE"));
        assert!(!matches(&hook("*"), &ri(), Some("status"), "UPDATE"));
        assert!(!matches(&hook("accessrequests"), &ri(), None, "CREATE"));
        assert!(!matches(&json!({}), &ri(), None, "UPDATE"));
    }

    #[test]
    fn denial_keeps_the_webhook_message_and_code() {
        let s = denial(
            "approvals.mcp-warden.io",
            &json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "nope"}}),
        );
        assert_eq!(s.code(), 403);
        assert!(s.message.contains("approvals.mcp-warden.io"));
        assert!(s.message.ends_with("nope"));
        let s = denial("x", &json!({"allowed": false, "status": {"code": 400}}));
        assert_eq!(s.code(), 400);
        assert_eq!(s.reason, Reason::BadRequest);
    }
}
