//! Hostile input against the real sidecar binary in front of kube-apisim:
//! headers and bodies that must not switch masking, recording or limits off,
//! and JSON patches that must not read masked values. Needs
//! `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, run, run_ok, wait_for};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Allows everything (writes too) and masks Secrets like the embedded default.
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
"#;

const PLANTED: &str = "hunter2-f00dfeed-7c1e";

struct Stack {
    sim: ApiSim,
    sidecar: Sidecar,
    dir: tempfile::TempDir,
}

fn stack(collector: Option<&Collector>) -> Stack {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut opts = SidecarOptions::default().policy(&policy);
    if let Some(c) = collector {
        opts = opts.collector(c);
    }
    let sidecar = Sidecar::start(&sim, opts).unwrap();
    run_ok(sim.kubectl("1.32").args([
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={PLANTED}"),
    ]))
    .unwrap();
    Stack { sim, sidecar, dir }
}

/// `curl --http1.1` against the sidecar as the app. Returns (code, body).
fn curl(s: &Sidecar, path: &str, args: &[&str]) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--http1.1", "-w", "\n%{http_code}", "--cacert"])
        .arg(s.local_dir().join("ca.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", s.token().unwrap()))
        .args(args)
        .arg(format!("{}{path}", s.url()));
    let out = run(&mut c, T).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn assert_clean(out: &str) {
    assert!(!out.contains(PLANTED), "planted value leaked: {out}");
    assert!(
        !out.contains(&B64.encode(PLANTED)),
        "planted value leaked as base64: {out}"
    );
}

/// Any `Upgrade` header on a path the sidecar does not tunnel is dropped:
/// the answer is the ordinary, masked one (a GET, a LIST, a watch without
/// WebSocket), whatever the upgrade token.
#[test]
fn an_upgrade_header_does_not_switch_masking_off() {
    let st = stack(None);
    for proto in ["x", "websocket", "h2c", "SPDY/3.1"] {
        let up = ["-H", "Connection: Upgrade", "-H"];
        let upgrade = format!("Upgrade: {proto}");
        let args = [up[0], up[1], up[2], upgrade.as_str()];
        for path in [
            "/api/v1/namespaces/default/secrets/db",
            "/api/v1/namespaces/default/secrets",
            "/api/v1/secrets",
        ] {
            let (code, body) = curl(&st.sidecar, path, &args);
            assert_eq!(code, 200, "{proto} {path}: {body}");
            assert_clean(&body);
            assert!(body.contains("KioqTUFTS0VEKioq"), "{proto} {path}: {body}");
        }
    }
}

/// A watch asked for over WebSocket is refused with a clear Status; it is
/// never answered 101 and tunnelled raw.
#[test]
fn a_websocket_watch_is_refused_with_a_status() {
    let st = stack(None);
    let (code, body) = curl(
        &st.sidecar,
        "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=1",
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
    );
    assert_eq!(code, 400, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("watch over a connection upgrade"),
        "{body}"
    );
    assert_clean(&body);
}

/// An upgrade-tagged body is size-limited like any other: the sidecar's own
/// 413 (its message, not kube-apisim's, which words its limit differently),
/// and nothing reaches the API server.
#[test]
fn an_upgrade_tagged_body_gets_the_sidecars_413() {
    let st = stack(None);
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "huge", "namespace": "default"},
        "data": {"blob": "x".repeat(5 << 20)},
    });
    let path = st.dir.path().join("body.json");
    std::fs::write(&path, serde_json::to_vec(&body).unwrap()).unwrap();
    let data = format!("@{}", path.display());
    let (code, out) = curl(
        &st.sidecar,
        "/api/v1/namespaces/default/configmaps",
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: x",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(code, 413, "{out}\n{}", st.sidecar.log());
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("request body larger than"),
        "not the sidecar's refusal: {out}"
    );
    let got = run(st.sim.kubectl("1.32").args(["get", "configmap", "huge"]), T).unwrap();
    assert!(!got.status.success(), "the ConfigMap reached kube-apisim");
    // kube-apisim refuses such a body too: what shows that it was never
    // forwarded is that kube-apisim read no create at all (while it did read
    // the get just made).
    let requests = st.sim.requests();
    let seen = |method: &str, path: &str| requests.iter().any(|(m, p)| m == method && p == path);
    assert!(
        seen("GET", "/api/v1/namespaces/default/configmaps/huge"),
        "kube-apisim's log shows no requests:\n{}",
        st.sim.log()
    );
    assert!(
        !seen("POST", "/api/v1/namespaces/default/configmaps"),
        "the oversized create reached kube-apisim: {requests:?}"
    );
}

/// An upgrade-tagged PATCH is an ordinary PATCH: applied once and recorded
/// with its (masked) `requestObject`.
#[test]
fn an_upgrade_tagged_patch_is_recorded_with_its_request_object() {
    let collector = Collector::start().unwrap();
    let st = stack(Some(&collector));
    let (code, out) = curl(
        &st.sidecar,
        "/api/v1/namespaces/default/secrets/db",
        &[
            "-X",
            "PATCH",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: x",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data-binary",
            r#"{"metadata":{"labels":{"tagged":"yes"}},"stringData":{"password":"n3w-v4lue-0ff1ce"}}"#,
        ],
    );
    assert_eq!(code, 200, "{out}");
    assert_clean(&out);
    assert!(!out.contains("n3w-v4lue-0ff1ce"), "{out}");
    let ev = wait_for("the PATCH's ResponseComplete", T, || {
        collector.events().into_iter().find(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "patch"
                && e["objectRef"]["name"] == "db"
        })
    })
    .unwrap();
    assert_eq!(
        ev["requestObject"]["metadata"]["labels"]["tagged"], "yes",
        "{ev}"
    );
    assert_eq!(
        ev["requestObject"]["stringData"]["password"],
        mcp_warden_shared::mask::MARKER,
        "{ev}"
    );
    assert_clean(&ev.to_string());
}

/// JSON patches whose `copy`/`move`/`test` would read a masked value are
/// refused with a 403 Status before anything reaches the API server; other
/// JSON patches of the same Secret pass.
#[test]
fn json_patch_may_not_read_masked_values() {
    let st = stack(None);
    let path = "/api/v1/namespaces/default/secrets/db?dryRun=All";
    let patch = |body: &str| {
        curl(
            &st.sidecar,
            path,
            &[
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/json-patch+json",
                "--data-binary",
                body,
            ],
        )
    };
    for body in [
        r#"[{"op":"copy","from":"/data/password","path":"/metadata/annotations/leak"}]"#,
        r#"[{"op":"move","from":"/data/password","path":"/metadata/generateName"}]"#,
        r#"[{"op":"copy","from":"/data","path":"/metadata/labels"}]"#,
        r#"[{"op":"test","path":"/data/password","value":"aHVudGVyMg=="}]"#,
    ] {
        let (code, out) = patch(body);
        assert_eq!(code, 403, "{body}: {out}");
        let status: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(status["reason"], "Forbidden", "{out}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("may not read masked fields"),
            "{out}"
        );
        assert_clean(&out);
    }
    // Not JSON: cannot be judged, so not forwarded.
    let (code, out) = patch("[{\"op\":\"copy\",");
    assert_eq!(code, 400, "{out}");
    // kube-apisim would answer such a body with a 400 too: what shows that
    // none of the above was forwarded is that kube-apisim read no PATCH
    // until the harmless one below.
    let patches = || {
        st.sim
            .requests()
            .into_iter()
            .filter(|(m, p)| m == "PATCH" && p == "/api/v1/namespaces/default/secrets/db")
            .count()
    };
    assert_eq!(patches(), 0, "a refused patch reached kube-apisim");
    // Harmless JSON patches still work (and their answer is masked).
    let (code, out) = patch(r#"[{"op":"add","path":"/metadata/labels","value":{"team":"a"}}]"#);
    assert_eq!(code, 200, "{out}");
    assert_clean(&out);
    assert_eq!(
        patches(),
        1,
        "kube-apisim's log shows no PATCH:\n{}",
        st.sim.log()
    );
    let live = run_ok(
        st.sim
            .kubectl("1.32")
            .args(["get", "secret", "db", "-o", "json"]),
    )
    .unwrap();
    let live: Value = serde_json::from_str(&live).unwrap();
    assert!(live["metadata"]["annotations"]["leak"].is_null(), "{live}");
}

/// Token-like query parameters are redacted from the recorded `requestURI`
/// and never appear in the sidecar's log.
#[test]
fn token_query_parameters_are_redacted_from_records_and_logs() {
    let collector = Collector::start().unwrap();
    let st = stack(Some(&collector));
    let secret = "eyJhbGciOiJub25lIn0.c3ViamVjdA.query-token-6b1d";
    let (code, out) = curl(
        &st.sidecar,
        &format!("/api/v1/namespaces/default/configmaps?access_token={secret}&limit=5"),
        &[],
    );
    assert_eq!(code, 200, "{out}");
    let ev = wait_for("the list's ResponseComplete", T, || {
        collector.events().into_iter().find(|e| {
            e["stage"] == "ResponseComplete"
                && e["requestURI"]
                    .as_str()
                    .is_some_and(|u| u.contains("limit=5"))
        })
    })
    .unwrap();
    assert_eq!(
        ev["requestURI"],
        "/api/v1/namespaces/default/configmaps?access_token=REDACTED&limit=5"
    );
    let all = serde_json::to_string(&collector.events()).unwrap();
    assert!(!all.contains("query-token-6b1d"), "{all}");
    assert!(!st.sidecar.log().contains("query-token-6b1d"));
}
