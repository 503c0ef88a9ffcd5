//! PATCH bodies: RFC 6902 JSON patch, RFC 7386 merge patch, the strategic
//! merge patch kubectl sends for built-in types (lists merged by their patch
//! merge keys, `$patch`, `$retainKeys`, `$setElementOrder`,
//! `$deleteFromPrimitiveList` directives), and the merge step of server-side
//! apply.

use serde_json::{Map, Value};

/// Errors applying a patch (400 BadRequest, or 422 where noted by callers).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    UnknownType,
    #[error("error decoding patch: {0}")]
    Decode(String),
    #[error("the server rejected our request due to an error in our request: {0}")]
    Apply(String),
}

/// The patch flavours of the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    /// Parses a Content-Type value (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies an RFC 6902 patch.
pub fn json_patch(target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    // Not JSON: 400. JSON that is no RFC 6902 patch (an unknown op, a
    // missing path): 422, as kube-apiserver answers.
    let raw: Value = serde_json::from_slice(body).map_err(|e| PatchError::Decode(e.to_string()))?;
    let p: json_patch::Patch =
        serde_json::from_value(raw).map_err(|e| PatchError::Apply(e.to_string()))?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &p).map_err(|e| PatchError::Apply(e.to_string()))?;
    Ok(out)
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// The patch merge key of a list field, as the built-in types declare it;
/// None means the list is replaced (atomic).
fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets"
        | "hostAliases"
        | "readinessGates"
        | "conditions"
        | "containerStatuses"
        | "initContainerStatuses" => match field {
            "hostAliases" => Some("ip"),
            "readinessGates" => Some("conditionType"),
            "conditions" => Some("type"),
            "secrets" | "imagePullSecrets" | "containerStatuses" | "initContainerStatuses" => {
                Some("name")
            }
            _ => Some("name"),
        },
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "ports" => {
            // Container ports merge on containerPort, Service ports on port.
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Applies a strategic merge patch to `target` (built-in types only).
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => Ok(Value::Object(merge_map(t, p)?)),
        (_, Value::Object(p)) => Ok(Value::Object(merge_map(&Map::new(), p)?)),
        _ => Err(PatchError::Decode(
            "strategic merge patch must be a JSON object".into(),
        )),
    }
}

fn merge_map(
    target: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            return Ok(strip_directives(p));
        }
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::Apply(format!("unknown patch type: {other}"))),
    }
    let mut out = target.clone();
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (out.get_mut(field), pv) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        match pv {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(pm) => {
                let merged = match out.get(k) {
                    Some(Value::Object(tm)) => merge_map(tm, pm)?,
                    _ => merge_map(&Map::new(), pm)?,
                };
                out.insert(k.clone(), Value::Object(merged));
            }
            Value::Array(pl) => {
                let cur = match out.get(k) {
                    Some(Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                let order = patch
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                let merged = merge_list(k, &cur, pl, order)?;
                out.insert(k.clone(), Value::Array(merged));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(out)
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn merge_list(
    field: &str,
    cur: &[Value],
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> Result<Vec<Value>, PatchError> {
    let refs: Vec<&Value> = cur.iter().chain(patch.iter()).collect();
    let all_maps = !patch.is_empty() && patch.iter().all(Value::is_object);
    let key = if all_maps {
        merge_key(field, &refs)
    } else {
        None
    };
    // A list-level `{"$patch": "replace"}` item replaces the whole list.
    if patch.iter().any(|i| {
        i.get("$patch").and_then(Value::as_str) == Some("replace")
            && i.as_object().is_some_and(|m| m.len() == 1)
    }) {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    }
    let Some(key) = key else {
        if patch.is_empty() && order.is_some() && !cur.is_empty() {
            // Only an order directive: keep the list.
            return Ok(cur.to_vec());
        }
        return Ok(patch.to_vec());
    };
    let mut out: Vec<Value> = cur.to_vec();
    for item in patch {
        let Some(kv) = item.get(key) else {
            return Err(PatchError::Apply(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = out.iter().position(|c| c.get(key) == Some(kv));
        let is_delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, is_delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = strategic_merge(&out[i], item)?;
                out[i] = merged;
            }
            (None, false) => {
                let fresh = strategic_merge(&Value::Object(Map::new()), item)?;
                out.push(fresh);
            }
        }
    }
    if let Some(order) = order {
        let pos_of = |v: &Value| {
            order
                .iter()
                .position(|o| o.get(key).is_some() && o.get(key) == v.get(key))
        };
        // Stable: listed elements in the given order, the rest after.
        out.sort_by_key(|v| pos_of(v).unwrap_or(usize::MAX));
    }
    Ok(out)
}

/// Server-side apply's merge of an applied configuration into the live
/// object: maps merge, keyed lists merge by key (built-ins), other lists are
/// replaced (atomic, the default for custom resources).
pub fn apply_merge(live: &Value, applied: &Value, custom: bool) -> Result<Value, PatchError> {
    if custom {
        let mut out = live.clone();
        deep_merge_no_delete(&mut out, applied);
        Ok(out)
    } else {
        strategic_merge(live, applied)
    }
}

fn deep_merge_no_delete(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() && v.is_object() => deep_merge_no_delete(tv, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let live = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "3"}, {"name": "X", "$patch": "delete"}]}
        ]}});
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "a:2");
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "Y", "value": "3"}])
        );
        assert_eq!(
            out["spec"]["containers"][1],
            json!({"name": "b", "image": "b:1"})
        );
    }

    #[test]
    fn ports_and_mounts_keys_and_atomic_lists() {
        let live = json!({"c": {"ports": [{"containerPort": 80, "name": "http"}], "volumeMounts": [{"mountPath": "/a", "name": "v"}], "args": ["x", "y"]}});
        let patch = json!({"c": {"ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}], "volumeMounts": [{"mountPath": "/b", "name": "w"}], "args": ["z"]}});
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(
            out["c"]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}])
        );
        assert_eq!(out["c"]["volumeMounts"].as_array().unwrap().len(), 2);
        assert_eq!(out["c"]["args"], json!(["z"]));
    }

    #[test]
    fn directives() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]}, "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({
            "metadata": {"labels": {"a": null, "c": "3"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}
        });
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let replaced = strategic_merge(
            &live,
            &json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
        )
        .unwrap();
        assert_eq!(replaced["metadata"]["labels"], json!({"z": "9"}));
    }

    #[test]
    fn set_element_order_reorders() {
        let live = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let patch = json!({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "i"}]});
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(
            out["containers"],
            json!([{"name": "b"}, {"name": "a", "image": "i"}])
        );
    }

    #[test]
    fn json_and_merge_patch() {
        let live = json!({"a": {"b": 1}, "l": [1, 2]});
        let out = json_patch(
            &live,
            br#"[{"op":"replace","path":"/a/b","value":2},{"op":"add","path":"/l/-","value":3}]"#,
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": 2}, "l": [1, 2, 3]}));
        assert!(json_patch(&live, br#"[{"op":"remove","path":"/nope"}]"#).is_err());
        assert!(json_patch(&live, b"{not json").is_err());
        assert_eq!(
            merge_patch(&live, &json!({"a": null, "c": 1})),
            json!({"l": [1, 2], "c": 1})
        );
    }
}
