//! Forwarding to the real API server.
//!
//! Two pooled clients share one TLS setup (custom CA from
//! `--upstream-ca-file`): one offers `h2` and `http/1.1` by ALPN for ordinary
//! requests; the other offers only `http/1.1`, because connection upgrades
//! (exec, attach, port-forward over WebSocket or SPDY) exist only in HTTP/1.1.
//! There is a connect timeout and no total timeout, so a watch lasts as long
//! as the server keeps it. Bodies stream frame by frame both ways.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::hooks::ProxyBody;

/// Errors building the upstream clients.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("reading the upstream CA file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("building the upstream TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Pooled clients for the upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    base: Uri,
    client: HttpsClient,
    upgrade_client: HttpsClient,
}

/// The PEM certificates of `path` (at least one).
pub fn load_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ForwardError> {
    let err = |message: String| ForwardError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificates in file".into()));
    }
    Ok(certs)
}

/// Loads the PEM certificates of `path` into a root store.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, ForwardError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| ForwardError::Ca {
            path: path.display().to_string(),
            message: format!("invalid certificate: {e}"),
        })?;
    }
    Ok(roots)
}

impl Upstream {
    /// Clients for `base` (scheme + authority) trusting `roots`.
    pub fn new(
        base: Uri,
        roots: rustls::RootCertStore,
        connect_timeout: Duration,
    ) -> Result<Self, ForwardError> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let h2_conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let h1_conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // Below kube-apiserver's 90s idle timeout, so a pooled connection
            // is not picked just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(55))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(false)
            .build(h2_conn);
        // Upgraded connections leave the pool; idle HTTP/1.1 ones are kept briefly.
        let upgrade_client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(h1_conn);
        Ok(Upstream {
            base,
            client,
            upgrade_client,
        })
    }

    /// The upstream URI for `path_and_query`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        Ok(Uri::from_parts(parts)?)
    }

    /// Sends a request; `upgrade` selects the HTTP/1.1-only client.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        if upgrade {
            self.upgrade_client.request(req).await
        } else {
            self.client.request(req).await
        }
    }
}

/// Headers meaningful only for one connection (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True when the request asks to upgrade the connection (HTTP/1.1
/// `Connection: upgrade` + `Upgrade`).
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() <= Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and those the `Connection` header names. With
/// `keep_upgrade`, `Upgrade` and `Connection: Upgrade` survive (for
/// upgrade requests and 101 responses).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    if keep_upgrade && let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
}

/// Removes headers that only a front proxy of the API server may set, and
/// spellings of trusted headers that some proxies read differently: the
/// request-header authentication headers (`X-Remote-User`, `-Group`,
/// `-Extra-*`), `Forwarded`/`X-Forwarded-*`/`X-Real-Ip` (they would put
/// the app's words into the server's audit `sourceIPs`), method overrides
/// (a `GET` judged by policy must not become a `DELETE` behind it), and
/// `Impersonate_*` with underscores (policy judges only the dashed names).
/// Applied to every request, whatever the policy says.
pub fn strip_untrusted(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_untrusted(k.as_str()))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

fn is_untrusted(name: &str) -> bool {
    let n = name.as_bytes();
    starts_dashed(n, b"x-remote-")
        || starts_dashed(n, b"x-forwarded-")
        || [
            &b"forwarded"[..],
            b"x-real-ip",
            b"x-http-method-override",
            b"x-http-method",
            b"x-method-override",
        ]
        .iter()
        .any(|p| n.len() == p.len() && starts_dashed(n, p))
        || (n.contains(&b'_') && starts_dashed(n, b"impersonate-"))
}

/// `name` starts with `prefix` when each `_` in it is read as `-` (no
/// allocation: this runs for every header of every request).
fn starts_dashed(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len()
        && name
            .iter()
            .zip(prefix)
            .all(|(a, b)| if *a == b'_' { *b == b'-' } else { a == b })
}

/// Removes every `Impersonate-*` header.
pub fn strip_impersonation(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn untrusted_headers_are_stripped_and_ordinary_ones_kept() {
        let mut h = HeaderMap::new();
        for name in [
            "x-remote-user",
            "x-remote-group",
            "x-remote-extra-scopes",
            "x_remote_user",
            "x-forwarded-for",
            "x-forwarded-host",
            "forwarded",
            "x-real-ip",
            "x-http-method-override",
            "x-method-override",
            "impersonate_user",
            "impersonate_group",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
        }
        for name in ["accept", "content-type", "impersonate-user", "x-request-id"] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
        }
        strip_untrusted(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            ["accept", "content-type", "impersonate-user", "x-request-id"]
        );
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut req = Request::new(());
        req.headers_mut()
            .insert("connection", HeaderValue::from_static("Upgrade"));
        req.headers_mut()
            .insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert!(is_upgrade_request(&req));
        let mut h = req.headers().clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "SPDY/3.1");
        assert_eq!(h.get("connection").unwrap(), "Upgrade");
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn impersonation_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", HeaderValue::from_static("admin"));
        h.append(
            "impersonate-group",
            HeaderValue::from_static("system:masters"),
        );
        h.insert("impersonate-extra-scopes", HeaderValue::from_static("x"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_impersonation(&mut h);
        assert_eq!(h.len(), 1);
    }
}
