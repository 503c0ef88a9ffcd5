//! HTTP plumbing shared by the handlers: the query type, Accept negotiation
//! (Table, PartialObjectMetadata, aggregated discovery), JSON and Status
//! responses, and gzip for large bodies like kube-apiserver's compression
//! filter.

use super::ResBody;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use mcp_warden_shared::status::Status;
use serde_json::Value;
use std::io::Write;

/// Bodies at least this large are gzipped when the client accepts gzip.
pub const GZIP_THRESHOLD: usize = 128 * 1024;

/// Decoded query parameters: the project's one query parser, which reads
/// booleans as kube-apiserver does.
pub use mcp_warden_shared::attrs::Query;

/// What representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    Object,
    Table,
    Partial,
    /// Aggregated discovery, `apidiscovery.k8s.io/v2` or `v2beta1`.
    Aggregated(&'static str),
}

/// One media range of an Accept header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits an Accept header into media ranges.
pub fn parse_accept(h: &str) -> Vec<MediaRange> {
    h.split(',')
        .filter_map(|r| {
            let mut parts = r.split(';');
            let mime = parts.next()?.trim().to_ascii_lowercase();
            if mime.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            Some(MediaRange { mime, params })
        })
        .collect()
}

/// Picks the rendering: the first range we can serve, like kube-apiserver's
/// negotiation. Ranges we cannot serve (protobuf, CBOR) are skipped; with
/// nothing servable we fall back to plain JSON.
pub fn negotiate(accept: Option<&str>, discovery: bool) -> Rendering {
    for r in parse_accept(accept.unwrap_or("")) {
        let json_like = matches!(
            r.mime.as_str(),
            "application/json" | "*/*" | "application/*" | "application/yaml"
        );
        if !json_like {
            continue;
        }
        match r.param("as") {
            None => return Rendering::Object,
            Some("Table") if !discovery && r.param("g") == Some("meta.k8s.io") => {
                if matches!(r.param("v"), Some("v1" | "v1beta1")) {
                    return Rendering::Table;
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if !discovery && r.param("g") == Some("meta.k8s.io") =>
            {
                if matches!(r.param("v"), Some("v1" | "v1beta1")) {
                    return Rendering::Partial;
                }
            }
            Some("APIGroupDiscoveryList")
                if discovery && r.param("g") == Some("apidiscovery.k8s.io") =>
            {
                match r.param("v") {
                    Some("v2") => return Rendering::Aggregated("v2"),
                    Some("v2beta1") => return Rendering::Aggregated("v2beta1"),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Rendering::Object
}

/// Wraps bytes as a response body.
pub fn full(b: impl Into<Bytes>) -> ResBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A JSON response; gzipped when large and the client accepts gzip.
pub fn json(
    code: StatusCode,
    v: &Value,
    content_type: &str,
    accept_gzip: bool,
) -> Response<ResBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    bytes_response(code, body, content_type, accept_gzip)
}

/// A response with the given body, gzipped when large and accepted.
pub fn bytes_response(
    code: StatusCode,
    body: Vec<u8>,
    content_type: &str,
    accept_gzip: bool,
) -> Response<ResBody> {
    let mut builder = Response::builder().status(code).header(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    let body = if accept_gzip && body.len() >= GZIP_THRESHOLD {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        match enc.write_all(&body).and_then(|_| enc.finish()) {
            Ok(z) => {
                builder = builder.header(header::CONTENT_ENCODING, "gzip");
                z
            }
            Err(_) => body,
        }
    } else {
        body
    };
    builder
        .header("Cache-Control", "no-cache, private")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A Status error response.
pub fn status(s: &Status) -> Response<ResBody> {
    let code = StatusCode::from_u16(s.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut v = s.to_value();
    if let Some(c) = invalid_cause(s) {
        v["details"]["causes"] = serde_json::json!([c]);
    }
    bytes_response(
        code,
        serde_json::to_vec(&v).unwrap_or_default(),
        "application/json",
        false,
    )
}

/// kube-apiserver lists field errors of an Invalid status in
/// `details.causes`; kubectl prints them. Our Invalid messages have the form
/// `Kind "name" is invalid: field: detail`.
fn invalid_cause(s: &Status) -> Option<Value> {
    if s.reason != mcp_warden_shared::status::Reason::Invalid {
        return None;
    }
    let (_, rest) = s.message.split_once(" is invalid: ")?;
    let (field, detail) = rest.split_once(": ")?;
    let reason = if detail.starts_with("Required value") {
        "FieldValueRequired"
    } else {
        "FieldValueInvalid"
    };
    Some(serde_json::json!({"reason": reason, "message": detail, "field": field}))
}

/// Whether the Accept-Encoding header allows gzip.
pub fn accepts_gzip(h: Option<&str>) -> bool {
    h.is_some_and(|v| {
        v.split(',').any(|e| {
            let mut p = e.split(';');
            let name = p.next().unwrap_or("").trim();
            let q0 = p.any(|x| x.trim().replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !q0
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_headers() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl), false), Rendering::Table);
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                false
            ),
            Rendering::Partial
        );
        let disc = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(Some(disc), true), Rendering::Aggregated("v2"));
        assert_eq!(negotiate(Some(disc), false), Rendering::Object);
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*"), false),
            Rendering::Object
        );
        assert_eq!(negotiate(None, false), Rendering::Object);
    }

    #[test]
    fn query_and_gzip() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&x"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(Query::parse(Some("a=%zz%4")).get("a"), Some("%zz%4"));
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=1.0")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(None));
    }
}
