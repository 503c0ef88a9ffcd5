//! Forwarding to the real API server.
//!
//! Two pooled clients share one TLS setup (custom CA from
//! `--upstream-ca-file`): one offers `h2` and `http/1.1` by ALPN for ordinary
//! requests; the other offers only `http/1.1`, because connection upgrades
//! (exec, attach, port-forward over WebSocket or SPDY) exist only in HTTP/1.1.
//! There is a connect timeout and no total timeout, so a watch lasts as long
//! as the server keeps it. Bodies stream frame by frame both ways.
//!
//! Ordinary requests share one HTTP/2 connection held here
//! ([`SharedConn`]), not hyper-util's pool: the pool's checkout (a SipHash of
//! its key, a lock, moves of its large futures) cost ~5,400 instructions a
//! request, 3 % of a proxied GET, for a pool of one connection. A connection
//! that closed, or that sat idle longer than [`SHARED_IDLE`], is replaced by
//! a new one on the next request (an idle one is not closed before that;
//! the upstream may close it). Requests that find none open one each, at
//! once, as the pooled client did, and connecting (TCP, TLS, the HTTP/2
//! handshake) has the connect timeout as a whole. An upstream that does not
//! offer `h2` gets ordinary requests through the pooled client over
//! HTTP/1.1, as before.
//!
//! Long-running requests that are not upgrades (watches, followed logs) go
//! through a [`StreamPool`]: HTTP/2 connections of their own, each taking at
//! most [`STREAMS_PER_CONNECTION`] of them, below any server's
//! `MAX_CONCURRENT_STREAMS` (RFC 9113 recommends at least 100), so that a
//! watch never queues behind others and 1,000 watches need about ten
//! connections instead of 1,000. A connection that has taken its share is
//! retired: it serves its open streams and closes when they have ended. An
//! upstream that does not offer `h2` gets them over HTTP/1.1 as before.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use crate::hooks::ProxyBody;

/// Errors building the upstream clients.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("reading the upstream CA file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("building the upstream TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    // The messages below leave their cause out: the proxy writes an
    // error's whole source chain after its message.
    #[error("connecting to the upstream for a long-running request")]
    StreamConnect(#[source] BoxError),
    #[error("long-running request on a shared HTTP/2 connection")]
    Stream(#[from] hyper::Error),
    #[error("connecting to the upstream")]
    Connect(#[source] BoxError),
    #[error("connecting to the upstream: no HTTP/2 session within {0:?}")]
    ConnectTimeout(Duration),
    #[error("HTTP/2 handshake with the upstream")]
    Handshake(#[source] hyper::Error),
    #[error("request on the upstream's HTTP/2 connection")]
    Shared(#[source] hyper::Error),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most long-running requests started on one pooled HTTP/2 connection.
pub const STREAMS_PER_CONNECTION: u64 = 100;

type H2Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

/// HTTP/2 connections shared by long-running requests (see the module doc).
#[derive(Clone, Debug)]
struct StreamPool {
    base: Uri,
    connector: HttpsConnector<HttpConnector>,
    /// The connection taking new streams, and how many it has taken.
    current: Arc<tokio::sync::Mutex<Option<(H2Sender, u64)>>>,
    /// False once the upstream answered without `h2`: HTTP/1.1 from then on.
    h2: Arc<AtomicBool>,
    /// Connections opened so far.
    opened: Arc<AtomicU64>,
}

impl StreamPool {
    /// Sends `req` on a shared connection; `Ok(Err(req))` hands it back when
    /// the upstream does not speak HTTP/2.
    async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Result<Response<hyper::body::Incoming>, Request<ProxyBody>>, SendError> {
        if !self.h2.load(Ordering::Relaxed) {
            return Ok(Err(req));
        }
        let mut sender = {
            let mut cur = self.current.lock().await;
            match cur.as_mut() {
                Some((s, n)) if *n < STREAMS_PER_CONNECTION && !s.is_closed() => {
                    *n += 1;
                    s.clone()
                }
                _ => {
                    // Dropping the old handle retires that connection: it
                    // closes once its streams have ended.
                    *cur = None;
                    let Some(s) = self.connect().await? else {
                        return Ok(Err(req));
                    };
                    *cur = Some((s.clone(), 1));
                    s
                }
            }
        };
        *req.version_mut() = Version::HTTP_2;
        sender.ready().await?;
        Ok(Ok(sender.send_request(req).await?))
    }

    async fn connect(&self) -> Result<Option<H2Sender>, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.base.clone())
            .await
            .map_err(SendError::StreamConnect)?;
        let Some(sender) = handshake_h2(io).await? else {
            self.h2.store(false, Ordering::Relaxed);
            tracing::info!(
                "the upstream does not offer HTTP/2: long-running requests use HTTP/1.1 connections"
            );
            return Ok(None);
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Some(sender))
    }
}

/// An HTTP/2 connection over `io`, its task spawned; `None` when `io`'s TLS
/// handshake did not choose `h2`.
async fn handshake_h2(
    io: hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>,
) -> Result<Option<H2Sender>, hyper::Error> {
    if !io.connected().is_negotiated_h2() {
        return Ok(None);
    }
    let (sender, conn) = hyper::client::conn::http2::Builder::new(BoxingExecutor)
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(false)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Some(sender))
}

/// Spawns hyper's per-request HTTP/2 tasks boxed: `tokio::spawn` of the
/// large future by value copied it several times on its way into the task
/// (~2,000 instructions of `memcpy` a request); boxed, one copy into the box
/// and a pointer after that (as hyper-util's pooled client spawns them).
#[derive(Clone, Copy, Debug)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}

/// Longest a [`SharedConn`] connection is reused after its last request
/// began: below kube-apiserver's 90 s idle timeout, so that a request is not
/// sent just as the server closes the connection (the pooled client's
/// `pool_idle_timeout` did the same).
pub const SHARED_IDLE: Duration = Duration::from_secs(55);

/// The HTTP/2 connection ordinary requests share (see the module doc).
#[derive(Clone, Debug)]
struct SharedConn {
    base: Uri,
    /// Offers `h2` and `http/1.1` by ALPN, as the pooled client does.
    connector: HttpsConnector<HttpConnector>,
    /// The connection in use and when its last request began. Held only to
    /// look or swap, never across an await.
    current: Arc<Mutex<Option<(H2Sender, Instant)>>>,
    /// False once the upstream answered without `h2`: the pooled client
    /// (HTTP/1.1) from then on.
    h2: Arc<AtomicBool>,
    /// Connections opened so far.
    opened: Arc<AtomicU64>,
    /// How long a connection is reused after its last request began
    /// ([`SHARED_IDLE`]; shorter in tests).
    idle: Duration,
    /// Longest time from connecting to an HTTP/2 session (TCP, TLS and the
    /// HTTP/2 handshake): the connector's own timeout covers TCP only.
    connect_timeout: Duration,
}

impl SharedConn {
    /// Sends `req` on the shared connection; `Ok(Err(req))` hands it back
    /// when the upstream does not speak HTTP/2.
    async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Result<Response<hyper::body::Incoming>, Request<ProxyBody>>, SendError> {
        let version = req.version();
        let mut retried = false;
        loop {
            let sender = match self.live() {
                Some(s) => Some(s),
                // Boxed: held inline, the connecting future would be part
                // of every request's future, and moved with it.
                None => Box::pin(self.connect()).await?,
            };
            let Some(mut sender) = sender else {
                *req.version_mut() = version;
                return Ok(Err(req));
            };
            *req.version_mut() = Version::HTTP_2;
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(Ok(resp)),
                // A request the connection did not take (it closed after it
                // was picked) goes once more, on a new connection; one the
                // connection took is never sent twice.
                Err(mut e) => match e.take_message() {
                    Some(back) if !retried => {
                        retried = true;
                        req = back;
                    }
                    _ => return Err(SendError::Shared(e.into_error())),
                },
            }
        }
    }

    /// Opens a connection and makes it the shared one, unless another
    /// request's connection became it meanwhile (then that one is used and
    /// this one let go); `None` when the upstream does not speak HTTP/2.
    ///
    /// Requests that find no connection each open one, at once, as the
    /// pooled client did: waiting for one attempt would queue them all
    /// behind an upstream that does not answer, one connect timeout each.
    async fn connect(&self) -> Result<Option<H2Sender>, SendError> {
        if !self.h2.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let attempt = async {
            let io = self
                .connector
                .clone()
                .call(self.base.clone())
                .await
                .map_err(SendError::Connect)?;
            handshake_h2(io).await.map_err(SendError::Handshake)
        };
        let opened = tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))??;
        let Some(sender) = opened else {
            if !self.h2.swap(false, Ordering::Relaxed) {
                return Ok(None);
            }
            tracing::info!(
                "the upstream does not offer HTTP/2: ordinary requests use pooled HTTP/1.1 connections"
            );
            return Ok(None);
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
        if let Some(other) = self.live() {
            return Ok(Some(other));
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((sender.clone(), Instant::now()));
        Ok(Some(sender))
    }

    /// The current connection if it is open and was used within `idle`
    /// (its use time set to now); otherwise it is let go (it closes once
    /// its streams have ended) and `None`.
    fn live(&self) -> Option<H2Sender> {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match cur.as_mut() {
            Some((s, used)) if !s.is_closed() && now.duration_since(*used) < self.idle => {
                *used = now;
                Some(s.clone())
            }
            _ => {
                *cur = None;
                None
            }
        }
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Pooled clients for the upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    base: Uri,
    client: HttpsClient,
    upgrade_client: HttpsClient,
    streams: StreamPool,
    shared: SharedConn,
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
        let stream_conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http2()
            .wrap_connector(http.clone());
        let h1_conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let shared = SharedConn {
            base: base.clone(),
            connector: h2_conn.clone(),
            current: Arc::default(),
            h2: Arc::new(AtomicBool::new(true)),
            opened: Arc::default(),
            idle: SHARED_IDLE,
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // Below kube-apiserver's 90s idle timeout, so a pooled connection
            // is not picked just as the server closes it.
            .pool_idle_timeout(SHARED_IDLE)
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
            streams: StreamPool {
                base: base.clone(),
                connector: stream_conn,
                current: Arc::default(),
                h2: Arc::new(AtomicBool::new(true)),
                opened: Arc::default(),
            },
            base,
            client,
            upgrade_client,
            shared,
        })
    }

    /// HTTP/2 connections opened for long-running requests so far.
    pub fn stream_connections_opened(&self) -> u64 {
        self.streams.opened.load(Ordering::Relaxed)
    }

    /// The upstream URI for `path_and_query`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        self.uri_with(path_and_query.parse()?)
    }

    /// The upstream URI for a path and query parsed already.
    pub fn uri_with(&self, path_and_query: http::uri::PathAndQuery) -> Result<Uri, http::Error> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }

    /// HTTP/2 connections opened for ordinary requests so far.
    pub fn shared_connections_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// Sends a request. `long_running`: a connection upgrade goes over the
    /// HTTP/1.1-only client, any other long-running request over the
    /// [`StreamPool`]; the rest share one HTTP/2 connection ([`SharedConn`]),
    /// or the pooled client when the upstream does not speak HTTP/2.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        long_running: bool,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        if !long_running {
            return match self.shared.send(req).await? {
                Ok(resp) => Ok(resp),
                Err(req) => Ok(self.client.request(req).await?),
            };
        }
        let req = if is_upgrade_request(&req) {
            req
        } else {
            // Boxed: the pool's connect-and-send future is large, and held
            // inline it would be part of every request's future.
            match Box::pin(self.streams.send(req)).await? {
                Ok(resp) => return Ok(resp),
                Err(req) => req,
            }
        };
        Ok(self.upgrade_client.request(req).await?)
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
    // Most messages carry none of them: one pass over the names present
    // instead of a lookup (name parsed and hashed) per hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
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

    /// A TLS, HTTP/2-only server whose every response is headers, then one
    /// `event` frame once `go` is sent, then a body that never ends (a quiet
    /// watch); counts its connections.
    async fn quiet_h2_server(
        max_streams: u32,
    ) -> (
        u16,
        rustls::RootCertStore,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (go, go_rx) = tokio::sync::watch::channel(false);
        use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa, server_config};
        let ca = LocalCa::generate(&CaProfile::new("test upstream CA")).unwrap();
        let leaf = ca.issue(&LeafProfile::new(["127.0.0.1"])).unwrap();
        let cfg = server_config(vec![leaf.cert_der.clone()], leaf.key_der(), &[b"h2"]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let go_rx = go_rx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| {
                        let mut go = go_rx.clone();
                        async move {
                            use futures::StreamExt;
                            let event = futures::stream::once(async move {
                                let _ = go.wait_for(|g| *g).await;
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                    bytes::Bytes::from_static(b"event"),
                                ))
                            });
                            let body = http_body_util::StreamBody::new(
                                event.chain(futures::stream::pending()),
                            );
                            Ok::<_, std::convert::Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (port, roots, accepted, go)
    }

    /// 250 watches held open at once through a server that allows 150
    /// streams per connection: every one gets its answer, over 3 shared
    /// connections (100 streams each at most) instead of 250, and the
    /// watches of a retired connection stay live.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_share_http2_connections() {
        use http_body_util::BodyExt;
        let (port, roots, accepted, go) = quiet_h2_server(150).await;
        let up = Upstream::new(
            format!("https://127.0.0.1:{port}").parse().unwrap(),
            roots,
            Duration::from_secs(10),
        )
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..250 {
            let up = up.clone();
            tasks.push(tokio::spawn(async move {
                let uri = up
                    .uri_for(&format!("/api/v1/namespaces/ns{i}/pods?watch=true"))
                    .unwrap();
                let body: ProxyBody = http_body_util::Empty::<bytes::Bytes>::new()
                    .map_err(|e| match e {})
                    .boxed_unsync();
                let req = Request::get(uri).body(body).unwrap();
                up.send(req, true).await
            }));
        }
        let mut open = Vec::new();
        for t in tasks {
            let resp = tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a watch is not stuck behind the others")
                .unwrap()
                .unwrap();
            assert_eq!(resp.status(), 200);
            open.push(resp);
        }
        assert_eq!(open.len(), 250);
        assert_eq!(up.stream_connections_opened(), 3);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        go.send(true).unwrap();
        for resp in open {
            let frame = tokio::time::timeout(Duration::from_secs(60), resp.into_body().frame())
                .await
                .expect("an event arrives on every watch")
                .unwrap()
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), "event");
        }
    }
    /// Counts of what an [`ok_server`] saw.
    #[derive(Default)]
    struct Seen {
        connections: std::sync::atomic::AtomicUsize,
        requests: std::sync::atomic::AtomicUsize,
    }

    /// A TLS server on 127.0.0.1 offering `alpn`, answering every request
    /// `200 ok` (HTTP/2, or HTTP/1.1 when `alpn` is `http/1.1` only); with
    /// `one_each`, an HTTP/2 connection is shut down (GOAWAY) after its
    /// first request.
    async fn ok_server(
        alpn: &'static [u8],
        one_each: bool,
    ) -> (u16, rustls::RootCertStore, Arc<Seen>) {
        use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa, server_config};
        let ca = LocalCa::generate(&CaProfile::new("test upstream CA")).unwrap();
        let leaf = ca.issue(&LeafProfile::new(["127.0.0.1"])).unwrap();
        let cfg = server_config(vec![leaf.cert_der.clone()], leaf.key_der(), &[alpn]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let count = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let (served, mut first) = tokio::sync::mpsc::channel::<()>(1);
                    let svc = hyper::service::service_fn(move |_req| {
                        count.requests.fetch_add(1, Ordering::SeqCst);
                        let served = served.clone();
                        async move {
                            let _ = served.try_send(());
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                    if alpn == b"http/1.1" {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                        return;
                    }
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc);
                    let mut conn = std::pin::pin!(conn);
                    if one_each {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = first.recv() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = conn.await;
                });
            }
        });
        (port, roots, seen)
    }

    fn upstream(port: u16, roots: rustls::RootCertStore, connect_timeout: Duration) -> Upstream {
        Upstream::new(
            format!("https://127.0.0.1:{port}").parse().unwrap(),
            roots,
            connect_timeout,
        )
        .unwrap()
    }

    async fn get(up: &Upstream, path: &str) -> Result<(http::StatusCode, bytes::Bytes), SendError> {
        use http_body_util::BodyExt;
        let uri = up.uri_for(path).unwrap();
        let body: ProxyBody = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|e| match e {})
            .boxed_unsync();
        let resp = up
            .send(Request::get(uri).body(body).unwrap(), false)
            .await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await.unwrap().to_bytes()))
    }

    /// Bounds a test: a deadlock fails it instead of hanging the suite.
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the test finished within 60 s")
    }

    /// Ordinary requests, one after another and 50 at once, all go over one
    /// HTTP/2 connection once it is open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ordinary_requests_share_one_http2_connection() {
        bounded(async {
            let (port, roots, seen) = ok_server(b"h2", false).await;
            let up = upstream(port, roots, Duration::from_secs(10));
            for i in 0..5 {
                let (status, body) = get(&up, &format!("/api/v1/namespaces/ns{i}/pods"))
                    .await
                    .unwrap();
                assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
            }
            let mut tasks = Vec::new();
            for i in 0..50 {
                let up = up.clone();
                tasks.push(tokio::spawn(async move {
                    get(&up, &format!("/api/v1/namespaces/ns{i}/configmaps")).await
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap().0, 200);
            }
            assert_eq!(up.shared_connections_opened(), 1);
            assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
            assert_eq!(seen.requests.load(Ordering::SeqCst), 55);
        })
        .await;
    }

    /// Requests that arrive together before any connection is open each
    /// get their answer; from then on they share one connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_arriving_together_at_the_start_are_all_answered() {
        bounded(async {
            let (port, roots, seen) = ok_server(b"h2", false).await;
            let up = upstream(port, roots, Duration::from_secs(10));
            let mut tasks = Vec::new();
            for i in 0..20 {
                let up = up.clone();
                tasks.push(tokio::spawn(async move {
                    get(&up, &format!("/api/v1/namespaces/ns{i}/pods")).await
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap().0, 200);
            }
            let opened = up.shared_connections_opened();
            assert!((1..=20).contains(&opened), "{opened}");
            for _ in 0..5 {
                assert_eq!(get(&up, "/api/v1/pods").await.unwrap().0, 200);
            }
            assert_eq!(up.shared_connections_opened(), opened);
            assert_eq!(seen.requests.load(Ordering::SeqCst), 25);
        })
        .await;
    }

    /// A connection the server closed (GOAWAY after one request) is
    /// replaced by a new one for the next request, which succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_shared_connection_is_replaced() {
        bounded(async {
            let (port, roots, seen) = ok_server(b"h2", true).await;
            let up = upstream(port, roots, Duration::from_secs(10));
            for i in 0..4 {
                let (status, _) = get(&up, "/api/v1/pods").await.unwrap();
                assert_eq!(status, 200, "request {i}");
                // Until this side has seen the connection close.
                loop {
                    let closed = up
                        .shared
                        .current
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_none_or(|(s, _)| s.is_closed());
                    if closed {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            assert_eq!(up.shared_connections_opened(), 4);
            assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
            assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
        })
        .await;
    }

    /// A connection idle for longer than the shared connection's idle time
    /// is not reused (here that time is zero: every request opens one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_shared_connection_is_not_reused() {
        bounded(async {
            let (port, roots, seen) = ok_server(b"h2", false).await;
            let mut up = upstream(port, roots, Duration::from_secs(10));
            up.shared.idle = Duration::ZERO;
            for _ in 0..3 {
                assert_eq!(get(&up, "/api/v1/pods").await.unwrap().0, 200);
            }
            assert_eq!(up.shared_connections_opened(), 3);
            assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
        })
        .await;
    }

    /// An upstream that offers only HTTP/1.1 gets ordinary requests over
    /// the pooled HTTP/1.1 client, each exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http1_upstream_gets_ordinary_requests_over_http1() {
        bounded(async {
            let (port, roots, seen) = ok_server(b"http/1.1", false).await;
            let up = upstream(port, roots, Duration::from_secs(10));
            for _ in 0..3 {
                let (status, body) = get(&up, "/api/v1/pods").await.unwrap();
                assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
            }
            assert_eq!(up.shared_connections_opened(), 0);
            assert!(!up.shared.h2.load(Ordering::Relaxed));
            assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        })
        .await;
    }

    /// An upstream that is not there: a clear error naming the cause once.
    #[tokio::test]
    async fn an_unreachable_upstream_is_an_error() {
        bounded(async {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let up = upstream(
                port,
                rustls::RootCertStore::empty(),
                Duration::from_secs(10),
            );
            let e = get(&up, "/api/v1/pods").await.unwrap_err();
            let text = crate::proxy::error_chain(&e);
            assert!(text.starts_with("connecting to the upstream: "), "{text}");
            assert_eq!(text.matches("tcp connect error").count(), 1, "{text}");
        })
        .await;
    }

    /// An upstream that accepts the connection and never answers the TLS
    /// handshake: the request fails after the connect timeout.
    #[tokio::test]
    async fn a_stalled_handshake_times_out() {
        bounded(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let held = tokio::spawn(async move {
                let mut open = Vec::new();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    open.push(tcp);
                }
            });
            let up = upstream(
                port,
                rustls::RootCertStore::empty(),
                Duration::from_millis(300),
            );
            let e = get(&up, "/api/v1/pods").await.unwrap_err();
            assert!(
                matches!(e, SendError::ConnectTimeout(_)),
                "{}",
                crate::proxy::error_chain(&e)
            );
            held.abort();
        })
        .await;
    }
}
