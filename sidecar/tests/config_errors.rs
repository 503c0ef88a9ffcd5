//! The binary refuses bad configuration with a non-zero exit and a message
//! naming the setting (flag and environment twin), before touching anything.

use std::process::Command;

fn sidecar() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-warden-sidecar"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MCP_WARDEN_") || k.starts_with("KUBERNETES_SERVICE_") {
            c.env_remove(k);
        }
    }
    c
}

fn fails_naming(cmd: &mut Command, setting: &str) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for {setting}: {stderr}");
    assert!(stderr.contains(setting), "message does not name {setting}: {stderr}");
}

#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let local_s = local.to_str().unwrap();
    let base = ["--local-dir", local_s, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];

    // No upstream and no in-cluster environment.
    fails_naming(sidecar().args(base), "--upstream (MCP_WARDEN_UPSTREAM)");
    // The env twin is read and validated the same way.
    fails_naming(sidecar().args(base).env("MCP_WARDEN_UPSTREAM", "ftp://x:1"), "--upstream (MCP_WARDEN_UPSTREAM)");
    fails_naming(
        sidecar().args(base).args(["--upstream", "http://10.1.2.3:6443"]),
        "--upstream (MCP_WARDEN_UPSTREAM)",
    );
    fails_naming(
        sidecar().args(base).args(["--upstream", "https://h:1", "--collector-url", "http://collector.example/x"]),
        "--collector-url (MCP_WARDEN_COLLECTOR_URL)",
    );
    fails_naming(
        sidecar().args(base).args(["--upstream", "https://h:1"]).env("MCP_WARDEN_SHUTDOWN_GRACE", "soon"),
        "--shutdown-grace (MCP_WARDEN_SHUTDOWN_GRACE)",
    );
    fails_naming(
        sidecar().args(base).args(["--upstream", "https://h:1", "--log-format", "xml"]),
        "--log-format",
    );
    // A CA file that does not exist is found at start.
    let missing = dir.path().join("missing-ca.crt");
    fails_naming(
        sidecar().args(base).args(["--upstream", "https://127.0.0.1:1", "--upstream-ca-file", missing.to_str().unwrap()]),
        "--upstream-ca-file (MCP_WARDEN_UPSTREAM_CA_FILE)",
    );
    assert!(!local.exists(), "a refused configuration wrote the local files");
    // A listen address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    fails_naming(
        sidecar().args(["--local-dir", local_s, "--admin-listen", "127.0.0.1:0", "--listen", &addr, "--upstream", "https://h:1"]),
        "--listen (MCP_WARDEN_LISTEN)",
    );
}

#[test]
fn help_lists_every_env_twin() {
    let out = sidecar().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "listen",
        "admin-listen",
        "upstream",
        "upstream-ca-file",
        "upstream-token-file",
        "local-dir",
        "policy-file",
        "collector-url",
        "collector-format",
        "collector-ca-file",
        "collector-token-file",
        "spool-dir",
        "spool-max-bytes",
        "on-recording-failure",
        "pod-name",
        "pod-namespace",
        "app-uid",
        "cluster-name",
        "shutdown-grace",
        "log-format",
    ] {
        let env = format!("MCP_WARDEN_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&format!("--{flag} ")), "--{flag} missing from help");
        assert!(help.contains(&format!("[env: {env}")), "{env} missing from help");
    }
}
