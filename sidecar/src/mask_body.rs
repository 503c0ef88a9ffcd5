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
//! truncated JSON) is an error: before the headers went out the app gets a
//! 502 `Status`; mid-stream the body ends with an error (the app sees a broken
//! response), never with unmasked bytes.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use http_body::{Body, Frame};
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::mask::{MaskContext, MaskError, Masker, StreamKind, StreamMasker};
use mcp_warden_shared::status::{Reason, Status};
use tokio::sync::watch;

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

impl MaskBodyError {
    /// The `Status` the app gets when this happens before the headers went out.
    pub fn to_status(&self) -> Status {
        Status::new(
            Reason::BadGateway,
            format!("mcp-warden: {self}; the response was withheld"),
        )
    }
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
    count: Arc<AtomicUsize>,
    done: watch::Receiver<Option<MaskOutcome>>,
}

impl MaskCount {
    /// Values masked so far.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
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
    masker: StreamMasker,
    /// Masked bytes ready to go out.
    pending: Option<Bytes>,
    done: bool,
    count: Arc<AtomicUsize>,
    outcome: watch::Sender<Option<MaskOutcome>>,
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
/// [`MaskBodyError::to_status`] (502).
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
    let gzip =
        match header_str(&parts.headers, CONTENT_ENCODING).map(|e| e.trim().to_ascii_lowercase()) {
            None => false,
            Some(e) if e.is_empty() || e == "identity" => false,
            Some(e) if e == "gzip" || e == "x-gzip" => true,
            Some(e) => return Err(MaskBodyError::UnsupportedEncoding { encoding: e }),
        };
    let stream_kind = stream_kind(kind, parts)?;
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = watch::channel(None);
    let body = MaskedBody {
        inner: Box::pin(http_body_util::BodyExt::map_err(body, Into::into)),
        gzip: gzip.then(|| flate2::write::GzDecoder::new(Vec::new())),
        masker: StreamMasker::new(masker, ctx, stream_kind),
        pending: None,
        done: false,
        count: count.clone(),
        outcome: tx,
    };
    Ok((body, MaskCount { count, done: rx }))
}

/// Headers of a masked response: no `Content-Length` (the length changes),
/// no `Content-Encoding` (sent decompressed).
pub fn masked_response_headers(parts: &mut http::response::Parts) {
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(CONTENT_ENCODING);
}

fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    // More than one value (e.g. two encodings stacked) is not something we decode.
    let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in values {
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
        // Logs, and plain-text error pages: detectors line by line.
        Some("text/plain") => Ok(StreamKind::Log),
        Some(_) if no_body => Ok(json(kind)),
        Some(_) => Err(MaskBodyError::UnsupportedContentType {
            content_type: ct.unwrap_or_default(),
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

    /// Values masked so far.
    pub fn masked(&self) -> usize {
        self.masker.masked_count()
    }

    fn fail(&mut self, e: MaskBodyError) -> Poll<Result<(), MaskBodyError>> {
        self.done = true;
        self.pending = None;
        self.outcome.send_replace(Some(MaskOutcome::Failed {
            masked: self.masker.masked_count(),
            error: e.to_string(),
        }));
        Poll::Ready(Err(e))
    }

    fn publish(&mut self, out: Vec<u8>) {
        self.count
            .store(self.masker.masked_count(), Ordering::Relaxed);
        if !out.is_empty() {
            self.pending = Some(Bytes::from(out));
        }
    }

    /// Decompress (if needed) and mask one upstream chunk.
    fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, MaskBodyError> {
        let Some(dec) = &mut self.gzip else {
            return Ok(self.masker.push(data)?);
        };
        let mut out = Vec::new();
        for slice in data.chunks(GZIP_SLICE) {
            dec.write_all(slice)
                .and_then(|()| dec.flush())
                .map_err(|e| MaskBodyError::Gzip { why: e.to_string() })?;
            let plain = std::mem::take(dec.get_mut());
            out.extend(self.masker.push(&plain)?);
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<Vec<u8>, MaskBodyError> {
        let mut out = Vec::new();
        if let Some(dec) = &mut self.gzip {
            dec.try_finish()
                .map_err(|e| MaskBodyError::Gzip { why: e.to_string() })?;
            let plain = std::mem::take(dec.get_mut());
            out.extend(self.masker.push(&plain)?);
        }
        out.extend(self.masker.finish()?);
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
                        match self.feed(&data) {
                            Ok(out) => self.publish(out),
                            Err(e) => return self.fail(e),
                        }
                    }
                }
                Some(Err(e)) => {
                    return self.fail(MaskBodyError::Upstream { why: e.to_string() });
                }
                None => match self.end() {
                    Ok(out) => {
                        self.publish(out);
                        self.done = true;
                        self.outcome.send_replace(Some(MaskOutcome::Complete {
                            masked: self.masker.masked_count(),
                        }));
                    }
                    Err(e) => return self.fail(e),
                },
            }
        }
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
                masked: self.masker.masked_count(),
            }));
        }
    }
}

/// Where the masker for the current policy comes from (the policy store
/// swaps it on reload).
pub type MaskerSource = Arc<dyn Fn() -> Arc<Masker> + Send + Sync>;

/// The [`TransformHook`] that masks responses: rewrites `Accept` before
/// forwarding, masks the body, inserts a [`MaskCount`] into the response's
/// extensions for the recorder, and answers 502 when the body cannot be
/// masked.
#[derive(Clone)]
pub struct MaskTransform {
    masker: MaskerSource,
}

impl std::fmt::Debug for MaskTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskTransform").finish_non_exhaustive()
    }
}

impl MaskTransform {
    /// Masks with whatever masker `source` returns at each response.
    pub fn new(source: MaskerSource) -> MaskTransform {
        MaskTransform { masker: source }
    }

    /// Masks with one fixed masker.
    pub fn fixed(masker: Arc<Masker>) -> MaskTransform {
        MaskTransform {
            masker: Arc::new(move || masker.clone()),
        }
    }

    /// Mask `response` of a request with these attributes; `Err` is the
    /// Status (502) to answer instead.
    pub async fn mask(
        &self,
        attrs: &RequestAttributes,
        response: http::Response<ProxyBody>,
    ) -> Result<http::Response<ProxyBody>, Status> {
        let Some(kind) = BodyKind::for_request(attrs) else {
            return Ok(response);
        };
        let (mut parts, body) = response.into_parts();
        let ctx = MaskContext::from_attrs(attrs);
        let (mut masked, count) =
            mask_response((self.masker)(), ctx, kind, &parts, body).map_err(|e| e.to_status())?;
        if kind == BodyKind::Object {
            masked.prime().await.map_err(|e| e.to_status())?;
        }
        masked_response_headers(&mut parts);
        parts.extensions.insert(count);
        Ok(http::Response::from_parts(parts, boxed(masked)))
    }
}

impl TransformHook for MaskTransform {
    fn prepare_request(&self, ctx: &RequestContext, parts: &mut http::request::Parts) {
        if ctx.is_upgrade {
            return;
        }
        if let Some(attrs) = &ctx.attrs {
            negotiate_accept(attrs, &mut parts.headers);
        }
    }

    fn check_json_patch(
        &self,
        ctx: &RequestContext,
        patch: &serde_json::Value,
    ) -> Result<(), Status> {
        let Some(attrs) = &ctx.attrs else {
            return Ok(());
        };
        (self.masker)()
            .check_json_patch(&MaskContext::from_attrs(attrs), patch)
            .map_err(|e| Status::new(Reason::Forbidden, format!("mcp-warden: {e}")))
    }

    fn transform<'a>(
        &'a self,
        ctx: &'a RequestContext,
        response: http::Response<ProxyBody>,
    ) -> BoxFuture<'a, Result<http::Response<ProxyBody>, Status>> {
        Box::pin(async move {
            match (&ctx.attrs, ctx.is_upgrade) {
                (Some(attrs), false) => {
                    let r = self.mask(attrs, response).await;
                    if let Err(s) = &r {
                        tracing::warn!(request_id = %ctx.request_id, reason = %s.message, "response withheld: cannot mask");
                    }
                    r
                }
                _ => Ok(response),
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use mcp_warden_shared::mask::{MARKER, MARKER_BASE64, MaskingConfig};

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
            let st = e.to_status();
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
        // A list whose upstream connection breaks after some items.
        let list = format!(r#"{{"kind":"SecretList","items":[{SECRET},{SECRET},"#);
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
        assert_eq!(count.finished().await.masked(), 2);
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

    #[tokio::test]
    async fn transform_hook_answers_502_and_sets_count() {
        let t = MaskTransform::fixed(masker());
        let a = attrs("get", "secrets", "");
        let resp = http::Response::builder()
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(chunked(vec![b"k8s\0secret".to_vec()], false))
            .unwrap();
        let st = t.mask(&a, resp).await.unwrap_err();
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
