//! Label and field selectors, parsed and matched the way kube-apiserver does
//! (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key` for labels; `=`, `==`, `!=`
//! over a fixed set of fields per resource for fields).

use serde_json::Value;

/// Errors parsing a selector; both map to 400 BadRequest.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    Field(String, String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (requirements ANDed).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(pub Vec<LabelReq>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on top-level commas (commas inside parentheses belong to `in`).
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            let err = || SelectorError::Label(p.to_string());
            if p.is_empty() {
                return Err(err());
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(err());
                }
                LabelReq::NotExists(k.to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = p.split_once("==") {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = p.split_once('=') {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some(open) = p.find('(') {
                let head = p[..open].trim();
                let Some(list) = p[open + 1..].strip_suffix(')') else {
                    return Err(err());
                };
                let mut words = head.split_whitespace();
                let (Some(k), Some(op), None) = (words.next(), words.next(), words.next()) else {
                    return Err(err());
                };
                let vals: Vec<String> = list
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if vals.iter().any(|v| !valid_value(v)) {
                    return Err(err());
                }
                match op {
                    "in" => LabelReq::In(k.to_string(), vals),
                    "notin" => LabelReq::NotIn(k.to_string(), vals),
                    _ => return Err(err()),
                }
            } else {
                if p.contains(char::is_whitespace) {
                    return Err(err());
                }
                LabelReq::Exists(p.to_string())
            };
            let (k, v) = match &req {
                LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => (k, Some(v)),
                LabelReq::In(k, _) | LabelReq::NotIn(k, _) => (k, None),
                LabelReq::Exists(k) | LabelReq::NotExists(k) => (k, None),
            };
            if !valid_key(k) || v.is_some_and(|v| !valid_value(v)) {
                return Err(err());
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: (field, wanted value, negated).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(pub Vec<(String, String, bool)>);

/// The fields kube-apiserver supports in field selectors for a resource.
pub fn supported_fields(group: &str, resource: &str, custom: bool) -> &'static [&'static str] {
    if custom {
        return &["metadata.name", "metadata.namespace"];
    }
    match (group, resource) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("", "namespaces") => &["metadata.name", "status.phase"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

impl FieldSelector {
    /// Parses a `fieldSelector` and checks every field is supported.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(out));
        }
        for part in s.split(',') {
            let p = part.trim();
            let (k, v, neg) = if let Some((k, v)) = p.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, v, false)
            } else {
                return Err(SelectorError::Field(s.to_string(), p.to_string()));
            };
            let k = k.trim();
            if !supported.contains(&k) {
                return Err(SelectorError::UnsupportedField(k.to_string()));
            }
            out.push((k.to_string(), v.trim().to_string(), neg));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the object's fields satisfy every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, want, neg)| {
            let got = field_value(obj, k);
            (got == *want) != *neg
        })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The string value of a dotted field path, as the field-selector index sees it.
fn field_value(obj: &Value, path: &str) -> String {
    if path == "source" {
        return obj
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "fe"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("tier notin (be)"));
        assert!(m("app,tier"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("missing!=x"));
        assert!(!m("missing in (x)"));
        assert!(m("app in (web,db),tier=fe"));
        assert!(m(""));
    }

    #[test]
    fn label_errors() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("app=x y").is_err());
        assert!(LabelSelector::parse("app=,").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let f = supported_fields("", "pods", false);
        let m = |s: &str| FieldSelector::parse(s, f).unwrap().matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("status.phase==Running,spec.nodeName=n1"));
        assert!(!m("status.phase!=Running"));
        assert!(m("metadata.namespace!=other"));
        assert_eq!(
            FieldSelector::parse("foo=bar", f),
            Err(SelectorError::UnsupportedField("foo".into()))
        );
        assert!(FieldSelector::parse("status.phase", f).is_err());
        assert!(
            FieldSelector::parse("spec.nodeName=x", supported_fields("", "configmaps", false))
                .is_err()
        );
    }
}
