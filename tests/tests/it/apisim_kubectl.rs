//! kubectl (bundled 1.32 and 1.29) against kube-apisim: reads in every output
//! format, watch, describe, create/apply (client- and server-side), the three
//! patch types, label, delete, tokens, whoami and error statuses.
//!
//! Needs `cargo build --workspace --bins` first (the harness spawns
//! kube-apisim).

#![allow(clippy::unwrap_used)]

use mcp_warden_tests::harness::{self, ApiSim, ApiSimOptions};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn sim() -> ApiSim {
    ApiSim::start(ApiSimOptions::demo()).expect("start kube-apisim")
}

fn kubectl(sim: &ApiSim, minor: &str, args: &[&str]) -> Output {
    harness::run(sim.kubectl(minor).args(args), harness::COMMAND_TIMEOUT).expect("run kubectl")
}

/// Runs kubectl, asserts success, returns stdout.
fn ok(sim: &ApiSim, minor: &str, args: &[&str]) -> String {
    let out = kubectl(sim, minor, args);
    assert!(
        out.status.success(),
        "kubectl 1.{minor} {args:?} failed: {}\nstdout: {}\nkube-apisim log tail: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        tail(&sim.log())
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kubectl, asserts failure, returns stderr.
fn fails(sim: &ApiSim, minor: &str, args: &[&str]) -> String {
    let out = kubectl(sim, minor, args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn write(sim: &ApiSim, name: &str, text: &str) -> String {
    let p = sim.work_dir().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn reads(minor: &str) {
    let sim = sim();
    let out = ok(&sim, minor, &["get", "pods"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let web0 = out
        .lines()
        .find(|l| l.starts_with("web-0 "))
        .expect("web-0 row");
    assert_eq!(
        web0.split_whitespace().take(4).collect::<Vec<_>>(),
        ["web-0", "1/1", "Running", "0"]
    );
    assert_eq!(out.lines().count(), 4, "header + 3 pods in default: {out}");

    let wide = ok(&sim, minor, &["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("NOMINATED NODE"),
        "{wide}"
    );
    assert!(
        wide.contains("127.0.") && wide.contains("apisim-node"),
        "{wide}"
    );

    let json: Value =
        serde_json::from_str(&ok(&sim, minor, &["get", "pods", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "List");
    let names: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-0", "web-0", "web-1"]);
    assert_eq!(json["items"][0]["kind"], "Pod");

    let yaml = ok(&sim, minor, &["get", "pod", "web-0", "-o", "yaml"]);
    assert!(
        yaml.contains("name: web-0")
            && yaml.contains("phase: Running")
            && yaml.contains("kind: Pod"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("managedFields"),
        "managed fields are hidden by default: {yaml}"
    );

    let phase = ok(
        &sim,
        minor,
        &["get", "pod", "web-0", "-o", "jsonpath={.status.phase}"],
    );
    assert_eq!(phase, "Running");

    let sel = ok(&sim, minor, &["get", "pods", "-l", "app=web", "-o", "name"]);
    assert_eq!(sel.lines().collect::<Vec<_>>(), ["pod/web-0", "pod/web-1"]);
    let set = ok(
        &sim,
        minor,
        &[
            "get",
            "pods",
            "-l",
            "tier in (backend),app!=web",
            "-o",
            "name",
        ],
    );
    assert_eq!(set.trim(), "pod/db-0");
    let fsel = ok(
        &sim,
        minor,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "metadata.namespace=prod",
            "-o",
            "name",
        ],
    );
    assert_eq!(fsel.trim(), "pod/api-0");
    let err = fails(
        &sim,
        minor,
        &["get", "pods", "--field-selector", "spec.bogus=1"],
    );
    assert!(
        err.contains("BadRequest") && err.contains("field label not supported"),
        "{err}"
    );

    // Pagination: one item per page still lists everything.
    let paged = ok(
        &sim,
        minor,
        &["get", "pods", "--chunk-size=1", "-o", "name"],
    );
    assert_eq!(paged.lines().count(), 3, "{paged}");

    let all = ok(
        &sim,
        minor,
        &[
            "get",
            "secrets,configmaps,serviceaccounts,services,deployments,events",
            "-n",
            "default",
        ],
    );
    for want in [
        "secret/db-credentials",
        "configmap/app-config",
        "serviceaccount/mcp-server",
        "service/web",
        "deployment.apps/web",
        "pod/web-0",
    ] {
        assert!(all.contains(want), "missing {want} in {all}");
    }
    let deploy = ok(&sim, minor, &["get", "deploy", "web", "--no-headers"]);
    assert_eq!(
        deploy.split_whitespace().take(4).collect::<Vec<_>>(),
        ["web", "2/2", "2", "2"]
    );

    let widgets = ok(&sim, minor, &["get", "widgets"]);
    let hdr: Vec<&str> = widgets.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(hdr, ["NAME", "SIZE", "COLOR", "AGE"]);
    assert!(
        widgets.lines().nth(1).unwrap().starts_with("gizmo"),
        "{widgets}"
    );
    assert_eq!(
        ok(
            &sim,
            minor,
            &["get", "wg", "gizmo", "-o", "jsonpath={.spec.color}"]
        ),
        "blue"
    );

    let nf = fails(&sim, minor, &["get", "pod", "nope"]);
    assert!(
        nf.contains("Error from server (NotFound): pods \"nope\" not found"),
        "{nf}"
    );
    let nsf = fails(&sim, minor, &["get", "pods", "-n", "nope", "nope"]);
    assert!(nsf.contains("NotFound"), "{nsf}");

    let describe = ok(&sim, minor, &["describe", "pod", "web-0"]);
    assert!(
        describe.contains("Name:") && describe.contains("web-0"),
        "{describe}"
    );
    assert!(
        describe
            .lines()
            .any(|l| l.starts_with("Status:") && l.contains("Running")),
        "{describe}"
    );
    assert!(describe.contains("nginx:1.27"), "{describe}");
    let describe_cm = ok(&sim, minor, &["describe", "configmap", "app-config"]);
    assert!(
        describe_cm.contains("log_level") && describe_cm.contains("debug"),
        "{describe_cm}"
    );
}

fn writes(minor: &str) {
    let sim = sim();
    let cm = write(
        &sim,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made\n  labels: {a: \"1\"}\ndata:\n  k: v\n",
    );
    let out = ok(&sim, minor, &["create", "-f", &cm]);
    assert_eq!(out.trim(), "configmap/made created");
    let dup = fails(&sim, minor, &["create", "-f", &cm]);
    assert!(
        dup.contains("AlreadyExists") && dup.contains("configmaps \"made\" already exists"),
        "{dup}"
    );
    let bad = write(
        &sim,
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n",
    );
    let inv = fails(&sim, minor, &["create", "-f", &bad]);
    assert!(
        inv.contains("is invalid") && inv.contains("metadata.name"),
        "{inv}"
    );
    let dry = ok(
        &sim,
        minor,
        &[
            "create",
            "configmap",
            "dry",
            "--from-literal=a=b",
            "--dry-run=server",
        ],
    );
    assert!(
        dry.contains("configmap/dry created (server dry run)"),
        "{dry}"
    );
    fails(&sim, minor, &["get", "configmap", "dry"]);

    // Client-side apply: create, then change.
    let ap = write(
        &sim,
        "ap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v1\n  gone: x\n",
    );
    assert_eq!(
        ok(&sim, minor, &["apply", "-f", &ap]).trim(),
        "configmap/applied created"
    );
    let ap = write(
        &sim,
        "ap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v2\n",
    );
    assert_eq!(
        ok(&sim, minor, &["apply", "-f", &ap]).trim(),
        "configmap/applied configured"
    );
    let data: Value = serde_json::from_str(&ok(
        &sim,
        minor,
        &["get", "cm", "applied", "-o", "jsonpath={.data}"],
    ))
    .unwrap();
    assert_eq!(
        data,
        serde_json::json!({"k": "v2"}),
        "apply removes keys dropped from the manifest"
    );
    assert_eq!(
        ok(&sim, minor, &["apply", "-f", &ap]).trim(),
        "configmap/applied unchanged"
    );

    // Client-side apply of a Deployment (strategic merge on containers).
    let dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: api:1\n        env:\n        - {name: A, value: \"1\"}\n";
    let dp = write(&sim, "dep.yaml", dep);
    ok(&sim, minor, &["apply", "-f", &dp]);
    let dp = write(&sim, "dep.yaml", &dep.replace("api:1", "api:2"));
    assert_eq!(
        ok(&sim, minor, &["apply", "-f", &dp]).trim(),
        "deployment.apps/api configured"
    );
    assert_eq!(
        ok(
            &sim,
            minor,
            &[
                "get",
                "deploy",
                "api",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}"
            ]
        ),
        "api:2"
    );

    // Server-side apply: create, then update.
    let ss = write(
        &sim,
        "ss.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: one\n",
    );
    assert_eq!(
        ok(&sim, minor, &["apply", "--server-side", "-f", &ss]).trim(),
        "configmap/ssa serverside-applied"
    );
    let ss = write(
        &sim,
        "ss.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  labels: {via: ssa}\ndata:\n  k: two\n",
    );
    assert_eq!(
        ok(&sim, minor, &["apply", "--server-side", "-f", &ss]).trim(),
        "configmap/ssa serverside-applied"
    );
    let got: Value = serde_json::from_str(&ok(
        &sim,
        minor,
        &["get", "cm", "ssa", "-o", "json", "--show-managed-fields"],
    ))
    .unwrap();
    assert_eq!(got["data"]["k"], "two");
    assert_eq!(got["metadata"]["labels"]["via"], "ssa");
    // Dropping a field from the applied configuration removes it.
    let ss = write(
        &sim,
        "ss.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: two\n",
    );
    ok(&sim, minor, &["apply", "--server-side", "-f", &ss]);
    let pruned: Value =
        serde_json::from_str(&ok(&sim, minor, &["get", "cm", "ssa", "-o", "json"])).unwrap();
    assert!(
        pruned["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("via").is_none()),
        "{pruned}"
    );
    assert_eq!(pruned["data"]["k"], "two");
    let managers: Vec<&str> = got["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // Patches.
    ok(
        &sim,
        minor,
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
        ],
    );
    let web: Value =
        serde_json::from_str(&ok(&sim, minor, &["get", "deploy", "web", "-o", "json"])).unwrap();
    let c = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.28");
    assert_eq!(
        c["env"][0]["name"], "API_TOKEN",
        "strategic merge keeps the other container fields"
    );
    assert_eq!(web["metadata"]["generation"], 2);
    ok(
        &sim,
        minor,
        &[
            "patch",
            "cm",
            "made",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"k":null,"n":"2"}}"#,
        ],
    );
    assert_eq!(
        ok(
            &sim,
            minor,
            &["get", "cm", "made", "-o", "jsonpath={.data}"]
        ),
        r#"{"n":"2"}"#
    );
    ok(
        &sim,
        minor,
        &[
            "patch",
            "cm",
            "made",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/data/j","value":"3"}]"#,
        ],
    );
    assert_eq!(
        ok(
            &sim,
            minor,
            &["get", "cm", "made", "-o", "jsonpath={.data.j}"]
        ),
        "3"
    );
    let badpatch = fails(
        &sim,
        minor,
        &[
            "patch",
            "cm",
            "made",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/data/missing"}]"#,
        ],
    );
    assert!(
        badpatch.contains("invalid") && badpatch.contains("/data/missing"),
        "{badpatch}"
    );

    // Labels.
    assert_eq!(
        ok(&sim, minor, &["label", "pod", "web-0", "env=test"]).trim(),
        "pod/web-0 labeled"
    );
    assert_eq!(
        ok(
            &sim,
            minor,
            &["get", "pods", "-l", "env=test", "-o", "name"]
        )
        .trim(),
        "pod/web-0"
    );
    fails(&sim, minor, &["label", "pod", "web-0", "env=prod"]);
    ok(
        &sim,
        minor,
        &["label", "pod", "web-0", "env=prod", "--overwrite"],
    );
    ok(&sim, minor, &["label", "pod", "web-0", "env-"]);
    assert_eq!(
        ok(&sim, minor, &["get", "pods", "-l", "env", "-o", "name"]).trim(),
        ""
    );

    // Deletes.
    assert_eq!(
        ok(&sim, minor, &["delete", "cm", "made"]).trim(),
        "configmap \"made\" deleted"
    );
    fails(&sim, minor, &["get", "cm", "made"]);
    ok(&sim, minor, &["delete", "pod", "web-1"]);
    let out = ok(&sim, minor, &["delete", "pods", "--all", "-n", "default"]);
    assert!(
        out.contains("pod \"web-0\" deleted") && out.contains("pod \"db-0\" deleted"),
        "{out}"
    );
    let empty = kubectl(&sim, minor, &["get", "pods", "-n", "default"]);
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("No resources found in default namespace.")
    );
    assert_eq!(
        ok(&sim, minor, &["get", "pods", "-n", "prod", "-o", "name"]).trim(),
        "pod/api-0",
        "other namespaces untouched"
    );
    ok(&sim, minor, &["delete", "namespace", "team-a"]);
    let forbidden = fails(&sim, minor, &["delete", "namespace", "default"]);
    assert!(forbidden.contains("Forbidden"), "{forbidden}");
}

fn tokens_and_whoami(minor: &str) {
    let sim = sim();
    let token = ok(
        &sim,
        minor,
        &[
            "create",
            "token",
            "mcp-server",
            "--audience",
            "warden",
            "--duration",
            "20m",
        ],
    );
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "JWT-shaped: {token}");
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:default:mcp-server");
    assert_eq!(claims["aud"], serde_json::json!(["warden"]));
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["name"],
        "mcp-server"
    );
    let missing = fails(&sim, minor, &["create", "token", "nobody"]);
    assert!(
        missing.contains("serviceaccounts \"nobody\" not found"),
        "{missing}"
    );

    let who = ok(&sim, minor, &["auth", "whoami", "-o", "json"]);
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "kube-apisim-admin");
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&Value::from("system:masters"))
    );

    // The issued token authenticates as the service account.
    let kc = sim.work_dir().join("sa-kubeconfig");
    harness::write_kubeconfig(&kc, &sim.url(), &sim.ca_path(), token.trim()).unwrap();
    let cache = sim.work_dir().join("sa-cache");
    let out = harness::run_ok(harness::kubectl_with(minor, &kc, &cache).args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]))
    .unwrap();
    assert_eq!(out, "system:serviceaccount:default:mcp-server");

    // A wrong token is rejected with 401.
    let bad = sim.work_dir().join("bad-kubeconfig");
    harness::write_kubeconfig(&bad, &sim.url(), &sim.ca_path(), "wrong").unwrap();
    let out = harness::run(
        harness::kubectl_with(minor, &bad, &cache).args(["get", "pods"]),
        harness::COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
}

fn watches(minor: &str) {
    let sim = sim();
    let mut child = sim
        .kubectl(minor)
        .args(["get", "configmaps", "-w", "--request-timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("no watch line for {what}"))
    };
    assert!(next("header").starts_with("NAME"));
    assert!(next("initial row").starts_with("app-config"));
    assert!(next("initial row").starts_with("kube-root-ca.crt"));
    ok(
        &sim,
        minor,
        &["create", "configmap", "watched", "--from-literal=a=b"],
    );
    let line = next("created object");
    assert!(line.starts_with("watched "), "{line}");
    ok(&sim, minor, &["delete", "configmap", "watched"]);
    let line = next("deleted object");
    assert!(line.starts_with("watched "), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_1_32_reads() {
    reads("32");
}

#[test]
fn kubectl_1_29_reads() {
    reads("29");
}

#[test]
fn kubectl_1_32_writes() {
    writes("32");
}

#[test]
fn kubectl_1_29_writes() {
    writes("29");
}

#[test]
fn kubectl_1_32_tokens_and_whoami() {
    tokens_and_whoami("32");
}

#[test]
fn kubectl_1_29_tokens_and_whoami() {
    tokens_and_whoami("29");
}

#[test]
fn kubectl_1_32_watch() {
    watches("32");
}

#[test]
fn kubectl_1_29_watch() {
    watches("29");
}

#[test]
fn dispatcher_picks_the_server_minor() {
    let sim = ApiSim::start(ApiSimOptions {
        version: Some("v1.29.4".into()),
        ..ApiSimOptions::demo()
    })
    .unwrap();
    let cache = sim.work_dir().join("dispatch-cache");
    let mut cmd = std::process::Command::new("/usr/bin/kubectl");
    cmd.arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .arg("--cache-dir")
        .arg(&cache)
        .args(["version", "-o", "json"]);
    let out: Value = serde_json::from_str(&harness::run_ok(&mut cmd).unwrap()).unwrap();
    assert_eq!(out["serverVersion"]["gitVersion"], "v1.29.4");
    assert_eq!(out["clientVersion"]["minor"], "29");
    let _ = std::io::stdout().flush();
}

/// Streaming subresources (served by kube-apisim's streams module): exec with
/// and without stdin and a failing command, logs and logs -f, port-forward.
fn streams(minor: &str) {
    let sim = sim();
    assert_eq!(
        ok(&sim, minor, &["exec", "web-0", "--", "echo", "hi"]),
        "hi\n"
    );
    let out = kubectl(&sim, minor, &["exec", "web-0", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code travels back: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = sim
        .kubectl(minor)
        .args(["exec", "-i", "web-0", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echoed back\n").unwrap();
    }
    let status = harness::wait_child(&mut child, Duration::from_secs(30))
        .expect("exec -i finishes after stdin closes");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success());
    assert_eq!(stdout, "echoed back\n");

    let logs = ok(&sim, minor, &["logs", "web-0"]);
    assert!(!logs.is_empty());
    let mut child = sim
        .kubectl(minor)
        .args(["logs", "-f", "web-0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let initial = logs.lines().count();
    for i in 0..=initial {
        rx.recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("logs -f line {i}"));
    }
    let _ = child.kill();
    let _ = child.wait();

    let mut child = sim
        .kubectl(minor)
        .args(["port-forward", "pod/web-0", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port-forward said: {line}"));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut conn, &mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_1_32_streams() {
    streams("32");
}

#[test]
fn kubectl_1_29_streams() {
    streams("29");
}
