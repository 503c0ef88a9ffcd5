//! The pure core of the webhook: which pods to inject, and the RFC 6902 patch
//! that injects one.
//!
//! The patch is computed in two steps, one submodule each. `inject`
//! (what the pod gets): [`transform`] builds the injected pod from the
//! original as plain JSON, written so that running it on its own
//! output changes nothing (that is what makes `reinvocationPolicy: IfNeeded`
//! and a second `inject` safe). Then `ops` (JSON patch operations from
//! the old and the new pod): [`ops_between`] turns the difference into
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
//! - With `mcp-warden.io/mcp-port: "<port>"` the sidecar also fronts the MCP
//!   server's own HTTP endpoint on 127.0.0.1:<port> from its own port
//!   ([`MCP_PORT`], named [`MCP_PORT_NAME`]), where the platform team points
//!   the Service; the MCP server's port itself is left as it is (a Service
//!   still aimed at it bypasses the front, which the docs say). A value that
//!   is not a port, or is one of the sidecar's own, is refused.

mod inject;
mod ops;

pub use inject::{
    LOOPBACK, WAIT_READY_TIMEOUT_SECONDS, api_host_names, app_env, covers, is_api_token_volume,
    sidecar_container, transform,
};
pub use ops::ops_between;

use crate::config::{InjectConfig, SidecarForm};
use inject::{host_alias_conflict, string_map, volumes};
use json_patch::Patch;
use mcp_warden_shared::contract::*;
use serde_json::Value;
use std::collections::BTreeMap;

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
         {label}: \"false\")",
        label = POD_INJECT_LABEL
    )]
    HostNetwork,
    /// `shareProcessNamespace: true`.
    #[error(
        "mcp-warden refuses pods with shareProcessNamespace: true: the app's processes could read \
         the sidecar's token through /proc/<pid>/root and its memory, so the sidecar cannot hold \
         the service-account token alone (remove shareProcessNamespace, or opt the pod out with \
         label {label}: \"false\")",
        label = POD_INJECT_LABEL
    )]
    ShareProcessNamespace,
    /// The pod already uses a name the injection needs (and is not injected).
    #[error(
        "mcp-warden refuses the pod: the {what} name {name:?} is reserved for the injected sidecar \
         (rename it, or opt the pod out with label {label}: \"false\")",
        label = POD_INJECT_LABEL
    )]
    ReservedName { what: &'static str, name: String },
    /// The pod's `hostAliases` send an API server name somewhere else.
    #[error(
        "mcp-warden refuses the pod: spec.hostAliases sends {name:?} to {ip}, but the injected \
         sidecar needs kubernetes, kubernetes.default, kubernetes.default.svc and \
         kubernetes.default.svc.<cluster domain> on 127.0.0.1, so that clients using those names \
         reach the API server only through it (remove that hostAliases entry, or opt the pod out \
         with label {label}: \"false\")",
        label = POD_INJECT_LABEL
    )]
    HostAliasConflict { name: String, ip: String },
    /// The `mcp-warden.io/policy` annotation does not name a ConfigMap.
    #[error(
        "mcp-warden refuses the pod: annotation {ann}={0:?} is not a valid ConfigMap \
         name (lowercase letters, digits, '-' and '.', at most 253 characters)",
        ann = POLICY_ANNOTATION
    )]
    InvalidPolicyName(String),
    /// The `mcp-warden.io/mcp-port` annotation is not a usable port.
    #[error(
        "mcp-warden refuses the pod: annotation {ann}={value:?} {why} (give the port the MCP \
         server listens on for HTTP in the pod, e.g. \"8080\", or remove the annotation)",
        ann = MCP_PORT_ANNOTATION
    )]
    InvalidMcpPort { value: String, why: String },
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
    mcp_port(pod, config)?;
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

/// The MCP server port the pod's `mcp-warden.io/mcp-port` annotation names
/// (`None` without the annotation), or why it cannot be used: not a decimal
/// port number, or a port the sidecar itself listens on.
pub fn mcp_port(pod: &Value, config: &InjectConfig) -> Result<Option<u16>, RefuseReason> {
    let annotations = string_map(pod.pointer("/metadata/annotations"));
    let Some(value) = annotations.get(MCP_PORT_ANNOTATION) else {
        return Ok(None);
    };
    let refuse = |why: String| RefuseReason::InvalidMcpPort {
        value: value.clone(),
        why,
    };
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 5 {
        return Err(refuse("is not a port number (1-65535)".into()));
    }
    let port: u16 = match digits.parse::<u32>() {
        Ok(n @ 1..=65535) => n as u16,
        _ => return Err(refuse("is not a port number (1-65535)".into())),
    };
    let own = [
        (config.api_port, "its API listener"),
        (config.admin_port, "its admin listener"),
        (config.https_alias_port, "its https alias listener"),
        (MCP_PORT, "its MCP front"),
    ];
    if let Some((_, what)) = own.iter().find(|(p, _)| *p == port) {
        return Err(refuse(format!(
            "is a port the sidecar itself uses ({what})"
        )));
    }
    Ok(Some(port))
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

/// The `name` of a container, volume or env entry (`""` when it has none).
fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn end_user_settings_reach_the_sidecar_only_when_configured() {
        let p = json!({ "metadata": { "annotations": {} }, "spec": {
            "containers": [ { "name": "app", "image": "x" } ], "volumes": [ kube_api_access() ] } });
        let env_of = |cfg: &InjectConfig| -> BTreeMap<String, String> {
            let out = patch(&p, &enabled(), "ns", cfg, SidecarForm::Native).unwrap();
            let patched = serde_json::to_value(out.into_patch()).unwrap();
            let s = patched.to_string();
            let mut m = BTreeMap::new();
            for op in patched.as_array().unwrap() {
                let v = &op["value"];
                let containers: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for c in containers {
                    if c["name"] != SIDECAR_NAME {
                        continue;
                    }
                    for e in c["env"].as_array().unwrap() {
                        if let Some(val) = e["value"].as_str() {
                            m.insert(e["name"].as_str().unwrap().to_string(), val.to_string());
                        }
                    }
                }
            }
            assert!(!m.is_empty(), "no sidecar env in {s}");
            m
        };
        let none = env_of(&InjectConfig::default());
        assert!(
            !none
                .keys()
                .any(|k| k.contains("OIDC") || k.contains("IMPERSONATE")),
            "{none:?}"
        );
        let cfg = InjectConfig {
            end_users: crate::config::EndUsers {
                issuer_urls: vec![
                    "https://idp.example.com".into(),
                    "https://idp2.example.com/realms/x".into(),
                ],
                audience: "mcp".into(),
                username_claim: Some("email".into()),
                groups_prefix: Some("oidc:".into()),
                impersonate: true,
                ..Default::default()
            },
            ..InjectConfig::default()
        };
        let e = env_of(&cfg);
        assert_eq!(
            e["MCP_WARDEN_OIDC_ISSUER_URL"],
            "https://idp.example.com,https://idp2.example.com/realms/x"
        );
        assert_eq!(e["MCP_WARDEN_OIDC_AUDIENCE"], "mcp");
        assert_eq!(e["MCP_WARDEN_OIDC_USERNAME_CLAIM"], "email");
        assert_eq!(e["MCP_WARDEN_OIDC_GROUPS_PREFIX"], "oidc:");
        assert_eq!(e["MCP_WARDEN_IMPERSONATE_END_USER"], "true");
        assert!(!e.contains_key("MCP_WARDEN_OIDC_USERNAME_PREFIX"), "{e:?}");
        // The webhook refuses settings every injected sidecar would refuse.
        for bad in [
            r#"{"issuerUrls": ["http://idp"], "audience": "a"}"#,
            r#"{"issuerUrls": ["https://idp"]}"#,
            r#"{"impersonate": true}"#,
            r#"{"issuerUrl": "https://idp"}"#,
        ] {
            let r = InjectConfig::default()
                .with_env(|k| (k == "MCP_WARDEN_END_USERS").then(|| bad.to_string()));
            assert!(r.is_err(), "{bad} accepted");
        }
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
}
