//! The install manifests and the Helm chart: `manifests/` is the chart's
//! `helm template` output (re-rendered and compared, so the two never drift),
//! every document deserializes into its k8s-openapi type and passes
//! `kubernetes-validate --strict -k 1.32`, and the chart lints and renders in
//! each certificate mode. The injected fixture workloads pass the same
//! schema validation.
//!
//! Needs helm (scripts/deps/helm.sh) and kubernetes-validate
//! (scripts/deps/kubernetes-validate.sh). To refresh manifests/ after a chart
//! change: `MCP_WARDEN_UPDATE_MANIFESTS=1 cargo test -p mcp-warden-webhook --test it -- manifests::`.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mcp_warden_shared::contract;
use mcp_warden_webhook::config::{InjectConfig, NativeSidecar, SidecarForm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> PathBuf {
    if let Ok(p) = std::env::var("MCP_WARDEN_HELM") {
        return PathBuf::from(p);
    }
    let cached = repo().join(".cache/bin/helm");
    if cached.is_file() {
        return cached;
    }
    if Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("helm");
    }
    panic!(
        "helm not found: run scripts/deps/helm.sh (installs .cache/bin/helm) or set MCP_WARDEN_HELM"
    );
}

fn kubernetes_validate(file: &Path) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.32", "--no-warn"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate not runnable ({e}): run scripts/deps/kubernetes-validate.sh"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("ERROR"),
        "kubernetes-validate {}:\n{text}",
        file.display()
    );
    assert!(
        text.contains("passed"),
        "kubernetes-validate validated nothing in {}:\n{text}",
        file.display()
    );
}

fn helm_template(values: Option<&str>) -> String {
    let mut cmd = Command::new(helm());
    cmd.current_dir(repo()).args([
        "template",
        "mcp-warden",
        "charts/mcp-warden",
        "--namespace",
        "mcp-warden",
    ]);
    if let Some(v) = values {
        cmd.args(["-f", v]);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Deserializes a document into its k8s-openapi type (cert-manager kinds,
/// which k8s-openapi does not know, are checked for their shape).
fn typed(doc: &Value) {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let v = doc.clone();
    let r = match kind {
        "Namespace" => serde_json::from_value::<Namespace>(v).map(|_| ()),
        "ServiceAccount" => serde_json::from_value::<ServiceAccount>(v).map(|_| ()),
        "ConfigMap" => serde_json::from_value::<ConfigMap>(v).map(|_| ()),
        "ClusterRole" => serde_json::from_value::<ClusterRole>(v).map(|_| ()),
        "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(v).map(|_| ()),
        "Role" => serde_json::from_value::<Role>(v).map(|_| ()),
        "RoleBinding" => serde_json::from_value::<RoleBinding>(v).map(|_| ()),
        "Service" => serde_json::from_value::<Service>(v).map(|_| ()),
        "Deployment" => serde_json::from_value::<Deployment>(v).map(|_| ()),
        "PodDisruptionBudget" => serde_json::from_value::<PodDisruptionBudget>(v).map(|_| ()),
        "NetworkPolicy" => {
            serde_json::from_value::<k8s_openapi::api::networking::v1::NetworkPolicy>(v).map(|_| ())
        }
        "MutatingWebhookConfiguration" => {
            serde_json::from_value::<MutatingWebhookConfiguration>(v).map(|_| ())
        }
        "ValidatingWebhookConfiguration" => {
            serde_json::from_value::<ValidatingWebhookConfiguration>(v).map(|_| ())
        }
        "CustomResourceDefinition" => {
            serde_json::from_value::<CustomResourceDefinition>(v).map(|_| ())
        }
        "Certificate" | "Issuer" => {
            assert_eq!(doc["apiVersion"], "cert-manager.io/v1");
            assert!(doc["spec"].is_object());
            Ok(())
        }
        other => panic!("unexpected kind {other} in the chart output"),
    };
    r.unwrap_or_else(|e| panic!("{kind} {}: {e}", doc["metadata"]["name"]));
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn manifests_are_the_rendered_chart() {
    let rendered = helm_template(Some("charts/mcp-warden/ci/manifests-values.yaml"));
    let path = repo().join("manifests/mcp-warden.yaml");
    let header = "# Generated from charts/mcp-warden with charts/mcp-warden/ci/manifests-values.yaml:\n\
                  #   helm template mcp-warden charts/mcp-warden --namespace mcp-warden -f charts/mcp-warden/ci/manifests-values.yaml\n\
                  # Do not edit: MCP_WARDEN_UPDATE_MANIFESTS=1 cargo test -p mcp-warden-webhook --test it -- manifests::\n";
    let want = format!("{header}{rendered}");
    if std::env::var("MCP_WARDEN_UPDATE_MANIFESTS").as_deref() == Ok("1") {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "manifests/mcp-warden.yaml differs from the chart: re-render with MCP_WARDEN_UPDATE_MANIFESTS=1 cargo test -p mcp-warden-webhook --test it -- manifests::"
    );
}

#[test]
fn manifests_deserialize_validate_and_keep_their_promises() {
    // Every file under manifests/ (the install and the CRDs).
    let mut files = Vec::new();
    let mut stack = vec![repo().join("manifests")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        for doc in docs(&std::fs::read_to_string(f).unwrap()) {
            typed(&doc);
        }
        kubernetes_validate(f);
    }
    // The chart's CRDs and manifests/crds are the same files.
    for e in std::fs::read_dir(repo().join("charts/mcp-warden/crds")).unwrap() {
        let p = e.unwrap().path();
        let twin = repo().join("manifests/crds").join(p.file_name().unwrap());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(&twin).unwrap(),
            "{} drifted from {}",
            twin.display(),
            p.display()
        );
    }

    let path = repo().join("manifests/mcp-warden.yaml");
    let d = docs(&std::fs::read_to_string(&path).unwrap());

    let mwc: MutatingWebhookConfiguration =
        serde_json::from_value(find(&d, "MutatingWebhookConfiguration", "mcp-warden").clone())
            .unwrap();
    let all_hooks = mwc.webhooks.unwrap();
    let names: Vec<&str> = all_hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "namespace.inject.mcp-warden.io",
            "pod.inject.mcp-warden.io",
            "accessrequests.mcp-warden.io"
        ]
    );
    // AccessRequest decisions go through both the mutating and the validating webhook.
    let ar = serde_json::to_value(&all_hooks[2]).unwrap();
    assert_eq!(
        ar["clientConfig"]["service"]["path"],
        "/mutate-accessrequests"
    );
    assert_eq!(
        ar["rules"][0]["resources"],
        serde_json::json!(["accessrequests/status"])
    );
    assert_eq!(ar["failurePolicy"], "Fail");
    let vwc: ValidatingWebhookConfiguration =
        serde_json::from_value(find(&d, "ValidatingWebhookConfiguration", "mcp-warden").clone())
            .unwrap();
    let v = serde_json::to_value(&vwc.webhooks.unwrap()[0]).unwrap();
    assert_eq!(
        v["clientConfig"]["service"]["path"],
        "/validate-accessrequests"
    );
    assert_eq!(v["failurePolicy"], "Fail");
    let hooks = &all_hooks[..2];
    for h in hooks {
        assert_eq!(h.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(h.side_effects, "None");
        assert_eq!(h.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(h.timeout_seconds, Some(5));
        assert_eq!(h.match_policy.as_deref(), Some("Equivalent"));
        assert_eq!(h.admission_review_versions, vec!["v1".to_string()]);
        let svc = h.client_config.service.as_ref().unwrap();
        assert_eq!(
            (
                svc.name.as_str(),
                svc.namespace.as_str(),
                svc.path.as_deref()
            ),
            (
                contract::WEBHOOK_SERVICE,
                contract::WEBHOOK_NAMESPACE,
                Some(contract::MUTATE_PATH)
            )
        );
        let ns = serde_json::to_value(h.namespace_selector.as_ref().unwrap()).unwrap();
        let excluded = ns["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(
            excluded["values"],
            serde_json::json!(["kube-system", "mcp-warden"])
        );
        let obj = serde_json::to_value(h.object_selector.as_ref().unwrap()).unwrap();
        assert_eq!(
            obj["matchExpressions"][0]["key"],
            contract::POD_INJECT_LABEL
        );
    }
    let ns_hook = serde_json::to_value(&hooks[0]).unwrap();
    assert_eq!(
        ns_hook["namespaceSelector"]["matchExpressions"][0],
        serde_json::json!({"key": contract::NAMESPACE_INJECTION_LABEL, "operator": "In", "values": [contract::NAMESPACE_INJECTION_ENABLED]})
    );
    assert_eq!(
        ns_hook["objectSelector"]["matchExpressions"][0],
        serde_json::json!({"key": contract::POD_INJECT_LABEL, "operator": "NotIn", "values": ["false"]})
    );

    // Least privilege: its own MutatingWebhookConfiguration and Secret only.
    let cr: ClusterRole =
        serde_json::from_value(find(&d, "ClusterRole", "mcp-warden-webhook").clone()).unwrap();
    let rules = cr.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&[contract::WEBHOOK_CONFIGURATION.to_string()][..])
    );
    assert_eq!(rules[0].verbs, vec!["get", "patch"]);
    let role: Role =
        serde_json::from_value(find(&d, "Role", "mcp-warden-webhook").clone()).unwrap();
    for r in role.rules.unwrap() {
        assert_eq!(r.resources.as_deref(), Some(&["secrets".to_string()][..]));
        if r.verbs != vec!["create"] {
            assert_eq!(
                r.resource_names.as_deref(),
                Some(&[contract::WEBHOOK_TLS_SECRET.to_string()][..])
            );
        }
    }

    // The Deployment: 2 replicas, probes, a locked-down container, never injected itself.
    let dep: Deployment =
        serde_json::from_value(find(&d, "Deployment", "mcp-warden-webhook").clone()).unwrap();
    let spec = dep.spec;
    assert_eq!(spec.replicas, Some(2));
    let tmpl = spec.template;
    assert_eq!(
        tmpl.metadata.unwrap().labels.unwrap()[contract::POD_INJECT_LABEL],
        "false"
    );
    let pod = tmpl.spec.unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let c = &pod.containers[0];
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(
        c.args
            .as_ref()
            .unwrap()
            .contains(&"--self-managed-tls".to_string())
    );
    // No PodDisruptionBudget in the plain YAML (its version depends on the
    // server, and the file applies on 1.20 too): manifests/examples/pdb.yaml
    // is the chart's, selecting the Deployment's pods.
    assert!(
        !d.iter().any(|o| o["kind"] == "PodDisruptionBudget"),
        "manifests/mcp-warden.yaml must apply on 1.20 and 1.21+: no PodDisruptionBudget"
    );
    let example =
        docs(&std::fs::read_to_string(repo().join("manifests/examples/pdb.yaml")).unwrap());
    let chart_pdb = find(
        &docs(&helm_template(None)),
        "PodDisruptionBudget",
        "mcp-warden-webhook",
    )
    .clone();
    assert_eq!(example.len(), 1);
    assert_eq!(example[0]["apiVersion"], "policy/v1");
    assert_eq!(example[0]["spec"], chart_pdb["spec"]);
    assert_eq!(example[0]["metadata"]["namespace"], "mcp-warden");
    let pdb: PodDisruptionBudget = serde_json::from_value(example[0].clone()).unwrap();
    assert!(pdb.spec.unwrap().min_available.is_some());

    // The webhook's config is a valid InjectConfig for this namespace.
    let cm: ConfigMap =
        serde_json::from_value(find(&d, "ConfigMap", "mcp-warden-webhook-config").clone()).unwrap();
    let cfg = InjectConfig::from_yaml("config.yaml", &cm.data.unwrap()["config.yaml"]).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.webhook_namespace, contract::WEBHOOK_NAMESPACE);
    assert_eq!(cfg.native_sidecar, NativeSidecar::Auto);

    // The example MCP namespace: labelled, with the policy and the sidecar's RBAC.
    let ns: Namespace = serde_json::from_value(find(&d, "Namespace", "mcp").clone()).unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()[contract::NAMESPACE_INJECTION_LABEL],
        contract::NAMESPACE_INJECTION_ENABLED
    );
    let policy = find(&d, "ConfigMap", contract::DEFAULT_POLICY_CONFIGMAP);
    assert_eq!(policy["metadata"]["namespace"], "mcp");
    let p: Value =
        serde_saphyr::from_str(policy["data"][contract::POLICY_KEY].as_str().unwrap()).unwrap();
    assert_eq!(p["kind"], "Policy");
    assert_eq!(p["defaultAction"], "deny");
    assert_eq!(p["rules"].as_array().unwrap().len(), 3);
    let sidecar_role: Role =
        serde_json::from_value(find(&d, "Role", "mcp-warden-sidecar").clone()).unwrap();
    let r = &sidecar_role.rules.unwrap()[0];
    assert_eq!(
        r.api_groups.as_deref(),
        Some(&[contract::API_GROUP.to_string()][..])
    );
    assert_eq!(
        r.resources.as_deref(),
        Some(&["accessrequests".to_string()][..])
    );
    for v in ["create", "get", "watch"] {
        assert!(r.verbs.contains(&v.to_string()));
    }
}

#[test]
fn chart_lints_and_renders_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for values in [
        None,
        Some("charts/mcp-warden/ci/manifests-values.yaml"),
        Some("charts/mcp-warden/ci/cert-manager-values.yaml"),
    ] {
        let mut lint = Command::new(helm());
        lint.current_dir(repo())
            .args(["lint", "--strict", "charts/mcp-warden"]);
        if let Some(v) = values {
            lint.args(["-f", v]);
        }
        let out = lint.output().unwrap();
        assert!(
            out.status.success(),
            "helm lint {values:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let rendered = helm_template(values);
        let d = docs(&rendered);
        assert!(d.len() >= 8, "{values:?}: only {} documents", d.len());
        for doc in &d {
            typed(doc);
        }
        let file = dir.path().join("render.yaml");
        std::fs::write(&file, &rendered).unwrap();
        kubernetes_validate(&file);
    }

    // cert-manager mode: files instead of self-management, CA injection, and
    // no API access for the webhook at all.
    let d = docs(&helm_template(Some(
        "charts/mcp-warden/ci/cert-manager-values.yaml",
    )));
    let mwc = find(&d, "MutatingWebhookConfiguration", "mcp-warden");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "mcp-warden/mcp-warden-webhook"
    );
    assert_eq!(mwc["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(
        mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][1]["values"],
        serde_json::json!(["kube-system", "mcp-warden", "monitoring"])
    );
    let cert = find(&d, "Certificate", "mcp-warden-webhook");
    assert_eq!(cert["spec"]["secretName"], "mcp-warden-webhook-tls");
    assert_eq!(
        cert["spec"]["dnsNames"][0],
        "mcp-warden-webhook.mcp-warden.svc"
    );
    let dep = find(&d, "Deployment", "mcp-warden-webhook");
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(args.contains(&Value::String(
        "--tls-cert-file=/etc/mcp-warden-webhook/tls/tls.crt".into()
    )));
    assert_eq!(
        dep["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    // The webhook itself needs no RBAC here (the approver role is not its).
    assert!(
        !d.iter()
            .any(|x| (x["kind"] == "ClusterRole" || x["kind"] == "Role")
                && x["metadata"]["name"] == "mcp-warden-webhook")
    );
    let cm = find(&d, "ConfigMap", "mcp-warden-webhook-config");
    let cfg = InjectConfig::from_yaml("config.yaml", cm["data"]["config.yaml"].as_str().unwrap())
        .unwrap();
    assert_eq!(cfg.native_sidecar, NativeSidecar::False);
    assert_eq!(
        cfg.collector_url,
        "https://collector.mcp-warden.svc:8443/events"
    );
    assert_eq!(cfg.collector_token_secret, "mcp-warden-collector-token");
    assert_eq!(cfg.cluster_name, "prod-eu-1");
    assert_eq!(cfg.excluded_namespaces, vec!["monitoring"]);
}

#[test]
fn injected_workloads_pass_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    for (name, form) in [
        ("mcp-server-deployment.yaml", SidecarForm::Native),
        ("mcp-server-deployment.yaml", SidecarForm::Container),
        ("workloads.yaml", SidecarForm::Native),
        ("workloads.yaml", SidecarForm::Container),
    ] {
        let cfg = InjectConfig::default();
        let input =
            std::fs::read_to_string(repo().join("tests/fixtures/webhook").join(name)).unwrap();
        let (out, _) = mcp_warden_webhook::manifest::inject_yaml(&input, &cfg, form).unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, out).unwrap();
        kubernetes_validate(&file);
    }
}

/// A 1.20 server has no policy/v1; the chart picks the
/// PodDisruptionBudget's version by the server's API versions (and, for
/// `helm template`, by `--kube-version`).
#[test]
fn pdb_follows_the_servers_api_versions() {
    for (kube_version, want) in [(None, "policy/v1"), (Some("1.20.2"), "policy/v1beta1")] {
        let mut cmd = Command::new(helm());
        cmd.current_dir(repo()).args([
            "template",
            "mcp-warden",
            "charts/mcp-warden",
            "--namespace",
            "mcp-warden",
        ]);
        if let Some(v) = kube_version {
            cmd.args(["--kube-version", v]);
        }
        let out = cmd.output().expect("run helm");
        assert!(
            out.status.success(),
            "helm template {kube_version:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = docs(&String::from_utf8(out.stdout).unwrap());
        let pdb = find(&d, "PodDisruptionBudget", "mcp-warden-webhook");
        assert_eq!(pdb["apiVersion"], want, "{kube_version:?}");
        assert_eq!(pdb["spec"]["minAvailable"], 1);
    }
}
