//! Masking engine: replaces secret values in API responses, request bodies and
//! log lines, so no secret value leaves the sidecar in clear.
//!
//! The policy's `masking` section ([`MaskingConfig`]) is compiled once into a
//! [`Masker`]. A masker is pure: JSON values or bytes in, masked values or bytes
//! out, plus the number of values it replaced (recorded in the audit event).
//!
//! - Rules ([`MaskRule`]) say, per resource, which values to replace: field
//!   paths (`data.*`, `spec.containers.*.env.*.value`), a regex over the keys
//!   of `data`/`binaryData`/`stringData`, a regex over env entry names in any
//!   pod spec.
//! - Detectors ([`Detector`]) run over every string value and every log line
//!   and replace only the secret part (a JWT, a PEM private key...); the
//!   content of base64 maps (`binaryData`, a Secret's `data`) is decoded for
//!   them. `high-entropy-base64` (opt-in) runs on log lines only.
//! - Every value masked in an object (a list item, a watch event's object, a
//!   Table row) is then scrubbed from the rest of that object, raw and
//!   base64-encoded ([`ScrubSet`]): a value copied into an annotation or
//!   `generateName` does not get out in clear. [`MaskContext::scrub`] holds
//!   values scrubbed from every body (the sidecar's own token).
//! - The rules of the request's resource and of the object's built-in kind
//!   both apply (the stricter wins); a body whose list `kind` contradicts
//!   the path, a duplicate `kind` key, and a watch event with a `kind` of
//!   its own are refused ([`MaskError::Refused`]).
//! - A masked Secret `data` or any `binaryData` value becomes
//!   [`MARKER_BASE64`] (valid base64 of [`MARKER`], so clients still decode
//!   it); every other masked string becomes [`MARKER`]. Keys are kept.
//! - The `kubectl.kubernetes.io/last-applied-configuration` annotation of an
//!   object in which anything was masked, of any Secret, or whose content would
//!   itself be masked, is replaced as a whole by a value-free JSON skeleton
//!   (`apiVersion`, `kind`, `metadata.name`/`namespace`) so a repeat
//!   `kubectl apply` still parses it; see `engine::last_applied_skeleton` for
//!   the trade-off (no pruning of removed fields through the sidecar).
//!
//! Response shapes: single objects, `*List`s, watch events, `Table`s (rows'
//! cells and embedded objects), `PartialObjectMetadata(List)`, error `Status`
//! (detectors only, so normally unchanged), log lines; for request bodies also
//! JSON Patch arrays (each op's `value` masked as if it sat at its `path`).
//! [`StreamMasker`] does the same over a byte stream with memory bounded by
//! the largest list item.
//!
//! Two engines, one result. The byte-level path (`bytes`) masks a single
//! object, a list item or a watch event from its bytes: one strict scan
//! that knows each value's path, the rules decided from the paths, the
//! detectors run on the strings in place, and the input passed on with
//! splices where values changed (a masked string is written as a JSON
//! string, a masked number as `0`); everything not changed keeps its bytes,
//! formatting and number spelling. The tree engine (`engine`: the unit
//! parsed into a `serde_json::Value`, masked, re-serialized compactly when
//! anything changed) is the reference and does whatever the byte path
//! leaves to it: Tables and their rows, `PartialObjectMetadata`, lists as
//! whole documents, JSON Patch arrays, objects without a `kind` outside a
//! list or watch event, duplicate keys, numbers beyond 200 digits or with
//! exponents of three digits, nesting deeper than 100, invalid JSON (so
//! its errors are the tree engine's), object keys a scrub set matches.
//! Both give the same count and the same error, and their outputs parse to
//! the same JSON value; the bytes differ only in how unchanged parts are
//! spelled.
//!
//! Numbers: `arbitrary_precision` is off, so a value the tree engine
//! re-serializes (because something in it was masked) goes through
//! i64/u64/f64: integers are exact, floats are written in shortest
//! round-trip form (`1e3` becomes `1000.0`), integers beyond u64 become
//! floats. The byte path keeps every unchanged number as it came. Values
//! with nothing masked are passed on byte for byte by both.

mod bytes;
#[cfg(test)]
mod bytes_tests;
mod detect;
mod engine;
mod patch_guard;
mod scrub;
mod stream;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::attrs::RequestAttributes;

pub use detect::Detector;
pub use patch_guard::PatchReadsMasked;
pub use scrub::{MIN_ENCODED_SCRUB_BYTES, MIN_SCRUB_BYTES, ScrubSet, StreamScrubber};
pub use stream::{DEFAULT_HOLD_BYTES, DEFAULT_MAX_VALUE_BYTES, StreamKind, StreamMasker};

/// The text that replaces a masked value.
pub const MARKER: &str = "***MASKED***";
/// Base64 of [`MARKER`]: what a masked Secret `data`/`binaryData` value becomes.
pub const MARKER_BASE64: &str = "KioqTUFTS0VEKioq";
/// The annotation in which `kubectl apply` keeps the whole applied object.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The `masking` section of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaskingConfig {
    /// Per-resource rules.
    #[serde(default)]
    pub rules: Vec<MaskRule>,
    /// Names of detectors applied to every string value and log line:
    /// `jwt`, `private-key`, `aws-access-key`, `bearer-token`,
    /// `generic-password-assignment`; and for log lines only
    /// `high-entropy-base64` (off unless named).
    #[serde(default)]
    pub detectors: Vec<String>,
}

/// One masking rule: which resources, and which values in them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaskRule {
    /// Resources the rule applies to, by plural name in any API group:
    /// `secrets`, `configmaps`, `*` (everything), or `resource/subresource`
    /// for subresource bodies (`serviceaccounts/token` is a TokenRequest).
    /// A bare name matches only the resource's own objects. The resource of an
    /// object is taken from its `kind` when that kind is a built-in one
    /// (`Secret` is `secrets` wherever it appears), otherwise from the request.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Field paths from the object root, `.`-separated, `*` for any key or
    /// array index, e.g. `data.*`, `spec.containers.*.env.*.value`. Strings
    /// under a matched path are replaced (numbers become 0, booleans and
    /// nulls are kept so typed clients still decode).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Regex (unanchored) over the keys of the object's `data`, `binaryData`
    /// and `stringData` maps; the values of matching keys are masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// Regex (unanchored) over `env[].name` in any pod spec (Pod `spec`,
    /// `spec.template.spec`, `template.spec`, CronJob
    /// `spec.jobTemplate.spec.template.spec`; containers, initContainers,
    /// ephemeralContainers); the `value` of matching entries is masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_names: Option<String>,
}

/// The embedded default masking, as the policy file would spell it. The
/// default policy embeds exactly this; [`MaskingConfig::embedded_default`]
/// parses it.
pub const EMBEDDED_DEFAULT_YAML: &str = r#"rules:
  - resources: [secrets]
    fields: ["data.*", "stringData.*"]
  - resources: [serviceaccounts/token]
    fields: ["status.token"]
  - resources: [configmaps]
    keys: "(?i)(password|secret|token|apikey)"
  - resources: ["*"]
    envNames: "(?i)(password|passwd|secret|token|apikey|api_key|credential|private_key)"
detectors: [jwt, private-key, aws-access-key, bearer-token, generic-password-assignment]
"#;

impl MaskingConfig {
    /// The embedded default (see [`EMBEDDED_DEFAULT_YAML`]): Secret `data` and
    /// `stringData` (this includes every service-account token Secret),
    /// TokenRequest `status.token`, ConfigMap keys that look secret, env
    /// values whose names look secret, all detectors.
    pub fn embedded_default() -> MaskingConfig {
        MaskingConfig {
            rules: vec![
                MaskRule {
                    resources: vec!["secrets".into()],
                    fields: vec!["data.*".into(), "stringData.*".into()],
                    ..MaskRule::default()
                },
                MaskRule {
                    resources: vec!["serviceaccounts/token".into()],
                    fields: vec!["status.token".into()],
                    ..MaskRule::default()
                },
                MaskRule {
                    resources: vec!["configmaps".into()],
                    keys: Some("(?i)(password|secret|token|apikey)".into()),
                    ..MaskRule::default()
                },
                MaskRule {
                    resources: vec!["*".into()],
                    env_names: Some(
                        "(?i)(password|passwd|secret|token|apikey|api_key|credential|private_key)"
                            .into(),
                    ),
                    ..MaskRule::default()
                },
            ],
            detectors: [
                "jwt",
                "private-key",
                "aws-access-key",
                "bearer-token",
                "generic-password-assignment",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// Validate and compile. Errors name the rule index and the field.
    pub fn compile(&self) -> Result<Masker, MaskConfigError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for (index, rule) in self.rules.iter().enumerate() {
            rules.push(CompiledRule::compile(index, rule)?);
        }
        let mut detectors = Vec::new();
        for (index, name) in self.detectors.iter().enumerate() {
            let d = Detector::from_name(name).ok_or_else(|| MaskConfigError::UnknownDetector {
                index,
                name: name.clone(),
            })?;
            if !detectors.contains(&d) {
                detectors.push(d);
            }
        }
        Ok(Masker {
            rules,
            detectors: detect::Detectors::new(&detectors),
        })
    }
}

/// Why a `masking` section is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskConfigError {
    #[error("masking.rules[{index}].{field}: invalid regex: {why}")]
    BadRegex {
        index: usize,
        field: &'static str,
        why: String,
    },
    #[error("masking.rules[{index}].fields[{path_index}] {path:?}: {why}")]
    BadFieldPath {
        index: usize,
        path_index: usize,
        path: String,
        why: &'static str,
    },
    #[error("masking.rules[{index}].resources[{resource_index}] {resource:?}: {why}")]
    BadResource {
        index: usize,
        resource_index: usize,
        resource: String,
        why: &'static str,
    },
    #[error("masking.rules[{index}].resources: a rule needs at least one resource (\"*\" for all)")]
    NoResources { index: usize },
    #[error("masking.rules[{index}]: the rule masks nothing: give fields, keys or envNames")]
    EmptyRule { index: usize },
    #[error(
        "masking.detectors[{index}]: unknown detector {name:?} (known: jwt, private-key, aws-access-key, bearer-token, generic-password-assignment, high-entropy-base64)"
    )]
    UnknownDetector { index: usize, name: String },
}

/// Why a body could not be masked. The caller answers 502 and never passes the
/// raw bytes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("malformed JSON at byte {offset}: {why}")]
    Malformed { offset: u64, why: String },
    #[error("body ended inside a JSON value (truncated)")]
    Truncated,
    #[error("a single JSON value is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the stream already failed")]
    Poisoned,
    #[error("refused: {why}")]
    Refused { why: &'static str },
}

/// What the masker needs to know about the request a body belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskContext {
    /// Resource of the request, lower-case plural (`secrets`); empty when unknown.
    pub resource: String,
    /// Subresource of the request (`token`, `status`, `log`); empty if none.
    pub subresource: String,
    /// API group of the request; empty for the core group.
    pub api_group: String,
    /// Verb of the request (`list`, `get`, ...); lets the stream masker tell a
    /// list whose `kind` comes after `items` (custom resources are encoded with
    /// sorted keys) from an object that merely has an `items` field. Empty:
    /// unknown, treated like a list.
    pub verb: String,
    /// Values scrubbed from every string and key of the body, raw and
    /// base64 (the sidecar's own upstream token); `None`: nothing extra.
    pub scrub: Option<Arc<ScrubSet>>,
}

impl MaskContext {
    /// The context for a body of the request with these attributes.
    pub fn from_attrs(attrs: &RequestAttributes) -> MaskContext {
        MaskContext {
            resource: attrs.resource.clone(),
            subresource: attrs.subresource.clone(),
            api_group: attrs.api_group.clone(),
            verb: attrs.verb.clone(),
            scrub: None,
        }
    }

    /// A context for `resource` (tests, tools).
    pub fn for_resource(resource: &str) -> MaskContext {
        MaskContext {
            resource: resource.to_string(),
            ..MaskContext::default()
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Any,
    Key(String),
}

/// A resource pattern: `*`, `name`, `name/sub`, `name/*`, `*/sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourcePattern {
    /// `None` for `*`.
    resource: Option<String>,
    /// `None`: no subresource allowed; `Some(None)`: any; `Some(Some(s))`: exactly `s`.
    subresource: Option<Option<String>>,
}

impl ResourcePattern {
    fn parse(s: &str) -> Result<ResourcePattern, &'static str> {
        if s == "*" {
            return Ok(ResourcePattern {
                resource: None,
                subresource: Some(None),
            });
        }
        let (res, sub) = match s.split_once('/') {
            Some((r, sub)) => (r, Some(sub)),
            None => (s, None),
        };
        let valid = |p: &str| {
            p == "*"
                || (!p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    }))
        };
        if !valid(res) || sub.is_some_and(|s| !valid(s)) {
            return Err(
                "expected `*`, `resource` or `resource/subresource` (lower-case plural names)",
            );
        }
        Ok(ResourcePattern {
            resource: (res != "*").then(|| res.to_string()),
            subresource: sub.map(|s| (s != "*").then(|| s.to_string())),
        })
    }

    fn matches(&self, resource: &str, subresource: &str) -> bool {
        if self.resource.as_deref().is_some_and(|r| r != resource) {
            return false;
        }
        match &self.subresource {
            None => subresource.is_empty(),
            Some(None) => true,
            Some(Some(s)) => s == subresource,
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    resources: Vec<ResourcePattern>,
    fields: Vec<Vec<Seg>>,
    keys: Option<Regex>,
    env_names: Option<Regex>,
}

/// User regexes are bounded so a policy cannot make the sidecar compile a huge automaton.
const USER_REGEX_SIZE_LIMIT: usize = 1 << 20;

fn user_regex(index: usize, field: &'static str, src: &str) -> Result<Regex, MaskConfigError> {
    regex::RegexBuilder::new(src)
        .size_limit(USER_REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| MaskConfigError::BadRegex {
            index,
            field,
            why: e.to_string(),
        })
}

impl CompiledRule {
    fn compile(index: usize, rule: &MaskRule) -> Result<CompiledRule, MaskConfigError> {
        if rule.resources.is_empty() {
            return Err(MaskConfigError::NoResources { index });
        }
        if rule.fields.is_empty() && rule.keys.is_none() && rule.env_names.is_none() {
            return Err(MaskConfigError::EmptyRule { index });
        }
        let resources = rule
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ResourcePattern::parse(r).map_err(|why| MaskConfigError::BadResource {
                    index,
                    resource_index: i,
                    resource: r.clone(),
                    why,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields = rule
            .fields
            .iter()
            .enumerate()
            .map(|(i, p)| {
                parse_path(p).map_err(|why| MaskConfigError::BadFieldPath {
                    index,
                    path_index: i,
                    path: p.clone(),
                    why,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = rule
            .keys
            .as_deref()
            .map(|k| user_regex(index, "keys", k))
            .transpose()?;
        let env_names = rule
            .env_names
            .as_deref()
            .map(|k| user_regex(index, "envNames", k))
            .transpose()?;
        Ok(CompiledRule {
            resources,
            fields,
            keys,
            env_names,
        })
    }

    fn applies_to(&self, resource: &str, subresource: &str) -> bool {
        self.resources
            .iter()
            .any(|p| p.matches(resource, subresource))
    }
}

fn parse_path(p: &str) -> Result<Vec<Seg>, &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    let p = p.strip_prefix('.').unwrap_or(p);
    p.split('.')
        .map(|s| match s {
            "" => Err("empty segment (`..` or trailing `.`)"),
            "*" => Ok(Seg::Any),
            s if s.contains('*') => Err("`*` must be a whole segment"),
            s if s.contains(['[', ']']) => Err("use `.N` or `.*` for array elements, not brackets"),
            s => Ok(Seg::Key(s.to_string())),
        })
        .collect()
}

/// A compiled masking configuration. Cheap to share (`Arc<Masker>`).
#[derive(Debug, Clone)]
pub struct Masker {
    rules: Vec<CompiledRule>,
    detectors: detect::Detectors,
}

impl Masker {
    /// Mask a log line (detectors only); returns the line (borrowed when
    /// unchanged) and the number of secrets masked. A private key split over
    /// several lines is handled by [`StreamMasker`] in [`StreamKind::Log`].
    pub fn mask_log_line<'a>(&self, line: &'a str) -> (Cow<'a, str>, usize) {
        self.detectors.apply_log(line)
    }

    /// Mask a whole JSON body; returns the masked bytes and the count
    /// (see the module docs for the form of the output; the input unchanged,
    /// byte for byte, when nothing was masked). Malformed JSON is an error.
    pub fn mask_json_bytes(
        &self,
        ctx: &MaskContext,
        body: &[u8],
    ) -> Result<(Vec<u8>, usize), MaskError> {
        let mut out = Vec::new();
        if let Some(n) = bytes::with_scratch(|sc| {
            self.mask_bytes(ctx, bytes::Shape::Document, body, sc, &mut out)
        }) {
            return Ok((out, n));
        }
        self.mask_json_bytes_tree(ctx, body)
    }

    /// [`Masker::mask_json_bytes`] by the tree engine alone (the reference
    /// the byte-level path is tested against).
    pub(crate) fn mask_json_bytes_tree(
        &self,
        ctx: &MaskContext,
        body: &[u8],
    ) -> Result<(Vec<u8>, usize), MaskError> {
        let (mut v, dup) = stream::parse_strict(body).map_err(|e| json_error(0, body, &e))?;
        check_document(ctx, &v)?;
        let n = self.mask_value(ctx, &mut v);
        if n == 0 && !dup {
            return Ok((body.to_vec(), 0));
        }
        Ok((to_json_bytes(&v), n))
    }
}

/// Refuse a top-level document whose list `kind` contradicts the path.
fn check_document(ctx: &MaskContext, v: &serde_json::Value) -> Result<(), MaskError> {
    match v.get("kind").and_then(serde_json::Value::as_str) {
        Some(k) if engine::list_kind_contradicts(ctx, k) => Err(MaskError::Refused {
            why: "the list `kind` contradicts the resource of the request",
        }),
        _ => Ok(()),
    }
}

fn to_json_bytes(v: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` to a Vec cannot fail (string keys, no I/O).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Append the JSON of `v` to `out`, as [`to_json_bytes`] writes it, without
/// an intermediate buffer.
fn write_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    let at = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(at);
    }
}

fn json_error(base: u64, body: &[u8], e: &serde_json::Error) -> MaskError {
    if e.is_eof() {
        return MaskError::Truncated;
    }
    // serde_json reports line/column; turn that into a byte offset for the message.
    let mut offset = 0usize;
    let mut line = 1usize;
    for (i, b) in body.iter().enumerate() {
        if line == e.line() {
            offset = i + e.column().saturating_sub(1);
            break;
        }
        if *b == b'\n' {
            line += 1;
        }
    }
    // serde_json's message ends with the line and column in the bytes it
    // was given: the buffered value, whose start depends on how the body was
    // chunked (leading whitespace passed on or still held). `offset` says
    // where it is in the body; the message keeps only what is wrong.
    let text = e.to_string();
    let why = match text.rfind(" at line ") {
        Some(p) => text[..p].to_string(),
        None => text,
    };
    MaskError::Malformed {
        offset: base + offset as u64,
        why,
    }
}
