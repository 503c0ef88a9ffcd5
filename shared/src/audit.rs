//! Kubernetes audit events (`audit.k8s.io/v1`) as the sidecar records them.
//!
//! The types serialize to exactly the JSON shape of Go's
//! `k8s.io/apiserver/pkg/apis/audit/v1` `Event` and `EventList`, so an
//! `EventList` body we POST is the same body kube-apiserver's audit webhook
//! backend sends, and existing consumers (Falco k8saudit, Vector, Fluent Bit)
//! ingest it unchanged. Field order follows the Go struct order.
//!
//! Pure: timestamps are passed in by the caller (`MicroTime::from_unix_micros`),
//! nothing here reads a clock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::attrs::RequestAttributes;

mod json;

/// `apiVersion` of audit events.
pub const API_VERSION: &str = "audit.k8s.io/v1";

/// Annotation: the policy decision (`allow`, `deny`, `approve`).
pub const ANN_DECISION: &str = "mcp-warden.io/decision";
/// Annotation: the name of the rule that decided (empty for the default action).
pub const ANN_RULE: &str = "mcp-warden.io/rule";
/// Annotation: hash of the policy in force.
pub const ANN_POLICY_HASH: &str = "mcp-warden.io/policy-hash";
/// Annotation: how many values the masking engine replaced.
pub const ANN_MASKED: &str = "mcp-warden.io/masked";
/// Annotation: `namespace/name` of the pod whose sidecar recorded the event.
pub const ANN_POD: &str = "mcp-warden.io/pod";
/// Annotation: cluster name from configuration.
pub const ANN_CLUSTER: &str = "mcp-warden.io/cluster";
/// Annotation: `"false"` when the policy runs in `mode: audit` (decision not enforced).
pub const ANN_ENFORCED: &str = "mcp-warden.io/enforced";

/// Annotation: why a written body is not in `requestObject` although the
/// level asks for it (e.g. a protobuf body of a kind the sidecar does not decode).
pub const ANN_REQUEST_OBJECT_OMITTED: &str = "mcp-warden.io/request-object-omitted";
/// On a request made with a verified end-user token: the token's issuer.
/// `impersonatedUser` is then the end user, not headers the app sent.
pub const ANN_END_USER_ISSUER: &str = "mcp-warden.io/end-user-issuer";

/// How much of a request is recorded (`audit.k8s.io/v1` `Level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Level {
    None,
    #[default]
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    /// Whether `requestObject` is included at this level.
    pub fn includes_request(self) -> bool {
        matches!(self, Level::Request | Level::RequestResponse)
    }
    /// Whether `responseObject` is included at this level.
    pub fn includes_response(self) -> bool {
        matches!(self, Level::RequestResponse)
    }
}

/// The stage of request handling at which an event was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

/// `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits,
/// e.g. `2026-11-21T23:27:15.123456Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MicroTime {
    /// Microseconds since the Unix epoch.
    pub unix_micros: i64,
}

/// Why a timestamp string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {value:?}: {why}")]
pub struct TimeError {
    pub value: String,
    pub why: &'static str,
}

// Howard Hinnant's civil-from-days / days-from-civil: exact for all i64 day
// counts we can meet, and keeps this crate free of a time dependency.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl MicroTime {
    /// From microseconds since the Unix epoch.
    pub fn from_unix_micros(unix_micros: i64) -> Self {
        Self { unix_micros }
    }

    /// Parse RFC 3339 (any offset, 0–9 fractional digits; sub-microsecond
    /// digits are truncated as Go does when it re-formats).
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        let err = |why| TimeError {
            value: s.to_string(),
            why,
        };
        let b = s.as_bytes();
        if !s.is_ascii() {
            return Err(err("not ASCII"));
        }
        if b.len() < 20 {
            return Err(err("too short"));
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, TimeError> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err("expected digits"));
            }
            part.parse::<i64>().map_err(|_| err("expected digits"))
        };
        if b[4] != b'-'
            || b[7] != b'-'
            || !(b[10] == b'T' || b[10] == b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(err("expected YYYY-MM-DDTHH:MM:SS"));
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return Err(err("field out of range"));
        }
        let mut i = 19;
        let mut micros = 0i64;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err("empty fraction"));
            }
            let frac = &s[start..i];
            let mut padded: String = frac.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            micros = padded.parse::<i64>().map_err(|_| err("bad fraction"))?;
        }
        let offset_secs = match &s[i..] {
            "Z" | "z" => 0,
            rest if rest.len() == 6
                && (rest.starts_with('+') || rest.starts_with('-'))
                && &rest[3..4] == ":" =>
            {
                let h = num(i + 1..i + 3)?;
                let m = num(i + 4..i + 6)?;
                let sign = if rest.starts_with('-') { -1 } else { 1 };
                sign * (h * 3600 + m * 60)
            }
            _ => return Err(err("bad zone")),
        };
        let days = days_from_civil(year, month as u32, day as u32);
        let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
        Ok(Self {
            unix_micros: secs * 1_000_000 + micros,
        })
    }
}

impl MicroTime {
    /// The text form written digit by digit into a fixed buffer, for the
    /// four-digit years (every real timestamp): an event carries two, and
    /// going through `fmt` with its padding cost more than the rest of the
    /// event's small fields together. `None` outside years 0–9999.
    fn fixed_text(&self) -> Option<[u8; 27]> {
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let year = u64::try_from(y).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let sod = sod as u64;
        for (range, v) in [
            (0..4, year),
            (5..7, u64::from(m)),
            (8..10, u64::from(d)),
            (11..13, sod / 3600),
            (14..16, (sod % 3600) / 60),
            (17..19, sod % 60),
            (20..26, micros as u64),
        ] {
            let mut v = v;
            for slot in b[range].iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Some(b)
    }
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.fixed_text() {
            return f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?);
        }
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            sod / 3600,
            (sod % 3600) / 60,
            sod % 60
        )
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.fixed_text() {
            Some(b) => match std::str::from_utf8(&b) {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.collect_str(self),
            },
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MicroTime::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `authentication.k8s.io/v1` `UserInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user from its parts (taken from the service-account token's claims).
    pub fn new(
        username: impl Into<String>,
        uid: impl Into<String>,
        groups: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            username: username.into(),
            uid: uid.into(),
            groups,
            extra,
        }
    }
}

impl UserInfo {
    /// The `impersonatedUser` of an event for a request made with an end
    /// user's token: the person, as the upstream's impersonation headers
    /// name them (the event's `user` stays who authenticated upstream, the
    /// pod's service account), as kube-apiserver records impersonation.
    pub fn from_end_user(user: &crate::enduser::EndUser) -> Self {
        Self {
            username: user.username.clone(),
            uid: String::new(),
            groups: user.groups.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// The `impersonatedUser` of an event for a request carrying
    /// `Impersonate-*` headers; `None` when it carries none.
    pub fn from_impersonation(imp: &crate::attrs::Impersonation) -> Option<Self> {
        if imp.is_empty() {
            return None;
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &imp.extra {
            extra.entry(k.clone()).or_default().push(v.clone());
        }
        Some(Self {
            username: imp.user.clone().unwrap_or_default(),
            uid: imp.uid.clone().unwrap_or_default(),
            groups: imp.groups.clone(),
            extra,
        })
    }
}

/// `audit.k8s.io/v1` `ObjectReference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Omitted for the core group, as kube-apiserver does.
    #[serde(rename = "apiGroup", default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    #[serde(
        rename = "resourceVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

impl ObjectReference {
    /// The object reference kube-apiserver records for a resource request;
    /// `None` for non-resource requests (which carry no `objectRef`).
    pub fn from_attributes(a: &RequestAttributes) -> Option<Self> {
        if !a.is_resource_request {
            return None;
        }
        Some(Self {
            resource: a.resource.clone(),
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            uid: String::new(),
            api_group: a.api_group.clone(),
            api_version: a.api_version.clone(),
            resource_version: String::new(),
            subresource: a.subresource.clone(),
        })
    }
}

/// `metav1.ListMeta` as it appears inside `responseStatus` and `EventList`.
/// Go always writes it (a struct is never omitted), usually as `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ListMeta {
    #[serde(rename = "selfLink", default, skip_serializing_if = "String::is_empty")]
    pub self_link: String,
    #[serde(
        rename = "resourceVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    #[serde(rename = "continue", default, skip_serializing_if = "String::is_empty")]
    pub continue_token: String,
    #[serde(
        rename = "remainingItemCount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub remaining_item_count: Option<i64>,
}

/// The subset of `metav1.Status` recorded as `responseStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResponseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
}

fn is_zero(c: &i32) -> bool {
    *c == 0
}

impl ResponseStatus {
    /// What kube-apiserver records for a response: the code, and for a
    /// failure (`code >= 300` with a `Status` body) its status, reason and message.
    pub fn from_code(code: u16) -> Self {
        Self {
            code: i32::from(code),
            ..Self::default()
        }
    }

    /// A failed response, with the `Status` body's fields.
    pub fn failure(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: "Failure".into(),
            reason: reason.into(),
            message: message.into(),
            code: i32::from(code),
            ..Self::default()
        }
    }
}

/// One `audit.k8s.io/v1` `Event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `Event`; Go omits it when unset, kube-apiserver's backends set it.
    /// Constant text is borrowed, not copied, into each request's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Cow<'static, str>>,
    /// `audit.k8s.io/v1` when set.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<Cow<'static, str>>,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    /// Shared: a recorder's events are mostly of one user (the pod's
    /// service account), which each request's event would otherwise copy.
    pub user: Arc<UserInfo>,
    #[serde(
        rename = "impersonatedUser",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(
        rename = "userAgent",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub user_agent: String,
    #[serde(rename = "objectRef", default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(
        rename = "responseStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub response_status: Option<ResponseStatus>,
    /// Raw JSON (`runtime.Unknown`), already masked.
    #[serde(
        rename = "requestObject",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub request_object: Option<serde_json::Value>,
    /// Raw JSON (`runtime.Unknown`), already masked.
    #[serde(
        rename = "responseObject",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub response_object: Option<serde_json::Value>,
    #[serde(rename = "requestReceivedTimestamp")]
    pub request_received_timestamp: MicroTime,
    #[serde(rename = "stageTimestamp")]
    pub stage_timestamp: MicroTime,
    /// Keys are mostly the constants of this module, borrowed, not copied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Annotations,
}

/// The annotations of an [`Event`], by key.
pub type Annotations = BTreeMap<Cow<'static, str>, String>;

/// One event as it is written: the same JSON as [`Event`], field for field
/// and in the same order, but borrowing its parts and carrying the bodies as
/// raw JSON, so a recorder writes each event once, straight from what it
/// holds, without copying the request's event per stage or turning a masked
/// body into a `Value` and back. Build it with [`Event::view`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EventView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    pub api_version: Option<&'a str>,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: &'a str,
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    pub request_uri: &'a str,
    pub verb: &'a str,
    pub user: &'a UserInfo,
    #[serde(rename = "impersonatedUser", skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<&'a UserInfo>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "no_items")]
    pub source_ips: &'a [String],
    #[serde(rename = "userAgent", skip_serializing_if = "no_text")]
    pub user_agent: &'a str,
    #[serde(rename = "objectRef", skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<&'a ObjectReference>,
    #[serde(rename = "responseStatus", skip_serializing_if = "Option::is_none")]
    pub response_status: Option<&'a ResponseStatus>,
    /// Raw JSON, already masked; `None` when the level leaves it out.
    #[serde(rename = "requestObject", skip_serializing_if = "Option::is_none")]
    pub request_object: Option<&'a RawValue>,
    /// Raw JSON, already masked; `None` when the level leaves it out.
    #[serde(rename = "responseObject", skip_serializing_if = "Option::is_none")]
    pub response_object: Option<&'a RawValue>,
    #[serde(rename = "requestReceivedTimestamp")]
    pub request_received_timestamp: MicroTime,
    #[serde(rename = "stageTimestamp")]
    pub stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "no_entries")]
    pub annotations: &'a Annotations,
    /// The response body as JSON text its producer vouches for (see
    /// [`EventView::with_response_json_text`]); written as `responseObject`
    /// by [`EventView::to_json_vec`] in place of `response_object`.
    #[serde(skip)]
    pub response_text: Option<&'a str>,
}

fn no_items(v: &&[String]) -> bool {
    v.is_empty()
}

fn no_text(v: &&str) -> bool {
    v.is_empty()
}

fn no_entries(v: &&Annotations) -> bool {
    v.is_empty()
}

impl<'a> EventView<'a> {
    /// The same event at `stage`, at `at`, with `status`.
    pub fn at_stage(self, stage: Stage, at: MicroTime, status: &'a ResponseStatus) -> Self {
        Self {
            stage,
            stage_timestamp: at,
            response_status: Some(status),
            ..self
        }
    }

    /// Attach the (already masked) request body if the level asks for it.
    pub fn with_request_object(mut self, body: Option<&'a RawValue>) -> Self {
        self.request_object = body.filter(|_| self.level.includes_request());
        self
    }

    /// Attach the (already masked) response body if the level asks for it.
    pub fn with_response_object(mut self, body: Option<&'a RawValue>) -> Self {
        self.response_object = body.filter(|_| self.level.includes_response());
        self
    }

    /// Attach the (already masked) response body as text that is known to
    /// be one JSON value without being checked again, if the level asks for
    /// it: its producer parsed every part of it (the streaming masker's
    /// output for a whole document), and [`one_line_json_text`] made sure
    /// it is one line. It replaces `response_object`. Validating it once
    /// more would cost about as much as the masker's own parse.
    pub fn with_response_json_text(mut self, text: Option<&'a str>) -> Self {
        self.response_text = text.filter(|_| self.level.includes_response());
        if self.response_text.is_some() {
            self.response_object = None;
        }
        self
    }

    /// The event as JSON (one NDJSON line: no newline in it or after it).
    /// Written directly (see `audit/json.rs`), byte for byte what the
    /// derived `Serialize` writes for the same view with the vouched-for
    /// text as `response_object`; use this, not the derived form, which
    /// leaves `response_text` out.
    pub fn to_json_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(
            1024 + self.request_object.map_or(0, |r| r.get().len())
                + self.response_object.map_or(0, |r| r.get().len())
                + self.response_text.map_or(0, str::len),
        );
        json::write_view(self, &mut out)?;
        Ok(out)
    }
}

/// `body` as the text of a JSON value fit for an event, when its producer
/// already knows it is one JSON value (or only whitespace): without the
/// whitespace around it, and only if that leaves it non-empty, valid UTF-8
/// and without a line break (one NDJSON line). `None` otherwise: check it
/// with [`raw_json`] instead, which also joins a multi-line body.
pub fn one_line_json_text(body: &[u8]) -> Option<&str> {
    let text = body.trim_ascii();
    if text.is_empty() || memchr::memchr(b'\n', text).is_some() {
        return None;
    }
    std::str::from_utf8(text).ok()
}

/// `audit.k8s.io/v1` `EventList`: the body of an audit webhook POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ListMeta,
    pub items: Vec<Event>,
}

impl EventList {
    /// A list as the audit webhook backend sends it.
    pub fn new(items: Vec<Event>) -> Self {
        Self {
            kind: "EventList".into(),
            api_version: API_VERSION.into(),
            metadata: ListMeta::default(),
            items,
        }
    }
}

/// The policy outcome recorded in the `mcp-warden.io/` annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecisionInfo {
    /// `allow`, `deny` or `approve`.
    pub decision: String,
    /// Name of the deciding rule; empty when `defaultAction` decided.
    pub rule: String,
    /// Hash of the policy in force.
    pub policy_hash: String,
    /// False in `mode: audit`: the decision was recorded, not enforced.
    pub enforced: bool,
}

/// Everything known about a request when it is received; the input of
/// [`Event::request_received`].
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInfo<'a> {
    /// UUID of the request; the same for all of its stages.
    pub audit_id: &'a str,
    /// Path and query as received.
    pub request_uri: &'a str,
    pub attrs: &'a RequestAttributes,
    pub user: Arc<UserInfo>,
    pub impersonated_user: Option<UserInfo>,
    pub source_ips: Vec<String>,
    pub user_agent: &'a str,
    pub level: Level,
    pub received: MicroTime,
    pub decision: DecisionInfo,
    /// `namespace/name` of the pod.
    pub pod: &'a str,
    /// Cluster name from configuration; omitted when empty.
    pub cluster: &'a str,
}

impl Event {
    /// The `RequestReceived`-stage event of a request (recorded durably
    /// before a mutating request is forwarded).
    pub fn request_received(info: &RequestInfo<'_>) -> Self {
        Self::from_request(info.clone())
    }

    /// [`Event::request_received`], taking the owned parts of `info`
    /// instead of copying them.
    pub fn from_request(info: RequestInfo<'_>) -> Self {
        let mut annotations = Annotations::new();
        annotations.insert(ANN_DECISION.into(), info.decision.decision);
        annotations.insert(ANN_RULE.into(), info.decision.rule);
        if !info.decision.policy_hash.is_empty() {
            annotations.insert(ANN_POLICY_HASH.into(), info.decision.policy_hash);
        }
        if !info.decision.enforced {
            annotations.insert(ANN_ENFORCED.into(), "false".into());
        }
        if !info.pod.is_empty() {
            annotations.insert(ANN_POD.into(), info.pod.to_string());
        }
        if !info.cluster.is_empty() {
            annotations.insert(ANN_CLUSTER.into(), info.cluster.to_string());
        }
        Self {
            kind: Some("Event".into()),
            api_version: Some(API_VERSION.into()),
            level: info.level,
            audit_id: info.audit_id.to_string(),
            stage: Stage::RequestReceived,
            request_uri: redact_request_uri(info.request_uri),
            verb: info.attrs.verb.clone(),
            user: info.user,
            impersonated_user: info.impersonated_user,
            source_ips: info.source_ips,
            user_agent: info.user_agent.to_string(),
            object_ref: ObjectReference::from_attributes(info.attrs),
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: info.received,
            stage_timestamp: info.received,
            annotations,
        }
    }

    /// The same request at a later stage (`ResponseStarted`,
    /// `ResponseComplete`, `Panic`), with its status and stage time.
    pub fn at_stage(&self, stage: Stage, at: MicroTime, status: ResponseStatus) -> Self {
        let mut e = self.clone();
        e.stage = stage;
        e.stage_timestamp = at;
        e.response_status = Some(status);
        e
    }

    /// Attach the (already masked) request body if the level asks for it.
    pub fn with_request_object(mut self, body: Option<serde_json::Value>) -> Self {
        if self.level.includes_request() {
            self.request_object = body;
        }
        self
    }

    /// Attach the (already masked) response body if the level asks for it.
    pub fn with_response_object(mut self, body: Option<serde_json::Value>) -> Self {
        if self.level.includes_response() {
            self.response_object = body;
        }
        self
    }

    /// Record how many values masking replaced (`mcp-warden.io/masked`).
    pub fn with_masked_count(mut self, n: u64) -> Self {
        self.annotations.insert(ANN_MASKED.into(), n.to_string());
        self
    }

    /// One NDJSON line (no trailing newline).
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// This event as an [`EventView`], without its bodies (a recorder
    /// keeps those as raw JSON and attaches them to the view).
    pub fn view(&self) -> EventView<'_> {
        EventView {
            kind: self.kind.as_deref(),
            api_version: self.api_version.as_deref(),
            level: self.level,
            audit_id: &self.audit_id,
            stage: self.stage,
            request_uri: &self.request_uri,
            verb: &self.verb,
            user: &self.user,
            impersonated_user: self.impersonated_user.as_ref(),
            source_ips: &self.source_ips,
            user_agent: &self.user_agent,
            object_ref: self.object_ref.as_ref(),
            response_status: self.response_status.as_ref(),
            request_object: None,
            response_object: None,
            request_received_timestamp: self.request_received_timestamp,
            stage_timestamp: self.stage_timestamp,
            annotations: &self.annotations,
            response_text: None,
        }
    }
}

/// `body` as raw JSON fit for an event: one line (the whitespace between
/// tokens dropped when there is a line break in it, so an NDJSON record
/// stays one line), borrowed when it already is. `None` when `body` is not
/// one valid JSON value. Validating scans the bytes once; nothing is built.
pub fn raw_json(body: &[u8]) -> Option<std::borrow::Cow<'_, RawValue>> {
    let raw: &RawValue = serde_json::from_slice(body).ok()?;
    if !raw.get().as_bytes().contains(&b'\n') {
        return Some(std::borrow::Cow::Borrowed(raw));
    }
    RawValue::from_string(compact_json(raw.get()))
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// Valid JSON without the whitespace between its tokens (a raw line break
/// can only be such whitespace: inside strings it is escaped).
fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_str, mut esc) = (false, false);
    for c in json.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if matches!(c, ' ' | '\t' | '\r' | '\n') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The value written in place of a token-like query parameter.
pub const REDACTED: &str = "REDACTED";

/// `requestURI` as recorded: the value of every token-like query parameter
/// (`access_token`, `id_token`, `token`, anything naming a secret, password
/// or API key) replaced by [`REDACTED`]. Some clients and proxies carry
/// credentials in the query (WebSocket clients that cannot set headers, OAuth
/// redirects); a recording must not become a store of them.
pub fn redact_request_uri(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    let mut out = String::with_capacity(uri.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_token_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Names are compared decoded as the query parser decodes them
/// (`application/x-www-form-urlencoded`, as [`crate::attrs::Query`]), in
/// lower case and with `-` read as `_`, so `Access%5FToken` or `api-key`
/// are caught too. The pairs themselves are kept as received.
fn is_token_param(raw_name: &str) -> bool {
    let name = form_urlencoded::parse(raw_name.as_bytes())
        .next()
        .map(|(k, _)| k.to_ascii_lowercase().replace('-', "_"))
        .unwrap_or_default();
    ["token", "secret", "password", "passwd", "apikey", "api_key"]
        .iter()
        .any(|w| name.contains(w))
        || matches!(name.as_str(), "code" | "jwt" | "sig" | "signature")
}

/// Whether a request is long-running in kube-apiserver's sense (gets a
/// `ResponseStarted` stage): watch, `follow` logs and the connect
/// subresources exec, attach, portforward, proxy.
pub fn is_long_running(attrs: &RequestAttributes, follow: bool) -> bool {
    attrs.verb == "watch"
        || (attrs.subresource == "log" && follow)
        || matches!(
            attrs.subresource.as_str(),
            "exec" | "attach" | "portforward" | "proxy"
        )
}

/// Whether the verb changes state: such requests are recorded durably
/// (`RequestReceived`) before they are forwarded.
pub fn is_mutating(verb: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch" | "head" | "options")
}

/// `ip` as an event's `sourceIPs` entry: the same text as its `Display`.
/// An IPv4 address is written digit by digit: every recorded request has
/// one, and the formatter spent ~1,300 instructions on it (its padding
/// support formats into a buffer first).
pub fn source_ip(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_is_the_display_text() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        // Every octet value in every position (each digit count), and IPv6.
        for o in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(o, 0, 10, 255),
                Ipv4Addr::new(127, o, 1, 9),
                Ipv4Addr::new(99, 100, o, 0),
                Ipv4Addr::new(1, 2, 3, o),
            ] {
                assert_eq!(source_ip(IpAddr::V4(ip)), ip.to_string());
            }
        }
        for ip in [
            Ipv6Addr::LOCALHOST,
            "fd00::1:2".parse().unwrap(),
            "::ffff:10.0.0.1".parse().unwrap(),
        ] {
            assert_eq!(source_ip(IpAddr::V6(ip)), ip.to_string());
        }
    }

    /// The digit-by-digit text is what the formatter wrote, and parses back.
    #[test]
    fn micro_time_text_is_the_formatted_one() {
        let reference = |t: MicroTime| {
            let secs = t.unix_micros.div_euclid(1_000_000);
            let micros = t.unix_micros.rem_euclid(1_000_000);
            let sod = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                sod / 3600,
                (sod % 3600) / 60,
                sod % 60
            )
        };
        let mut samples = vec![
            0,
            -1,
            1,
            999_999,
            1_765_000_000_123_456,
            951_782_400_000_000,
            -62_167_219_200_000_000,
            253_402_300_799_999_999,
        ];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x.rem_euclid(253_402_300_800_000_000));
        }
        for us in samples {
            let t = MicroTime::from_unix_micros(us);
            let text = t.to_string();
            assert_eq!(text, reference(t), "{us}");
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
            assert_eq!(MicroTime::parse(&text).unwrap(), t, "{text}");
        }
        // Outside four-digit years the formatter writes it.
        let far = MicroTime::from_unix_micros(253_402_300_800_000_000);
        assert!(far.fixed_text().is_none());
        assert_eq!(far.to_string(), reference(far));
    }

    #[test]
    fn token_like_query_parameters_are_redacted_from_the_request_uri() {
        assert_eq!(
            redact_request_uri("/api/v1/namespaces/d/pods?access_token=eyJabc&limit=5"),
            "/api/v1/namespaces/d/pods?access_token=REDACTED&limit=5"
        );
        assert_eq!(
            redact_request_uri("/x?Access%5FToken=a&id_token=b&api-key=c&client_secret=d&watch=1"),
            "/x?Access%5FToken=REDACTED&id_token=REDACTED&api-key=REDACTED&client_secret=REDACTED&watch=1"
        );
        for unchanged in [
            "/api/v1/pods",
            "/api/v1/pods?labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dx",
            "/api/v1/namespaces/d/pods/p/exec?command=sh&container=c&stdin=true",
        ] {
            assert_eq!(redact_request_uri(unchanged), unchanged);
        }
    }

    #[test]
    fn micro_time_round_trips() {
        let s = "2026-11-21T23:27:15.123456Z";
        let t = MicroTime::parse(s).unwrap();
        assert_eq!(t.to_string(), s);
        let epoch = MicroTime::parse("1970-01-01T00:00:00Z").unwrap();
        assert_eq!(epoch.unix_micros, 0);
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:00.000000Z");
        let off = MicroTime::parse("2020-02-29T01:00:00.5+01:00").unwrap();
        assert_eq!(off.to_string(), "2020-02-29T00:00:00.500000Z");
        assert_eq!(
            MicroTime::from_unix_micros(1_700_000_000_000_001).to_string(),
            "2023-11-14T22:13:20.000001Z"
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-21 23:27:15Z",
            "2026-11-21T23:27:15",
            "x026-11-21T23:27:15Z",
        ] {
            assert!(MicroTime::parse(bad).is_err(), "{bad}");
        }
    }

    fn attrs() -> RequestAttributes {
        RequestAttributes {
            is_resource_request: true,
            path: "/api/v1/namespaces/default/secrets".into(),
            verb: "create".into(),
            api_prefix: "api".into(),
            api_version: "v1".into(),
            namespace: "default".into(),
            resource: "secrets".into(),
            ..Default::default()
        }
    }

    #[test]
    fn builder_shape() {
        let a = attrs();
        let info = RequestInfo {
            audit_id: "6f2a0a5e-0b8e-4e0c-9a57-1c7f6d1a2b3c",
            request_uri: "/api/v1/namespaces/default/secrets",
            attrs: &a,
            user: Arc::new(UserInfo::new(
                "system:serviceaccount:default:mcp",
                "u1",
                vec!["system:serviceaccounts".into()],
                BTreeMap::new(),
            )),
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: "kubectl/v1.33.0",
            level: Level::Metadata,
            received: MicroTime::from_unix_micros(1_700_000_000_000_000),
            decision: DecisionInfo {
                decision: "allow".into(),
                rule: "r".into(),
                policy_hash: "abc".into(),
                enforced: false,
            },
            pod: "default/mcp-0",
            cluster: "",
        };
        let rr =
            Event::request_received(&info).with_request_object(Some(serde_json::json!({"a": 1})));
        assert!(rr.request_object.is_none(), "Metadata level drops bodies");
        let done = rr.at_stage(
            Stage::ResponseComplete,
            MicroTime::from_unix_micros(1_700_000_000_000_500),
            ResponseStatus::from_code(201),
        );
        let v: serde_json::Value = serde_json::to_value(&done).unwrap();
        assert_eq!(v["stage"], "ResponseComplete");
        assert_eq!(
            v["responseStatus"],
            serde_json::json!({"metadata": {}, "code": 201})
        );
        assert_eq!(
            v["objectRef"],
            serde_json::json!({"resource": "secrets", "namespace": "default", "apiVersion": "v1"})
        );
        assert_eq!(v["requestReceivedTimestamp"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["stageTimestamp"], "2023-11-14T22:13:20.000500Z");
        assert_eq!(v["annotations"][ANN_ENFORCED], "false");
        assert!(v["annotations"].get(ANN_CLUSTER).is_none());
        assert!(is_mutating("create") && !is_mutating("watch"));
        let imp = crate::attrs::Impersonation {
            user: Some("jane".into()),
            groups: vec!["dev".into()],
            uid: None,
            extra: vec![("scopes".into(), "a".into()), ("scopes".into(), "b".into())],
        };
        let u = UserInfo::from_impersonation(&imp).unwrap();
        assert_eq!(u.extra["scopes"], vec!["a".to_string(), "b".to_string()]);
        assert!(UserInfo::from_impersonation(&crate::attrs::Impersonation::default()).is_none());
        let mut w = attrs();
        w.verb = "watch".into();
        assert!(is_long_running(&w, false));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod view_tests {
    use super::*;

    /// A view with raw bodies writes the same bytes as the owned event
    /// with the same bodies as values, for every event of the fixture.
    #[test]
    fn a_view_writes_what_the_event_writes() {
        let text = include_str!("../../tests/fixtures/audit/eventlist-k8s-docs.json");
        let list: EventList = serde_json::from_str(text).unwrap();
        let mut with_bodies = list.items[0].clone();
        with_bodies.level = Level::RequestResponse;
        with_bodies.request_object =
            Some(serde_json::json!({"kind": "Pod", "spec": {"x": [1, 2.5, null]}}));
        with_bodies.response_object = Some(serde_json::json!({"kind": "Status", "code": 409}));
        with_bodies.impersonated_user = Some(UserInfo::new(
            "jane",
            "",
            vec!["dev".into()],
            BTreeMap::new(),
        ));
        for e in list.items.iter().chain([&with_bodies]) {
            let req = e
                .request_object
                .as_ref()
                .map(|v| serde_json::value::to_raw_value(v).unwrap());
            let resp = e
                .response_object
                .as_ref()
                .map(|v| serde_json::value::to_raw_value(v).unwrap());
            let view = e
                .view()
                .with_request_object(req.as_deref())
                .with_response_object(resp.as_deref());
            assert_eq!(
                String::from_utf8(view.to_json_vec().unwrap()).unwrap(),
                e.to_json_line().unwrap()
            );
            let status = ResponseStatus::from_code(200);
            let later = view.at_stage(
                Stage::ResponseComplete,
                MicroTime::from_unix_micros(7),
                &status,
            );
            let owned = e.at_stage(
                Stage::ResponseComplete,
                MicroTime::from_unix_micros(7),
                status.clone(),
            );
            assert_eq!(
                String::from_utf8(later.to_json_vec().unwrap()).unwrap(),
                owned.to_json_line().unwrap()
            );
        }
        // The level decides which bodies a view keeps, as for the event.
        let mut meta = list.items[0].clone();
        meta.level = Level::Request;
        let raw = serde_json::value::to_raw_value(&1).unwrap();
        let v = meta
            .view()
            .with_request_object(Some(&raw))
            .with_response_object(Some(&raw));
        assert!(v.request_object.is_some() && v.response_object.is_none());
    }

    /// A body attached as vouched-for text is written exactly as the same
    /// body attached checked, with and without annotations and a request
    /// body, and the level still decides whether it is kept.
    #[test]
    fn response_text_writes_what_a_checked_body_writes() {
        let text = include_str!("../../tests/fixtures/audit/eventlist-k8s-docs.json");
        let list: EventList = serde_json::from_str(text).unwrap();
        let body = r#"{"kind":"Pod","metadata":{"name":"p","annotations":{"requestReceivedTimestamp":"x"}},"s":"a,\"b\"}"}"#;
        let raw = RawValue::from_string(body.to_string()).unwrap();
        let req = serde_json::value::to_raw_value(&serde_json::json!({"kind": "Pod"})).unwrap();
        let no_annotations = BTreeMap::new();
        for e in &list.items {
            let mut e = e.clone();
            e.level = Level::RequestResponse;
            for annotations in [&e.annotations, &no_annotations] {
                let mut view = e.view();
                view.annotations = annotations;
                let status = ResponseStatus::from_code(200);
                let view = view.with_request_object(Some(&req)).at_stage(
                    Stage::ResponseComplete,
                    MicroTime::from_unix_micros(9),
                    &status,
                );
                let checked = view.with_response_object(Some(&raw)).to_json_vec().unwrap();
                let vouched = view
                    .with_response_object(None)
                    .with_response_json_text(Some(body));
                assert!(vouched.response_object.is_none());
                assert_eq!(
                    String::from_utf8(vouched.to_json_vec().unwrap()).unwrap(),
                    String::from_utf8(checked).unwrap()
                );
            }
        }
        let mut meta = list.items[0].clone();
        meta.level = Level::Request;
        let v = meta.view().with_response_json_text(Some(body));
        assert!(v.response_text.is_none());
        assert!(
            !String::from_utf8(v.to_json_vec().unwrap())
                .unwrap()
                .contains("responseObject")
        );
    }

    /// Text with what JSON must escape, what it must not, and non-ASCII.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                6 => proptest::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => Just('\n'),
                1 => Just('\u{1}'),
                1 => Just('\u{1f}'),
                1 => Just('\u{7f}'),
                1 => Just('/'),
                1 => Just('é'),
                1 => Just('😀'),
                1 => any::<char>(),
            ],
            0..6,
        )
        .prop_map(String::from_iter)
    }

    fn user_info() -> impl proptest::strategy::Strategy<Value = UserInfo> {
        use proptest::prelude::*;
        (
            text(),
            text(),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::btree_map(text(), proptest::collection::vec(text(), 0..3), 0..3),
        )
            .prop_map(|(username, uid, groups, extra)| UserInfo {
                username,
                uid,
                groups,
                extra,
            })
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(serde_json::Value::Null),
            text().prop_map(serde_json::Value::String),
            any::<i64>().prop_map(serde_json::Value::from),
            (text(), text()).prop_map(|(k, v)| serde_json::json!({ k: [v, 1, true] })),
        ]
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        let status = (
            (proptest::option::of(text()), proptest::option::of(text())),
            (text(), text(), text(), proptest::option::of(any::<i64>())),
            (text(), text(), text()),
            (proptest::option::of(json_value()), any::<i32>()),
        )
            .prop_map(
                |(
                    (kind, api_version),
                    (sl, rv, ct, rem),
                    (status, message, reason),
                    (details, code),
                )| {
                    ResponseStatus {
                        kind,
                        api_version,
                        metadata: ListMeta {
                            self_link: sl,
                            resource_version: rv,
                            continue_token: ct,
                            remaining_item_count: rem,
                        },
                        status,
                        message,
                        reason,
                        details,
                        code,
                    }
                },
            );
        let object_ref = (
            (text(), text(), text(), text()),
            (text(), text(), text(), text()),
        )
            .prop_map(
                |(
                    (resource, namespace, name, uid),
                    (api_group, api_version, resource_version, subresource),
                )| {
                    ObjectReference {
                        resource,
                        namespace,
                        name,
                        uid,
                        api_group,
                        api_version,
                        resource_version,
                        subresource,
                    }
                },
            );
        let level = prop_oneof![
            Just(Level::None),
            Just(Level::Metadata),
            Just(Level::Request),
            Just(Level::RequestResponse)
        ];
        let stage = prop_oneof![
            Just(Stage::RequestReceived),
            Just(Stage::ResponseStarted),
            Just(Stage::ResponseComplete),
            Just(Stage::Panic)
        ];
        (
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                level,
                stage,
            ),
            (
                text(),
                text(),
                text(),
                user_info(),
                proptest::option::of(user_info()),
            ),
            (proptest::collection::vec(text(), 0..3), text()),
            (
                proptest::option::of(object_ref),
                proptest::option::of(status),
            ),
            (
                any::<i64>(),
                prop_oneof![any::<i64>(), 0i64..253_402_300_799_999_999],
            ),
            proptest::collection::btree_map(text(), text(), 0..3),
        )
            .prop_map(
                |(
                    (kind, api_version, level, stage),
                    (audit_id, request_uri, verb, user, impersonated_user),
                    (source_ips, user_agent),
                    (object_ref, response_status),
                    (t0, t1),
                    annotations,
                )| Event {
                    kind: kind.map(Cow::Owned),
                    api_version: api_version.map(Cow::Owned),
                    level,
                    audit_id,
                    stage,
                    request_uri,
                    verb,
                    user: Arc::new(user),
                    impersonated_user,
                    source_ips,
                    user_agent,
                    object_ref,
                    response_status,
                    request_object: None,
                    response_object: None,
                    request_received_timestamp: MicroTime::from_unix_micros(t0),
                    stage_timestamp: MicroTime::from_unix_micros(t1),
                    annotations: annotations
                        .into_iter()
                        .map(|(k, v)| (Cow::Owned(k), v))
                        .collect(),
                },
            )
    }

    proptest::proptest! {
        /// The direct writer writes, byte for byte, what the derived
        /// `Serialize` writes for the same view (vouched-for text written as
        /// the checked body it stands for), whatever the strings hold.
        #[test]
        fn the_writer_writes_what_serde_writes(
            e in event(),
            request in proptest::option::of(json_value()),
            response in proptest::option::of((json_value(), proptest::bool::ANY)),
        ) {
            let req = request.map(|v| serde_json::value::to_raw_value(&v).unwrap());
            let resp = response
                .as_ref()
                .map(|(v, text)| (serde_json::value::to_raw_value(v).unwrap(), *text));
            let mut view = e.view();
            view.request_object = req.as_deref();
            match &resp {
                Some((raw, true)) => view.response_text = Some(raw.get()),
                Some((raw, false)) => view.response_object = Some(raw),
                None => {}
            }
            let mut reference = view;
            if let Some((raw, true)) = &resp {
                reference.response_object = Some(raw);
                reference.response_text = None;
            }
            let want = String::from_utf8(serde_json::to_vec(&reference).unwrap()).unwrap();
            let got = String::from_utf8(view.to_json_vec().unwrap()).unwrap();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn one_line_json_text_checks_the_framing_only() {
        assert_eq!(one_line_json_text(b" {\"a\":1}\n"), Some("{\"a\":1}"));
        assert_eq!(one_line_json_text(b"[1]"), Some("[1]"));
        for not in [&b""[..], b" \n\t", b"{\"a\":\n1}", b"\"\xff\""] {
            assert!(one_line_json_text(not).is_none(), "{not:?}");
        }
    }

    #[test]
    fn raw_json_is_one_line_and_only_valid_json() {
        let compact = br#"{"a":[1,{"b":"x y"}]}"#;
        assert!(matches!(
            raw_json(compact),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(raw_json(b" {\"a\": 1}\n").unwrap().get(), "{\"a\": 1}");
        let pretty = b"{\n  \"a\": [\n    1, \"x \\\" \\n y\"\n  ],\r\n  \"b\" : { }\n}\n";
        let raw = raw_json(pretty).unwrap();
        assert_eq!(raw.get(), r#"{"a":[1,"x \" \n y"],"b":{}}"#);
        let a: serde_json::Value = serde_json::from_slice(pretty).unwrap();
        let b: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(a, b);
        for bad in [&b""[..], b"{", b"{\"a\":1} x", b"\xff", b"[1,]"] {
            assert!(raw_json(bad).is_none(), "{bad:?}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod fixture_tests {
    use super::*;

    /// The fixture is an `EventList` in kube-apiserver's webhook shape (Go
    /// field order); decoding and re-encoding must give it back byte for byte
    /// (after normalizing whitespace), which checks every field and its order.
    #[test]
    fn k8s_eventlist_fixture_round_trips_field_by_field() {
        let text = include_str!("../../tests/fixtures/audit/eventlist-k8s-docs.json");
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        let list: EventList = serde_json::from_str(text).unwrap();
        assert_eq!(list.items.len(), 5);
        assert_eq!(list.items[2].response_status.as_ref().unwrap().code, 403);
        assert_eq!(
            list.items[1].object_ref.as_ref().unwrap().subresource,
            "scale"
        );
        assert_eq!(list.items[3].stage, Stage::ResponseStarted);
        let back = serde_json::to_value(&list).unwrap();
        let (o_items, b_items) = (
            original["items"].as_array().unwrap(),
            back["items"].as_array().unwrap(),
        );
        for (o, b) in o_items.iter().zip(b_items) {
            let (o, b) = (o.as_object().unwrap(), b.as_object().unwrap());
            assert_eq!(
                o.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "field order"
            );
            for (k, v) in o {
                assert_eq!(Some(v), b.get(k), "field {k}");
            }
        }
        assert_eq!(
            serde_json::to_string(&original).unwrap(),
            serde_json::to_string(&list).unwrap()
        );
    }
}
