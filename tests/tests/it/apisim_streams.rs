//! End-to-end tests of kube-apisim's streaming subresources with real
//! clients: kubectl 1.32 (exec/attach over WebSocket `v5.channel.k8s.io`,
//! port-forward over SPDY tunnelled in a WebSocket) and kubectl 1.29 (exec,
//! attach and port-forward over SPDY/3.1), plus `logs` / `logs -f`.
//! Each test asserts which transport the client really used (kubectl's
//! `-v=6` request log shows `GET …/exec … 101` for WebSocket and `POST` for
//! SPDY), so a silent fallback cannot pass for the protocol under test.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};

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
    sim: ApiSim,
    _seed_dir: tempfile::TempDir,
}

impl Sim {
    fn start() -> Sim {
        let seed_dir = tempfile::tempdir().unwrap();
        let seed = seed_dir.path().join("seed.yaml");
        std::fs::write(&seed, SEED).unwrap();
        let sim = ApiSim::start(ApiSimOptions {
            seed: Some(seed),
            ..Default::default()
        })
        .unwrap();
        Sim {
            sim,
            _seed_dir: seed_dir,
        }
    }

    /// A bundled kubectl of `minor` with this sim's kubeconfig and a private cache dir.
    fn kubectl(&self, minor: u32) -> Command {
        self.sim.kubectl(&minor.to_string())
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion (bounded), feeding `stdin`.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
    Output {
        code,
        stdout,
        stderr,
    }
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

/// The upgrade method each kubectl uses, as observed with `-v=6`: WebSocket
/// upgrades are GETs, SPDY upgrades POSTs. exec/attach go WebSocket-first
/// from 1.30, port-forward from 1.31.
fn method(minor: u32, sub: &str) -> &'static str {
    let ws_from = if sub == "portforward" { 31 } else { 30 };
    if minor >= ws_from { "GET" } else { "POST" }
}

/// Asserts kubectl's `-v=6` log shows `.../pods/NAME/SUB` answered with 101
/// to a `method` request.
fn assert_upgraded(stderr: &str, method: &str, sub: &str) {
    // Plain (≤ 1.32) and structured (1.33) klog request lines.
    let hit = stderr.lines().any(|l| {
        (l.contains(&format!("{method} https://127.0.0.1:"))
            || l.contains(&format!("verb=\"{method}\"")))
            && (l.contains(&format!("/{sub}?"))
                || l.contains(&format!("/{sub} "))
                || l.contains(&format!("/{sub}\"")))
            && l.contains("101 Switching Protocols")
    });
    assert!(hit, "expected a {method} upgrade of {sub} in:\n{stderr}");
}

fn exec_echo(minor: u32) {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["-v=6", "exec", "echo", "--", "echo", "hi"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hi\n");
    assert_upgraded(&out.stderr, method(minor, "exec"), "exec");

    // stdin round-trip through `cat` (EOF: v5 close signal / SPDY FIN).
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["-v=6", "exec", "-i", "echo", "--", "cat"]);
    let out = run(cmd, b"hello\nworld\n");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hello\nworld\n");
    assert_upgraded(&out.stderr, method(minor, "exec"), "exec");

    // Non-zero exit: status channel carries NonZeroExitCode with the code.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "echo", "--", "sh", "-c", "exit 3"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "stderr: {}",
        out.stderr
    );

    // stderr is its own stream; unknown commands exit 127.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "echo", "--", "nosuchcmd"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 127, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("nosuchcmd: command not found"),
        "stderr: {}",
        out.stderr
    );

    // Container selection: a multi-container pod with -c, and a bad name.
    let mut cmd = sim.kubectl(minor);
    args(
        &mut cmd,
        &["exec", "talker", "-c", "side", "--", "hostname"],
    );
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "talker\n");
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["exec", "talker", "-c", "nope", "--", "true"]);
    let out = run(cmd, b"");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("container nope is not valid for pod talker"),
        "stderr: {}",
        out.stderr
    );
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
    args(&mut cmd, &["-v=6", "exec", "-i", "echo", "--", "cat"]);
    let out = run(cmd, b"via spdy\n");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "via spdy\n");
    assert_upgraded(&out.stderr, "POST", "exec");
}

fn attach(minor: u32) {
    let sim = Sim::start();
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["-v=6", "attach", "-i", "echo"]);
    let out = run(cmd, b"ping\npong\n");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "ping\npong\n");
    assert_upgraded(&out.stderr, method(minor, "attach"), "attach");
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
    assert_eq!(
        out.stdout,
        "line 1 from echo/main\nline 2 from echo/main\nline 3 from echo/main\n"
    );

    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "talker", "-c", "app", "--tail=2"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "beta\ngamma\n");

    let mut cmd = sim.kubectl(minor);
    args(
        &mut cmd,
        &["logs", "talker", "-c", "app", "--limit-bytes=8"],
    );
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "alpha\nbe");

    // A multi-container pod without -c: kubectl picks the first and says so.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "talker"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "alpha\nbeta\ngamma\n");
    assert!(
        out.stderr.contains("Defaulted container \"app\""),
        "stderr: {}",
        out.stderr
    );

    // `previous` of a container that never restarted: a BadRequest Status.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "echo", "--previous"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Error from server (BadRequest): previous terminated container \"main\" in pod \"echo\" not found"),
        "stderr: {}",
        out.stderr
    );

    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "talker", "-c", "app", "--timestamps"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    for (l, want) in lines.iter().zip(["alpha", "beta", "gamma"]) {
        let (ts, text) = l.split_once(' ').unwrap();
        assert_eq!(text, want);
        assert!(
            ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "timestamp {ts}"
        );
    }

    // Follow: lines keep arriving while kubectl is still running.
    let mut cmd = sim.kubectl(minor);
    args(&mut cmd, &["logs", "-f", "echo"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
        got.push(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("followed log line"),
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl logs -f ended early"
    );
    let _ = child.kill();
    let _ = child.wait();
    let want: Vec<String> = (1..=6)
        .map(|n| format!("line {n} from echo/main"))
        .collect();
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
    args(&mut cmd, &["-v=6", "port-forward", "pod/echo", ":8080"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
            panic!(
                "no port-forward line; stderr: {}",
                err_rx
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default()
            );
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
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl port-forward ended early"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_upgraded(
        &err_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        method(minor, "portforward"),
        "portforward",
    );
}

/// The other bundled versions: 1.27 (SPDY only), 1.30 (exec over WebSocket,
/// port-forward over SPDY), 1.31 (both over WebSocket), 1.33 (structured logs).
#[test]
fn other_kubectl_versions_exec_and_port_forward() {
    for minor in [27, 30, 31, 33] {
        let sim = Sim::start();
        let mut cmd = sim.kubectl(minor);
        args(&mut cmd, &["-v=6", "exec", "-i", "echo", "--", "cat"]);
        let out = run(cmd, b"v1.NN\n");
        assert_eq!(out.code, 0, "1.{minor} stderr: {}", out.stderr);
        assert_eq!(out.stdout, "v1.NN\n", "1.{minor}");
        assert_upgraded(&out.stderr, method(minor, "exec"), "exec");
        drop(sim);
        port_forward(minor);
    }
}

#[test]
fn kubectl_1_32_port_forward_over_websocket_tunnel() {
    port_forward(32);
}

#[test]
fn kubectl_1_29_port_forward_over_spdy() {
    port_forward(29);
}

// ---------------------------------------------------------------------------
// The older and rarer channel protocols, with a raw WebSocket client: base64
// variants, `channel.k8s.io` (v1) errors as text, v5 tty with resize and the
// close signal, and the Status errors of bad requests.

mod raw {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    use super::Sim;

    type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn tls(sim: &Sim) -> Tls {
        let pem = sim.sim.ca_pem().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(sim.sim.addr())
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// Messages of one session: (channel, payload), in order.
    pub struct Session {
        pub protocol: String,
        pub frames: Vec<(u8, Vec<u8>)>,
    }

    impl Session {
        pub fn channel(&self, ch: u8) -> String {
            let bytes: Vec<u8> = self
                .frames
                .iter()
                .filter(|(c, _)| *c == ch)
                .flat_map(|(_, d)| d.clone())
                .collect();
            String::from_utf8(bytes).unwrap()
        }
    }

    /// Opens `path` (under the pod `echo`) with `protocol`, sends `send`,
    /// and reads until the server closes (bounded).
    pub async fn exec(
        sim: &Sim,
        path: &str,
        protocol: &str,
        send: Vec<Message>,
    ) -> Result<Session, WsError> {
        let url = format!(
            "wss://{}/api/v1/namespaces/default/pods/{path}",
            sim.sim.addr()
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", sim.sim.token().trim())
                .parse()
                .unwrap(),
        );
        req.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tls(sim).await).await?;
        let negotiated = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        for m in send {
            ws.send(m).await.unwrap();
        }
        let b64 = negotiated.contains("base64");
        let mut frames = Vec::new();
        let read = async {
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Binary(b) if !b.is_empty() => frames.push((b[0], b[1..].to_vec())),
                    Message::Text(t) if b64 && !t.is_empty() => {
                        let data = base64::engine::general_purpose::STANDARD
                            .decode(&t.as_str()[1..])
                            .unwrap();
                        frames.push((t.as_bytes()[0] - b'0', data));
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("session ended in time");
        Ok(Session {
            protocol: negotiated,
            frames,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn base64_v4_exec() {
        let sim = Sim::start();
        let s = exec(
            &sim,
            "echo/exec?command=echo&command=hi&stdout=true&stderr=true",
            "v4.base64.channel.k8s.io",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(s.protocol, "v4.base64.channel.k8s.io");
        // The empty "connection established" message comes first, on stdout.
        assert_eq!(s.frames.first(), Some(&(1, vec![])));
        assert_eq!(s.channel(1), "hi\n");
        assert_eq!(s.channel(3), r#"{"metadata":{},"status":"Success"}"#);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v1_channel_reports_failures_as_text() {
        let sim = Sim::start();
        let s = exec(
            &sim,
            "echo/exec?command=sh&command=-c&command=exit+2&stderr=true",
            "channel.k8s.io",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(s.protocol, "channel.k8s.io");
        assert_eq!(s.frames.first(), Some(&(2, vec![])));
        assert_eq!(
            s.channel(3),
            "command terminated with non-zero exit code: error executing command [sh -c exit 2], exit code 2"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v5_tty_resize_and_close_signal() {
        let sim = Sim::start();
        let send = vec![
            Message::Binary([&[4u8][..], br#"{"Width":80,"Height":24}"#].concat().into()),
            Message::Binary(b"\x00typed".to_vec().into()),
            Message::Binary(vec![255u8, 0].into()),
        ];
        let s = exec(
            &sim,
            "echo/exec?command=cat&stdin=true&stdout=true&tty=true",
            "v5.channel.k8s.io",
            send,
        )
        .await
        .unwrap();
        assert_eq!(s.protocol, "v5.channel.k8s.io");
        // The pty echoes the input, then `cat` prints it.
        assert_eq!(s.channel(1), "typedtyped");
        assert_eq!(s.channel(3), r#"{"metadata":{},"status":"Success"}"#);
    }

    async fn http_error(sim: &Sim, path: &str, protocol: &str) -> (u16, serde_json::Value) {
        match exec(sim, path, protocol, vec![]).await {
            Err(WsError::Http(resp)) => {
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).unwrap();
                (resp.status().as_u16(), body)
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("upgrade of {path} should have been refused"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_get_status_errors() {
        let sim = Sim::start();
        let (code, body) = http_error(&sim, "echo/exec?stdout=true", "v5.channel.k8s.io").await;
        assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
        assert_eq!(body["message"], "you must specify at least 1 command");
        let (code, body) = http_error(
            &sim,
            "echo/exec?command=true&stdout=true&container=nope",
            "v5.channel.k8s.io",
        )
        .await;
        assert_eq!(code, 400);
        assert_eq!(body["message"], "container nope is not valid for pod echo");
        let (code, body) = http_error(
            &sim,
            "talker/exec?command=true&stdout=true",
            "v5.channel.k8s.io",
        )
        .await;
        assert_eq!(code, 400);
        assert_eq!(
            body["message"],
            "a container name must be specified for pod talker, choose one of: [app side]"
        );
        let (code, body) = http_error(&sim, "echo/exec?command=true", "v5.channel.k8s.io").await;
        assert_eq!(code, 400);
        assert_eq!(
            body["message"],
            "you must specify at least one of stdin, stdout, stderr"
        );
        let (code, _) = http_error(
            &sim,
            "echo/exec?command=true&stdout=true",
            "v9.channel.k8s.io",
        )
        .await;
        assert_eq!(code, 400);
        let (code, body) = http_error(
            &sim,
            "nosuchpod/exec?command=true&stdout=true",
            "v5.channel.k8s.io",
        )
        .await;
        assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
        let (code, body) = http_error(&sim, "echo/portforward", "v4.channel.k8s.io").await;
        assert_eq!(code, 400);
        assert_eq!(body["message"], "query parameter \"ports\" is required");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn portforward_channel_protocol() {
        let sim = Sim::start();
        let send = vec![
            Message::Binary(b"\x00abc".to_vec().into()),
            Message::Binary(b"\x02xyz".to_vec().into()),
        ];
        // The server ends the session only when we do; read what comes back
        // for a moment through a separate path: close after sending.
        let url = format!(
            "wss://{}/api/v1/namespaces/default/pods/echo/portforward?ports=8080,9090",
            sim.sim.addr()
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", sim.sim.token().trim())
                .parse()
                .unwrap(),
        );
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::client_async(req, tls(&sim).await)
            .await
            .unwrap();
        for m in send {
            ws.send(m).await.unwrap();
        }
        let mut frames = Vec::new();
        while frames.len() < 6 {
            let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Binary(b) = m {
                frames.push((b[0], b[1..].to_vec()));
            }
        }
        let _ = ws.close(None).await;
        // Each channel opens with its port, little-endian; data channels echo.
        let port_of = |ch: u8| {
            frames
                .iter()
                .find(|(c, _)| *c == ch)
                .map(|(_, d)| d.clone())
        };
        assert_eq!(port_of(0), Some(8080u16.to_le_bytes().to_vec()));
        assert_eq!(port_of(1), Some(8080u16.to_le_bytes().to_vec()));
        assert_eq!(port_of(2), Some(9090u16.to_le_bytes().to_vec()));
        assert_eq!(port_of(3), Some(9090u16.to_le_bytes().to_vec()));
        assert!(frames.contains(&(0, b"abc".to_vec())), "{frames:?}");
        assert!(frames.contains(&(2, b"xyz".to_vec())), "{frames:?}");
    }
}

// ---------------------------------------------------------------------------
// The Python client: `kubernetes.stream.stream` (WebSocket
// `v4.channel.k8s.io`) for exec, and `portforward` (the channel protocol).

const PY_STREAMS: &str = r#"
import json, sys
from kubernetes import client, config
from kubernetes.stream import stream, portforward

config.load_kube_config()
v1 = client.CoreV1Api()
res = {}
res["echo"] = stream(v1.connect_get_namespaced_pod_exec, "echo", "default",
                     command=["echo", "hi", "there"], stderr=True, stdin=False, stdout=True, tty=False)

r = stream(v1.connect_get_namespaced_pod_exec, "echo", "default", command=["sh", "-c", "exit 3"],
           stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
r.run_forever(timeout=20)
res["exit"] = r.returncode

r = stream(v1.connect_get_namespaced_pod_exec, "echo", "default", command=["cat"],
           stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
r.write_stdin("ping\n")
got = ""
for _ in range(100):
    r.update(timeout=0.2)
    if r.peek_stdout():
        got += r.read_stdout()
    if got.endswith("\n"):
        break
r.close()
res["cat"] = got

pf = portforward(v1.connect_get_namespaced_pod_portforward, "echo", "default", ports="8080")
s = pf.socket(8080)
s.settimeout(20)
s.sendall(b"over python")
buf = b""
while len(buf) < len(b"over python"):
    chunk = s.recv(1024)
    if not chunk:
        break
    buf += chunk
res["pf"] = buf.decode()
res["pf_error"] = pf.error(8080)
s.close()
print(json.dumps(res))
"#;

#[test]
fn python_client_exec_and_portforward() {
    mcp_warden_tests::harness::require_python_kubernetes().unwrap();
    let sim = Sim::start();
    let script = sim.sim.work_dir().join("streams.py");
    std::fs::write(&script, PY_STREAMS).unwrap();
    let cmd = mcp_warden_tests::harness::python_with(&script, &sim.sim.kubeconfig_path());
    let out = run(cmd, b"");
    assert_eq!(
        out.code,
        0,
        "stderr: {}\nserver log: {}",
        out.stderr,
        sim.sim.log()
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["echo"], "hi there\n");
    assert_eq!(v["exit"], 3);
    assert_eq!(v["cat"], "ping\n");
    assert_eq!(v["pf"], "over python");
    assert_eq!(v["pf_error"], serde_json::Value::Null);
}

// ---------------------------------------------------------------------------
// `exec -it`: kubectl only asks for a tty when its stdin is a terminal, so it
// runs under `script` (util-linux) which gives it a pty. Covers the resize
// channel (WebSocket) / resize stream (SPDY) and the pty's `\r\n` output.

fn exec_tty(minor: u32) {
    let sim = Sim::start();
    let kubectl = mcp_warden_tests::harness::kubectl_path(&minor.to_string());
    let base = format!(
        "{} --kubeconfig {} --cache-dir {} -v=6",
        kubectl.display(),
        sim.sim.kubeconfig_path().display(),
        sim.sim.work_dir().join("tty-cache").display()
    );
    let script = |inner: &str| {
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &format!("{base} {inner}"), "/dev/null"]);
        cmd
    };
    let out = run(script("exec -it echo -- echo tty"), b"");
    assert_eq!(
        out.code, 0,
        "stdout: {:?} stderr: {}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains("tty\r\n"), "stdout: {:?}", out.stdout);
    // The pty merges kubectl's stderr (its -v=6 log) into stdout.
    assert_upgraded(&out.stdout, method(minor, "exec"), "exec");
    let out = run(script("exec -it echo -- sh -c 'exit 4'"), b"");
    assert_eq!(out.code, 4, "stdout: {:?}", out.stdout);
}

#[test]
fn kubectl_1_32_exec_tty() {
    exec_tty(32);
}

#[test]
fn kubectl_1_29_exec_tty() {
    exec_tty(29);
}
