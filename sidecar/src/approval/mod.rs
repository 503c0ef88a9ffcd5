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
//! Grants: an approved AccessRequest with `spec.grant` for this pod or its
//! ServiceAccount lets the requests its rule would hold pass until its
//! window ends (recorded with `mcp-warden.io/grant` and the granter as
//! `mcp-warden.io/approved-by`); [`grants`] watches them.
//!
//! The parts: [`decider`] (the hook and the hold), [`client`] (kube's typed
//! API and watcher for AccessRequests, with the upstream's CA and token),
//! [`notifier`] (the pending-approval POST), [`access_request`] (the object
//! written, the request hash, reuse, outcomes; pure), [`preview`] (the
//! server's dry run before anybody is asked, and the check after the
//! approval that the object is still as previewed).
//!
//! Preview: a create, update, patch or delete is first sent again with
//! `dryRun=All`; a refusal is answered at once (no AccessRequest; recorded
//! `mcp-warden.io/preview: refused`), otherwise `status.preview` carries the
//! masked field diff and its summary (also in the notification). An
//! approval goes through only while the live object is at the
//! resourceVersion the preview saw; otherwise 409 Conflict, the
//! AccessRequest is marked Expired (recorded `mcp-warden.io/preview:
//! changed`).
//!
//! An `approve` rule's `when:` is judged with the bodies the pipeline read
//! for it (`object`, `oldObject`), as for any rule.
//!
//! Tool calls: the MCP front holds a call an `approve` tool rule matches
//! with [`ApprovalDecider::hold_tool_call`]: the same ask (create, Pending,
//! notify, wait) and consume (Used) as API requests, with the AccessRequest
//! of [`access_request::tool_call_access_request`]; no preview, reuse or
//! grant.
//!
//! Limitation: the decide hook sees a request body only when a `when:` rule
//! reads it, so `requestHash` covers
//! the method and the path with query only. Reuse is therefore limited to
//! GET/HEAD/DELETE/OPTIONS (a DELETE's DeleteOptions body is not covered); a
//! create, update or patch goes through only as the request that was held.

use std::time::Duration;

pub mod access_request;
pub mod client;
pub mod decider;
pub mod grants;
pub mod notifier;
pub mod preview;

pub use access_request::{reusable, reusable_method, summary, touches_access_requests};
pub use decider::ApprovalDecider;
pub use mcp_warden_shared::access_request::{GROUP, RESOURCE};
pub use notifier::Notifier;

pub use mcp_warden_shared::contract::{ANN_ACCESS_REQUEST, ANN_APPROVED_BY, ANN_GRANT};

/// Rule name of the built-in refusal of AccessRequest access by the app.
pub const BUILTIN_RULE: &str = "mcp-warden:accessrequests";

/// Bound on each API call the decider makes (not on the wait itself) and on
/// a notification.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hooks::RequestContext;
    use http::Method;
    use mcp_warden_shared::attrs::RequestAttributes;
    use std::sync::Arc;

    fn attrs() -> RequestAttributes {
        mcp_warden_shared::attrs::parse_request(
            "DELETE",
            "/apis/apps/v1/namespaces/prod/deployments/web",
        )
        .unwrap()
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
            end_user: None,
            bodies: None,
            decision: None,
            is_upgrade: false,
            is_stream: false,
        };
        let e = hook.base_event(&ctx, Level::Metadata);
        assert!(!e.annotations.contains_key(ANN_APPROVED_BY));
        ctx.decision = Some(crate::hooks::Decision::approved(
            None,
            crate::hooks::Approval {
                by: "alice".into(),
                access_request: "prod/delete-deployments-x".into(),
                grant: false,
            },
        ));
        let e = hook.base_event(&ctx, Level::Metadata);
        assert_eq!(e.annotations[ANN_APPROVED_BY], "alice");
        assert_eq!(
            e.annotations[ANN_ACCESS_REQUEST],
            "prod/delete-deployments-x"
        );
        assert!(!e.annotations.contains_key(ANN_GRANT));
        ctx.decision = Some(crate::hooks::Decision::approved(
            Some("deletes".into()),
            crate::hooks::Approval {
                by: "bob".into(),
                access_request: "prod/grant-deletes-y".into(),
                grant: true,
            },
        ));
        let e = hook.base_event(&ctx, Level::Metadata);
        assert_eq!(e.annotations[ANN_APPROVED_BY], "bob");
        assert_eq!(e.annotations[ANN_GRANT], "prod/grant-deletes-y");
        assert_eq!(e.annotations[ANN_ACCESS_REQUEST], "prod/grant-deletes-y");
    }
}
