//! What kube-apiserver's registries do to an object on create and update:
//! name validation, generateName, system metadata (uid, creationTimestamp,
//! generation, managedFields) and per-type defaults and status (pods come up
//! Running, deployments report their replicas available, secrets fold
//! stringData into data, services get a cluster IP).

use super::registry::ResourceInfo;
use base64::Engine;
use mcp_warden_shared::status::{Reason, Status};
use rand::Rng;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU32, Ordering};

/// Counters for fake addresses.
#[derive(Debug, Default)]
pub struct Ips {
    pod: AtomicU32,
    svc: AtomicU32,
}

/// The current time in RFC 3339 (seconds precision, `Z`), as metadata uses.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// A DNS-1123 subdomain (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A DNS-1123 label (namespaces, services).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('.') && is_dns1123_subdomain(s)
}

fn label_names_only(ri: &ResourceInfo) -> bool {
    !ri.custom && ri.group.is_empty() && matches!(ri.resource.as_str(), "namespaces" | "services")
}

/// The 422 Invalid Status for a bad field.
pub fn invalid(ri: &ResourceInfo, name: &str, field: &str, value: &str, msg: &str) -> Status {
    let detail = if value.is_empty() && msg.starts_with("Required") {
        format!("{field}: {msg}")
    } else {
        format!("{field}: Invalid value: \"{value}\": {msg}")
    };
    Status::new(
        Reason::Invalid,
        format!("{} \"{name}\" is invalid: {detail}", ri.kind),
    )
    .with_details(&ri.kind, &ri.group, name)
}

/// Checks `metadata.name` (after generateName) against the type's rules.
pub fn validate_name(ri: &ResourceInfo, name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(invalid(
            ri,
            name,
            "metadata.name",
            "",
            "Required value: name or generateName is required",
        ));
    }
    if label_names_only(ri) {
        if !is_dns1123_label(name) {
            return Err(invalid(
                ri,
                name,
                "metadata.name",
                name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
    } else if !is_dns1123_subdomain(name) {
        return Err(invalid(
            ri,
            name,
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    Ok(())
}

/// The random suffix kube-apiserver appends to generateName.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A managedFields entry for `manager` covering the fields of `obj`.
pub fn managed_entry(
    manager: &str,
    operation: &str,
    api_version: &str,
    obj: &Value,
    subresource: Option<&str>,
) -> Value {
    fn fields(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(format!("f:{k}"), fields(x));
                }
                Value::Object(out)
            }
            _ => json!({}),
        }
    }
    let mut set = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                continue;
            }
            if k == "metadata" {
                let mut md = Map::new();
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = v.get(mk) {
                        md.insert(format!("f:{mk}"), fields(x));
                    }
                }
                if !md.is_empty() {
                    set.insert("f:metadata".into(), Value::Object(md));
                }
                continue;
            }
            set.insert(format!("f:{k}"), fields(v));
        }
    }
    let mut e = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": Value::Object(set),
    });
    if let Some(s) = subresource {
        e["subresource"] = json!(s);
    }
    e
}

/// Records `manager` in managedFields, replacing its previous entry for the
/// same operation.
pub fn track_manager(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let source = obj.clone();
    track_manager_for(obj, manager, operation, api_version, subresource, &source);
}

/// Like [`track_manager`], with the owned fields taken from `source` (for
/// apply: the applied configuration, not the merged object).
pub fn track_manager_for(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    source: &Value,
) {
    let entry = managed_entry(manager, operation, api_version, source, subresource);
    let list = obj["metadata"]
        .as_object_mut()
        .map(|m| m.entry("managedFields").or_insert_with(|| json!([])));
    if let Some(Value::Array(a)) = list {
        a.retain(|e| !(e["manager"] == manager && e["operation"] == operation));
        a.push(entry);
    }
}

/// Server-side apply: removes from `merged` the fields the manager applied
/// last time (`prev_fields`, a FieldsV1 set) that its new configuration no
/// longer contains.
pub fn prune_unapplied(merged: &mut Value, prev_fields: &Value, applied: &Value) {
    let (Some(prev), Some(m)) = (prev_fields.as_object(), merged.as_object_mut()) else {
        return;
    };
    for (fk, sub) in prev {
        let Some(k) = fk.strip_prefix("f:") else {
            continue;
        };
        match applied.get(k) {
            None => {
                m.remove(k);
            }
            Some(a) if sub.as_object().is_some_and(|s| !s.is_empty()) => {
                if let Some(child) = m.get_mut(k) {
                    prune_unapplied(child, sub, a);
                }
            }
            Some(_) => {}
        }
    }
}

/// The FieldsV1 set of `manager`'s last `operation` in an object.
pub fn manager_fields(obj: &Value, manager: &str, operation: &str) -> Option<Value> {
    obj.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| e["fieldsV1"].clone())
}

/// Per-type defaults and the status a running cluster would report soon
/// after create.
pub fn apply_defaults(ri: &ResourceInfo, obj: &mut Value, ips: &Ips) {
    if ri.custom {
        return;
    }
    match (ri.group.as_str(), ri.resource.as_str()) {
        ("", "namespaces") => {
            let name = obj["metadata"]["name"].clone();
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => pod_defaults(obj, ips),
        ("", "secrets") => {
            if obj["type"].as_str().is_none_or(str::is_empty) {
                obj["type"] = json!("Opaque");
            }
            fold_string_data(obj);
        }
        ("", "services") => {
            if obj["spec"]["type"].as_str().is_none() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
            if obj["spec"]["clusterIP"].as_str().is_none() {
                let n = ips.svc.fetch_add(1, Ordering::Relaxed) + 10;
                let ip = format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 1);
                obj["spec"]["clusterIP"] = json!(ip.clone());
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            if obj["spec"]["sessionAffinity"].is_null() {
                obj["spec"]["sessionAffinity"] = json!("None");
            }
            if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
                for p in ports {
                    if p["protocol"].is_null() {
                        p["protocol"] = json!("TCP");
                    }
                    if p["targetPort"].is_null() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("apps", "deployments") => {
            deployment_defaults(obj);
            deployment_status(obj);
        }
        _ => {}
    }
}

/// A Deployment's defaults, on create and on every update, as the apps/v1
/// defaulting does: the spec's and its pod template's (the template's
/// `metadata.creationTimestamp` is the `null` kube-apiserver writes).
pub fn deployment_defaults(obj: &mut Value) {
    {
        if obj["spec"]["replicas"].is_null() {
            obj["spec"]["replicas"] = json!(1);
        }
        if obj["spec"]["strategy"].is_null() {
            obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
        }
        for (k, v) in [
            ("revisionHistoryLimit", 10),
            ("progressDeadlineSeconds", 600),
        ] {
            if obj["spec"][k].is_null() {
                obj["spec"][k] = json!(v);
            }
        }
        let template = &mut obj["spec"]["template"];
        if template.is_object() {
            if !template["metadata"].is_object() {
                template["metadata"] = json!({});
            }
            if template["metadata"].get("creationTimestamp").is_none() {
                template["metadata"]["creationTimestamp"] = Value::Null;
            }
            pod_spec_defaults(&mut template["spec"]);
        }
    }
}

/// The defaults of a pod spec that hold for templates too (not the ones
/// admission or the scheduler add to a pod: service account, node).
fn pod_spec_defaults(spec: &mut Value) {
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("").to_string();
                if c["imagePullPolicy"].is_null() {
                    let latest = image.ends_with(":latest")
                        || !image.rsplit('/').next().unwrap_or("").contains(':');
                    c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
                }
                if c["terminationMessagePath"].is_null() {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                }
                if c["terminationMessagePolicy"].is_null() {
                    c["terminationMessagePolicy"] = json!("File");
                }
                if c["resources"].is_null() {
                    c["resources"] = json!({});
                }
            }
        }
    }
}

/// Validation kube-apiserver does for built-in types beyond names: a
/// ConfigMap's (and Secret's) keys, a Deployment's selector against its
/// template's labels. The messages are kube-apiserver's.
pub fn validate_builtin(ri: &ResourceInfo, name: &str, obj: &Value) -> Result<(), Status> {
    if ri.custom {
        return Ok(());
    }
    match (ri.group.as_str(), ri.resource.as_str()) {
        ("", "configmaps" | "secrets") => {
            if ri.resource == "secrets" {
                for v in obj["data"].as_object().into_iter().flat_map(|m| m.values()) {
                    let s = v.as_str().unwrap_or_default();
                    if let Err(e) = base64::engine::general_purpose::STANDARD.decode(s) {
                        let at = match e {
                            base64::DecodeError::InvalidByte(i, _) => i,
                            _ => 0,
                        };
                        return Err(Status::new(
                            Reason::BadRequest,
                            format!(
                                "Secret in version \"v1\" cannot be handled as a Secret: decode base64: illegal base64 data at input byte {at}"
                            ),
                        ));
                    }
                }
            }
            for field in ["data", "binaryData"] {
                for k in obj[field].as_object().into_iter().flat_map(|m| m.keys()) {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                    if !ok {
                        let msg = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
                        let f = format!("{field}[{k}]");
                        return Err(invalid(ri, name, &f, k, msg));
                    }
                }
            }
        }
        ("apps", "deployments") => {
            let selector = obj["spec"]["selector"]["matchLabels"].as_object();
            let labels = obj["spec"]["template"]["metadata"]["labels"].as_object();
            if let Some(sel) = selector {
                let matches = sel
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if !matches {
                    let shown: Vec<String> = labels
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| {
                            format!(
                                "{k:?}:{}",
                                v.as_str().map(|s| format!("{s:?}")).unwrap_or_default()
                            )
                        })
                        .collect();
                    let value = format!("map[string]string{{{}}}", shown.join(", "));
                    let f = "spec.template.metadata.labels";
                    let msg = "`selector` does not match template `labels`";
                    return Err(Status::new(
                        Reason::Invalid,
                        format!(
                            "{} \"{name}\" is invalid: {f}: Invalid value: {value}: {msg}",
                            kind_qualified(ri)
                        ),
                    )
                    .with_details(&ri.kind, &ri.group, name));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `Deployment.apps`: the kind as kube-apiserver's Invalid messages name it
/// (qualified by the group, except the core group).
fn kind_qualified(ri: &ResourceInfo) -> String {
    if ri.group.is_empty() {
        ri.kind.clone()
    } else {
        format!("{}.{}", ri.kind, ri.group)
    }
}

/// Folds `stringData` into base64 `data`, as the Secret strategy does.
pub fn fold_string_data(obj: &mut Value) {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("").to_string();
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
}

/// A Deployment's status as if its controller had rolled it out.
pub fn deployment_status(obj: &mut Value) {
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let now = now_rfc3339();
    obj["status"] = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now, "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now, "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."}
        ],
    });
    if replicas == 0 {
        for k in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            if let Some(m) = obj["status"].as_object_mut() {
                m.remove(k);
            }
        }
    }
}

fn pod_defaults(obj: &mut Value, ips: &Ips) {
    let spec = &mut obj["spec"];
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("serviceAccountName", json!("default")),
        ("nodeName", json!("apisim-node")),
        ("enableServiceLinks", json!(true)),
        ("securityContext", json!({})),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    if spec["serviceAccount"].is_null() {
        spec["serviceAccount"] = spec["serviceAccountName"].clone();
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("").to_string();
                if c["imagePullPolicy"].is_null() {
                    let latest = image.ends_with(":latest")
                        || !image.rsplit('/').next().unwrap_or("").contains(':');
                    c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
                }
                if c["terminationMessagePath"].is_null() {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                    c["terminationMessagePolicy"] = json!("File");
                }
                if c["resources"].is_null() {
                    c["resources"] = json!({});
                }
            }
        }
    }
    let n = ips.pod.fetch_add(1, Ordering::Relaxed) + 10;
    let ip = format!("127.0.{}.{}", (n / 250) % 250, n % 250 + 1);
    let now = now_rfc3339();
    let statuses: Vec<Value> = obj["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let image = c["image"].as_str().unwrap_or("");
                    json!({
                        "name": c["name"],
                        "image": image,
                        "imageID": format!("docker.io/library/{image}@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
                        "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                        "ready": true,
                        "started": true,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                        "lastState": {},
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    obj["status"] = json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
}

/// The status a CRD reports once established.
pub fn crd_status(obj: &mut Value) {
    let names = obj["spec"]["names"].clone();
    let now = now_rfc3339();
    obj["status"] = json!({
        "acceptedNames": names,
        "storedVersions": obj["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apisim::registry::Registry;

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_label("a.b"));
        let reg = Registry::default();
        let ns = reg.find("", "v1", "namespaces").unwrap();
        assert_eq!(
            validate_name(&ns, "a.b").unwrap_err().reason,
            Reason::Invalid
        );
        assert_eq!(validate_name(&ns, "").unwrap_err().code(), 422);
    }

    #[test]
    fn apply_prunes_only_what_the_manager_dropped() {
        let applied_before =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"k": "v", "gone": "x"}});
        let prev = managed_entry("m", "Apply", "v1", &applied_before, None)["fieldsV1"].clone();
        let mut merged = json!({"metadata": {"name": "n", "labels": {"a": "1", "b": "2", "other": "3"}}, "data": {"k": "v2", "gone": "x"}});
        let applied_now = json!({"metadata": {"labels": {"a": "1"}}, "data": {"k": "v2"}});
        prune_unapplied(&mut merged, &prev, &applied_now);
        assert_eq!(
            merged,
            json!({"metadata": {"name": "n", "labels": {"a": "1", "other": "3"}}, "data": {"k": "v2"}})
        );
    }

    #[test]
    fn secret_string_data_and_pod_status() {
        let reg = Registry::default();
        let ips = Ips::default();
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        apply_defaults(&reg.find("", "v1", "secrets").unwrap(), &mut s, &ips);
        assert_eq!(s["data"]["k"], "dg==");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        apply_defaults(&reg.find("", "v1", "pods").unwrap(), &mut p, &ips);
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }
}
