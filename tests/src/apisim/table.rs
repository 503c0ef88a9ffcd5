//! `meta.k8s.io/v1` Table and PartialObjectMetadata renderings, with the
//! columns kube-apiserver's printers use for each built-in resource and a
//! CRD's `additionalPrinterColumns` for custom resources.

use super::registry::ResourceInfo;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What each Table row carries in `object` (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the query value; kube-apiserver's default is Metadata.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(o) => Err(format!(
                "includeObject: Unsupported value: \"{o}\": supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

/// A PartialObjectMetadata for one object.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// kube's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "0s".into();
    }
    let s = secs;
    let m = s / 60;
    let h = m / 60;
    let d = h / 24;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn age(ts: Option<&str>, now: OffsetDateTime) -> String {
    match ts.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()) {
        Some(t) => human_duration((now - t).whole_seconds()),
        None => "<unknown>".into(),
    }
}

fn col(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x.to_string()
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Column definitions for a resource type.
pub fn columns(ri: &ResourceInfo) -> Vec<Value> {
    let name = col("Name", "string", "name", NAME_DESC, 0);
    let age = col("Age", "string", "", AGE_DESC, 0);
    if ri.custom {
        let mut cols = vec![name];
        if ri.printer_columns.is_empty() {
            cols.push(age);
        }
        for c in &ri.printer_columns {
            cols.push(col(
                &c.name,
                &c.type_,
                &c.format,
                &c.description,
                c.priority,
            ));
        }
        return cols;
    }
    match (ri.group.as_str(), ri.resource.as_str()) {
        ("", "pods") => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            col(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age,
            col(
                "IP",
                "string",
                "",
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            col(
                "Node",
                "string",
                "",
                "NodeName is a request to schedule this pod onto a specific node.",
                1,
            ),
            col(
                "Nominated Node",
                "string",
                "",
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
                1,
            ),
            col(
                "Readiness Gates",
                "string",
                "",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                1,
            ),
        ],
        ("", "namespaces") => vec![
            name,
            col("Status", "string", "", "The status of the namespace", 0),
            age,
        ],
        ("", "secrets") => vec![
            name,
            col("Type", "string", "", "The type of the secret", 0),
            col(
                "Data",
                "string",
                "",
                "The number of entries in the secret",
                0,
            ),
            age,
        ],
        ("", "configmaps") => vec![
            name,
            col(
                "Data",
                "string",
                "",
                "Data contains the configuration data.",
                0,
            ),
            age,
        ],
        ("", "serviceaccounts") => vec![
            name,
            col(
                "Secrets",
                "string",
                "",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                0,
            ),
            age,
        ],
        ("", "services") => vec![
            name,
            col(
                "Type",
                "string",
                "",
                "type determines how the Service is exposed.",
                0,
            ),
            col(
                "Cluster-IP",
                "string",
                "",
                "clusterIP is the IP address of the service.",
                0,
            ),
            col(
                "External-IP",
                "string",
                "",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
                0,
            ),
            col(
                "Port(s)",
                "string",
                "",
                "The list of ports that are exposed by this service.",
                0,
            ),
            age,
            col(
                "Selector",
                "string",
                "",
                "Route service traffic to pods with label keys and values matching this selector.",
                1,
            ),
        ],
        ("", "events") => vec![
            col(
                "Last Seen",
                "string",
                "",
                "Time when last occurrence of the event was seen.",
                0,
            ),
            col(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning).",
                0,
            ),
            col(
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            col(
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            col(
                "Subobject",
                "string",
                "",
                "The subobject that this event is about.",
                1,
            ),
            col(
                "Source",
                "string",
                "",
                "The component reporting this event.",
                1,
            ),
            col(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            col(
                "First Seen",
                "string",
                "",
                "The time at which the event was first recorded.",
                1,
            ),
            col(
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            col("Name", "string", "name", NAME_DESC, 1),
        ],
        ("apps", "deployments") => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            col(
                "Up-to-date",
                "string",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            col(
                "Available",
                "string",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age,
            col(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            col(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
            col(
                "Selector",
                "string",
                "",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                1,
            ),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![name, col("Created At", "date", "", "", 0)]
        }
        _ => vec![name, age],
    }
}

fn count(o: &Value, p: &str) -> usize {
    match o.pointer(p) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn selector_string(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// Evaluates a simple CRD jsonPath (`.a.b`, `.a[0].b`) to a cell value.
fn json_path(o: &Value, path: &str) -> Value {
    let mut cur = o;
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    for seg in p.split('.').filter(|s| !s.is_empty()) {
        let (name, idx) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !name.is_empty() {
            match cur.get(name) {
                Some(v) => cur = v,
                None => return Value::Null,
            }
        }
        if let Some(i) = idx {
            match cur.get(i) {
                Some(v) => cur = v,
                None => return Value::Null,
            }
        }
    }
    cur.clone()
}

/// The cells of one row.
pub fn cells(ri: &ResourceInfo, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let name = s(o, "/metadata/name").to_string();
    let created = o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    let age_s = age(created, now);
    if ri.custom {
        let mut out = vec![json!(name)];
        if ri.printer_columns.is_empty() {
            out.push(json!(age_s));
        }
        for c in &ri.printer_columns {
            let v = json_path(o, &c.json_path);
            out.push(match (c.type_.as_str(), &v) {
                ("date", Value::String(t)) => json!(age(Some(t), now)),
                (_, Value::Null) => Value::Null,
                (_, Value::String(_) | Value::Number(_) | Value::Bool(_)) => v.clone(),
                _ => json!(v.to_string()),
            });
        }
        return out;
    }
    match (ri.group.as_str(), ri.resource.as_str()) {
        ("", "pods") => {
            let specs = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses
                .map(|a| a.iter().filter(|c| c["ready"] == true).count())
                .unwrap_or(0);
            let restarts: i64 = statuses
                .map(|a| a.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
                .unwrap_or(0);
            let mut status = s(o, "/status/phase").to_string();
            if !s(o, "/status/reason").is_empty() {
                status = s(o, "/status/reason").to_string();
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                status = "Terminating".into();
            }
            vec![
                json!(name),
                json!(format!("{ready}/{specs}")),
                json!(status),
                json!(restarts.to_string()),
                json!(age_s),
                json!(or_none(s(o, "/status/podIP"))),
                json!(or_none(s(o, "/spec/nodeName"))),
                json!(or_none(s(o, "/status/nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        ("", "namespaces") => vec![json!(name), json!(s(o, "/status/phase")), json!(age_s)],
        ("", "secrets") => vec![
            json!(name),
            json!(s(o, "/type")),
            json!(count(o, "/data") as u64),
            json!(age_s),
        ],
        ("", "configmaps") => vec![
            json!(name),
            json!((count(o, "/data") + count(o, "/binaryData")) as u64),
            json!(age_s),
        ],
        ("", "serviceaccounts") => vec![
            json!(name),
            json!(count(o, "/secrets") as u64),
            json!(age_s),
        ],
        ("", "services") => {
            let ports = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                None => format!("{}/{proto}", p["port"]),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(s(o, "/spec/type")),
                json!(or_none(s(o, "/spec/clusterIP"))),
                json!("<none>"),
                json!(ports),
                json!(age_s),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("", "events") => {
            let last = o
                .pointer("/lastTimestamp")
                .and_then(Value::as_str)
                .or_else(|| o.pointer("/eventTime").and_then(Value::as_str))
                .or(created);
            let first = o
                .pointer("/firstTimestamp")
                .and_then(Value::as_str)
                .or(created);
            let obj = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            vec![
                json!(age(last, now)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(obj),
                json!(s(o, "/involvedObject/fieldPath")),
                json!(s(o, "/source/component")),
                json!(s(o, "/message")),
                json!(age(first, now)),
                json!(
                    o.pointer("/count")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                        .to_string()
                ),
                json!(name),
            ]
        }
        ("apps", "deployments") => {
            let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let cs = o
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
            let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
            let sel = o
                .pointer("/spec/selector/matchLabels")
                .map(|m| selector_string(Some(m)))
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    n("/status/readyReplicas"),
                    n("/spec/replicas")
                )),
                json!(n("/status/updatedReplicas")),
                json!(n("/status/availableReplicas")),
                json!(age_s),
                json!(names.join(",")),
                json!(images.join(",")),
                json!(sel),
            ]
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![json!(name), json!(created.unwrap_or(""))]
        }
        _ => vec![json!(name), json!(age_s)],
    }
}

/// One Table row.
pub fn row(ri: &ResourceInfo, o: &Value, inc: IncludeObject, now: OffsetDateTime) -> Value {
    let mut r = json!({"cells": cells(ri, o, now)});
    match inc {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial(o),
        IncludeObject::Object => r["object"] = o.clone(),
    }
    r
}

/// A whole Table; `list_meta` becomes its metadata.
pub fn table(
    ri: &ResourceInfo,
    objs: &[Value],
    list_meta: Value,
    inc: IncludeObject,
    with_columns: bool,
    now: OffsetDateTime,
) -> Value {
    let rows: Vec<Value> = objs.iter().map(|o| row(ri, o, inc, now)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
    });
    if with_columns {
        t["columnDefinitions"] = json!(columns(ri));
    }
    t["rows"] = json!(rows);
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apisim::registry::{Registry, from_crd};

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-01-01T00:10:00Z", &Rfc3339).unwrap()
    }

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
    }

    #[test]
    fn pod_rows_and_metadata_objects() {
        let reg = Registry::default();
        let ri = reg.find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web-0", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "127.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 2}]}});
        let t = table(
            &ri,
            &[pod],
            json!({"resourceVersion": "5"}),
            IncludeObject::Metadata,
            true,
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["columnDefinitions"][1]["name"], "Ready");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web-0",
                "1/2",
                "Running",
                "3",
                "10m",
                "127.0.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let none = table(&ri, &[], json!({}), IncludeObject::None, false, now());
        assert!(none.get("columnDefinitions").is_none());
    }

    #[test]
    fn crd_printer_columns() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Color", "type": "string", "jsonPath": ".spec.color"}]}]}});
        let ri = from_crd(&crd).unwrap().remove(0);
        let w = json!({"metadata": {"name": "w1"}, "spec": {"size": 3}});
        let c = cells(&ri, &w, now());
        assert_eq!(c, vec![json!("w1"), json!(3), Value::Null]);
        assert_eq!(columns(&ri).len(), 3);
    }
}
