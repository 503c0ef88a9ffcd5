//! The demo (run by `scripts/demo.sh`, needs root): an AI agent's tool calls
//! through the real `kubernetes-mcp-server`, running as the app container of
//! a simulated pod that `mcp-warden-webhook inject -f` injected, in front of
//! kube-apisim. The MCP client (the official Python SDK) plays the agent.
//! Nothing is configured by hand: the MCP server finds the API server by its
//! in-cluster config alone, and the sidecar runs its embedded default policy
//! (read-only; Secrets and secret-looking env values masked; exec denied).
//! Every request is recorded at a collector in the pod's network.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcp_warden_tests::harness::wait_for;
use mcp_warden_tests::simpod::{MCP_SERVER_DIR, agent_argv, mcp_pod};
use serde_json::Value;

/// What the agent asks for, and why it is in the demo.
const CALLS: &[(&str, &str, &str)] = &[
    (
        "a read: allowed",
        "pods_list_in_namespace",
        r#"{"namespace": "default"}"#,
    ),
    (
        "a Secret: its values masked (still valid base64)",
        "resources_get",
        r#"{"apiVersion": "v1", "kind": "Secret", "namespace": "default", "name": "db-credentials"}"#,
    ),
    (
        "a pod: the env value named DB_PASSWORD masked",
        "pods_get",
        r#"{"namespace": "default", "name": "web-0"}"#,
    ),
    (
        "a delete: denied by the read-only default policy",
        "pods_delete",
        r#"{"namespace": "default", "name": "web-0"}"#,
    ),
    (
        "an exec: denied, the rule named",
        "pods_exec",
        r#"{"namespace": "default", "name": "web-0", "command": ["cat", "/etc/hostname"]}"#,
    ),
];

fn say(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

fn indent(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .take(max_lines)
        .map(|l| format!("      {l}"))
        .collect();
    if lines.len() > max_lines {
        out.push(format!("      … ({} more lines)", lines.len() - max_lines));
    }
    out.join("\n")
}

fn main() -> Result<()> {
    let calls: Vec<Value> = CALLS
        .iter()
        .map(|(_, tool, args)| {
            Ok(serde_json::json!({"tool": tool, "arguments": serde_json::from_str::<Value>(args)?}))
        })
        .collect::<Result<_>>()?;
    say(
        "injecting the MCP server's Deployment (mcp-warden-webhook inject -f) and starting its pod",
    );
    println!(
        "    kube-apisim stands in for the API server; the pod's sidecar holds the only real token;\n    \
         the app container runs kubernetes-mcp-server with --cluster-provider in-cluster"
    );
    let pod = mcp_pod("the demo", &serde_json::to_string(&calls)?);
    let hosts = std::fs::read_to_string(pod.work.path().join("etc-hosts"))?;
    println!("    the app's /etc/hosts (from the injected hostAliases):");
    println!("{}", indent(hosts.trim(), 10));

    say("the agent (MCP SDK, over stdio) calls the server's tools");
    let server = format!("{MCP_SERVER_DIR}/kubernetes-mcp-server");
    let argv = agent_argv(
        &pod,
        &["stdio", "--", &server, "--cluster-provider", "in-cluster"],
    );
    let out = pod.app_run("demo-agent", argv, b"");
    if !out.status.success() {
        bail!(
            "the agent failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            pod.sidecar_log()
        );
    }
    let session: Value =
        serde_json::from_slice(&out.stdout).context("the agent's answer is not JSON")?;
    let tools = session["tools"].as_array().map_or(0, Vec::len);
    println!("    the server offers {tools} tools");
    for (i, (why, tool, args)) in CALLS.iter().enumerate() {
        let call = &session["calls"][i];
        let error = call["isError"] == true;
        println!(
            "\n  \x1b[1m{tool}\x1b[0m {args}\n    ({why}) → {}",
            if error { "tool error" } else { "ok" }
        );
        let text = call["text"].as_str().unwrap_or("");
        // For the pod, the part that matters: its env.
        let shown = match (*tool, text.find("- env:")) {
            ("pods_get", Some(at)) => {
                let env = &text[at..];
                let end = env.find("image:").unwrap_or(env.len());
                format!("…\n{}…", &env[..end])
            }
            _ => text.to_string(),
        };
        println!("{}", indent(&shown, 14));
    }

    say("every API request the tools made was recorded (audit.k8s.io/v1 events at the collector)");
    let events = wait_for("the recording", Duration::from_secs(30), || {
        let evs: Vec<Value> = pod
            .recorded()
            .into_iter()
            .filter(|e| e["stage"] == "ResponseComplete")
            .collect();
        (evs.len() >= CALLS.len()).then_some(evs)
    })?;
    for e in &events {
        let a = &e["annotations"];
        println!(
            "    {:7} {:58} {}  decision={} rule={} masked={}",
            e["verb"].as_str().unwrap_or(""),
            e["requestURI"].as_str().unwrap_or(""),
            e["responseStatus"]["code"],
            a["mcp-warden.io/decision"].as_str().unwrap_or(""),
            a["mcp-warden.io/rule"].as_str().unwrap_or(""),
            a["mcp-warden.io/masked"].as_str().unwrap_or("0"),
        );
    }
    let (code, _) = pod.admin_get("/api/v1/namespaces/default/pods/web-0");
    say(&format!(
        "the cluster as it really is: pod web-0 still exists (HTTP {code} for the admin)"
    ));
    Ok(())
}
