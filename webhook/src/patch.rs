//! The pure core of the webhook: which pods to inject, and the RFC 6902 patch
//! that injects one.
//!
//! The patch is computed in two steps. [`transform`] builds the injected pod
//! from the original as plain JSON, written so that running it on its own
//! output changes nothing (that is what makes `reinvocationPolicy: IfNeeded`
//! and a second `inject` safe). Then [`ops_between`] turns the difference into
//! a short, readable list of operations (whole-field `add`s per container,
//! `remove`s of token volumes, an insert of the sidecar), and the result is
//! checked by applying it; should that ever disagree, the generic
//! `json_patch::diff` is used instead, so the patch is always exact.
//!
//! Why each change is made:
//! - The app's env gets `KUBERNETES_SERVICE_HOST=127.0.0.1` etc. as *explicit*
//!   container env. The kubelet computes the service-link variables for the
//!   `kubernetes` Service first and lets a container's own `env` override
//!   them, and `env` also beats `envFrom`; so explicit entries are the only
//!   way to win everywhere, and values the pod set itself are overwritten.
//! - The real token volume is removed and `automountServiceAccountToken:
//!   false` set, so that the ServiceAccount admission plugin (which runs on the
//!   pod before the webhook, and on the templates' pods after `inject -f`)
//!   never adds a token volume back.
//! - The sidecar runs as its own uid: the kubelet makes a projected token
//!   file owned by the runAsUser of the containers that mount it (only the
//!   sidecar), so the app, under another uid, could not read it even if it
//!   found it.
//! - `hostAliases` send `kubernetes`, `kubernetes.default`,
//!   `kubernetes.default.svc` and `kubernetes.default.svc.<clusterDomain>` to
//!   127.0.0.1 in every container, where the sidecar also listens on port
//!   443: many clients (kubernetes-mcp-server, Argo CD, Vault) use
//!   `https://kubernetes.default.svc` rather than the env. The pod's own
//!   entries are kept; one that sends those names elsewhere is refused.
//! - The sidecar's form is an input ([`SidecarForm`]), resolved by the caller
//!   from `nativeSidecar` and the server's version, so the patch stays a
//!   pure function. In the container form the sidecar is the first regular
//!   container with a `postStart` hook (`mcp-warden-sidecar wait-ready`):
//!   the kubelet starts containers in order and does not start the next one
//!   before the hook returns, so the app starts only once the sidecar is
//!   ready (as Istio's `holdApplicationUntilProxyStarts`). Its `preStop` hook
//!   (`wait-drain`) holds the sidecar's SIGTERM until the app's connections
//!   are gone, so the app keeps its API access while it shuts down.
//! - The API server defaults fields of what the webhook adds (probe
//!   timeouts, `defaultMode`, `terminationMessagePath`, ...) before a
//!   reinvocation; "already there" is therefore "covers what we would add",
//!   not strict equality.

use crate::config::{InjectConfig, SidecarForm};
use crate::names::*;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
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
fn host_alias_conflict(spec: &Map<String, Value>, names: &[String]) -> Option<(String, String)> {
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

/// How the pod reached the webhook; decides what a missing token volume means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Through the API server: the ServiceAccount admission plugin has already
    /// run, so a pod without a token volume has nothing to guard.
    Admission,
    /// `inject -f` on a manifest: templates never carry the token volume (it
    /// is added at pod creation), so the webhook's own volume is added anyway.
    Offline,
}

/// Why a pod is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `kube-system`, the webhook's own namespace or a configured exclusion.
    ExcludedNamespace(String),
    /// Neither the namespace label nor the pod label asks for injection.
    NotSelected,
    /// The pod has `mcp-warden.io/inject: "false"`.
    OptedOut,
    /// The pod (or, through admission, its ServiceAccount) mounts no API token.
    NoToken,
}

impl SkipReason {
    /// Short label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::ExcludedNamespace(_) => "excluded-namespace",
            SkipReason::NotSelected => "not-selected",
            SkipReason::OptedOut => "opted-out",
            SkipReason::NoToken => "no-token",
        }
    }

    /// A warning for the user who created the pod, where one is due.
    pub fn warning(&self) -> Option<String> {
        match self {
            SkipReason::NoToken => Some(
                "mcp-warden: sidecar not injected: the pod mounts no service-account token \
                 (automountServiceAccountToken: false on the pod or its ServiceAccount), \
                 so there is nothing to guard"
                    .to_string(),
            ),
            _ => None,
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::ExcludedNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            SkipReason::NotSelected => write!(
                f,
                "neither namespace label {NAMESPACE_INJECTION_LABEL}={NAMESPACE_INJECTION_ENABLED} \
                 nor pod label {POD_INJECT_LABEL}=\"true\" is set"
            ),
            SkipReason::OptedOut => write!(f, "pod label {POD_INJECT_LABEL}=\"false\""),
            SkipReason::NoToken => write!(f, "the pod mounts no service-account token"),
        }
    }
}

/// Why a pod cannot be admitted with the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// `hostNetwork: true`.
    #[error(
        "mcp-warden refuses pods with hostNetwork: true: the sidecar's 127.0.0.1 listener would be \
         the node's, shared with every host-network process, so the sidecar cannot hold the \
         service-account token alone (remove hostNetwork, or opt the pod out with label \
         mcp-warden.io/inject: \"false\")"
    )]
    HostNetwork,
    /// `shareProcessNamespace: true`.
    #[error(
        "mcp-warden refuses pods with shareProcessNamespace: true: the app's processes could read \
         the sidecar's token through /proc/<pid>/root and its memory, so the sidecar cannot hold \
         the service-account token alone (remove shareProcessNamespace, or opt the pod out with \
         label mcp-warden.io/inject: \"false\")"
    )]
    ShareProcessNamespace,
    /// The pod already uses a name the injection needs (and is not injected).
    #[error(
        "mcp-warden refuses the pod: the {what} name {name:?} is reserved for the injected sidecar \
         (rename it, or opt the pod out with label mcp-warden.io/inject: \"false\")"
    )]
    ReservedName { what: &'static str, name: String },
    /// The pod's `hostAliases` send an API server name somewhere else.
    #[error(
        "mcp-warden refuses the pod: spec.hostAliases sends {name:?} to {ip}, but the injected \
         sidecar needs kubernetes, kubernetes.default, kubernetes.default.svc and \
         kubernetes.default.svc.<cluster domain> on 127.0.0.1, so that clients using those names \
         reach the API server only through it (remove that hostAliases entry, or opt the pod out \
         with label mcp-warden.io/inject: \"false\")"
    )]
    HostAliasConflict { name: String, ip: String },
    /// The `mcp-warden.io/policy` annotation does not name a ConfigMap.
    #[error(
        "mcp-warden refuses the pod: annotation mcp-warden.io/policy={0:?} is not a valid ConfigMap \
         name (lowercase letters, digits, '-' and '.', at most 253 characters)"
    )]
    InvalidPolicyName(String),
    /// The object is not a pod the webhook can read.
    #[error("mcp-warden cannot read the pod: {0}")]
    InvalidPod(String),
}

/// What to do with one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOutcome {
    /// Leave the pod alone.
    Skip { reason: SkipReason },
    /// Apply this patch (empty when the pod is already injected).
    Patch { patch: Patch, warnings: Vec<String> },
}

impl PatchOutcome {
    /// Warnings to return to the client.
    pub fn warnings(&self) -> Vec<String> {
        match self {
            PatchOutcome::Skip { reason } => reason.warning().into_iter().collect(),
            PatchOutcome::Patch { warnings, .. } => warnings.clone(),
        }
    }

    /// The patch; empty for a skip.
    pub fn into_patch(self) -> Patch {
        match self {
            PatchOutcome::Skip { .. } => Patch(Vec::new()),
            PatchOutcome::Patch { patch, .. } => patch,
        }
    }
}

/// The patch for a pod arriving through admission in `namespace`, whose
/// labels are `ns_labels`, with the sidecar in `form` (the caller resolves
/// `nativeSidecar` against the server's version).
pub fn patch(
    pod: &Value,
    ns_labels: &BTreeMap<String, String>,
    namespace: &str,
    config: &InjectConfig,
    form: SidecarForm,
) -> Result<PatchOutcome, RefuseReason> {
    patch_with_source(pod, ns_labels, namespace, config, form, Source::Admission)
}

/// [`patch`] with an explicit [`Source`]. Offline (`inject -f`), the namespace
/// label is not required: asking for injection is the opt-in.
pub fn patch_with_source(
    pod: &Value,
    ns_labels: &BTreeMap<String, String>,
    namespace: &str,
    config: &InjectConfig,
    form: SidecarForm,
    source: Source,
) -> Result<PatchOutcome, RefuseReason> {
    let Some(obj) = pod.as_object() else {
        return Err(RefuseReason::InvalidPod("not a JSON object".to_string()));
    };
    let spec = match obj.get("spec") {
        Some(Value::Object(s)) => s,
        _ => {
            return Err(RefuseReason::InvalidPod(
                "spec is missing or not an object".to_string(),
            ));
        }
    };
    if !matches!(spec.get("containers"), Some(Value::Array(_))) {
        return Err(RefuseReason::InvalidPod(
            "spec.containers is missing".to_string(),
        ));
    }
    let labels = string_map(pod.pointer("/metadata/labels"));
    let annotations = string_map(pod.pointer("/metadata/annotations"));
    let already = annotations.get(STATUS_ANNOTATION).map(String::as_str) == Some(STATUS_INJECTED);

    if config.is_excluded_namespace(namespace) {
        return Ok(PatchOutcome::Skip {
            reason: SkipReason::ExcludedNamespace(namespace.to_string()),
        });
    }
    let pod_label = labels.get(POD_INJECT_LABEL).map(String::as_str);
    if pod_label == Some("false") {
        return Ok(PatchOutcome::Skip {
            reason: SkipReason::OptedOut,
        });
    }
    let ns_enabled = ns_labels.get(NAMESPACE_INJECTION_LABEL).map(String::as_str)
        == Some(NAMESPACE_INJECTION_ENABLED);
    if source == Source::Admission && !already && !ns_enabled && pod_label != Some("true") {
        return Ok(PatchOutcome::Skip {
            reason: SkipReason::NotSelected,
        });
    }
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return Err(RefuseReason::HostNetwork);
    }
    if spec.get("shareProcessNamespace") == Some(&Value::Bool(true)) {
        return Err(RefuseReason::ShareProcessNamespace);
    }
    if let Some(name) = annotations
        .get(POLICY_ANNOTATION)
        .filter(|n| !is_dns_subdomain(n))
    {
        return Err(RefuseReason::InvalidPolicyName(name.clone()));
    }
    if let Some((name, ip)) = host_alias_conflict(spec, &api_host_names(config)) {
        return Err(RefuseReason::HostAliasConflict { name, ip });
    }
    if !already {
        for key in ["initContainers", "containers", "ephemeralContainers"] {
            for c in spec
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if name_of(c) == SIDECAR_NAME {
                    return Err(RefuseReason::ReservedName {
                        what: "container",
                        name: SIDECAR_NAME.to_string(),
                    });
                }
            }
        }
        for v in volumes(spec) {
            if RESERVED_VOLUMES.contains(&name_of(&v)) {
                return Err(RefuseReason::ReservedName {
                    what: "volume",
                    name: name_of(&v).to_string(),
                });
            }
        }
        let has_token = volumes(spec).iter().any(|v| is_api_token_volume(v, config));
        let automount_off = spec.get("automountServiceAccountToken") == Some(&Value::Bool(false));
        if !has_token && (automount_off || source == Source::Admission) {
            return Ok(PatchOutcome::Skip {
                reason: SkipReason::NoToken,
            });
        }
    }

    let mut warnings = Vec::new();
    let after = transform(pod, config, form, &mut warnings)?;
    let patch = ops_between(pod, &after);
    Ok(PatchOutcome::Patch { patch, warnings })
}

const RESERVED_VOLUMES: [&str; 6] = [
    TOKEN_VOLUME,
    LOCAL_VOLUME,
    SPOOL_VOLUME,
    POLICY_VOLUME,
    COLLECTOR_CA_VOLUME,
    COLLECTOR_TOKEN_VOLUME,
];

/// A Kubernetes object name (RFC 1123 subdomain), as ConfigMap names are.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn volumes(spec: &Map<String, Value>) -> Vec<Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
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
    let sidecar = sidecar_container(config, uid, form, grace);
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
                { "serviceAccountToken": { "path": "token", "expirationSeconds": config.token_expiration_seconds } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [ { "key": "ca.crt", "path": "ca.crt" } ] } },
                { "downwardAPI": { "items": [ { "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } } ] } },
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
            "secret": { "secretName": config.collector_ca_secret, "items": [ { "key": "ca.crt", "path": "ca.crt" } ] }
        }));
    }
    if !config.collector_token_secret.is_empty() {
        v.push(json!({
            "name": COLLECTOR_TOKEN_VOLUME,
            "secret": { "secretName": config.collector_token_secret, "items": [ { "key": "token", "path": "token" } ] }
        }));
    }
    v
}

/// Env var of the sidecar holding the pod IP (downward API `status.podIP`),
/// referenced as `$(POD_IP)` by `MCP_WARDEN_ADMIN_LISTEN`.
pub const POD_IP_ENV: &str = "POD_IP";

/// The sidecar binary in its image.
pub const SIDECAR_BINARY: &str = "/usr/local/bin/mcp-warden-sidecar";

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
    let mut env = vec![
        json!({ "name": "MCP_WARDEN_LISTEN", "value": format!("127.0.0.1:{}", config.api_port) }),
        json!({ "name": POD_IP_ENV, "valueFrom": field("status.podIP") }),
        json!({ "name": "MCP_WARDEN_ADMIN_LISTEN", "value": format!("$({POD_IP_ENV}):{}", config.admin_port) }),
        json!({ "name": "MCP_WARDEN_UPSTREAM_TOKEN_FILE", "value": format!("{UPSTREAM_DIR}/token") }),
        json!({ "name": "MCP_WARDEN_UPSTREAM_CA_FILE", "value": format!("{UPSTREAM_DIR}/ca.crt") }),
        json!({ "name": "MCP_WARDEN_LOCAL_DIR", "value": LOCAL_DIR }),
        json!({ "name": "MCP_WARDEN_POLICY_FILE", "value": format!("{POLICY_DIR}/{POLICY_KEY}") }),
        json!({ "name": "MCP_WARDEN_SPOOL_DIR", "value": SPOOL_DIR }),
        json!({ "name": "MCP_WARDEN_COLLECTOR_FORMAT", "value": config.collector_format.as_str() }),
    ];
    if !config.collector_url.is_empty() {
        env.push(json!({ "name": "MCP_WARDEN_COLLECTOR_URL", "value": config.collector_url }));
    }
    if !config.collector_ca_secret.is_empty() {
        env.push(json!({ "name": "MCP_WARDEN_COLLECTOR_CA_FILE", "value": format!("{COLLECTOR_CA_DIR}/ca.crt") }));
    }
    if !config.collector_token_secret.is_empty() {
        env.push(json!({ "name": "MCP_WARDEN_COLLECTOR_TOKEN_FILE", "value": format!("{COLLECTOR_TOKEN_DIR}/token") }));
    }
    if !config.cluster_name.is_empty() {
        env.push(json!({ "name": "MCP_WARDEN_CLUSTER_NAME", "value": config.cluster_name }));
    }
    env.push(json!({ "name": "MCP_WARDEN_CLUSTER_DOMAIN", "value": config.cluster_domain }));
    if config.https_alias_port != 0 {
        env.push(json!({ "name": "MCP_WARDEN_LISTEN_HTTPS_ALIAS", "value": format!("{LOOPBACK}:{}", config.https_alias_port) }));
    }
    env.push(json!({ "name": "MCP_WARDEN_POD_NAME", "valueFrom": field("metadata.name") }));
    env.push(
        json!({ "name": "MCP_WARDEN_POD_NAMESPACE", "valueFrom": field("metadata.namespace") }),
    );

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
        "env": env,
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
            "httpGet": { "path": "/readyz", "port": config.admin_port },
            "periodSeconds": 1, "failureThreshold": 120, "timeoutSeconds": 1
        },
        // After start, /readyz keeps saying whether requests can be served:
        // e.g. not while fail-closed recording refuses every request with
        // 503 (spool full), so the pod leaves its Service's endpoints.
        "readinessProbe": {
            "httpGet": { "path": "/readyz", "port": config.admin_port },
            "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 1
        },
        "livenessProbe": {
            "httpGet": { "path": "/healthz", "port": config.admin_port },
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

/// A patch turning `before` into `after` (which [`transform`] made).
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

    fn pod(spec: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": "ns", "labels": {} }, "spec": spec })
    }

    fn enabled() -> BTreeMap<String, String> {
        BTreeMap::from([(NAMESPACE_INJECTION_LABEL.to_string(), "enabled".to_string())])
    }

    fn kube_api_access() -> Value {
        json!({ "name": "kube-api-access-abcde", "projected": { "defaultMode": 420, "sources": [
            { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
            { "configMap": { "name": "kube-root-ca.crt", "items": [ { "key": "ca.crt", "path": "ca.crt" } ] } },
            { "downwardAPI": { "items": [ { "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } } ] } } ] } })
    }

    #[test]
    fn annotation_key_is_escaped() {
        let p = json!({ "metadata": { "annotations": { "a": "b" } }, "spec": {
            "containers": [ { "name": "app", "image": "x" } ], "volumes": [ kube_api_access() ] } });
        let out = patch(
            &p,
            &enabled(),
            "ns",
            &InjectConfig::default(),
            SidecarForm::Native,
        )
        .unwrap();
        let s = serde_json::to_string(&out.into_patch()).unwrap();
        assert!(
            s.contains("/metadata/annotations/mcp-warden.io~1status"),
            "{s}"
        );
    }

    #[test]
    fn reserved_names_and_bad_policy_names_are_refused() {
        let cfg = InjectConfig::default();
        let base = json!({ "metadata": { "annotations": {} }, "spec": {
            "containers": [ { "name": "app", "image": "x" } ], "volumes": [ kube_api_access() ] } });
        let mut c = base.clone();
        c["spec"]["containers"][0]["name"] = json!("mcp-warden");
        let e = patch(&c, &enabled(), "ns", &cfg, SidecarForm::Native).unwrap_err();
        assert!(
            matches!(
                e,
                RefuseReason::ReservedName {
                    what: "container",
                    ..
                }
            ),
            "{e}"
        );
        let mut v = base.clone();
        v["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "mcp-warden-spool", "emptyDir": {} }));
        let e = patch(&v, &enabled(), "ns", &cfg, SidecarForm::Native).unwrap_err();
        assert!(e.to_string().contains("mcp-warden-spool"), "{e}");
        let mut p = base.clone();
        p["metadata"]["annotations"][POLICY_ANNOTATION] = json!("Bad_Name");
        let e = patch(&p, &enabled(), "ns", &cfg, SidecarForm::Native).unwrap_err();
        assert!(e.to_string().contains("Bad_Name"), "{e}");
        p["metadata"]["annotations"][POLICY_ANNOTATION] = json!("team-a.policy");
        assert!(patch(&p, &enabled(), "ns", &cfg, SidecarForm::Native).is_ok());
    }

    #[test]
    fn covers_ignores_defaulted_fields() {
        assert!(covers(
            &json!({"a": 1, "b": {"c": 2, "d": 3}}),
            &json!({"b": {"c": 2}})
        ));
        assert!(!covers(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!covers(&json!({"a": 1}), &json!({"a": 2})));
    }

    #[test]
    fn defaulted_injected_pod_is_a_noop() {
        let p = pod(
            json!({ "containers": [ { "name": "app", "image": "x" } ], "volumes": [ kube_api_access() ] }),
        );
        let cfg = InjectConfig::default();
        let mut injected = p.clone();
        json_patch::patch(
            &mut injected,
            &patch(&p, &enabled(), "ns", &cfg, SidecarForm::Native)
                .unwrap()
                .into_patch()
                .0,
        )
        .unwrap();
        // What the API server's defaulting adds before a reinvocation.
        injected["spec"]["initContainers"][0]["terminationMessagePath"] =
            json!("/dev/termination-log");
        injected["spec"]["initContainers"][0]["startupProbe"]["successThreshold"] = json!(1);
        injected["spec"]["initContainers"][0]["startupProbe"]["httpGet"]["scheme"] = json!("HTTP");
        injected["spec"]["volumes"][3]["configMap"]["defaultMode"] = json!(420);
        let again = patch(&injected, &BTreeMap::new(), "ns", &cfg, SidecarForm::Native)
            .unwrap()
            .into_patch();
        assert!(again.0.is_empty(), "{again:?}");
    }

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
