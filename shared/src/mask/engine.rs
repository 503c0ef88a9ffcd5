//! The object walker: decides the shape of a JSON value (object, list, watch
//! event, Table, Status) and applies the rules and detectors to it.
//!
//! Invariant the rest of the module relies on: every change to a value is
//! counted, so a count of 0 means the value is unchanged and its original
//! bytes may be passed on verbatim.
//!
//! Which rules apply to an object: those of the request's resource *and*
//! those of the object's built-in kind (the stricter of the two: a
//! `ConfigMap` on a secrets path is masked as a Secret too, and a `Secret`
//! is masked as a Secret wherever it appears).
//!
//! Scrub units: a single object, each list item, each watch event's object,
//! each Table row (its object and its cells), a JSON Patch array. The clear
//! values masked in a unit are remembered and every other occurrence of them
//! in the same unit is scrubbed ([`super::scrub`]); the identity of the
//! object (`apiVersion`, `kind`, `metadata.name`, `namespace`, `uid`,
//! `resourceVersion`, timestamps) is never rewritten. Units are small (one
//! object), so the streaming masker stays bounded by the largest item.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::scrub::{ScrubSet, WINDOW};
use super::{LAST_APPLIED_ANNOTATION, MARKER, MARKER_BASE64, MaskContext, Masker, Seg};

/// Clear values masked in one scrub unit (decoded bytes).
type Found = Vec<Vec<u8>>;

/// Identity fields of an object's `metadata`, never scrubbed.
pub(super) const IDENTITY_METADATA: [&str; 8] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "selfLink",
    "generation",
];

/// Where pod specs live in the objects that carry one.
const POD_SPEC_PATHS: [&[&str]; 4] = [
    &["spec"],
    &["spec", "template", "spec"],
    &["template", "spec"],
    &["spec", "jobTemplate", "spec", "template", "spec"],
];

pub(super) const CONTAINER_LISTS: [&str; 3] =
    ["containers", "initContainers", "ephemeralContainers"];

/// Maps whose keys the `keys` regex is matched against.
pub(super) const KEYED_MAPS: [&str; 3] = ["data", "binaryData", "stringData"];

/// Field lookups by a scan of the keys. The maps of an object are looked up
/// a fixed number of times each and are mostly small: comparing their keys
/// costs less than hashing the key (`preserve_order` maps hash with SipHash).
/// Keys are unique, so the first match is the only one, as for `get`.
trait Field {
    fn field(&self, key: &str) -> Option<&Value>;
    fn field_mut(&mut self, key: &str) -> Option<&mut Value>;
    fn has(&self, key: &str) -> bool {
        self.field(key).is_some()
    }
}

impl Field for Map<String, Value> {
    fn field(&self, key: &str) -> Option<&Value> {
        self.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }
    fn field_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.iter_mut()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }
}

impl Field for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.field(key),
            _ => None,
        }
    }
    fn field_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Object(m) => m.field_mut(key),
            _ => None,
        }
    }
}

/// The (resource, subresource) pairs whose rules apply to an object: at
/// most three (the request's resource, its subresource, the object's
/// built-in kind), kept inline since every object of a response asks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Targets<'a> {
    items: [(&'a str, &'a str); 3],
    len: usize,
}

impl<'a> Targets<'a> {
    fn push(&mut self, pair: (&'a str, &'a str)) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = pair;
            self.len += 1;
        }
    }

    /// The pairs, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(&'a str, &'a str)> {
        self.items[..self.len].iter()
    }
}

/// Built-in kinds whose resource is known whatever the request was, so a
/// Secret is masked as a Secret wherever it appears.
fn builtin_resource(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Secret" => ("secrets", ""),
        "ConfigMap" => ("configmaps", ""),
        "Pod" => ("pods", ""),
        "PodTemplate" => ("podtemplates", ""),
        "ReplicationController" => ("replicationcontrollers", ""),
        "Deployment" => ("deployments", ""),
        "ReplicaSet" => ("replicasets", ""),
        "StatefulSet" => ("statefulsets", ""),
        "DaemonSet" => ("daemonsets", ""),
        "Job" => ("jobs", ""),
        "CronJob" => ("cronjobs", ""),
        "ServiceAccount" => ("serviceaccounts", ""),
        "TokenRequest" => ("serviceaccounts", "token"),
        "Service" => ("services", ""),
        "Namespace" => ("namespaces", ""),
        "Node" => ("nodes", ""),
        "Event" => ("events", ""),
        "Endpoints" => ("endpoints", ""),
        "PersistentVolume" => ("persistentvolumes", ""),
        "PersistentVolumeClaim" => ("persistentvolumeclaims", ""),
        _ => return None,
    })
}

/// Does the list kind `kind` name a built-in resource other than the one
/// the request is for (`ConfigMapList` on a secrets path)? Such a body is
/// refused: an API server never answers so.
pub(crate) fn list_kind_contradicts(ctx: &MaskContext, kind: &str) -> bool {
    if ctx.resource.is_empty() {
        return false;
    }
    let Some(base) = kind.strip_suffix("List") else {
        return false;
    };
    match builtin_resource(base) {
        Some((r, _)) => r != ctx.resource,
        // `List`, `PodMetricsList`, `PartialObjectMetadataList`, custom
        // resources: the items are masked under the path (and their own
        // kinds), which is what the request was for.
        None => false,
    }
}

/// Why a watch stream value is refused, if it is: each value must be an
/// event (`type` and `object`, no `kind` of its own) or a plain `Status`
/// (a watch that failed before it started).
pub(crate) fn check_watch_value(v: &Value) -> Result<(), &'static str> {
    let Value::Object(map) = v else {
        return Err("a watch stream value that is not an object");
    };
    match map.field("kind") {
        Some(Value::String(k)) if k == "Status" && !map.has("object") => Ok(()),
        Some(_) => Err("a watch event with a `kind` of its own"),
        None if is_watch_event(map) => Ok(()),
        None => Err("a watch stream value that is not a watch event"),
    }
}

pub(crate) fn is_list_verb(verb: &str) -> bool {
    matches!(verb, "" | "list" | "watch" | "deletecollection")
}

/// `{"type": "...", "object": ...}` without a `kind`: one watch event.
fn is_watch_event(map: &Map<String, Value>) -> bool {
    !map.has("kind") && map.field("type").is_some_and(Value::is_string) && map.has("object")
}

/// An RFC 6902 JSON Patch: an array of `{"op": ..., "path": ...}` objects.
fn is_json_patch(ops: &[Value]) -> bool {
    !ops.is_empty()
        && ops.iter().all(|op| {
            op.field("op").is_some_and(Value::is_string)
                && op.field("path").is_some_and(Value::is_string)
        })
}

impl Masker {
    /// Mask a JSON value in place (any shape: object, list, watch event,
    /// Table, Status...); returns the number of values masked. 0 means `v`
    /// is unchanged. Values of `ctx.scrub` are scrubbed everywhere in `v`.
    pub fn mask_value(&self, ctx: &MaskContext, v: &mut Value) -> usize {
        self.mask_top(ctx, v, true, &mut Found::new()) + scrub_always(ctx, v)
    }

    /// One element of a streamed list's `items` (see [`Masker::mask_value`]).
    pub(crate) fn mask_stream_item(
        &self,
        ctx: &MaskContext,
        list_kind: Option<&str>,
        item: &mut Value,
    ) -> usize {
        self.mask_list_item(ctx, list_kind, item, &mut Found::new()) + scrub_always(ctx, item)
    }

    /// One element of a streamed Table's `rows` (see [`Masker::mask_value`]).
    pub(crate) fn mask_stream_row(&self, ctx: &MaskContext, row: &mut Value) -> usize {
        self.mask_table_row(ctx, row) + scrub_always(ctx, row)
    }

    /// `found`: where an object masked directly here (not inside a list,
    /// Table or watch event, which are units of their own) reports the clear
    /// values it masked, for a caller whose unit is larger (a Table row).
    fn mask_top(
        &self,
        ctx: &MaskContext,
        v: &mut Value,
        allow_event: bool,
        found: &mut Found,
    ) -> usize {
        if let Value::Array(ops) = v
            && is_json_patch(ops)
        {
            return self.mask_patch(ctx, ops);
        }
        let Value::Object(map) = v else {
            return self.detect_all(v, None);
        };
        let kind = map.field("kind").and_then(Value::as_str).map(str::to_owned);
        match kind.as_deref() {
            Some("Table") if map.field("rows").is_some_and(Value::is_array) => {
                self.mask_table(ctx, map)
            }
            Some(k) if k.ends_with("List") && map.field("items").is_some_and(Value::is_array) => {
                self.mask_list(ctx, Some(k), map)
            }
            // `Status` included: on a secrets path it is held to the secrets
            // rules like anything else (a real one has nothing they match).
            Some(_) => self.mask_object(ctx, None, v, found),
            None if allow_event && is_watch_event(map) => {
                let mut n = 0;
                for (k, child) in map.iter_mut() {
                    n += if k == "object" {
                        self.mask_top(ctx, child, false, &mut Found::new())
                    } else {
                        self.detect_all(child, None)
                    };
                }
                n
            }
            None if is_list_verb(&ctx.verb) && map.field("items").is_some_and(Value::is_array) => {
                self.mask_list(ctx, None, map)
            }
            None => self.mask_object(ctx, None, v, found),
        }
    }

    /// A JSON Patch array (one scrub unit): each op's `value` masked as if it
    /// sat at its `path`, then what was masked scrubbed from every op.
    fn mask_patch(&self, ctx: &MaskContext, ops: &mut [Value]) -> usize {
        let mut found = Found::new();
        let mut n: usize = ops
            .iter_mut()
            .map(|op| self.mask_patch_op(ctx, op, &mut found))
            .sum();
        if !found.is_empty() {
            let set = ScrubSet::for_object(&found);
            for op in ops.iter_mut() {
                if let Some(value) = op.field_mut("value") {
                    n += scrub_any(value, &set);
                }
            }
        }
        n
    }

    /// One JSON Patch operation (a request body recorded for
    /// `kubectl patch --type=json`): its `value` is masked as if it sat at
    /// `path` in an object of the request's resource.
    fn mask_patch_op(&self, ctx: &MaskContext, op: &mut Value, found: &mut Found) -> usize {
        let segs: Vec<String> = match op.field("path").and_then(Value::as_str) {
            Some(p) => p
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
            None => return self.detect_all(op, Some(found)),
        };
        let Some(value) = op.field_mut("value") else {
            return self.detect_all(op, Some(found));
        };
        if segs.is_empty() {
            return self.mask_top(ctx, value, false, found);
        }
        let mut wrapper = std::mem::take(value);
        for seg in segs.iter().rev() {
            let mut m = Map::new();
            m.insert(seg.clone(), wrapper);
            wrapper = Value::Object(m);
        }
        let mut n = self.mask_object(ctx, None, &mut wrapper, found);
        let mut inner = wrapper;
        for seg in &segs {
            inner = inner
                .get_mut(seg.as_str())
                .map(std::mem::take)
                .unwrap_or(Value::Null);
        }
        if let Some(slot) = op.field_mut("value") {
            *slot = inner;
        }
        if let Value::Object(m) = op {
            for (k, child) in m.iter_mut() {
                if k != "value" {
                    n += self.detect_all(child, Some(found));
                }
            }
        }
        n
    }

    fn mask_list(
        &self,
        ctx: &MaskContext,
        list_kind: Option<&str>,
        map: &mut Map<String, Value>,
    ) -> usize {
        let mut n = 0;
        for (k, child) in map.iter_mut() {
            match (k.as_str(), child) {
                ("items", Value::Array(items)) => {
                    for item in items {
                        n += self.mask_list_item(ctx, list_kind, item, &mut Found::new());
                    }
                }
                (_, other) => n += self.detect_all(other, None),
            }
        }
        n
    }

    /// Mask one element of a list's `items`. Typed lists omit the items'
    /// `kind`; it is the list's kind without `List`.
    fn mask_list_item(
        &self,
        ctx: &MaskContext,
        list_kind: Option<&str>,
        item: &mut Value,
        found: &mut Found,
    ) -> usize {
        let has_kind = item.field("kind").is_some_and(Value::is_string);
        if has_kind {
            return self.mask_top(ctx, item, false, found);
        }
        let hint = list_kind
            .and_then(|k| k.strip_suffix("List"))
            .filter(|k| !k.is_empty());
        self.mask_object(ctx, hint, item, found)
    }

    fn mask_table(&self, ctx: &MaskContext, map: &mut Map<String, Value>) -> usize {
        let mut n = 0;
        for (k, child) in map.iter_mut() {
            match (k.as_str(), child) {
                ("rows", Value::Array(rows)) => {
                    for row in rows {
                        n += self.mask_table_row(ctx, row);
                    }
                }
                (_, other) => n += self.detect_all(other, None),
            }
        }
        n
    }

    /// Mask one Table row (a scrub unit): its embedded `object` (full object
    /// or PartialObjectMetadata) like a list item, everything else (the
    /// `cells` too, custom columns may print secret fields) with the
    /// detectors; then what was masked in the object is scrubbed from the
    /// cells.
    fn mask_table_row(&self, ctx: &MaskContext, row: &mut Value) -> usize {
        let Value::Object(map) = row else {
            return self.detect_all(row, None);
        };
        let mut n = 0;
        let mut found = Found::new();
        for (k, child) in map.iter_mut() {
            n += if k == "object" && child.is_object() {
                self.mask_list_item(ctx, None, child, &mut found)
            } else {
                self.detect_all(child, Some(&mut found))
            };
        }
        if !found.is_empty() {
            let set = ScrubSet::for_object(&found);
            for (k, child) in map.iter_mut() {
                if k != "object" {
                    n += scrub_any(child, &set);
                }
            }
        }
        n
    }

    /// The resources whose rules apply to an object: the request's (for a
    /// subresource also its parent resource) and its built-in kind's.
    pub(super) fn resources_of<'a>(ctx: &'a MaskContext, kind: Option<&str>) -> Targets<'a> {
        let mut out = Targets {
            items: [(ctx.resource.as_str(), ""); 3],
            len: 1,
        };
        if !ctx.subresource.is_empty() && ctx.subresource != "status" {
            out.push((ctx.resource.as_str(), ctx.subresource.as_str()));
        }
        if let Some(pair) = kind.and_then(builtin_resource)
            && !out.iter().any(|p| *p == pair)
        {
            out.push(pair);
        }
        out
    }

    /// Mask a single object (a scrub unit): rules for its resources, base64
    /// maps decoded for the detectors, detectors on every string, the
    /// last-applied annotation, then every masked value scrubbed from the
    /// rest of the object. The clear values are also appended to `found`.
    fn mask_object(
        &self,
        ctx: &MaskContext,
        kind_hint: Option<&str>,
        v: &mut Value,
        found: &mut Found,
    ) -> usize {
        let Value::Object(map) = v else {
            return self.detect_all(v, Some(found));
        };
        let mut local = Found::new();
        let kind = map.field("kind").and_then(Value::as_str).map(str::to_owned);
        let targets = Self::resources_of(ctx, kind.as_deref().or(kind_hint));
        let is_secret = targets.iter().any(|(r, s)| *r == "secrets" && s.is_empty());
        let mut n = 0;
        let rules = self
            .rules
            .iter()
            .filter(|r| targets.iter().any(|(res, sub)| r.applies_to(res, sub)));
        for rule in rules {
            for path in &rule.fields {
                n += apply_top_path(map, path, is_secret, &mut local);
            }
            if let Some(re) = &rule.keys {
                for top in KEYED_MAPS {
                    if let Some(Value::Object(m)) = map.field_mut(top) {
                        let b64 = use_base64(top, is_secret);
                        for (k, val) in m.iter_mut() {
                            if re.is_match(k) {
                                n += mask_leaf(val, b64, &mut local);
                            }
                        }
                    }
                }
            }
            if let Some(re) = &rule.env_names {
                n += mask_env(map, re, &mut local);
            }
        }
        n += self.detect_base64_maps(map, is_secret, &mut local);
        // The annotation is judged as a whole below; keep it out of the
        // detector pass (it is swapped out, not removed, to keep key order).
        let annotation = map
            .field_mut("metadata")
            .and_then(|m| m.field_mut("annotations"))
            .and_then(|a| a.field_mut(LAST_APPLIED_ANNOTATION))
            .and_then(|a| match a {
                Value::String(s) => Some(std::mem::take(s)),
                _ => None,
            });
        n += self.detect_all(v, Some(&mut local));
        if let Some(ann) = annotation {
            let whole = n > 0 || is_secret || self.annotation_would_mask(ctx, &ann);
            // While the annotation is taken out, the skeleton's fallback
            // fields (name, namespace, kind) are read from the live object.
            let skeleton = whole.then(|| last_applied_skeleton(&ann, v));
            let slot = v
                .field_mut("metadata")
                .and_then(|m| m.field_mut("annotations"))
                .and_then(|a| a.field_mut(LAST_APPLIED_ANNOTATION));
            if let Some(slot) = slot {
                match skeleton {
                    Some(sk) if sk != ann => {
                        *slot = Value::String(sk);
                        n += 1;
                    }
                    _ => *slot = Value::String(ann),
                }
            }
        }
        if !local.is_empty() {
            let set = ScrubSet::for_object(&local);
            if !set.is_empty() {
                n += scrub_object(v, &set, is_secret);
            }
            found.append(&mut local);
        }
        n
    }

    /// `binaryData` (and a Secret's `data`) hold base64: the detectors look
    /// at the decoded content, and a hit masks the whole value.
    fn detect_base64_maps(
        &self,
        map: &mut Map<String, Value>,
        is_secret: bool,
        found: &mut Found,
    ) -> usize {
        if self.detectors.is_empty() {
            return 0;
        }
        let mut n = 0;
        for top in ["data", "binaryData"] {
            if !use_base64(top, is_secret) {
                continue;
            }
            let Some(Value::Object(m)) = map.field_mut(top) else {
                continue;
            };
            for val in m.values_mut() {
                let Value::String(s) = val else { continue };
                if s == MARKER_BASE64 {
                    continue;
                }
                let Ok(decoded) = B64.decode(s.as_bytes()) else {
                    continue;
                };
                if self.detectors.apply(&String::from_utf8_lossy(&decoded)).1 > 0 {
                    n += mask_leaf(val, true, found);
                }
            }
        }
        n
    }

    /// Would the applied object kept in the annotation have anything masked?
    pub(super) fn annotation_would_mask(&self, ctx: &MaskContext, ann: &str) -> bool {
        if self.detectors.apply(ann).1 > 0 {
            return true;
        }
        match serde_json::from_str::<Value>(ann) {
            Ok(mut applied) => self.mask_top(ctx, &mut applied, false, &mut Found::new()) > 0,
            Err(_) => false,
        }
    }

    /// Apply the detectors to every string in `v`; the secrets found go to
    /// `found` when given.
    pub(crate) fn detect_all(&self, v: &mut Value, mut found: Option<&mut Found>) -> usize {
        if self.detectors.is_empty() {
            return 0;
        }
        match v {
            Value::String(s) => {
                let (out, n) = self.detectors.apply_collect(s, found);
                if n > 0 {
                    *s = out.into_owned();
                }
                n
            }
            Value::Array(a) => a
                .iter_mut()
                .map(|c| self.detect_all(c, found.as_deref_mut()))
                .sum(),
            Value::Object(m) => m
                .values_mut()
                .map(|c| self.detect_all(c, found.as_deref_mut()))
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }
}

/// Scrub the values of `ctx.scrub` (the sidecar's own token) from every
/// string and key of `v`.
fn scrub_always(ctx: &MaskContext, v: &mut Value) -> usize {
    match &ctx.scrub {
        Some(set) if !set.is_empty() => scrub_any(v, set),
        _ => 0,
    }
}

/// Scrub an object unit: everything but its identity; strings of its base64
/// maps become [`MARKER_BASE64`] as a whole (they must stay valid base64).
fn scrub_object(v: &mut Value, set: &ScrubSet, is_secret: bool) -> usize {
    let Value::Object(map) = v else {
        return scrub_any(v, set);
    };
    let mut n = 0;
    for (k, child) in map.iter_mut() {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => match child {
                Value::Object(meta) => {
                    for (mk, mv) in meta.iter_mut() {
                        if !IDENTITY_METADATA.contains(&mk.as_str()) {
                            n += scrub_any(mv, set);
                        }
                    }
                }
                other => n += scrub_any(other, set),
            },
            top if use_base64(top, is_secret) => match child {
                Value::Object(m) => {
                    for val in m.values_mut() {
                        match val {
                            Value::String(s) if set.matches_str(s) => {
                                *s = MARKER_BASE64.to_string();
                                n += 1;
                            }
                            other => n += scrub_any(other, set),
                        }
                    }
                }
                other => n += scrub_any(other, set),
            },
            _ => n += scrub_any(child, set),
        }
    }
    n
}

/// Scrub every string and object key in `v`.
fn scrub_any(v: &mut Value, set: &ScrubSet) -> usize {
    match v {
        Value::String(s) => match set.scrub_str(s) {
            Some(out) => {
                *s = out;
                1
            }
            None => 0,
        },
        Value::Array(a) => a.iter_mut().map(|c| scrub_any(c, set)).sum(),
        Value::Object(m) => {
            let mut n: usize = m.values_mut().map(|c| scrub_any(c, set)).sum();
            if m.keys().any(|k| set.matches_str(k)) {
                let old = std::mem::take(m);
                for (k, val) in old {
                    match set.scrub_str(&k) {
                        Some(nk) => {
                            n += 1;
                            m.insert(nk, val);
                        }
                        None => {
                            m.insert(k, val);
                        }
                    }
                }
            }
            n
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// Remember the clear value of a string about to be masked: the decoded
/// bytes of a base64 field (and the text itself when it is not canonical
/// base64), else the string.
pub(super) fn remember(found: &mut Found, s: &str, b64: bool) {
    if s.is_empty() || s == MARKER || s == MARKER_BASE64 {
        return;
    }
    // Object scrub sets look at the first `WINDOW` bytes of a value only
    // (see `scrub`): keep a little more, so a long value is still known to
    // be long.
    const KEEP: usize = WINDOW + 8;
    if b64 {
        // Canonical standard base64 (what the engine decodes) of a prefix
        // that is a whole number of 4-character groups.
        let text = s.get(..s.len().min(KEEP.div_ceil(3) * 4 + 4)).unwrap_or(s);
        if let Ok(decoded) = B64.decode(text.as_bytes()) {
            found.push(decoded);
            return;
        }
    }
    found.push(s.as_bytes()[..s.len().min(KEEP)].to_vec());
}

/// What replaces the `kubectl.kubernetes.io/last-applied-configuration`
/// annotation of a masked object: a JSON skeleton carrying no values,
/// `{"apiVersion":..,"kind":..,"metadata":{"name":..,"namespace":..}}`, taken
/// from the annotation's own JSON, each missing field from the live object
/// (not `apiVersion`/`kind` of a `PartialObjectMetadata`, which are not the
/// object's); an annotation that is not a JSON object becomes [`MARKER`].
///
/// Trade-off: the annotation is what client-side `kubectl apply` diffs
/// against. A plain marker there makes every later `kubectl apply` through
/// the sidecar fail (kubectl parses it as JSON); the skeleton keeps repeat
/// applies working, because the three-way patch then simply sets every field
/// of the new configuration. What is lost is pruning: a field removed from
/// the manifest since the last apply is no longer in the skeleton, so apply
/// through the sidecar does not delete it from the live object (a later
/// `kubectl apply` run directly against the API server, with the real
/// annotation, still would). The skeleton is a pure function of fields it
/// keeps, so masking it again yields it unchanged (idempotent, not counted).
pub(super) fn last_applied_skeleton(ann: &str, live: &Value) -> String {
    let live_meta = live.field("metadata");
    skeleton_from(
        ann,
        pick(Some(live), "apiVersion"),
        pick(Some(live), "kind"),
        pick(live_meta, "name"),
        pick(live_meta, "namespace"),
    )
}

/// [`last_applied_skeleton`] from the live object's `apiVersion`, `kind`,
/// `metadata.name` and `metadata.namespace` (each when it is a string).
pub(super) fn skeleton_from(
    ann: &str,
    live_api_version: Option<&str>,
    live_kind: Option<&str>,
    live_name: Option<&str>,
    live_namespace: Option<&str>,
) -> String {
    let Some(applied) = AppliedIds::parse(ann) else {
        return MARKER.to_string();
    };
    let own_type = !matches!(live_kind, Some("PartialObjectMetadata" | "Table"));
    // Written directly, as serde_json writes the equivalent map (compact,
    // in this key order, strings escaped by serde_json): no map is built.
    let mut out = Vec::with_capacity(128);
    out.push(b'{');
    for key in ["apiVersion", "kind"] {
        let from_live = if !own_type {
            None
        } else if key == "kind" {
            live_kind
        } else {
            live_api_version
        };
        let own = if key == "kind" {
            applied.kind.as_deref()
        } else {
            applied.api_version.as_deref()
        };
        if let Some(x) = own.or(from_live) {
            push_json_member(&mut out, key, x);
            out.push(b',');
        }
    }
    out.extend_from_slice(b"\"metadata\":{");
    let mut first = true;
    for key in ["name", "namespace"] {
        let own = if key == "name" {
            applied.name.as_deref()
        } else {
            applied.namespace.as_deref()
        };
        let from_live = if key == "name" {
            live_name
        } else {
            live_namespace
        };
        if let Some(x) = own.or(from_live) {
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_member(&mut out, key, x);
        }
    }
    out.extend_from_slice(b"}}");
    String::from_utf8(out).unwrap_or_else(|_| MARKER.to_string())
}

/// The fields of a last-applied annotation the skeleton keeps: what
/// `serde_json::from_str::<Value>` would give for `apiVersion`, `kind`,
/// `metadata.name` and `metadata.namespace` when they are strings (the
/// last of duplicate keys, as a parsed map keeps), read without building
/// the maps. Everything else is parsed into a `Value` and dropped, so the
/// annotation is accepted exactly when it parses as a JSON object.
#[derive(Debug, Default, PartialEq)]
struct AppliedIds {
    api_version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

impl AppliedIds {
    /// `None` when `ann` is not a JSON object.
    fn parse(ann: &str) -> Option<AppliedIds> {
        // Whatever the fast read does not accept (malformed JSON, the key
        // serde_json reserves for raw values) is decided by the full parse.
        Self::read(ann).unwrap_or_else(|_| Self::from_value(ann))
    }

    fn read(ann: &str) -> Result<Option<AppliedIds>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(ann);
        let ids = serde::Deserializer::deserialize_any(&mut de, IdsVisitor { top: true })?;
        de.end()?;
        Ok(ids)
    }

    /// The same fields from the parsed `Value`.
    fn from_value(ann: &str) -> Option<AppliedIds> {
        let applied = match serde_json::from_str::<Value>(ann) {
            Ok(v) if v.is_object() => v,
            _ => return None,
        };
        let meta = applied.field("metadata");
        let get = |from: Option<&Value>, key: &str| pick(from, key).map(str::to_owned);
        Some(AppliedIds {
            api_version: get(Some(&applied), "apiVersion"),
            kind: get(Some(&applied), "kind"),
            name: get(meta, "name"),
            namespace: get(meta, "namespace"),
        })
    }
}

/// The first key serde_json's `Value` reads as a raw value, not a key.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// Reads an object's identity fields (`top`: the applied object; else its
/// `metadata`); any other JSON value is consumed whole and gives `None`.
struct IdsVisitor {
    top: bool,
}

/// A value consumed (parsed into a `Value`, checked as serde_json checks
/// it) and kept only when it is a string.
fn string_value<'de, A: serde::de::MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<String>, A::Error> {
    Ok(match map.next_value::<Value>()? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

impl<'de> serde::de::Visitor<'de> for IdsVisitor {
    type Value = Option<AppliedIds>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ids = AppliedIds::default();
        let mut first = true;
        while let Some(key) = map.next_key::<String>()? {
            if first && key == RAW_VALUE_KEY {
                return Err(serde::de::Error::custom("reserved key"));
            }
            first = false;
            match (self.top, key.as_str()) {
                (true, "apiVersion") => ids.api_version = string_value(&mut map)?,
                (true, "kind") => ids.kind = string_value(&mut map)?,
                (true, "metadata") => {
                    let meta = map.next_value_seed(IdsSeed { top: false })?;
                    let meta = meta.unwrap_or_default();
                    ids.name = meta.name;
                    ids.namespace = meta.namespace;
                }
                (false, "name") => ids.name = string_value(&mut map)?,
                (false, "namespace") => ids.namespace = string_value(&mut map)?,
                _ => {
                    map.next_value::<Value>()?;
                }
            }
        }
        Ok(Some(ids))
    }
}

/// [`IdsVisitor`] as a seed, for `metadata`.
struct IdsSeed {
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for IdsSeed {
    type Value = Option<AppliedIds>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(IdsVisitor { top: self.top })
    }
}

/// The string at `key` of `from`, if it is one.
fn pick<'a>(from: Option<&'a Value>, key: &str) -> Option<&'a str> {
    from.and_then(|m| m.field(key)).and_then(Value::as_str)
}

/// `"key":"value"` with serde_json's escaping of both.
fn push_json_member(out: &mut Vec<u8>, key: &str, value: &str) {
    crate::json_text::push_quoted(out, key);
    out.push(b':');
    crate::json_text::push_quoted(out, value);
}

/// Secret `data` and any `binaryData` hold base64: their marker must decode.
pub(super) fn use_base64(top_key: &str, is_secret: bool) -> bool {
    top_key == "binaryData" || (is_secret && top_key == "data")
}

fn apply_top_path(
    map: &mut Map<String, Value>,
    path: &[Seg],
    is_secret: bool,
    found: &mut Found,
) -> usize {
    let Some((first, rest)) = path.split_first() else {
        return 0;
    };
    match first {
        Seg::Key(k) => {
            let mut n = map
                .field_mut(k.as_str())
                .map_or(0, |c| apply_path(c, rest, use_base64(k, is_secret), found));
            // `binaryData` is masked like `data`, under the same rules.
            if k == "data"
                && let Some(c) = map.field_mut("binaryData")
            {
                n += apply_path(c, rest, true, found);
            }
            n
        }
        Seg::Any => map
            .iter_mut()
            .map(|(k, c)| apply_path(c, rest, use_base64(k, is_secret), found))
            .sum(),
    }
}

fn apply_path(v: &mut Value, path: &[Seg], b64: bool, found: &mut Found) -> usize {
    let Some((first, rest)) = path.split_first() else {
        return mask_leaf(v, b64, found);
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => m
            .field_mut(k.as_str())
            .map_or(0, |c| apply_path(c, rest, b64, found)),
        (Seg::Key(k), Value::Array(a)) => k
            .parse::<usize>()
            .ok()
            .and_then(|i| a.get_mut(i))
            .map_or(0, |c| apply_path(c, rest, b64, found)),
        (Seg::Any, Value::Object(m)) => m
            .values_mut()
            .map(|c| apply_path(c, rest, b64, found))
            .sum(),
        (Seg::Any, Value::Array(a)) => a.iter_mut().map(|c| apply_path(c, rest, b64, found)).sum(),
        _ => 0,
    }
}

/// Replace a matched value: strings by the marker, numbers by 0, containers
/// element by element; booleans and nulls are kept (types stay decodable).
/// The clear strings replaced are remembered in `found`.
fn mask_leaf(v: &mut Value, b64: bool, found: &mut Found) -> usize {
    match v {
        Value::String(s) => {
            let marker = if b64 { MARKER_BASE64 } else { MARKER };
            if s == marker {
                0
            } else {
                remember(found, s, b64);
                *s = marker.to_string();
                1
            }
        }
        Value::Number(num) => {
            if num.as_f64() == Some(0.0) {
                0
            } else {
                *v = Value::from(0);
                1
            }
        }
        Value::Array(a) => a.iter_mut().map(|c| mask_leaf(c, b64, found)).sum(),
        Value::Object(m) => m.values_mut().map(|c| mask_leaf(c, b64, found)).sum(),
        Value::Null | Value::Bool(_) => 0,
    }
}

fn mask_env(map: &mut Map<String, Value>, re: &regex::Regex, found: &mut Found) -> usize {
    let mut n = 0;
    for spec_path in POD_SPEC_PATHS {
        let mut cur: Option<&mut Map<String, Value>> = Some(map);
        for key in spec_path {
            cur = cur
                .and_then(|m| m.field_mut(key))
                .and_then(Value::as_object_mut);
        }
        let Some(spec) = cur else { continue };
        for list in CONTAINER_LISTS {
            let Some(Value::Array(containers)) = spec.field_mut(list) else {
                continue;
            };
            for c in containers {
                let Some(Value::Array(env)) = c.field_mut("env") else {
                    continue;
                };
                for entry in env {
                    let matched = entry
                        .field("name")
                        .and_then(Value::as_str)
                        .is_some_and(|name| re.is_match(name));
                    if matched && let Some(value) = entry.field_mut("value") {
                        n += mask_leaf(value, false, found);
                    }
                }
            }
        }
    }
    n
}
