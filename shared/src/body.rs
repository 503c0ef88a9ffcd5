//! A written request body as JSON, whatever its encoding.
//!
//! Clients write objects as JSON (`application/json` and the three JSON patch
//! types), YAML (`application/apply-patch+yaml` for server-side apply,
//! `application/yaml`) or Kubernetes protobuf
//! (`application/vnd.kubernetes.protobuf`, see [`crate::proto`]). The
//! recording wants one shape — the JSON the server's own audit log shows —
//! so that the masking engine can run over it. [`to_json`] picks the decoder by
//! the request's `Content-Type` (and, without one, by the body: the protobuf
//! magic, else JSON); [`BodyError`] says why a body could not be read, for the
//! annotation that replaces a missing `requestObject`.
//!
//! Pure: bytes in, values out.

use serde_json::Value;

use crate::proto::{self, ProtoError};

/// How a request body is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// JSON and the JSON patch types.
    Json,
    /// YAML (server-side apply, `application/yaml`).
    Yaml,
    /// Kubernetes protobuf.
    Protobuf,
    /// A media type none of the above (kept as sent).
    Other(String),
}

/// Why a body did not become JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Declared JSON but does not parse.
    #[error("the JSON body does not parse: {0}")]
    Json(String),
    /// Declared YAML but does not parse.
    #[error("the YAML body does not parse: {0}")]
    Yaml(String),
    /// A protobuf body that is malformed or of a kind not decoded.
    #[error(transparent)]
    Protobuf(#[from] ProtoError),
    /// A media type the sidecar does not read.
    #[error("request bodies of media type {0:?} are not decoded")]
    UnknownMediaType(String),
}

/// The encoding a `Content-Type` header value (parameters ignored) and the
/// body's first bytes say.
pub fn encoding(content_type: Option<&str>, body: &[u8]) -> Encoding {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "" if proto::is_protobuf(body) => Encoding::Protobuf,
        "" | "application/json" | "text/json" => Encoding::Json,
        m if m.ends_with("+json") => Encoding::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => Encoding::Yaml,
        m if m.ends_with("+yaml") => Encoding::Yaml,
        proto::CONTENT_TYPE => Encoding::Protobuf,
        m => Encoding::Other(m.to_string()),
    }
}

/// The body as a JSON value (see the module docs).
pub fn to_json(content_type: Option<&str>, body: &[u8]) -> Result<Value, BodyError> {
    match encoding(content_type, body) {
        Encoding::Json => serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string())),
        Encoding::Yaml => yaml(body),
        Encoding::Protobuf => Ok(proto::decode(body)?),
        Encoding::Other(m) => Err(BodyError::UnknownMediaType(m)),
    }
}

fn yaml(body: &[u8]) -> Result<Value, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::Yaml(e.to_string()))?;
    // JSON is YAML: a JSON apply body (kubectl sends one) parses here too,
    // and serde_json keeps its numbers exact.
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| BodyError::Yaml(e.to_string()))
}

/// `metadata.name` of a written object whatever its encoding: for a protobuf
/// body of a kind [`to_json`] does not decode the envelope still names it.
pub fn object_name(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    if encoding(content_type, body) == Encoding::Protobuf {
        return proto::envelope(body)
            .ok()
            .map(|e| e.name)
            .filter(|n| !n.is_empty());
    }
    to_json(content_type, body)
        .ok()?
        .pointer("/metadata/name")?
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodings_by_media_type() {
        assert_eq!(encoding(Some("application/json"), b"{}"), Encoding::Json);
        assert_eq!(
            encoding(Some("application/strategic-merge-patch+json"), b"{}"),
            Encoding::Json
        );
        assert_eq!(
            encoding(Some("application/apply-patch+yaml; charset=utf-8"), b"a: 1"),
            Encoding::Yaml
        );
        assert_eq!(
            encoding(Some("application/vnd.kubernetes.protobuf"), b"k8s\0"),
            Encoding::Protobuf
        );
        assert_eq!(encoding(None, b"k8s\0rest"), Encoding::Protobuf);
        assert_eq!(encoding(None, b"{}"), Encoding::Json);
        assert_eq!(
            encoding(Some("application/cbor"), b"\xa0"),
            Encoding::Other("application/cbor".into())
        );
    }

    #[test]
    fn yaml_and_json_bodies() {
        let y = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: \"1\"\n";
        let v = to_json(Some("application/apply-patch+yaml"), y);
        assert_eq!(
            v,
            Ok(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}})
            )
        );
        assert_eq!(
            object_name(Some("application/apply-patch+yaml"), y).as_deref(),
            Some("a")
        );
        let j = br#"{"metadata":{"name":"b"}}"#;
        assert_eq!(
            object_name(Some("application/json"), j).as_deref(),
            Some("b")
        );
        assert!(matches!(
            to_json(Some("application/json"), b"{nope"),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            to_json(Some("application/yaml"), b"a: [1"),
            Err(BodyError::Yaml(_))
        ));
        assert!(matches!(
            to_json(Some("application/cbor"), b"\xa0"),
            Err(BodyError::UnknownMediaType(_))
        ));
    }
}
