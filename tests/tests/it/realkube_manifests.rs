//! The install on a real kube-apiserver (1.20.2, see `realkube.rs`): the
//! plain manifests (`manifests/crds/` + `manifests/mcp-warden.yaml`) and the
//! chart as `helm template` renders it with the server's own capabilities
//! (`--kube-version` and every `--api-versions` the server serves) are first
//! `kubectl apply --dry-run=server`, then applied for real, and every object
//! must be accepted and stored. The webhook's pods never run (there is no
//! kubelet); the objects are what is checked. On 1.20 the chart's
//! PodDisruptionBudget must be `policy/v1beta1`.
//!
//! `manifests/mcp-warden.yaml` carries no PodDisruptionBudget (its version
//! depends on the server); `manifests/examples/pdb.yaml` is applied with the
//! version its comment gives for 1.20.
//!
//! The two installs share the cluster-scoped objects (fixed names); the
//! chart goes to its own release namespace, applied after the manifests, as
//! an upgrade of those.
//!
//! Needs the control plane (`bash scripts/deps/kube-control-plane.sh`) and
//! helm (`bash scripts/deps/helm.sh`, found in `<repo>/.cache/bin/helm` or
//! `MCP_WARDEN_HELM`); scripts/test.sh installs both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mcp_warden_tests::chart::helm;
use mcp_warden_tests::harness::{run, run_ok, wait_for};
use mcp_warden_tests::realkube::{ADMIN, RealKube, VERSION};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("YAML documents")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `kubectl apply [--dry-run=server] -f FILE -o json` as admin: the applied
/// objects (kubectl prints a List).
fn apply(kube: &RealKube, file: &Path, dry_run: bool) -> Vec<Value> {
    let mut cmd = kube.kubectl("1.32", ADMIN);
    cmd.args(["apply", "-o", "json", "-f"]).arg(file);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    let out = run(&mut cmd, Duration::from_secs(120)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.to_lowercase().contains("error"),
        "kubectl apply{} -f {}: {}\nstdout: {stdout}\nstderr: {stderr}",
        if dry_run { " --dry-run=server" } else { "" },
        file.display(),
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).expect("kubectl -o json");
    match v["kind"].as_str() {
        Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![v],
    }
}

fn key(d: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&d["apiVersion"]),
        s(&d["kind"]),
        s(&d["metadata"]["namespace"]),
        s(&d["metadata"]["name"]),
    )
}

/// Every document of `file` comes back from the apply, same group-version,
/// kind, namespace and name.
fn assert_all_applied(file: &Path, applied: &[Value], default_ns: &str) {
    let want: Vec<_> = docs(&std::fs::read_to_string(file).unwrap())
        .iter()
        .map(|d| {
            let (gv, k, ns, n) = key(d);
            let namespaced = !matches!(
                k.as_str(),
                "Namespace"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "CustomResourceDefinition"
                    | "MutatingWebhookConfiguration"
                    | "ValidatingWebhookConfiguration"
            );
            let ns = if ns.is_empty() && namespaced {
                default_ns.to_string()
            } else {
                ns
            };
            (gv, k, ns, n)
        })
        .collect();
    let mut have: Vec<_> = applied.iter().map(key).collect();
    have.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(have, want_sorted, "objects applied from {}", file.display());
}

/// The namespaces a file creates are applied for real first: a server-side
/// dry run of a Namespace stores nothing, so the namespaced objects after it
/// would be NotFound.
fn apply_namespaces(kube: &RealKube, file: &Path) {
    for ns in docs(&std::fs::read_to_string(file).unwrap())
        .into_iter()
        .filter(|d| d["kind"] == "Namespace")
    {
        kube.apply(&serde_json::to_string(&ns).unwrap())
            .expect("namespace");
    }
}

fn get_json(kube: &RealKube, args: &[&str]) -> Value {
    let out = run_ok(kube.kubectl("1.32", ADMIN).args(args).args(["-o", "json"])).unwrap();
    serde_json::from_str(&out).unwrap()
}

/// The group-versions the server serves, for `helm template --api-versions`.
fn server_api_versions(kube: &RealKube) -> Vec<String> {
    run_ok(kube.kubectl("1.32", ADMIN).arg("api-versions"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn manifests_and_chart_apply_on_a_real_1_20_server() {
    // Its own control plane: the installed webhook configurations are
    // `failurePolicy: Fail` towards a Service without pods, which would
    // refuse the AccessRequest updates and injected pods of the tests
    // sharing `RealKube::shared()`.
    let kube = &RealKube::start().expect("the real control plane");
    let versions = server_api_versions(kube);
    assert!(
        versions.iter().any(|v| v == "policy/v1beta1")
            && !versions.iter().any(|v| v == "policy/v1"),
        "a 1.20 server serves policy/v1beta1 only: {versions:?}"
    );

    // 1. The plain manifests: the CRD first (dry run, then for real), then
    //    the install.
    let crds = repo().join("manifests/crds");
    for f in std::fs::read_dir(&crds).unwrap() {
        let f = f.unwrap().path();
        assert_all_applied(&f, &apply(kube, &f, true), "default");
        assert_all_applied(&f, &apply(kube, &f, false), "default");
    }
    // The CRD is served (Established) before anything uses it.
    wait_for(
        "the AccessRequest CRD to be Established",
        Duration::from_secs(60),
        || {
            let crd = get_json(kube, &["get", "crd", "accessrequests.mcp-warden.io"]);
            let established = crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if !established {
                std::thread::sleep(Duration::from_millis(200));
            }
            established.then_some(())
        },
    )
    .unwrap();

    let manifests = repo().join("manifests/mcp-warden.yaml");
    apply_namespaces(kube, &manifests);
    let dry = apply(kube, &manifests, true);
    assert_all_applied(&manifests, &dry, "mcp-warden");
    let real = apply(kube, &manifests, false);
    assert_all_applied(&manifests, &real, "mcp-warden");
    // Stored: the webhook's Deployment and both webhook configurations.
    let dep = get_json(
        kube,
        &[
            "get",
            "deployment",
            "-n",
            "mcp-warden",
            "mcp-warden-webhook",
        ],
    );
    assert_eq!(dep["spec"]["replicas"], 2, "{dep}");
    get_json(kube, &["get", "mutatingwebhookconfiguration", "mcp-warden"]);
    get_json(
        kube,
        &["get", "validatingwebhookconfiguration", "mcp-warden"],
    );
    // The plain install's PodDisruptionBudget, as its example says for 1.20.
    let pdb = std::fs::read_to_string(repo().join("manifests/examples/pdb.yaml"))
        .unwrap()
        .replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n");
    let pdb_file = kube.work_dir().join("pdb-v1beta1.yaml");
    std::fs::write(&pdb_file, &pdb).unwrap();
    assert_all_applied(&pdb_file, &apply(kube, &pdb_file, true), "mcp-warden");
    assert_all_applied(&pdb_file, &apply(kube, &pdb_file, false), "mcp-warden");

    // 2. The chart, rendered with the server's capabilities, into its own
    //    release namespace.
    let mut cmd = Command::new(helm());
    cmd.current_dir(repo()).args([
        "template",
        "mcp-warden",
        "charts/mcp-warden",
        "--namespace",
        "warden-chart",
        "--set",
        "namespace.create=true",
        "--kube-version",
        VERSION,
    ]);
    for v in &versions {
        cmd.args(["--api-versions", v]);
    }
    let rendered = run_ok(&mut cmd).expect("helm template");
    let pdb = docs(&rendered)
        .into_iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .expect("the chart renders a PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1", "{pdb}");
    let chart_file = kube.work_dir().join("chart.yaml");
    std::fs::write(&chart_file, &rendered).unwrap();
    apply_namespaces(kube, &chart_file);
    let dry = apply(kube, &chart_file, true);
    assert_all_applied(&chart_file, &dry, "warden-chart");
    let real = apply(kube, &chart_file, false);
    assert_all_applied(&chart_file, &real, "warden-chart");
    let stored = get_json(
        kube,
        &[
            "get",
            "poddisruptionbudgets.v1beta1.policy",
            "-n",
            "warden-chart",
            "mcp-warden-webhook",
        ],
    );
    assert_eq!(stored["apiVersion"], "policy/v1beta1", "{stored}");
    assert_eq!(stored["spec"]["minAvailable"], 1, "{stored}");
    let dep = get_json(
        kube,
        &[
            "get",
            "deployment",
            "-n",
            "warden-chart",
            "mcp-warden-webhook",
        ],
    );
    assert_eq!(dep["spec"]["replicas"], 2, "{dep}");
    // The webhook configurations now point at the chart's Service.
    let mwc = get_json(kube, &["get", "mutatingwebhookconfiguration", "mcp-warden"]);
    let svc = &mwc["webhooks"][0]["clientConfig"]["service"];
    assert_eq!(svc["namespace"], "warden-chart", "{mwc}");
}
