//! The official Python `kubernetes` client against kube-apisim: list (with
//! selectors and pagination), watch with timeout_seconds, create/read/patch/
//! delete with error statuses, and reading a Secret's base64 data.
//!
//! Needs `pip install kubernetes` (scripts/test.sh does it) and
//! `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)]

use mcp_warden_tests::harness::{self, ApiSim, ApiSimOptions};
use serde_json::{Value, json};

fn run(script_cmd: &str) -> Value {
    harness::require_python_kubernetes().expect("Python kubernetes client");
    let sim = ApiSim::start(ApiSimOptions::demo()).expect("start kube-apisim");
    let out = harness::run(
        sim.python("apisim_client.py").arg(script_cmd),
        harness::COMMAND_TIMEOUT,
    )
    .expect("run python");
    assert!(
        out.status.success(),
        "apisim_client.py {script_cmd} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sim.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    serde_json::from_slice(&out.stdout).expect("script prints JSON")
}

#[test]
fn python_list_with_selectors_and_pages() {
    let v = run("list");
    assert_eq!(v["pods"], json!(["db-0", "web-0", "web-1"]));
    assert_eq!(v["phases"], json!(["Running"]));
    assert_eq!(v["selected"], json!(["web-0", "web-1"]));
    assert_eq!(
        v["all_namespaces"],
        json!([
            "default/db-0",
            "default/web-0",
            "default/web-1",
            "prod/api-0"
        ])
    );
    assert_eq!(v["page1"], json!(["db-0"]));
    assert_eq!(v["remaining"], 2);
    assert_eq!(v["page2"], json!(["web-0", "web-1"]));
    assert_eq!(v["deployments"], json!(["web"]));
    assert!(
        v["resource_version"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
}

#[test]
fn python_watch_with_timeout_sees_existing_and_new_objects() {
    let v = run("watch");
    assert_eq!(
        v["events"],
        json!([
            ["ADDED", "app-config"],
            ["ADDED", "kube-root-ca.crt"],
            ["ADDED", "py-watched"]
        ])
    );
    // The server ends the watch at timeout_seconds (4 s); bounded, not timed.
    assert!(v["elapsed"].as_f64().unwrap() < 30.0);
}

#[test]
fn python_create_read_patch_delete() {
    let v = run("crud");
    assert!(!v["created_uid"].as_str().unwrap().is_empty());
    assert_eq!(v["read_data"], json!({"greeting": "hello"}));
    assert_eq!(v["read_labels"], json!({"made-by": "python"}));
    assert_eq!(
        v["patched_data"],
        json!({"greeting": "hello", "extra": "1"})
    );
    assert_eq!(v["duplicate"], json!([409, "AlreadyExists"]));
    assert_eq!(v["deleted_status"], "Success");
    assert_eq!(v["after_delete"], json!([404, "NotFound"]));
    assert!(v["pod_name"].as_str().unwrap().starts_with("py-pod-"));
    assert_eq!(v["pod_phase"], "Running");
}

#[test]
fn python_reads_and_decodes_a_secret() {
    let v = run("secret");
    assert_eq!(v["type"], "Opaque");
    assert_eq!(
        v["decoded"],
        json!({"username": "admin", "password": "s3cr3t-password"})
    );
}
