//! The pending-approval notification: a Slack-compatible incoming-webhook
//! POST of `{"text": ...}` to `--approval-notify-url`, best effort (a failed
//! notification is logged and changes nothing about the held request). The
//! text names the request, the preview's one-line summary (what the dry run
//! says it would change, masked), and the command that approves it.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Uri, header};
use serde_json::json;

use super::{ApprovalError, CALL_TIMEOUT};

/// True when `url` may receive notifications: the sidecar's one URL rule
/// ([`crate::config::check_transport`]), since the text names the request
/// and the command that approves it.
pub fn check_url(url: &Uri) -> Result<(), ApprovalError> {
    crate::config::check_transport(url).map_err(|_| ApprovalError::NotifyUrl(url.to_string()))
}

/// The notification's text: who wants what, the preview's summary, and the
/// command that approves it.
#[allow(clippy::too_many_arguments)]
pub fn text(
    requester: &str,
    what: &str,
    rule: &str,
    preview: Option<&mcp_warden_shared::preview::Preview>,
    ar: &str,
    expires: &str,
    name: &str,
    ns: &str,
) -> String {
    let effect = preview
        .filter(|p| !p.summary.is_empty())
        .map(|p| format!(" Preview: {}.", p.summary))
        .unwrap_or_default();
    format!(
        "mcp-warden: {requester} wants to {what} (rule {rule}).{effect} AccessRequest {ar} expires at {expires}. To allow it, run: kubectl mcp-warden approve {name} -n {ns}"
    )
}

/// POSTs Slack-compatible `{"text": ...}` notifications.
pub struct Notifier {
    url: Uri,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<Bytes>,
    >,
}

impl Notifier {
    /// A notifier for `url` (see [`check_url`]), trusting the public roots.
    pub fn new(url: Uri) -> Result<Self, ApprovalError> {
        check_url(&url)?;
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

    /// Sends `text`, bounded by [`CALL_TIMEOUT`]; failures are logged.
    pub async fn send(&self, text: String) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_text_carries_the_preview_summary() {
        let p = mcp_warden_shared::preview::Preview::new(
            mcp_warden_shared::preview::PreviewKind::Change,
            200,
            "Deployment prod/web".into(),
            vec![mcp_warden_shared::preview::FieldChange {
                path: "spec.replicas".into(),
                old: Some("3".into()),
                new: Some("0".into()),
            }],
        );
        let t = text(
            "system:serviceaccount:mcp:agent",
            "patch deployments.apps/scale prod/web",
            "scales",
            Some(&p),
            "mcp/patch-deployments-x",
            "2026-12-06T15:00:00Z",
            "patch-deployments-x",
            "mcp",
        );
        assert!(t.contains("Preview: 1 field: spec.replicas 3 → 0."), "{t}");
        assert!(
            t.ends_with("kubectl mcp-warden approve patch-deployments-x -n mcp"),
            "{t}"
        );
        let t = text("sa", "delete x", "r", None, "a/b", "t", "b", "a");
        assert!(!t.contains("Preview"), "{t}");
    }

    #[test]
    fn only_https_or_loopback_http() {
        for ok in [
            "https://hooks.example.com/x",
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://localhost/hook",
        ] {
            check_url(&ok.parse().unwrap()).unwrap();
        }
        for bad in ["http://hooks.example.com/x", "ftp://127.0.0.1/x"] {
            assert!(matches!(
                check_url(&bad.parse().unwrap()),
                Err(ApprovalError::NotifyUrl(_))
            ));
        }
    }
}
