//! Injection: what the pod gets. [`transform`] turns a pod into the
//! injected pod (the sidecar container, its volumes, the app containers
//! rewired to it, `hostAliases`, the status annotation) as plain JSON; the
//! parts are public so that tests and docs can show them.

use super::{RefuseReason, name_of};
use crate::config::{InjectConfig, SidecarForm};
use mcp_warden_shared::contract::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The env every app container gets, pointing in-cluster config at the sidecar.
pub fn app_env(config: &InjectConfig) -> Vec<(&'static str, String)> {
    let port = config.api_port.to_string();
    let url = format!("tcp://127.0.0.1:{port}");
    vec![
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT", port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
        ("KUBERNETES_PORT", url.clone()),
        ("KUBERNETES_PORT_443_TCP", url),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_string()),
        ("KUBERNETES_PORT_443_TCP_PORT", port),
        ("KUBERNETES_PORT_443_TCP_ADDR", "127.0.0.1".to_string()),
    ]
}

/// The names in-cluster clients use for the API server, which `hostAliases`
/// send to the sidecar on 127.0.0.1.
pub fn api_host_names(config: &InjectConfig) -> Vec<String> {
    let domain = config.cluster_domain.trim_end_matches('.');
    vec![
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{domain}"),
    ]
}

/// Where the names of [`api_host_names`] go.
pub const LOOPBACK: &str = "127.0.0.1";

/// The first `hostAliases` entry of the pod that sends one of our names to
/// another address: `(name, ip)`.
pub(super) fn host_alias_conflict(
    spec: &Map<String, Value>,
    names: &[String],
) -> Option<(String, String)> {
    for entry in spec
        .get("hostAliases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ip = entry.get("ip").and_then(Value::as_str).unwrap_or("");
        if ip == LOOPBACK {
            continue;
        }
        for h in entry
            .get("hostnames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                return Some((h.to_string(), ip.to_string()));
            }
        }
    }
    None
}

/// The pod's `hostAliases` plus one entry for the names of ours not yet on
/// 127.0.0.1 (none: unchanged, which keeps a second pass a no-op).
fn with_host_aliases(existing: Option<&Value>, names: &[String]) -> Value {
    let mut entries: Vec<Value> = existing
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let on_loopback: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.get("ip").and_then(Value::as_str) == Some(LOOPBACK))
        .flat_map(|e| {
            e.get("hostnames")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|h| h.as_str().map(str::to_ascii_lowercase))
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !on_loopback.contains(&n.to_ascii_lowercase()))
        .collect();
    if !missing.is_empty() {
        entries.push(json!({ "ip": LOOPBACK, "hostnames": missing }));
    }
    Value::Array(entries)
}

pub(super) fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn volumes(spec: &Map<String, Value>) -> Vec<Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A volume carrying a token the API server accepts: the admission plugin's
/// `kube-api-access-*` volume or a hand-written projected volume with a
/// `serviceAccountToken` for no audience or an API server audience. A token
/// for another audience (Vault, a cloud IAM, ...) is left to the app.
pub fn is_api_token_volume(volume: &Value, config: &InjectConfig) -> bool {
    if name_of(volume) == TOKEN_VOLUME {
        return false;
    }
    let Some(sources) = volume
        .pointer("/projected/sources")
        .and_then(Value::as_array)
    else {
        return false;
    };
    sources.iter().any(|s| match s.get("serviceAccountToken") {
        Some(t) => match t.get("audience").and_then(Value::as_str) {
            None | Some("") => true,
            Some(aud) => config.api_audiences.iter().any(|a| a == aud),
        },
        None => false,
    })
}

/// True when `have` contains everything `want` says (objects: every key of
/// `want`, recursively; arrays: same length, element by element). The API
/// server's defaulting only adds fields, so an injected pod covers what the
/// webhook would add.
pub fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| covers(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| covers(a, b))
        }
        _ => have == want,
    }
}

fn run_as_user(c: &Value) -> Option<i64> {
    c.pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
}

/// The injected pod. Running it on its own output yields the same output.
pub fn transform(
    pod: &Value,
    config: &InjectConfig,
    form: SidecarForm,
    warnings: &mut Vec<String>,
) -> Result<Value, RefuseReason> {
    let mut out = pod.clone();
    let spec_v = out.get("spec").cloned().unwrap_or(Value::Null);
    let Some(spec) = spec_v.as_object() else {
        return Err(RefuseReason::InvalidPod(
            "spec is missing or not an object".to_string(),
        ));
    };
    let list = |key: &str| -> Vec<Value> {
        spec.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let init: Vec<Value> = list("initContainers");
    let containers: Vec<Value> = list("containers");
    let ephemeral: Vec<Value> = list("ephemeralContainers");

    // Token volumes to take away (and our own, in case an app mounts it).
    let old_volumes = volumes(spec);
    let mut token_names: BTreeSet<String> = old_volumes
        .iter()
        .filter(|v| is_api_token_volume(v, config))
        .map(|v| name_of(v).to_string())
        .collect();
    token_names.insert(TOKEN_VOLUME.to_string());

    // The sidecar's uid must differ from every uid the app states.
    let mut app_uids: BTreeSet<i64> = BTreeSet::new();
    if let Some(u) = spec
        .get("securityContext")
        .and_then(|s| s.get("runAsUser"))
        .and_then(Value::as_i64)
    {
        app_uids.insert(u);
    }
    for c in init.iter().chain(&containers).chain(&ephemeral) {
        if name_of(c) != SIDECAR_NAME {
            app_uids.extend(run_as_user(c));
        }
    }
    let mut uid = config.sidecar_uid;
    while app_uids.contains(&uid) {
        uid += 1;
    }
    if uid != config.sidecar_uid {
        warnings.push(format!(
            "mcp-warden: the app runs as uid {}, so the sidecar runs as uid {uid}",
            config.sidecar_uid
        ));
    }

    let annotations = string_map(pod.pointer("/metadata/annotations"));
    let policy_cm = annotations
        .get(POLICY_ANNOTATION)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| config.policy_config_map.clone());

    // Volumes: drop the token volumes, refresh ours in place, append missing.
    let ours = our_volumes(config, &policy_cm);
    let mut new_volumes: Vec<Value> = Vec::new();
    for v in &old_volumes {
        let name = name_of(v);
        if let Some(want) = ours.iter().find(|o| name_of(o) == name) {
            new_volumes.push(if covers(v, want) {
                v.clone()
            } else {
                want.clone()
            });
        } else if !token_names.contains(name) {
            new_volumes.push(v.clone());
        }
    }
    for want in &ours {
        if !new_volumes.iter().any(|v| name_of(v) == name_of(want)) {
            new_volumes.push(want.clone());
        }
    }

    // The kubelet's default grace period when the pod sets none.
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let mut sidecar = sidecar_container(config, uid, form, grace);
    if let Some(port) = super::mcp_port(pod, config)? {
        with_mcp_front(&mut sidecar, port);
    }
    let existing_sidecar = init
        .iter()
        .chain(&containers)
        .find(|c| name_of(c) == SIDECAR_NAME)
        .cloned();
    let sidecar = match existing_sidecar {
        Some(have) if covers(&have, &sidecar) => have,
        _ => sidecar,
    };

    let env = app_env(config);
    let rewire_all = |cs: &[Value]| -> Vec<Value> {
        cs.iter()
            .filter(|c| name_of(c) != SIDECAR_NAME)
            .map(|c| rewire(c, &env, &token_names))
            .collect()
    };
    let mut new_init = rewire_all(&init);
    let mut new_containers = rewire_all(&containers);
    let new_ephemeral = rewire_all(&ephemeral);
    match form {
        SidecarForm::Native => new_init.insert(0, sidecar),
        SidecarForm::Container => new_containers.insert(0, sidecar),
    }
    let host_aliases = with_host_aliases(spec.get("hostAliases"), &api_host_names(config));

    let Some(spec_out) = out.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(RefuseReason::InvalidPod(
            "spec is missing or not an object".to_string(),
        ));
    };
    spec_out.insert(
        "automountServiceAccountToken".to_string(),
        Value::Bool(false),
    );
    spec_out.insert("volumes".to_string(), Value::Array(new_volumes));
    spec_out.insert("hostAliases".to_string(), host_aliases);
    if !new_init.is_empty() {
        spec_out.insert("initContainers".to_string(), Value::Array(new_init));
    }
    spec_out.insert("containers".to_string(), Value::Array(new_containers));
    if !new_ephemeral.is_empty() {
        spec_out.insert(
            "ephemeralContainers".to_string(),
            Value::Array(new_ephemeral),
        );
    }

    let Some(root) = out.as_object_mut() else {
        return Err(RefuseReason::InvalidPod("not a JSON object".to_string()));
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        return Err(RefuseReason::InvalidPod(
            "metadata is not an object".to_string(),
        ));
    }
    let ann = meta
        .as_object_mut()
        .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
    match ann {
        Some(Value::Object(a)) => {
            a.insert(
                STATUS_ANNOTATION.to_string(),
                Value::String(STATUS_INJECTED.to_string()),
            );
        }
        Some(a) => *a = json!({ STATUS_ANNOTATION: STATUS_INJECTED }),
        None => {}
    }
    Ok(out)
}

/// One app container with the sidecar's files at the service-account path
/// (and wherever it mounted a token volume) and the rewritten env.
fn rewire(c: &Value, env: &[(&'static str, String)], token_volumes: &BTreeSet<String>) -> Value {
    let mut c = c.clone();
    let Some(obj) = c.as_object_mut() else {
        return c;
    };

    let mut new_env: Vec<Value> = obj
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (name, value) in env {
        let want = json!({ "name": name, "value": value });
        let mut found = false;
        for e in new_env.iter_mut().filter(|e| name_of(e) == *name) {
            *e = want.clone();
            found = true;
        }
        if !found {
            new_env.push(want);
        }
    }
    obj.insert("env".to_string(), Value::Array(new_env));

    let sa_mount =
        json!({ "name": LOCAL_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": true });
    let is_sa_path = |m: &Value| {
        m.get("mountPath")
            .and_then(Value::as_str)
            .map(|p| p.trim_end_matches('/'))
            == Some(SERVICE_ACCOUNT_DIR)
    };
    let mut mounts: Vec<Value> = Vec::new();
    let mut sa_done = false;
    for m in obj
        .get("volumeMounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if is_sa_path(&m) {
            if !sa_done {
                mounts.push(if covers(&m, &sa_mount) {
                    m
                } else {
                    sa_mount.clone()
                });
                sa_done = true;
            }
        } else if token_volumes.contains(name_of(&m)) {
            // A token mounted elsewhere gets the local files at the same path.
            let mut local = json!({ "name": LOCAL_VOLUME, "readOnly": true });
            for key in ["mountPath", "subPath"] {
                if let Some(v) = m.get(key) {
                    local[key] = v.clone();
                }
            }
            mounts.push(local);
        } else {
            mounts.push(m);
        }
    }
    if !sa_done {
        mounts.push(sa_mount);
    }
    obj.insert("volumeMounts".to_string(), Value::Array(mounts));
    c
}

fn our_volumes(config: &InjectConfig, policy_cm: &str) -> Vec<Value> {
    let mut v = vec![
        json!({
            "name": TOKEN_VOLUME,
            "projected": { "sources": [
                { "serviceAccountToken": { "path": files::TOKEN, "expirationSeconds": config.token_expiration_seconds } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [ { "key": "ca.crt", "path": files::CA_CRT } ] } },
                { "downwardAPI": { "items": [ { "path": files::NAMESPACE, "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } } ] } },
            ] }
        }),
        json!({ "name": LOCAL_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }),
        json!({ "name": SPOOL_VOLUME, "emptyDir": { "sizeLimit": config.spool_size_limit } }),
        json!({
            "name": POLICY_VOLUME,
            "configMap": { "name": policy_cm, "items": [ { "key": POLICY_KEY, "path": POLICY_KEY } ], "optional": true }
        }),
    ];
    if !config.collector_ca_secret.is_empty() {
        v.push(json!({
            "name": COLLECTOR_CA_VOLUME,
            "secret": { "secretName": config.collector_ca_secret, "items": [ { "key": "ca.crt", "path": files::CA_CRT } ] }
        }));
    }
    if !config.collector_token_secret.is_empty() {
        v.push(json!({
            "name": COLLECTOR_TOKEN_VOLUME,
            "secret": { "secretName": config.collector_token_secret, "items": [ { "key": "token", "path": files::TOKEN } ] }
        }));
    }
    v
}

/// How long the container form's `postStart` hook waits for `/readyz` (the
/// startup probe's budget: 120 tries, 1 s apart).
pub const WAIT_READY_TIMEOUT_SECONDS: i64 = 120;

/// The sidecar container exactly as the webhook adds it, in `form`, for a pod
/// whose `terminationGracePeriodSeconds` is `grace`.
pub fn sidecar_container(config: &InjectConfig, uid: i64, form: SidecarForm, grace: i64) -> Value {
    let field = |path: &str| json!({ "fieldRef": { "apiVersion": "v1", "fieldPath": path } });
    // The admin listener binds the pod IP only (where the kubelet's probes
    // and Prometheus reach it), not every address: `POD_IP` comes from the
    // downward API and is expanded by the kubelet in the entry after it.
    let mut vars = vec![
        json!({ "name": env::LISTEN, "value": format!("{LOOPBACK}:{}", config.api_port) }),
        json!({ "name": env::POD_IP, "valueFrom": field("status.podIP") }),
        json!({ "name": env::ADMIN_LISTEN, "value": format!("$({}):{}", env::POD_IP, config.admin_port) }),
        json!({ "name": env::UPSTREAM_TOKEN_FILE, "value": UPSTREAM_TOKEN_FILE }),
        json!({ "name": env::UPSTREAM_CA_FILE, "value": UPSTREAM_CA_FILE }),
        json!({ "name": env::LOCAL_DIR, "value": LOCAL_DIR }),
        json!({ "name": env::POLICY_FILE, "value": POLICY_FILE }),
        json!({ "name": env::SPOOL_DIR, "value": SPOOL_DIR }),
        json!({ "name": env::COLLECTOR_FORMAT, "value": config.collector_format.as_str() }),
    ];
    if !config.collector_url.is_empty() {
        vars.push(json!({ "name": env::COLLECTOR_URL, "value": config.collector_url }));
    }
    if !config.collector_ca_secret.is_empty() {
        vars.push(json!({ "name": env::COLLECTOR_CA_FILE, "value": format!("{COLLECTOR_CA_DIR}/{}", files::CA_CRT) }));
    }
    if !config.collector_token_secret.is_empty() {
        vars.push(json!({ "name": env::COLLECTOR_TOKEN_FILE, "value": format!("{COLLECTOR_TOKEN_DIR}/{}", files::TOKEN) }));
    }
    if !config.cluster_name.is_empty() {
        vars.push(json!({ "name": env::CLUSTER_NAME, "value": config.cluster_name }));
    }
    vars.push(json!({ "name": env::CLUSTER_DOMAIN, "value": config.cluster_domain }));
    if config.https_alias_port != 0 {
        vars.push(json!({ "name": env::LISTEN_HTTPS_ALIAS, "value": format!("{LOOPBACK}:{}", config.https_alias_port) }));
    }
    let eu = &config.end_users;
    if !eu.issuer_urls.is_empty() {
        vars.push(json!({ "name": env::OIDC_ISSUER_URL, "value": eu.issuer_urls.join(",") }));
        vars.push(json!({ "name": env::OIDC_AUDIENCE, "value": eu.audience }));
        for (name, v) in [
            (env::OIDC_USERNAME_CLAIM, &eu.username_claim),
            (env::OIDC_USERNAME_PREFIX, &eu.username_prefix),
            (env::OIDC_GROUPS_CLAIM, &eu.groups_claim),
            (env::OIDC_GROUPS_PREFIX, &eu.groups_prefix),
        ] {
            if let Some(v) = v {
                vars.push(json!({ "name": name, "value": v }));
            }
        }
        if eu.impersonate {
            vars.push(json!({ "name": env::IMPERSONATE_END_USER, "value": "true" }));
        }
    }
    vars.push(json!({ "name": env::POD_NAME, "valueFrom": field("metadata.name") }));
    vars.push(json!({ "name": env::POD_NAMESPACE, "valueFrom": field("metadata.namespace") }));

    let mut mounts = vec![
        json!({ "name": TOKEN_VOLUME, "mountPath": UPSTREAM_DIR, "readOnly": true }),
        json!({ "name": LOCAL_VOLUME, "mountPath": LOCAL_DIR }),
        json!({ "name": SPOOL_VOLUME, "mountPath": SPOOL_DIR }),
        json!({ "name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": true }),
    ];
    if !config.collector_ca_secret.is_empty() {
        mounts.push(
            json!({ "name": COLLECTOR_CA_VOLUME, "mountPath": COLLECTOR_CA_DIR, "readOnly": true }),
        );
    }
    if !config.collector_token_secret.is_empty() {
        mounts.push(json!({ "name": COLLECTOR_TOKEN_VOLUME, "mountPath": COLLECTOR_TOKEN_DIR, "readOnly": true }));
    }

    // Binding 127.0.0.1:443 as a non-root user takes NET_BIND_SERVICE, the
    // one capability the restricted Pod Security Standard lets a container add.
    let capabilities = if (1..1024).contains(&config.https_alias_port) {
        json!({ "drop": ["ALL"], "add": ["NET_BIND_SERVICE"] })
    } else {
        json!({ "drop": ["ALL"] })
    };
    let mut c = json!({
        "name": SIDECAR_NAME,
        "image": config.sidecar_image,
        "imagePullPolicy": config.image_pull_policy,
        "ports": [ { "name": ADMIN_PORT_NAME, "containerPort": config.admin_port, "protocol": "TCP" } ],
        "env": vars,
        "resources": { "requests": config.resources.requests, "limits": config.resources.limits },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": uid,
            "runAsGroup": uid,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": capabilities,
            "seccompProfile": { "type": "RuntimeDefault" }
        },
        "startupProbe": {
            "httpGet": { "path": READYZ_PATH, "port": config.admin_port },
            "periodSeconds": 1, "failureThreshold": 120, "timeoutSeconds": 1
        },
        // After start, /readyz keeps saying whether requests can be served:
        // e.g. not while fail-closed recording refuses every request with
        // 503 (spool full), so the pod leaves its Service's endpoints.
        "readinessProbe": {
            "httpGet": { "path": READYZ_PATH, "port": config.admin_port },
            "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 1
        },
        "livenessProbe": {
            "httpGet": { "path": HEALTHZ_PATH, "port": config.admin_port },
            "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 1
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError"
    });
    match form {
        SidecarForm::Native => c["restartPolicy"] = json!("Always"),
        SidecarForm::Container => {
            let admin = config.admin_port.to_string();
            // Leave the sidecar 5 s of the grace period for its own drain.
            let drain_max = (grace - 5).max(1);
            c["lifecycle"] = json!({
                "postStart": { "exec": { "command": [
                    SIDECAR_BINARY, "wait-ready", "--admin-port", admin,
                    "--timeout", format!("{WAIT_READY_TIMEOUT_SECONDS}s"),
                ] } },
                "preStop": { "exec": { "command": [
                    SIDECAR_BINARY, "wait-drain", "--admin-port", admin,
                    "--min", "2s", "--max", format!("{drain_max}s"),
                ] } },
            });
        }
    }
    c
}

/// Has the sidecar `c` front the MCP server listening on 127.0.0.1:`port`,
/// on [`MCP_PORT`] of every address (the Service's and `kubectl
/// port-forward`'s way in).
pub fn with_mcp_front(c: &mut Value, port: u16) {
    if let Some(vars) = c["env"].as_array_mut() {
        vars.push(json!({ "name": env::MCP_UPSTREAM, "value": format!("{LOOPBACK}:{port}") }));
        vars.push(json!({ "name": env::MCP_LISTEN, "value": format!("0.0.0.0:{MCP_PORT}") }));
    }
    if let Some(ports) = c["ports"].as_array_mut() {
        ports.push(json!({ "name": MCP_PORT_NAME, "containerPort": MCP_PORT, "protocol": "TCP" }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_ignores_defaulted_fields() {
        assert!(covers(
            &json!({"a": 1, "b": {"c": 2, "d": 3}}),
            &json!({"b": {"c": 2}})
        ));
        assert!(!covers(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!covers(&json!({"a": 1}), &json!({"a": 2})));
    }
}
