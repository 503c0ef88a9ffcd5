//! The simulated pod (needs root: Linux namespaces and mounts), shared by
//! the end-to-end tests (`tests/it/simulated_pod.rs`) and the demo.
//!
//! `mcp-warden-webhook inject -f` patches the fixture Deployment of a
//! Kubernetes MCP server; its pod is built from the template and run the way
//! a kubelet would, with namespaces standing in for the sandbox:
//!
//! - one network namespace is the pod's shared localhost; kube-apisim listens
//!   in it on 127.0.0.2:6443, standing for the `kubernetes` Service's IP, and
//!   every container gets the kubelet's service-link env for it (which the
//!   container's own `env` overrides, as in the kubelet); ports below 1024
//!   are unprivileged there, as containerd 2.x makes them;
//! - every container's `/etc/hosts` is written from the pod's `hostAliases`,
//!   as the kubelet does;
//! - each container runs in its own mount namespace holding exactly the
//!   volumes the patched spec mounts into it, at their paths (read-only where
//!   the spec says so), as the spec's uid; the projected token volume is
//!   filled like the kubelet does (`token`, `ca.crt`, `namespace`, owned by
//!   the only container that mounts it); the work directory holding every
//!   volume's backing files and kube-apisim's state is hidden from the app;
//! - optionally: a collector in the pod's network, a policy ConfigMap, the
//!   AccessRequest CRD with the webhook stamping who decided, and the real
//!   `kubernetes-mcp-server` in the app container's "image".
//!
//! Test support: failures panic with what was seen.
#![allow(clippy::unwrap_used)]

use crate::harness::{fixture, kubectl_path, run, wait_for, workspace_bin, write_kubeconfig};
use crate::stack::{Webhook, WebhookOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SERVICE_IP: &str = "127.0.0.2";
pub const SERVICE_PORT: &str = "6443";
pub const POD_NAME: &str = "kubernetes-mcp-server-7d9c6b5f4-sim01";
pub const NAMESPACE: &str = "mcp";
/// The pod's IP (downward API `status.podIP`): a loopback address of the
/// pod's network namespace, where the kubelet's probes reach the admin port.
pub const POD_IP: &str = "127.0.0.3";

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Kills and reaps the children, removes mount points created on the host.
pub struct Cleanup {
    pub children: Vec<Child>,
    pub created: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in self.created.iter().rev() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Creates `p` on the host if missing (mount points must exist); remembers
/// the topmost directory it created so it is removed afterwards.
pub fn ensure_mount_point(p: &Path, cleanup: &mut Cleanup) {
    let mut top = None;
    let mut cur = PathBuf::new();
    for comp in p.components() {
        cur.push(comp);
        if !cur.exists() && top.is_none() {
            top = Some(cur.clone());
        }
    }
    std::fs::create_dir_all(p).unwrap();
    if let Some(t) = top {
        cleanup.created.push(t);
    }
}

pub struct Pod {
    pub spec: Value,
    pub annotations: BTreeMap<String, String>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// `metadata.name` (the downward API's).
    pub name: String,
    /// `metadata.namespace` (the downward API's).
    pub namespace: String,
}

/// The ConfigMaps of the MCP server fixture (what its pod mounts).
fn fixture_config_maps() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(fixture("webhook/mcp-server-deployment.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                serde_json::from_value(d["data"].clone()).unwrap_or_default(),
            )
        })
        .collect()
}

/// A pod as an API server stored it (after its admission chain, the
/// webhook's patch included), made from the MCP server fixture.
pub fn stored_pod(stored: &Value) -> Pod {
    Pod {
        spec: stored["spec"].clone(),
        annotations: serde_json::from_value(stored["metadata"]["annotations"].clone())
            .unwrap_or_default(),
        config_maps: fixture_config_maps(),
        name: stored["metadata"]["name"].as_str().unwrap().to_string(),
        namespace: stored["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// Runs the real `inject -f` (with `config_yaml` as its `--config`) and
/// builds the pod from the Deployment's template.
pub fn injected_pod(config_yaml: &str, dir: &Path) -> Pod {
    let config = dir.join("inject-config.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    let out = run(
        Command::new(workspace_bin("mcp-warden-webhook"))
            .args(["inject", "-f"])
            .arg(fixture("webhook/mcp-server-deployment.yaml"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let tmpl = &dep["spec"]["template"];
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(tmpl["metadata"]["annotations"].clone()).unwrap();
    assert_eq!(
        annotations.get("mcp-warden.io/status").map(String::as_str),
        Some("injected")
    );
    let mut config_maps = BTreeMap::new();
    for d in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        let data: BTreeMap<String, String> =
            serde_json::from_value(d["data"].clone()).unwrap_or_default();
        config_maps.insert(d["metadata"]["name"].as_str().unwrap().to_string(), data);
    }
    Pod {
        spec: tmpl["spec"].clone(),
        annotations,
        config_maps,
        name: POD_NAME.to_string(),
        namespace: NAMESPACE.to_string(),
    }
}

/// Fills one volume's backing directory like the kubelet would.
pub fn materialize_volume(v: &Value, dir: &Path, pod: &Pod, api: &ApiFiles, owner: Option<u32>) {
    std::fs::create_dir_all(dir).unwrap();
    let chown = |p: &Path| {
        if let Some(uid) = owner {
            std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
        }
    };
    if v.get("emptyDir").is_some() {
        // The kubelet makes emptyDirs world-writable.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    } else if let Some(proj) = v.get("projected") {
        for s in proj["sources"].as_array().unwrap() {
            if let Some(t) = s.get("serviceAccountToken") {
                assert!(
                    t.get("audience").is_none(),
                    "only API-audience tokens are simulated"
                );
                let p = dir.join(t["path"].as_str().unwrap());
                std::fs::write(&p, &api.token).unwrap();
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
                chown(&p);
            } else if let Some(cm) = s.get("configMap") {
                assert_eq!(cm["name"], "kube-root-ca.crt");
                for item in cm["items"].as_array().unwrap() {
                    std::fs::write(dir.join(item["path"].as_str().unwrap()), &api.ca).unwrap();
                }
            } else if let Some(d) = s.get("downwardAPI") {
                for item in d["items"].as_array().unwrap() {
                    assert_eq!(item["fieldRef"]["fieldPath"], "metadata.namespace");
                    std::fs::write(dir.join(item["path"].as_str().unwrap()), &pod.namespace)
                        .unwrap();
                }
            } else {
                panic!("unsupported projected source {s}");
            }
        }
        chown(dir);
    } else if let Some(cm) = v.get("configMap") {
        let name = cm["name"].as_str().unwrap();
        match pod.config_maps.get(name) {
            Some(data) => {
                let items: Vec<(String, String)> = match cm.get("items").and_then(Value::as_array) {
                    Some(items) => items
                        .iter()
                        .map(|i| {
                            (
                                i["key"].as_str().unwrap().to_string(),
                                i["path"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect(),
                    None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                };
                for (k, p) in items {
                    std::fs::write(dir.join(p), &data[&k]).unwrap();
                }
            }
            // A missing optional ConfigMap is an empty volume.
            None => assert_eq!(
                cm["optional"], true,
                "ConfigMap {name} missing and not optional"
            ),
        }
    } else {
        panic!("unsupported volume {v}");
    }
}

pub struct ApiFiles {
    pub token: String,
    pub ca: String,
}

/// The env the kubelet gives a container: service links for `kubernetes`,
/// then the container's own env, which wins.
pub fn container_env(c: &Value, pod: &Pod) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let url = format!("tcp://{SERVICE_IP}:{SERVICE_PORT}");
    for (k, v) in [
        ("KUBERNETES_SERVICE_HOST", SERVICE_IP.to_string()),
        ("KUBERNETES_SERVICE_PORT", SERVICE_PORT.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", SERVICE_PORT.to_string()),
        ("KUBERNETES_PORT", url.clone()),
        ("KUBERNETES_PORT_443_TCP", url),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_string()),
        ("KUBERNETES_PORT_443_TCP_PORT", SERVICE_PORT.to_string()),
        ("KUBERNETES_PORT_443_TCP_ADDR", SERVICE_IP.to_string()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME", "/tmp".to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str().unwrap().to_string()
        } else if let Some(f) = e.pointer("/valueFrom/fieldRef/fieldPath") {
            match f.as_str().unwrap() {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => pod.namespace.clone(),
                "status.podIP" => POD_IP.to_string(),
                other => panic!("unsupported fieldRef {other}"),
            }
        } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
            pod.config_maps[r["name"].as_str().unwrap()][r["key"].as_str().unwrap()].clone()
        } else {
            panic!("unsupported env {e}");
        };
        // The kubelet expands `$(VAR)` from the entries defined before.
        let value = expand_env_refs(&value, &env);
        env.insert(name, value);
    }
    env
}

/// `$(NAME)` → the value of an earlier env entry, as the kubelet does
/// (`$$` escapes; unknown names stay as written).
pub fn expand_env_refs(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..3 + end]),
            }
            rest = &tail[3 + end..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

pub fn container_uid(c: &Value, pod: &Pod) -> u32 {
    c.pointer("/securityContext/runAsUser")
        .or_else(|| pod.spec.pointer("/securityContext/runAsUser"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32
}

/// A shell script that builds the container's mount namespace and execs
/// `argv` as its uid with exactly `env`.
pub fn container_script(
    c: &Value,
    volume_dirs: &BTreeMap<String, PathBuf>,
    hide: &[&Path],
    extra_binds: &[(PathBuf, PathBuf)],
    uid: u32,
    env: &BTreeMap<String, String>,
    argv: &[String],
) -> String {
    let mut s = String::from("set -eu\n");
    for (src, dst) in extra_binds {
        s += &format!(
            "mount --bind {} {}\n",
            sh_quote(&src.to_string_lossy()),
            sh_quote(&dst.to_string_lossy())
        );
    }
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let mut src = volume_dirs[m["name"].as_str().unwrap()].clone();
        if let Some(sub) = m.get("subPath").and_then(Value::as_str) {
            src = src.join(sub);
        }
        let dst = m["mountPath"].as_str().unwrap();
        s += &format!(
            "mount --bind {} {}\n",
            sh_quote(&src.to_string_lossy()),
            sh_quote(dst)
        );
        if m["readOnly"] == true {
            s += &format!("mount -o remount,bind,ro {}\n", sh_quote(dst));
        }
    }
    for h in hide {
        s += &format!(
            "mount -t tmpfs -o size=1m,mode=0755 tmpfs {}\n",
            sh_quote(&h.to_string_lossy())
        );
    }
    s += &format!("exec setpriv --reuid={uid} --regid={uid} --clear-groups -- env -i");
    for (k, v) in env {
        s += &format!(" {}", sh_quote(&format!("{k}={v}")));
    }
    for a in argv {
        s += &format!(" {}", sh_quote(a));
    }
    s.push('\n');
    s
}

/// A command running `script` in the pod's network namespace and a fresh
/// mount namespace.
pub fn in_container(netns_pid: u32, script: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{netns_pid}/ns/net"))
        .args([
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
        ])
        .arg(script)
        .stdin(Stdio::null());
    cmd
}

/// One simulated pod at a time: they share the host's mount points.
static ONE_POD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a simulated pod runs besides kube-apisim and the sidecar.
#[derive(Default)]
pub struct PodOptions {
    pub native_sidecar: bool,
    /// An `mcp-warden-collector` in the pod's network namespace, which the
    /// injection config names as the collector.
    pub collector: bool,
    /// The real `kubernetes-mcp-server` binary, bind-mounted into the app
    /// container at [`MCP_SERVER_DIR`].
    pub mcp_server: bool,
    /// The policy ConfigMap's `policy.yaml` (absent: the embedded default).
    pub policy: Option<&'static str>,
    /// Run this pod (e.g. [`stored_pod`]: as a real server stored it)
    /// instead of the fixture's `inject -f` output.
    pub stored: Option<Pod>,
    /// The real kube-apiserver instead of kube-apisim: a forwarder puts it
    /// at the pod's "Service IP" (see [`RealUpstream`]).
    pub real: Option<RealUpstream>,
    /// Approvals: kube-apisim gets the AccessRequest CRD and the user
    /// `alice`, and the webhook (stamping who decided) runs in the pod's
    /// network as kube-apisim's admission webhook.
    pub approvals: bool,
}

/// A real API server on the host's loopback (`crate::realkube`), reached
/// from the pod's network namespace through a forwarder at
/// `SERVICE_IP:SERVICE_PORT` (its certificate must name `SERVICE_IP`).
#[derive(Debug, Clone)]
pub struct RealUpstream {
    /// Where it listens on the host.
    pub addr: std::net::SocketAddr,
    /// Its CA (what the kubelet puts in `kube-root-ca.crt`).
    pub ca_pem: String,
    /// A token the test uses to see what the cluster really holds.
    pub admin_token: String,
    /// The pod's service-account token (what the kubelet projects).
    pub pod_token: String,
}

/// Starts the two halves of `tests/python/ns_forward.py`: on the host, a
/// Unix socket to `target`; in the pod's network, `SERVICE_IP:SERVICE_PORT`
/// to that socket. Bytes only: TLS is end to end.
fn start_forwarder(netns: u32, work: &Path, target: std::net::SocketAddr, cleanup: &mut Cleanup) {
    let script = crate::harness::python_script("ns_forward.py");
    let sock = work.join("apiserver.sock");
    let host = Command::new("python3")
        .arg(&script)
        .arg("unix-to-tcp")
        .arg(&sock)
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("forward-host.log")).unwrap())
        .spawn()
        .unwrap();
    cleanup.children.push(host);
    wait_for("the host forwarder", Duration::from_secs(15), || {
        sock.exists().then_some(())
    })
    .unwrap();
    let pod = Command::new("nsenter")
        .arg(format!("--net=/proc/{netns}/ns/net"))
        .arg("--")
        .arg("python3")
        .arg(&script)
        .arg("tcp-to-unix")
        .arg(format!("{SERVICE_IP}:{SERVICE_PORT}"))
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("forward-pod.log")).unwrap())
        .spawn()
        .unwrap();
    cleanup.children.push(pod);
    wait_for("the pod forwarder", Duration::from_secs(15), || {
        let out = run(
            Command::new("nsenter")
                .arg(format!("--net=/proc/{netns}/ns/net"))
                .args(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("https://{SERVICE_IP}:{SERVICE_PORT}/healthz")),
            Duration::from_secs(5),
        )
        .ok()?;
        (out.stdout.as_slice() != b"000").then_some(())
    })
    .unwrap();
}

/// The approver's token in kube-apisim.
pub const ALICE_TOKEN: &str = "alice-token";
/// The webhook's address in the pod's network (approvals only).
pub const WEBHOOK_ADDR: (&str, u16) = ("127.0.0.5", 8443);

/// kube-apisim stores admission configurations as custom resources.
pub const APISIM_ADMISSION_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: mutatingwebhookconfigurations.admissionregistration.k8s.io
spec:
  group: admissionregistration.k8s.io
  scope: Cluster
  names: {plural: mutatingwebhookconfigurations, singular: mutatingwebhookconfiguration, kind: MutatingWebhookConfiguration}
  versions:
    - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
"#;

/// Where the app container finds `kubernetes-mcp-server`, as in an image.
pub const MCP_SERVER_DIR: &str = "/opt/kubernetes-mcp-server";
/// The collector's address inside the pod's network namespace.
pub const COLLECTOR_ADDR: &str = "127.0.0.4:8088";

/// Starts kube-apisim and the sidecar in the simulated pod.
pub fn start_pod(test: &str, native_sidecar: bool) -> SimPod {
    start_pod_with(
        test,
        PodOptions {
            native_sidecar,
            ..PodOptions::default()
        },
    )
}

/// The `/etc/hosts` the kubelet writes for a pod: localhost, then the
/// pod's `hostAliases`.
pub fn etc_hosts(spec: &Value) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(aliases) = spec["hostAliases"].as_array() {
        s += "\n# Entries added by HostAliases.\n";
        for a in aliases {
            let names: Vec<&str> = a["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            s += &format!("{}\t{}\n", a["ip"].as_str().unwrap(), names.join("\t"));
        }
    }
    s
}

/// The webhook binary in the pod's network, registered with kube-apisim
/// for AccessRequest status updates: it stamps who decided from the
/// admission request, as in a cluster.
pub fn start_accessrequest_webhook(netns: u32, work: &Path, cleanup: &mut Cleanup) {
    let (ip, port) = WEBHOOK_ADDR;
    let dir = work.join("webhook");
    std::fs::create_dir_all(&dir).unwrap();
    let webhook = Webhook::start(WebhookOptions {
        listen: Some(SocketAddr::new(ip.parse().unwrap(), port)),
        admin: Some(SocketAddr::new(ip.parse().unwrap(), 8080)),
        dir: Some(dir),
        netns: Some(netns),
        ..Default::default()
    })
    .unwrap();
    let mwc = work.join("mwc.yaml");
    std::fs::write(&mwc, webhook.accessrequest_mutating_config()).unwrap();
    cleanup.children.extend(webhook.into_child());
    let out = run(
        &mut in_net_kubectl(
            netns,
            &work.join("admin.kubeconfig"),
            &["apply", "-f", &mwc.to_string_lossy()],
        ),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kubectl (1.32) from the pod's network namespace with `kubeconfig`: a
/// user of the cluster outside the pod.
pub fn in_net_kubectl(netns: u32, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{netns}/ns/net"))
        .arg("--")
        .arg(kubectl_path("1.32"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(kubeconfig.with_extension("cache"))
        .args(args);
    c
}

/// The installed `kubernetes-mcp-server` (scripts/deps/mcp-servers.sh puts
/// it there), or a clear failure naming the script.
pub fn mcp_server_dir() -> PathBuf {
    let dir = std::env::var_os("MCP_WARDEN_MCP_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
            cache.join("mcp-warden/kubernetes-mcp-server-0.0.67")
        });
    assert!(
        dir.join("kubernetes-mcp-server").exists(),
        "kubernetes-mcp-server is not installed in {}: run scripts/deps/mcp-servers.sh",
        dir.display()
    );
    dir
}

pub fn start_pod_with(test: &str, mut opts: PodOptions) -> SimPod {
    let native_sidecar = opts.native_sidecar;
    let guard = ONE_POD.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! {test} needs root (network and mount namespaces).");
        eprintln!("!!! It did NOT run. CI runs as root; run it there or with sudo.");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
        panic!("{test} needs root");
    }
    crate::harness::require_python_kubernetes().unwrap();
    for bin in ["mcp-warden-webhook", "mcp-warden-sidecar", "kube-apisim"] {
        assert!(
            workspace_bin(bin).exists(),
            "{bin} not built: run `cargo build --workspace --bins` first"
        );
    }
    let config_dir = tempfile::tempdir().unwrap();
    let mut inject_config = format!("nativeSidecar: {native_sidecar}\n");
    if opts.collector {
        inject_config += &format!("collectorUrl: http://{COLLECTOR_ADDR}\n");
    }
    let mut pod = match opts.stored.take() {
        Some(stored) => stored,
        None => injected_pod(&inject_config, config_dir.path()),
    };
    if let Some(policy) = opts.policy {
        let name = pod.spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "mcp-warden-policy")
            .and_then(|v| v["configMap"]["name"].as_str())
            .unwrap()
            .to_string();
        pod.config_maps.insert(
            name,
            BTreeMap::from([("policy.yaml".to_string(), policy.to_string())]),
        );
    }
    let mut cleanup = Cleanup {
        children: Vec::new(),
        created: Vec::new(),
    };
    // Not under /tmp: the app mounts an emptyDir there, which would shadow
    // the volumes' backing directories before they are bound.
    let work = tempfile::Builder::new()
        .prefix("simpod-")
        .tempdir_in("/var/tmp")
        .unwrap();
    for c in pod.spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod.spec["initContainers"].as_array().into_iter().flatten())
    {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            assert!(
                !work.path().starts_with(m["mountPath"].as_str().unwrap()),
                "a mount shadows the work dir"
            );
        }
    }
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    // The pod's network namespace, held by a sleeping process.
    let holder = Command::new("unshare")
        .args(["--net", "--", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let netns = holder.id();
    cleanup.children.push(holder);
    wait_for("the pod network namespace", Duration::from_secs(10), || {
        let own = std::fs::read_link("/proc/self/ns/net").ok()?;
        let theirs = std::fs::read_link(format!("/proc/{netns}/ns/net")).ok()?;
        (own != theirs).then_some(())
    })
    .unwrap();
    let up = run(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{netns}/ns/net"))
            .args(["ip", "link", "set", "lo", "up"]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        up.status.success(),
        "ip link set lo up: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    // As containerd 2.x and CRI-O do for every pod, ports below 1024 are
    // not privileged in the pod's network namespace: the non-root sidecar
    // can answer on 127.0.0.1:443 (Kubernetes gives non-root containers no
    // ambient capabilities, so NET_BIND_SERVICE alone would not do).
    let sysctl = run(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{netns}/ns/net"))
            .args([
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_unprivileged_port_start=0",
            ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        sysctl.status.success(),
        "sysctl: {}",
        String::from_utf8_lossy(&sysctl.stderr)
    );

    // kube-apisim at the "Service IP", inside the pod's network namespace.
    let state = work.path().join("apisim");
    let (seed, apisim_users) = if opts.approvals {
        let crd = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds/accessrequests.yaml"),
        )
        .unwrap();
        let demo = std::fs::read_to_string(fixture("seed-demo.yaml")).unwrap();
        let seed = work.path().join("seed.yaml");
        // AccessRequests live in the pod's namespace.
        let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n");
        std::fs::write(
            &seed,
            format!("{demo}\n---\n{ns}---\n{APISIM_ADMISSION_CRD}---\n{crd}"),
        )
        .unwrap();
        (
            seed,
            vec!["--extra-user".to_string(), format!("alice={ALICE_TOKEN}")],
        )
    } else {
        (fixture("seed-demo.yaml"), Vec::new())
    };
    if let Some(real) = &opts.real {
        // The state files the rest reads, for the real server.
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("ca.crt"), &real.ca_pem).unwrap();
        std::fs::write(state.join("token"), &real.admin_token).unwrap();
        start_forwarder(netns, work.path(), real.addr, &mut cleanup);
    } else {
        let log = std::fs::File::create(work.path().join("apisim.log")).unwrap();
        let apisim = Command::new("nsenter")
            .arg(format!("--net=/proc/{netns}/ns/net"))
            .arg("--")
            .arg(workspace_bin("kube-apisim"))
            .args([
                "--listen",
                &format!("{SERVICE_IP}:{SERVICE_PORT}"),
                "--state-dir",
            ])
            .arg(&state)
            .arg("--seed")
            .arg(&seed)
            .args(apisim_users)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        cleanup.children.push(apisim);
        wait_for("kube-apisim", Duration::from_secs(15), || {
            state.join("addr").exists().then_some(())
        })
        .unwrap();
    }
    // An admin kubeconfig for kube-apisim, used from the pod's network.
    write_kubeconfig(
        &work.path().join("admin.kubeconfig"),
        &format!("https://{SERVICE_IP}:{SERVICE_PORT}"),
        &state.join("ca.crt"),
        std::fs::read_to_string(state.join("token")).unwrap().trim(),
    )
    .unwrap();
    if opts.approvals {
        start_accessrequest_webhook(netns, work.path(), &mut cleanup);
    }
    // The collector the injection config names, in the pod's network.
    let collector_out = opts.collector.then(|| {
        let out = work.path().join("collector");
        let log = std::fs::File::create(work.path().join("collector.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/proc/{netns}/ns/net"))
            .arg("--")
            .arg(workspace_bin("mcp-warden-collector"))
            .args(["--listen", COLLECTOR_ADDR, "--out-dir"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        cleanup.children.push(child);
        wait_for("the collector", Duration::from_secs(15), || {
            out.join("addr").exists().then_some(())
        })
        .unwrap();
        out
    });
    // Every container's /etc/hosts, as the kubelet writes it.
    let hosts = work.path().join("etc-hosts");
    std::fs::write(&hosts, etc_hosts(&pod.spec)).unwrap();
    let hosts_bind = (hosts, PathBuf::from("/etc/hosts"));
    let mut app_binds = vec![hosts_bind.clone()];
    if opts.mcp_server {
        // Staged in the work dir: the app's /root (where the cache lives) is
        // covered before its binds are made.
        let image = work.path().join("mcp-server-image");
        std::fs::create_dir_all(&image).unwrap();
        let src = mcp_server_dir().join("kubernetes-mcp-server");
        let dst = image.join("kubernetes-mcp-server");
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
        ensure_mount_point(Path::new(MCP_SERVER_DIR), &mut cleanup);
        app_binds.push((image, PathBuf::from(MCP_SERVER_DIR)));
    }
    let api = ApiFiles {
        token: match &opts.real {
            Some(real) => real.pod_token.clone(),
            None => std::fs::read_to_string(state.join("token"))
                .unwrap()
                .trim()
                .to_string(),
        },
        ca: std::fs::read_to_string(state.join("ca.crt")).unwrap(),
    };
    assert!(api.token.len() >= 16);

    // Volumes, materialized like the kubelet.
    // Native: the first init container with restartPolicy Always; fallback:
    // the first regular container. Either way the app is the next one.
    let (sidecar, app) = if native_sidecar {
        let init = pod.spec["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["restartPolicy"], "Always");
        (&init[0], &pod.spec["containers"][0])
    } else {
        assert!(pod.spec["initContainers"].is_null());
        (&pod.spec["containers"][0], &pod.spec["containers"][1])
    };
    assert_eq!(sidecar["name"], "mcp-warden");
    assert_eq!(app["name"], "server");
    let sidecar_uid = container_uid(sidecar, &pod);
    let app_uid = container_uid(app, &pod);
    assert_ne!(sidecar_uid, app_uid);
    assert_ne!(app_uid, 0);
    // The policy volume is the ConfigMap the pod's annotation names (absent
    // here, so the sidecar runs its embedded default policy).
    let policy = pod.spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "mcp-warden-policy")
        .unwrap();
    assert_eq!(
        policy["configMap"]["name"].as_str(),
        pod.annotations
            .get("mcp-warden.io/policy")
            .map(String::as_str)
    );
    let mut volume_dirs = BTreeMap::new();
    for v in pod.spec["volumes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let dir = work.path().join("volumes").join(name);
        // A projected token is owned by the only container that mounts it.
        let owner = (name == "mcp-warden-token").then_some(sidecar_uid);
        materialize_volume(v, &dir, &pod, &api, owner);
        volume_dirs.insert(name.to_string(), dir);
    }
    std::fs::set_permissions(
        work.path().join("volumes"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for c in [sidecar, app] {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            ensure_mount_point(Path::new(m["mountPath"].as_str().unwrap()), &mut cleanup);
        }
    }

    // The sidecar container.
    let sidecar_env = container_env(sidecar, &pod);
    assert_eq!(
        sidecar_env["KUBERNETES_SERVICE_HOST"], SERVICE_IP,
        "the sidecar keeps the real service env"
    );
    let script = work.path().join("sidecar.sh");
    std::fs::write(
        &script,
        container_script(
            sidecar,
            &volume_dirs,
            &[],
            std::slice::from_ref(&hosts_bind),
            sidecar_uid,
            &sidecar_env,
            &[workspace_bin("mcp-warden-sidecar")
                .to_string_lossy()
                .into_owned()],
        ),
    )
    .unwrap();
    let sidecar_log = std::fs::File::create(work.path().join("sidecar.log")).unwrap();
    let child = in_container(netns, &script)
        .stdout(sidecar_log.try_clone().unwrap())
        .stderr(sidecar_log)
        .spawn()
        .unwrap();
    cleanup.children.push(child);
    // The startup probe: GET /readyz on the admin port, at the pod IP as the
    // kubelet sends it.
    let probe = sidecar["startupProbe"]["httpGet"].clone();
    let url = format!(
        "http://{POD_IP}:{}{}",
        probe["port"],
        probe["path"].as_str().unwrap()
    );
    let ready = wait_for(
        "the sidecar's startup probe",
        Duration::from_secs(30),
        || {
            let out = run(
                Command::new("nsenter")
                    .arg(format!("--net=/proc/{netns}/ns/net"))
                    .args(["curl", "-sf", "-o", "/dev/null", &url]),
                Duration::from_secs(5),
            )
            .ok()?;
            out.status.success().then_some(())
        },
    );
    if let Err(e) = ready {
        panic!(
            "{e}\nsidecar log:\n{}",
            std::fs::read_to_string(work.path().join("sidecar.log")).unwrap_or_default()
        );
    }

    // The app container: its env, mounts and uid, with the work dir hidden.
    let app = app.clone();
    let mut app_env = container_env(&app, &pod);
    assert_eq!(app_env["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
    assert_eq!(app_env["KUBERNETES_SERVICE_PORT"], "15443");
    app_env.insert("HOME".into(), "/tmp".into());
    let python = String::from_utf8(
        run(
            Command::new("python3").args(["-c", "import sys; print(sys.executable)"]),
            Duration::from_secs(30),
        )
        .unwrap()
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    // pyenv lives under /root (mode 0700): give the app a /root that holds
    // only the interpreter, as an image would.
    let mut prelude = String::new();
    if python.starts_with("/root/") {
        let pyroot = PathBuf::from(&python)
            .ancestors()
            .nth(4)
            .unwrap()
            .to_path_buf(); // /root/.pyenv
        let q = sh_quote(&pyroot.to_string_lossy());
        prelude = format!(
            "mount -t tmpfs -o mode=0755 tmpfs /root\nmkdir -p {q}\nmount --bind {q} {q}\n"
        );
        // The bind source must be resolved before /root is covered.
        prelude = format!("exec 3<{q}\n")
            + &prelude.replace(
                &format!("mount --bind {q} {q}"),
                &format!("mount --no-canonicalize --bind /proc/self/fd/3 {q}\nexec 3<&-"),
            );
    }
    SimPod {
        work,
        _cleanup: cleanup,
        _one: guard,
        netns,
        volume_dirs,
        app,
        app_env,
        app_uid,
        python,
        prelude,
        api,
        kubectl: kubectl_path("1.32").to_string_lossy().into_owned(),
        app_binds,
        collector_out,
    }
}

pub struct SimPod {
    pub work: tempfile::TempDir,
    // Field order is drop order: processes and mount points go before the lock.
    _cleanup: Cleanup,
    _one: std::sync::MutexGuard<'static, ()>,
    pub netns: u32,
    pub volume_dirs: BTreeMap<String, PathBuf>,
    pub app: Value,
    pub app_env: BTreeMap<String, String>,
    pub app_uid: u32,
    pub python: String,
    pub prelude: String,
    pub api: ApiFiles,
    pub kubectl: String,
    /// Bind mounts of the app container besides its volumes (/etc/hosts,
    /// the MCP server's "image" directory).
    pub app_binds: Vec<(PathBuf, PathBuf)>,
    /// The collector's output directory, when the pod has one.
    pub collector_out: Option<PathBuf>,
}

impl SimPod {
    /// Writes the script that runs `argv` as the app container (its mounts,
    /// env and uid, the work dir hidden); returns its path.
    fn app_script(&self, name: &str, argv: &[String]) -> PathBuf {
        let script = self.work.path().join(format!("app-{name}.sh"));
        let body = container_script(
            &self.app,
            &self.volume_dirs,
            &[self.work.path()],
            &self.app_binds,
            self.app_uid,
            &self.app_env,
            argv,
        );
        std::fs::write(
            &script,
            body.replacen("set -eu\n", &format!("set -eu\n{}", self.prelude), 1),
        )
        .unwrap();
        script
    }

    /// Runs `argv` as the app container (stdin: `input`).
    pub fn app_run(&self, name: &str, argv: Vec<String>, input: &[u8]) -> std::process::Output {
        let script = self.app_script(name, &argv);
        let mut cmd = in_container(self.netns, &script);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        // Clients are bounded by timeout(1) or their own timeouts; the pod's
        // cleanup kills everything else.
        child.wait_with_output().unwrap()
    }

    /// Starts `argv` as a long-running process of the app container (stdout
    /// to `NAME.out`, stderr to `NAME.log` in the work dir); the caller
    /// kills it.
    pub fn app_spawn(&self, name: &str, argv: Vec<String>) -> Child {
        let script = self.app_script(name, &argv);
        let out = std::fs::File::create(self.work.path().join(format!("{name}.out"))).unwrap();
        let log = std::fs::File::create(self.work.path().join(format!("{name}.log"))).unwrap();
        in_container(self.netns, &script)
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// GET on kube-apisim as its admin, from the pod's network (bypassing
    /// the sidecar): what the cluster really holds.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let out = run(
            Command::new("nsenter")
                .arg(format!("--net=/proc/{}/ns/net", self.netns))
                .args(["curl", "-sS", "-w", "\n%{http_code}", "--cacert"])
                .arg(self.work.path().join("apisim/ca.crt"))
                .arg("-H")
                .arg(format!(
                    "Authorization: Bearer {}",
                    std::fs::read_to_string(self.work.path().join("apisim/token"))
                        .unwrap_or_default()
                        .trim()
                ))
                .arg(format!("https://{SERVICE_IP}:{SERVICE_PORT}{path}")),
            Duration::from_secs(30),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Every event the pod's collector received.
    pub fn recorded(&self) -> Vec<Value> {
        let out = self
            .collector_out
            .as_ref()
            .expect("the pod has no collector");
        std::fs::read_to_string(out.join("events.ndjson"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn sidecar_log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("sidecar.log")).unwrap_or_default()
    }

    pub fn ok(&self, what: &str, out: &std::process::Output) -> String {
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}\nsidecar log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.work.path().join("sidecar.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl(&self, name: &str, args: &[&str]) -> std::process::Output {
        // Bounded by timeout(1): a kubectl flag such as --request-timeout
        // would count as an override and turn its in-cluster config off.
        let mut argv = vec![
            "timeout".to_string(),
            "90".to_string(),
            self.kubectl.clone(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.app_run(name, argv, b"")
    }
}

/// Starts a pod whose app container holds the real kubernetes-mcp-server,
/// with the agent's tool calls (`calls`, see tests/python/mcp_agent.py)
/// ready for [`agent_argv`].
pub fn mcp_pod(test: &str, calls: &str) -> SimPod {
    mcp_pod_with(test, calls, None)
}

/// [`mcp_pod`] in front of `real` (the real kube-apiserver) when given.
pub fn mcp_pod_with(test: &str, calls: &str, real: Option<RealUpstream>) -> SimPod {
    let pod = start_pod_with(
        test,
        PodOptions {
            native_sidecar: true,
            collector: true,
            mcp_server: true,
            real,
            ..PodOptions::default()
        },
    );
    // The in-cluster names resolve to the sidecar, as the kubelet's
    // /etc/hosts makes them from the injected hostAliases.
    let hosts = std::fs::read_to_string(pod.work.path().join("etc-hosts")).unwrap();
    assert!(
        hosts.contains("127.0.0.1\tkubernetes\tkubernetes.default\tkubernetes.default.svc\tkubernetes.default.svc.cluster.local"),
        "the injected pod does not send the in-cluster names to the sidecar:\n{hosts}"
    );
    std::fs::write(pod.work.path().join("calls.json"), calls).unwrap();
    pod
}

pub fn agent_argv(pod: &SimPod, transport: &[&str]) -> Vec<String> {
    // The agent script goes into the "image" next to the MCP server (the
    // checkout may sit under /tmp, which the app's emptyDir covers), the
    // calls into the app's /tmp.
    let image = pod.work.path().join("mcp-server-image");
    std::fs::copy(
        crate::harness::python_script("mcp_agent.py"),
        image.join("mcp_agent.py"),
    )
    .unwrap();
    let calls = pod.work.path().join("calls.json");
    let calls_copy = pod.volume_dirs["tmp"].join("calls.json");
    std::fs::copy(&calls, &calls_copy).unwrap();
    let mut argv = vec![
        "timeout".to_string(),
        "200".to_string(),
        pod.python.clone(),
        format!("{MCP_SERVER_DIR}/mcp_agent.py"),
    ];
    argv.push(transport[0].to_string());
    argv.push("/tmp/calls.json".to_string());
    argv.extend(transport[1..].iter().map(|s| s.to_string()));
    argv
}
