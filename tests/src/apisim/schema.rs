//! Custom resources against their CRD's structural schema, as
//! kube-apiserver's apiextensions-apiserver handles them on create, update
//! and patch (on the object the patch produced), and on `/status` writes.
//!
//! In the server's order:
//! 1. **Nulls**: a `null` map entry whose schema is not `nullable` and has no
//!    `default` is dropped (`PruneNonNullableNullsWithoutDefaults`, since
//!    1.20); a `null` left elsewhere (an array item) fails the type check.
//! 2. **Pruning**: fields the schema does not name are dropped, unless
//!    `x-kubernetes-preserve-unknown-fields: true` keeps them or
//!    `additionalProperties` describes them; `apiVersion`, `kind` and
//!    `metadata` of the resource (and of `x-kubernetes-embedded-resource`
//!    objects) are kept.
//! 3. **Defaults**: a missing field with a `default` gets it.
//! 4. **Validation**: `type` (`nullable`, `x-kubernetes-int-or-string`),
//!    `required`, `enum`, `format: date-time`, `properties`,
//!    `additionalProperties`, `items`. Failures are a 422 `Invalid` Status
//!    whose message lists every field as the server prints it:
//!    `AccessRequest.mcp-warden.io "x" is invalid: spec.group: Invalid value:
//!    "null": spec.group in body must be of type string: "null"` (several
//!    errors: `is invalid: [e1, e2]`).
//!
//! One quirk is reproduced on purpose: the kube-apiserver 1.20.2 this suite
//! builds (Debian's package, compiled with Go >= 1.18) vendors a
//! go-openapi/validate whose type check compares a value with
//! `reflect.Zero` of its type, and under those Go versions the empty string
//! is that zero value: an `""` in a non-`nullable` typed field is refused as
//! `null`, exactly as above. Servers built with their original Go (and every
//! server since kube-openapi replaced that check with `data == nil`) accept
//! `""`. kube-apisim refuses it, so that what passes here also passes the
//! oldest server the project supports; writers should omit empty optional
//! fields, and CRDs should mark fields that old writers send empty
//! `nullable: true`.

use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Map, Value};

/// Drops non-nullable nulls and unknown fields, applies defaults and
/// validates `obj` (a whole custom resource) against `schema` (the version's
/// `openAPIV3Schema`). Returns the field errors, as the server renders them.
pub fn admit(schema: &Value, obj: &mut Value) -> Vec<String> {
    prune_nulls(obj, Some(schema));
    prune(obj, schema, true);
    default(obj, Some(schema));
    let mut errors = Vec::new();
    validate(obj, schema, "", &mut errors);
    // The server's order follows Go map iteration; sorted, it is stable.
    errors.sort();
    errors.dedup();
    errors
}

/// The 422 `Invalid` Status for `errors` of the object `name` of `kind` in
/// `group`.
pub fn invalid(kind: &str, group: &str, name: &str, errors: &[String]) -> Status {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let list = match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    Status::new(
        Reason::Invalid,
        format!("{qualified} \"{name}\" is invalid: {list}"),
    )
    .with_details(kind, group, name)
}

fn str_of<'a>(s: &'a Value, key: &str) -> Option<&'a str> {
    s.get(key).and_then(Value::as_str)
}

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool) == Some(true)
}

/// The schema of field `key` of an object described by `s`.
fn field_schema<'a>(s: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = s?;
    if let Some(p) = s.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    s.get("additionalProperties").filter(|a| a.is_object())
}

fn prune_nulls(x: &mut Value, s: Option<&Value>) {
    match x {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let sub = field_schema(s, &k);
                let drop = m.get(&k).is_some_and(Value::is_null)
                    && sub
                        .is_some_and(|sub| !flag(sub, "nullable") && sub.get("default").is_none());
                if drop {
                    m.remove(&k);
                } else if let Some(v) = m.get_mut(&k) {
                    prune_nulls(v, sub);
                }
            }
        }
        Value::Array(a) => {
            let items = s.and_then(|s| s.get("items"));
            for v in a {
                prune_nulls(v, items);
            }
        }
        _ => {}
    }
}

fn prune(x: &mut Value, s: &Value, resource_root: bool) {
    match x {
        Value::Object(m) => {
            let keep_meta = resource_root || flag(s, "x-kubernetes-embedded-resource");
            let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    // ObjectMeta is the server's own type, not the schema's.
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match (sub, m.get_mut(&k)) {
                    (Some(sub), Some(v)) => prune(v, sub, false),
                    (None, _) if preserve => {}
                    (None, _) => {
                        m.remove(&k);
                    }
                    _ => {}
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for v in a {
                    prune(v, items, false);
                }
            }
        }
        _ => {}
    }
}

fn default(x: &mut Value, s: Option<&Value>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    if let Some(d) = sub.get("default") {
                        let missing = match m.get(k) {
                            None => true,
                            Some(Value::Null) => !flag(sub, "nullable"),
                            Some(_) => false,
                        };
                        if missing {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                }
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let sub = field_schema(Some(s), &k);
                if let Some(v) = m.get_mut(&k) {
                    default(v, sub);
                }
            }
        }
        Value::Array(a) => {
            let items = s.get("items");
            for v in a {
                default(v, items);
            }
        }
        _ => {}
    }
}

/// JSON type of a value as go-openapi names it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_error(path: &str, want: &str, got: &str) -> String {
    format!("{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\"")
}

/// `%#v` of a JSON scalar as Go prints it in `Unsupported value: ...`.
fn go_quote(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn validate(v: &Value, s: &Value, path: &str, errors: &mut Vec<String>) {
    let nullable = flag(s, "nullable");
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    let want = str_of(s, "type").unwrap_or("");
    // The field is the root object itself only for the resource; its path
    // is never empty below the root.
    let at = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if (!want.is_empty() || int_or_string) && !nullable {
            let want = if int_or_string {
                "integer,string"
            } else {
                want
            };
            errors.push(type_error(at, want, "null"));
        }
        return;
    }
    if v.as_str() == Some("") && !want.is_empty() && !nullable {
        // Debian's kube-apiserver 1.20.2 (Go >= 1.18): "" reads as null.
        errors.push(type_error(at, want, "null"));
        return;
    }
    let got = type_name(v);
    if int_or_string {
        if got != "integer" && got != "string" {
            errors.push(type_error(at, "integer,string", got));
            return;
        }
    } else if !want.is_empty() {
        let integral_float = got == "number" && v.as_f64().is_some_and(|f| f.fract() == 0.0);
        let ok = got == want
            || (want == "number" && got == "integer")
            || (want == "integer" && integral_float);
        if !ok {
            errors.push(type_error(at, want, got));
            return;
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        let supported: Vec<String> = values.iter().map(go_quote).collect();
        errors.push(format!(
            "{at}: Unsupported value: {}: supported values: {}",
            go_quote(v),
            supported.join(", ")
        ));
    }
    if let (Some(text), Some("date-time")) = (v.as_str(), str_of(s, "format"))
        && !is_date_time(text)
    {
        errors.push(format!(
            "{at}: Invalid value: \"{text}\": {at} in body must be of type date-time: \"{text}\""
        ));
    }
    match v {
        Value::Object(m) => validate_object(m, s, path, errors),
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, item) in a.iter().enumerate() {
                    validate(item, items, &format!("{at}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn validate_object(m: &Map<String, Value>, s: &Value, path: &str, errors: &mut Vec<String>) {
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.contains_key(r) {
            errors.push(format!("{}: Required value", child(path, r)));
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in m {
        if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
            validate(v, sub, &child(path, k), errors);
        }
    }
}

/// RFC 3339 date-time (what go-openapi's strfmt accepts for `date-time`).
fn is_date_time(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "required": ["spec"], "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
            "spec": {"type": "object", "required": ["verb"], "properties": {
                "verb": {"type": "string"},
                "group": {"type": "string"},
                "note": {"type": "string", "nullable": true},
                "count": {"type": "integer", "default": 1},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "at": {"type": "string", "format": "date-time"},
            }},
            "status": {"type": "object", "properties": {
                "state": {"type": "string", "enum": ["Pending", "Approved"]}}},
        }})
    }

    #[test]
    fn nulls_unknown_fields_and_defaults() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "whatever": 1},
            "spec": {"verb": "get", "group": null, "note": null, "extra": 1,
                     "labels": {"a": "b"}, "free": {"anything": {"deep": true}}},
            "junk": true});
        assert_eq!(admit(&schema(), &mut o), Vec::<String>::new());
        assert!(
            o["spec"].get("group").is_none(),
            "non-nullable null dropped"
        );
        assert!(o["spec"]["note"].is_null(), "nullable null kept");
        assert!(o["spec"].get("extra").is_none() && o.get("junk").is_none());
        assert_eq!(o["spec"]["count"], 1);
        assert_eq!(o["metadata"]["whatever"], 1, "metadata is not the schema's");
        assert_eq!(o["spec"]["free"]["anything"]["deep"], true);
    }

    #[test]
    fn errors_read_like_the_servers() {
        let mut o = json!({"spec": {"verb": 5, "group": "", "tags": ["a", null], "port": true,
            "labels": {"x": 1}, "at": "tomorrow"}, "status": {"state": "Gone"}});
        let e = admit(&schema(), &mut o);
        assert_eq!(
            e,
            vec![
                "spec.at: Invalid value: \"tomorrow\": spec.at in body must be of type date-time: \"tomorrow\"",
                "spec.group: Invalid value: \"null\": spec.group in body must be of type string: \"null\"",
                "spec.labels.x: Invalid value: \"integer\": spec.labels.x in body must be of type string: \"integer\"",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
                "spec.tags[1]: Invalid value: \"null\": spec.tags[1] in body must be of type string: \"null\"",
                "spec.verb: Invalid value: \"integer\": spec.verb in body must be of type string: \"integer\"",
                "status.state: Unsupported value: \"Gone\": supported values: \"Pending\", \"Approved\"",
            ]
        );
        let s = invalid("AccessRequest", "mcp-warden.io", "x", &e[1..2]);
        assert_eq!(s.code(), 422);
        assert_eq!(
            s.message,
            "AccessRequest.mcp-warden.io \"x\" is invalid: spec.group: Invalid value: \"null\": spec.group in body must be of type string: \"null\""
        );
        let mut o = json!({"spec": {}});
        assert_eq!(admit(&schema(), &mut o), vec!["spec.verb: Required value"]);
        let mut o = json!({});
        let e = admit(&schema(), &mut o);
        assert_eq!(e, vec!["spec: Required value"]);
        assert!(
            invalid("K", "g", "n", &["a".into(), "b".into()])
                .message
                .ends_with("is invalid: [a, b]")
        );
    }
}
