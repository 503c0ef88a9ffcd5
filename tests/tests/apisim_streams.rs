//! End-to-end tests of kube-apisim's streaming subresources with real
//! clients: kubectl 1.32 (exec/attach over WebSocket `v5.channel.k8s.io`,
//! port-forward over SPDY tunnelled in a WebSocket) and kubectl 1.29 (exec,
//! attach and port-forward over SPDY/3.1), plus `logs` / `logs -f`.
//!
//! The harness (`tests/src/harness.rs`) was not there when these were written,
//! so this file starts kube-apisim in-process with a small private starter.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcp_warden_tests::apisim::server::{Config, Server};

/// Upper bound for any single kubectl run.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

const SEED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: echo
  namespace: default
spec:
  containers:
  - name: main
    image: busybox
    stdin: true
status:
  phase: Running
---
apiVersion: v1
kind: Pod
metadata:
  name: talker
  namespace: default
  annotations:
    apisim.mcp-warden.io/log: |-
      alpha
      beta
      gamma
spec:
  containers:
  - name: app
    image: busybox
  - name: side
    image: busybox
status:
  phase: Running
"#;

struct Sim {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sim {
    fn start() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.yaml");
        std::fs::write(&seed, SEED).unwrap();
        let state = dir.path().join("state");
        let mut config = Config::new(&state);
        config.seed = Some(seed);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let server = Server::new(listener, config).unwrap();
                ready_tx.send(server.local_addr()).unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let token = std::fs::read_to_string(state.join("token")).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: https://{addr}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: u\n    namespace: default\ncurrent-context: sim\n",
                state.join("ca.crt").display(),
                token.trim()
            ),
        )
        .unwrap();
        Sim { dir, kubeconfig, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// A bundled kubectl of `minor` with this sim's kubeconfig and a private cache dir.
    fn kubectl(&self, minor: u32) -> Command {
        let mut cmd = Command::new(kubectl_path(minor));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd.arg("--cache-dir").arg(self.dir.path().join(format!("cache-{minor}")));
        cmd.env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn kubectl_path(minor: u32) -> PathBuf {
    let name = format!("kubectl.1.{minor}");
    let direct = Path::new("/usr/bin").join(&name);
    if direct.exists() {
        return direct;
    }
    // /usr/bin/kubectl is a symlink into the SDK that bundles the versions.
    let real = std::fs::canonicalize("/usr/bin/kubectl").unwrap();
    let p = real.parent().unwrap().join(&name);
    assert!(p.exists(), "{} not found", p.display());
    p
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion (bounded), feeding `stdin`.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
        // Dropping closes stdin: EOF for `cat`.
    });
    let out_rx = reader(child.stdout.take().unwrap());
    let err_rx = reader(child.stderr.take().unwrap());
    let code = wait_bounded(&mut child, KUBECTL_TIMEOUT);
    writer.join().unwrap();
    let stdout = out_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let stderr = err_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Output { code, stdout, stderr }
}

fn reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx
}

fn wait_bounded(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kubectl did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn args(cmd: &mut Command, a: &[&str]) {
    cmd.args(a);
}

fn exec_echo(minor: u32) {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "echo", "--", "echo", "hi"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hi\n");

    // stdin round-trip through `cat` (EOF: v5 close signal / SPDY FIN).
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "-i", "echo", "--", "cat"]);
    let out = run(cmd, b"hello\nworld\n");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hello\nworld\n");

    // Non-zero exit: status channel carries NonZeroExitCode with the code.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "echo", "--", "sh", "-c", "exit 3"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("command terminated with exit code 3"), "stderr: {}", out.stderr);

    // stderr is its own stream; unknown commands exit 127.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "echo", "--", "nosuchcmd"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 127, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("nosuchcmd: command not found"), "stderr: {}", out.stderr);

    // Container selection: a multi-container pod with -c, and a bad name.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "talker", "-c", "side", "--", "hostname"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "talker\n");
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "talker", "-c", "nope", "--", "true"]);
    let out = run(cmd, b"");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("container nope is not valid for pod talker"), "stderr: {}", out.stderr);
}

#[test]
fn kubectl_1_32_exec_over_websocket() {
    exec_echo(32);
}

#[test]
fn kubectl_1_29_exec_over_spdy() {
    exec_echo(29);
}

#[test]
fn kubectl_1_32_exec_spdy_fallback_when_websockets_disabled() {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(32);
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    args(&mut cmd, &["exec", "-i", "echo", "--", "cat"]);
    let out = run(cmd, b"via spdy\n");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "via spdy\n");
}

fn attach(minor: u32) {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["attach", "-i", "echo"]);
    let out = run(cmd, b"ping\npong\n");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "ping\npong\n");
}

#[test]
fn kubectl_1_32_attach() {
    attach(32);
}

#[test]
fn kubectl_1_29_attach() {
    attach(29);
}

fn logs(minor: u32) {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "echo"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "line 1 from echo/main\nline 2 from echo/main\nline 3 from echo/main\n");

    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "talker", "-c", "app", "--tail=2"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "beta\ngamma\n");

    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "talker", "-c", "app", "--timestamps"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    for (l, want) in lines.iter().zip(["alpha", "beta", "gamma"]) {
        let (ts, text) = l.split_once(' ').unwrap();
        assert_eq!(text, want);
        assert!(ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "timestamp {ts}");
    }

    // Follow: lines keep arriving while kubectl is still running.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "-f", "echo"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(rx.recv_timeout(Duration::from_secs(20)).expect("followed log line"));
    }
    assert!(child.try_wait().unwrap().is_none(), "kubectl logs -f ended early");
    let _ = child.kill();
    let _ = child.wait();
    let want: Vec<String> = (1..=6).map(|n| format!("line {n} from echo/main")).collect();
    assert_eq!(got, want);
}

#[test]
fn kubectl_1_32_logs_and_follow() {
    logs(32);
}

#[test]
fn kubectl_1_29_logs_and_follow() {
    logs(29);
}

fn port_forward(minor: u32) {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["port-forward", "pod/echo", ":8080"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_rx = reader(child.stderr.take().unwrap());
    // "Forwarding from 127.0.0.1:NNNNN -> 8080"
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no port-forward line; stderr: {}", err_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default());
        }
    };
    let port: u16 = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_once(' '))
        .map(|(p, rest)| {
            assert_eq!(rest, "-> 8080");
            p.parse().unwrap()
        })
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    // Two connections in turn, each a few round trips.
    for conn in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        for i in 0..3 {
            let msg = format!("conn {conn} message {i}\n");
            s.write_all(msg.as_bytes()).unwrap();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(String::from_utf8(buf).unwrap(), msg);
        }
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        s.write_all(&big).unwrap();
        let mut back = vec![0u8; big.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == big, "large payload echoed intact");
    }
    assert!(child.try_wait().unwrap().is_none(), "kubectl port-forward ended early");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_1_32_port_forward_over_websocket_tunnel() {
    port_forward(32);
}

#[test]
fn kubectl_1_29_port_forward_over_spdy() {
    port_forward(29);
}
