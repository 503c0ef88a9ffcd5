//! Masking end to end: secrets planted directly in kube-apisim never leave the
//! real sidecar binary unmasked, whatever the response shape and client
//! (kubectl, the Python `kubernetes` client, kube-rs, curl for raw Accept
//! headers). Needs `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use mcp_warden_shared::mask::{DEFAULT_HOLD_BYTES, MARKER, MARKER_BASE64};
use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, python_script, require_python_kubernetes, run, run_ok, wait_for,
    workspace_bin,
};
use mcp_warden_tests::stack::{Sidecar, SidecarOptions, free_port, http_get};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Allows everything (writes too) and masks like the embedded default.
const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
mode: enforce
defaultAction: allow
rules:
  - name: everything
    action: allow
    verbs: ["*"]
    resources: ["*"]
    namespaces: ["*"]
masking:
  rules:
    - resources: [secrets]
      fields: ["data.*", "stringData.*"]
    - resources: [configmaps]
      keys: "(?i)(password|secret|token|apikey)"
    - resources: ["*"]
      envNames: "(?i)(password|secret|token|key)"
  detectors: [jwt, private-key, aws-access-key, bearer-token, generic-password-assignment]
"#;

const JWT: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwbGFudGVkLWp3dC1zdWJqZWN0In0.cGxhbnRlZHNpZ25hdHVyZQ";

struct Stack {
    sim: ApiSim,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

fn stack() -> Stack {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().policy(&policy)).unwrap();
    Stack {
        sim,
        sidecar,
        _dir: dir,
    }
}

/// Creates a Secret directly in kube-apisim (admin, not through the sidecar).
fn plant(sim: &ApiSim, name: &str, password: &str) {
    run_ok(sim.kubectl("1.32").args([
        "create",
        "secret",
        "generic",
        name,
        &format!("--from-literal=password={password}"),
    ]))
    .unwrap();
}

/// No planted value appears raw or base64-encoded.
fn assert_clean(out: &str, planted: &[&str]) {
    for p in planted {
        assert!(!out.contains(p), "planted {p:?} leaked: {out}");
        let b = B64.encode(p);
        assert!(!out.contains(&b), "planted {p:?} leaked as base64: {out}");
    }
}

/// `curl` against the sidecar as the app: local CA and token. Returns
/// (status, response headers, body).
fn curl(s: &Sidecar, path: &str, headers: &[&str], extra: &[&str]) -> (u16, String, String) {
    let tok = s.token().unwrap();
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-D",
        "/dev/stderr",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(s.local_dir().join("ca.crt"))
    .arg("-H")
    .arg(format!("Authorization: Bearer {tok}"));
    for h in headers {
        c.args(["-H", h]);
    }
    c.args(extra).arg(format!("{}{path}", s.url()));
    let out = run(&mut c, T).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        String::from_utf8_lossy(&out.stderr).to_lowercase(),
        body.to_string(),
    )
}

/// A long-running client whose stdout is collected in the background.
struct Streaming {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Streaming {
    fn start(cmd: &mut Command) -> Streaming {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Streaming { child, out }
    }

    /// Waits until the output contains `needle`, and asserts that the stream
    /// is still open then (the sidecar passed it on without buffering).
    fn wait_open(&mut self, needle: &str) -> String {
        let out = self.out.clone();
        let text = wait_for(needle, T, || {
            let t = out.lock().unwrap().clone();
            t.contains(needle).then_some(t)
        })
        .unwrap();
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the stream ended before {needle:?} arrived: {text}"
        );
        text
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_object_list_chunks_table_pod_env_and_errors() {
    let st = stack();
    let planted = ["s3cr3t-one-Q7", "s3cr3t-two-Q7", "s3cr3t-three-Q7"];
    for (i, p) in planted.iter().enumerate() {
        plant(&st.sim, &format!("planted-{i}"), p);
    }
    let k = || st.sidecar.kubectl("1.32");

    let out = run_ok(k().args(["get", "secret", "planted-0", "-o", "json"])).unwrap();
    assert_clean(&out, &planted);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["password"], MARKER_BASE64);
    assert_eq!(v["metadata"]["name"], "planted-0");
    let jp = run_ok(k().args([
        "get",
        "secret",
        "planted-0",
        "-o",
        "jsonpath={.data.password}",
    ]))
    .unwrap();
    assert_eq!(B64.decode(jp.trim()).unwrap(), MARKER.as_bytes());
    let yaml = run_ok(k().args(["get", "secret", "planted-1", "-o", "yaml"])).unwrap();
    assert_clean(&yaml, &planted);
    assert!(yaml.contains(MARKER_BASE64), "{yaml}");

    // limit/continue: one item per page.
    let out = run_ok(k().args(["get", "secrets", "--chunk-size=1", "-o", "json", "-v=6"])).unwrap();
    assert_clean(&out, &planted);
    let v: Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().unwrap();
    for i in 0..planted.len() {
        let item = items
            .iter()
            .find(|it| it["metadata"]["name"] == format!("planted-{i}").as_str())
            .unwrap();
        assert_eq!(item["data"]["password"], MARKER_BASE64);
    }
    // kubectl really paged (it logs each request at -v=6 on stderr).
    let paged = run(
        k().args(["get", "secrets", "--chunk-size=1", "-o", "name", "-v=6"]),
        T,
    )
    .unwrap();
    let log = String::from_utf8_lossy(&paged.stderr);
    assert!(
        log.contains("limit=1") && log.contains("continue="),
        "{log}"
    );

    // The default Table output.
    let table = run_ok(k().args(["get", "secrets"])).unwrap();
    assert!(table.contains("planted-2"), "{table}");
    assert_clean(&table, &planted);

    // Demo seed: a pod env value and a ConfigMap key.
    let pod = run_ok(k().args(["get", "pod", "web-0", "-o", "json"])).unwrap();
    assert!(!pod.contains("hunter2"), "{pod}");
    assert!(pod.contains(MARKER), "{pod}");
    let cm = run_ok(k().args(["get", "configmap", "app-config", "-o", "json"])).unwrap();
    let v: Value = serde_json::from_str(&cm).unwrap();
    assert_eq!(v["data"]["password"], MARKER, "{cm}");

    // Error Status bodies pass unchanged.
    let nope = run(k().args(["get", "secret", "nope"]), T).unwrap();
    assert!(!nope.status.success());
    let err = String::from_utf8_lossy(&nope.stderr);
    assert!(err.contains(r#"secrets "nope" not found"#), "{err}");
    let (code, _, body) = curl(
        &st.sidecar,
        "/api/v1/namespaces/default/secrets/nope",
        &[],
        &[],
    );
    let direct = run_ok(st.sim.kubectl("1.32").args([
        "get",
        "--raw",
        "/api/v1/namespaces/default/secrets/nope",
    ]));
    assert_eq!(code, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["reason"].as_str(), v["code"].as_u64()),
        (Some("Status"), Some("NotFound"), Some(404))
    );
    assert!(direct.is_err(), "the sim must 404 too");
}

#[test]
fn watch_streams_every_event_masked_without_buffering() {
    let st = stack();
    plant(&st.sim, "w-first", "watch-pw-first-9Z");
    let mut w = Streaming::start(
        st.sidecar
            .kubectl("1.32")
            .args(["get", "secrets", "-w", "-o", "json"]),
    );
    // The initial event arrives while the watch is open.
    w.wait_open("\"w-first\"");
    plant(&st.sim, "w-second", "watch-pw-second-9Z");
    let text = w.wait_open("\"w-second\"");
    assert_clean(&text, &["watch-pw-first-9Z", "watch-pw-second-9Z"]);
    // Every event object for the planted secrets carries the marker.
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    for name in ["w-first", "w-second"] {
        let ev = events
            .iter()
            .find(|e| e["metadata"]["name"] == name)
            .unwrap();
        assert_eq!(ev["data"]["password"], MARKER_BASE64);
    }
}

#[test]
fn raw_shapes_table_partial_metadata_and_gzip() {
    let st = stack();
    let pw = "raw-shape-pw-4K";
    // Applied, so the last-applied annotation (which metadata-only shapes
    // carry) holds the value too.
    let manifest = st.sim.work_dir().join("raw-secret.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"raw-a","namespace":"default"}},"data":{{"password":"{}"}}}}"#,
            B64.encode(pw)
        ),
    )
    .unwrap();
    run_ok(st.sim.kubectl("1.32").args(["apply", "-f"]).arg(&manifest)).unwrap();
    let upstream_ann = run_ok(st.sim.kubectl("1.32").args([
        "get",
        "secret",
        "raw-a",
        "-o",
        "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    ]))
    .unwrap();
    assert!(upstream_ann.contains(&B64.encode(pw)), "{upstream_ann}");
    let secrets = "/api/v1/namespaces/default/secrets";
    let table = "Accept: application/json;as=Table;v=v1;g=meta.k8s.io";
    for include in ["Object", "Metadata", "None"] {
        let (code, _, body) = curl(
            &st.sidecar,
            &format!("{secrets}?includeObject={include}"),
            &[table],
            &[],
        );
        assert_eq!(code, 200, "{body}");
        assert_clean(&body, &[pw]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "Table", "{body}");
        let row = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["cells"][0] == "raw-a")
            .unwrap();
        match include {
            "Object" => assert_eq!(row["object"]["data"]["password"], MARKER_BASE64),
            "Metadata" => {
                assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
                let ann = row["object"]["metadata"]["annotations"]
                    ["kubectl.kubernetes.io/last-applied-configuration"]
                    .as_str()
                    .unwrap();
                assert_eq!(
                    ann,
                    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"raw-a","namespace":"default"}}"#
                );
            }
            _ => assert!(row.get("object").is_none_or(Value::is_null), "{row}"),
        }
    }
    for (path, kind) in [
        (format!("{secrets}/raw-a"), "PartialObjectMetadata"),
        (secrets.to_string(), "PartialObjectMetadataList"),
    ] {
        let accept = format!("Accept: application/json;as={kind};v=v1;g=meta.k8s.io");
        let (code, _, body) = curl(&st.sidecar, &path, &[&accept], &[]);
        assert_eq!(code, 200, "{body}");
        assert_clean(&body, &[pw]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], kind, "{body}");
        assert!(
            body.contains(r#"\"kind\":\"Secret\",\"metadata\""#),
            "{body}"
        );
    }

    // A list over kube-apisim's gzip threshold (128 KiB): 40 Secrets of 4 KiB.
    let big: Vec<String> = (0..40)
        .map(|i| format!("{i:02}-{}", "G".repeat(4096)))
        .collect();
    let items: Vec<String> = big
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"big-{i}","namespace":"default"}},"data":{{"blob":"{}"}}}}"#,
                B64.encode(v)
            )
        })
        .collect();
    let list = st.sim.work_dir().join("big.json");
    std::fs::write(
        &list,
        format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
            items.join(",")
        ),
    )
    .unwrap();
    run_ok(
        st.sim
            .kubectl("1.32")
            .args(["create", "--validate=false", "-f"])
            .arg(&list),
    )
    .unwrap();
    // kube-apisim does gzip this list when asked.
    let direct = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "Accept-Encoding: gzip",
            "--cacert",
        ])
        .arg(st.sim.ca_path())
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", st.sim.token()))
        .arg(format!("{}{secrets}", st.sim.url()))
        .output()
        .unwrap();
    let hdrs = String::from_utf8_lossy(&direct.stdout).to_lowercase();
    assert!(hdrs.contains("content-encoding: gzip"), "{hdrs}");
    let needles: Vec<&str> = big.iter().map(|s| &s[..64]).collect();
    // kubectl sends Accept-Encoding: gzip.
    let out = run_ok(
        st.sidecar
            .kubectl("1.32")
            .args(["get", "secrets", "-o", "json"]),
    )
    .unwrap();
    assert_clean(&out, &needles);
    let v: Value = serde_json::from_str(&out).unwrap();
    let masked = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|it| it["data"]["blob"] == MARKER_BASE64)
        .count();
    assert_eq!(masked, 40);
    // curl asking for gzip, decoding it itself.
    let (code, _, body) = curl(&st.sidecar, secrets, &[], &["--compressed"]);
    assert_eq!(code, 200);
    assert_clean(&body, &needles);
    let v: Value = serde_json::from_str(&body).unwrap();
    let masked = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|it| it["data"]["blob"] == MARKER_BASE64)
        .count();
    assert_eq!(masked, 40);
}

#[test]
fn write_responses_masked_and_repeat_apply_works() {
    let st = stack();
    let k = || st.sidecar.kubectl("1.32");
    let out = run_ok(k().args([
        "create",
        "secret",
        "generic",
        "created",
        "--from-literal=password=create-pw-77",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_clean(&out, &["create-pw-77"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["password"], MARKER_BASE64);

    let manifest = st.sim.work_dir().join("applied.yaml");
    let write = |pw: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n  namespace: default\ndata:\n  password: {}\n",
                B64.encode(pw)
            ),
        )
        .unwrap();
    };
    let ann = "kubectl.kubernetes.io/last-applied-configuration";
    let skeleton = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"applied","namespace":"default"}}"#;
    for pw in ["apply-pw-first-1", "apply-pw-second-2"] {
        write(pw);
        let out = run_ok(k().args(["apply", "-o", "json", "-f"]).arg(&manifest)).unwrap();
        assert_clean(&out, &["apply-pw-first-1", "apply-pw-second-2"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["password"], MARKER_BASE64);
        assert_eq!(v["metadata"]["annotations"][ann], skeleton);
        // The write itself reached the API server unmasked.
        let live = run_ok(st.sim.kubectl("1.32").args([
            "get",
            "secret",
            "applied",
            "-o",
            "jsonpath={.data.password}",
        ]))
        .unwrap();
        assert_eq!(B64.decode(live.trim()).unwrap(), pw.as_bytes());
    }
    let got = run_ok(k().args(["get", "secret", "applied", "-o", "yaml"])).unwrap();
    assert_clean(&got, &["apply-pw-second-2"]);

    let out = run_ok(k().args([
        "patch",
        "secret",
        "applied",
        "-p",
        &format!(r#"{{"data":{{"extra":"{}"}}}}"#, B64.encode("patch-pw-3")),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_clean(&out, &["apply-pw-second-2", "patch-pw-3"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["extra"], MARKER_BASE64);

    // Update (PUT) echoes the object too.
    let replace = st.sim.work_dir().join("replaced.json");
    std::fs::write(
        &replace,
        format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"created","namespace":"default"}},"data":{{"password":"{}"}}}}"#,
            B64.encode("replace-pw-4")
        ),
    )
    .unwrap();
    let out = run_ok(k().args(["replace", "-o", "json", "-f"]).arg(&replace)).unwrap();
    assert_clean(&out, &["replace-pw-4", "create-pw-77"]);
    assert!(out.contains(MARKER_BASE64), "{out}");
}

#[test]
fn pod_logs_masked_line_by_line_and_followed() {
    let st = stack();
    let pod = st.sim.work_dir().join("logpod.json");
    let log = format!(
        "starting up\\nauthorization: Bearer {JWT}\\nconnected with password=pl4nted-log-pw\\nready"
    );
    std::fs::write(
        &pod,
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"logpod","namespace":"default","annotations":{{"apisim.mcp-warden.io/log":"{log}"}}}},"spec":{{"containers":[{{"name":"app","image":"busybox"}}]}}}}"#
        ),
    )
    .unwrap();
    run_ok(st.sim.kubectl("1.32").args(["create", "-f"]).arg(&pod)).unwrap();
    let planted = [JWT, "pl4nted-log-pw"];
    let out = run_ok(st.sidecar.kubectl("1.32").args(["logs", "logpod"])).unwrap();
    assert_clean(&out, &planted);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "starting up");
    assert!(lines[1].starts_with("authorization: Bearer") && lines[1].contains(MARKER));
    assert!(lines[2].contains(MARKER), "{out}");
    assert_eq!(lines[3], "ready");

    let mut f = Streaming::start(st.sidecar.kubectl("1.32").args(["logs", "-f", "logpod"]));
    let text = f.wait_open("ready\n");
    assert_clean(&text, &planted);
    assert!(text.contains(MARKER), "{text}");
}

#[test]
fn python_and_kube_rs_clients_decode_masked_secret() {
    require_python_kubernetes().unwrap();
    let st = stack();
    plant(&st.sim, "py-secret", "python-pw-55");
    // kube-rs, configured from the app's kubeconfig (local CA and token).
    let kubeconfig = st.sidecar.kubeconfig_path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret: Secret = rt.block_on(async {
        let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let client = Client::try_from(cfg).unwrap();
        Api::<Secret>::namespaced(client, "default")
            .get("py-secret")
            .await
            .unwrap()
    });
    let data = secret.data.unwrap();
    assert_eq!(data["password"].0, MARKER.as_bytes());

    let out = run_ok(
        st.sidecar
            .python(&python_script("masking_read_secret.py"))
            .args(["default", "py-secret"]),
    )
    .unwrap();
    assert_clean(&out, &["python-pw-55"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decoded"]["password"], MARKER, "{out}");
}

/// An upstream that answers everything with a protobuf body carrying a
/// secret, whatever the Accept header says.
fn protobuf_upstream(secret: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..50 {
            let Ok((mut s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 2048];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let mut body = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12".to_vec();
            body.extend_from_slice(secret.as_bytes());
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.kubernetes.protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    port
}

#[test]
fn unmaskable_upstream_answer_is_502_without_the_body() {
    // The sim only provides a CA file and token for the sidecar's flags.
    let sim = ApiSim::start(ApiSimOptions::default()).unwrap();
    let secret = "protobuf-pw-leak-31";
    let up = protobuf_upstream(secret);
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let p = |s: &str| dir.path().join(s).display().to_string();
    let mut child = Command::new(workspace_bin("mcp-warden-sidecar"))
        .args(["--listen", &listen, "--admin-listen", &admin.to_string()])
        .args(["--upstream", &format!("http://127.0.0.1:{up}")])
        .arg("--upstream-ca-file")
        .arg(sim.ca_path())
        .arg("--upstream-token-file")
        .arg(sim.token_path())
        .args(["--local-dir", &p("local"), "--spool-dir", &p("spool")])
        .args(["--policy-file", &p("none/policy.yaml")])
        .args(["--pod-name", "p", "--pod-namespace", "default"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_for("/readyz", T, || {
        matches!(http_get(admin, "/readyz"), Ok((200, _))).then_some(())
    });
    let result = ready.map(|()| {
        let tok = std::fs::read_to_string(dir.path().join("local/token")).unwrap();
        let out = Command::new("curl")
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "--cacert",
                &p("local/ca.crt"),
            ])
            .args(["-H", &format!("Authorization: Bearer {tok}")])
            .args(["-H", "Accept: application/vnd.kubernetes.protobuf"])
            .arg(format!(
                "https://{listen}/api/v1/namespaces/default/secrets/s"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = result.unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "502", "{body}");
    assert!(!body.contains(secret), "{body}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["code"].as_u64()),
        (Some("Status"), Some(502))
    );
}

// ------------------------------------------------------- hostile upstreams

/// What the hostile upstream answers: status, headers, body chunks (sent as
/// separate HTTP chunks).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    chunks: Vec<Vec<u8>>,
}

impl Reply {
    fn new(ct: &str, chunks: Vec<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), ct.into())],
            chunks,
        }
    }
}

type Route = fn(path: &str, authorization: &str) -> Reply;

/// A plain-HTTP upstream on loopback answering every request with `route`
/// (thread per connection, `Connection: close`).
fn hostile_upstream(route: Route) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let r = route(&path, &auth);
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
                    r.status
                );
                for (k, v) in &r.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                if s.write_all(out.as_bytes()).is_err() {
                    return;
                }
                for c in &r.chunks {
                    let _ = s.write_all(format!("{:x}\r\n", c.len()).as_bytes());
                    let _ = s.write_all(c);
                    let _ = s.write_all(b"\r\n");
                    let _ = s.flush();
                }
                let _ = s.write_all(b"0\r\n\r\n");
            });
        }
    });
    port
}

/// The sidecar binary in front of a hostile upstream, with the allow-all
/// masking policy and a collector.
struct HostileSidecar {
    child: Child,
    dir: tempfile::TempDir,
    listen: String,
    collector: mcp_warden_tests::stack::Collector,
    _sim: ApiSim,
}

impl HostileSidecar {
    fn start(port: u16, token: &str) -> HostileSidecar {
        // The sim only provides a CA file for the sidecar's flags.
        let sim = ApiSim::start(ApiSimOptions::default()).unwrap();
        let collector = mcp_warden_tests::stack::Collector::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        std::fs::write(dir.path().join("upstream-token"), token).unwrap();
        let listen = format!("127.0.0.1:{}", free_port().unwrap());
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let p = |s: &str| dir.path().join(s).display().to_string();
        let log = std::fs::File::create(dir.path().join("sidecar.log")).unwrap();
        let mut child = Command::new(workspace_bin("mcp-warden-sidecar"))
            .args(["--listen", &listen, "--admin-listen", &admin.to_string()])
            .args(["--upstream", &format!("http://127.0.0.1:{port}")])
            .arg("--upstream-ca-file")
            .arg(sim.ca_path())
            .args(["--upstream-token-file", &p("upstream-token")])
            .args(["--local-dir", &p("local"), "--spool-dir", &p("spool")])
            .args(["--policy-file", &p("policy.yaml")])
            .args(["--collector-url", &collector.url()])
            .args(["--pod-name", "p", "--pod-namespace", "default"])
            .env("MCP_WARDEN_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ready = wait_for("/readyz", T, || {
            matches!(http_get(admin, "/readyz"), Ok((200, _))).then_some(())
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}");
        }
        HostileSidecar {
            child,
            dir,
            listen,
            collector,
            _sim: sim,
        }
    }

    /// (curl exit success, HTTP code, response headers, body).
    fn curl(&self, path: &str) -> (bool, String, String, String) {
        let tok = std::fs::read_to_string(self.dir.path().join("local/token")).unwrap();
        let out = Command::new("curl")
            .args([
                "-sS",
                "-D",
                "/dev/stderr",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(self.dir.path().join("local/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {tok}")])
            .arg(format!("https://{}{path}", self.listen))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (
            out.status.success(),
            code.to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            body.to_string(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sidecar.log")).unwrap_or_default()
    }
}

impl Drop for HostileSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clear value the hostile upstream plants, and its base64.
const PLANTED: &str = "hostile-planted-pw-8Q";
const PLANTED_B64: &str = "aG9zdGlsZS1wbGFudGVkLXB3LThR";

fn shapes(path: &str, _auth: &str) -> Reply {
    let item = format!(r#"{{"metadata":{{"name":"x"}},"data":{{"blob":"{PLANTED_B64}"}}}}"#);
    let json = |s: String| Reply::new("application/json", vec![s.into_bytes()]);
    let path = path.split('?').next().unwrap_or(path);
    match path.rsplit('/').next().unwrap_or("") {
        // JSON served as text/plain.
        "as-text" => Reply::new(
            "text/plain",
            vec![format!(r#"{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"as-text"}},"data":{{"password":"{PLANTED_B64}"}}}}"#).into_bytes()],
        ),
        // A ConfigMap object on a secrets path.
        "as-configmap" => json(format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"as-configmap"}},"data":{{"blob":"{PLANTED}"}}}}"#
        )),
        // A Status carrying data on a secrets path.
        "as-status" => json(format!(
            r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","data":{{"blob":"{PLANTED_B64}"}}}}"#
        )),
        // Duplicate `kind` keys.
        "dup-kind" => json(format!(
            r#"{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"dup-kind"}},"data":{{"blob":"{PLANTED_B64}"}},"kind":"ConfigMap"}}"#
        )),
        // The list itself, by query below.
        "secrets" => json(format!(
            r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{}},"items":[{item}]}}"#
        )),
        // `kind` after the items, in pieces: items first, more of them than
        // the sidecar holds unscanned (`DEFAULT_HOLD_BYTES`), so they stream
        // before the tail comes.
        "configmaps" => Reply::new(
            "application/json",
            vec![
                format!(
                    r#"{{"apiVersion":"v1","items":[{}{item}"#,
                    format!("{item},").repeat(DEFAULT_HOLD_BYTES / item.len() + 2)
                )
                .into_bytes(),
                br#"],"kind":"SecretList","metadata":{}}"#.to_vec(),
            ],
        ),
        // The same, short: held to its end, then refused whole.
        "pods" => Reply::new(
            "application/json",
            vec![
                format!(r#"{{"apiVersion":"v1","items":[{item}"#).into_bytes(),
                br#"],"kind":"SecretList","metadata":{}}"#.to_vec(),
            ],
        ),
        _ => json(r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#.into()),
    }
}

fn watch_with_kind(_path: &str, _auth: &str) -> Reply {
    Reply::new(
        "application/json",
        vec![format!(
            "{{\"kind\":\"WatchEvent\",\"type\":\"ADDED\",\"object\":{{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"w\"}},\"data\":{{\"password\":\"{PLANTED_B64}\"}}}}}}\n"
        )
        .into_bytes()],
    )
}

#[test]
fn hostile_upstream_shapes_are_refused_or_masked() {
    let up = hostile_upstream(shapes);
    let s = HostileSidecar::start(up, "hostile-shapes-token-0123456789");
    let ns = "/api/v1/namespaces/default";
    for (path, want) in [
        (format!("{ns}/secrets/as-text"), "502"),
        (format!("{ns}/secrets/as-configmap"), "200"),
        (format!("{ns}/secrets/as-status"), "200"),
        (format!("{ns}/secrets/dup-kind"), "502"),
        (format!("{ns}/secrets"), "502"),
        (format!("{ns}/pods"), "502"),
    ] {
        let (_, code, _, body) = s.curl(&path);
        assert_eq!(code, want, "{path}: {body}");
        assert_clean(&body, &[PLANTED]);
        assert!(!body.contains(PLANTED_B64), "{path}: {body}");
        if want == "502" {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (v["kind"].as_str(), v["code"].as_u64()),
                (Some("Status"), Some(502)),
                "{body}"
            );
        }
    }
    // `kind` after the items contradicting the path, in a list longer than
    // the sidecar holds: the stream is cut (the items went out masked as
    // what the path says, nothing more). A short one was refused whole
    // above (`pods`).
    let (ok, _, _, body) = s.curl(&format!("{ns}/configmaps"));
    assert!(!ok, "the body must end with an error: {body}");
    assert!(!body.contains("SecretList"), "{body}");
    // Nothing unmasked in the records either.
    let events = wait_for("the records", T, || {
        let ev = s.collector.events();
        (ev.len() >= 6).then_some(ev)
    })
    .unwrap();
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(PLANTED) && !text.contains(PLANTED_B64),
        "{text}"
    );
}

#[test]
fn hostile_watch_event_with_its_own_kind_is_cut() {
    let up = hostile_upstream(watch_with_kind);
    let s = HostileSidecar::start(up, "hostile-watch-token-0123456789");
    let (ok, code, headers, body) = s.curl("/api/v1/namespaces/default/secrets?watch=true");
    // Headers may or may not have reached curl before the reset.
    assert!(code == "200" || code == "000", "{code} {headers} {body}");
    assert!(!ok, "the stream must end with an error: {body}");
    assert!(!body.contains(PLANTED_B64), "{body}");
}

/// Echoes the Authorization it received — raw, base64, in a header, split
/// over chunks — like a misbehaving aggregated API or a `*/proxy` target.
fn reflector(path: &str, auth: &str) -> Reply {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = auth.strip_prefix("Bearer ").unwrap_or(auth).to_string();
    let half = token.len() / 2;
    let (a, b) = token.split_at(half);
    let path = path.split('?').next().unwrap_or(path);
    let mut r = if path.ends_with("/log") {
        Reply::new(
            "text/plain",
            vec![
                format!("line one\nauth: {a}").into_bytes(),
                format!("{b} done\nb64 {}\n", B64.encode(&token)).into_bytes(),
            ],
        )
    } else if path.starts_with("/api/v1/namespaces/default/configmaps/") {
        Reply::new(
            "application/json",
            vec![format!(
                r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"echo"}},"data":{{"seen":"{a}"#
            )
            .into_bytes(), format!(r#"{b}","b64":"{}"}}}}"#, URL_SAFE_NO_PAD.encode(&token)).into_bytes()],
        )
    } else {
        // /version, */proxy: bodies the sidecar does not mask.
        Reply::new(
            "application/json",
            vec![
                format!(r#"{{"gitVersion":"v1.33.0","echo":"Bearer {a}"#).into_bytes(),
                format!(r#"{b}","b64":"{}"}}"#, B64.encode(&token)).into_bytes(),
            ],
        )
    };
    r.headers
        .push(("X-Echo-Authorization".into(), auth.to_string()));
    r
}

#[test]
fn hostile_upstream_reflecting_the_token_gets_it_scrubbed() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // Not JWT-shaped, so no detector would catch it by its look.
    let token = "real-upstream-token-Zk4xQ1vB7pL0sT9wE2rY6uI3oA8dF5gH";
    let up = hostile_upstream(reflector);
    let s = HostileSidecar::start(up, token);
    let ns = "/api/v1/namespaces/default";
    for path in [
        "/version".to_string(),
        format!("{ns}/pods/web-0/proxy/echo"),
        format!("{ns}/services/web:80/proxy/healthz"),
        format!("{ns}/pods/web-0/log"),
        format!("{ns}/configmaps/echo"),
    ] {
        let (_, code, headers, body) = s.curl(&path);
        assert_eq!(code, "200", "{path}: {body}");
        for form in [
            token.to_string(),
            B64.encode(token),
            URL_SAFE_NO_PAD.encode(token),
            token[..24].to_string(),
        ] {
            assert!(
                !body.contains(&form),
                "{path}: token leaked in body: {body}"
            );
            assert!(
                !headers.contains(&form),
                "{path}: token leaked in headers: {headers}"
            );
        }
        assert!(body.contains(MARKER), "{path}: {body}");
    }
    // The records hold no trace of it, and neither does the sidecar's log.
    let events = wait_for("the records", T, || {
        let ev = s.collector.events();
        (ev.len() >= 5).then_some(ev)
    })
    .unwrap();
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&token[..24]), "{text}");
    assert!(!text.contains(&B64.encode(token)[..24]), "{text}");
    let log = s.log();
    assert!(
        !log.contains(&token[..24]),
        "token in the sidecar log: {}",
        log.lines()
            .filter(|l| l.contains(&token[..24]))
            .map(|l| l.replace(&token[..24], "<TOKEN>"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn masked_values_copied_into_other_fields_are_scrubbed_in_responses_and_records() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = mcp_warden_tests::stack::Collector::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions::default()
            .policy(&policy)
            .collector(&collector),
    )
    .unwrap();
    let pw = "copied-secret-pw-Xy9";
    let enc = B64.encode(pw);
    // What a JSON patch `copy` from /data/password leaves in the object,
    // planted directly in the API server (admin).
    let manifest = sim.work_dir().join("copied.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "copied", "namespace": "default",
                "annotations": {"leak": enc, "note": format!("pw is {pw}")}},
            "data": {"password": enc},
        })
        .to_string(),
    )
    .unwrap();
    run_ok(sim.kubectl("1.32").args(["create", "-f"]).arg(&manifest)).unwrap();
    let jwt_cm = sim.work_dir().join("bin-cm.json");
    std::fs::write(
        &jwt_cm,
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "bin-cm", "namespace": "default"},
            "binaryData": {"blob": B64.encode(format!("token: {JWT}"))},
        })
        .to_string(),
    )
    .unwrap();
    run_ok(sim.kubectl("1.32").args(["create", "-f"]).arg(&jwt_cm)).unwrap();

    let k = || sidecar.kubectl("1.32");
    let get = run_ok(k().args(["get", "secret", "copied", "-o", "json"])).unwrap();
    assert_clean(&get, &[pw]);
    let v: Value = serde_json::from_str(&get).unwrap();
    assert_eq!(v["metadata"]["annotations"]["leak"], MARKER, "{get}");
    assert_eq!(
        v["metadata"]["annotations"]["note"],
        format!("pw is {MARKER}")
    );
    let list = run_ok(k().args(["get", "secrets", "-o", "json"])).unwrap();
    assert_clean(&list, &[pw]);
    let (_, _, table) = curl(
        &sidecar,
        "/api/v1/namespaces/default/secrets?includeObject=Object",
        &["Accept: application/json;as=Table;v=v1;g=meta.k8s.io"],
        &[],
    );
    assert_clean(&table, &[pw]);
    let cm = run_ok(k().args(["get", "configmap", "bin-cm", "-o", "json"])).unwrap();
    let v: Value = serde_json::from_str(&cm).unwrap();
    assert_eq!(v["binaryData"]["blob"], MARKER_BASE64, "{cm}");
    // A dry-run JSON patch `copy` into an annotation: refused up front, or
    // answered with the copy scrubbed; never the value.
    let patch = run(
        k().args([
            "patch",
            "secret",
            "copied",
            "--type=json",
            "--dry-run=server",
            "-o",
            "json",
            "-p",
            r#"[{"op":"copy","from":"/data/password","path":"/metadata/annotations/leak2"}]"#,
        ]),
        T,
    )
    .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&patch.stdout),
        String::from_utf8_lossy(&patch.stderr)
    );
    assert_clean(&out, &[pw]);
    // The records (responseObject of the get, list and patch) are scrubbed too.
    let events = wait_for("the records", T, || {
        let ev = collector.events();
        ev.iter()
            .any(|e| e["verb"] == "patch" && e["stage"] == "ResponseComplete")
            .then_some(ev)
    })
    .unwrap();
    let text = serde_json::to_string(&events).unwrap();
    assert_clean(&text, &[pw]);
    assert!(text.contains("copied"), "the get was recorded");
}
