//! Patch-op generation: the RFC 6902 operations that turn the pod as it
//! came into the injected pod, as a short, readable list (whole-field `add`s
//! per container, `remove`s of token volumes, an insert of the sidecar),
//! checked by applying it and replaced by the generic `json_patch::diff`
//! should the two ever disagree.

use super::name_of;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::Value;
use std::collections::BTreeSet;

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(ops: &mut Vec<PatchOperation>, tokens: &[&str], value: Value) {
    ops.push(PatchOperation::Add(AddOperation {
        path: ptr(tokens),
        value,
    }));
}

fn remove(ops: &mut Vec<PatchOperation>, tokens: &[&str]) {
    ops.push(PatchOperation::Remove(RemoveOperation {
        path: ptr(tokens),
    }));
}

/// A patch turning `before` into `after` (which [`super::transform`] made).
pub fn ops_between(before: &Value, after: &Value) -> Patch {
    let mut ops = Vec::new();
    let b_ann = before.pointer("/metadata/annotations");
    let a_ann = after.pointer("/metadata/annotations");
    if b_ann != a_ann {
        match (before.get("metadata"), b_ann, a_ann) {
            (_, Some(Value::Object(b)), Some(Value::Object(a))) => {
                for (k, v) in a {
                    if b.get(k) != Some(v) {
                        add(&mut ops, &["metadata", "annotations", k], v.clone());
                    }
                }
            }
            (Some(_), _, Some(a)) => add(&mut ops, &["metadata", "annotations"], a.clone()),
            (_, _, Some(_)) => {
                if let Some(m) = after.get("metadata") {
                    add(&mut ops, &["metadata"], m.clone());
                }
            }
            _ => {}
        }
    }
    let key = "automountServiceAccountToken";
    if before.pointer("/spec/automountServiceAccountToken")
        != after.pointer("/spec/automountServiceAccountToken")
        && let Some(v) = after.pointer("/spec/automountServiceAccountToken")
    {
        add(&mut ops, &["spec", key], v.clone());
    }
    let b_ha = before.pointer("/spec/hostAliases");
    let a_ha = after.pointer("/spec/hostAliases");
    if b_ha != a_ha
        && let Some(Value::Array(a)) = a_ha
    {
        match b_ha {
            Some(Value::Array(b)) if a.len() == b.len() + 1 && a[..b.len()] == b[..] => {
                if let Some(last) = a.last() {
                    add(&mut ops, &["spec", "hostAliases", "-"], last.clone());
                }
            }
            _ => add(&mut ops, &["spec", "hostAliases"], Value::Array(a.clone())),
        }
    }
    for (field, per_key) in [
        ("volumes", false),
        ("initContainers", true),
        ("containers", true),
        ("ephemeralContainers", true),
    ] {
        let b = before.get("spec").and_then(|s| s.get(field));
        let a = after.get("spec").and_then(|s| s.get(field));
        match (b.and_then(Value::as_array), a.and_then(Value::as_array)) {
            (_, None) => {}
            (None, Some(a)) => add(&mut ops, &["spec", field], Value::Array(a.clone())),
            (Some(b), Some(a)) => list_ops(&mut ops, field, b, a, per_key),
        }
    }
    let patch = Patch(ops);
    let mut check = before.clone();
    match json_patch::patch(&mut check, &patch.0) {
        Ok(()) if &check == after => patch,
        _ => json_patch::diff(before, after),
    }
}

/// Ops turning the named list `b` into `a`: removals of vanished names,
/// inserts of new ones where they belong, and in-place updates (per field for
/// containers, so a reviewer sees `/spec/containers/0/env`).
fn list_ops(ops: &mut Vec<PatchOperation>, field: &str, b: &[Value], a: &[Value], per_key: bool) {
    let idx = |i: usize| i.to_string();
    let keep: BTreeSet<&str> = a.iter().map(name_of).collect();
    let mut cur: Vec<Value> = b.to_vec();
    for i in (0..cur.len()).rev() {
        if !keep.contains(name_of(&cur[i])) {
            remove(ops, &["spec", field, &idx(i)]);
            cur.remove(i);
        }
    }
    for (i, want) in a.iter().enumerate() {
        let here = cur.get(i).map(name_of);
        if here != Some(name_of(want)) {
            if let Some(j) = cur.iter().position(|c| name_of(c) == name_of(want)) {
                remove(ops, &["spec", field, &idx(j)]);
                cur.remove(j);
            }
            let at = if i >= cur.len() {
                "-".to_string()
            } else {
                idx(i)
            };
            add(ops, &["spec", field, &at], want.clone());
            cur.insert(i.min(cur.len()), want.clone());
            continue;
        }
        if &cur[i] == want {
            continue;
        }
        match (per_key, cur[i].as_object(), want.as_object()) {
            (true, Some(have), Some(w)) => {
                for (k, v) in w {
                    if have.get(k) != Some(v) {
                        add(ops, &["spec", field, &idx(i), k], v.clone());
                    }
                }
                for k in have.keys() {
                    if !w.contains_key(k) {
                        remove(ops, &["spec", field, &idx(i), k]);
                    }
                }
            }
            _ => add_replace(ops, field, i, want),
        }
        cur[i] = want.clone();
    }
    for i in (a.len()..cur.len()).rev() {
        remove(ops, &["spec", field, &idx(i)]);
    }
}

fn add_replace(ops: &mut Vec<PatchOperation>, field: &str, i: usize, want: &Value) {
    ops.push(PatchOperation::Replace(json_patch::ReplaceOperation {
        path: ptr(&["spec", field, &i.to_string()]),
        value: want.clone(),
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_ops_moves_and_inserts() {
        let b = json!({ "spec": { "containers": [ {"name": "a"}, {"name": "mcp-warden"}, {"name": "c"} ] } });
        let a = json!({ "spec": { "containers": [ {"name": "mcp-warden"}, {"name": "a", "x": 1}, {"name": "c"}, {"name": "d"} ] } });
        let p = ops_between(&b, &a);
        let mut c = b.clone();
        json_patch::patch(&mut c, &p.0).unwrap();
        assert_eq!(c, a);
        // The readable path was taken, not the generic diff.
        let s = serde_json::to_string(&p).unwrap();
        assert!(s.contains("/spec/containers/1/x"), "{s}");
    }
}
