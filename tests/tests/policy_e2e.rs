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

use mcp_warden_shared::audit::{ANN_DECISION, ANN_ENFORCED, ANN_RULE};
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
    let (sim, collector, sidecar, _dir) = stack(&policy("enforce", ""));

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
fn approve_rule_refuses_saying_approval_is_required() {
    let (sim, _collector, sidecar, _dir) = stack(&policy(
        "enforce",
        "  - name: services-need-a-human\n    action: approve\n    verbs: [delete]\n    resources: [services]\n",
    ));
    let out = exec(sidecar.kubectl("1.32").args(["delete", "service", "web"]));
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
    ("bad-masking-field.yaml", 11, "fieldz"),
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
