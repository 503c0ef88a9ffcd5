//! The deployed stack for end-to-end tests: the `mcp-warden-sidecar` binary in
//! front of a [`kube-apisim`](crate::harness::ApiSim), the
//! `mcp-warden-collector` binary receiving its recordings, and the
//! `mcp-warden-webhook` binary serving with a fresh CA — each a real child
//! process, as in a pod, with bounded start-up waits and kill-on-drop.
//!
//! ```no_run
//! # use mcp_warden_tests::{harness::*, stack::*};
//! # fn main() -> anyhow::Result<()> {
//! let sim = ApiSim::start(ApiSimOptions::demo())?;
//! let collector = Collector::start()?;
//! let sidecar = Sidecar::start(&sim, SidecarOptions::default().collector(&collector))?;
//! let out = run_ok(sidecar.kubectl("1.32").args(["get", "pods"]))?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::harness::{
    ApiSim, START_TIMEOUT, kubectl_with, python_with, wait_for, workspace_bin, write_kubeconfig,
};

/// A free loopback port for a child process to listen on.
///
/// Ports come from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), handed out once per process by a
/// counter and checked by binding. A port from `bind(:0)` would be an
/// ephemeral one: between our release and the child's bind, any outgoing
/// connection on the machine may take it as its source port, which made a
/// sidecar fail to start in CI ("Address already in use") while other
/// tests were connecting.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    if span < 1000 {
        // An unusual kernel setting leaves no room below the range; the
        // old way is the best there is.
        let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
        return Ok(l.local_addr()?.port());
    }
    // Test binaries of one `cargo test` run one after another, but a
    // developer may run two at once: start each process elsewhere.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(u32::from(low) + start.wrapping_add(n) % span) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {low}..{high}")
}

/// `[low, high)`: the ports from 10000 up to the kernel's ephemeral range.
fn below_ephemeral_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (10000, ephemeral_low.max(10000))
}

/// A plain HTTP/1.1 GET on a loopback address: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// A running `mcp-warden-collector` (plain HTTP on loopback), killed on drop.
pub struct Collector {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    extra: Vec<String>,
}

impl Collector {
    /// Starts a collector on a free port writing into a temp dir.
    pub fn start() -> Result<Self> {
        Self::start_with(Vec::new())
    }

    /// Starts a collector with extra flags (`--fail-first N`, `--status-code C`, `--token T`).
    pub fn start_with(extra: Vec<String>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("collector-").tempdir()?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut c = Collector {
            child: None,
            dir,
            addr,
            extra,
        };
        c.spawn()?;
        Ok(c)
    }

    /// The collector's output directory (`events.ndjson`, `sessions/`, `bodies/`).
    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn spawn(&mut self) -> Result<()> {
        let out = self.out_dir();
        std::fs::create_dir_all(&out)?;
        let _ = std::fs::remove_file(out.join("addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("collector.log"))?;
        let child = Command::new(workspace_bin("mcp-warden-collector"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--out-dir")
            .arg(&out)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning mcp-warden-collector (run `cargo build --workspace --bins`)")?;
        self.child = Some(child);
        let addr_file = out.join("addr");
        wait_for("the collector to listen", START_TIMEOUT, || {
            addr_file.exists().then_some(())
        })?;
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the collector (an outage); [`Collector::start_again`] brings it
    /// back on the same address with the same output directory.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a stopped collector on the same address.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Every event received so far (one JSON value per event, duplicates kept).
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.out_dir().join("events.ndjson")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The asciicast files received, by auditID.
    pub fn sessions(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.out_dir().join("sessions")) {
            for e in rd.flatten() {
                let name = e
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".cast")
                    .to_string();
                out.push((name, std::fs::read_to_string(e.path()).unwrap_or_default()));
            }
        }
        out
    }

    /// The collector's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to run the sidecar.
#[derive(Debug, Clone, Default)]
pub struct SidecarOptions {
    /// `--policy-file` (default: a path that does not exist, i.e. the embedded default policy).
    pub policy_file: Option<PathBuf>,
    /// `--collector-url`.
    pub collector_url: Option<String>,
    /// `--upstream-token-file` (default: kube-apisim's token file).
    pub upstream_token_file: Option<PathBuf>,
    /// More flags, e.g. `--on-recording-failure continue`, `--spool-max-bytes N`.
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// `--pod-namespace` (default `default`).
    pub pod_namespace: Option<String>,
}

/// Where a sidecar forwards to (see [`Sidecar::start_upstream`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `--upstream`.
    pub url: String,
    /// `--upstream-ca-file`.
    pub ca_file: PathBuf,
    /// `--upstream-token-file`.
    pub token_file: PathBuf,
}

impl SidecarOptions {
    /// Sets `--policy-file`.
    pub fn policy(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy_file = Some(path.into());
        self
    }

    /// Sends recordings to `collector`.
    pub fn collector(mut self, collector: &Collector) -> Self {
        self.collector_url = Some(collector.url());
        self
    }

    /// Adds flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running `mcp-warden-sidecar` child in front of kube-apisim; killed on drop.
pub struct Sidecar {
    child: Option<Child>,
    dir: tempfile::TempDir,
    listen: SocketAddr,
    admin: SocketAddr,
    cmd_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Sidecar {
    /// Starts the sidecar against `sim` and waits (bounded) for `/readyz`.
    pub fn start(sim: &ApiSim, opts: SidecarOptions) -> Result<Self> {
        let upstream = Upstream {
            url: sim.url(),
            ca_file: sim.ca_path(),
            token_file: opts
                .upstream_token_file
                .clone()
                .unwrap_or_else(|| sim.token_path()),
        };
        Self::start_upstream(&upstream, opts)
    }

    /// Starts the sidecar in front of any API server (a real one, see
    /// [`crate::realkube`]) and waits (bounded) for `/readyz`.
    pub fn start_upstream(upstream: &Upstream, opts: SidecarOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sidecar-").tempdir()?;
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let policy = opts
            .policy_file
            .clone()
            .unwrap_or_else(|| dir.path().join("no-policy/policy.yaml"));
        let token_file = opts
            .upstream_token_file
            .clone()
            .unwrap_or_else(|| upstream.token_file.clone());
        let mut args: Vec<String> = vec![
            "--listen".into(),
            listen.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--upstream".into(),
            upstream.url.clone(),
            "--upstream-ca-file".into(),
            upstream.ca_file.display().to_string(),
            "--upstream-token-file".into(),
            token_file.display().to_string(),
            "--local-dir".into(),
            dir.path().join("local").display().to_string(),
            "--policy-file".into(),
            policy.display().to_string(),
            "--spool-dir".into(),
            dir.path().join("spool").display().to_string(),
            "--pod-name".into(),
            "mcp-server-0".into(),
            "--pod-namespace".into(),
            opts.pod_namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        ];
        if let Some(url) = &opts.collector_url {
            args.push("--collector-url".into());
            args.push(url.clone());
        }
        args.extend(opts.extra_args.iter().cloned());
        let mut s = Sidecar {
            child: None,
            dir,
            listen,
            admin,
            cmd_args: args,
            env: opts.env.clone(),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sidecar.log"))?;
        let mut cmd = Command::new(workspace_bin("mcp-warden-sidecar"));
        cmd.args(&self.cmd_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env(
                "MCP_WARDEN_LOG",
                std::env::var("SIDECAR_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .context("spawning mcp-warden-sidecar (run `cargo build --workspace --bins`)")?;
        let admin = self.admin;
        let ready = wait_for("the sidecar's /readyz", START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            match http_get(admin, "/readyz") {
                Ok((200, _)) => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(status)) => bail!("the sidecar exited at start ({status}): {}", self.log()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{e}: {}", self.log());
            }
        }
        self.child = Some(child);
        write_kubeconfig(
            &self.kubeconfig_path(),
            &self.url(),
            &self.local_dir().join("ca.crt"),
            &self.token()?,
        )?;
        Ok(())
    }

    /// `https://127.0.0.1:PORT` (the app's view).
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    /// The admin address (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `(status, body)` of a GET on the admin port.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.admin, path)
    }

    /// Where the sidecar writes `ca.crt`, `token` and `namespace` for the app.
    pub fn local_dir(&self) -> PathBuf {
        self.dir.path().join("local")
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The local token the app presents.
    pub fn token(&self) -> Result<String> {
        std::fs::read_to_string(self.local_dir().join("token")).context("reading the local token")
    }

    /// A kubeconfig built only from the local dir (the app's view).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("app-kubeconfig")
    }

    /// A bundled kubectl (`"1.32"`) using the app's kubeconfig.
    pub fn kubectl(&self, minor: &str) -> Command {
        kubectl_with(
            minor,
            &self.kubeconfig_path(),
            &self.dir.path().join("kcache"),
        )
    }

    /// A Python script (see [`crate::harness::python_script`]) using the app's kubeconfig.
    pub fn python(&self, script: &Path) -> Command {
        python_with(script, &self.kubeconfig_path())
    }

    /// The sidecar's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sidecar.log")).unwrap_or_default()
    }

    /// SIGKILL (a crash); [`Sidecar::restart`] starts it again with the same settings.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit; returns whether it exited.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(&c, "TERM");
        let done = crate::harness::wait_child(&mut c, timeout).is_some();
        if !done {
            let _ = c.kill();
            let _ = c.wait();
        }
        done
    }

    /// Starts the sidecar again (same ports, dirs and flags); the local
    /// token and CA are new, and the kubeconfig is rewritten.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to run the webhook (see [`Webhook::start`]).
#[derive(Debug, Clone, Default)]
pub struct WebhookOptions {
    /// `--listen` (default: a free port on 127.0.0.1); its IP is the
    /// serving certificate's subject.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen` (default: a free port on 127.0.0.1).
    pub admin: Option<SocketAddr>,
    /// The injection settings (`--config`), as `config.yaml`'s text.
    pub config: Option<String>,
    /// Where the certificate, config and log go (default: a temp dir of
    /// its own, removed on drop).
    pub dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Environment variables the webhook must not inherit.
    pub env_remove: Vec<String>,
    /// Run in this process's network namespace (`nsenter --net`, a
    /// simulated pod's) instead of the test's.
    pub netns: Option<u32>,
}

/// A running `mcp-warden-webhook serve` with a serving certificate from a
/// fresh CA (whose PEM a webhook configuration's `caBundle` carries);
/// killed on drop.
pub struct Webhook {
    child: Option<Child>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    listen: SocketAddr,
    admin: SocketAddr,
    ca_pem: String,
}

/// A fresh CA and a serving certificate for `ip` signed by it, written as
/// `tls.crt` and `tls.key` into `dir`; returns the CA's PEM.
pub fn write_serving_cert(dir: &Path, ip: IpAddr) -> Result<String> {
    use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa};
    let ca = LocalCa::generate(&CaProfile::new("mcp-warden test webhook CA"))?;
    let leaf = ca.issue(&LeafProfile::new([ip.to_string()]))?;
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem)?;
    std::fs::write(dir.join("tls.key"), &leaf.key_pem)?;
    Ok(ca.cert_pem)
}

impl Webhook {
    /// Writes a fresh CA and serving certificate, starts the webhook and
    /// waits (bounded) for its `/readyz`.
    pub fn start(opts: WebhookOptions) -> Result<Self> {
        let (temp, dir) = match &opts.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("webhook-").tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let listen = match opts.listen {
            Some(a) => a,
            None => format!("127.0.0.1:{}", free_port()?).parse()?,
        };
        let admin = match opts.admin {
            Some(a) => a,
            None => format!("127.0.0.1:{}", free_port()?).parse()?,
        };
        let ca_pem = write_serving_cert(&dir, listen.ip())?;
        let mut cmd = match opts.netns {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/proc/{pid}/ns/net"))
                    .arg("--")
                    .arg(workspace_bin("mcp-warden-webhook"));
                c
            }
            None => Command::new(workspace_bin("mcp-warden-webhook")),
        };
        cmd.args(["serve", "--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .arg("--tls-cert-file")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("tls.key"));
        if let Some(config) = &opts.config {
            std::fs::write(dir.join("config.yaml"), config)?;
            cmd.arg("--config").arg(dir.join("config.yaml"));
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        for k in &opts.env_remove {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("webhook.log"))?)
            .spawn()
            .context("spawning mcp-warden-webhook (run `cargo build --workspace --bins`)")?;
        // The webhook reads the server's version before it is ready (with
        // `nativeSidecar: auto`): longer than the other binaries' start.
        let ready = wait_for("the webhook's /readyz", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            let up = match opts.netns {
                Some(pid) => Command::new("nsenter")
                    .arg(format!("--net=/proc/{pid}/ns/net"))
                    .args(["curl", "-sf", "-m", "5", "-o", "/dev/null"])
                    .arg(format!("http://{admin}/readyz"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                None => matches!(http_get(admin, "/readyz"), Ok((200, _))),
            };
            if up {
                return Some(Ok(()));
            }
            std::thread::sleep(Duration::from_millis(100));
            None
        });
        let log = || std::fs::read_to_string(dir.join("webhook.log")).unwrap_or_default();
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(status)) => bail!("the webhook exited at start ({status}): {}", log()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{e}: {}", log());
            }
        }
        Ok(Webhook {
            child: Some(child),
            dir,
            _temp: temp,
            listen,
            admin,
            ca_pem,
        })
    }

    /// The address it serves admission reviews on.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin address (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `https://ADDR{path}`, a webhook configuration's `clientConfig.url`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.listen)
    }

    /// The PEM of the CA that signed its serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA as a webhook configuration's `caBundle` (base64 of the PEM).
    pub fn ca_bundle(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// The directory holding its certificate, config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The webhook's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("webhook.log")).unwrap_or_default()
    }

    /// A MutatingWebhookConfiguration `mcp-warden` that sends AccessRequest
    /// status updates to this webhook (stamping who decided), as YAML.
    pub fn accessrequest_mutating_config(&self) -> String {
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: mcp-warden}}
webhooks:
  - name: accessrequests.mcp-warden.io
    clientConfig: {{url: "{}", caBundle: "{}"}}
    rules: [{{operations: [UPDATE], apiGroups: [mcp-warden.io], apiVersions: [v1alpha1], resources: [accessrequests/status]}}]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
"#,
            self.url(mcp_warden_shared::contract::ACCESS_REQUEST_MUTATE_PATH),
            self.ca_bundle()
        )
    }

    /// The process, for the caller to end and reap (its files stay in
    /// [`WebhookOptions::dir`]).
    pub fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }

    /// Kills the process (the drop does too).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.kill();
    }
}
