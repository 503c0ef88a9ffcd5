//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! for the types kubectl's typed clients POST: ConfigMap, Secret,
//! Namespace, ServiceAccount, TokenRequest, SelfSubjectReview and
//! SelfSubjectAccessReview. The body is the `k8s\0` magic followed by a
//! `runtime.Unknown` envelope whose `raw` field holds the object; objects are
//! turned into the same JSON their JSON encoding would give (empty fields
//! omitted). Responses are always JSON, which every client accepts.

use base64::Engine;
use serde_json::{Map, Value, json};

/// Errors decoding a protobuf body (400 BadRequest, or 415 for types we do
/// not know).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    #[error("protobuf body is malformed: {0}")]
    Malformed(&'static str),
    #[error("protobuf decoding is not supported for kind {0:?}; send application/json")]
    Unsupported(String),
}

#[derive(Clone, Copy)]
enum K {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    RepStr,
    RepMsg(&'static [Field]),
    MapStr,
    MapBytes,
    Skip,
}

#[derive(Clone, Copy)]
struct Field(u64, &'static str, K);

const OWNER_REF: &[Field] = &[
    Field(1, "kind", K::Str),
    Field(3, "name", K::Str),
    Field(4, "uid", K::Str),
    Field(5, "apiVersion", K::Str),
    Field(6, "controller", K::Bool),
    Field(7, "blockOwnerDeletion", K::Bool),
];
const OBJECT_META: &[Field] = &[
    Field(1, "name", K::Str),
    Field(2, "generateName", K::Str),
    Field(3, "namespace", K::Str),
    Field(4, "selfLink", K::Str),
    Field(5, "uid", K::Str),
    Field(6, "resourceVersion", K::Str),
    Field(7, "generation", K::Int),
    Field(8, "creationTimestamp", K::Time),
    Field(9, "deletionTimestamp", K::Time),
    Field(10, "deletionGracePeriodSeconds", K::Int),
    Field(11, "labels", K::MapStr),
    Field(12, "annotations", K::MapStr),
    Field(13, "ownerReferences", K::RepMsg(OWNER_REF)),
    Field(14, "finalizers", K::RepStr),
    Field(17, "managedFields", K::Skip),
];
const OBJECT_REF: &[Field] = &[
    Field(1, "kind", K::Str),
    Field(2, "namespace", K::Str),
    Field(3, "name", K::Str),
    Field(4, "uid", K::Str),
    Field(5, "apiVersion", K::Str),
    Field(6, "resourceVersion", K::Str),
    Field(7, "fieldPath", K::Str),
];
const LOCAL_REF: &[Field] = &[Field(1, "name", K::Str)];
const CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "data", K::MapStr),
    Field(3, "binaryData", K::MapBytes),
    Field(4, "immutable", K::Bool),
];
const SECRET: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "data", K::MapBytes),
    Field(3, "type", K::Str),
    Field(4, "stringData", K::MapStr),
    Field(5, "immutable", K::Bool),
];
const NAMESPACE_SPEC: &[Field] = &[Field(1, "finalizers", K::RepStr)];
const NAMESPACE: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "spec", K::Msg(NAMESPACE_SPEC)),
    Field(3, "status", K::Skip),
];
const SERVICE_ACCOUNT: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "secrets", K::RepMsg(OBJECT_REF)),
    Field(3, "imagePullSecrets", K::RepMsg(LOCAL_REF)),
    Field(4, "automountServiceAccountToken", K::Bool),
];
const BOUND_REF: &[Field] = &[
    Field(1, "kind", K::Str),
    Field(2, "apiVersion", K::Str),
    Field(3, "name", K::Str),
    Field(4, "uid", K::Str),
];
const TOKEN_SPEC: &[Field] = &[
    Field(1, "audiences", K::RepStr),
    Field(3, "boundObjectRef", K::Msg(BOUND_REF)),
    Field(4, "expirationSeconds", K::Int),
];
const TOKEN_REQUEST: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "spec", K::Msg(TOKEN_SPEC)),
    Field(3, "status", K::Skip),
];
const SELF_SUBJECT_REVIEW: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "status", K::Skip),
];
const RESOURCE_ATTRS: &[Field] = &[
    Field(1, "namespace", K::Str),
    Field(2, "verb", K::Str),
    Field(3, "group", K::Str),
    Field(4, "version", K::Str),
    Field(5, "resource", K::Str),
    Field(6, "subresource", K::Str),
    Field(7, "name", K::Str),
];
const NON_RESOURCE_ATTRS: &[Field] = &[Field(1, "path", K::Str), Field(2, "verb", K::Str)];
const SSAR_SPEC: &[Field] = &[
    Field(1, "resourceAttributes", K::Msg(RESOURCE_ATTRS)),
    Field(2, "nonResourceAttributes", K::Msg(NON_RESOURCE_ATTRS)),
];
const SSAR: &[Field] = &[
    Field(1, "metadata", K::Msg(OBJECT_META)),
    Field(2, "spec", K::Msg(SSAR_SPEC)),
    Field(3, "status", K::Skip),
];
const TYPE_META: &[Field] = &[Field(1, "apiVersion", K::Str), Field(2, "kind", K::Str)];

/// A raw protobuf field: number and payload.
enum Raw<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(ProtoError::Malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed("varint too long"))
    }

    fn next(&mut self) -> Result<Option<(u64, Raw<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let raw = match wire {
            0 => Raw::Varint(self.varint()?),
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed("length"))?;
                if len > self.buf.len() {
                    return Err(ProtoError::Malformed("length beyond end of body"));
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Raw::Bytes(b)
            }
            1 => {
                if self.buf.len() < 8 {
                    return Err(ProtoError::Malformed("truncated fixed64"));
                }
                self.buf = &self.buf[8..];
                Raw::Varint(0)
            }
            5 => {
                if self.buf.len() < 4 {
                    return Err(ProtoError::Malformed("truncated fixed32"));
                }
                self.buf = &self.buf[4..];
                Raw::Varint(0)
            }
            _ => return Err(ProtoError::Malformed("unsupported wire type")),
        };
        Ok(Some((num, raw)))
    }
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ProtoError> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((num, raw)) = r.next()? {
        match (num, raw) {
            (1, Raw::Bytes(b)) => k = string(b)?,
            (2, Raw::Bytes(b)) if bytes_value => {
                v = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (2, Raw::Bytes(b)) => v = json!(string(b)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, ProtoError> {
    let mut r = Reader { buf: b };
    let mut secs: i64 = 0;
    while let Some((num, raw)) = r.next()? {
        if let (1, Raw::Varint(v)) = (num, raw) {
            secs = v as i64;
        }
    }
    if secs == 0 {
        return Ok(Value::Null);
    }
    Ok(time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(Value::String)
        .unwrap_or(Value::Null))
}

fn message(b: &[u8], schema: &[Field]) -> Result<Value, ProtoError> {
    let mut r = Reader { buf: b };
    let mut out = Map::new();
    while let Some((num, raw)) = r.next()? {
        let Some(Field(_, name, kind)) = schema.iter().find(|f| f.0 == num).copied() else {
            continue;
        };
        let name = name.to_string();
        match (kind, raw) {
            (K::Str, Raw::Bytes(b)) => {
                let s = string(b)?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            (K::Int, Raw::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (K::Bool, Raw::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (K::Time, Raw::Bytes(b)) => {
                let t = time(b)?;
                if !t.is_null() {
                    out.insert(name, t);
                }
            }
            (K::Msg(s), Raw::Bytes(b)) => {
                let v = message(b, s)?;
                if v.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(name, v);
                }
            }
            (K::RepStr, Raw::Bytes(b)) => {
                let s = string(b)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(json!(s));
                }
            }
            (K::RepMsg(s), Raw::Bytes(b)) => {
                let v = message(b, s)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(v);
                }
            }
            (K::MapStr | K::MapBytes, Raw::Bytes(b)) => {
                let (k, v) = map_entry(b, matches!(kind, K::MapBytes))?;
                if let Value::Object(m) = out.entry(name).or_insert_with(|| json!({})) {
                    m.insert(k, v);
                }
            }
            (K::Skip, _) => {}
            _ => return Err(ProtoError::Malformed("field has an unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `k8s\0`-prefixed protobuf body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(b"k8s\x00")
        .ok_or(ProtoError::Malformed("missing k8s magic prefix"))?;
    let mut r = Reader { buf: rest };
    let (mut tm, mut raw) = (Value::Null, &[][..]);
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Raw::Bytes(b)) => tm = message(b, TYPE_META)?,
            (2, Raw::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let kind = tm["kind"].as_str().unwrap_or("").to_string();
    let api_version = tm["apiVersion"].as_str().unwrap_or("").to_string();
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1" | "authentication.k8s.io/v1beta1", "SelfSubjectReview") => {
            SELF_SUBJECT_REVIEW
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SSAR,
        _ => return Err(ProtoError::Unsupported(format!("{api_version}/{kind}"))),
    };
    let mut obj = message(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
