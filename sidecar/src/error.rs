//! Why the sidecar answers a request itself, and the one mapping of those
//! reasons to HTTP responses: every answer of the sidecar's own is a
//! Kubernetes `Status`, built here and nowhere else.
//!
//! The pipeline's steps and the hooks return a typed [`Refusal`] carrying
//! what the answer needs (the request's attributes for a 403, the cap for a
//! 429, the limit for a 413...); [`Refusal::status`] words it and
//! [`status_response`] sends it (code, `Status` body, `Retry-After`).

use mcp_warden_shared::attrs::{AttrError, RequestAttributes};
use mcp_warden_shared::mask::PatchReadsMasked;
use mcp_warden_shared::status::{Reason, Status};

use crate::hooks::{ProxyBody, full};
use crate::token::TokenError;

/// Seconds a client refused past an in-flight cap is asked to wait
/// (kube-apiserver says 1).
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Why the sidecar answered a request itself instead of passing on the
/// upstream's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// No or wrong local token.
    #[error("missing or invalid local token")]
    Unauthorized,
    /// An end-user token that did not verify: 401 naming why (never the
    /// token).
    #[error("end-user token rejected: {why}")]
    EndUserRejected {
        /// The verifier's reason (expired, audience mismatch, ...).
        why: String,
    },
    /// A request with an end-user token that also asks to impersonate
    /// someone: who acts would be ambiguous.
    #[error("impersonation headers with an end-user token")]
    EndUserImpersonates,
    /// The request line cannot be parsed the way kube-apiserver would.
    #[error("bad request: {0}")]
    BadRequest(#[from] AttrError),
    /// A connection upgrade the sidecar does not honour in this form.
    #[error("upgrade refused: {0}")]
    Upgrade(&'static str),
    /// The request could not be rebuilt for the upstream.
    #[error("cannot forward the request: {0}")]
    Build(String),
    /// The policy, an approval, or a rule built into the sidecar forbids
    /// the request: 403 naming it as kube-apiserver does
    /// (`pods "web-0" is forbidden: {why}`).
    #[error("{why}")]
    Forbidden {
        /// The request refused (named in the message and `details`).
        attrs: Box<RequestAttributes>,
        /// Why, after the subject.
        why: String,
    },
    /// Forbidden before the request could be named (no parsed attributes,
    /// or a decider without a policy): 403 with `message` alone.
    #[error("{message}")]
    Denied {
        /// The whole message.
        message: String,
    },
    /// An in-flight cap is full: 429 with `Retry-After`, as kube-apiserver
    /// answers past `--max-requests-inflight`.
    #[error("too many requests in flight (at most {max}, {flag})")]
    TooManyInFlight {
        /// The cap of long-running requests (watches, follows, tunnels).
        long_running: bool,
        /// The cap.
        max: usize,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// The request cannot be recorded (fail-closed recording): 503, not
    /// forwarded.
    #[error("the request cannot be recorded ({why})")]
    NotRecordable {
        /// What failed.
        why: &'static str,
    },
    /// A request body that had to be read whole is larger than the limit.
    #[error("request body larger than {max} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// A request body that had to be read whole failed while reading.
    #[error("reading the request body: {why}")]
    BodyUnreadable {
        /// The body's error.
        why: String,
    },
    /// An RFC 6902 JSON Patch that is not JSON (it cannot be judged).
    #[error("the JSON patch is not valid JSON: {why}")]
    PatchNotJson {
        /// The parser's error.
        why: String,
    },
    /// A JSON Patch that would make the server read a masked value.
    #[error("{0}")]
    PatchReadsMasked(#[from] PatchReadsMasked),
    /// The response cannot be masked, so it is withheld (502).
    #[error("{why}")]
    Unmaskable {
        /// Why (already scrubbed of the real token).
        why: String,
    },
    /// The real token cannot be read.
    #[error("{0}")]
    UpstreamToken(#[from] TokenError),
    /// The upstream could not be reached or failed before responding.
    #[error("upstream request failed: {0}")]
    Upstream(String),
    /// A Status answered as it is: the server's own refusal of an approval's
    /// dry run (masked), or the approval's conflict when the object changed.
    #[error("{}", .0.message)]
    Status(Box<Status>),
}

impl From<crate::mask_body::MaskBodyError> for Refusal {
    fn from(e: crate::mask_body::MaskBodyError) -> Self {
        Refusal::Unmaskable { why: e.to_string() }
    }
}

impl Refusal {
    /// A 403 naming the request of `attrs`, refused because of `why`.
    pub fn forbidden(attrs: &RequestAttributes, why: impl Into<String>) -> Self {
        Refusal::Forbidden {
            attrs: Box::new(attrs.clone()),
            why: why.into(),
        }
    }

    /// The Status answered for this refusal.
    pub fn status(&self) -> Status {
        match self {
            // kube-apiserver's exact answer, which clients recognise.
            Refusal::Unauthorized => Status::new(Reason::Unauthorized, "Unauthorized"),
            Refusal::EndUserRejected { why } => Status::new(
                Reason::Unauthorized,
                format!("Unauthorized: mcp-warden: end-user token rejected: {why}"),
            ),
            Refusal::EndUserImpersonates => Status::new(
                Reason::Forbidden,
                "mcp-warden: Impersonate-* headers are not accepted on a request made with an end-user token",
            ),
            Refusal::BadRequest(e) => Status::new(Reason::BadRequest, e.to_string()),
            Refusal::Upgrade(m) => Status::new(Reason::BadRequest, format!("mcp-warden: {m}")),
            Refusal::Build(m) => Status::new(Reason::BadRequest, format!("mcp-warden: {m}")),
            Refusal::Forbidden { attrs, why } => Status::forbidden(attrs, why),
            Refusal::Denied { message } => Status::new(Reason::Forbidden, message.clone()),
            Refusal::TooManyInFlight {
                long_running,
                max,
                flag,
            } => {
                let what = if *long_running {
                    "long-running requests (watches, followed logs, exec/attach/port-forward)"
                } else {
                    "requests"
                };
                Status::new(
                    Reason::TooManyRequests,
                    format!(
                        "mcp-warden: too many {what} in flight (at most {max}, {flag}); please try again later"
                    ),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
            Refusal::NotRecordable { why } => Status::new(
                Reason::ServiceUnavailable,
                format!("mcp-warden: the request cannot be recorded ({why}); it was not forwarded"),
            ),
            Refusal::BodyTooLarge { max } => Status::new(
                Reason::RequestEntityTooLarge,
                format!("request body larger than {max} bytes"),
            ),
            Refusal::BodyUnreadable { why } => Status::new(
                Reason::BadRequest,
                format!("reading the request body: {why}"),
            ),
            Refusal::PatchNotJson { why } => Status::new(
                Reason::BadRequest,
                format!("mcp-warden: the JSON patch is not valid JSON: {why}"),
            ),
            Refusal::PatchReadsMasked(e) => {
                Status::new(Reason::Forbidden, format!("mcp-warden: {e}"))
            }
            Refusal::Unmaskable { why } => Status::new(
                Reason::BadGateway,
                format!("mcp-warden: {why}; the response was withheld"),
            ),
            Refusal::UpstreamToken(_) => Status::new(
                Reason::ServiceUnavailable,
                "mcp-warden: the upstream credentials are not available yet",
            ),
            Refusal::Upstream(m) => Status::new(
                Reason::BadGateway,
                format!("mcp-warden: upstream unavailable: {m}"),
            ),
            Refusal::Status(s) => (**s).clone(),
        }
    }

    /// The HTTP response for this refusal.
    pub fn response(&self) -> http::Response<ProxyBody> {
        status_response(&self.status())
    }
}

/// The HTTP response carrying a Status.
pub fn status_response(status: &Status) -> http::Response<ProxyBody> {
    let code = http::StatusCode::from_u16(status.code())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = http::Response::new(full(status.to_json()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    let retry_after = status.retry_after_seconds();
    if retry_after > 0 {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(retry_after),
        );
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mcp_warden_shared::attrs::parse_request;

    /// The 403s of the policy and of approvals name the request the same way.
    #[test]
    fn forbidden_names_the_request_as_kube_apiserver_does() {
        let a = parse_request("DELETE", "/apis/apps/v1/namespaces/prod/deployments/web").unwrap();
        let s = Refusal::forbidden(&a, "mcp-warden: no").status();
        assert_eq!(s.code(), 403);
        assert_eq!(
            s.message,
            "deployments.apps \"web\" is forbidden: mcp-warden: no"
        );
        let d = s.details.unwrap();
        assert_eq!(
            (d.kind.as_str(), d.group.as_str(), d.name.as_str()),
            ("deployments", "apps", "web")
        );
        let a = parse_request("GET", "/api/v1/namespaces/prod/pods").unwrap();
        assert_eq!(
            Refusal::forbidden(&a, "x").status().message,
            "pods is forbidden: x"
        );
        let a = parse_request("GET", "/healthz").unwrap();
        let s = Refusal::forbidden(&a, "x").status();
        assert_eq!(
            (s.message.as_str(), s.details.is_none()),
            ("forbidden: x", true)
        );
    }

    #[test]
    fn too_many_in_flight_asks_to_retry() {
        let r = Refusal::TooManyInFlight {
            long_running: true,
            max: 2,
            flag: "--max-long-running-requests",
        };
        let resp = r.response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            r.status().message,
            "mcp-warden: too many long-running requests (watches, followed logs, exec/attach/port-forward) in flight (at most 2, --max-long-running-requests); please try again later"
        );
    }
}
