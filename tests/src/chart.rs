//! The chart as tests use it: the documents of `manifests/mcp-warden.yaml`
//! (the chart's rendered output), and the webhook binary registered on the
//! real kube-apiserver with the chart's own webhook configurations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{run, run_ok};
use crate::realkube::{ADMIN, RealKube};
use crate::stack;

/// How long one kubectl call may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The repository's file `rel`.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The `helm` binary: `MCP_WARDEN_HELM`, else the repository's
/// `.cache/bin/helm` (`scripts/deps/helm.sh` installs it; the test command
/// runs that first).
pub fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_WARDEN_HELM") {
        return PathBuf::from(p);
    }
    let cached = repo_file(".cache/bin/helm");
    assert!(
        cached.is_file(),
        "helm not found: run scripts/deps/helm.sh (installs .cache/bin/helm) or set MCP_WARDEN_HELM"
    );
    cached
}

/// The documents of `manifests/mcp-warden.yaml`.
pub fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_file("manifests/mcp-warden.yaml"))
        .unwrap_or_else(|e| panic!("manifests/mcp-warden.yaml: {e}"));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("manifests/mcp-warden.yaml: {e}"))
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

/// The manifests' document of `kind` named `name`.
pub fn manifest(kind: &str, name: &str) -> Value {
    manifests()
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("manifests/mcp-warden.yaml has no {kind} {name}"))
}

/// The manifests' `kind`/`name` moved to namespace `ns` (also its
/// ServiceAccount subjects), with its labels dropped.
pub fn manifest_in(kind: &str, name: &str, ns: &str) -> Value {
    let mut doc = manifest(kind, name);
    doc["metadata"] = json!({"name": name, "namespace": ns});
    if let Some(subjects) = doc["subjects"].as_array_mut() {
        for s in subjects {
            s["namespace"] = json!(ns);
        }
    }
    doc
}

/// `kubectl ARGS -o json` as admin, parsed.
pub fn admin_json(kube: &RealKube, args: &[&str]) -> Value {
    let out = run_ok(kube.kubectl("1.32", ADMIN).args(args).args(["-o", "json"]))
        .unwrap_or_else(|e| panic!("{e:#}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
}

/// The label a pod webhook registered by [`RealWebhook::register`] requires
/// on a namespace (value: the configuration's name): tests share the
/// control plane, and each webhook sees only its own test's namespaces.
pub const TEST_LABEL: &str = "mcp-warden-test";

/// The webhook binary on 127.0.0.1 with the chart's injection settings, and
/// the webhook configurations that point at it. On drop the configurations
/// are deleted first (they are `failurePolicy: Fail`), then the process is
/// killed.
pub struct RealWebhook {
    kube: &'static RealKube,
    /// The webhook process.
    pub server: stack::Webhook,
    /// Its working directory (also for the test's scratch files).
    pub dir: tempfile::TempDir,
    configs: Vec<(String, String)>,
}

impl RealWebhook {
    /// Starts the webhook with the chart's injection settings (its
    /// ConfigMap's `config.yaml`); it reads the server's version with the
    /// admin kubeconfig (`GET /version` needs no RBAC).
    pub fn start(kube: &'static RealKube, prefix: &str) -> RealWebhook {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(kube.work_dir())
            .unwrap_or_else(|e| panic!("a webhook dir: {e}"));
        let cm = manifest("ConfigMap", "mcp-warden-webhook-config");
        let config = cm["data"]["config.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("no config.yaml in {cm}"));
        let server = stack::Webhook::start(stack::WebhookOptions {
            config: Some(config.to_string()),
            dir: Some(dir.path().to_path_buf()),
            env: vec![
                (
                    "KUBECONFIG".into(),
                    kube.kubeconfig_path(ADMIN).display().to_string(),
                ),
                ("RUST_LOG".into(), "info".into()),
            ],
            env_remove: vec!["KUBERNETES_SERVICE_HOST".into()],
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        RealWebhook {
            kube,
            server,
            dir,
            configs: Vec::new(),
        }
    }

    /// The webhook's log.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// The webhook's JSON log lines.
    pub fn log_events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The manifests' `kind` configuration `mcp-warden`, renamed `name`,
    /// with only the webhooks named in `entries`, each calling this process
    /// by URL; each sees only namespaces labelled [`TEST_LABEL`]` = name`
    /// (added to the chart's selector, or the whole selector where the chart
    /// has none); applied as admin.
    pub fn register(&mut self, kind: &str, name: &str, entries: &[&str]) -> Value {
        let mut doc = manifest(kind, "mcp-warden");
        doc["metadata"] = json!({"name": name});
        let bundle = self.server.ca_bundle();
        let webhooks: Vec<Value> = doc["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w["name"].as_str().is_some_and(|n| entries.contains(&n)))
            .map(|mut w| {
                let path = w["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let mine = json!({"key": TEST_LABEL, "operator": "In", "values": [name]});
                // (Checked with `get`: indexing a missing key mutably would
                // insert it, and an empty selector matches every namespace.)
                match w
                    .get_mut("namespaceSelector")
                    .and_then(|s| s.get_mut("matchExpressions"))
                    .and_then(Value::as_array_mut)
                {
                    Some(exprs) => exprs.push(mine),
                    // The AccessRequest webhooks judge every namespace: two
                    // tests' would judge each other's approvals.
                    None => {
                        if !w["namespaceSelector"].is_object() {
                            w["namespaceSelector"] = json!({});
                        }
                        w["namespaceSelector"]["matchExpressions"] = json!([mine]);
                    }
                }
                w["clientConfig"] = json!({"url": self.server.url(&path), "caBundle": bundle});
                w
            })
            .collect();
        assert_eq!(webhooks.len(), entries.len(), "{entries:?} in {kind}");
        doc["webhooks"] = Value::Array(webhooks);
        self.kube
            .apply(&doc.to_string())
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.configs.push((kind.to_string(), name.to_string()));
        doc
    }
}

impl RealWebhook {
    /// Deletes the configuration `kind`/`name` (applied by the test itself)
    /// with the others when this drops.
    pub fn delete_on_drop(&mut self, kind: &str, name: &str) {
        self.configs.push((kind.to_string(), name.to_string()));
    }
}

impl Drop for RealWebhook {
    fn drop(&mut self) {
        for (kind, name) in self.configs.drain(..).rev() {
            let _ = run(
                self.kube.kubectl("1.32", ADMIN).args([
                    "delete",
                    &kind.to_ascii_lowercase(),
                    &name,
                    "--ignore-not-found",
                ]),
                LIMIT,
            );
        }
        self.server.kill();
    }
}
