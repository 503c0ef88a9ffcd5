//! Errors of the request pipeline and their one mapping to HTTP responses:
//! every error the sidecar answers itself is a Kubernetes `Status`.

use mcp_warden_shared::attrs::AttrError;
use mcp_warden_shared::status::{Reason, Status};

use crate::hooks::{ProxyBody, full};
use crate::token::TokenError;

/// Why the sidecar answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No or wrong local token.
    #[error("missing or invalid local token")]
    Unauthorized,
    /// The request line cannot be parsed the way kube-apiserver would.
    #[error("bad request: {0}")]
    BadRequest(#[from] AttrError),
    /// A hook refused the request with this Status.
    #[error("refused: {}", .0.message)]
    Refused(Status),
    /// The real token cannot be read.
    #[error("{0}")]
    UpstreamToken(#[from] TokenError),
    /// The upstream could not be reached or failed before responding.
    #[error("upstream request failed: {0}")]
    Upstream(String),
    /// A connection upgrade the sidecar does not honour in this form.
    #[error("upgrade refused: {0}")]
    Upgrade(&'static str),
    /// The request could not be rebuilt for the upstream.
    #[error("cannot forward the request: {0}")]
    Build(String),
}

impl ProxyError {
    /// The Status answered for this error.
    pub fn status(&self) -> Status {
        match self {
            // kube-apiserver's exact answer, which clients recognise.
            ProxyError::Unauthorized => Status::new(Reason::Unauthorized, "Unauthorized"),
            ProxyError::BadRequest(e) => Status::new(Reason::BadRequest, e.to_string()),
            ProxyError::Refused(s) => s.clone(),
            ProxyError::UpstreamToken(_) => Status::new(
                Reason::ServiceUnavailable,
                "mcp-warden: the upstream credentials are not available yet",
            ),
            ProxyError::Upstream(m) => Status::new(
                Reason::BadGateway,
                format!("mcp-warden: upstream unavailable: {m}"),
            ),
            ProxyError::Upgrade(m) => Status::new(Reason::BadRequest, format!("mcp-warden: {m}")),
            ProxyError::Build(m) => Status::new(Reason::BadRequest, format!("mcp-warden: {m}")),
        }
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
