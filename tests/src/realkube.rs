//! A real Kubernetes control plane for end-to-end tests: Debian's etcd, and
//! kube-apiserver + kube-controller-manager 1.20.2 built from Debian's source
//! package by `scripts/deps/kube-control-plane.sh` (cached outside the
//! checkout), each a child process on loopback ports.
//!
//! kube-apiserver runs with RBAC, a static token file (an admin, the
//! controller manager, and the human users [`ALICE`] and [`BOB`] for
//! approvals), the ServiceAccount, MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook admission plugins, bound service-account
//! tokens (issuer and signing key, so TokenRequest works, and
//! `BoundServiceAccountTokenVolume`), and a `RequestResponse` audit log in a
//! file ([`RealKube::audit_events`]). kube-controller-manager runs the
//! serviceaccount, serviceaccount-token, root-ca-cert-publisher, deployment
//! and replicaset controllers. Readiness is `/readyz`, then the controller
//! manager's first work (the `default` ServiceAccount).
//!
//! [`RealKube::shared`] starts one control plane per test binary; since a
//! `static` is never dropped, a small guardian process ends it when the test
//! process exits. [`RealKube::start`] gives an owned one, stopped on drop.
//!
//! ```no_run
//! # use mcp_warden_tests::{harness::run_ok, realkube::RealKube};
//! # fn main() -> anyhow::Result<()> {
//! let kube = RealKube::shared()?;
//! let out = run_ok(kube.kubectl("1.32", "admin").args(["get", "ns"]))?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa};
use rcgen::KeyPair;

use crate::harness::{kubectl_with, python_with, run_ok, wait_for, write_kubeconfig};
use crate::stack::free_port;

/// The Kubernetes version the deps script builds.
pub const VERSION: &str = "1.20.2";
/// The script that builds and caches the binaries.
pub const DEPS_SCRIPT: &str = "scripts/deps/kube-control-plane.sh";
/// The admin user (group `system:masters`).
pub const ADMIN: &str = "admin";
/// A human user (group `approvers`).
pub const ALICE: &str = "alice";
/// Another human user (group `approvers`).
pub const BOB: &str = "bob";
/// How long the control plane may take to become ready (2 shared cores).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The service-account token issuer.
pub const ISSUER: &str = "https://kubernetes.default.svc";

/// The directory holding `kube-apiserver` and `kube-controller-manager`:
/// `MCP_WARDEN_KUBE_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden/kube-1.20.2`
/// (where the deps script caches them).
pub fn kube_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MCP_WARDEN_KUBE_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    cache.join("mcp-warden").join(format!("kube-{VERSION}"))
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("MCP_WARDEN_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Fails with a message naming the deps script when a binary is missing.
pub fn require_binaries() -> Result<()> {
    require_binaries_in(&kube_bin_dir(), &etcd_bin())
}

/// [`require_binaries`] for given locations.
pub fn require_binaries_in(dir: &Path, etcd: &Path) -> Result<()> {
    let mut missing = Vec::new();
    for b in ["kube-apiserver", "kube-controller-manager"] {
        if !dir.join(b).exists() {
            missing.push(dir.join(b).display().to_string());
        }
    }
    if !etcd.exists() {
        missing.push(format!("{} (Debian's etcd-server)", etcd.display()));
    }
    if !missing.is_empty() {
        bail!(
            "the real control plane is not installed: missing {}. Run `bash {DEPS_SCRIPT}` \
             (scripts/test.sh does; the first build takes several minutes, then it is cached), \
             or set MCP_WARDEN_KUBE_DIR",
            missing.join(", ")
        );
    }
    Ok(())
}

struct Proc {
    name: &'static str,
    child: Child,
}

/// A running control plane (see the module docs).
pub struct RealKube {
    dir: tempfile::TempDir,
    procs: Mutex<Vec<Proc>>,
    guardian: Mutex<Option<Child>>,
    port: u16,
    tokens: Vec<(String, String)>,
    ca_pem: String,
}

impl std::fmt::Debug for RealKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealKube")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceLock<std::result::Result<RealKube, String>> = OnceLock::new();

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// CA, serving certificate and service-account signing key, written to `dir`.
fn write_pki(dir: &Path) -> Result<String> {
    let ca = LocalCa::generate(&CaProfile::new("mcp-warden-realkube-ca"))?;
    let leaf = ca.issue(
        &LeafProfile::new([
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            // The simulated pod's "Service IP" (`simpod`), where a forwarder
            // puts this server inside the pod's network namespace.
            "127.0.0.2",
        ])
        .with_common_name("kube-apiserver"),
    )?;
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem)?;
    std::fs::write(dir.join("apiserver.crt"), &leaf.cert_pem)?;
    std::fs::write(dir.join("apiserver.key"), &leaf.key_pem)?;
    let sa = KeyPair::generate()?;
    std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
    Ok(ca.cert_pem)
}

const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: [/readyz, /livez, /healthz]
  - level: RequestResponse
";

impl RealKube {
    /// The shared control plane of this test binary, started on first use.
    pub fn shared() -> Result<&'static RealKube> {
        SHARED
            .get_or_init(|| {
                let k = RealKube::start().map_err(|e| format!("{e:#}"))?;
                k.guard().map_err(|e| format!("{e:#}"))?;
                Ok(k)
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Starts etcd, kube-apiserver and kube-controller-manager and waits
    /// (bounded) until they are ready.
    pub fn start() -> Result<RealKube> {
        require_binaries()?;
        let bins = kube_bin_dir();
        let dir = tempfile::Builder::new().prefix("realkube-").tempdir()?;
        let d = dir.path().to_path_buf();
        let ca_pem = write_pki(&d)?;
        let tokens: Vec<(String, String)> = [ADMIN, ALICE, BOB, "system:kube-controller-manager"]
            .iter()
            .map(|u| (u.to_string(), random_token()))
            .collect();
        let mut csv = String::new();
        for (i, (user, token)) in tokens.iter().enumerate() {
            let groups = match user.as_str() {
                ADMIN | "system:kube-controller-manager" => "system:masters",
                _ => "approvers",
            };
            csv.push_str(&format!("{token},{user},uid-{i},\"{groups}\"\n"));
        }
        std::fs::write(d.join("tokens.csv"), csv)?;
        std::fs::write(d.join("audit-policy.yaml"), AUDIT_POLICY)?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let port = free_port()?;
        let kube = RealKube {
            dir,
            procs: Mutex::new(Vec::new()),
            guardian: Mutex::new(None),
            port,
            tokens,
            ca_pem,
        };
        let url = kube.url();
        for (user, _) in kube.tokens.clone() {
            let file = user.replace(':', "-");
            write_kubeconfig(
                &d.join(format!("{file}.kubeconfig")),
                &url,
                &d.join("ca.crt"),
                &kube.token(&user)?,
            )?;
        }

        let client = format!("http://127.0.0.1:{etcd_client}");
        let peer = format!("http://127.0.0.1:{etcd_peer}");
        kube.spawn(
            "etcd",
            Command::new(etcd_bin())
                .arg("--name=realkube")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=realkube={peer}"))
                .arg("--log-level=warn")
                .arg("--unsafe-no-fsync"),
        )?;
        let p = |f: &str| d.join(f).display().to_string();
        kube.spawn(
            "kube-apiserver",
            Command::new(bins.join("kube-apiserver"))
                .arg(format!("--etcd-servers={client}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg("--insecure-port=0")
                .arg(format!("--cert-dir={}", p("certs")))
                .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
                .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
                .arg(format!("--client-ca-file={}", p("ca.crt")))
                .arg(format!("--token-auth-file={}", p("tokens.csv")))
                .arg("--authorization-mode=RBAC")
                .arg(
                    "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,\
                     MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                )
                .arg("--feature-gates=BoundServiceAccountTokenVolume=true")
                .arg(format!("--service-account-issuer={ISSUER}"))
                .arg(format!("--service-account-key-file={}", p("sa.pub")))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    p("sa.key")
                ))
                .arg(format!("--api-audiences={ISSUER}"))
                // Allocation only: no traffic goes to service addresses here.
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                // The `kubernetes` Endpoints would hold a loopback address,
                // which Endpoints validation refuses.
                .arg("--endpoint-reconciler-type=none")
                .arg("--allow-privileged=true")
                .arg("--profiling=false")
                .arg(format!("--audit-policy-file={}", p("audit-policy.yaml")))
                .arg(format!("--audit-log-path={}", p("audit.log")))
                .arg("--audit-log-format=json")
                .arg("--audit-log-mode=blocking")
                .arg("--v=1"),
        )?;
        kube.wait_ready()?;
        kube.spawn(
            "kube-controller-manager",
            Command::new(bins.join("kube-controller-manager"))
                .arg(format!(
                    "--kubeconfig={}",
                    p("system-kube-controller-manager.kubeconfig")
                ))
                .arg(
                    "--controllers=serviceaccount,serviceaccount-token,root-ca-cert-publisher,\
                     deployment,replicaset",
                )
                .arg(format!(
                    "--service-account-private-key-file={}",
                    p("sa.key")
                ))
                .arg(format!("--root-ca-file={}", p("ca.crt")))
                .arg("--use-service-account-credentials=false")
                .arg("--leader-elect=false")
                .arg("--port=0")
                .arg("--secure-port=0")
                .arg("--feature-gates=BoundServiceAccountTokenVolume=true")
                .arg("--v=1"),
        )?;
        kube.wait_controllers()?;
        Ok(kube)
    }

    fn spawn(&self, name: &'static str, cmd: &mut Command) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {name} ({cmd:?})"))?;
        self.procs
            .lock()
            .map_err(|_| anyhow!("process list poisoned"))?
            .push(Proc { name, child });
        Ok(())
    }

    /// Fails (with its log) when one of the processes has exited.
    fn check_alive(&self) -> Result<()> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| anyhow!("process list poisoned"))?;
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                let log = self.log(p.name);
                let tail: String = log
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "{} exited ({status}); last lines of its log:\n{tail}",
                    p.name
                );
            }
        }
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let mut last = String::new();
        let r = wait_for("kube-apiserver's /readyz", READY_TIMEOUT, || {
            if let Err(e) = self.check_alive() {
                return Some(Err(e));
            }
            match self.get(ADMIN, "/readyz") {
                Ok((200, _)) => Some(Ok(())),
                Ok((code, body)) => {
                    last = format!("{code}: {body}");
                    std::thread::sleep(Duration::from_millis(250));
                    None
                }
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(250));
                    None
                }
            }
        });
        match r {
            Ok(r) => r,
            Err(e) => Err(anyhow!(
                "{e}; last answer: {last}; log:\n{}",
                self.log("kube-apiserver")
            )),
        }
    }

    fn wait_controllers(&self) -> Result<()> {
        let r = wait_for(
            "kube-controller-manager to create the default ServiceAccount and kube-root-ca.crt",
            READY_TIMEOUT,
            || {
                if let Err(e) = self.check_alive() {
                    return Some(Err(e));
                }
                let sa = self.get(ADMIN, "/api/v1/namespaces/default/serviceaccounts/default");
                let cm = self.get(
                    ADMIN,
                    "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
                );
                if matches!((sa, cm), (Ok((200, _)), Ok((200, _)))) {
                    return Some(Ok(()));
                }
                std::thread::sleep(Duration::from_millis(250));
                None
            },
        );
        match r {
            Ok(r) => r,
            Err(e) => Err(anyhow!(
                "{e}; log:\n{}",
                self.log("kube-controller-manager")
            )),
        }
    }

    /// Starts the guardian that ends the processes (and removes the state
    /// dir) once this test process has exited.
    fn guard(&self) -> Result<()> {
        let pids: Vec<String> = self
            .procs
            .lock()
            .map_err(|_| anyhow!("process list poisoned"))?
            .iter()
            .map(|p| p.child.id().to_string())
            .collect();
        // Bounded: at most a day, in 1 s steps.
        let script = r#"parent=$1; dir=$2; keep=$3; shift 3
i=0
while kill -0 "$parent" 2>/dev/null && [ $i -lt 86400 ]; do sleep 1; i=$((i+1)); done
kill -TERM "$@" 2>/dev/null
sleep 3
kill -KILL "$@" 2>/dev/null
[ -n "$keep" ] || rm -rf "$dir""#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("realkube-guardian")
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            // REALKUBE_KEEP=1 keeps the logs and the audit log for a look.
            .arg(std::env::var("REALKUBE_KEEP").unwrap_or_default())
            .args(&pids)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the realkube guardian")?;
        *self
            .guardian
            .lock()
            .map_err(|_| anyhow!("guardian poisoned"))? = Some(child);
        Ok(())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The API server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The CA PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A scratch directory that lives as long as the control plane.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The bearer token of a token-file user ([`ADMIN`], [`ALICE`], [`BOB`]).
    pub fn token(&self, user: &str) -> Result<String> {
        self.tokens
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| anyhow!("no token-file user {user:?}"))
    }

    /// The kubeconfig of a token-file user.
    pub fn kubeconfig_path(&self, user: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "-")))
    }

    /// A bundled kubectl (`"1.32"`) as a token-file user.
    pub fn kubectl(&self, minor: &str, user: &str) -> Command {
        let cache = self
            .dir
            .path()
            .join(format!("kcache-{user}-{}", minor.trim_start_matches("1.")));
        kubectl_with(minor, &self.kubeconfig_path(user), &cache)
    }

    /// `/usr/bin/kubectl` (the version dispatcher) as a token-file user.
    pub fn kubectl_dispatcher(&self, user: &str) -> Command {
        let cache = self.dir.path().join(format!("kcache-{user}-dispatch"));
        let mut c = Command::new("/usr/bin/kubectl");
        c.arg("--kubeconfig")
            .arg(self.kubeconfig_path(user))
            .arg("--cache-dir")
            .arg(&cache)
            .env_remove("KUBECONFIG")
            .env("HOME", &cache)
            .stdin(Stdio::null());
        c
    }

    /// A Python script as a token-file user.
    pub fn python(&self, script: &Path, user: &str) -> Command {
        python_with(script, &self.kubeconfig_path(user))
    }

    /// `kubectl apply -f -` of `yaml` as [`ADMIN`].
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let file = tempfile::Builder::new()
            .prefix("apply-")
            .suffix(".yaml")
            .tempfile_in(self.dir.path())?;
        std::fs::write(file.path(), yaml)?;
        run_ok(
            self.kubectl("1.32", ADMIN)
                .args(["apply", "-f"])
                .arg(file.path()),
        )
    }

    /// A TokenRequest token of `namespace/service_account` (audience: the
    /// API server), valid for `seconds`.
    pub fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        seconds: u32,
    ) -> Result<String> {
        let out = run_ok(self.kubectl("1.32", ADMIN).args([
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            &format!("--duration={seconds}s"),
        ]))?;
        Ok(out.trim().to_string())
    }

    /// `(status, body)` of a GET as a token-file user (HTTP/1.1, bounded).
    pub fn get(&self, user: &str, path: &str) -> Result<(u16, String)> {
        https_get(self.addr(), &self.ca_pem, &self.token(user)?, path)
    }

    /// A process's log (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The audit log file.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// Every event of the server's audit log so far.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops every process (also done on drop).
    pub fn stop(&self) {
        if let Ok(mut procs) = self.procs.lock() {
            for p in procs.iter_mut().rev() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            procs.clear();
        }
        if let Ok(mut g) = self.guardian.lock()
            && let Some(mut g) = g.take()
        {
            let _ = g.kill();
            let _ = g.wait();
        }
    }
}

impl Drop for RealKube {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A bounded HTTPS GET with a bearer token, trusting `ca_pem`.
pub fn https_get(addr: SocketAddr, ca_pem: &str, token: &str, path: &str) -> Result<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    // A peer that closes without close_notify still gave us the whole body.
    if let Err(e) = tls.read_to_end(&mut buf)
        && buf.is_empty()
    {
        return Err(e.into());
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        s = after.trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_script_to_run() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = require_binaries_in(d.path(), &d.path().join("etcd"))
            .expect_err("nothing is installed there")
            .to_string();
        assert!(err.contains("scripts/deps/kube-control-plane.sh"), "{err}");
        assert!(
            err.contains("kube-apiserver") && err.contains("kube-controller-manager"),
            "{err}"
        );
        assert!(err.contains("etcd-server"), "{err}");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("zz\r\n"), "");
    }
}
