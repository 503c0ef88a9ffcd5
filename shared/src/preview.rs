//! What an approver sees before saying yes: the effect of a held request, as
//! the server's dry run (`dryRun=All`) showed it.
//!
//! The sidecar sends the held request once more with `dryRun=All`, reads the
//! live object, and keeps the result in the AccessRequest's
//! `status.preview` ([`Preview`]). This module is the pure part:
//! - [`diff`]: two JSON objects (the live object and the dry-run result) to
//!   a list of leaf [`FieldChange`]s, `path: old → new`, without metadata
//!   noise ([`is_noise`]: resourceVersion, managedFields, generation,
//!   timestamps, uid);
//! - masking: every value is shown only where the policy's masker left it
//!   as it is; a value the masker changes (a Secret's `data` value, a
//!   detected key) is [`MASKED`], so an approver sees that a key changed,
//!   never its value. The caller masks copies of both objects with the same
//!   masker and passes the four values;
//! - [`summary`]: the one line `pending` and the notification show
//!   (`3 fields: spec.replicas 3 → 0, ...`, bounded);
//! - [`render`]: the readable diff `kubectl mcp-warden show` prints.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::status::{Reason, Status, StatusDetails};

/// How a value the masker hides is shown.
pub const MASKED: &str = "(masked)";
/// How an absent value is shown.
pub const ABSENT: &str = "(none)";
/// At most this many changes are kept in `status.preview.changes`; the rest
/// are counted in `omitted`.
pub const MAX_CHANGES: usize = 100;
/// A value is shown with at most this many characters.
pub const MAX_VALUE_CHARS: usize = 80;
/// The summary line is at most this many characters (plus `, ...`).
pub const MAX_SUMMARY_CHARS: usize = 160;

/// What the preview shows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreviewKind {
    /// An update, patch or apply: the live object against the dry-run result.
    #[default]
    Change,
    /// A create: the fields the new object would have.
    Create,
    /// A delete: what would be deleted.
    Delete,
}

/// One field that would change. `old`/`new` are rendered values (JSON,
/// [`MASKED`], or absent).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct FieldChange {
    /// `spec.replicas`, `data.password`, `metadata.labels["app.kubernetes.io/name"]`,
    /// `spec.containers[0].image`.
    pub path: String,
    /// The value before; absent when the field is new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The value after; absent when the field goes away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

impl FieldChange {
    /// `spec.replicas 3 → 0`.
    pub fn line(&self) -> String {
        format!(
            "{} {} → {}",
            self.path,
            self.old.as_deref().unwrap_or(ABSENT),
            self.new.as_deref().unwrap_or(ABSENT)
        )
    }
}

/// `status.preview` of an AccessRequest: the server's dry-run answer and
/// what it would change.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Preview {
    /// HTTP code of the server's answer to the dry run (200, 201, ...).
    pub code: u16,
    /// What the changes show.
    pub kind: PreviewKind,
    /// The object: `Deployment prod/web` (kind, namespace/name).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// `metadata.resourceVersion` of the live object the preview was made
    /// against; the approved request goes through only while it is current.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// The fields that would change (at most [`MAX_CHANGES`]).
    pub changes: Vec<FieldChange>,
    /// Changes left out past [`MAX_CHANGES`].
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted: u32,
    /// One line: `3 fields: spec.replicas 3 → 0, ...`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// Why part of the preview is missing (the live object was not readable).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Preview {
    /// A preview with `changes` (cut at [`MAX_CHANGES`]) and its summary.
    pub fn new(
        kind: PreviewKind,
        code: u16,
        object: String,
        mut changes: Vec<FieldChange>,
    ) -> Self {
        let total = changes.len();
        changes.truncate(MAX_CHANGES);
        let omitted = u32::try_from(total - changes.len()).unwrap_or(u32::MAX);
        let mut p = Preview {
            code,
            kind,
            object,
            changes,
            omitted,
            ..Default::default()
        };
        p.summary = summary(&p);
        p
    }
}

/// Metadata that changes on every write and says nothing to an approver.
pub fn is_noise(path: &[Step<'_>]) -> bool {
    match path {
        [Step::Key("metadata"), Step::Key(k), ..] => matches!(
            *k,
            "resourceVersion"
                | "managedFields"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "uid"
                | "selfLink"
        ),
        _ => false,
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// An object key.
    Key(&'a str),
    /// An array index.
    Index(usize),
}

/// `spec.containers[0].image`; keys that are not plain identifiers are
/// quoted: `metadata.labels["app.kubernetes.io/name"]`.
pub fn path_string(path: &[Step<'_>]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Index(i) => {
                let _ = write!(s, "[{i}]");
            }
            Step::Key(k) => {
                let plain = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                } else {
                    s.push('[');
                    s.push_str(&Value::String((*k).to_string()).to_string());
                    s.push(']');
                }
            }
        }
    }
    s
}

/// A value as the preview shows it: compact JSON, cut at
/// [`MAX_VALUE_CHARS`].
pub fn render_value(v: &Value) -> String {
    cut(&v.to_string(), MAX_VALUE_CHARS)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// The value at `path` in `v`, if any.
fn at<'v>(v: &'v Value, path: &[Step<'_>]) -> Option<&'v Value> {
    let mut cur = v;
    for step in path {
        cur = match (step, cur) {
            (Step::Key(k), Value::Object(m)) => m.get(*k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// `raw` as shown, given its masked twin at the same path: the value when
/// the masker left it alone, [`MASKED`] otherwise.
fn shown(raw: &Value, masked: Option<&Value>) -> String {
    if masked == Some(raw) {
        render_value(raw)
    } else {
        MASKED.to_string()
    }
}

/// `v` with the zero values its kind's Go type leaves out put back, where
/// absence means zero: an `autoscaling/v1` `Scale`'s `spec.replicas` is a
/// non-pointer `int32` with `omitempty`, so a scale to 0 comes back without
/// it (unlike a Deployment's `spec.replicas`, a pointer whose absence means
/// the default, 1).
pub fn with_zero_values(v: &Value) -> Value {
    let mut v = v.clone();
    let is_scale = v.get("kind").and_then(Value::as_str) == Some("Scale")
        && v.get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a.starts_with("autoscaling/"));
    if is_scale
        && let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
        && !spec.contains_key("replicas")
    {
        spec.insert("replicas".into(), Value::from(0));
    }
    v
}

/// The leaf changes from `old` to `new` (the live object and the dry-run
/// result), values shown only where `masked_old`/`masked_new` (the same
/// objects through the policy's masker) hold them unchanged. Objects are
/// compared key by key, arrays index by index; metadata noise
/// ([`is_noise`]) is skipped. Sorted by path.
pub fn diff(old: &Value, new: &Value, masked_old: &Value, masked_new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk(Some(old), Some(new), &mut path, &mut |path, o, n| {
        out.push(FieldChange {
            path: path_string(path),
            old: o.map(|o| shown(o, at(masked_old, path))),
            new: n.map(|n| shown(n, at(masked_new, path))),
        })
    });
    out
}

/// The fields a create would set: [`diff`] from nothing.
pub fn fields_set(new: &Value, masked_new: &Value) -> Vec<FieldChange> {
    let empty = Value::Object(Map::new());
    diff(&empty, new, &empty, masked_new)
}

/// Called with each changed leaf: its path, the old and the new value.
type Emit<'e, 'v> = dyn FnMut(&[Step<'v>], Option<&'v Value>, Option<&'v Value>) + 'e;

fn walk<'v>(
    old: Option<&'v Value>,
    new: Option<&'v Value>,
    path: &mut Vec<Step<'v>>,
    emit: &mut Emit<'_, 'v>,
) {
    if is_noise(path) || old == new {
        return;
    }
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&'v String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                path.push(Step::Key(k));
                walk(a.get(k), b.get(k), path, emit);
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                path.push(Step::Index(i));
                walk(a.get(i), b.get(i), path, emit);
                path.pop();
            }
        }
        // A whole object or array appears or goes: its leaves, so that each
        // is masked on its own.
        (None, Some(v @ (Value::Object(_) | Value::Array(_)))) if !is_empty_container(v) => {
            each_child(v, path, &mut |path, c| walk(None, Some(c), path, emit));
        }
        (Some(v @ (Value::Object(_) | Value::Array(_))), None) if !is_empty_container(v) => {
            each_child(v, path, &mut |path, c| walk(Some(c), None, path, emit));
        }
        (o, n) => emit(path, o, n),
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn each_child<'v>(
    v: &'v Value,
    path: &mut Vec<Step<'v>>,
    f: &mut dyn FnMut(&mut Vec<Step<'v>>, &'v Value),
) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                path.push(Step::Key(k));
                f(path, c);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                path.push(Step::Index(i));
                f(path, c);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The string values of `raw` that `masked` (the same value through the
/// masker) does not show as they are: what must never appear in anything
/// derived from `raw` (a refusal's message, a log line).
pub fn hidden_strings(raw: &Value, masked: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    collect_hidden(raw, masked, &mut path, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_hidden<'v>(
    raw: &'v Value,
    masked: &Value,
    path: &mut Vec<Step<'v>>,
    out: &mut Vec<String>,
) {
    match raw {
        Value::String(s) if !s.is_empty() && at(masked, path) != Some(raw) => {
            out.push(s.clone());
        }
        Value::Object(_) | Value::Array(_) => {
            each_child(raw, path, &mut |path, c| {
                collect_hidden(c, masked, path, out)
            });
        }
        _ => {}
    }
}

/// The one line shown by `pending` and the notification:
/// `3 fields: spec.replicas 3 → 0, data.password (masked) → (masked), ...`;
/// a delete is `deletes Deployment prod/web`. Cut after
/// [`MAX_SUMMARY_CHARS`] with `, ...`.
pub fn summary(p: &Preview) -> String {
    if p.kind == PreviewKind::Delete {
        return if p.object.is_empty() {
            "deletes the object".to_string()
        } else {
            format!("deletes {}", p.object)
        };
    }
    let total = p.changes.len() + p.omitted as usize;
    if total == 0 {
        return "no field changes".to_string();
    }
    let noun = if total == 1 { "field" } else { "fields" };
    let verb = if p.kind == PreviewKind::Create {
        " set"
    } else {
        ""
    };
    let mut s = format!("{total} {noun}{verb}: ");
    let head = s.len();
    for (i, c) in p.changes.iter().enumerate() {
        let line = c.line();
        if i > 0 && s.len() - head + line.len() > MAX_SUMMARY_CHARS {
            s.push_str(", ...");
            return s;
        }
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&cut(&line, MAX_SUMMARY_CHARS));
    }
    if p.omitted > 0 {
        s.push_str(", ...");
    }
    s
}

/// The preview as `kubectl mcp-warden show` prints it: a header with the
/// dry run's answer, then one line per field (`~` changed, `+` added, `-`
/// removed).
pub fn render(p: &Preview) -> String {
    let mut s = String::new();
    let what = match p.kind {
        PreviewKind::Change => "changes",
        PreviewKind::Create => "creates",
        PreviewKind::Delete => "deletes",
    };
    let _ = write!(s, "Preview (dry run answered HTTP {}): {what}", p.code);
    if !p.object.is_empty() {
        let _ = write!(s, " {}", p.object);
    }
    if !p.resource_version.is_empty() {
        let _ = write!(s, " at resourceVersion {}", p.resource_version);
    }
    s.push('\n');
    if !p.note.is_empty() {
        let _ = writeln!(s, "  note: {}", p.note);
    }
    if p.kind != PreviewKind::Delete && p.changes.is_empty() {
        s.push_str("  (no field changes)\n");
    }
    for c in &p.changes {
        let (mark, text) = match (&c.old, &c.new) {
            (None, Some(n)) => ('+', format!("{}: {n}", c.path)),
            (Some(o), None) => ('-', format!("{}: {o}", c.path)),
            _ => (
                '~',
                format!(
                    "{}: {} → {}",
                    c.path,
                    c.old.as_deref().unwrap_or(ABSENT),
                    c.new.as_deref().unwrap_or(ABSENT)
                ),
            ),
        };
        let _ = writeln!(s, "  {mark} {text}");
    }
    if p.omitted > 0 {
        let _ = writeln!(s, "  ... and {} more", p.omitted);
    }
    s
}

/// `Deployment prod/web` from an object's `kind` and metadata; empty when
/// it names nothing.
pub fn object_name(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let target = match (ns, name) {
        (_, "") => String::new(),
        ("", n) => n.to_string(),
        (ns, n) => format!("{ns}/{n}"),
    };
    match (kind, target.as_str()) {
        ("", t) => t.to_string(),
        (k, "") => k.to_string(),
        (k, t) => format!("{k} {t}"),
    }
}

/// `metadata.resourceVersion` of an object, or empty.
pub fn resource_version(v: &Value) -> String {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The server's refusal of the dry run as the app gets it: its `Status`
/// (reason, message, details, code) read from the answer `body` with HTTP
/// `code`; a body that is not a Status keeps the code with a reason from it.
pub fn refusal_status(code: u16, body: &Value) -> Status {
    let by_code = || match code {
        400 => Reason::BadRequest,
        401 => Reason::Unauthorized,
        403 => Reason::Forbidden,
        404 => Reason::NotFound,
        405 => Reason::MethodNotAllowed,
        409 => Reason::Conflict,
        410 => Reason::Gone,
        413 => Reason::RequestEntityTooLarge,
        415 => Reason::UnsupportedMediaType,
        422 => Reason::Invalid,
        429 => Reason::TooManyRequests,
        503 => Reason::ServiceUnavailable,
        504 => Reason::Timeout,
        _ => Reason::InternalError,
    };
    let reason = body
        .get("reason")
        .cloned()
        .and_then(|r| serde_json::from_value::<Reason>(r).ok())
        .unwrap_or_else(by_code);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the server refused the request (HTTP {code})"));
    let mut status = Status::new(reason, message);
    status.details = body
        .get("details")
        .cloned()
        .and_then(|d| serde_json::from_value::<StatusDetails>(d).ok());
    if reason.code() != code {
        status.code = Some(code);
    }
    status
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same(v: &Value) -> (Value, Value) {
        (v.clone(), v.clone())
    }

    fn deployment(replicas: u64, rv: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod", "resourceVersion": rv, "generation": 4,
                "managedFields": [{"manager": "kubectl"}], "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}},
            "status": {"replicas": 3}})
    }

    #[test]
    fn a_scale_to_zero_is_one_field_and_metadata_noise_is_ignored() {
        let old = deployment(3, "10");
        let mut new = deployment(0, "11");
        new["metadata"]["generation"] = json!(5);
        new["metadata"]["managedFields"] = json!([{"manager": "kubectl-scale"}]);
        let (mo, mn) = (old.clone(), new.clone());
        let changes = diff(&old, &new, &mo, &mn);
        assert_eq!(
            changes,
            vec![FieldChange {
                path: "spec.replicas".into(),
                old: Some("3".into()),
                new: Some("0".into())
            }]
        );
        let p = Preview::new(PreviewKind::Change, 200, object_name(&old), changes);
        assert_eq!(p.summary, "1 field: spec.replicas 3 → 0");
        assert_eq!(p.object, "Deployment prod/web");
        let text = render(&p);
        assert!(text.contains("~ spec.replicas: 3 → 0"), "{text}");
        assert!(text.contains("HTTP 200"), "{text}");
    }

    #[test]
    fn a_scale_to_zero_has_no_replicas_and_means_zero() {
        let live = json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "resourceVersion": "7"}, "spec": {"replicas": 3}, "status": {"replicas": 3}});
        let dry = json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "resourceVersion": "7"}, "spec": {}, "status": {"replicas": 3}});
        let (a, b) = (with_zero_values(&live), with_zero_values(&dry));
        let lines: Vec<String> = diff(&a, &b, &a, &b).iter().map(FieldChange::line).collect();
        assert_eq!(lines, vec!["spec.replicas 3 → 0"]);
        // Elsewhere absence is not zero.
        let d = json!({"kind": "Deployment", "apiVersion": "apps/v1", "spec": {}});
        assert_eq!(with_zero_values(&d), d);
    }

    #[test]
    fn paths_name_array_elements_and_quote_odd_keys() {
        let old = deployment(3, "1");
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        new["metadata"]["labels"]["app.kubernetes.io/name"] = json!("web2");
        new["metadata"]["labels"]["tier"] = json!("front");
        let changes = diff(&old, &new, &old, &new);
        let lines: Vec<String> = changes.iter().map(FieldChange::line).collect();
        assert_eq!(
            lines,
            vec![
                r#"metadata.labels["app.kubernetes.io/name"] "web" → "web2""#,
                r#"metadata.labels.tier (none) → "front""#,
                r#"spec.template.spec.containers[0].image "nginx:1.25" → "nginx:1.27""#,
            ]
        );
        let p = Preview::new(PreviewKind::Change, 200, String::new(), changes);
        let text = render(&p);
        assert!(text.contains("+ metadata.labels.tier: \"front\""), "{text}");
    }

    #[test]
    fn a_masked_value_shows_that_the_key_changed_never_the_value() {
        let old = json!({"kind": "Secret", "metadata": {"name": "db"},
            "data": {"password": "b2xkLXB3", "user": "YWRtaW4="}});
        let new = json!({"kind": "Secret", "metadata": {"name": "db"},
            "data": {"password": "bmV3LXNlY3JldA==", "user": "YWRtaW4=", "token": "dG9r"}});
        // What a masker does to Secret data: every value replaced.
        let mask = |v: &Value| {
            let mut m = v.clone();
            for (_, x) in m["data"].as_object_mut().unwrap() {
                *x = json!("KioqKio=");
            }
            m
        };
        let changes = diff(&old, &new, &mask(&old), &mask(&new));
        assert_eq!(
            changes,
            vec![
                FieldChange {
                    path: "data.password".into(),
                    old: Some(MASKED.into()),
                    new: Some(MASKED.into())
                },
                FieldChange {
                    path: "data.token".into(),
                    old: None,
                    new: Some(MASKED.into())
                },
            ]
        );
        let p = Preview::new(PreviewKind::Change, 200, object_name(&new), changes);
        let all = format!(
            "{}{}{}",
            p.summary,
            render(&p),
            serde_json::to_string(&p).unwrap()
        );
        for secret in ["bmV3LXNlY3JldA==", "b2xkLXB3", "dG9r", "KioqKio="] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert!(
            p.summary
                .starts_with("2 fields: data.password (masked) → (masked)"),
            "{}",
            p.summary
        );
        assert_eq!(
            hidden_strings(&new, &mask(&new)),
            vec!["YWRtaW4=", "bmV3LXNlY3JldA==", "dG9r"]
        );
    }

    #[test]
    fn a_create_lists_the_fields_set_and_a_delete_names_the_object() {
        let obj = json!({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n", "uid": "u"},
            "data": {"k": "v"}});
        let (o, m) = same(&obj);
        let set = fields_set(&o, &m);
        let lines: Vec<String> = set.iter().map(FieldChange::line).collect();
        assert_eq!(
            lines,
            vec![
                r#"data.k (none) → "v""#,
                r#"kind (none) → "ConfigMap""#,
                r#"metadata.name (none) → "c""#,
                r#"metadata.namespace (none) → "n""#,
            ]
        );
        let p = Preview::new(PreviewKind::Create, 201, object_name(&obj), set);
        assert!(
            p.summary.starts_with("4 fields set: data.k"),
            "{}",
            p.summary
        );
        let d = Preview::new(PreviewKind::Delete, 200, object_name(&obj), Vec::new());
        assert_eq!(d.summary, "deletes ConfigMap n/c");
        assert!(
            render(&d).contains("deletes ConfigMap n/c"),
            "{}",
            render(&d)
        );
        assert_eq!(
            resource_version(&json!({"metadata": {"resourceVersion": "9"}})),
            "9"
        );
        assert_eq!(resource_version(&json!({})), "");
    }

    #[test]
    fn long_previews_are_cut() {
        let old = json!({"data": {}});
        let mut new = json!({"data": {}});
        for i in 0..(MAX_CHANGES + 7) {
            new["data"][format!("key{i:04}")] = json!("x".repeat(200));
        }
        let changes = diff(&old, &new, &old, &new);
        assert_eq!(changes.len(), MAX_CHANGES + 7);
        assert!(changes[0].new.as_ref().unwrap().ends_with('…'));
        assert!(changes[0].new.as_ref().unwrap().chars().count() <= MAX_VALUE_CHARS + 1);
        let p = Preview::new(PreviewKind::Change, 200, String::new(), changes);
        assert_eq!(p.changes.len(), MAX_CHANGES);
        assert_eq!(p.omitted, 7);
        assert!(
            p.summary.starts_with("107 fields: data.key0000"),
            "{}",
            p.summary
        );
        assert!(p.summary.ends_with(", ..."), "{}", p.summary);
        assert!(
            p.summary.chars().count() < MAX_SUMMARY_CHARS * 2,
            "{}",
            p.summary
        );
        assert!(render(&p).contains("... and 7 more"));
    }

    #[test]
    fn nothing_changed_and_arrays_that_shrink() {
        let a = json!({"spec": {"ports": [1, 2, 3]}});
        assert!(diff(&a, &a, &a, &a).is_empty());
        let b = json!({"spec": {"ports": [1, 3]}});
        let lines: Vec<String> = diff(&a, &b, &a, &b).iter().map(FieldChange::line).collect();
        assert_eq!(
            lines,
            vec!["spec.ports[1] 2 → 3", "spec.ports[2] 3 → (none)"]
        );
        let p = Preview::new(PreviewKind::Change, 200, String::new(), Vec::new());
        assert_eq!(p.summary, "no field changes");
        assert!(render(&p).contains("(no field changes)"));
    }

    #[test]
    fn the_servers_refusal_is_kept() {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "deployments.apps \"web\" is forbidden: User \"x\" cannot delete resource",
            "reason": "Forbidden", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 403});
        let s = refusal_status(403, &body);
        assert_eq!(s.code(), 403);
        assert_eq!(s.reason, Reason::Forbidden);
        assert_eq!(s.details.as_ref().unwrap().name, "web");
        assert!(
            s.message
                .starts_with("deployments.apps \"web\" is forbidden")
        );
        let odd = refusal_status(422, &json!({"reason": "SomethingNew"}));
        assert_eq!(odd.reason, Reason::Invalid);
        assert_eq!(odd.code(), 422);
        let teapot = refusal_status(418, &json!("not a status"));
        assert_eq!(teapot.code(), 418);
        assert!(teapot.message.contains("HTTP 418"));
    }

    #[test]
    fn serializes_as_the_crd_schema_expects() {
        let p = Preview::new(
            PreviewKind::Change,
            200,
            "Deployment prod/web".into(),
            vec![FieldChange {
                path: "spec.replicas".into(),
                old: Some("3".into()),
                new: Some("0".into()),
            }],
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            json!({"code": 200, "kind": "Change", "object": "Deployment prod/web",
                "changes": [{"path": "spec.replicas", "old": "3", "new": "0"}],
                "summary": "1 field: spec.replicas 3 → 0"})
        );
        let back: Preview = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        let lenient: Preview = serde_json::from_value(json!({"code": 200})).unwrap();
        assert!(lenient.changes.is_empty());
    }
}
