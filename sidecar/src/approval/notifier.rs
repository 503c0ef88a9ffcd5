//! The pending-approval notification: a Slack-compatible incoming-webhook
//! POST of `{"text": ...}` to `--approval-notify-url`, best effort (a failed
//! notification is logged and changes nothing about the held request).

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
