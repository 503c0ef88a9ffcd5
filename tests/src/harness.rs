//! The end-to-end test harness: starts `kube-apisim` (and finds the other
//! workspace binaries), writes kubeconfigs, and builds commands for the real
//! clients (bundled kubectl versions, the Python `kubernetes` client) with
//! bounded run times and clear failure messages.

use anyhow::{Context, Result, anyhow, bail};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long start-up waits are allowed to take.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound for one client command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's `target/{debug,release}` directory holding the binaries:
/// `MCP_WARDEN_BIN_DIR` if set, else found by walking up from the running
/// test executable (`target/debug/deps/foo-HASH` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MCP_WARDEN_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    loop {
        if matches!(
            dir.file_name().and_then(|n| n.to_str()),
            Some("debug" | "release")
        ) {
            return dir;
        }
        if !dir.pop() {
            // Not under a target dir: fall back to the executable's dir.
            return exe.parent().map(Path::to_path_buf).unwrap_or_default();
        }
    }
}

/// Path of a workspace binary (run `cargo build --workspace --bins` first).
pub fn workspace_bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Path of the workspace's `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Path of a script under `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The bundled kubectl of a minor version (`"32"` or `"1.32"`): found in
/// `MCP_WARDEN_KUBECTL_DIR`, `/usr/bin`, or beside the real `kubectl`
/// dispatcher that `/usr/bin/kubectl` links to.
pub fn kubectl_path(minor: &str) -> PathBuf {
    let minor = minor.trim_start_matches("1.");
    let file = format!("kubectl.1.{minor}");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("MCP_WARDEN_KUBECTL_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("/usr/bin"));
    for cand in ["/usr/bin/kubectl", "/usr/local/bin/kubectl"] {
        if let Ok(real) = std::fs::canonicalize(cand)
            && let Some(p) = real.parent()
        {
            dirs.push(p.to_path_buf());
        }
    }
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(file))
}

/// Writes a kubeconfig for `server_url` with a CA file and a bearer token.
pub fn write_kubeconfig(path: &Path, server_url: &str, ca_path: &Path, token: &str) -> Result<()> {
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "apisim", "cluster": {"server": server_url, "certificate-authority": ca_path.to_string_lossy()}}],
        "users": [{"name": "apisim", "user": {"token": token}}],
        "contexts": [{"name": "apisim", "context": {"cluster": "apisim", "user": "apisim", "namespace": "default"}}],
        "current-context": "apisim",
    });
    // JSON is YAML: every client reads it.
    std::fs::write(path, serde_json::to_vec_pretty(&cfg)?)
        .with_context(|| format!("writing kubeconfig {}", path.display()))
}

/// A bundled kubectl with the given kubeconfig and a private cache dir.
pub fn kubectl_with(minor: &str, kubeconfig: &Path, cache_dir: &Path) -> Command {
    let path = kubectl_path(minor);
    let mut c = Command::new(path);
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache_dir)
        .env_remove("KUBECONFIG")
        .env("HOME", cache_dir)
        .stdin(Stdio::null());
    c
}

/// `python3 SCRIPT` with `KUBECONFIG` set.
pub fn python_with(script: &Path, kubeconfig: &Path) -> Command {
    let mut c = Command::new("python3");
    c.arg(script)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null());
    c
}

/// Fails with a clear message when the Python `kubernetes` package is missing.
pub fn require_python_kubernetes() -> Result<()> {
    let out = run(
        Command::new("python3").args(["-c", "import kubernetes"]),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        bail!(
            "the Python `kubernetes` package is not installed (run `pip install kubernetes`, as scripts/test.sh does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs a command to completion, killing it after `timeout` (an error that
/// shows what it printed so far).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let status = wait_child(&mut child, timeout);
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(anyhow!(
            "{desc} did not finish within {timeout:?}; stdout: {}; stderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// Waits for a child up to `timeout`; kills it and returns None on timeout.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = run(cmd, COMMAND_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}); stdout: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` until it returns Some, for at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Options for [`ApiSim::start`].
#[derive(Debug, Clone, Default)]
pub struct ApiSimOptions {
    /// Seed file (see [`fixture`]).
    pub seed: Option<PathBuf>,
    /// `/version` gitVersion, e.g. `v1.29.4`.
    pub version: Option<String>,
    /// `NAME=TOKEN[:group,group]` extra users.
    pub extra_users: Vec<String>,
    /// BOOKMARK interval in milliseconds.
    pub bookmark_interval_ms: Option<u64>,
}

impl ApiSimOptions {
    /// The demo seed (`tests/fixtures/seed-demo.yaml`).
    pub fn demo() -> Self {
        ApiSimOptions {
            seed: Some(fixture("seed-demo.yaml")),
            ..Default::default()
        }
    }
}

/// A running kube-apisim child process, killed on drop.
pub struct ApiSim {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    token: String,
}

impl ApiSim {
    /// Spawns `kube-apisim` on 127.0.0.1:0 with a temp state dir and waits
    /// (bounded) until it has written its address.
    pub fn start(opts: ApiSimOptions) -> Result<Self> {
        let bin = workspace_bin("kube-apisim");
        if !bin.exists() {
            bail!(
                "{} not found: run `cargo build --workspace --bins` first (or set MCP_WARDEN_BIN_DIR)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("apisim-").tempdir()?;
        let state = dir.path().join("state");
        let log = std::fs::File::create(dir.path().join("apisim.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--state-dir")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("APISIM_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(s) = &opts.seed {
            cmd.arg("--seed").arg(s);
        }
        if let Some(v) = &opts.version {
            cmd.arg("--version-string").arg(v);
        }
        for u in &opts.extra_users {
            cmd.arg("--extra-user").arg(u);
        }
        if let Some(ms) = opts.bookmark_interval_ms {
            cmd.arg("--bookmark-interval-ms").arg(ms.to_string());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let addr_file = state.join("addr");
        let started = wait_for("kube-apisim to write its address", START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                .map(Ok)
        });
        let addr = match started {
            Ok(Ok(a)) => a,
            Ok(Err(status)) => {
                let log =
                    std::fs::read_to_string(dir.path().join("apisim.log")).unwrap_or_default();
                bail!("kube-apisim exited at start ({status}): {log}");
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let token =
            std::fs::read_to_string(state.join("token")).context("reading kube-apisim token")?;
        let sim = ApiSim {
            child,
            dir,
            addr,
            token,
        };
        sim.kubeconfig(&sim.kubeconfig_path())?;
        Ok(sim)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state dir (ca.crt, token, addr).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The CA certificate file clients must trust.
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir().join("ca.crt")
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.ca_path())?)
    }

    /// The admin bearer token.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Path of the token file.
    pub fn token_path(&self) -> PathBuf {
        self.state_dir().join("token")
    }

    /// A scratch directory that lives as long as this server.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The kubeconfig the harness wrote at start.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Writes a kubeconfig for this server (admin token) to `path`.
    pub fn kubeconfig(&self, path: &Path) -> Result<()> {
        write_kubeconfig(path, &self.url(), &self.ca_path(), &self.token)
    }

    /// What kube-apisim has logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apisim.log")).unwrap_or_default()
    }

    /// `(method, path)` of every request kube-apisim has read so far, from
    /// its log (one `request` line each, at the default `info` level): what
    /// reached it, whatever it answered.
    pub fn requests(&self) -> Vec<(String, String)> {
        let field = |line: &str, name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        without_ansi(&self.log())
            .lines()
            .filter(|l| l.contains(" request "))
            .filter_map(|l| Some((field(l, "method")?, field(l, "path")?)))
            .collect()
    }

    /// A bundled kubectl (`minor` like "32") against this server.
    pub fn kubectl(&self, minor: &str) -> Command {
        let cache = self.dir.path().join(format!("kube-cache-{minor}"));
        kubectl_with(minor, &self.kubeconfig_path(), &cache)
    }

    /// `python3 tests/python/NAME` with KUBECONFIG pointing here.
    pub fn python(&self, script: &str) -> Command {
        python_with(&python_script(script), &self.kubeconfig_path())
    }
}

/// `text` without ANSI SGR sequences (`ESC [ … m`), as a terminal shows it.
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for ApiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
