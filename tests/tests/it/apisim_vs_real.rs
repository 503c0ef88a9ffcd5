//! kube-apisim held against the real thing: one scripted kubectl 1.32
//! session and one Python-client session (`tests/python/apisim_vs_real.py`)
//! run against kube-apisim and against a real kube-apiserver 1.20.2 (see
//! `realkube.rs`), comparing, step by step, the status codes of the
//! requests, the shapes of returned objects (their key paths, after dropping
//! volatile fields: uid, resourceVersion, timestamps, managedFields, and the
//! status a Deployment's controller writes on the real server only) and the
//! error texts (Status code, reason and message; kubectl's error line).
//!
//! Every difference is either fixed in kube-apisim or listed, with its
//! reason, in `tests/APISIM-DIFFERENCES.md`; the test asserts exactly that
//! list, so a new difference fails it, and so does a listed one that went
//! away.
//!
//! Needs `cargo build --workspace --bins`, the control plane
//! (`bash scripts/deps/kube-control-plane.sh`) and the Python `kubernetes`
//! package; scripts/test.sh provides all three.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, kubectl_with, python_script, python_with, require_python_kubernetes,
    run, wait_for, write_kubeconfig,
};
use mcp_warden_tests::realkube::{ADMIN, ALICE, RealKube};
use serde_json::{Value, json};

/// The namespace both sessions work in (created by the kubectl session).
const NS: &str = "cmp";

/// The token of kube-apisim's unprivileged user (kube-apisim has no RBAC;
/// on the real server [`ALICE`] has no binding).
const LIMITED_TOKEN: &str = "limited-user-token-0123456789";

/// One server under test.
struct Target {
    name: &'static str,
    admin: PathBuf,
    limited: PathBuf,
    work: PathBuf,
}

impl Target {
    fn kubectl(&self, limited: bool) -> Command {
        let (cfg, cache) = if limited {
            (&self.limited, self.work.join("kcache-limited"))
        } else {
            (&self.admin, self.work.join("kcache-admin"))
        };
        kubectl_with("1.32", cfg, &cache)
    }
}

/// A kubectl step: its name, whether it runs as the unprivileged user, its
/// arguments, and files it reads (written to the target's work dir first).
struct Step {
    name: &'static str,
    limited: bool,
    args: Vec<String>,
}

fn step(name: &'static str, args: &str) -> Step {
    Step {
        name,
        limited: false,
        args: shell_words(args),
    }
}

/// Splits on spaces, keeping '...' together (no escapes needed here).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

const FILES: &[(&str, &str)] = &[
    (
        "cm-applied.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k-applied\n  labels: {made-by: kubectl}\ndata:\n  a: \"1\"\n",
    ),
    (
        "cm-applied-2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k-applied\n  labels: {made-by: kubectl, v: \"2\"}\ndata:\n  a: \"2\"\n  b: \"3\"\n",
    ),
    (
        "cm-replaced.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k-cm\ndata:\n  replaced: \"yes\"\n",
    ),
    (
        "cm-missing.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k-not-there\ndata:\n  a: \"1\"\n",
    ),
    (
        "cm-invalid.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\ndata:\n  a: \"1\"\n",
    ),
    (
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: k-secret-applied\ntype: Opaque\nstringData:\n  password: hunter2\n",
    ),
    (
        "deploy-invalid.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: k-bad\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec:\n      containers: [{name: c, image: example.invalid/c:1}]\n",
    ),
    (
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: k-dep\n  labels: {app: k-dep}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: k-dep}}\n  template:\n    metadata: {labels: {app: k-dep}}\n    spec:\n      containers: [{name: app, image: example.invalid/app:1}]\n",
    ),
    (
        "deploy-replaced.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: k-dep\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: k-dep}}\n  template:\n    metadata: {labels: {app: k-dep}}\n    spec:\n      containers: [{name: app, image: example.invalid/app:3}]\n",
    ),
];

fn kubectl_steps() -> Vec<Step> {
    let mut v = vec![
        step("ns.create", &format!("create namespace {NS} -o json")),
        step(
            "cm.create",
            &format!("-n {NS} create configmap k-cm --from-literal=a=1 -o json"),
        ),
        step(
            "cm.create.exists",
            &format!("-n {NS} create configmap k-cm --from-literal=a=1 -o json"),
        ),
        step(
            "cm.create.invalid",
            &format!("-n {NS} create -f cm-invalid.yaml -o json"),
        ),
        step("cm.get", &format!("-n {NS} get configmap k-cm -o json")),
        step(
            "cm.get.missing",
            &format!("-n {NS} get configmap k-missing -o json"),
        ),
        step("cm.list", &format!("-n {NS} get configmaps -o json")),
        step("cm.list.table", &format!("-n {NS} get configmap k-cm")),
        step(
            "cm.apply.create",
            &format!("-n {NS} apply -f cm-applied.yaml -o json"),
        ),
        step(
            "cm.apply.update",
            &format!("-n {NS} apply -f cm-applied-2.yaml -o json"),
        ),
        step(
            "cm.apply.server-side",
            &format!("-n {NS} apply --server-side -f cm-applied-2.yaml -o json"),
        ),
        step(
            "cm.patch.json",
            &format!(
                r#"-n {NS} patch configmap k-cm --type=json -p '[{{"op":"add","path":"/data/b","value":"2"}}]' -o json"#
            ),
        ),
        step(
            "cm.patch.merge",
            &format!(
                r#"-n {NS} patch configmap k-cm --type=merge -p '{{"data":{{"c":"3"}}}}' -o json"#
            ),
        ),
        step(
            "cm.patch.strategic",
            &format!(
                r#"-n {NS} patch configmap k-cm --type=strategic -p '{{"metadata":{{"labels":{{"x":"y"}}}}}}' -o json"#
            ),
        ),
        step(
            "cm.patch.json.bad-path",
            &format!(
                r#"-n {NS} patch configmap k-cm --type=json -p '[{{"op":"replace","path":"/data/zzz","value":"1"}}]' -o json"#
            ),
        ),
        step(
            "cm.patch.json.bad-op",
            &format!(
                r#"-n {NS} patch configmap k-cm --type=json -p '[{{"op":"frobnicate","path":"/data/a"}}]' -o json"#
            ),
        ),
        step(
            "cm.patch.merge.wrong-type",
            &format!(
                r#"-n {NS} patch configmap k-cm --type=merge -p '{{"data":"not-a-map"}}' -o json"#
            ),
        ),
        step(
            "cm.patch.missing",
            &format!(
                r#"-n {NS} patch configmap k-missing --type=merge -p '{{"data":{{"c":"3"}}}}' -o json"#
            ),
        ),
        step(
            "cm.replace",
            &format!("-n {NS} replace -f cm-replaced.yaml -o json"),
        ),
        step(
            "cm.replace.missing",
            &format!("-n {NS} replace -f cm-missing.yaml -o json"),
        ),
        step(
            "secret.create",
            &format!(
                "-n {NS} create secret generic k-secret --from-literal=password=hunter2 -o json"
            ),
        ),
        step(
            "secret.apply",
            &format!("-n {NS} apply -f secret.yaml -o json"),
        ),
        step(
            "secret.get",
            &format!("-n {NS} get secret k-secret -o json"),
        ),
        step(
            "secret.patch.merge",
            &format!(
                r#"-n {NS} patch secret k-secret --type=merge -p '{{"stringData":{{"k":"v"}}}}' -o json"#
            ),
        ),
        step(
            "secret.create.exists",
            &format!("-n {NS} create secret generic k-secret --from-literal=password=x -o json"),
        ),
        // kubectl's typed create sends protobuf.
        step(
            "deploy.create.protobuf",
            &format!(
                "-n {NS} create deployment k-dep-pb --image=example.invalid/app:1 --replicas=0 -o json"
            ),
        ),
        step(
            "deploy.create",
            &format!("-n {NS} create -f deploy.yaml -o json"),
        ),
        step(
            "deploy.get",
            &format!("-n {NS} get deployment k-dep -o json"),
        ),
        step(
            "deploy.patch.strategic",
            &format!(
                r#"-n {NS} patch deployment k-dep --type=strategic -p '{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"app","image":"example.invalid/app:2"}}]}}}}}}}}' -o json"#
            ),
        ),
        step(
            "deploy.replace",
            &format!("-n {NS} replace -f deploy-replaced.yaml -o json"),
        ),
        step(
            "deploy.scale",
            &format!("-n {NS} scale deployment k-dep --replicas=0"),
        ),
        step(
            "deploy.create.invalid",
            &format!("-n {NS} create -f deploy-invalid.yaml -o json"),
        ),
        step(
            "deploy.list",
            &format!("-n {NS} get deployments --field-selector=metadata.name=k-dep -o json"),
        ),
        step("cm.delete", &format!("-n {NS} delete configmap k-cm")),
        step(
            "cm.delete.missing",
            &format!("-n {NS} delete configmap k-cm"),
        ),
        step(
            "secret.delete",
            &format!("-n {NS} delete secret k-secret k-secret-applied"),
        ),
        step("deploy.delete", &format!("-n {NS} delete deployment k-dep")),
    ];
    let mut forbidden = step(
        "cm.list.forbidden",
        &format!("-n {NS} get configmaps -o json"),
    );
    forbidden.limited = true;
    v.push(forbidden);
    v
}

/// `(verb, path?query, code)` of the namespaced requests in a `-v=6` log
/// (discovery differs by design and is left out).
fn requests(stderr: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        // kubectl 1.32: `I… round_trippers.go:560] GET https://h:p/api/v1/… 404 Not Found in 2 milliseconds`
        let Some((_, rest)) = line.split_once("round_trippers.go") else {
            continue;
        };
        let Some((_, rest)) = rest.split_once("] ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(verb), Some(url), Some(code)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(code) = code.parse::<u64>() else {
            continue;
        };
        let path = url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap_or_default();
        if !path.contains("/namespaces") {
            continue;
        }
        out.push(json!([verb, path, code]));
    }
    out
}

/// The lines of stderr that are not klog lines: kubectl's own messages.
fn messages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            let b = l.as_bytes();
            // klog lines, and the response bodies -v=6 prints over several lines
            let klog = b.len() > 5
                && matches!(b[0], b'I' | b'W' | b'E' | b'F')
                && b[1..5].iter().all(u8::is_ascii_digit);
            !(klog || l.starts_with([' ', '{', '}']))
        })
        .map(str::to_string)
        .collect()
}

/// Fields left out of shapes: set by the server per object or per moment.
fn volatile(path: &str) -> bool {
    const DROP: &[&str] = &[
        "metadata.uid",
        "metadata.resourceVersion",
        "metadata.creationTimestamp",
        "metadata.managedFields",
        "metadata.selfLink",
        "metadata.annotations.deployment.kubernetes.io/revision",
        "items[].metadata.uid",
        "items[].metadata.resourceVersion",
        "items[].metadata.creationTimestamp",
        "items[].metadata.managedFields",
        "items[].metadata.annotations.deployment.kubernetes.io/revision",
    ];
    DROP.iter().any(|d| {
        path == *d || path.starts_with(&format!("{d}.")) || path.starts_with(&format!("{d}["))
    })
}

/// Key paths of a JSON value (`a.b`, `a[].c`), without volatile ones. A
/// Deployment's `status` is written by the controller on the real server
/// only, at its own pace: left out.
fn shape(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if volatile(&p) {
                        continue;
                    }
                    out.insert(p.clone());
                    walk(x, &p, out);
                }
            }
            Value::Array(a) => {
                for x in a {
                    walk(x, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut v = v.clone();
    strip_deployment_status(&mut v);
    let mut out = BTreeSet::new();
    walk(&v, "", &mut out);
    out
}

fn strip_deployment_status(v: &mut Value) {
    fn strip(d: &mut Value) {
        if let Some(m) = d.as_object_mut() {
            m.remove("status");
        }
        // The controller's revision annotation (the only one, here).
        if let Some(md) = d["metadata"].as_object_mut() {
            if let Some(a) = md.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("deployment.kubernetes.io/revision");
            }
            if md
                .get("annotations")
                .is_some_and(|a| a.as_object().is_some_and(|a| a.is_empty()))
            {
                md.remove("annotations");
            }
        }
    }
    if v["kind"] == "Deployment" {
        strip(v);
    }
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        items
            .iter_mut()
            .filter(|i| i["kind"] == "Deployment" || i["spec"]["template"].is_object())
            .for_each(strip);
    }
}

/// What is compared of a response body: a Status's code, reason, message
/// and details; any other object's shape; text as is.
fn body_view(body: &Value) -> Value {
    if body["kind"] == "Status" {
        json!({
            "status": body["status"],
            "code": body["code"],
            "reason": body["reason"],
            "message": body["message"],
            "details": without_uid(&body["details"]),
        })
    } else if body.is_object() {
        json!(shape(body))
    } else {
        body.clone()
    }
}

/// Text with every age (`0s`, `12m`, `3h`) as `AGE`: tables have one.
fn without_ages(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    let age = w.len() > 1
                        && w.ends_with(['s', 'm', 'h', 'd'])
                        && w[..w.len() - 1].bytes().all(|b| b.is_ascii_digit());
                    if age { "AGE" } else { w }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Status's details without the deleted object's uid.
fn without_uid(details: &Value) -> Value {
    let mut d = details.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("uid");
    }
    d
}

/// The kubectl session against one target: step name → view.
fn kubectl_session(t: &Target) -> BTreeMap<String, Value> {
    for (f, content) in FILES {
        std::fs::write(t.work.join(f), content).unwrap();
    }
    let mut out = BTreeMap::new();
    for s in kubectl_steps() {
        let mut cmd = t.kubectl(s.limited);
        cmd.current_dir(&t.work).args(&s.args).arg("-v=6");
        let o = run(&mut cmd, Duration::from_secs(60)).unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let stdout_view = match serde_json::from_str::<Value>(&stdout) {
            Ok(v) => body_view(&v),
            Err(_) => Value::String(without_ages(&stdout)),
        };
        if s.name == "ns.create" {
            wait_root_ca(t);
        }
        out.insert(
            s.name.to_string(),
            json!({
                "exit": o.status.code(),
                "requests": requests(&stderr),
                "stdout": stdout_view,
                "stderr": messages(&stderr),
            }),
        );
    }
    out
}

/// Waits (bounded) for the namespace's `kube-root-ca.crt`, which the real
/// server's controller manager publishes a moment after the namespace is
/// created: listings after that see it on both servers.
fn wait_root_ca(t: &Target) {
    wait_for(
        "kube-root-ca.crt in the new namespace",
        Duration::from_secs(60),
        || {
            let mut cmd = t.kubectl(false);
            cmd.args([
                "-n",
                NS,
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-o",
                "name",
            ]);
            let ok = run(&mut cmd, Duration::from_secs(30)).is_ok_and(|o| o.status.success());
            if !ok {
                std::thread::sleep(Duration::from_millis(200));
            }
            ok.then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", t.name));
}

/// The Python session against one target: step name → view.
fn python_session(cfg: &Path) -> BTreeMap<String, Value> {
    let script = python_script("apisim_vs_real.py");
    let o = run(python_with(&script, cfg).arg(NS), Duration::from_secs(120)).unwrap();
    assert!(
        o.status.success(),
        "apisim_vs_real.py: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let name = v["step"].as_str().unwrap().to_string();
            (
                name,
                json!({"status": v["status"], "body": body_view(&v["body"])}),
            )
        })
        .collect()
}

/// Differences as `session/step/field` → (kube-apisim, real) values; a
/// shape difference is one entry per key path (`…/shape:+path` present on
/// the real server only, `…/shape:-path` on kube-apisim only).
fn diff(
    session: &str,
    sim: &BTreeMap<String, Value>,
    real: &BTreeMap<String, Value>,
) -> BTreeMap<String, (Value, Value)> {
    let mut out = BTreeMap::new();
    let steps: BTreeSet<&String> = sim.keys().chain(real.keys()).collect();
    for s in steps {
        let (a, b) = (
            &sim.get(s).cloned().unwrap_or_default(),
            &real.get(s).cloned().unwrap_or_default(),
        );
        let fields: BTreeSet<&String> = a
            .as_object()
            .into_iter()
            .chain(b.as_object())
            .flat_map(|m| m.keys())
            .collect();
        // When the outcome differs (exit code, HTTP status), that is the one
        // difference: the output of a failure has no shape to compare.
        let outcome = ["exit", "status"]
            .into_iter()
            .find(|f| a.get(f).is_some() && a[f] != b[f]);
        if let Some(f) = outcome {
            out.insert(format!("{session}/{s}/{f}"), (a.clone(), b.clone()));
            continue;
        }
        for f in fields {
            let (x, y) = (&a[f.as_str()], &b[f.as_str()]);
            if x == y {
                continue;
            }
            match (x.as_array(), y.as_array()) {
                (Some(xs), Some(ys))
                    if xs.iter().chain(ys).all(Value::is_string)
                        && (f == "stdout" || f == "body") =>
                {
                    let xs: BTreeSet<_> = xs.iter().filter_map(Value::as_str).collect();
                    let ys: BTreeSet<_> = ys.iter().filter_map(Value::as_str).collect();
                    for p in ys.difference(&xs) {
                        out.insert(format!("{session}/{s}/{f}:+{p}"), (Value::Null, json!(p)));
                    }
                    for p in xs.difference(&ys) {
                        out.insert(format!("{session}/{s}/{f}:-{p}"), (json!(p), Value::Null));
                    }
                }
                _ => {
                    out.insert(format!("{session}/{s}/{f}"), (x.clone(), y.clone()));
                }
            }
        }
    }
    out
}

/// The differences `tests/APISIM-DIFFERENCES.md` lists: every line
/// `` - `ID` — reason ``.
fn listed() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("APISIM-DIFFERENCES.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(id, _)| id.to_string()))
        .collect()
}

#[test]
fn kube_apisim_answers_as_the_real_server_does() {
    require_python_kubernetes().unwrap();
    let kube = RealKube::shared().expect("the real control plane");
    let sim = ApiSim::start(ApiSimOptions {
        extra_users: vec![format!("limited={LIMITED_TOKEN}:approvers")],
        ..Default::default()
    })
    .expect("kube-apisim");
    let limited_cfg = sim.work_dir().join("limited.kubeconfig");
    write_kubeconfig(&limited_cfg, &sim.url(), &sim.ca_path(), LIMITED_TOKEN).unwrap();
    let sim_work = sim.work_dir().join("session");
    let real_work = kube.work_dir().join("session");
    std::fs::create_dir_all(&sim_work).unwrap();
    std::fs::create_dir_all(&real_work).unwrap();
    let targets = [
        Target {
            name: "kube-apisim",
            admin: sim.kubeconfig_path(),
            limited: limited_cfg,
            work: sim_work,
        },
        Target {
            name: "kube-apiserver 1.20.2",
            admin: kube.kubeconfig_path(ADMIN),
            limited: kube.kubeconfig_path(ALICE),
            work: real_work,
        },
    ];
    let [s, r] = &targets;
    let ks = kubectl_session(s);
    let kr = kubectl_session(r);
    let ps = python_session(&s.admin);
    let pr = python_session(&r.admin);
    // The sessions did what they are for on the real server: successes and
    // each kind of error the comparison is about.
    for (step, want) in [
        ("cm.create", 201),
        ("cm.create.exists", 409),
        ("cm.create.invalid-name", 422),
        ("cm.get.missing", 404),
        ("cm.replace.conflict", 409),
        ("cm.list.bad-selector", 400),
        ("deploy.create", 201),
        ("deploy.create.selector-mismatch", 422),
    ] {
        assert_eq!(
            pr[step]["status"], want,
            "python {step} on the real server: {}",
            pr[step]
        );
    }
    let codes: BTreeSet<u64> = kr
        .values()
        .flat_map(|v| v["requests"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r[2].as_u64())
        .collect();
    for want in [200, 201, 403, 404, 409, 422] {
        assert!(
            codes.contains(&want),
            "no {want} in the real kubectl session: {codes:?}"
        );
    }
    let mut found = diff("kubectl", &ks, &kr);
    found.extend(diff("python", &ps, &pr));

    let listed = listed();
    let ids: BTreeSet<String> = found.keys().cloned().collect();
    let new: Vec<String> = ids
        .difference(&listed)
        .map(|id| {
            let (a, b) = &found[id];
            format!("- `{id}`\n    {}: {a}\n    {}: {b}", s.name, r.name)
        })
        .collect();
    let gone: Vec<&String> = listed.difference(&ids).collect();
    eprintln!(
        "apisim_vs_real: {} kubectl steps, {} Python steps, {} differences (all listed: {})",
        ks.len(),
        ps.len(),
        ids.len(),
        new.is_empty() && gone.is_empty()
    );
    assert!(
        new.is_empty() && gone.is_empty(),
        "tests/APISIM-DIFFERENCES.md is out of date.\nNew differences (fix kube-apisim or list them with a reason):\n{}\nListed but no longer found (remove them):\n{gone:#?}",
        new.join("\n")
    );
}
