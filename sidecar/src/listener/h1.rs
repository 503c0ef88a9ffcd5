//! HTTP/1.1 watches served without hyper's connection buffers.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for an
//! HTTP/1.1 connection's whole life, and has no setting to shrink them. A
//! watch (or a followed log) holds its connection for hours while it sends
//! a few events, so with many watches open those 16 KiB a connection were
//! most of the sidecar's memory. Here an HTTP/1.1 connection starts in a
//! small loop of our own that reads request heads with `httparse`:
//!
//! - a **bodiless long-lived GET** (`watch` true, or `follow` true as on
//!   a log) is answered here: the handler runs as for any request, and its
//!   response head and body chunks are written straight to the TLS stream,
//!   each write's buffer freed after it. While it waits for the handler's
//!   answer or the next event it reads the socket into a 128-byte probe, so
//!   a client that closes ends the request (an approval wait, the upstream
//!   watch) at once, as with hyper;
//! - **anything else** (a request body, `Expect`, an upgrade, HTTP/1.0, a
//!   head `httparse` refuses, or any other request) hands the connection to
//!   hyper for the rest of its life, the bytes already read first
//!   ([`Rewind`]). hyper then answers, refuses with its own errors, and
//!   upgrades exactly as before.
//!
//! Keep-alive works the same in both: a watch that ends (its
//! `timeoutSeconds`) leaves the connection open for the next request. The
//! hand-over is for good: a watch that follows another request on the same
//! connection (client-go's LIST then WATCH over HTTP/1.1) is hyper's, with
//! its buffers; the saving is for connections that carry only watches, as
//! a client holding many watches at once opens them (each its own pooled
//! connection while the others are busy).
//! [`classify`] and [`response_head`] are pure; the loop that drives them
//! is tested over an in-memory duplex stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::hooks::{ProxyBody, boxed};

/// A head longer than this without its end goes to hyper, which applies its
/// own limit and answers `431` if it must.
const MAX_HEAD: usize = 64 * 1024;

/// Most header lines parsed here; a head with more goes to hyper (whose
/// limit is 100).
const MAX_HEADERS: usize = 64;

/// Bytes read at a time, while waiting for a head or watching for a close.
/// It lives in the connection's state for as long as the watch.
const PROBE: usize = 128;

/// What the bytes read so far say.
#[derive(Debug)]
pub(super) enum Head {
    /// A complete head of a long-lived bodiless GET, `len` bytes long.
    Watch {
        /// The request, without a body (boxed: it is the large variant).
        req: Box<Request<()>>,
        /// Length of the head in the buffer.
        len: usize,
        /// The client asked to close after this response.
        close: bool,
    },
    /// Anything else: hyper serves the connection from here on.
    Other,
    /// The head has not ended yet.
    Incomplete,
}

/// Reads the head at the start of `buf` and decides who serves it.
pub(super) fn classify(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Head::Incomplete,
        _ => return Head::Other,
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Head::Other;
    }
    let Some(path) = parsed.path.filter(|p| p.starts_with('/')) else {
        return Head::Other;
    };
    if !long_lived(path) {
        return Head::Other;
    }
    let Ok(uri) = path.parse::<http::Uri>() else {
        return Head::Other;
    };
    let mut req = Request::new(());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let mut close = false;
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Head::Other;
        };
        if name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONTENT_LENGTH && value.as_bytes() != b"0")
        {
            return Head::Other;
        }
        if name == header::CONNECTION {
            if has_token(&value, b"upgrade") {
                return Head::Other;
            }
            close |= has_token(&value, b"close");
        }
        req.headers_mut().append(name, value);
    }
    Head::Watch {
        req: Box::new(req),
        len,
        close,
    }
}

/// Whether a `Connection` header value lists `token` (lower case).
fn has_token(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A request that may hold its connection open for long: a watch or a
/// followed log, with the flag spelt as the server reads it true (Go's
/// `ParseBool`).
fn long_lived(path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    query.split('&').any(|kv| {
        matches!(
            kv.split_once('='),
            Some((
                "watch" | "follow",
                "1" | "t" | "T" | "true" | "TRUE" | "True"
            ))
        )
    })
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// `content-length` bytes, as they come.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// The response head to write, and how the body follows it. Adds what
/// hyper would: `date`, the framing header, `connection: close` when the
/// connection closes after this response; a 1xx (which cannot end a
/// request here: no upgrades, no `Expect`) becomes a bare 500, as hyper
/// makes it.
pub(super) fn response_head(
    parts: &mut http::response::Parts,
    exact_len: Option<u64>,
    close: bool,
) -> Result<(Vec<u8>, Framing), WriteError> {
    let headers = &mut parts.headers;
    let framing = if parts.status.is_informational() {
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        headers.clear();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        Framing::Empty
    } else if parts.status == StatusCode::NO_CONTENT {
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
        Framing::Empty
    } else if parts.status == StatusCode::NOT_MODIFIED {
        headers.remove(header::TRANSFER_ENCODING);
        Framing::Empty
    } else if let Some(n) = content_length(headers)? {
        headers.remove(header::TRANSFER_ENCODING);
        Framing::Length(n)
    } else if let Some(n) = exact_len {
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        Framing::Length(n)
    } else {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Framing::Chunked
    };
    let status = parts.status;
    if !headers.contains_key(header::DATE)
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
    {
        headers.insert(header::DATE, v);
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok((out, framing))
}

/// The response's `content-length`: every value the same run of digits,
/// or an error (hyper refuses such a response too).
fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, WriteError> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let b = v.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return Err(WriteError::BadLength);
        }
        let n = std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or(WriteError::BadLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(WriteError::BadLength);
        }
        found = Some(n);
    }
    Ok(found)
}

/// One chunk of a chunked body: size line, data, CRLF, in one buffer so it
/// goes out as one TLS record.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 20);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// How the loop ended.
pub(super) enum Outcome<T> {
    /// The connection is done (closed by either side, or asked to close).
    Closed,
    /// hyper takes over, the bytes already read first.
    Handoff(T, Bytes),
}

/// Serves watches on `io` until the connection ends or a request comes that
/// hyper must serve. `respond` answers a request as the listener's service
/// does (request guard, held values); `close` asks to finish: at once when
/// no request is in progress, after the current response otherwise.
pub(super) async fn serve<T, R, F>(mut io: T, respond: R, close: CancellationToken) -> Outcome<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
    R: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut pending: Vec<u8> = Vec::new();
    let mut probe = [0u8; PROBE];
    loop {
        // Read until a head is complete or shows it is not ours.
        let (req, len, close_after) = loop {
            match classify(&pending) {
                Head::Watch { req, len, close } => break (req, len, close),
                Head::Other => return Outcome::Handoff(io, Bytes::from(pending)),
                Head::Incomplete => {}
            }
            // A head ends with a line: parse again only when one ended, so
            // a client sending a long head slowly is not parsed per read.
            loop {
                let n = tokio::select! {
                    n = io.read(&mut probe) => n,
                    // Between requests, or a head that is late (the watchdog).
                    _ = close.cancelled() => {
                        let _ = io.shutdown().await;
                        return Outcome::Closed;
                    }
                };
                let Some(new) = took(n, &probe, &mut pending) else {
                    return Outcome::Closed;
                };
                if new.contains(&b'\n') || pending.len() >= MAX_HEAD {
                    break;
                }
            }
        };
        pending.drain(..len);
        // Give back what the head needed; a watch may last for hours.
        pending.shrink_to_fit();
        let fut = respond((*req).map(|()| boxed(Empty::<Bytes>::new())));
        tokio::pin!(fut);
        // The handler may wait long (an approval, the upstream's answer): a
        // client that leaves meanwhile ends the request, as with hyper.
        let resp = loop {
            tokio::select! {
                biased;
                resp = &mut fut => break resp,
                n = io.read(&mut probe), if pending.len() < MAX_HEAD => {
                    if took(n, &probe, &mut pending).is_none() {
                        return Outcome::Closed;
                    }
                }
            }
        };
        // hyper closes after a response that says `Connection: close` too.
        let close_after = close_after
            || close.is_cancelled()
            || resp
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| has_token(v, b"close"));
        match write_response(&mut io, resp, close_after, &mut pending, &mut probe).await {
            Ok(()) if !close_after && !close.is_cancelled() => {}
            Ok(()) => {
                let _ = io.shutdown().await;
                return Outcome::Closed;
            }
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/1.1 watch connection ended");
                return Outcome::Closed;
            }
        }
    }
}

/// What one read of the client's bytes brought: appended to `pending` (the
/// next request's head, pipelined) and returned; `None` when the client has
/// closed its side or the socket failed.
fn took<'p>(
    n: std::io::Result<usize>,
    probe: &'p [u8; PROBE],
    pending: &mut Vec<u8>,
) -> Option<&'p [u8]> {
    match n {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            let new = probe.get(..n)?;
            pending.extend_from_slice(new);
            Some(new)
        }
    }
}

/// Why a response could not be written whole.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// The socket failed.
    #[error("writing the response: {0}")]
    Io(#[from] std::io::Error),
    /// The client closed its side while the response was streaming.
    #[error("the client closed the connection")]
    ClientGone,
    /// The response body failed (an upstream error mid-stream).
    #[error("response body: {0}")]
    Body(crate::hooks::BoxError),
    /// The body was longer or shorter than its `content-length`.
    #[error("response body does not match its content-length")]
    Length,
    /// The response's `content-length` headers are not one number.
    #[error("response has an invalid or conflicting content-length")]
    BadLength,
}

/// Writes `resp`; `Ok` when it went out whole and the connection may serve
/// another request.
async fn write_response<T>(
    io: &mut T,
    resp: Response<ProxyBody>,
    close: bool,
    pending: &mut Vec<u8>,
    probe: &mut [u8; PROBE],
) -> Result<(), WriteError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut parts, mut body) = resp.into_parts();
    let (head, framing) = response_head(&mut parts, body.size_hint().exact(), close)?;
    drop(parts);
    io.write_all(&head).await?;
    drop(head);
    if framing == Framing::Empty {
        io.flush().await?;
        return Ok(());
    }
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    loop {
        let frame = tokio::select! {
            biased;
            f = body.frame() => f,
            // While the body is quiet, notice a client that leaves. Past a
            // head's worth of pipelined bytes, stop reading (as hyper does).
            n = io.read(probe), if pending.len() < MAX_HEAD => {
                if took(n, probe, pending).is_none() {
                    return Err(WriteError::ClientGone);
                }
                continue;
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(WriteError::Body(e)),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                // Trailers: HTTP/1.1 clients of the API never ask for them.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        match &mut left {
            Some(n) => {
                let len = data.len() as u64;
                if len > *n {
                    return Err(WriteError::Length);
                }
                *n -= len;
                io.write_all(data.chunk()).await?;
            }
            None => io.write_all(&chunk(&data)).await?,
        }
        io.flush().await?;
    }
    match left {
        Some(0) => {}
        Some(_) => return Err(WriteError::Length),
        None => io.write_all(b"0\r\n\r\n").await?,
    }
    io.flush().await?;
    Ok(())
}

/// `inner`, with `prefix` read first: the bytes the watch loop read before
/// it handed the connection to hyper.
pub(super) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub(super) fn new(inner: T, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Free the head buffer now, not when the connection closes.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

write_through!(Rewind);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn watch(head: &str) -> (Request<()>, usize, bool) {
        match classify(head.as_bytes()) {
            Head::Watch { req, len, close } => (*req, len, close),
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn is_other(head: &str) -> bool {
        matches!(classify(head.as_bytes()), Head::Other)
    }

    #[test]
    fn watches_and_followed_logs_are_ours() {
        let head = "GET /api/v1/namespaces/a/configmaps?watch=true&timeoutSeconds=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nAccept: application/json\r\n\r\nGET / HTTP/1.1\r\n";
        let (req, len, close) = watch(head);
        assert_eq!(&head[len..], "GET / HTTP/1.1\r\n");
        assert!(!close);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/a/configmaps");
        assert_eq!(req.headers()["authorization"], "Bearer t");
        assert_eq!(req.version(), Version::HTTP_11);
        watch("GET /api/v1/pods?resourceVersion=1&watch=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        watch("GET /api/v1/namespaces/a/pods/p/log?follow=true HTTP/1.1\r\nHost: x\r\n\r\n");
        watch("GET /api/v1/pods?watch=True HTTP/1.1\r\nHost: x\r\n\r\n");
        watch("GET /api/v1/pods?watch=t HTTP/1.1\r\nHost: x\r\n\r\n");
        let (_, _, close) = watch(
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(close);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            "GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v1/pods?watch=false HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v1/pods?xwatch=true HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /api/v1/pods?watch=true HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "GET /api/v1/pods?watch=true HTTP/1.0\r\n\r\n",
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET http://x/api/v1/pods?watch=true HTTP/1.1\r\n\r\n",
            "GET /api/v1/pods?watch=true HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "\u{1}\u{2}garbage\r\n\r\n",
        ] {
            assert!(is_other(head), "{head:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert!(is_other(&format!(
            "GET /?watch=true HTTP/1.1\r\n{many}\r\n"
        )));
    }

    #[test]
    fn incomplete_heads_wait_until_too_long() {
        assert!(matches!(classify(b""), Head::Incomplete));
        assert!(matches!(
            classify(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n"),
            Head::Incomplete
        ));
        let long = format!("GET /?watch=true HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(is_other(&long));
    }

    fn head_of(resp: Response<()>, exact: Option<u64>, close: bool) -> (String, Framing) {
        let (mut parts, ()) = resp.into_parts();
        let (head, framing) = response_head(&mut parts, exact, close).unwrap();
        (String::from_utf8(head).unwrap(), framing)
    }

    #[test]
    fn response_heads_frame_the_body_as_hyper_would() {
        let (head, framing) = head_of(
            Response::builder()
                .header("content-type", "application/json")
                .body(())
                .unwrap(),
            None,
            false,
        );
        assert_eq!(framing, Framing::Chunked);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"));
        assert!(head.contains("\r\ntransfer-encoding: chunked\r\n"));
        assert!(head.contains("\r\ndate: "));
        assert!(head.ends_with("\r\n\r\n"));
        assert!(!head.contains("connection"));

        let (head, framing) = head_of(
            Response::builder().status(403).body(()).unwrap(),
            Some(42),
            true,
        );
        assert_eq!(framing, Framing::Length(42));
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("content-length: 42\r\n"));
        assert!(head.contains("connection: close\r\n"));
        assert!(!head.contains("transfer-encoding"));

        let (head, framing) = head_of(
            Response::builder()
                .header("content-length", "7")
                .header("transfer-encoding", "chunked")
                .header("date", "then")
                .body(())
                .unwrap(),
            None,
            false,
        );
        assert_eq!(framing, Framing::Length(7));
        assert!(!head.contains("transfer-encoding"));
        assert!(head.contains("date: then\r\n"));

        let (_, framing) = head_of(
            Response::builder().status(304).body(()).unwrap(),
            None,
            false,
        );
        assert_eq!(framing, Framing::Empty);
        let (head, framing) = head_of(
            Response::builder()
                .status(204)
                .header("content-length", "3")
                .body(())
                .unwrap(),
            Some(3),
            false,
        );
        assert_eq!(framing, Framing::Empty);
        assert!(!head.contains("content-length"), "{head}");
        // A 1xx cannot end a request here: hyper's bare 500.
        let (head, framing) = head_of(
            Response::builder()
                .status(103)
                .header("link", "</x>")
                .body(())
                .unwrap(),
            None,
            false,
        );
        assert_eq!(framing, Framing::Empty);
        assert!(
            head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{head}"
        );
        assert!(
            head.contains("content-length: 0\r\n") && !head.contains("link"),
            "{head}"
        );
    }

    #[test]
    fn a_bad_or_conflicting_content_length_is_refused() {
        for values in [&["+5"][..], &["5", "6"], &["0x5"], &[""], &["5 "]] {
            let mut b = Response::builder();
            for v in values {
                b = b.header("content-length", *v);
            }
            let (mut parts, ()) = b.body(()).unwrap().into_parts();
            assert!(
                matches!(
                    response_head(&mut parts, None, false),
                    Err(WriteError::BadLength)
                ),
                "{values:?}"
            );
        }
        let (_, framing) = head_of(
            Response::builder()
                .header("content-length", "5")
                .header("content-length", "5")
                .body(())
                .unwrap(),
            None,
            false,
        );
        assert_eq!(framing, Framing::Length(5));
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    const BOUND: Duration = Duration::from_secs(10);

    /// A handler answering every request with `chunks` as a streamed body.
    fn streaming(
        chunks: &'static [&'static str],
    ) -> impl Fn(Request<ProxyBody>) -> std::future::Ready<Response<ProxyBody>> {
        move |_req| {
            let frames = chunks.iter().map(|c| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                    c.as_bytes(),
                )))
            });
            let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
            std::future::ready(Response::new(boxed(body)))
        }
    }

    async fn all_of(mut client: tokio::io::DuplexStream) -> String {
        let mut out = String::new();
        tokio::time::timeout(BOUND, client.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn serve_streams_chunks_and_hands_over_what_follows() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /api/v1/pods HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let chunks = &["0123456789abcdef", "xy"];
        let out = tokio::time::timeout(
            BOUND,
            serve(server, streaming(chunks), CancellationToken::new()),
        )
        .await
        .unwrap();
        let Outcome::Handoff(io, prefix) = out else {
            panic!("the POST was not handed over");
        };
        assert_eq!(
            prefix,
            "POST /api/v1/pods HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        );
        drop(io);
        let wire = all_of(client).await;
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert_eq!(body, "10\r\n0123456789abcdef\r\n2\r\nxy\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let respond = |_req| std::future::ready(Response::new(crate::hooks::full("{}")));
        let out = tokio::time::timeout(BOUND, serve(server, respond, CancellationToken::new()))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Closed));
        let wire = all_of(client).await;
        assert!(wire.contains("\r\nconnection: close\r\n"), "{wire}");
        assert!(wire.contains("\r\ncontent-length: 2\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n{}"), "{wire}");
    }

    #[tokio::test]
    async fn a_response_that_says_close_closes_the_connection() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\n\r\nGET /api/v1/pods?watch=true HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let respond = |_req| {
            let mut resp = Response::new(crate::hooks::full("{}"));
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("Close"));
            std::future::ready(resp)
        };
        let out = tokio::time::timeout(BOUND, serve(server, respond, CancellationToken::new()))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Closed));
        let wire = all_of(client).await;
        assert_eq!(wire.matches("HTTP/1.1 200").count(), 1, "{wire}");
        assert!(wire.contains("\r\nconnection: close\r\n"), "{wire}");
    }

    /// Sets its flag when dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_client_that_leaves_before_the_answer_ends_the_request() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        // A handler that never answers (an approval nobody gives).
        let respond = move |_req| {
            let guard = Dropped(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Response<ProxyBody>>().await
            }
        };
        client
            .write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let serving = tokio::spawn(serve(server, respond, CancellationToken::new()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        drop(client);
        let out = tokio::time::timeout(BOUND, serving).await.unwrap().unwrap();
        assert!(matches!(out, Outcome::Closed));
        assert!(
            dropped.load(Ordering::SeqCst),
            "the request outlived its client"
        );
    }

    #[tokio::test]
    async fn close_ends_an_idle_connection_and_a_busy_one_after_its_response() {
        let (_client, server) = tokio::io::duplex(1024);
        let close = CancellationToken::new();
        close.cancel();
        let out = tokio::time::timeout(BOUND, serve(server, streaming(&["a"]), close))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Closed));

        // The close is asked for while the handler works: the response
        // still goes out whole, then the connection closes.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let close = CancellationToken::new();
        let closing = close.clone();
        let respond = move |_req| {
            closing.cancel();
            std::future::ready(Response::new(crate::hooks::full("event")))
        };
        client
            .write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\n\r\nGET /api/v1/pods?watch=true HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let out = tokio::time::timeout(BOUND, serve(server, respond, close))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Closed));
        let wire = all_of(client).await;
        assert!(wire.ends_with("\r\n\r\nevent"), "{wire}");
        assert_eq!(wire.matches("HTTP/1.1 200").count(), 1, "{wire}");
        assert!(wire.contains("connection: close"), "{wire}");
    }

    /// Mangled heads (bytes flipped, inserted, cut, repeated; a fixed
    /// seed) never panic, and a head taken as ours never claims more bytes
    /// than it was given.
    #[test]
    fn mangled_heads_never_panic() {
        let base: &[u8] = b"GET /api/v1/namespaces/a/pods?watch=true&resourceVersion=7 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nAuthorization: Bearer t\r\n\r\n";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut buf = base.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (buf.len() + 1);
                match next() % 4 {
                    0 if at < buf.len() => buf[at] = next() as u8,
                    1 => buf.insert(at, next() as u8),
                    2 => buf.truncate(at),
                    _ => {
                        let end = (at + (next() as usize) % 16).min(buf.len());
                        let piece = buf[at..end].to_vec();
                        buf.splice(at..at, piece);
                    }
                }
            }
            if let Head::Watch { len, .. } = classify(&buf) {
                assert!(len <= buf.len(), "{:?}", String::from_utf8_lossy(&buf));
            }
        }
    }

    #[test]
    fn chunks_carry_their_size_in_hex() {
        assert_eq!(chunk(b"0123456789abcdefX"), b"11\r\n0123456789abcdefX\r\n");
    }

    #[tokio::test]
    async fn rewind_reads_the_prefix_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(b, Bytes::from_static(b"hello"));
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
