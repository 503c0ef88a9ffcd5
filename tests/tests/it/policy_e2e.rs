//! The policy end to end: the `mcp-warden-sidecar` binary with `--policy-file`
//! in front of kube-apisim, driven by real clients (kubectl, the Python
//! `kubernetes` client, kube-rs), with kube-apisim's state checked through the
//! direct admin kubeconfig (bypassing the sidecar) and the recordings through
//! the test collector. Also the `policy check` / `policy eval` subcommands and
//! hot reload in the kubelet's ConfigMap volume layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcp_warden_shared::audit::{ANN_DECISION, ANN_ENFORCED, ANN_POLICY_HASH, ANN_RULE};
use mcp_warden_tests::harness::{
    ApiSim, ApiSimOptions, COMMAND_TIMEOUT, fixture, python_script, python_with,
    require_python_kubernetes, run, run_ok, wait_for, workspace_bin,
};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};
use serde_json::Value;

const HEADER: &str = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\n";

/// Reads everything, never deletes pods, never wipes ConfigMaps in one go
/// (single ConfigMap deletes are allowed), default deny.
const BASE_RULES: &str = r#"defaultAction: deny
rules:
  - name: read-everything
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
  - name: no-pod-deletes
    action: deny
    verbs: [delete, deletecollection]
    resources: [pods]
    message: pods are not yours to delete
  - name: no-configmap-wipes
    action: deny
    verbs: [deletecollection]
    resources: [configmaps]
    message: one ConfigMap at a time
  - name: configmap-deletes
    action: allow
    verbs: [delete]
    resources: [configmaps]
"#;

fn policy(mode: &str, extra_rules: &str) -> String {
    format!("{HEADER}mode: {mode}\n{BASE_RULES}{extra_rules}")
}

/// Writes `content` as a plain policy file in a fresh temp dir.
fn policy_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("policy-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command bounded by [`COMMAND_TIMEOUT`].
fn exec(cmd: &mut Command) -> Output {
    run(cmd, COMMAND_TIMEOUT).unwrap()
}

/// Names of the objects kube-apisim holds, seen directly (admin kubeconfig).
fn direct_names(sim: &ApiSim, resource: &str) -> Vec<String> {
    let out = run_ok(
        sim.kubectl("1.32")
            .args(["get", resource, "-n", "default", "-o", "name"]),
    )
    .unwrap();
    out.lines().map(|l| l.trim().to_string()).collect()
}

fn stack(policy: &str) -> (ApiSim, Collector, Sidecar, tempfile::TempDir) {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let (dir, path) = policy_file(policy);
    let sidecar = Sidecar::start(
        &sim,
        SidecarOptions::default().policy(path).collector(&collector),
    )
    .unwrap();
    (sim, collector, sidecar, dir)
}

/// The recorded events matching `pred`, waiting (bounded) for at least one.
fn recorded(collector: &Collector, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    wait_for(what, Duration::from_secs(10), || {
        let ev: Vec<Value> = collector.events().into_iter().filter(&pred).collect();
        (!ev.is_empty()).then_some(ev)
    })
    .unwrap()
}

#[test]
fn allowed_get_works_and_denied_delete_is_forbidden_naming_the_rule() {
    let content = policy("enforce", "");
    let (sim, collector, sidecar, _dir) = stack(&content);

    let out = run_ok(
        sidecar
            .kubectl("1.32")
            .args(["get", "pod", "web-0", "-o", "name"]),
    )
    .unwrap();
    assert_eq!(out.trim(), "pod/web-0");

    let out = exec(sidecar.kubectl("1.32").args(["delete", "pod", "web-0"]));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the delete succeeded: {err}");
    assert!(
        err.contains("Error from server (Forbidden):")
            && err.contains("no-pod-deletes")
            && err.contains("pods are not yours to delete"),
        "{err}"
    );
    assert!(direct_names(&sim, "pods").contains(&"pod/web-0".to_string()));

    // The refusal is recorded as a deny by that rule.
    let ev = recorded(&collector, "the refused delete to be recorded", |e| {
        e["verb"] == "delete"
            && e["objectRef"]["name"] == "web-0"
            && e["stage"] == "ResponseComplete"
    });
    assert_eq!(ev[0]["annotations"][ANN_DECISION], "deny", "{}", ev[0]);
    assert_eq!(
        ev[0]["annotations"][ANN_RULE], "no-pod-deletes",
        "{}",
        ev[0]
    );
    assert_eq!(ev[0]["responseStatus"]["code"], 403, "{}", ev[0]);
    // ...and by the policy's hash.
    assert_eq!(
        ev[0]["annotations"][ANN_POLICY_HASH],
        policy_hash(content.as_bytes()).as_str(),
        "{}",
        ev[0]
    );
}

#[test]
fn delete_all_is_judged_per_object_and_deletecollection_as_one() {
    require_python_kubernetes().unwrap();
    let (sim, _collector, sidecar, _dir) = stack(&policy("enforce", ""));
    let pods_before = direct_names(&sim, "pods");
    assert!(pods_before.len() >= 3, "{pods_before:?}");

    // kubectl lists, then sends one DELETE per object: each one is judged.
    let out = exec(sidecar.kubectl("1.32").args(["delete", "pods", "--all"]));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for name in &pods_before {
        let name = name.trim_start_matches("pod/");
        assert!(
            err.lines()
                .any(|l| l.contains("Error from server (Forbidden):")
                    && l.contains(&format!("\"{name}\""))
                    && l.contains("no-pod-deletes")),
            "no refusal for {name}: {err}"
        );
    }
    assert_eq!(direct_names(&sim, "pods"), pods_before);

    // A real DELETE on the collection is one deletecollection request,
    // refused by the rule that only names deletecollection.
    let cms_before = direct_names(&sim, "configmaps");
    assert!(cms_before.contains(&"configmap/app-config".to_string()));
    let out = exec(
        python_with(
            &python_script("policy_deletecollection.py"),
            &sidecar.kubeconfig_path(),
        )
        .args(["default"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(res["status"], 403, "{res}");
    assert_eq!(res["reason"], "Forbidden", "{res}");
    let msg = res["message"].as_str().unwrap();
    assert!(
        msg.contains("no-configmap-wipes") && msg.contains("one ConfigMap at a time"),
        "{res}"
    );
    assert_eq!(direct_names(&sim, "configmaps"), cms_before);
}

#[test]
fn impersonation_is_judged_by_policy() {
    let (_sim, _collector, sidecar, dir) = stack(&policy("enforce", ""));
    let path = dir.path().join("policy.yaml");
    // The app's ordinary use first (it also fills kubectl's discovery cache,
    // so the refusals below are those of the real request, printed in full).
    run_ok(sidecar.kubectl("1.32").args(["get", "pods", "-o", "name"])).unwrap();

    // No rule allows the impersonate verb: refused by the default action.
    let out = exec(
        sidecar
            .kubectl("1.32")
            .args(["--as=someone", "get", "pods", "-o", "name"]),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "impersonation went through: {err}");
    assert!(
        err.contains("Error from server (Forbidden):")
            && err.contains("impersonating user \"someone\""),
        "{err}"
    );

    // A rule allowing impersonation of that user (the request itself is
    // allowed by read-everything): it goes through once the policy reloads.
    let with_rule = policy(
        "enforce",
        "  - name: may-be-someone\n    action: allow\n    verbs: [impersonate]\n    resources: [users]\n    resourceNames: [someone]\n",
    );
    let tmp = dir.path().join("policy.yaml.new");
    std::fs::write(&tmp, with_rule).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let out = wait_for(
        "the impersonate rule to take effect",
        Duration::from_secs(10),
        || {
            let out =
                exec(
                    sidecar
                        .kubectl("1.32")
                        .args(["--as=someone", "get", "pods", "-o", "name"]),
                );
            out.status.success().then_some(out)
        },
    )
    .unwrap();
    assert!(text(&out.stdout).contains("pod/web-0"));

    // Another user is still refused.
    let out = exec(
        sidecar
            .kubectl("1.32")
            .args(["--as=someone-else", "get", "pods"]),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Error from server (Forbidden):")
            && err.contains("impersonating user \"someone-else\""),
        "{err}"
    );
}

#[test]
fn audit_mode_blocks_nothing_and_records_the_would_be_denial() {
    let (sim, collector, sidecar, _dir) = stack(&policy("audit", ""));
    run_ok(sidecar.kubectl("1.32").args(["delete", "pod", "web-1"])).unwrap();
    assert!(!direct_names(&sim, "pods").contains(&"pod/web-1".to_string()));

    let ev = recorded(&collector, "the audited delete to be recorded", |e| {
        e["verb"] == "delete"
            && e["objectRef"]["name"] == "web-1"
            && e["stage"] == "ResponseComplete"
    });
    let a = &ev[0]["annotations"];
    assert_eq!(a[ANN_DECISION], "deny", "{}", ev[0]);
    assert_eq!(a[ANN_ENFORCED], "false", "{}", ev[0]);
    assert_eq!(a[ANN_RULE], "no-pod-deletes", "{}", ev[0]);
    assert_eq!(ev[0]["responseStatus"]["code"], 200, "{}", ev[0]);
}

#[test]
fn approve_rule_fails_closed_without_the_accessrequest_crd() {
    let (sim, _collector, sidecar, _dir) = stack(&policy(
        "enforce",
        "  - name: services-need-a-human\n    action: approve\n    verbs: [delete]\n    resources: [services]\n",
    ));
    // The demo seed has no AccessRequest CRD, so the sidecar cannot ask a
    // human: the approve request must be refused at once (fail closed),
    // naming the rule and saying approval was needed. Holding it would end
    // in this timeout. The held path is tested in the approvals tests.
    let out = run(
        sidecar.kubectl("1.32").args(["delete", "service", "web"]),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| {
        panic!("the approve request was held although no AccessRequest can be created: {e}")
    });
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Error from server (Forbidden):")
            && err.contains("services-need-a-human")
            && err.contains("approval"),
        "{err}"
    );
    assert!(direct_names(&sim, "services").contains(&"service/web".to_string()));
}

#[test]
fn policy_eval_prints_the_decision_and_rule() {
    let out = exec(Command::new(workspace_bin("mcp-warden-sidecar")).args([
        "policy".as_ref(),
        "eval".as_ref(),
        fixture("policies/example.yaml").as_os_str(),
        "DELETE /api/v1/namespaces/prod/pods/web-0".as_ref(),
        "--service-account".as_ref(),
        "default/mcp-server".as_ref(),
    ]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("decision: approve"), "{stdout}");
    assert!(stdout.contains("deletes-need-a-human"), "{stdout}");
    assert!(stdout.contains("default/mcp-server"), "{stdout}");
}

/// `(file, line, field or cause)` for every `tests/fixtures/policies/bad-*.yaml`.
const BAD: &[(&str, u32, &str)] = &[
    ("bad-action.yaml", 5, "rules[0].action"),
    ("bad-api-group.yaml", 7, "rules[0].apiGroups[0]"),
    ("bad-api-version.yaml", 1, "apiVersion"),
    ("bad-boolean-action.yaml", 5, "rules[0].action"),
    ("bad-default-action.yaml", 3, "defaultAction"),
    ("bad-detector.yaml", 9, "masking.detectors[1]"),
    ("bad-duplicate-key.yaml", 6, "duplicate mapping key: action"),
    ("bad-duplicate-name.yaml", 12, "rules[2].name"),
    ("bad-empty-file.yaml", 1, "the policy is empty"),
    ("bad-empty-rules.yaml", 4, "rules"),
    ("bad-empty-verbs.yaml", 6, "rules[0].verbs"),
    ("bad-glob.yaml", 8, "rules[0].namespaces[0]"),
    ("bad-http-verb-on-resource.yaml", 6, "rules[0].verbs[0]"),
    ("bad-kind.yaml", 2, "kind"),
    ("bad-many-errors.yaml", 3, "mode"),
    ("bad-masking-field.yaml", 11, "masking.rules[0].fieldz"),
    ("bad-missing-name.yaml", 4, "rules[0].name"),
    ("bad-mode.yaml", 3, "mode"),
    ("bad-no-resources.yaml", 4, "rules[0].resources"),
    (
        "bad-non-resource-url.yaml",
        7,
        "rules[0].nonResourceURLs[0]",
    ),
    ("bad-recording-level.yaml", 9, "recording.level"),
    ("bad-regex.yaml", 11, "masking.rules[0].keys"),
    ("bad-resource-and-url.yaml", 8, "rules[0].nonResourceURLs"),
    ("bad-resource.yaml", 7, "rules[0].resources[0]"),
    ("bad-service-account.yaml", 8, "rules[0].serviceAccounts[0]"),
    ("bad-unknown-field.yaml", 7, "rules[0].verb"),
    ("bad-unknown-top-field.yaml", 3, "defaultaction"),
    ("bad-verb-case.yaml", 6, "rules[0].verbs[0]"),
    ("bad-verb.yaml", 6, "rules[0].verbs[1]"),
    ("bad-verbs-not-a-list.yaml", 6, "rules[0].verbs"),
    ("bad-yaml-syntax.yaml", 7, "invalid YAML"),
];

#[test]
fn policy_check_names_line_and_field_of_every_bad_policy() {
    let dir = fixture("policies");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bad-") && n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = BAD.iter().map(|(f, _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every bad fixture needs a row in BAD");
    assert!(BAD.len() >= 15);

    let bin = workspace_bin("mcp-warden-sidecar");
    for (file, line, field) in BAD {
        let path = dir.join(file);
        let out = exec(Command::new(&bin).arg("policy").arg("check").arg(&path));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{file} passed the check: {all}");
        let want = format!("{}:{line}:", path.display());
        assert!(
            all.lines()
                .any(|l| l.starts_with(&want) && l.contains(field)),
            "{file}: no line starting with {want:?} naming {field:?}: {all}"
        );
    }

    // The good example passes.
    let out = exec(
        Command::new(&bin)
            .arg("policy")
            .arg("check")
            .arg(dir.join("example.yaml")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn sidecar_refuses_to_start_with_a_bad_policy_file() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    for bad in ["bad-verb.yaml", "bad-yaml-syntax.yaml"] {
        let path = fixture("policies").join(bad);
        let err = Sidecar::start(&sim, SidecarOptions::default().policy(&path))
            .err()
            .unwrap_or_else(|| panic!("the sidecar started with {bad}"));
        let msg = format!("{err:#}");
        assert!(msg.contains("exited at start"), "{bad}: {msg}");
        assert!(!msg.contains("exit status: 0"), "{bad}: {msg}");
        assert!(msg.contains("--policy-file"), "{bad}: {msg}");
        assert!(msg.contains(bad), "{bad}: {msg}");
    }
}

/// A ConfigMap volume as the kubelet writes it: `..<timestamp>/policy.yaml`,
/// `..data -> ..<timestamp>` (swapped atomically by a rename) and
/// `policy.yaml -> ..data/policy.yaml`.
struct KubeletVolume {
    dir: tempfile::TempDir,
    current: Option<PathBuf>,
    serial: u32,
}

impl KubeletVolume {
    fn new(content: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("configmap-")
            .tempdir()
            .unwrap();
        let mut v = KubeletVolume {
            dir,
            current: None,
            serial: 0,
        };
        v.update(content);
        std::os::unix::fs::symlink("..data/policy.yaml", v.file()).unwrap();
        v
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    /// Writes a new timestamped dir, swaps `..data` to it with a rename, and
    /// removes the old dir, in the kubelet's order.
    fn update(&mut self, content: &str) {
        self.serial += 1;
        let name = format!("..2026_11_22_00_00_{:02}.{:09}", self.serial, self.serial);
        let ts = self.dir.path().join(&name);
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("policy.yaml"), content).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        if let Some(old) = self.current.replace(ts) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

/// The value of one sample line of `/metrics`.
fn metric(sidecar: &Sidecar, series: &str) -> Option<f64> {
    let (code, body) = sidecar.admin_get("/metrics").ok()?;
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

const SECRET_URI: &str = "/api/v1/namespaces/default/secrets/db-credentials";

/// One GET of the Secret: `Ok((status, Status message))`, or `Err` when no
/// HTTP answer came back.
async fn get_secret(c: &kube::Client) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let req = http::Request::get(SECRET_URI)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = c.send(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((code, message))
}

#[test]
fn reload_under_load_swaps_valid_policies_and_never_takes_invalid_ones() {
    // A allows the Secret, B denies it; invalid versions would change the
    // decision if any part of them took effect.
    let allow = format!("{HEADER}{BASE_RULES}");
    let deny = format!(
        "{allow}  - name: no-secrets\n    action: deny\n    verbs: [\"*\"]\n    resources: [secrets]\n    message: secrets are off limits\n"
    );
    let invalid_allow = allow.replace("    verbs: [get, list, watch]\n", "    verb: [get]\n");
    let invalid_deny = format!(
        "{allow}  - name: invalid-deny\n    action: deny\n    verbs: [fetch]\n    resources: [secrets]\n"
    );
    let invalid_deny_glob = format!(
        "{allow}  - name: invalid-deny\n    action: deny\n    verbs: [\"*\"]\n    resources: [secrets]\n    namespaces: [\"def[ault\"]\n"
    );
    let invalid_yaml = format!("{allow}  - name: [unclosed\n");
    // (content, Some(expected status) for a valid one / None for an invalid one, field named by the error)
    let steps: Vec<(String, Option<u16>, &str)> = vec![
        (deny.clone(), Some(403), ""),
        (invalid_allow, None, "rules[0].verb"),
        (allow.clone(), Some(200), ""),
        (invalid_deny, None, "rules[4].verbs[0]"),
        (deny.clone(), Some(403), ""),
        (invalid_yaml, None, "invalid YAML"),
        (allow.clone(), Some(200), ""),
        (invalid_deny_glob, None, "rules[4].namespaces[0]"),
        (deny, Some(403), ""),
        (String::new(), None, "the policy is empty"),
    ];

    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let mut volume = KubeletVolume::new(&allow);
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().policy(volume.file())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(kube_client(&sidecar.kubeconfig_path()));
    let probe = || rt.block_on(get_secret(&client)).unwrap();
    assert_eq!(probe().0, 200);

    // The load: one bounded stream of requests for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        rt.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) && results.len() < 100_000 {
                assert!(Instant::now() < deadline, "the load ran out of time");
                results.push(get_secret(&client).await);
            }
            results
        })
    };

    let mut current = 200;
    let mut refused = 0.0;
    for (i, (content, expect, field)) in steps.iter().enumerate() {
        volume.update(content);
        match expect {
            Some(code) => {
                // The 2 s reload contract, polled.
                wait_for(
                    &format!("swap {i}: the decision to become {code}"),
                    Duration::from_secs(2),
                    || (probe().0 == *code).then_some(()),
                )
                .unwrap_or_else(|e| panic!("{e}: {}", sidecar.log()));
                current = *code;
                let (code, body) = sidecar.admin_get("/readyz").unwrap();
                assert_eq!(code, 200, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["checks"]["policy"], "ok", "{body}");
            }
            None => {
                refused += 1.0;
                wait_for(
                    &format!("swap {i}: the refusal to be counted"),
                    Duration::from_secs(10),
                    || {
                        (metric(
                            &sidecar,
                            "mcp_warden_policy_reloads_total{result=\"error\"}",
                        ) == Some(refused))
                        .then_some(())
                    },
                )
                .unwrap_or_else(|e| panic!("{e}: {}", sidecar.log()));
                let (code, body) = sidecar.admin_get("/readyz").unwrap();
                assert_eq!(code, 200, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                let warning = v["checks"]["policy"]["warning"].as_str().unwrap_or("");
                assert!(
                    warning.contains("refused") && warning.contains(field),
                    "swap {i}: {body}"
                );
                for _ in 0..5 {
                    assert_eq!(
                        probe().0,
                        current,
                        "swap {i}: an invalid policy took effect"
                    );
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let results = rt.block_on(load).unwrap();

    let mut seen = (0, 0);
    for (n, r) in results.iter().enumerate() {
        match r {
            Ok((200, _)) => seen.0 += 1,
            Ok((403, msg))
                if msg.contains("no-secrets") && msg.contains("secrets are off limits") =>
            {
                seen.1 += 1
            }
            other => panic!("request {n} of the load: {other:?}"),
        }
    }
    eprintln!("load: {} requests, {seen:?} (200, 403)", results.len());
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "the load saw only one policy: {seen:?}"
    );
    assert_eq!(
        metric(&sidecar, "mcp_warden_policy_reloads_total{result=\"ok\"}"),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &sidecar,
            "mcp_warden_policy_reloads_total{result=\"error\"}"
        ),
        Some(5.0)
    );
    // The policy in effect is the last valid one, by its hash (the first 12
    // hex digits of the file's SHA-256), and only it is exposed.
    let hash = policy_hash(steps[8].0.as_bytes());
    let (_, body) = sidecar.admin_get("/metrics").unwrap();
    let info: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("mcp_warden_policy_info{"))
        .collect();
    let want =
        format!("mcp_warden_policy_info{{hash=\"{hash}\",source=\"file\",mode=\"enforce\"}} 1");
    assert_eq!(info, vec![want.as_str()], "{body}");
}

/// The short policy hash: the first 12 hex digits of the file's SHA-256.
fn policy_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..12].to_string()
}

#[test]
fn every_bad_policy_is_refused_by_a_running_sidecar() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let good = format!(
        "{HEADER}{BASE_RULES}  - name: no-secrets\n    action: deny\n    verbs: [\"*\"]\n    resources: [secrets]\n"
    );
    let mut volume = KubeletVolume::new(&good);
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().policy(volume.file())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(kube_client(&sidecar.kubeconfig_path()));
    let probe = || rt.block_on(get_secret(&client)).unwrap();
    let before = probe();
    assert_eq!(before.0, 403);
    assert!(before.1.contains("no-secrets"), "{before:?}");

    for (n, (file, _, field)) in BAD.iter().enumerate() {
        let content = std::fs::read_to_string(fixture("policies").join(file)).unwrap();
        volume.update(&content);
        let refused = (n + 1) as f64;
        wait_for(
            &format!("{file} to be refused"),
            // Generous: the 2-core CI machine is busy with other tests.
            Duration::from_secs(30),
            || {
                (metric(
                    &sidecar,
                    "mcp_warden_policy_reloads_total{result=\"error\"}",
                ) == Some(refused))
                .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {}", sidecar.log()));
        let (code, body) = sidecar.admin_get("/readyz").unwrap();
        assert_eq!(code, 200, "{file}: {body}");
        assert!(
            body.contains(field),
            "{file}: /readyz does not name {field:?}: {body}"
        );
        assert_eq!(probe(), before, "{file} took effect");
    }
    assert_eq!(
        metric(&sidecar, "mcp_warden_policy_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );
}

#[test]
fn the_example_configmap_is_a_valid_policy_that_works() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/policy.yaml");
    let cm: Value = serde_saphyr::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "mcp-warden-policy");
    let (_dir, path) = policy_file(cm["data"]["policy.yaml"].as_str().unwrap());

    let out = exec(
        Command::new(workspace_bin("mcp-warden-sidecar"))
            .arg("policy")
            .arg("check")
            .arg(&path),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().policy(&path)).unwrap();
    let out = run_ok(sidecar.kubectl("1.32").args(["get", "pods", "-o", "name"])).unwrap();
    assert!(out.contains("pod/web-0"), "{out}");
    let out = exec(
        sidecar
            .kubectl("1.32")
            .args(["get", "secret", "db-credentials"]),
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("Error from server (Forbidden):")
            && err.contains("no-secrets"),
        "{err}"
    );
}
