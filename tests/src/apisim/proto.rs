//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! for the types kubectl's typed clients POST: ConfigMap, Secret,
//! Namespace, ServiceAccount, TokenRequest, SelfSubjectReview and
//! SelfSubjectAccessReview. The decoding itself is the sidecar's
//! (`mcp_warden_shared::proto`, kube-rs's `k8s-pb` bindings), so kube-apisim
//! and the recording read a body the same way; this module maps its errors
//! to what kube-apisim answers (400, or 415 for kinds it does not decode).
//! Responses are always JSON, which every client accepts.

use mcp_warden_shared::proto as shared;
use serde_json::Value;

/// Errors decoding a protobuf body (400 BadRequest, or 415 for types we do
/// not know).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    #[error("protobuf body is malformed: {0}")]
    Malformed(String),
    #[error("protobuf decoding is not supported for kind {0:?}; send application/json")]
    Unsupported(String),
}

/// Decodes a `k8s\0`-prefixed protobuf body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    shared::decode(body).map_err(|e| match e {
        shared::ProtoError::Unsupported { api_version, kind } => {
            ProtoError::Unsupported(format!("{api_version}/{kind}"))
        }
        e => ProtoError::Malformed(e.to_string()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3 | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn config_map_roundtrip() {
        let meta = [field(1, b"cm"), field(3, b"ns"), field(2, b"")].concat();
        let entry = [field(1, b"k"), field(2, b"v")].concat();
        let raw = [field(1, &meta), field(2, &entry)].concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\x00".to_vec(), field(1, &tm), field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "cm", "namespace": "ns"}, "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\x00\x0a\xff").is_err());
        let tm = [field(1, b"v1"), field(2, b"Pod")].concat();
        let body = [b"k8s\x00".to_vec(), field(1, &tm)].concat();
        assert!(matches!(decode(&body), Err(ProtoError::Unsupported(_))));
    }
}
