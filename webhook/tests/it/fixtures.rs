//! Fixture tests of the patch: real-world pods and workloads from
//! tests/fixtures/webhook, patched with json-patch, read back as k8s-openapi
//! types, checked against every promise of the injection, and patched again
//! to show a second pass changes nothing.

#![allow(clippy::unwrap_used)]

use json_patch::Patch;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use mcp_warden_shared::contract::*;
use mcp_warden_webhook::config::{InjectConfig, KubeVersion, NativeSidecar, SidecarForm};
use mcp_warden_webhook::patch::{PatchOutcome, RefuseReason, SkipReason};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A current API server: `nativeSidecar: auto` means the native sidecar.
const CURRENT: Option<KubeVersion> = Some(KubeVersion {
    major: 1,
    minor: 33,
});

/// The form the webhook injects with `config` on a current server.
fn form(config: &InjectConfig) -> SidecarForm {
    config.native_sidecar.resolve(CURRENT)
}

/// The admission patch on a current server.
fn patch(
    pod: &Value,
    ns_labels: &BTreeMap<String, String>,
    namespace: &str,
    config: &InjectConfig,
) -> Result<PatchOutcome, RefuseReason> {
    mcp_warden_webhook::patch::patch(pod, ns_labels, namespace, config, form(config))
}

/// `inject -f` for a current server.
fn inject_yaml(
    input: &str,
    config: &InjectConfig,
) -> Result<
    (String, Vec<mcp_warden_webhook::manifest::DocReport>),
    mcp_warden_webhook::manifest::ManifestError,
> {
    mcp_warden_webhook::manifest::inject_yaml(input, config, form(config))
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/webhook")
        .join(name)
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    serde_saphyr::from_str::<Value>(&text).unwrap()
}

fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([(
        NAMESPACE_INJECTION_LABEL.to_string(),
        NAMESPACE_INJECTION_ENABLED.to_string(),
    )])
}

const APP_ENV: [(&str, &str); 8] = [
    ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
    ("KUBERNETES_SERVICE_PORT", "15443"),
    ("KUBERNETES_SERVICE_PORT_HTTPS", "15443"),
    ("KUBERNETES_PORT", "tcp://127.0.0.1:15443"),
    ("KUBERNETES_PORT_443_TCP", "tcp://127.0.0.1:15443"),
    ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
    ("KUBERNETES_PORT_443_TCP_PORT", "15443"),
    ("KUBERNETES_PORT_443_TCP_ADDR", "127.0.0.1"),
];

/// Patches `pod` through the admission path and returns the typed result,
/// the raw result and the warnings.
fn inject(pod: &Value, config: &InjectConfig) -> (Pod, Value, Vec<String>) {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let outcome = patch(pod, &enabled(), ns, config).unwrap();
    let PatchOutcome::Patch { patch: p, warnings } = outcome else {
        panic!("expected a patch, got {outcome:?}");
    };
    assert!(!p.0.is_empty());
    // The patch travels as JSON: round-trip it like the API server would.
    let wire = serde_json::to_vec(&p).unwrap();
    let p: Patch = serde_json::from_slice(&wire).unwrap();
    let mut after = pod.clone();
    json_patch::patch(&mut after, &p.0).unwrap();
    let typed: Pod = serde_json::from_value(after.clone()).unwrap();

    // Second pass: nothing left to do.
    let again = patch(&after, &BTreeMap::new(), ns, config)
        .unwrap()
        .into_patch();
    assert!(again.0.is_empty(), "second pass not empty: {again:?}");
    (typed, after, warnings)
}

fn is_api_token_volume(v: &k8s_openapi::api::core::v1::Volume) -> bool {
    v.projected.as_ref().is_some_and(|p| {
        p.sources.iter().flatten().any(|s| {
            s.service_account_token.as_ref().is_some_and(|t| {
                t.audience
                    .as_deref()
                    .is_none_or(|a| a.is_empty() || a.starts_with("https://kubernetes.default"))
            })
        })
    })
}

fn app_containers(spec: &PodSpec) -> Vec<Container> {
    let mut v: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
    v.extend(spec.containers.clone());
    v.retain(|c| c.name != SIDECAR_NAME);
    v
}

/// Every promise of an injected pod spec.
fn assert_injected(
    before: &Value,
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    native: bool,
) {
    // The sidecar comes first.
    let sidecar = if native {
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init[0].name, SIDECAR_NAME);
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
        assert!(spec.containers.iter().all(|c| c.name != SIDECAR_NAME));
        init[0].clone()
    } else {
        assert_eq!(spec.containers[0].name, SIDECAR_NAME);
        assert!(spec.containers[0].restart_policy.is_none());
        spec.containers[0].clone()
    };
    let probe = sidecar
        .startup_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    let readiness = sidecar
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    // The admin listener binds the pod IP (downward API), not 0.0.0.0: the
    // probes reach it there, and the kubelet expands `$(POD_IP)` because
    // POD_IP is defined before it.
    let env = sidecar.env.as_ref().unwrap();
    let pos = |n: &str| env.iter().position(|e| e.name == n).unwrap();
    let pod_ip = &env[pos("POD_IP")];
    assert_eq!(
        pod_ip
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
    assert_eq!(
        env[pos("MCP_WARDEN_ADMIN_LISTEN")].value.as_deref(),
        Some("$(POD_IP):15020")
    );
    assert!(pos("POD_IP") < pos("MCP_WARDEN_ADMIN_LISTEN"));
    assert_eq!(
        serde_json::to_value(&probe.port).unwrap(),
        serde_json::json!(15020)
    );
    assert!(
        sidecar
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()
            .contains_key("cpu")
    );

    // Restrictive security context, uid distinct from the app's.
    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
        &vec!["ALL".to_string()]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let uid = sc.run_as_user.unwrap();
    let mut app_uids: Vec<i64> = app_containers(spec)
        .iter()
        .filter_map(|c| c.security_context.as_ref().and_then(|s| s.run_as_user))
        .collect();
    app_uids.extend(spec.security_context.as_ref().and_then(|s| s.run_as_user));
    assert!(
        !app_uids.contains(&uid),
        "sidecar uid {uid} shared with the app {app_uids:?}"
    );

    // The sidecar's env: self-describing paths and the downward API.
    let env: BTreeMap<String, Value> = sidecar
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect();
    assert_eq!(
        env["MCP_WARDEN_UPSTREAM_TOKEN_FILE"]["value"],
        format!("{UPSTREAM_DIR}/token")
    );
    assert_eq!(
        env["MCP_WARDEN_UPSTREAM_CA_FILE"]["value"],
        format!("{UPSTREAM_DIR}/ca.crt")
    );
    assert_eq!(env["MCP_WARDEN_LOCAL_DIR"]["value"], LOCAL_DIR);
    assert_eq!(
        env["MCP_WARDEN_POLICY_FILE"]["value"],
        format!("{POLICY_DIR}/policy.yaml")
    );
    assert_eq!(env["MCP_WARDEN_SPOOL_DIR"]["value"], SPOOL_DIR);
    assert_eq!(
        env["MCP_WARDEN_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["MCP_WARDEN_POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert!(
        !env.contains_key("KUBERNETES_SERVICE_HOST"),
        "the sidecar keeps the real service env"
    );

    // Volumes: ours, and no API token volume but ours.
    let volumes = spec.volumes.as_ref().unwrap();
    let by_name = |n: &str| {
        volumes
            .iter()
            .find(|v| v.name == n)
            .unwrap_or_else(|| panic!("no volume {n}"))
    };
    let token = by_name(TOKEN_VOLUME);
    let sources = token.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let sat = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(sat.path, "token");
    assert_eq!(sat.expiration_seconds, Some(3607));
    assert!(sat.audience.is_none());
    assert_eq!(
        sources[1].config_map.as_ref().unwrap().name,
        "kube-root-ca.crt"
    );
    assert!(sources[2].downward_api.is_some());
    for v in volumes {
        if v.name != TOKEN_VOLUME {
            assert!(
                !is_api_token_volume(v),
                "API token volume {} left in the pod",
                v.name
            );
        }
    }
    assert_eq!(
        by_name(LOCAL_VOLUME)
            .empty_dir
            .as_ref()
            .unwrap()
            .medium
            .as_deref(),
        Some("Memory")
    );
    assert!(by_name(SPOOL_VOLUME).empty_dir.is_some());
    let policy = by_name(POLICY_VOLUME).config_map.as_ref().unwrap();
    assert_eq!(policy.optional, Some(true));
    assert_eq!(policy.items.as_ref().unwrap()[0].key, "policy.yaml");

    // Only the sidecar mounts the token; it mounts it read-only.
    let token_mounts = |c: &Container| {
        c.volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == TOKEN_VOLUME)
            .count()
    };
    assert_eq!(token_mounts(&sidecar), 1);
    let m = sidecar
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == TOKEN_VOLUME)
        .unwrap();
    assert_eq!(m.mount_path, UPSTREAM_DIR);
    assert_eq!(m.read_only, Some(true));
    let mut every_other: Vec<Container> = app_containers(spec);
    for e in spec.ephemeral_containers.iter().flatten() {
        every_other.push(serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap());
    }
    assert!(!every_other.is_empty());
    for c in &every_other {
        assert_eq!(token_mounts(c), 0, "{} mounts the real token", c.name);
        let sa: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR)
            .collect();
        assert_eq!(
            sa.len(),
            1,
            "{}: one mount at the service-account path",
            c.name
        );
        assert_eq!(sa[0].name, LOCAL_VOLUME);
        assert_eq!(sa[0].read_only, Some(true));
        for (k, v) in APP_ENV {
            let found: Vec<_> = c.env.iter().flatten().filter(|e| e.name == k).collect();
            assert_eq!(found.len(), 1, "{}: {k} exactly once", c.name);
            assert_eq!(found[0].value.as_deref(), Some(v), "{}: {k}", c.name);
            assert!(found[0].value_from.is_none());
        }
    }

    assert_eq!(spec.automount_service_account_token, Some(false));

    // The API server's names resolve to the sidecar in every container.
    let on_loopback: Vec<String> = spec
        .host_aliases
        .iter()
        .flatten()
        .filter(|h| h.ip == "127.0.0.1")
        .flat_map(|h| h.hostnames.clone().unwrap_or_default())
        .collect();
    for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        assert!(
            on_loopback.iter().any(|h| h == name),
            "{name} not on 127.0.0.1: {:?}",
            spec.host_aliases
        );
    }
    assert!(
        on_loopback
            .iter()
            .any(|h| h.starts_with("kubernetes.default.svc.")),
        "{:?}",
        spec.host_aliases
    );
    // ... where the sidecar answers on 443: NET_BIND_SERVICE and nothing else.
    assert_eq!(
        sc.capabilities.as_ref().unwrap().add.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..])
    );
    assert_eq!(sc.privileged, Some(false));
    if let Some(a) = annotations {
        assert_eq!(
            a.get(STATUS_ANNOTATION).map(String::as_str),
            Some(STATUS_INJECTED)
        );
    }

    // Nothing of the app was lost: same containers, same order, same images.
    let before_spec = before.get("spec").unwrap();
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        let want: Vec<(String, String)> = before_spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["image"].as_str().unwrap().to_string(),
                )
            })
            .filter(|(n, _)| n != SIDECAR_NAME)
            .collect();
        let have: Vec<(String, String)> = match key {
            "initContainers" => spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect(),
            "containers" => spec
                .containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect(),
            _ => spec
                .ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect(),
        };
        let have: Vec<_> = have
            .into_iter()
            .filter(|(n, _)| n != SIDECAR_NAME)
            .collect();
        assert_eq!(have, want, "{key}");
    }
}

fn check_pod_fixture(name: &str, config: &InjectConfig) -> (Pod, Value, Vec<String>) {
    let before = load(name);
    let (pod, after, warnings) = inject(&before, config);
    let spec = pod.spec.as_ref().unwrap();
    assert_injected(
        &before,
        spec,
        pod.metadata.annotations.as_ref(),
        form(config) == SidecarForm::Native,
    );
    (pod, after, warnings)
}

#[test]
fn default_kube_api_access_volume() {
    let (pod, _, warnings) =
        check_pod_fixture("pod-kube-api-access.yaml", &InjectConfig::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    let spec = pod.spec.unwrap();
    assert!(
        spec.volumes
            .unwrap()
            .iter()
            .all(|v| !v.name.starts_with("kube-api-access-"))
    );
    // The policy ConfigMap is the one the annotation names.
    let ann_policy = spec_volume(&pod_value("pod-kube-api-access.yaml"), POLICY_VOLUME);
    assert_eq!(ann_policy["configMap"]["name"], "mcp-readonly-policy");
    // App's own env and mounts are kept.
    let server = &spec.containers[0];
    assert!(
        server
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "KUBERNETES_MCP_SERVER_LOG_LEVEL")
    );
    assert!(
        server
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "config")
    );
}

fn pod_value(name: &str) -> Value {
    let before = load(name);
    inject(&before, &InjectConfig::default()).1
}

fn spec_volume(pod: &Value, name: &str) -> Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap()
        .clone()
}

#[test]
fn hand_written_projected_token_volume() {
    let (pod, _, _) = check_pod_fixture("pod-projected-token.yaml", &InjectConfig::default());
    let spec = pod.spec.unwrap();
    assert!(
        spec.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "api-token")
    );
    // The custom token path now holds the local files, read-only.
    let mcp = &spec.containers[0];
    let custom = mcp
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/var/run/secrets/tokens/api")
        .unwrap();
    assert_eq!(custom.name, LOCAL_VOLUME);
    assert_eq!(custom.read_only, Some(true));
}

#[test]
fn other_audiences_are_left_alone() {
    let (pod, _, _) = check_pod_fixture("pod-other-audience.yaml", &InjectConfig::default());
    let spec = pod.spec.unwrap();
    let vault = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "vault-token")
        .unwrap();
    let sources = vault.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert_eq!(
        sources[0]
            .service_account_token
            .as_ref()
            .unwrap()
            .audience
            .as_deref(),
        Some("vault")
    );
    let mcp = &spec.containers[0];
    assert!(
        mcp.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "vault-token" && m.mount_path == "/var/run/secrets/vault")
    );
}

#[test]
fn automount_false_without_token_is_skipped_with_a_warning() {
    let pod = load("pod-automount-false.yaml");
    let out = patch(&pod, &enabled(), "mcp", &InjectConfig::default()).unwrap();
    assert_eq!(
        out,
        PatchOutcome::Skip {
            reason: SkipReason::NoToken
        }
    );
    let w = out.warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("automountServiceAccountToken: false"),
        "{w:?}"
    );
    // Through admission a pod without a token volume means its ServiceAccount
    // has automounting off: same answer.
    let mut no_field = pod.clone();
    no_field["spec"]
        .as_object_mut()
        .unwrap()
        .remove("automountServiceAccountToken");
    assert_eq!(
        patch(&no_field, &enabled(), "mcp", &InjectConfig::default()).unwrap(),
        PatchOutcome::Skip {
            reason: SkipReason::NoToken
        }
    );
}

#[test]
fn explicit_kubernetes_env_is_overridden() {
    let (pod, _, _) = check_pod_fixture("pod-env-override.yaml", &InjectConfig::default());
    let mcp = &pod.spec.unwrap().containers[0];
    // The app's other env stays, envFrom stays (explicit env beats it).
    assert!(mcp.env.iter().flatten().any(|e| e.name == "LOG_FORMAT"));
    assert!(mcp.env_from.is_some());
}

#[test]
fn init_containers_and_existing_sidecars() {
    let (pod, _, _) = check_pod_fixture("pod-init-and-sidecar.yaml", &InjectConfig::default());
    let spec = pod.spec.unwrap();
    let init: Vec<_> = spec
        .init_containers
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(init, vec![SIDECAR_NAME, "wait-for-crds", "log-shipper"]);
}

#[test]
fn container_only_fallback() {
    let config = InjectConfig {
        native_sidecar: NativeSidecar::False,
        ..InjectConfig::default()
    };
    let (pod, _, _) = check_pod_fixture("pod-init-and-sidecar.yaml", &config);
    let spec = pod.spec.unwrap();
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, vec![SIDECAR_NAME, "mcp", "oauth-proxy"]);
    assert!(
        spec.init_containers
            .unwrap()
            .iter()
            .all(|c| c.name != SIDECAR_NAME)
    );
}

#[test]
fn sidecar_uid_differs_from_the_app() {
    let (pod, _, warnings) = check_pod_fixture("pod-same-uid.yaml", &InjectConfig::default());
    let sidecar = &pod.spec.unwrap().init_containers.unwrap()[0];
    assert_eq!(
        sidecar.security_context.as_ref().unwrap().run_as_user,
        Some(15022)
    );
    assert!(warnings.iter().any(|w| w.contains("15022")), "{warnings:?}");
}

#[test]
fn ephemeral_containers_are_rewired() {
    check_pod_fixture("pod-ephemeral.yaml", &InjectConfig::default());
}

#[test]
fn collector_settings_reach_the_sidecar() {
    let config = InjectConfig {
        collector_url: "https://collector.mcp-warden.svc:8443/events".into(),
        collector_ca_secret: "mcp-warden-collector-ca".into(),
        collector_token_secret: "mcp-warden-collector-token".into(),
        cluster_name: "prod-eu-1".into(),
        ..InjectConfig::default()
    };
    let (pod, _, _) = check_pod_fixture("pod-kube-api-access.yaml", &config);
    let spec = pod.spec.unwrap();
    let sidecar = &spec.init_containers.as_ref().unwrap()[0];
    let env: BTreeMap<_, _> = sidecar
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        env["MCP_WARDEN_COLLECTOR_URL"].as_deref(),
        Some("https://collector.mcp-warden.svc:8443/events")
    );
    assert_eq!(
        env["MCP_WARDEN_COLLECTOR_CA_FILE"].as_deref(),
        Some("/etc/mcp-warden/collector-ca/ca.crt")
    );
    assert_eq!(
        env["MCP_WARDEN_COLLECTOR_TOKEN_FILE"].as_deref(),
        Some("/etc/mcp-warden/collector-token/token")
    );
    assert_eq!(env["MCP_WARDEN_CLUSTER_NAME"].as_deref(), Some("prod-eu-1"));
    // The collector secrets are the sidecar's only.
    for c in app_containers(&spec) {
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| !m.name.starts_with("mcp-warden-collector"))
        );
    }
}

#[test]
fn host_network_and_shared_pid_are_refused() {
    let e = patch(
        &load("pod-host-network.yaml"),
        &enabled(),
        "mcp",
        &InjectConfig::default(),
    )
    .unwrap_err();
    assert_eq!(e, RefuseReason::HostNetwork);
    assert!(
        e.to_string().contains("hostNetwork") && e.to_string().contains("token alone"),
        "{e}"
    );
    let e = patch(
        &load("pod-share-process-namespace.yaml"),
        &enabled(),
        "mcp",
        &InjectConfig::default(),
    )
    .unwrap_err();
    assert_eq!(e, RefuseReason::ShareProcessNamespace);
    assert!(e.to_string().contains("/proc"), "{e}");
    // An opted-out pod is not refused: it is not injected at all.
    let mut p = load("pod-host-network.yaml");
    p["metadata"]["labels"] = serde_json::json!({ POD_INJECT_LABEL: "false" });
    assert_eq!(
        patch(&p, &enabled(), "mcp", &InjectConfig::default()).unwrap(),
        PatchOutcome::Skip {
            reason: SkipReason::OptedOut
        }
    );
}

#[test]
fn namespace_and_pod_selection() {
    let pod = load("pod-kube-api-access.yaml");
    let cfg = InjectConfig::default();
    let none = BTreeMap::new();
    // Unlabelled namespace: not selected unless the pod opts in.
    assert_eq!(
        patch(&pod, &none, "mcp", &cfg).unwrap(),
        PatchOutcome::Skip {
            reason: SkipReason::NotSelected
        }
    );
    let mut opt_in = pod.clone();
    opt_in["metadata"]["labels"][POD_INJECT_LABEL] = Value::String("true".into());
    assert!(matches!(
        patch(&opt_in, &none, "mcp", &cfg).unwrap(),
        PatchOutcome::Patch { .. }
    ));
    // Opt out in a labelled namespace.
    let mut opt_out = pod.clone();
    opt_out["metadata"]["labels"][POD_INJECT_LABEL] = Value::String("false".into());
    assert_eq!(
        patch(&opt_out, &enabled(), "mcp", &cfg).unwrap(),
        PatchOutcome::Skip {
            reason: SkipReason::OptedOut
        }
    );
    // Never kube-system, the webhook's namespace, or configured exclusions.
    for ns in ["kube-system", "mcp-warden"] {
        assert_eq!(
            patch(&opt_in, &enabled(), ns, &cfg).unwrap(),
            PatchOutcome::Skip {
                reason: SkipReason::ExcludedNamespace(ns.into())
            }
        );
    }
    let cfg2 = InjectConfig {
        excluded_namespaces: vec!["mcp".into()],
        ..cfg
    };
    assert!(matches!(
        patch(&pod, &enabled(), "mcp", &cfg2).unwrap(),
        PatchOutcome::Skip { .. }
    ));
}

#[test]
fn reinjection_after_another_webhook_added_a_container() {
    let cfg = InjectConfig::default();
    let (_, mut after, _) = inject(&load("pod-kube-api-access.yaml"), &cfg);
    // A later webhook adds a container; reinvocation must rewire only it.
    after["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "name": "late", "image": "late:1" }));
    let p = patch(&after, &BTreeMap::new(), "mcp", &cfg)
        .unwrap()
        .into_patch();
    let paths: Vec<String> = p.0.iter().map(|o| o.path().to_string()).collect();
    assert!(
        paths.iter().all(|x| x.starts_with("/spec/containers/1/")),
        "{paths:?}"
    );
    json_patch::patch(&mut after, &p.0).unwrap();
    let pod: Pod = serde_json::from_value(after.clone()).unwrap();
    assert_injected(&after, pod.spec.as_ref().unwrap(), None, true);
}

#[test]
fn inject_f_over_multi_document_workloads() {
    let input = std::fs::read_to_string(fixture_path("workloads.yaml")).unwrap();
    let cfg = InjectConfig::default();
    let (out, reports) = inject_yaml(&input, &cfg).unwrap();
    let outcomes: Vec<(String, String)> = reports
        .iter()
        .map(|r| (r.object.clone(), r.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("StatefulSet/mcp-memory".to_string(), "injected".to_string()),
            ("DaemonSet/mcp-node-inspector".into(), "injected".into()),
            ("ReplicaSet/mcp-legacy".into(), "injected".into()),
            ("Job/mcp-audit-sweep".into(), "injected".into()),
            ("CronJob/mcp-nightly-report".into(), "injected".into()),
            (
                "Pod/mcp-opted-out".into(),
                "skipped: pod label mcp-warden.io/inject=\"false\"".into()
            ),
            ("Service/mcp-memory".into(), "passed through".into()),
            ("Deployment/mcp-in-a-list".into(), "injected".into()),
        ]
    );
    let before: Vec<Value> = serde_saphyr::from_multiple(&input).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    assert_eq!(docs.len(), 8);
    let check = |i: usize, ptr: &str| {
        let tmpl: k8s_openapi::api::core::v1::PodTemplateSpec =
            serde_json::from_value(docs[i].pointer(ptr).unwrap().clone()).unwrap();
        assert_injected(
            before[i].pointer(ptr).unwrap(),
            tmpl.spec.as_ref().unwrap(),
            tmpl.metadata.as_ref().and_then(|m| m.annotations.as_ref()),
            true,
        );
    };
    let _: StatefulSet = serde_json::from_value(docs[0].clone()).unwrap();
    let _: DaemonSet = serde_json::from_value(docs[1].clone()).unwrap();
    let _: ReplicaSet = serde_json::from_value(docs[2].clone()).unwrap();
    let _: Job = serde_json::from_value(docs[3].clone()).unwrap();
    let _: CronJob = serde_json::from_value(docs[4].clone()).unwrap();
    for i in 0..4 {
        check(i, "/spec/template");
    }
    check(4, "/spec/jobTemplate/spec/template");
    assert_eq!(docs[5], before[5], "opted-out pod unchanged");
    assert_eq!(docs[6], before[6], "Service unchanged");
    let listed: Deployment = serde_json::from_value(docs[7]["items"][0].clone()).unwrap();
    assert_injected(
        &before[7]["items"][0]["spec"]["template"],
        listed.spec.template.spec.as_ref().unwrap(),
        None,
        true,
    );
    // The CronJob's string env value stayed a string.
    assert_eq!(
        docs[4].pointer("/spec/jobTemplate/spec/template/spec/containers/0/env/0/value"),
        Some(&Value::String("true".into()))
    );

    // inject -f is idempotent: a second run reports unchanged and changes nothing.
    let (out2, reports2) = inject_yaml(&out, &cfg).unwrap();
    assert!(
        reports2.iter().all(|r| r.outcome != "injected"),
        "{reports2:?}"
    );
    let docs2: Vec<Value> = serde_saphyr::from_multiple(&out2).unwrap();
    assert_eq!(docs2, docs);
}

#[test]
fn inject_f_the_mcp_server_deployment() {
    let input = std::fs::read_to_string(fixture_path("mcp-server-deployment.yaml")).unwrap();
    let (out, reports) = inject_yaml(&input, &InjectConfig::default()).unwrap();
    assert_eq!(
        reports.iter().filter(|r| r.outcome == "injected").count(),
        1,
        "{reports:?}"
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    let before: Vec<Value> = serde_saphyr::from_multiple(&input).unwrap();
    let d: Deployment = serde_json::from_value(docs[3].clone()).unwrap();
    let tmpl = d.spec.template;
    assert_injected(
        &before[3]["spec"]["template"],
        tmpl.spec.as_ref().unwrap(),
        tmpl.metadata.unwrap().annotations.as_ref(),
        true,
    );
    // Offline there was no token volume yet: ours is there, automount is off,
    // so the pod comes out of admission exactly like an admitted one.
    let vols: Vec<_> = tmpl
        .spec
        .unwrap()
        .volumes
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert!(vols.contains(&TOKEN_VOLUME.to_string()));
}

#[test]
fn inject_f_reports_refusals() {
    let input = std::fs::read_to_string(fixture_path("pod-host-network.yaml")).unwrap();
    let (out, reports) = inject_yaml(&input, &InjectConfig::default()).unwrap();
    assert!(reports[0].is_refused(), "{reports:?}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    assert_eq!(docs[0], serde_saphyr::from_str::<Value>(&input).unwrap());
}

#[test]
fn patch_is_short_and_readable() {
    for name in [
        "pod-kube-api-access.yaml",
        "pod-init-and-sidecar.yaml",
        "pod-projected-token.yaml",
        "pod-ephemeral.yaml",
    ] {
        let pod = load(name);
        let p = patch(&pod, &enabled(), "mcp", &InjectConfig::default())
            .unwrap()
            .into_patch();
        let s = serde_json::to_value(&p).unwrap();
        let ops: Vec<String> = s
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["op"].as_str().unwrap(),
                    o["path"].as_str().unwrap()
                )
            })
            .collect();
        eprintln!("{name}: {ops:#?}");
        // One op per changed field: never the generic leaf-by-leaf diff.
        assert!(ops.len() <= 17, "{name}: {ops:#?}");
        assert!(
            ops.iter().all(|o| !o.starts_with("replace")),
            "{name}: {ops:#?}"
        );
    }
}

/// Every node of real pods replaced by every JSON type: the core never
/// panics, and any patch it returns applies.
#[test]
fn hostile_shapes_never_panic() {
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    pointers(c, p, out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    pointers(c, p, out);
                }
            }
            _ => {}
        }
    }
    let cfg = InjectConfig::default();
    let mut runs = 0;
    for name in [
        "pod-init-and-sidecar.yaml",
        "pod-projected-token.yaml",
        "pod-ephemeral.yaml",
    ] {
        let pod = load(name);
        let mut ptrs = Vec::new();
        pointers(&pod, String::new(), &mut ptrs);
        for p in &ptrs {
            for replacement in [
                Value::Null,
                serde_json::json!(7),
                serde_json::json!("x"),
                serde_json::json!([]),
                serde_json::json!({}),
            ] {
                let mut bad = pod.clone();
                *bad.pointer_mut(p).unwrap() = replacement;
                runs += 1;
                if let Ok(PatchOutcome::Patch { patch, .. }) = patch(&bad, &enabled(), "mcp", &cfg)
                {
                    let mut after = bad.clone();
                    json_patch::patch(&mut after, &patch.0)
                        .unwrap_or_else(|e| panic!("{name} {p}: {e}"));
                }
            }
        }
    }
    assert!(runs > 500, "{runs}");
}

fn env_of(c: &Container) -> BTreeMap<String, Option<String>> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

/// Clients that use `https://kubernetes.default.svc` reach the
/// sidecar: the names go to 127.0.0.1, the sidecar listens on 443 there with
/// NET_BIND_SERVICE only (what the restricted Pod Security Standard allows),
/// and the cluster domain is a setting.
#[test]
fn api_names_go_to_the_sidecar_on_443() {
    let (pod, _, _) = check_pod_fixture("pod-kube-api-access.yaml", &InjectConfig::default());
    let spec = pod.spec.unwrap();
    let aliases = serde_json::to_value(spec.host_aliases.as_ref().unwrap()).unwrap();
    assert_eq!(
        aliases,
        serde_json::json!([{ "ip": "127.0.0.1", "hostnames": [
            "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"] }])
    );
    let sidecar = &spec.init_containers.as_ref().unwrap()[0];
    let env = env_of(sidecar);
    assert_eq!(
        env["MCP_WARDEN_LISTEN_HTTPS_ALIAS"].as_deref(),
        Some("127.0.0.1:443")
    );
    assert_eq!(
        env["MCP_WARDEN_CLUSTER_DOMAIN"].as_deref(),
        Some("cluster.local")
    );
    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_ne!(sc.run_as_user, Some(0));

    // Another cluster domain; a high port for tests (no capability needed);
    // 0: no second listener.
    let config = InjectConfig {
        cluster_domain: "corp.example".into(),
        https_alias_port: 10443,
        ..InjectConfig::default()
    };
    let (_, after, _) = inject(&load("pod-kube-api-access.yaml"), &config);
    assert_eq!(
        after["spec"]["hostAliases"][0]["hostnames"][3],
        "kubernetes.default.svc.corp.example"
    );
    let sidecar = &after["spec"]["initContainers"][0];
    assert_eq!(
        sidecar["securityContext"]["capabilities"],
        serde_json::json!({ "drop": ["ALL"] })
    );
    let env: Container = serde_json::from_value(sidecar.clone()).unwrap();
    let env = env_of(&env);
    assert_eq!(
        env["MCP_WARDEN_LISTEN_HTTPS_ALIAS"].as_deref(),
        Some("127.0.0.1:10443")
    );
    assert_eq!(
        env["MCP_WARDEN_CLUSTER_DOMAIN"].as_deref(),
        Some("corp.example")
    );
    let off = InjectConfig {
        https_alias_port: 0,
        ..InjectConfig::default()
    };
    let (_, after, _) = inject(&load("pod-kube-api-access.yaml"), &off);
    let c: Container = serde_json::from_value(after["spec"]["initContainers"][0].clone()).unwrap();
    assert!(!env_of(&c).contains_key("MCP_WARDEN_LISTEN_HTTPS_ALIAS"));
}

/// A pod's own hostAliases stay; only our missing names are added (one of
/// them is already on 127.0.0.1 here), and a second pass changes nothing.
#[test]
fn existing_host_aliases_are_kept() {
    let (_, after, _) = inject(&load("pod-host-aliases.yaml"), &InjectConfig::default());
    assert_eq!(
        after["spec"]["hostAliases"],
        serde_json::json!([
            { "ip": "10.20.30.40", "hostnames": ["db.legacy.internal"] },
            { "ip": "127.0.0.1", "hostnames": ["kubernetes.default.svc"] },
            { "ip": "127.0.0.1", "hostnames": ["kubernetes", "kubernetes.default",
                "kubernetes.default.svc.cluster.local"] },
        ])
    );
    // The patch appends, it does not rewrite the pod's entries.
    let p = patch(
        &load("pod-host-aliases.yaml"),
        &enabled(),
        "mcp",
        &InjectConfig::default(),
    )
    .unwrap()
    .into_patch();
    let s = serde_json::to_value(&p).unwrap();
    assert!(
        s.as_array()
            .unwrap()
            .iter()
            .any(|o| o["op"] == "add" && o["path"] == "/spec/hostAliases/-"),
        "{s}"
    );
}

/// A pod that sends one of the names elsewhere is refused, with a message
/// naming the name and the address, through admission and `inject -f`.
#[test]
fn host_alias_elsewhere_is_refused() {
    let pod = load("pod-host-aliases-conflict.yaml");
    let e = patch(&pod, &enabled(), "mcp", &InjectConfig::default()).unwrap_err();
    assert_eq!(
        e,
        RefuseReason::HostAliasConflict {
            name: "kubernetes.default.svc.cluster.local".into(),
            ip: "10.0.0.1".into()
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("kubernetes.default.svc.cluster.local") && msg.contains("10.0.0.1"),
        "{msg}"
    );
    let review = serde_json::json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": { "uid": "u-ha", "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "operation": "CREATE", "namespace": "mcp", "object": pod } });
    let a = mcp_warden_webhook::admission::answer(
        &serde_json::to_vec(&review).unwrap(),
        &InjectConfig::default(),
        SidecarForm::Native,
    );
    assert_eq!(a.body["response"]["allowed"], false);
    assert_eq!(a.body["response"]["status"]["code"], 403);
    assert_eq!(a.body["response"]["status"]["message"], msg.as_str());
    let input = std::fs::read_to_string(fixture_path("pod-host-aliases-conflict.yaml")).unwrap();
    let (_, reports) = inject_yaml(&input, &InjectConfig::default()).unwrap();
    assert!(reports[0].is_refused(), "{reports:?}");
    // Another cluster domain: that name is no longer ours.
    let other = InjectConfig {
        cluster_domain: "corp.example".into(),
        ..InjectConfig::default()
    };
    assert!(patch(&pod, &enabled(), "mcp", &other).is_ok());
}

/// The container form for servers without native sidecars. The
/// kubelet starts containers in order and waits for a container's postStart
/// hook before starting the next, so the app starts once the sidecar is
/// ready; the preStop hook keeps the sidecar serving while the app stops,
/// within the pod's grace period. Nothing an old server refuses is left.
#[test]
fn container_form_holds_the_app_until_the_sidecar_is_ready() {
    let config = InjectConfig {
        native_sidecar: NativeSidecar::False,
        ..InjectConfig::default()
    };
    for (fixture, grace) in [
        ("pod-kube-api-access.yaml", 30),
        ("pod-host-aliases.yaml", 60),
    ] {
        let (pod, after, _) = check_pod_fixture(fixture, &config);
        let spec = pod.spec.unwrap();
        assert!(
            spec.init_containers
                .iter()
                .flatten()
                .all(|c| c.restart_policy.is_none()
                    && c.liveness_probe.is_none()
                    && c.startup_probe.is_none()),
            "an init container with probes or restartPolicy: refused before 1.29"
        );
        let sidecar = &after["spec"]["containers"][0];
        assert_eq!(
            sidecar["lifecycle"]["postStart"]["exec"]["command"],
            serde_json::json!([
                "/usr/local/bin/mcp-warden-sidecar",
                "wait-ready",
                "--admin-port",
                "15020",
                "--timeout",
                "120s"
            ])
        );
        assert_eq!(
            sidecar["lifecycle"]["preStop"]["exec"]["command"],
            serde_json::json!([
                "/usr/local/bin/mcp-warden-sidecar",
                "wait-drain",
                "--admin-port",
                "15020",
                "--min",
                "2s",
                "--max",
                format!("{}s", grace - 5)
            ])
        );
    }
    // The native form has no hooks: the kubelet orders native sidecars itself.
    let (_, after, _) = check_pod_fixture("pod-kube-api-access.yaml", &InjectConfig::default());
    assert!(
        after["spec"]["initContainers"][0]
            .get("lifecycle")
            .is_none()
    );
}

/// A pod injected in one form and admitted again in the other (the server
/// was upgraded past 1.29, or `inject -f` output meets the webhook) ends up
/// in the new form with one sidecar.
#[test]
fn reinjection_switches_the_form() {
    let container = InjectConfig {
        native_sidecar: NativeSidecar::False,
        ..InjectConfig::default()
    };
    let (_, before, _) = inject(&load("pod-kube-api-access.yaml"), &container);
    let p = mcp_warden_webhook::patch::patch(
        &before,
        &enabled(),
        "mcp",
        &InjectConfig::default(),
        SidecarForm::Native,
    )
    .unwrap()
    .into_patch();
    let mut after = before.clone();
    json_patch::patch(&mut after, &p.0).unwrap();
    let pod: Pod = serde_json::from_value(after.clone()).unwrap();
    assert_injected(&before, pod.spec.as_ref().unwrap(), None, true);
    assert_eq!(after["spec"]["hostAliases"], before["spec"]["hostAliases"]);
}

/// The sidecar container meets the restricted Pod Security Standard
/// (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
/// non-root, no privilege escalation, every capability dropped and only
/// NET_BIND_SERVICE added, RuntimeDefault seccomp, only the volume types the
/// profile allows, in both forms.
#[test]
fn the_sidecar_meets_the_restricted_pod_security_standard() {
    for native in [NativeSidecar::True, NativeSidecar::False] {
        let config = InjectConfig {
            native_sidecar: native,
            ..InjectConfig::default()
        };
        let (_, after, _) = inject(&load("pod-kube-api-access.yaml"), &config);
        let spec = &after["spec"];
        let sidecar = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(spec["containers"].as_array().into_iter().flatten())
            .find(|c| c["name"] == SIDECAR_NAME)
            .unwrap();
        let sc = &sidecar["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["runAsNonRoot"], true);
        assert!(sc["runAsUser"].as_i64().unwrap() > 0);
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for cap in sc["capabilities"]["add"].as_array().unwrap() {
            assert_eq!(cap, "NET_BIND_SERVICE", "restricted allows only this one");
        }
        assert!(
            sidecar
                .get("ports")
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p.get("hostPort").is_none())
        );
        for v in spec["volumes"].as_array().unwrap() {
            let kinds: Vec<&String> = v
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "name")
                .collect();
            for k in kinds {
                assert!(
                    [
                        "configMap",
                        "csi",
                        "downwardAPI",
                        "emptyDir",
                        "ephemeral",
                        "persistentVolumeClaim",
                        "projected",
                        "secret"
                    ]
                    .contains(&k.as_str()),
                    "volume type {k} not allowed by restricted"
                );
            }
        }
        assert!(spec.get("hostNetwork").is_none() && spec.get("hostPID").is_none());
    }
}

/// `inject -f` picks the form offline: `auto` without a cluster version is
/// the container form (said on stderr), `--kubernetes-version` or
/// `--native-sidecar` choose; the output carries the hostAliases either way.
#[test]
fn inject_f_binary_picks_the_form() {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-warden-webhook"));
        for (k, _) in std::env::vars() {
            if k.starts_with("MCP_WARDEN_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .arg("inject")
            .arg("-f")
            .arg(fixture_path("pod-kube-api-access.yaml"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pod: Value = serde_saphyr::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
        (pod, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let is_native = |pod: &Value| {
        pod["spec"]["initContainers"]
            .as_array()
            .is_some_and(|i| i.iter().any(|c| c["name"] == SIDECAR_NAME))
    };
    let (pod, err) = run(&[]);
    assert!(!is_native(&pod), "auto offline: container form");
    assert_eq!(pod["spec"]["containers"][0]["name"], SIDECAR_NAME);
    assert!(err.contains("container form"), "{err}");
    assert_eq!(pod["spec"]["hostAliases"][0]["ip"], "127.0.0.1");
    let (pod, _) = run(&["--kubernetes-version", "1.30"]);
    assert!(is_native(&pod));
    let (pod, _) = run(&["--kubernetes-version", "v1.20.2"]);
    assert!(!is_native(&pod));
    let (pod, err) = run(&["--native-sidecar", "true"]);
    assert!(is_native(&pod));
    assert!(!err.contains("container form"), "{err}");
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn mcp_port_annotation_has_the_sidecar_front_the_mcp_endpoint() {
    let cfg = InjectConfig::default();
    let (pod, _, _) = check_pod_fixture("pod-mcp-port.yaml", &cfg);
    let spec = pod.spec.as_ref().unwrap();
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == SIDECAR_NAME)
        .unwrap();
    assert_eq!(
        env_value(sidecar, env::MCP_UPSTREAM).as_deref(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(
        env_value(sidecar, env::MCP_LISTEN),
        Some(format!("0.0.0.0:{MCP_PORT}"))
    );
    let port = sidecar
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(MCP_PORT_NAME))
        .unwrap();
    assert_eq!(port.container_port, i32::from(MCP_PORT));
    // The MCP server keeps its own port; nothing else changes in it.
    let app = spec.containers.iter().find(|c| c.name == "server").unwrap();
    assert_eq!(app.ports.as_ref().unwrap()[0].container_port, 8080);

    // Without the annotation the sidecar has no MCP front.
    let (plain, _, _) = check_pod_fixture("pod-kube-api-access.yaml", &cfg);
    let spec = plain.spec.as_ref().unwrap();
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == SIDECAR_NAME)
        .unwrap();
    assert!(env_value(sidecar, env::MCP_UPSTREAM).is_none());
    assert!(
        sidecar
            .ports
            .iter()
            .flatten()
            .all(|p| p.name.as_deref() != Some(MCP_PORT_NAME))
    );
}

#[test]
fn invalid_mcp_port_annotations_are_refused_with_the_reason() {
    let cfg = InjectConfig::default();
    for (value, why) in [
        ("http", "is not a port number"),
        ("", "is not a port number"),
        ("0", "is not a port number"),
        ("-1", "is not a port number"),
        ("65536", "is not a port number"),
        ("8080.0", "is not a port number"),
        ("15443", "its API listener"),
        ("15020", "its admin listener"),
        ("443", "its https alias listener"),
        ("15080", "its MCP front"),
    ] {
        let mut p = load("pod-mcp-port.yaml");
        p["metadata"]["annotations"][MCP_PORT_ANNOTATION] = serde_json::json!(value);
        let e = patch(&p, &enabled(), "mcp", &cfg).unwrap_err();
        assert!(
            matches!(e, RefuseReason::InvalidMcpPort { .. }),
            "{value}: {e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(MCP_PORT_ANNOTATION) && msg.contains(why),
            "{value}: {msg}"
        );
    }
    // inject -f refuses it too.
    let text = std::fs::read_to_string(fixture_path("pod-mcp-port.yaml"))
        .unwrap()
        .replace(
            "mcp-warden.io/mcp-port: \"8080\"",
            "mcp-warden.io/mcp-port: \"web\"",
        );
    let (_, reports) = inject_yaml(&text, &cfg).unwrap();
    assert!(
        reports[0].outcome.starts_with("refused")
            && reports[0].outcome.contains(MCP_PORT_ANNOTATION),
        "{reports:?}"
    );
}

/// The example of docs and chart README: the Deployment gets the MCP front,
/// and its Service targets the front's named port.
#[test]
fn the_mcp_front_example_points_its_service_at_the_sidecar() {
    let path = fixture_path("../../../manifests/examples/mcp-server-front.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let (out, reports) = inject_yaml(&text, &InjectConfig::default()).unwrap();
    let objs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&out)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let dep: Deployment = serde_json::from_value(dep.clone()).unwrap();
    let spec = dep.spec.template.spec.unwrap();
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == SIDECAR_NAME)
        .unwrap_or_else(|| panic!("not injected: {reports:?}"));
    assert_eq!(
        env_value(sidecar, env::MCP_UPSTREAM).as_deref(),
        Some("127.0.0.1:8080")
    );
    assert!(
        sidecar
            .ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some(MCP_PORT_NAME))
    );
    let svc = objs.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], MCP_PORT_NAME);
}
