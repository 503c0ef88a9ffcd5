//! Kubernetes `Status` objects, the body of every error the API returns.
//!
//! Both the sidecar (denials, bad paths, upstream failures) and kube-apisim
//! answer errors with these, so `kubectl` prints `Error from server (Reason): msg`.

use serde::{Deserialize, Serialize};

use crate::attrs::RequestAttributes;

/// The `reason` values kube-apiserver uses (a subset: the ones we emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    RequestEntityTooLarge,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    Timeout,
    Gone,
    Expired,
    BadGateway,
}

impl Reason {
    /// The HTTP status code kube-apiserver pairs with this reason.
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::NotAcceptable => 406,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Gone | Reason::Expired => 410,
            Reason::RequestEntityTooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
            Reason::BadGateway => 502,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
        }
    }

    /// The reason string as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            // kube-apiserver has no BadGateway reason; proxies answer with
            // InternalError-like statuses. We keep the code honest (502) and
            // use the generic reason clients already know.
            Reason::BadGateway => "InternalError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
            Reason::Gone => "Gone",
            Reason::Expired => "Expired",
        }
    }
}

/// Optional `details` of a Status: which object the error is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// How long the client should wait before retrying (`0`: not set), as
    /// kube-apiserver sends with 429 and some 5xx answers.
    #[serde(default, rename = "retryAfterSeconds", skip_serializing_if = "is_zero")]
    pub retry_after_seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How kube-apiserver names a request at the start of a 403 message:
/// `pods "web-0" is forbidden`, `deployments.apps is forbidden`,
/// `pods/exec "web-0" is forbidden`; a non-resource request is `forbidden`.
pub fn forbidden_subject(attrs: &RequestAttributes) -> String {
    if !attrs.is_resource_request {
        return "forbidden".to_string();
    }
    let mut res = attrs.resource.clone();
    if !attrs.api_group.is_empty() {
        res = format!("{res}.{}", attrs.api_group);
    }
    if !attrs.subresource.is_empty() {
        res = format!("{res}/{}", attrs.subresource);
    }
    if attrs.name.is_empty() {
        format!("{res} is forbidden")
    } else {
        format!("{res} {:?} is forbidden", attrs.name)
    }
}

/// A `meta.k8s.io/v1` `Status` with `status: Failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub reason: Reason,
    pub message: String,
    pub details: Option<StatusDetails>,
    /// Overrides `reason.code()` where kube-apiserver uses another code for
    /// the same reason (rare; e.g. 405 vs 400 for some BadRequests).
    pub code: Option<u16>,
}

impl Status {
    /// A failure Status with the given reason and message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Status {
            reason,
            message: message.into(),
            details: None,
            code: None,
        }
    }

    /// kube-apiserver's 403 for a request: `{subject}: {why}` (see
    /// [`forbidden_subject`]), with `details` naming the object of a
    /// resource request.
    pub fn forbidden(attrs: &RequestAttributes, why: &str) -> Self {
        let status = Status::new(
            Reason::Forbidden,
            format!("{}: {why}", forbidden_subject(attrs)),
        );
        if attrs.is_resource_request {
            status.with_details(&attrs.resource, &attrs.api_group, &attrs.name)
        } else {
            status
        }
    }

    /// Adds `details` naming the object the error is about.
    pub fn with_details(mut self, kind: &str, group: &str, name: &str) -> Self {
        let retry_after_seconds = self.retry_after_seconds();
        self.details = Some(StatusDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            retry_after_seconds,
        });
        self
    }

    /// Asks the client to retry after `seconds` (`details.retryAfterSeconds`;
    /// the HTTP layer adds the `Retry-After` header).
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.details
            .get_or_insert_with(StatusDetails::default)
            .retry_after_seconds = seconds;
        self
    }

    /// `details.retryAfterSeconds`, 0 when not set.
    pub fn retry_after_seconds(&self) -> u32 {
        self.details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .unwrap_or(0)
    }

    /// The HTTP status code of this Status.
    pub fn code(&self) -> u16 {
        self.code.unwrap_or_else(|| self.reason.code())
    }

    /// The JSON object, exactly as kube-apiserver writes it.
    pub fn to_value(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
        });
        if let Some(d) = &self.details
            && let Ok(dv) = serde_json::to_value(d)
        {
            v["details"] = dv;
        }
        v["code"] = serde_json::json!(self.code());
        v
    }

    /// The JSON bytes of [`Status::to_value`].
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a Value built above cannot fail; fall back to a minimal
        // body rather than panic if it ever did.
        serde_json::to_vec(&self.to_value()).unwrap_or_else(|_| b"{\"kind\":\"Status\"}".to_vec())
    }
}

/// A `Status` with `status: Success`, as returned by some deletes.
pub fn success(details: Option<StatusDetails>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    });
    if let Some(d) = details
        && let Ok(dv) = serde_json::to_value(d)
    {
        v["details"] = dv;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_has_kubectl_shape() {
        let s = Status::new(Reason::Forbidden, "denied by rule x");
        let v = s.to_value();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert_eq!(v["message"], "denied by rule x");
    }

    #[test]
    fn retry_after_is_in_the_details() {
        let v = Status::new(Reason::TooManyRequests, "slow down")
            .with_retry_after(1)
            .to_value();
        assert_eq!(v["code"], 429);
        assert_eq!(v["reason"], "TooManyRequests");
        assert_eq!(v["details"]["retryAfterSeconds"], 1);
        let v = Status::new(Reason::NotFound, "x")
            .with_details("pods", "", "x")
            .to_value();
        assert!(v["details"].get("retryAfterSeconds").is_none());
    }

    #[test]
    fn details_are_included() {
        let v = Status::new(Reason::NotFound, "pods \"x\" not found")
            .with_details("pods", "", "x")
            .to_value();
        assert_eq!(v["details"]["name"], "x");
        assert_eq!(v["details"]["kind"], "pods");
        assert_eq!(v["code"], 404);
    }
}
