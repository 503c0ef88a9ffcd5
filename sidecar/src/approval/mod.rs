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
//! The parts: [`decider`] (the hook and the hold), [`client`] (kube's typed
//! API and watcher for AccessRequests, with the upstream's CA and token),
//! [`notifier`] (the pending-approval POST), [`access_request`] (the object
//! written, the request hash, reuse, outcomes; pure).
//!
//! Limitation: the decide hook sees no request body, so `requestHash` covers
//! the method and the path with query only. Reuse is therefore limited to
//! GET/HEAD/DELETE/OPTIONS (a DELETE's DeleteOptions body is not covered); a
//! create, update or patch goes through only as the request that was held.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use http::Uri;

pub mod access_request;
pub mod client;
pub mod decider;
pub mod notifier;

pub use access_request::{reusable, reusable_method, summary, touches_access_requests};
pub use decider::ApprovalDecider;
pub use mcp_warden_shared::access_request::{GROUP, RESOURCE};
pub use notifier::Notifier;

/// Recorded on the events of approved requests: who approved.
pub const ANN_APPROVED_BY: &str = "mcp-warden.io/approved-by";
/// Recorded on the events of approved requests: `NAMESPACE/NAME` of the AccessRequest.
pub const ANN_ACCESS_REQUEST: &str = "mcp-warden.io/access-request";

/// Rule name of the built-in refusal of AccessRequest access by the app.
pub const BUILTIN_RULE: &str = "mcp-warden:accessrequests";

/// Bound on each API call the decider makes (not on the wait itself) and on
/// a notification.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Approval settings (flags `--approval-timeout`, `--approval-reuse-window`,
/// `--approval-notify-url` with `MCP_WARDEN_*` twins).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalConfig {
    /// How long a request is held waiting for a decision; then 403 and the
    /// AccessRequest is marked Expired.
    pub approval_timeout: Duration,
    /// How long after the decision an approval whose client went away lets
    /// one identical request through.
    pub approval_reuse_window: Duration,
    /// Where to POST `{"text": ...}` (Slack incoming-webhook shape) when a
    /// request is pending; http:// only for loopback.
    pub approval_notify_url: Option<Uri>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            approval_timeout: Duration::from_secs(300),
            approval_reuse_window: Duration::from_secs(600),
            approval_notify_url: None,
        }
    }
}

/// The approval flags, to `#[command(flatten)]` into the sidecar's
/// `ServeArgs`; [`ApprovalArgs::validate`] gives the [`ApprovalConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct ApprovalArgs {
    /// How long a request under an `approve` rule is held waiting for a decision
    /// (e.g. `5m`, `90s`); then 403 and the AccessRequest is marked Expired.
    #[arg(long, env = "MCP_WARDEN_APPROVAL_TIMEOUT", default_value = "5m")]
    pub approval_timeout: String,

    /// How long after the decision an approval whose client went away lets one
    /// identical request (same method, path, query) through.
    #[arg(long, env = "MCP_WARDEN_APPROVAL_REUSE_WINDOW", default_value = "10m")]
    pub approval_reuse_window: String,

    /// Slack-compatible incoming-webhook URL that gets `{"text": ...}` when a
    /// request waits for approval (https, or http to loopback).
    #[arg(long, env = "MCP_WARDEN_APPROVAL_NOTIFY_URL")]
    pub approval_notify_url: Option<String>,
}

impl ApprovalArgs {
    /// Checks the values; errors name the flag and its environment twin.
    pub fn validate(&self) -> Result<ApprovalConfig, crate::config::ConfigError> {
        let err = |flag: &'static str, env: &'static str, message: String| {
            crate::config::ConfigError { flag, env, message }
        };
        let approval_timeout = crate::config::parse_duration(&self.approval_timeout)
            .map_err(|m| err("approval-timeout", "MCP_WARDEN_APPROVAL_TIMEOUT", m))?;
        if approval_timeout.is_zero() {
            return Err(err(
                "approval-timeout",
                "MCP_WARDEN_APPROVAL_TIMEOUT",
                "must be more than zero".into(),
            ));
        }
        let approval_reuse_window = crate::config::parse_duration(&self.approval_reuse_window)
            .map_err(|m| {
                err(
                    "approval-reuse-window",
                    "MCP_WARDEN_APPROVAL_REUSE_WINDOW",
                    m,
                )
            })?;
        let approval_notify_url = match self.approval_notify_url.as_deref() {
            None | Some("") => None,
            Some(u) => {
                let uri: Uri = u.parse().map_err(|e| {
                    err(
                        "approval-notify-url",
                        "MCP_WARDEN_APPROVAL_NOTIFY_URL",
                        format!("{u:?}: {e}"),
                    )
                })?;
                // Same scheme rule as at use, reported at start.
                Notifier::new(uri.clone()).map_err(|e| {
                    err(
                        "approval-notify-url",
                        "MCP_WARDEN_APPROVAL_NOTIFY_URL",
                        e.to_string(),
                    )
                })?;
                Some(uri)
            }
        };
        Ok(ApprovalConfig {
            approval_timeout,
            approval_reuse_window,
            approval_notify_url,
        })
    }
}

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

/// Who approved which request, for the recorder. Process-wide because the
/// recorder and the decider are wired independently; bounded.
static APPROVALS: Mutex<VecDeque<(uuid::Uuid, String, String)>> = Mutex::new(VecDeque::new());
const APPROVALS_KEPT: usize = 4096;

fn remember_approval(request_id: uuid::Uuid, by: &str, access_request: &str) {
    let mut g = match APPROVALS.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if g.len() >= APPROVALS_KEPT {
        g.pop_front();
    }
    g.push_back((request_id, by.to_string(), access_request.to_string()));
}

/// The approver and the AccessRequest (`NS/NAME`) of an approved request.
pub fn approval_of(request_id: &uuid::Uuid) -> Option<(String, String)> {
    let g = match APPROVALS.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    g.iter()
        .rev()
        .find(|(id, _, _)| id == request_id)
        .map(|(_, by, ar)| (by.clone(), ar.clone()))
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

    #[test]
    fn flags_have_defaults_and_name_themselves_when_bad() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ApprovalArgs,
        }
        let c = T::try_parse_from(["x"]).unwrap().a.validate().unwrap();
        assert_eq!(c, ApprovalConfig::default());
        let c = T::try_parse_from([
            "x",
            "--approval-timeout",
            "90s",
            "--approval-reuse-window",
            "1m",
            "--approval-notify-url",
            "http://127.0.0.1:9/hook",
        ])
        .unwrap()
        .a
        .validate()
        .unwrap();
        assert_eq!(c.approval_timeout, Duration::from_secs(90));
        assert_eq!(c.approval_reuse_window, Duration::from_secs(60));
        assert!(c.approval_notify_url.is_some());
        let e = T::try_parse_from(["x", "--approval-notify-url", "http://hooks.example.com/x"])
            .unwrap()
            .a
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("MCP_WARDEN_APPROVAL_NOTIFY_URL"),
            "{e}"
        );
        let e = T::try_parse_from(["x", "--approval-timeout", "soon"])
            .unwrap()
            .a
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("approval-timeout"), "{e}");
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
        let ctx = RequestContext {
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
        remember_approval(ctx.request_id, "alice", "prod/delete-deployments-x");
        let e = hook.base_event(&ctx, Level::Metadata);
        assert_eq!(e.annotations[ANN_APPROVED_BY], "alice");
        assert_eq!(
            e.annotations[ANN_ACCESS_REQUEST],
            "prod/delete-deployments-x"
        );
    }

    #[test]
    fn approvals_are_remembered_for_the_recorder() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(approval_of(&id), None);
        remember_approval(id, "alice", "mcp/delete-x");
        assert_eq!(
            approval_of(&id),
            Some(("alice".into(), "mcp/delete-x".into()))
        );
    }
}
