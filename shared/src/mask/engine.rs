//! The object walker: decides the shape of a JSON value (object, list, watch
//! event, Table, Status) and applies the rules and detectors to it.
//!
//! Invariant the rest of the module relies on: every change to a value is
//! counted, so a count of 0 means the value is unchanged and its original
//! bytes may be passed on verbatim.

use serde_json::{Map, Value};

use super::{LAST_APPLIED_ANNOTATION, MARKER, MARKER_BASE64, MaskContext, Masker, Seg};

/// Where pod specs live in the objects that carry one.
const POD_SPEC_PATHS: [&[&str]; 4] = [
    &["spec"],
    &["spec", "template", "spec"],
    &["template", "spec"],
    &["spec", "jobTemplate", "spec", "template", "spec"],
];

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Maps whose keys the `keys` regex is matched against.
const KEYED_MAPS: [&str; 3] = ["data", "binaryData", "stringData"];

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

pub(crate) fn is_list_verb(verb: &str) -> bool {
    matches!(verb, "" | "list" | "watch" | "deletecollection")
}

/// `{"type": "...", "object": ...}` without a `kind`: one watch event.
fn is_watch_event(map: &Map<String, Value>) -> bool {
    !map.contains_key("kind")
        && map.get("type").is_some_and(Value::is_string)
        && map.contains_key("object")
}

/// An RFC 6902 JSON Patch: an array of `{"op": ..., "path": ...}` objects.
fn is_json_patch(ops: &[Value]) -> bool {
    !ops.is_empty()
        && ops.iter().all(|op| {
            op.get("op").is_some_and(Value::is_string)
                && op.get("path").is_some_and(Value::is_string)
        })
}

impl Masker {
    /// Mask a JSON value in place (any shape: object, list, watch event,
    /// Table, Status...); returns the number of values masked. 0 means `v`
    /// is unchanged.
    pub fn mask_value(&self, ctx: &MaskContext, v: &mut Value) -> usize {
        self.mask_top(ctx, v, true)
    }

    fn mask_top(&self, ctx: &MaskContext, v: &mut Value, allow_event: bool) -> usize {
        if let Value::Array(ops) = v
            && is_json_patch(ops)
        {
            return ops.iter_mut().map(|op| self.mask_patch_op(ctx, op)).sum();
        }
        let Value::Object(map) = v else {
            return self.detect_all(v);
        };
        let kind = map.get("kind").and_then(Value::as_str).map(str::to_owned);
        match kind.as_deref() {
            Some("Status") => self.detect_all(v),
            Some("Table") if map.get("rows").is_some_and(Value::is_array) => {
                self.mask_table(ctx, map)
            }
            Some(k) if k.ends_with("List") && map.get("items").is_some_and(Value::is_array) => {
                self.mask_list(ctx, Some(k), map)
            }
            Some(_) => self.mask_object(ctx, None, v),
            None if allow_event && is_watch_event(map) => {
                let mut n = 0;
                for (k, child) in map.iter_mut() {
                    n += if k == "object" {
                        self.mask_top(ctx, child, false)
                    } else {
                        self.detect_all(child)
                    };
                }
                n
            }
            None if is_list_verb(&ctx.verb) && map.get("items").is_some_and(Value::is_array) => {
                self.mask_list(ctx, None, map)
            }
            None => self.mask_object(ctx, None, v),
        }
    }

    /// One JSON Patch operation (a request body recorded for
    /// `kubectl patch --type=json`): its `value` is masked as if it sat at
    /// `path` in an object of the request's resource.
    fn mask_patch_op(&self, ctx: &MaskContext, op: &mut Value) -> usize {
        let segs: Vec<String> = match op.get("path").and_then(Value::as_str) {
            Some(p) => p
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
            None => return self.detect_all(op),
        };
        let Some(value) = op.get_mut("value") else {
            return self.detect_all(op);
        };
        if segs.is_empty() {
            return self.mask_top(ctx, value, false);
        }
        let mut wrapper = std::mem::take(value);
        for seg in segs.iter().rev() {
            let mut m = Map::new();
            m.insert(seg.clone(), wrapper);
            wrapper = Value::Object(m);
        }
        let mut n = self.mask_object(ctx, None, &mut wrapper);
        let mut inner = wrapper;
        for seg in &segs {
            inner = inner
                .get_mut(seg.as_str())
                .map(std::mem::take)
                .unwrap_or(Value::Null);
        }
        if let Some(slot) = op.get_mut("value") {
            *slot = inner;
        }
        if let Value::Object(m) = op {
            for (k, child) in m.iter_mut() {
                if k != "value" {
                    n += self.detect_all(child);
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
                        n += self.mask_list_item(ctx, list_kind, item);
                    }
                }
                (_, other) => n += self.detect_all(other),
            }
        }
        n
    }

    /// Mask one element of a list's `items`. Typed lists omit the items'
    /// `kind`; it is the list's kind without `List`.
    pub(crate) fn mask_list_item(
        &self,
        ctx: &MaskContext,
        list_kind: Option<&str>,
        item: &mut Value,
    ) -> usize {
        let has_kind = item.get("kind").is_some_and(Value::is_string);
        if has_kind {
            return self.mask_top(ctx, item, false);
        }
        let hint = list_kind
            .and_then(|k| k.strip_suffix("List"))
            .filter(|k| !k.is_empty());
        self.mask_object(ctx, hint, item)
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
                (_, other) => n += self.detect_all(other),
            }
        }
        n
    }

    /// Mask one Table row: its embedded `object` (full object or
    /// PartialObjectMetadata) like a list item, everything else (the `cells`
    /// too, custom columns may print secret fields) with the detectors.
    pub(crate) fn mask_table_row(&self, ctx: &MaskContext, row: &mut Value) -> usize {
        let Value::Object(map) = row else {
            return self.detect_all(row);
        };
        let mut n = 0;
        for (k, child) in map.iter_mut() {
            n += if k == "object" && child.is_object() {
                self.mask_list_item(ctx, None, child)
            } else {
                self.detect_all(child)
            };
        }
        n
    }

    /// The resource an object belongs to: its built-in kind's, else the request's
    /// (a `status` subresource answers with the parent object).
    fn resource_of(ctx: &MaskContext, kind: Option<&str>) -> (String, String) {
        if let Some((r, s)) = kind.and_then(builtin_resource) {
            return (r.to_string(), s.to_string());
        }
        if ctx.subresource == "status" {
            return (ctx.resource.clone(), String::new());
        }
        (ctx.resource.clone(), ctx.subresource.clone())
    }

    /// Mask a single object: rules for its resource, then detectors on every
    /// string, then the last-applied annotation.
    fn mask_object(&self, ctx: &MaskContext, kind_hint: Option<&str>, v: &mut Value) -> usize {
        let Value::Object(map) = v else {
            return self.detect_all(v);
        };
        let kind = map.get("kind").and_then(Value::as_str).map(str::to_owned);
        let (res, sub) = Self::resource_of(ctx, kind.as_deref().or(kind_hint));
        let is_secret = res == "secrets" && sub.is_empty();
        let mut n = 0;
        for rule in self.rules.iter().filter(|r| r.applies_to(&res, &sub)) {
            for path in &rule.fields {
                n += apply_top_path(map, path, is_secret);
            }
            if let Some(re) = &rule.keys {
                for top in KEYED_MAPS {
                    if let Some(Value::Object(m)) = map.get_mut(top) {
                        let b64 = use_base64(top, is_secret);
                        for (k, val) in m.iter_mut() {
                            if re.is_match(k) {
                                n += mask_leaf(val, b64);
                            }
                        }
                    }
                }
            }
            if let Some(re) = &rule.env_names {
                n += mask_env(map, re);
            }
        }
        // The annotation is judged as a whole below; keep it out of the
        // detector pass (it is swapped out, not removed, to keep key order).
        let annotation = map
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(|a| a.get_mut(LAST_APPLIED_ANNOTATION))
            .and_then(|a| match a {
                Value::String(s) => Some(std::mem::take(s)),
                _ => None,
            });
        n += self.detect_all(v);
        if let Some(ann) = annotation {
            let whole = n > 0 || is_secret || self.annotation_would_mask(ctx, &ann);
            // While the annotation is taken out, the skeleton's fallback
            // fields (name, namespace, kind) are read from the live object.
            let skeleton = whole.then(|| last_applied_skeleton(&ann, v));
            let slot = v
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(|a| a.get_mut(LAST_APPLIED_ANNOTATION));
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
        n
    }

    /// Would the applied object kept in the annotation have anything masked?
    fn annotation_would_mask(&self, ctx: &MaskContext, ann: &str) -> bool {
        if self.detectors.apply(ann).1 > 0 {
            return true;
        }
        match serde_json::from_str::<Value>(ann) {
            Ok(mut applied) => self.mask_top(ctx, &mut applied, false) > 0,
            Err(_) => false,
        }
    }

    /// Apply the detectors to every string in `v`.
    pub(crate) fn detect_all(&self, v: &mut Value) -> usize {
        if self.detectors.is_empty() {
            return 0;
        }
        match v {
            Value::String(s) => {
                let (out, n) = self.detectors.apply(s);
                if n > 0 {
                    *s = out.into_owned();
                }
                n
            }
            Value::Array(a) => a.iter_mut().map(|c| self.detect_all(c)).sum(),
            Value::Object(m) => m.values_mut().map(|c| self.detect_all(c)).sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }
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
fn last_applied_skeleton(ann: &str, live: &Value) -> String {
    let applied = match serde_json::from_str::<Value>(ann) {
        Ok(v) if v.is_object() => v,
        _ => return MARKER.to_string(),
    };
    let live_kind = live.get("kind").and_then(Value::as_str);
    let own_type = !matches!(live_kind, Some("PartialObjectMetadata" | "Table"));
    let pick = |from: Option<&Value>, key: &str| -> Option<Value> {
        from.and_then(|m| m.get(key))
            .filter(|x| x.is_string())
            .cloned()
    };
    let applied_meta = applied.get("metadata");
    let live_meta = live.get("metadata");
    let mut out = Map::new();
    for key in ["apiVersion", "kind"] {
        let from_live = if own_type {
            pick(Some(live), key)
        } else {
            None
        };
        if let Some(x) = pick(Some(&applied), key).or(from_live) {
            out.insert(key.to_string(), x);
        }
    }
    let mut meta = Map::new();
    for key in ["name", "namespace"] {
        if let Some(x) = pick(applied_meta, key).or_else(|| pick(live_meta, key)) {
            meta.insert(key.to_string(), x);
        }
    }
    out.insert("metadata".to_string(), Value::Object(meta));
    serde_json::to_string(&Value::Object(out)).unwrap_or_else(|_| MARKER.to_string())
}

/// Secret `data` and any `binaryData` hold base64: their marker must decode.
fn use_base64(top_key: &str, is_secret: bool) -> bool {
    top_key == "binaryData" || (is_secret && top_key == "data")
}

fn apply_top_path(map: &mut Map<String, Value>, path: &[Seg], is_secret: bool) -> usize {
    let Some((first, rest)) = path.split_first() else {
        return 0;
    };
    match first {
        Seg::Key(k) => map
            .get_mut(k.as_str())
            .map_or(0, |c| apply_path(c, rest, use_base64(k, is_secret))),
        Seg::Any => map
            .iter_mut()
            .map(|(k, c)| apply_path(c, rest, use_base64(k, is_secret)))
            .sum(),
    }
}

fn apply_path(v: &mut Value, path: &[Seg], b64: bool) -> usize {
    let Some((first, rest)) = path.split_first() else {
        return mask_leaf(v, b64);
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => m
            .get_mut(k.as_str())
            .map_or(0, |c| apply_path(c, rest, b64)),
        (Seg::Key(k), Value::Array(a)) => k
            .parse::<usize>()
            .ok()
            .and_then(|i| a.get_mut(i))
            .map_or(0, |c| apply_path(c, rest, b64)),
        (Seg::Any, Value::Object(m)) => m.values_mut().map(|c| apply_path(c, rest, b64)).sum(),
        (Seg::Any, Value::Array(a)) => a.iter_mut().map(|c| apply_path(c, rest, b64)).sum(),
        _ => 0,
    }
}

/// Replace a matched value: strings by the marker, numbers by 0, containers
/// element by element; booleans and nulls are kept (types stay decodable).
fn mask_leaf(v: &mut Value, b64: bool) -> usize {
    match v {
        Value::String(s) => {
            let marker = if b64 { MARKER_BASE64 } else { MARKER };
            if s == marker {
                0
            } else {
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
        Value::Array(a) => a.iter_mut().map(|c| mask_leaf(c, b64)).sum(),
        Value::Object(m) => m.values_mut().map(|c| mask_leaf(c, b64)).sum(),
        Value::Null | Value::Bool(_) => 0,
    }
}

fn mask_env(map: &mut Map<String, Value>, re: &regex::Regex) -> usize {
    let mut n = 0;
    for spec_path in POD_SPEC_PATHS {
        let mut cur: Option<&mut Map<String, Value>> = Some(map);
        for key in spec_path {
            cur = cur
                .and_then(|m| m.get_mut(*key))
                .and_then(Value::as_object_mut);
        }
        let Some(spec) = cur else { continue };
        for list in CONTAINER_LISTS {
            let Some(Value::Array(containers)) = spec.get_mut(list) else {
                continue;
            };
            for c in containers {
                let Some(Value::Array(env)) = c.get_mut("env") else {
                    continue;
                };
                for entry in env {
                    let matched = entry
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|name| re.is_match(name));
                    if matched && let Some(value) = entry.get_mut("value") {
                        n += mask_leaf(value, false);
                    }
                }
            }
        }
    }
    n
}
