//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) as JSON.
//!
//! A protobuf body is the 4-byte magic `k8s\0` followed by a `runtime.Unknown`
//! envelope: `typeMeta` (apiVersion, kind) and `raw`, the object's own
//! protobuf message. The messages are decoded with kube-rs's generated
//! bindings (`k8s-pb`, prost) and turned into the JSON the same object's JSON
//! encoding would have (Go's `omitempty`: empty strings, maps and lists
//! left out), so the recording and the masking engine see one shape whatever
//! the client sent.
//!
//! - [`decode`] gives the object as JSON for the kinds in [`SUPPORTED`] (what
//!   kubectl's and client-go's typed clients send as protobuf), and
//!   [`ProtoError::Unsupported`] for any other kind.
//! - [`envelope`] reads only the envelope and the object's `metadata` (field 1
//!   of every top-level Kubernetes object), so the name and namespace of an
//!   object of any kind are known even when its body is not decoded.
//!
//! Pure: bytes in, values out.

use base64::Engine;
use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// `(apiVersion, kind)` of the objects [`decode`] turns into JSON.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("authentication.k8s.io/v1", "TokenRequest"),
    ("authentication.k8s.io/v1", "SelfSubjectReview"),
    ("authentication.k8s.io/v1beta1", "SelfSubjectReview"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
];

/// Why a protobuf body was not turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error("not a Kubernetes protobuf body (no k8s\\0 prefix)")]
    NoMagic,
    /// The `runtime.Unknown` envelope does not decode.
    #[error("malformed protobuf envelope: {0}")]
    Envelope(String),
    /// The envelope names no kind.
    #[error("the protobuf envelope names no apiVersion/kind")]
    NoKind,
    /// The object inside the envelope does not decode as its kind.
    #[error("malformed protobuf {kind}: {message}")]
    Object {
        /// `apiVersion/kind` of the envelope.
        kind: String,
        /// What prost said.
        message: String,
    },
    /// A well-formed body of a kind this module does not decode.
    #[error("protobuf bodies of kind {kind} ({api_version}) are not decoded")]
    Unsupported {
        /// The envelope's `apiVersion`.
        api_version: String,
        /// The envelope's `kind`.
        kind: String,
    },
}

/// What the envelope says, and the object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// `typeMeta.apiVersion`.
    pub api_version: String,
    /// `typeMeta.kind`.
    pub kind: String,
    /// `metadata.name` of the object (empty when it has none).
    pub name: String,
    /// `metadata.namespace` of the object (empty when it has none).
    pub namespace: String,
    /// `metadata.generateName` of the object.
    pub generate_name: String,
}

/// Any top-level object: only `metadata` (field 1) is read, the rest skipped.
#[derive(Clone, PartialEq, Message)]
struct MetaOnly {
    #[prost(message, optional, tag = "1")]
    metadata: Option<meta::ObjectMeta>,
}

/// Whether `body` starts with the Kubernetes protobuf magic.
pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

fn unknown(body: &[u8]) -> Result<(String, String, Vec<u8>), ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::NoMagic)?;
    let u = Unknown::decode(rest).map_err(|e| ProtoError::Envelope(e.to_string()))?;
    let tm = u.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    if kind.is_empty() || api_version.is_empty() {
        return Err(ProtoError::NoKind);
    }
    Ok((api_version, kind, u.raw.unwrap_or_default()))
}

/// Reads the envelope and the object's metadata, whatever its kind.
pub fn envelope(body: &[u8]) -> Result<Envelope, ProtoError> {
    let (api_version, kind, raw) = unknown(body)?;
    let m = MetaOnly::decode(raw.as_slice()).map_err(|e| ProtoError::Object {
        kind: format!("{api_version}/{kind}"),
        message: e.to_string(),
    })?;
    let m = m.metadata.unwrap_or_default();
    Ok(Envelope {
        api_version,
        kind,
        name: m.name.unwrap_or_default(),
        namespace: m.namespace.unwrap_or_default(),
        generate_name: m.generate_name.unwrap_or_default(),
    })
}

/// Decodes a protobuf body into the object's JSON form (see the module docs).
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let (api_version, kind, raw) = unknown(body)?;
    let bad = |e: prost::DecodeError| ProtoError::Object {
        kind: format!("{api_version}/{kind}"),
        message: e.to_string(),
    };
    let raw = raw.as_slice();
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => config_map(core::ConfigMap::decode(raw).map_err(bad)?),
        ("v1", "Secret") => secret(core::Secret::decode(raw).map_err(bad)?),
        ("v1", "Namespace") => namespace(core::Namespace::decode(raw).map_err(bad)?),
        ("v1", "ServiceAccount") => {
            service_account(core::ServiceAccount::decode(raw).map_err(bad)?)
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            token_request(authn::TokenRequest::decode(raw).map_err(bad)?)
        }
        ("authentication.k8s.io/v1" | "authentication.k8s.io/v1beta1", "SelfSubjectReview") => {
            // The request carries only metadata; status is the server's answer.
            let m = MetaOnly::decode(raw).map_err(bad)?;
            let mut o = Obj::default();
            o.msg("metadata", m.metadata.as_ref().map(object_meta));
            o.0
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            ssar(authz::SelfSubjectAccessReview::decode(raw).map_err(bad)?)
        }
        _ => return Err(ProtoError::Unsupported { api_version, kind }),
    };
    // apiVersion and kind first, as Go's encoder writes them.
    let mut out = Map::new();
    out.insert("kind".into(), json!(kind));
    out.insert("apiVersion".into(), json!(api_version));
    out.append(&mut obj);
    Ok(Value::Object(out))
}

/// A JSON object under construction with Go's `omitempty` rules.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(&mut self, k: &str, v: &Option<String>) {
        if let Some(s) = v
            && !s.is_empty()
        {
            self.0.insert(k.into(), json!(s));
        }
    }
    fn int(&mut self, k: &str, v: Option<i64>) {
        if let Some(n) = v {
            self.0.insert(k.into(), json!(n));
        }
    }
    fn bool(&mut self, k: &str, v: Option<bool>) {
        if let Some(b) = v {
            self.0.insert(k.into(), json!(b));
        }
    }
    fn strs(&mut self, k: &str, v: &[String]) {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
    }
    fn map(&mut self, k: &str, v: &BTreeMap<String, String>) {
        if !v.is_empty() {
            self.0.insert(k.into(), json!(v));
        }
    }
    fn bytes_map(&mut self, k: &str, v: &BTreeMap<String, Vec<u8>>) {
        if !v.is_empty() {
            let m: Map<String, Value> = v
                .iter()
                .map(|(k, b)| {
                    (
                        k.clone(),
                        json!(base64::engine::general_purpose::STANDARD.encode(b)),
                    )
                })
                .collect();
            self.0.insert(k.into(), Value::Object(m));
        }
    }
    fn msg(&mut self, k: &str, v: Option<Map<String, Value>>) {
        if let Some(m) = v
            && !m.is_empty()
        {
            self.0.insert(k.into(), Value::Object(m));
        }
    }
    fn list(&mut self, k: &str, v: Vec<Map<String, Value>>) {
        if !v.is_empty() {
            self.0.insert(
                k.into(),
                Value::Array(v.into_iter().map(Value::Object).collect()),
            );
        }
    }
    fn time(&mut self, k: &str, v: &Option<meta::Time>) {
        // A zero time (what client-go sends for an unset one) is `null` in
        // Go's JSON: left out.
        if let Some(t) = v
            && (t.seconds.unwrap_or(0) != 0 || t.nanos.unwrap_or(0) != 0)
            && let Some(s) = rfc3339(t.seconds.unwrap_or(0))
        {
            self.0.insert(k.into(), json!(s));
        }
    }
}

/// `metav1.Time` as Go writes it: RFC 3339 in UTC, whole seconds.
fn rfc3339(secs: i64) -> Option<String> {
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if !(1..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

fn object_meta(m: &meta::ObjectMeta) -> Map<String, Value> {
    let mut o = Obj::default();
    o.str("name", &m.name);
    o.str("generateName", &m.generate_name);
    o.str("namespace", &m.namespace);
    o.str("selfLink", &m.self_link);
    o.str("uid", &m.uid);
    o.str("resourceVersion", &m.resource_version);
    o.int("generation", m.generation.filter(|g| *g != 0));
    // Go writes a zero creationTimestamp as null; left out here.
    o.time("creationTimestamp", &m.creation_timestamp);
    o.time("deletionTimestamp", &m.deletion_timestamp);
    o.int(
        "deletionGracePeriodSeconds",
        m.deletion_grace_period_seconds,
    );
    o.map("labels", &m.labels);
    o.map("annotations", &m.annotations);
    o.list(
        "ownerReferences",
        m.owner_references
            .iter()
            .map(|r| {
                let mut o = Obj::default();
                o.str("apiVersion", &r.api_version);
                o.str("kind", &r.kind);
                o.str("name", &r.name);
                o.str("uid", &r.uid);
                o.bool("controller", r.controller);
                o.bool("blockOwnerDeletion", r.block_owner_deletion);
                o.0
            })
            .collect(),
    );
    o.strs("finalizers", &m.finalizers);
    o.list(
        "managedFields",
        m.managed_fields
            .iter()
            .map(|f| {
                let mut o = Obj::default();
                o.str("manager", &f.manager);
                o.str("operation", &f.operation);
                o.str("apiVersion", &f.api_version);
                o.time("time", &f.time);
                o.str("fieldsType", &f.fields_type);
                if let Some(raw) = f.fields_v1.as_ref().and_then(|v| v.raw.as_ref())
                    && let Ok(v) = serde_json::from_slice::<Value>(raw)
                {
                    o.0.insert("fieldsV1".into(), v);
                }
                o.str("subresource", &f.subresource);
                o.0
            })
            .collect(),
    );
    o.0
}

fn config_map(c: core::ConfigMap) -> Map<String, Value> {
    let mut o = Obj::default();
    o.msg("metadata", c.metadata.as_ref().map(object_meta));
    o.bool("immutable", c.immutable);
    o.map("data", &c.data);
    o.bytes_map("binaryData", &c.binary_data);
    o.0
}

fn secret(s: core::Secret) -> Map<String, Value> {
    let mut o = Obj::default();
    o.msg("metadata", s.metadata.as_ref().map(object_meta));
    o.bool("immutable", s.immutable);
    o.bytes_map("data", &s.data);
    o.map("stringData", &s.string_data);
    o.str("type", &s.r#type);
    o.0
}

fn namespace(n: core::Namespace) -> Map<String, Value> {
    let mut o = Obj::default();
    o.msg("metadata", n.metadata.as_ref().map(object_meta));
    o.msg(
        "spec",
        n.spec.as_ref().map(|s| {
            let mut o = Obj::default();
            o.strs("finalizers", &s.finalizers);
            o.0
        }),
    );
    o.0
}

fn service_account(s: core::ServiceAccount) -> Map<String, Value> {
    let mut o = Obj::default();
    o.msg("metadata", s.metadata.as_ref().map(object_meta));
    o.list(
        "secrets",
        s.secrets
            .iter()
            .map(|r| {
                let mut o = Obj::default();
                o.str("kind", &r.kind);
                o.str("namespace", &r.namespace);
                o.str("name", &r.name);
                o.str("uid", &r.uid);
                o.str("apiVersion", &r.api_version);
                o.str("resourceVersion", &r.resource_version);
                o.str("fieldPath", &r.field_path);
                o.0
            })
            .collect(),
    );
    o.list(
        "imagePullSecrets",
        s.image_pull_secrets
            .iter()
            .map(|r| {
                let mut o = Obj::default();
                o.str("name", &r.name);
                o.0
            })
            .collect(),
    );
    o.bool(
        "automountServiceAccountToken",
        s.automount_service_account_token,
    );
    o.0
}

fn token_request(t: authn::TokenRequest) -> Map<String, Value> {
    let mut o = Obj::default();
    o.msg("metadata", t.metadata.as_ref().map(object_meta));
    let spec = t.spec.unwrap_or_default();
    let mut s = Obj::default();
    // `audiences` has no omitempty in Go.
    s.0.insert("audiences".into(), json!(spec.audiences));
    s.int("expirationSeconds", spec.expiration_seconds);
    s.msg(
        "boundObjectRef",
        spec.bound_object_ref.as_ref().map(|r| {
            let mut o = Obj::default();
            o.str("kind", &r.kind);
            o.str("apiVersion", &r.api_version);
            o.str("name", &r.name);
            o.str("uid", &r.u_id);
            o.0
        }),
    );
    o.0.insert("spec".into(), Value::Object(s.0));
    o.0
}

fn ssar(r: authz::SelfSubjectAccessReview) -> Map<String, Value> {
    let mut o = Obj::default();
    o.msg("metadata", r.metadata.as_ref().map(object_meta));
    let spec = r.spec.unwrap_or_default();
    let mut s = Obj::default();
    s.msg(
        "resourceAttributes",
        spec.resource_attributes.as_ref().map(|a| {
            let mut o = Obj::default();
            o.str("namespace", &a.namespace);
            o.str("verb", &a.verb);
            o.str("group", &a.group);
            o.str("version", &a.version);
            o.str("resource", &a.resource);
            o.str("subresource", &a.subresource);
            o.str("name", &a.name);
            o.0
        }),
    );
    s.msg(
        "nonResourceAttributes",
        spec.non_resource_attributes.as_ref().map(|a| {
            let mut o = Obj::default();
            o.str("path", &a.path);
            o.str("verb", &a.verb);
            o.0
        }),
    );
    o.0.insert("spec".into(), Value::Object(s.0));
    o.0
}

/// Encodes `object` (a k8s-pb message) in the protobuf envelope, as client-go
/// does: for fixtures and tests of the decoder.
pub fn encode<M: Message>(api_version: &str, kind: &str, object: &M) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    out
}

#[cfg(test)]
mod tests;
