//! Response masking for the proxy: content negotiation on the way up, and a
//! streaming body adapter on the way down.
//!
//! - [`negotiate_accept`] rewrites the request's `Accept` to JSON (keeping
//!   `as=Table`/`as=PartialObjectMetadata` parameters) so the upstream answers
//!   in a format the masker reads; client-go decodes by the response's
//!   `Content-Type`, so clients do not notice.
//! - [`mask_response`] wraps the upstream body in a [`MaskedBody`] that
//!   gunzips (if needed) and masks as the bytes arrive, with a [`MaskCount`]
//!   the recorder reads once the body is done.
//! - [`MaskTransform`] is the [`TransformHook`] that does both.
//!
//! Anything the masker cannot read (protobuf, CBOR, an unknown encoding,
//! truncated JSON, JSON served as `text/plain` — text is read as log lines
//! for `pods/log` only) is an error: before the headers went out the app gets
//! a 502 `Status`; mid-stream the body ends with an error (the app sees a
//! broken response), never with unmasked bytes.
//!
//! The sidecar's own upstream token ([`TokenScrub`]) is scrubbed from every
//! response that is not an upgraded tunnel: from the headers, from masked
//! bodies (per JSON string and key, per log line, and over the output bytes)
//! and from bodies that are not masked (discovery, `*/proxy`, other
//! non-resource URLs), which are then read through a [`StreamScrubber`]
//! (gzip decoded; other encodings refused) with memory bounded by the
//! token's length, whatever the chunk boundaries.

use std::borrow::Cow;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use http_body::{Body, Frame};
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::mask::{
    MaskContext, MaskError, Masker, ScrubSet, StreamKind, StreamMasker, StreamScrubber,
};
use tokio::sync::watch;

use crate::error::Refusal;
use crate::hooks::{BoxError, ProxyBody, RequestContext, TransformHook, boxed};

/// Compressed input is fed to the decoder in slices this big, so one chunk
/// of a decompression bomb cannot expand to more than ~1000 times this.
const GZIP_SLICE: usize = 4096;

/// What the response body of a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document (object, list, Table, Status).
    Object,
    /// A watch stream (JSON events).
    Watch,
    /// Pod logs (text).
    Log,
}

impl BodyKind {
    /// The body kind of a request's response; `None` when the response is not
    /// masked (non-resource URLs such as discovery, upgraded connections,
    /// `proxy` subresources).
    pub fn for_request(attrs: &RequestAttributes) -> Option<BodyKind> {
        if !attrs.is_resource_request {
            return None;
        }
        match attrs.subresource.as_str() {
            "exec" | "attach" | "portforward" | "proxy" => None,
            "log" => Some(BodyKind::Log),
            _ if attrs.verb == "watch" => Some(BodyKind::Watch),
            _ => Some(BodyKind::Object),
        }
    }
}

/// Why a response cannot be masked. Answered with 502 `Status` when the
/// headers have not been sent; otherwise the body ends with this error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskBodyError {
    #[error("upstream answered with content type {content_type:?}, which the sidecar cannot mask")]
    UnsupportedContentType { content_type: String },
    #[error(
        "upstream answered with content encoding {encoding:?}, which the sidecar cannot decode"
    )]
    UnsupportedEncoding { encoding: String },
    #[error("upstream gzip body is corrupt: {why}")]
    Gzip { why: String },
    #[error("upstream body cannot be masked: {0}")]
    Mask(#[from] MaskError),
    #[error("upstream body failed: {why}")]
    Upstream { why: String },
}

/// Rewrites `Accept` (and `Accept-Encoding`) of a request whose response may
/// need masking; returns true when the response must go through
/// [`mask_response`]. JSON alternatives are kept with their `as`/`v`/`g`/`q`
/// parameters, protobuf/CBOR/YAML alternatives become JSON with the same
/// parameters, duplicates are dropped. `Accept-Encoding` is narrowed to gzip
/// (the only encoding the masker decodes) or removed.
pub fn negotiate_accept(attrs: &RequestAttributes, headers: &mut HeaderMap) -> bool {
    let Some(kind) = BodyKind::for_request(attrs) else {
        return false;
    };
    if kind != BodyKind::Log {
        let values: Vec<String> = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        if !values.is_empty() || headers.contains_key(ACCEPT) {
            let rewritten = rewrite_accept(&values.join(","));
            headers.remove(ACCEPT);
            if let Ok(v) = HeaderValue::from_str(&rewritten) {
                headers.insert(ACCEPT, v);
            }
        }
    }
    narrow_accept_encoding(headers);
    true
}

/// The Accept value asking for JSON in place of `accept`.
fn rewrite_accept(accept: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let convertible = matches!(
            media.as_str(),
            "application/json"
                | "application/vnd.kubernetes.protobuf"
                | "application/yaml"
                | "application/cbor"
                | "application/cbor-seq"
                | "application/*"
                | "*/*"
        );
        if !convertible {
            continue;
        }
        let mut r = String::from("application/json");
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            if matches!(k.as_str(), "as" | "v" | "g" | "q") {
                r.push(';');
                r.push_str(&k);
                r.push('=');
                r.push_str(v.trim());
            }
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        out.push("application/json".into());
    }
    out.join(",")
}

/// The outcome of masking one body, for the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskOutcome {
    /// The body ended and was masked completely.
    Complete { masked: usize },
    /// Masking failed; the body was cut off.
    Failed { masked: usize, error: String },
    /// The body was dropped before its end (client went away, shutdown).
    Aborted { masked: usize },
}

impl MaskOutcome {
    /// Values masked.
    pub fn masked(&self) -> usize {
        match self {
            MaskOutcome::Complete { masked }
            | MaskOutcome::Failed { masked, .. }
            | MaskOutcome::Aborted { masked } => *masked,
        }
    }
}

/// The number of values masked in one response, readable while and after the
/// body streams. Inserted into the response's extensions by [`MaskTransform`].
#[derive(Debug, Clone)]
pub struct MaskCount {
    progress: Arc<Progress>,
    done: watch::Receiver<Option<MaskOutcome>>,
}

/// What a [`MaskedBody`] tells its [`MaskCount`] while it streams (one
/// allocation for both).
#[derive(Debug, Default)]
struct Progress {
    /// Values masked so far.
    count: AtomicUsize,
    /// Set when a body read as one JSON document ended complete (see
    /// [`MaskCount::whole_json_document`]).
    document: AtomicBool,
}

impl MaskCount {
    /// Values masked so far.
    pub fn current(&self) -> usize {
        self.progress.count.load(Ordering::Relaxed)
    }

    /// Whether the body is over and every byte of it is the output of the
    /// masker reading one JSON document ([`StreamKind::Json`]), complete,
    /// with nothing replaced after it (the token scrub over the output found
    /// nothing): one valid JSON value, possibly with whitespace around it,
    /// or only whitespace for an empty body. The masker parsed every part
    /// of it (items and the text around them pass on verbatim only after
    /// parsing, masked parts are written by serde_json), so the recorder
    /// need not validate it again.
    pub fn whole_json_document(&self) -> bool {
        self.progress.document.load(Ordering::Acquire)
    }

    /// The outcome, if the body is over.
    pub fn outcome(&self) -> Option<MaskOutcome> {
        self.done.borrow().clone()
    }

    /// Waits until the body is over (ended, failed or dropped).
    pub async fn finished(&self) -> MaskOutcome {
        let mut rx = self.done.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(MaskOutcome::Aborted {
                masked: self.current(),
            }),
            Err(_) => MaskOutcome::Aborted {
                masked: self.current(),
            },
        }
    }
}

type InnerBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// A masked response body (see [`mask_response`]).
pub struct MaskedBody {
    inner: InnerBody,
    gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
    /// `None`: the body is only scrubbed (see [`scrub_response`]).
    masker: Option<StreamMasker>,
    /// The token scrub over the output bytes, if there is a token.
    scrubber: Option<StreamScrubber>,
    /// Masked bytes ready to go out.
    pending: Option<Bytes>,
    done: bool,
    /// Shared with the [`MaskCount`].
    progress: Arc<Progress>,
    outcome: watch::Sender<Option<MaskOutcome>>,
    /// The masker reads one JSON document ([`StreamKind::Json`]).
    json_document: bool,
}

impl std::fmt::Debug for MaskedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedBody")
            .field("masker", &self.masker)
            .field("gzip", &self.gzip.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Wraps an upstream response body so it is masked as it streams.
///
/// `parts` are the upstream response's; the caller must then apply
/// [`masked_response_headers`] to them (the body changes length and is no
/// longer compressed). Errors here (content type or encoding the masker
/// cannot read) mean the response must be answered with
/// [`Refusal::Unmaskable`] (502).
pub fn mask_response<B>(
    masker: Arc<Masker>,
    ctx: MaskContext,
    kind: BodyKind,
    parts: &http::response::Parts,
    body: B,
) -> Result<(MaskedBody, MaskCount), MaskBodyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let gzip = is_gzip(parts)?;
    let stream_kind = stream_kind(kind, parts)?;
    let scrubber = ctx
        .scrub
        .clone()
        .filter(|s| !s.is_empty())
        .map(StreamScrubber::new);
    let masker = StreamMasker::new(masker, ctx, stream_kind);
    let json_document = stream_kind == StreamKind::Json;
    Ok(wrap(body, gzip, Some(masker), scrubber, json_document))
}

/// Wraps an upstream response body that is not masked so that the values of
/// `scrub` (the sidecar's token) are scrubbed from it as it streams. The
/// caller applies [`masked_response_headers`]. Errors: an encoding other
/// than gzip (the bytes could not be read).
pub fn scrub_response<B>(
    scrub: Arc<ScrubSet>,
    parts: &http::response::Parts,
    body: B,
) -> Result<(MaskedBody, MaskCount), MaskBodyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let gzip = is_gzip(parts)?;
    Ok(wrap(
        body,
        gzip,
        None,
        Some(StreamScrubber::new(scrub)),
        false,
    ))
}

fn is_gzip(parts: &http::response::Parts) -> Result<bool, MaskBodyError> {
    match header_str(&parts.headers, CONTENT_ENCODING).map(|e| e.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(e) if e.is_empty() || e == "identity" => Ok(false),
        Some(e) if e == "gzip" || e == "x-gzip" => Ok(true),
        Some(e) => Err(MaskBodyError::UnsupportedEncoding {
            encoding: echo_token(&e),
        }),
    }
}

/// A header value fit to be echoed in an error message: only when it looks
/// like a media type or an encoding name (a reflected token must not be
/// echoed, not even in part).
fn echo_token(v: &str) -> String {
    let ok = |p: &str, max: usize| {
        !p.is_empty()
            && p.len() <= max
            && p.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-')
            })
    };
    let media = v.split(';').next().unwrap_or("").trim();
    let fits = match media.split_once('/') {
        Some((t, sub)) => ok(t, 40) && ok(sub, 60),
        None => media.split(',').all(|e| ok(e.trim(), 20)),
    };
    if fits {
        media.to_string()
    } else {
        "(unrecognised)".to_string()
    }
}

fn wrap<B>(
    body: B,
    gzip: bool,
    masker: Option<StreamMasker>,
    scrubber: Option<StreamScrubber>,
    json_document: bool,
) -> (MaskedBody, MaskCount)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let progress = Arc::new(Progress::default());
    let (tx, rx) = watch::channel(None);
    let masker_present = masker.is_some();
    let body = MaskedBody {
        inner: Box::pin(http_body_util::BodyExt::map_err(body, Into::into)),
        gzip: gzip.then(|| flate2::write::GzDecoder::new(Vec::new())),
        masker,
        scrubber,
        pending: None,
        done: false,
        progress: progress.clone(),
        outcome: tx,
        json_document: json_document && masker_present,
    };
    (body, MaskCount { progress, done: rx })
}

/// Headers of a masked response: no `Content-Length` (the length changes),
/// no `Content-Encoding` (sent decompressed).
pub fn masked_response_headers(parts: &mut http::response::Parts) {
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(CONTENT_ENCODING);
}

/// The header's values as text, joined with commas; borrowed from the
/// headers when there is one value and it is UTF-8 (as it nearly always is).
fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> Option<Cow<'_, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    // More than one value (e.g. two encodings stacked) is not something we decode.
    let mut s = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let s = s.to_mut();
        s.push(',');
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(s)
}

/// How to read the body, from the request's kind and the response's type.
fn stream_kind(kind: BodyKind, parts: &http::response::Parts) -> Result<StreamKind, MaskBodyError> {
    let no_body = matches!(parts.status.as_u16(), 204 | 304)
        || header_str(&parts.headers, CONTENT_LENGTH).is_some_and(|l| l.trim() == "0");
    let ct = header_str(&parts.headers, CONTENT_TYPE);
    let media = ct.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let json = |k: BodyKind| {
        if k == BodyKind::Watch {
            StreamKind::Watch
        } else {
            StreamKind::Json
        }
    };
    match media.as_deref() {
        // Without a type the parser decides: JSON or an error.
        None | Some("") if kind == BodyKind::Log => Ok(StreamKind::Log),
        None | Some("") => Ok(json(kind)),
        Some("application/json") => Ok(json(kind)),
        Some(m) if m.ends_with("+json") => Ok(json(kind)),
        // Text is read as log lines for `pods/log` only: anything else must
        // be JSON (JSON served as text/plain would pass the detectors only).
        Some("text/plain") if kind == BodyKind::Log => Ok(StreamKind::Log),
        Some(_) if no_body => Ok(json(kind)),
        Some(_) => Err(MaskBodyError::UnsupportedContentType {
            content_type: echo_token(&ct.unwrap_or_default()),
        }),
    }
}

impl MaskedBody {
    /// Reads until the first masked bytes are ready or the body is over, so
    /// that an error in them can still become a 502. For [`BodyKind::Object`]
    /// bodies that are not lists this reads the whole (bounded) document.
    /// Not for watches and logs: they may stay silent for a long time.
    pub async fn prime(&mut self) -> Result<(), MaskBodyError> {
        std::future::poll_fn(|cx| self.poll_produce(cx)).await
    }

    /// Values masked (and token occurrences scrubbed) so far.
    pub fn masked(&self) -> usize {
        self.masker.as_ref().map_or(0, StreamMasker::masked_count)
            + self.scrubber.as_ref().map_or(0, StreamScrubber::count)
    }

    fn fail(&mut self, e: MaskBodyError) -> Poll<Result<(), MaskBodyError>> {
        self.done = true;
        self.pending = None;
        self.outcome.send_replace(Some(MaskOutcome::Failed {
            masked: self.masked(),
            error: e.to_string(),
        }));
        Poll::Ready(Err(e))
    }

    fn publish(&mut self, out: Bytes) {
        self.progress.count.store(self.masked(), Ordering::Relaxed);
        if !out.is_empty() {
            self.pending = Some(out);
        }
    }

    /// Mask (if masking) and scrub plain bytes. The masker's output is moved,
    /// not copied, when it is all there is.
    fn stage(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), MaskBodyError> {
        let masked: Cow<'_, [u8]> = match &mut self.masker {
            Some(m) => m.push(plain)?.into(),
            None => plain.into(),
        };
        // What the scrubber passes on unchanged is a prefix of its input.
        let scrubbed: Result<usize, Vec<u8>> = match &mut self.scrubber {
            Some(s) => match s.push(&masked) {
                Cow::Borrowed(b) => Ok(b.len()),
                Cow::Owned(v) => Err(v),
            },
            None => Ok(masked.len()),
        };
        let ready = match (scrubbed, masked) {
            (Err(v), _) => Cow::Owned(v),
            (Ok(n), Cow::Owned(mut v)) => {
                v.truncate(n);
                Cow::Owned(v)
            }
            (Ok(n), Cow::Borrowed(b)) => Cow::Borrowed(b.get(..n).unwrap_or(b)),
        };
        append(out, ready);
        Ok(())
    }

    /// Decompress (if needed), mask and scrub one upstream chunk. A chunk
    /// that is only scrubbed and has nothing to scrub is passed on as it is.
    fn feed(&mut self, data: Bytes) -> Result<Bytes, MaskBodyError> {
        if self.gzip.is_none() && self.masker.is_none() {
            // What the scrubber passes on unchanged is a prefix of its input.
            return Ok(match &mut self.scrubber {
                Some(s) => match s.push(&data) {
                    Cow::Borrowed(b) => data.slice(..b.len()),
                    Cow::Owned(v) => Bytes::from(v),
                },
                None => data,
            });
        }
        let mut out = Vec::new();
        if self.gzip.is_none() {
            self.stage(&data, &mut out)?;
            return Ok(Bytes::from(out));
        }
        for slice in data.chunks(GZIP_SLICE) {
            let plain = match &mut self.gzip {
                Some(dec) => {
                    dec.write_all(slice)
                        .and_then(|()| dec.flush())
                        .map_err(|e| MaskBodyError::Gzip { why: e.to_string() })?;
                    std::mem::take(dec.get_mut())
                }
                None => slice.to_vec(),
            };
            self.stage(&plain, &mut out)?;
        }
        Ok(Bytes::from(out))
    }

    fn end(&mut self) -> Result<Vec<u8>, MaskBodyError> {
        let mut out = Vec::new();
        if let Some(dec) = &mut self.gzip {
            dec.try_finish()
                .map_err(|e| MaskBodyError::Gzip { why: e.to_string() })?;
            let plain = std::mem::take(dec.get_mut());
            self.stage(&plain, &mut out)?;
        }
        let last = match &mut self.masker {
            Some(m) => m.finish()?,
            None => Vec::new(),
        };
        match &mut self.scrubber {
            Some(s) => {
                out.extend_from_slice(&s.push(&last));
                out.extend(s.finish());
            }
            None => out.extend(last),
        }
        Ok(out)
    }

    /// Make progress until masked bytes are pending or the body is over.
    fn poll_produce(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MaskBodyError>> {
        loop {
            if self.pending.is_some() || self.done {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are dropped: API responses have none, and a
                    // trailer is not something the masker can vouch for.
                    if let Ok(data) = frame.into_data() {
                        let out = match self.feed(data) {
                            Ok(out) => out,
                            Err(e) => return self.fail(e),
                        };
                        if !self.inner.is_end_stream() {
                            self.publish(out);
                            continue;
                        }
                        // That was the upstream's last frame (END_STREAM on
                        // it): finish now, so the masked end goes out with
                        // this frame and `is_end_stream` is true after it.
                        // hyper then ends the client's stream on this DATA
                        // frame instead of writing an empty one after it (a
                        // system call and a TCP segment more per response).
                        match self.end() {
                            Ok(last) if last.is_empty() => self.complete(out),
                            Ok(last) => {
                                let mut all = Vec::with_capacity(out.len() + last.len());
                                all.extend_from_slice(&out);
                                all.extend_from_slice(&last);
                                self.complete(Bytes::from(all));
                            }
                            Err(e) => return self.fail(e),
                        }
                    }
                }
                Some(Err(e)) => {
                    return self.fail(MaskBodyError::Upstream { why: e.to_string() });
                }
                None => match self.end() {
                    Ok(out) => self.complete(Bytes::from(out)),
                    Err(e) => return self.fail(e),
                },
            }
        }
    }

    /// The body ended complete: `out` is the last of it.
    fn complete(&mut self, out: Bytes) {
        self.publish(out);
        self.done = true;
        let scrubbed = self.scrubber.as_ref().is_some_and(|s| s.count() > 0);
        if self.json_document && !scrubbed {
            self.progress.document.store(true, Ordering::Release);
        }
        self.outcome.send_replace(Some(MaskOutcome::Complete {
            masked: self.masked(),
        }));
    }
}

impl Body for MaskedBody {
    type Data = Bytes;
    type Error = MaskBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MaskBodyError>>> {
        let this = self.get_mut();
        let was_done = this.done;
        match ready!(this.poll_produce(cx)) {
            Err(e) if !was_done => Poll::Ready(Some(Err(e))),
            Err(_) => Poll::Ready(None),
            Ok(()) => Poll::Ready(this.pending.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

impl Drop for MaskedBody {
    fn drop(&mut self) {
        if self.outcome.borrow().is_none() {
            self.outcome.send_replace(Some(MaskOutcome::Aborted {
                masked: self.masked(),
            }));
        }
    }
}

/// `bytes` after `out`: moved in when `out` is empty and they are owned.
fn append(out: &mut Vec<u8>, bytes: Cow<'_, [u8]>) {
    match bytes {
        Cow::Owned(v) if out.is_empty() => *out = v,
        b => out.extend_from_slice(&b),
    }
}

/// Where the masker for the current policy comes from (the policy store
/// swaps it on reload).
pub type MaskerSource = Arc<dyn Fn() -> Arc<Masker> + Send + Sync>;

/// Where the current values of the sidecar's own token come from, compiled
/// for scrubbing (see [`crate::token::TokenSource::scrub_set`]).
pub type TokenScrub = Arc<dyn Fn() -> Option<Arc<ScrubSet>> + Send + Sync>;

/// The [`TransformHook`] that masks responses: rewrites `Accept` before
/// forwarding, masks the body, scrubs the sidecar's token from every
/// response (headers and body, masked or not), inserts a [`MaskCount`] into
/// the response's extensions for the recorder, and answers 502 when the body
/// cannot be masked or read.
#[derive(Clone)]
pub struct MaskTransform {
    masker: MaskerSource,
    tokens: Option<TokenScrub>,
}

impl std::fmt::Debug for MaskTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskTransform")
            .field("token_scrub", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl MaskTransform {
    /// Masks with whatever masker `source` returns at each response.
    pub fn new(source: MaskerSource) -> MaskTransform {
        MaskTransform {
            masker: source,
            tokens: None,
        }
    }

    /// Masks with one fixed masker.
    pub fn fixed(masker: Arc<Masker>) -> MaskTransform {
        MaskTransform::new(Arc::new(move || masker.clone()))
    }

    /// Also scrubs the token values `tokens` returns (at each response) from
    /// every response that is not an upgraded tunnel.
    pub fn with_token_scrub(mut self, tokens: TokenScrub) -> MaskTransform {
        self.tokens = Some(tokens);
        self
    }

    fn token_set(&self) -> Option<Arc<ScrubSet>> {
        self.tokens
            .as_ref()
            .and_then(|f| f())
            .filter(|s| !s.is_empty())
    }

    /// Mask `response` of a request with these attributes; `Err` is the
    /// refusal (502) to answer instead.
    pub async fn mask(
        &self,
        attrs: &RequestAttributes,
        response: http::Response<ProxyBody>,
    ) -> Result<http::Response<ProxyBody>, Refusal> {
        self.respond(Some(attrs), response).await
    }

    /// Mask (when the request's response may need masking) and scrub the
    /// token from any response that is not a 101; `Err` is the refusal
    /// (502) to answer instead.
    pub async fn respond(
        &self,
        attrs: Option<&RequestAttributes>,
        response: http::Response<ProxyBody>,
    ) -> Result<http::Response<ProxyBody>, Refusal> {
        let tokens = self.token_set();
        let (mut parts, body) = response.into_parts();
        if let Some(set) = &tokens {
            scrub_headers(&mut parts.headers, set);
        }
        let kind = attrs.and_then(BodyKind::for_request);
        let result = match (kind, attrs) {
            (Some(kind), Some(attrs)) => {
                let mut ctx = MaskContext::from_attrs(attrs);
                ctx.scrub = tokens.clone();
                match mask_response((self.masker)(), ctx, kind, &parts, body) {
                    Ok((mut masked, count)) => {
                        let primed = if kind == BodyKind::Object {
                            masked.prime().await
                        } else {
                            Ok(())
                        };
                        primed.map(|()| {
                            masked_response_headers(&mut parts);
                            parts.extensions.insert(count);
                            http::Response::from_parts(parts, boxed(masked))
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            _ => match &tokens {
                None => Ok(http::Response::from_parts(parts, body)),
                Some(set) => scrub_response(set.clone(), &parts, body).map(|(scrubbed, count)| {
                    masked_response_headers(&mut parts);
                    parts.extensions.insert(count);
                    http::Response::from_parts(parts, boxed(scrubbed))
                }),
            },
        };
        result.map_err(|e| {
            let why = e.to_string();
            let why = tokens
                .as_ref()
                .and_then(|t| t.scrub_str(&why))
                .unwrap_or(why);
            Refusal::Unmaskable { why }
        })
    }
}

/// Replace the token in response header values (a reflecting upstream).
fn scrub_headers(headers: &mut HeaderMap, set: &ScrubSet) {
    for value in headers.values_mut() {
        if let Some(clean) = set.scrub_bytes(value.as_bytes()) {
            *value = HeaderValue::from_bytes(&clean)
                .unwrap_or_else(|_| HeaderValue::from_static("***MASKED***"));
        }
    }
}

/// `Accept-Encoding` narrowed to what the body readers decode (gzip), or
/// removed.
fn narrow_accept_encoding(headers: &mut HeaderMap) {
    let gzip_ok = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                matches!(
                    p.trim().replace(' ', "").as_str(),
                    "q=0" | "q=0.0" | "q=0.00" | "q=0.000"
                )
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        });
    headers.remove(ACCEPT_ENCODING);
    if gzip_ok {
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    }
}

impl TransformHook for MaskTransform {
    fn prepare_request(&self, ctx: &RequestContext, parts: &mut http::request::Parts) {
        // A request whose response may need masking is negotiated whether or
        // not it asked for an upgrade: only a 101 is tunnelled, anything else
        // is masked.
        if let Some(attrs) = &ctx.attrs
            && negotiate_accept(attrs, &mut parts.headers)
        {
            return;
        }
        // Other bodies are scanned for the token: in an encoding it reads.
        if self.tokens.is_some() && !ctx.is_upgrade {
            narrow_accept_encoding(&mut parts.headers);
        }
    }

    fn tunnel_headers(&self, _ctx: &RequestContext, headers: &mut HeaderMap) {
        // An upstream that reflects the token in its 101 headers.
        if let Some(set) = self.token_set() {
            scrub_headers(headers, &set);
        }
    }

    fn check_json_patch(
        &self,
        ctx: &RequestContext,
        patch: &serde_json::Value,
    ) -> Result<(), Refusal> {
        let Some(attrs) = &ctx.attrs else {
            return Ok(());
        };
        (self.masker)()
            .check_json_patch(&MaskContext::from_attrs(attrs), patch)
            .map_err(Refusal::from)
    }

    fn transform<'a>(
        &'a self,
        ctx: &'a RequestContext,
        response: http::Response<ProxyBody>,
    ) -> BoxFuture<'a, Result<http::Response<ProxyBody>, Refusal>> {
        Box::pin(async move {
            // Never a 101 here: upgraded connections are tunnelled before.
            let r = self.respond(ctx.attrs.as_ref(), response).await;
            if let Err(e) = &r {
                tracing::warn!(request_id = %ctx.request_id, reason = %e, "response withheld: cannot mask");
            }
            r
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use mcp_warden_shared::mask::{MARKER, MARKER_BASE64, MaskingConfig};
    use mcp_warden_shared::status::Reason;

    fn attrs(verb: &str, resource: &str, sub: &str) -> RequestAttributes {
        RequestAttributes {
            is_resource_request: true,
            verb: verb.into(),
            api_prefix: "api".into(),
            api_version: "v1".into(),
            namespace: "default".into(),
            resource: resource.into(),
            subresource: sub.into(),
            ..RequestAttributes::default()
        }
    }

    fn masker() -> Arc<Masker> {
        Arc::new(MaskingConfig::embedded_default().compile().unwrap())
    }

    fn parts(headers: &[(&str, &str)]) -> http::response::Parts {
        let mut b = http::Response::builder().status(200);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// A body that yields the given chunks, then optionally an error.
    fn chunked(chunks: Vec<Vec<u8>>, fail: bool) -> ProxyBody {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::from(c))))
            .collect();
        if fail {
            frames.push(Err("connection reset".into()));
        }
        boxed(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const SECRET: &str = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},"data":{"password":"aHVudGVyMg=="}}"#;

    async fn collect(body: MaskedBody) -> Result<Vec<u8>, MaskBodyError> {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                out.extend_from_slice(&d);
            }
        }
        Ok(out)
    }

    #[test]
    fn accept_rewrites() {
        let cases = [
            ("application/json", "application/json"),
            (
                "application/vnd.kubernetes.protobuf, application/json",
                "application/json",
            ),
            (
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            ),
            (
                "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
            ),
            ("application/cbor", "application/json"),
            (
                "application/vnd.kubernetes.protobuf;stream=watch",
                "application/json",
            ),
            ("*/*", "application/json"),
            ("text/html", "application/json"),
            ("application/yaml;q=0.9", "application/json;q=0.9"),
        ];
        for (input, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_str(input).unwrap());
            h.insert(ACCEPT_ENCODING, HeaderValue::from_static("br, gzip"));
            assert!(negotiate_accept(&attrs("list", "secrets", ""), &mut h));
            assert_eq!(h.get(ACCEPT).unwrap(), want, "{input}");
            assert_eq!(h.get(ACCEPT_ENCODING).unwrap(), "gzip");
        }
        // No Accept: the API server's default is JSON already.
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert!(negotiate_accept(&attrs("get", "pods", ""), &mut h));
        assert!(h.get(ACCEPT).is_none() && h.get(ACCEPT_ENCODING).is_none());
        // Not masked: discovery, exec; logs keep their Accept.
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        let discovery = RequestAttributes {
            is_resource_request: false,
            verb: "get".into(),
            path: "/api".into(),
            ..RequestAttributes::default()
        };
        assert!(!negotiate_accept(&discovery, &mut h));
        assert!(!negotiate_accept(&attrs("create", "pods", "exec"), &mut h));
        assert_eq!(
            h.get(ACCEPT).unwrap(),
            "application/vnd.kubernetes.protobuf"
        );
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("*/*"));
        assert!(negotiate_accept(&attrs("get", "pods", "log"), &mut h));
        assert_eq!(h.get(ACCEPT).unwrap(), "*/*");
    }

    #[test]
    fn body_kinds() {
        assert_eq!(
            BodyKind::for_request(&attrs("get", "secrets", "")),
            Some(BodyKind::Object)
        );
        assert_eq!(
            BodyKind::for_request(&attrs("watch", "secrets", "")),
            Some(BodyKind::Watch)
        );
        assert_eq!(
            BodyKind::for_request(&attrs("get", "pods", "log")),
            Some(BodyKind::Log)
        );
        assert_eq!(
            BodyKind::for_request(&attrs("create", "pods", "attach")),
            None
        );
    }

    #[tokio::test]
    async fn masks_object_and_counts() {
        let p = parts(&[
            ("content-type", "application/json"),
            ("content-length", "95"),
        ]);
        let body = chunked(
            vec![
                SECRET.as_bytes()[..10].to_vec(),
                SECRET.as_bytes()[10..].to_vec(),
            ],
            false,
        );
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Object,
            &p,
            body,
        )
        .unwrap();
        assert_eq!(count.outcome(), None);
        let out = String::from_utf8(collect(masked).await.unwrap()).unwrap();
        assert!(out.contains(MARKER_BASE64) && !out.contains("aHVudGVyMg"));
        assert_eq!(count.finished().await, MaskOutcome::Complete { masked: 1 });
        assert_eq!(count.current(), 1);
    }

    /// The flag that lets the recorder skip validating the body: set only
    /// for a whole JSON document the masker read to its end, and then the
    /// bytes are one JSON value (whatever the chunking and whitespace).
    #[tokio::test]
    async fn whole_json_documents_are_flagged_and_are_json() {
        let list = format!(
            "{{\n \"kind\": \"SecretList\",\"apiVersion\":\"v1\",\"metadata\":{{}},\n \"items\": [ {} ,\n{} ] }}\n",
            SECRET,
            SECRET.replace("password", "note")
        );
        let cases: Vec<(&str, String, BodyKind, bool)> = vec![
            ("object", SECRET.to_string(), BodyKind::Object, true),
            ("list", list.clone(), BodyKind::Object, true),
            ("empty", String::new(), BodyKind::Object, true),
            (
                "watch",
                format!("{{\"type\":\"ADDED\",\"object\":{SECRET}}}\n"),
                BodyKind::Watch,
                false,
            ),
            (
                "log",
                "line one\nline two\n".to_string(),
                BodyKind::Log,
                false,
            ),
        ];
        for (name, body, kind, flagged) in cases {
            for size in [1, 7, 4096] {
                let chunks: Vec<Vec<u8>> =
                    body.as_bytes().chunks(size).map(<[u8]>::to_vec).collect();
                let ct = if kind == BodyKind::Log {
                    "text/plain"
                } else {
                    "application/json"
                };
                let (masked, count) = mask_response(
                    masker(),
                    MaskContext::for_resource("secrets"),
                    kind,
                    &parts(&[("content-type", ct)]),
                    chunked(chunks, false),
                )
                .unwrap();
                assert!(!count.whole_json_document(), "{name}: not before the end");
                let out = collect(masked).await.unwrap();
                assert_eq!(count.whole_json_document(), flagged, "{name} {size}");
                if flagged && !out.trim_ascii().is_empty() {
                    serde_json::from_slice::<serde_json::Value>(&out).unwrap();
                }
            }
        }
        // Cut short: never flagged.
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Object,
            &parts(&[("content-type", "application/json")]),
            chunked(vec![SECRET.as_bytes()[..20].to_vec()], false),
        )
        .unwrap();
        assert!(collect(masked).await.is_err());
        assert!(!count.whole_json_document());
        // Scrubbed only (not masked): not a document the masker read.
        let (scrubbed, count) = scrub_response(
            Arc::new(ScrubSet::new([TOKEN])),
            &parts(&[("content-type", "application/json")]),
            chunked(vec![SECRET.as_bytes().to_vec()], false),
        )
        .unwrap();
        collect(scrubbed).await.unwrap();
        assert!(!count.whole_json_document());
        // A token the scrub over the masker's output replaced (the masker
        // itself did not know it): not flagged.
        let with_token = format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c"}},"data":{{"k":"{TOKEN}"}}}}"#
        );
        let no_detectors = MaskingConfig {
            rules: MaskingConfig::embedded_default().rules,
            detectors: vec![],
        }
        .compile()
        .unwrap();
        let stream = StreamMasker::new(
            Arc::new(no_detectors),
            MaskContext::for_resource("configmaps"),
            StreamKind::Json,
        );
        let (masked, count) = wrap(
            chunked(vec![with_token.into_bytes()], false),
            false,
            Some(stream),
            Some(StreamScrubber::new(Arc::new(ScrubSet::new([TOKEN])))),
            true,
        );
        let out = String::from_utf8(collect(masked).await.unwrap()).unwrap();
        assert_no_token(&out);
        assert!(count.current() > 0);
        assert!(!count.whole_json_document());
    }

    #[tokio::test]
    async fn gzip_is_decoded_and_masked() {
        let list: String = format!(
            r#"{{"kind":"SecretList","apiVersion":"v1","metadata":{{}},"items":[{}]}}"#,
            vec![SECRET; 200].join(",")
        );
        let gz = gzip(list.as_bytes());
        let chunks: Vec<Vec<u8>> = gz.chunks(333).map(<[u8]>::to_vec).collect();
        let mut p = parts(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]);
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Object,
            &p,
            chunked(chunks, false),
        )
        .unwrap();
        masked_response_headers(&mut p);
        assert!(p.headers.get(CONTENT_ENCODING).is_none());
        let out = collect(masked).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 200);
        assert!(!String::from_utf8_lossy(&out).contains("aHVudGVyMg"));
        assert_eq!(count.finished().await.masked(), 200);
        // Corrupt gzip: an error, nothing unmasked.
        let mut bad = gzip(SECRET.as_bytes());
        let n = bad.len();
        bad.truncate(n - 6);
        let p = parts(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]);
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Object,
            &p,
            chunked(vec![bad], false),
        )
        .unwrap();
        assert!(collect(masked).await.is_err());
        assert!(matches!(count.finished().await, MaskOutcome::Failed { .. }));
    }

    #[test]
    fn unmaskable_types_and_encodings_are_refused() {
        for (ct, ce) in [
            ("application/vnd.kubernetes.protobuf", ""),
            ("application/cbor", ""),
            ("application/yaml", ""),
            ("application/json", "br"),
            ("application/json", "gzip, gzip"),
        ] {
            let mut h = vec![("content-type", ct)];
            if !ce.is_empty() {
                h.push(("content-encoding", ce));
            }
            let r = mask_response(
                masker(),
                MaskContext::for_resource("secrets"),
                BodyKind::Object,
                &parts(&h),
                chunked(vec![b"k8s\0".to_vec()], false),
            );
            let e = r.err().unwrap_or_else(|| panic!("{ct} {ce} accepted"));
            let st = Refusal::from(e).status();
            assert_eq!(st.reason, Reason::BadGateway);
        }
    }

    #[tokio::test]
    async fn truncated_json_errors_and_mid_stream_errors_end_the_body() {
        let p = parts(&[("content-type", "application/json")]);
        let (mut masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Object,
            &p,
            chunked(vec![SECRET.as_bytes()[..40].to_vec()], false),
        )
        .unwrap();
        assert!(matches!(
            masked.prime().await,
            Err(MaskBodyError::Mask(MaskError::Truncated))
        ));
        drop(masked);
        assert!(matches!(count.finished().await, MaskOutcome::Failed { .. }));
        // A list whose upstream connection breaks after some items (more
        // than the masker holds unscanned, so they were passed on; a shorter
        // document cut short gives only the error, as above).
        let n = mcp_warden_shared::mask::DEFAULT_HOLD_BYTES / SECRET.len() + 2;
        let list = format!(
            r#"{{"kind":"SecretList","items":[{}"#,
            format!("{SECRET},").repeat(n)
        );
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Object,
            &p,
            chunked(vec![list.into_bytes()], true),
        )
        .unwrap();
        let mut masked = masked;
        let first = masked.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(!String::from_utf8_lossy(&first).contains("aHVudGVyMg"));
        assert!(masked.frame().await.unwrap().is_err());
        assert!(masked.frame().await.is_none());
        assert_eq!(count.finished().await.masked(), n);
    }

    #[tokio::test]
    async fn watch_and_logs() {
        let ev = format!("{{\"type\":\"ADDED\",\"object\":{SECRET}}}\n");
        let p = parts(&[("content-type", "application/json")]);
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("secrets"),
            BodyKind::Watch,
            &p,
            chunked(vec![ev.clone().into_bytes(), ev.into_bytes()], false),
        )
        .unwrap();
        let out = String::from_utf8(collect(masked).await.unwrap()).unwrap();
        assert_eq!(out.lines().count(), 2);
        assert!(!out.contains("aHVudGVyMg"));
        assert_eq!(count.finished().await.masked(), 2);
        let p = parts(&[("content-type", "text/plain")]);
        let log = "a\npassword=hunter2\n".as_bytes().to_vec();
        let (masked, count) = mask_response(
            masker(),
            MaskContext::for_resource("pods"),
            BodyKind::Log,
            &p,
            chunked(vec![log], false),
        )
        .unwrap();
        let out = String::from_utf8(collect(masked).await.unwrap()).unwrap();
        assert_eq!(out, format!("a\npassword={MARKER}\n"));
        assert_eq!(count.finished().await.masked(), 1);
    }

    #[test]
    fn text_plain_only_for_logs() {
        // JSON served as text/plain on a secrets path is refused, not read
        // as log lines.
        for (kind, ct) in [
            (BodyKind::Object, "text/plain"),
            (BodyKind::Watch, "text/plain; charset=utf-8"),
        ] {
            let r = mask_response(
                masker(),
                MaskContext::for_resource("secrets"),
                kind,
                &parts(&[("content-type", ct)]),
                chunked(vec![SECRET.as_bytes().to_vec()], false),
            );
            let e = r.err().unwrap_or_else(|| panic!("{kind:?} {ct} accepted"));
            assert_eq!(Refusal::from(e).status().reason, Reason::BadGateway);
        }
        assert!(
            mask_response(
                masker(),
                MaskContext::for_resource("pods"),
                BodyKind::Log,
                &parts(&[("content-type", "text/plain")]),
                chunked(vec![b"a\n".to_vec()], false),
            )
            .is_ok()
        );
    }

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpzaWRlY2FyIn0.c2lnbmF0dXJlLXJlYWwtdG9rZW4";

    fn token_transform() -> MaskTransform {
        // No detectors: the token scrub alone must catch it.
        let m = MaskingConfig {
            rules: MaskingConfig::embedded_default().rules,
            detectors: vec![],
        }
        .compile()
        .unwrap();
        let set = Arc::new(ScrubSet::new([TOKEN]));
        MaskTransform::fixed(Arc::new(m)).with_token_scrub(Arc::new(move || Some(set.clone())))
    }

    fn assert_no_token(out: &str) {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        assert!(!out.contains(TOKEN), "{out}");
        assert!(!out.contains(&STANDARD.encode(TOKEN)), "{out}");
        assert!(!out.contains(&URL_SAFE_NO_PAD.encode(TOKEN)), "{out}");
        assert!(!out.contains(&TOKEN[..40]), "{out}");
    }

    #[tokio::test]
    async fn token_is_scrubbed_from_the_headers_of_a_101() {
        let t = token_transform();
        let ctx = crate::hooks::RequestContext {
            request_id: uuid::Uuid::nil(),
            started: std::time::Instant::now(),
            received_at: std::time::SystemTime::now(),
            peer: ([127, 0, 0, 1], 1).into(),
            method: http::Method::GET,
            path_and_query: "/api/v1/namespaces/d/pods/p/exec".into(),
            user_agent: None,
            attrs: Some(attrs("create", "pods", "exec")),
            impersonation: Default::default(),
            end_user: None,
            bodies: None,
            decision: None,
            is_upgrade: true,
            is_stream: true,
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-echo",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        t.tunnel_headers(&ctx, &mut h);
        assert_eq!(h["x-echo"], "Bearer ***MASKED***");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[tokio::test]
    async fn token_is_scrubbed_from_bodies_that_are_not_masked() {
        use base64::Engine as _;
        let t = token_transform();
        let discovery = RequestAttributes {
            is_resource_request: false,
            verb: "get".into(),
            path: "/version".into(),
            ..RequestAttributes::default()
        };
        let proxy = attrs("get", "pods", "proxy");
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("Bearer {TOKEN}"));
        let body = format!("{{\"echo\":\"Bearer {TOKEN}\",\"b64\":\"{b64}\"}}\n");
        for a in [&discovery, &proxy] {
            for chunk in [1, 7, 100, body.len()] {
                let chunks = body.as_bytes().chunks(chunk).map(<[u8]>::to_vec).collect();
                let resp = http::Response::builder()
                    .header("content-type", "application/json")
                    .header("content-length", body.len().to_string())
                    .header("x-echo-authorization", format!("Bearer {TOKEN}"))
                    .body(chunked(chunks, false))
                    .unwrap();
                let resp = t.respond(Some(a), resp).await.unwrap();
                assert!(resp.headers().get(CONTENT_LENGTH).is_none());
                let echo = resp.headers().get("x-echo-authorization").unwrap();
                assert_eq!(echo, "Bearer ***MASKED***");
                let count = resp.extensions().get::<MaskCount>().unwrap().clone();
                let out = resp.into_body().collect().await.unwrap().to_bytes();
                let out = String::from_utf8(out.to_vec()).unwrap();
                assert_no_token(&out);
                assert!(out.contains(MARKER) && out.ends_with("}\n"), "{out}");
                assert_eq!(count.finished().await.masked(), 2);
            }
        }
        // gzip is decoded for the scan; other encodings cannot be read.
        let resp = http::Response::builder()
            .header("content-encoding", "gzip")
            .body(chunked(vec![gzip(body.as_bytes())], false))
            .unwrap();
        let resp = t.respond(Some(&discovery), resp).await.unwrap();
        assert!(resp.headers().get(CONTENT_ENCODING).is_none());
        let out = resp.into_body().collect().await.unwrap().to_bytes();
        assert_no_token(&String::from_utf8_lossy(&out));
        let resp = http::Response::builder()
            .header("content-encoding", format!("br-{}", &TOKEN[..30]))
            .body(chunked(vec![body.clone().into_bytes()], false))
            .unwrap();
        let st = t
            .respond(Some(&discovery), resp)
            .await
            .unwrap_err()
            .status();
        assert_eq!(st.reason, Reason::BadGateway);
        assert!(!st.message.contains(&TOKEN[..20]), "{}", st.message);
        // Without a token source, such bodies pass untouched.
        let plain = MaskTransform::fixed(masker());
        let resp = http::Response::builder()
            .header("content-length", body.len().to_string())
            .body(chunked(vec![body.clone().into_bytes()], false))
            .unwrap();
        let resp = plain.respond(Some(&discovery), resp).await.unwrap();
        assert!(resp.headers().get(CONTENT_LENGTH).is_some());
    }

    #[tokio::test]
    async fn token_is_scrubbed_from_masked_json_and_logs() {
        let t = token_transform();
        // Escaped in JSON (a byte scan alone would miss it), in a key, in a
        // value of an object nothing else masks.
        let escaped: String = TOKEN
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let body = format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c","annotations":{{"{TOKEN}":"x"}}}},"data":{{"a":"{escaped}","b":"token {TOKEN}"}}}}"#
        );
        let resp = http::Response::builder()
            .header("content-type", "application/json")
            .body(chunked(vec![body.into_bytes()], false))
            .unwrap();
        let resp = t
            .respond(Some(&attrs("get", "configmaps", "")), resp)
            .await
            .unwrap();
        let out = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_no_token(&v.to_string());
        assert_eq!(v["data"]["a"], MARKER);
        // Logs, the token split over chunks and over a line.
        let log = format!("start\nauth Bearer {TOKEN} ok\nend\n");
        for chunk in [1, 9, log.len()] {
            let chunks = log.as_bytes().chunks(chunk).map(<[u8]>::to_vec).collect();
            let resp = http::Response::builder()
                .header("content-type", "text/plain")
                .body(chunked(chunks, false))
                .unwrap();
            let resp = t
                .respond(Some(&attrs("get", "pods", "log")), resp)
                .await
                .unwrap();
            let out = resp.into_body().collect().await.unwrap().to_bytes();
            let out = String::from_utf8(out.to_vec()).unwrap();
            assert_eq!(out, format!("start\nauth Bearer {MARKER} ok\nend\n"));
        }
    }

    /// When the upstream's last frame says it is the last (END_STREAM on
    /// it, as `Full` here), the masked body ends with its one frame too:
    /// `is_end_stream` is true right after it, so hyper sets END_STREAM on
    /// that DATA frame instead of sending an empty frame after it. What the
    /// token scrub held back for a match across chunks is in that frame.
    #[tokio::test]
    async fn body_ends_with_the_upstreams_last_frame() {
        let t = token_transform();
        let secret = SECRET.replace(
            "\"s\"}",
            &format!("\"s\",\"labels\":{{\"t\":\"{TOKEN}\"}}}}"),
        );
        let log = format!("start\nauth Bearer {TOKEN}");
        for (kind, sub, ctype, body) in [
            ("secrets", "", "application/json", secret),
            ("pods", "log", "text/plain", log),
        ] {
            let resp = http::Response::builder()
                .header("content-type", ctype)
                .body(crate::hooks::full(body.clone()))
                .unwrap();
            let mut body = t
                .respond(Some(&attrs("get", kind, sub)), resp)
                .await
                .unwrap()
                .into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(body.is_end_stream(), "{kind}: not ended with its frame");
            let out = String::from_utf8(first.to_vec()).unwrap();
            assert_no_token(&out);
            assert!(out.contains(MARKER), "{kind}: {out}");
            if kind == "pods" {
                assert_eq!(out, format!("start\nauth Bearer {MARKER}"));
            } else {
                assert!(!out.contains("aHVudGVyMg"), "{out}");
            }
            assert!(body.frame().await.is_none());
        }
        // Without that sign (a stream of frames), the end comes after them.
        let resp = http::Response::builder()
            .header("content-type", "application/json")
            .body(chunked(vec![SECRET.as_bytes().to_vec()], false))
            .unwrap();
        let mut body = t
            .respond(Some(&attrs("get", "secrets", "")), resp)
            .await
            .unwrap()
            .into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn transform_hook_answers_502_and_sets_count() {
        let t = MaskTransform::fixed(masker());
        let a = attrs("get", "secrets", "");
        let resp = http::Response::builder()
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(chunked(vec![b"k8s\0secret".to_vec()], false))
            .unwrap();
        let st = t.mask(&a, resp).await.unwrap_err().status();
        assert_eq!(st.reason, Reason::BadGateway);
        let resp = http::Response::builder()
            .header("content-type", "application/json")
            .header("content-length", SECRET.len().to_string())
            .body(chunked(vec![SECRET.as_bytes().to_vec()], false))
            .unwrap();
        let resp = t.mask(&a, resp).await.unwrap();
        assert!(resp.headers().get(CONTENT_LENGTH).is_none());
        let count = resp.extensions().get::<MaskCount>().unwrap().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("aHVudGVyMg"));
        assert_eq!(count.finished().await.masked(), 1);
    }
}
