//! The sidecar's MCP front with the real kubernetes-mcp-server behind it,
//! driven over streamable HTTP by the official MCP SDK (`mcp_agent.py`):
//! kube-apisim ← sidecar (API proxy) ← kubernetes-mcp-server ← sidecar (MCP
//! front, `--mcp-upstream`) ← agent; the collector gets both streams.
//!
//! Asserted: every tool call is an event of its own (tool, masked
//! arguments, outcome); a tool a `tools:` rule denies is answered with a
//! JSON-RPC error naming the rule and never reaches the server (no API
//! request, the pod still there); the API requests of a call made alone
//! name that call; those made while two calls were in flight list both as
//! candidates and name neither as the cause.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcp_warden_shared::contract;
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, python_script, run, wait_for};
use mcp_warden_tests::simpod::mcp_server_dir;
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions, free_port};
use serde_json::Value;

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: read-everything
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
    namespaces: ["*"]
  - name: exec-in-default
    action: allow
    verbs: [create, get]
    resources: [pods/exec]
    namespaces: [default]
  - name: no-pod-deletes-by-tool
    action: deny
    tools: [pods_delete]
    message: deleting pods is for humans
"#;

/// A call alone, a denied call, then two at once: a slow exec (the
/// apisim's `sleep`) and, a second into it, a list.
const CALLS: &str = r#"[
 {"tool": "pods_list_in_namespace", "arguments": {"namespace": "default"}},
 {"tool": "pods_delete", "arguments": {"namespace": "default", "name": "web-0"}},
 {"concurrent": [
   {"tool": "pods_exec", "arguments": {"namespace": "default", "name": "web-0", "command": ["sleep", "8"]}},
   {"tool": "pods_list_in_namespace", "arguments": {"namespace": "default", "labelSelector": "app=web"}, "delay": 1.5}
 ]}
]"#;

struct McpServer(Child);

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ann<'a>(e: &'a Value, key: &str) -> Option<&'a str> {
    e["annotations"][key].as_str()
}

/// kube-apisim, the collector, the sidecar with its MCP front, and the real
/// MCP server behind it.
struct Stack {
    dir: tempfile::TempDir,
    _sim: ApiSim,
    collector: Collector,
    sidecar: Sidecar,
    _server: McpServer,
    front: SocketAddr,
}

impl Stack {
    fn start() -> Stack {
        Stack::start_with(POLICY, Vec::new())
    }

    /// With `policy` and further sidecar flags (an issuer's `--oidc-*`).
    fn start_with(policy_text: &str, extra: Vec<String>) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, policy_text).unwrap();
        let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
        let collector = Collector::start().unwrap();
        let server_port = free_port().unwrap();
        let front: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let sidecar = Sidecar::start(
            &sim,
            SidecarOptions::default()
                .policy(&policy)
                .collector(&collector)
                .args(
                    [
                        "--mcp-upstream".to_string(),
                        format!("127.0.0.1:{server_port}"),
                        "--mcp-listen".to_string(),
                        front.to_string(),
                    ]
                    .into_iter()
                    .chain(extra),
                ),
        )
        .unwrap();
        // The MCP server reaches the API through the sidecar, with the
        // app's kubeconfig (local CA, local token).
        let log = std::fs::File::create(dir.path().join("mcp-server.log")).unwrap();
        let server = McpServer(
            Command::new(mcp_server_dir().join("kubernetes-mcp-server"))
                .args(["--kubeconfig"])
                .arg(sidecar.kubeconfig_path())
                .args([
                    "--port",
                    &server_port.to_string(),
                    "--bind-address",
                    "127.0.0.1",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let stack = Stack {
            dir,
            _sim: sim,
            collector,
            sidecar,
            _server: server,
            front,
        };
        wait_for("the MCP server's port", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", server_port))
                .ok()
                .map(|_| ())
        })
        .unwrap_or_else(|e| panic!("{e}: {}", stack.server_log()));
        stack
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mcp-server.log")).unwrap_or_default()
    }

    /// Runs the agent over `transport` (`http`: streamable HTTP) to `path`
    /// of the front; its JSON output.
    fn agent(&self, transport: &str, path: &str, calls: &str) -> Value {
        self.agent_as(None, transport, path, calls)
    }

    /// [`Stack::agent`] sending `bearer` as its `Authorization`.
    fn agent_as(&self, bearer: Option<&str>, transport: &str, path: &str, calls: &str) -> Value {
        let file = self.dir.path().join("calls.json");
        std::fs::write(&file, calls).unwrap();
        let mut cmd = Command::new("python3");
        if let Some(b) = bearer {
            cmd.env("MCP_AGENT_BEARER", b);
        }
        let out = run(
            cmd.arg(python_script("mcp_agent.py"))
                .arg(transport)
                .arg(&file)
                .arg(format!("http://{}{path}", self.front)),
            Duration::from_secs(180),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "agent failed: {}\n{}\nserver: {}\nsidecar: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log(),
            self.sidecar.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The collector's events once `n` tool call events are there.
    fn events_with_tool_calls(&self, n: usize) -> Vec<Value> {
        wait_for("the tool call events", Duration::from_secs(30), || {
            let ev = self.collector.events();
            let calls = ev
                .iter()
                .filter(|e| ann(e, contract::ANN_EVENT_KIND) == Some("tool-call"))
                .count();
            (calls >= n).then_some(ev)
        })
        .unwrap_or_else(|e| panic!("{e}: {:#?}", self.collector.events()))
    }
}

#[test]
fn mcp_front_records_tool_calls_denies_by_rule_and_links_api_requests() {
    let stack = Stack::start();
    let agent = stack.agent("http", "/mcp", CALLS);
    let results = agent["calls"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{agent:#}");
    // The calls that ran worked.
    assert_eq!(results[0]["isError"], false, "{agent:#}");
    assert!(
        results[0]["text"].as_str().unwrap().contains("web-0"),
        "{agent:#}"
    );
    // The denied call: a JSON-RPC error naming the rule and its message.
    let err = &results[1]["error"];
    assert_eq!(err["code"], -32001, "{agent:#}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("no-pod-deletes-by-tool"), "{msg}");
    assert!(msg.contains("deleting pods is for humans"), "{msg}");
    assert_eq!(results[2]["isError"], false, "{agent:#}");
    assert_eq!(results[3]["isError"], false, "{agent:#}");

    // The recording: tool calls as events of their own, API requests linked.
    let events = stack.events_with_tool_calls(4);
    let tool_events: Vec<&Value> = events
        .iter()
        .filter(|e| ann(e, contract::ANN_EVENT_KIND) == Some("tool-call"))
        .collect();
    assert_eq!(tool_events.len(), 4, "{tool_events:#?}");
    let by_tool = |tool: &str| -> Vec<&Value> {
        tool_events
            .iter()
            .copied()
            .filter(|e| ann(e, contract::ANN_TOOL) == Some(tool))
            .collect()
    };
    for e in &tool_events {
        assert_eq!(e["verb"], "tools/call", "{e:#}");
        assert_eq!(e["stage"], "ResponseComplete");
        assert!(
            ann(e, contract::ANN_MCP_SESSION).is_some_and(|s| !s.is_empty()),
            "{e:#}"
        );
        assert!(e["requestReceivedTimestamp"].as_str() <= e["stageTimestamp"].as_str());
    }
    let lists = by_tool("pods_list_in_namespace");
    assert_eq!(lists.len(), 2);
    let first_list = lists
        .iter()
        .find(|e| {
            e["requestObject"]["arguments"]
                .get("labelSelector")
                .is_none()
        })
        .unwrap();
    let second_list = lists
        .iter()
        .find(|e| e["requestObject"]["arguments"]["labelSelector"] == "app=web")
        .unwrap();
    assert_eq!(
        ann(first_list, contract::ANN_TOOL_OUTCOME),
        Some("result"),
        "{first_list:#}"
    );
    assert_eq!(
        first_list["requestObject"]["arguments"]["namespace"],
        "default"
    );
    assert_eq!(ann(first_list, "mcp-warden.io/decision"), Some("allow"));
    let delete = by_tool("pods_delete");
    let delete = delete[0];
    assert_eq!(
        ann(delete, contract::ANN_TOOL_OUTCOME),
        Some("refused"),
        "{delete:#}"
    );
    assert_eq!(
        ann(delete, "mcp-warden.io/rule"),
        Some("no-pod-deletes-by-tool")
    );
    assert_eq!(delete["responseStatus"]["code"], 403);
    let exec = by_tool("pods_exec");
    let exec = exec[0];
    assert_eq!(
        ann(exec, contract::ANN_TOOL_OUTCOME),
        Some("result"),
        "{exec:#}"
    );

    let id = |e: &Value| e["auditID"].as_str().unwrap().to_string();
    let api: Vec<&Value> = events
        .iter()
        .filter(|e| ann(e, contract::ANN_EVENT_KIND).is_none() && e["stage"] == "ResponseComplete")
        .collect();
    // The denied call never reached the server: no delete at all, web-0 is there.
    assert!(
        !api.iter().any(|e| e["verb"] == "delete"),
        "a delete reached the API: {api:#?}"
    );
    let (code, _) = sidecar_get(&stack.sidecar, "/api/v1/namespaces/default/pods/web-0");
    assert_eq!(code, 200);

    // The first list's API requests name it, and only it.
    let linked_first: Vec<&&Value> = api
        .iter()
        .filter(|e| ann(e, contract::ANN_TOOL_CALL) == Some(id(first_list).as_str()))
        .collect();
    assert!(
        linked_first.iter().any(|e| e["verb"] == "list"
            && e["objectRef"]["resource"] == "pods"
            && e["objectRef"]["namespace"] == "default"),
        "no pod list linked to {}: {api:#?}",
        id(first_list)
    );
    for e in &linked_first {
        assert_eq!(ann(e, contract::ANN_TOOL), Some("pods_list_in_namespace"));
        assert_eq!(
            ann(e, contract::ANN_MCP_SESSION),
            ann(first_list, contract::ANN_MCP_SESSION)
        );
        assert!(ann(e, contract::ANN_TOOL_CALL_CANDIDATES).is_none());
    }
    // The exec began alone: its request names it (or, on a slow machine,
    // lists it among candidates, never another call as certain).
    let exec_req = api
        .iter()
        .find(|e| e["objectRef"]["subresource"] == "exec")
        .unwrap_or_else(|| panic!("no exec request: {api:#?}"));
    match ann(exec_req, contract::ANN_TOOL_CALL) {
        Some(c) => assert_eq!(c, id(exec)),
        None => assert!(
            ann(exec_req, contract::ANN_TOOL_CALL_CANDIDATES)
                .unwrap()
                .contains(&id(exec))
        ),
    }
    // The second list ran while the exec was in flight: its requests list
    // both calls as candidates and name none as the cause.
    let candidates: Vec<&&Value> = api
        .iter()
        .filter(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods")
        .filter(|e| ann(e, contract::ANN_TOOL_CALL_CANDIDATES).is_some())
        .collect();
    assert!(
        !candidates.is_empty(),
        "no request with candidates: {api:#?}"
    );
    for e in candidates {
        assert!(ann(e, contract::ANN_TOOL_CALL).is_none(), "{e:#}");
        let list: Vec<Value> =
            serde_json::from_str(ann(e, contract::ANN_TOOL_CALL_CANDIDATES).unwrap()).unwrap();
        let ids: Vec<&str> = list
            .iter()
            .map(|c| c["toolCall"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&id(exec).as_str()), "{list:?}");
        assert!(ids.contains(&id(second_list).as_str()), "{list:?}");
        assert!(list.iter().all(|c| c["mcpSession"].is_string()));
    }
}

fn sidecar_get(sidecar: &Sidecar, path: &str) -> (u16, String) {
    let out = run(
        sidecar.kubectl("1.32").args(["get", "--raw", path]),
        Duration::from_secs(30),
    )
    .unwrap();
    (
        if out.status.success() { 200 } else { 0 },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The end user of part A on the MCP front: the sidecar binary with a test
/// issuer's `--oidc-*` flags; tool rules with `groups:` judge the caller,
/// and the tool call events and the API requests they cause name them.
#[test]
fn mcp_front_takes_the_caller_from_a_verified_oidc_token() {
    let issuer = mcp_warden_tests::oidc::TestIssuer::start().unwrap();
    let policy = format!(
        "{POLICY}  - name: contractors-list-nothing\n    action: deny\n    tools: [\"pods_list*\"]\n    groups: [\"oidc:contractors\"]\n"
    );
    let stack = Stack::start_with(&policy, issuer.sidecar_args());
    let one_list = r#"[{"tool": "pods_list_in_namespace", "arguments": {"namespace": "default"}}]"#;

    let alice = issuer.token("alice@example.com", &["sre"]).unwrap();
    let agent = stack.agent_as(Some(&alice), "http", "/mcp", one_list);
    assert_eq!(agent["calls"][0]["isError"], false, "{agent:#}");
    let bob = issuer.token("bob@example.com", &["contractors"]).unwrap();
    let agent = stack.agent_as(Some(&bob), "http", "/mcp", one_list);
    let err = &agent["calls"][0]["error"];
    assert_eq!(err["code"], -32001, "{agent:#}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("contractors-list-nothing"),
        "{agent:#}"
    );

    let events = stack.events_with_tool_calls(2);
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| ann(e, contract::ANN_EVENT_KIND) == Some("tool-call"))
        .collect();
    let by_user = |u: &str| -> &Value {
        calls
            .iter()
            .copied()
            .find(|e| e["user"]["username"] == u)
            .unwrap_or_else(|| panic!("no tool call by {u}: {calls:#?}"))
    };
    assert_eq!(
        ann(by_user("alice@example.com"), contract::ANN_TOOL_OUTCOME),
        Some("result")
    );
    assert_eq!(
        by_user("alice@example.com")["user"]["groups"],
        serde_json::json!(["oidc:sre"])
    );
    assert_eq!(
        ann(by_user("bob@example.com"), contract::ANN_TOOL_OUTCOME),
        Some("refused")
    );
    // Alice's list reached the API; its requests name her call and her.
    let linked: Vec<&Value> = events
        .iter()
        .filter(|e| ann(e, contract::ANN_EVENT_KIND).is_none())
        .filter(|e| ann(e, "mcp-warden.io/mcp-user") == Some("alice@example.com"))
        .collect();
    assert!(!linked.is_empty(), "{events:#?}");
    assert!(
        !events.iter().any(
            |e| ann(e, "mcp-warden.io/mcp-user") == Some("bob@example.com")
                && ann(e, contract::ANN_EVENT_KIND).is_none()
        ),
        "bob's refused call made API requests: {events:#?}"
    );
    // No token text anywhere in the recording or the sidecar's log.
    let recorded = serde_json::to_string(&events).unwrap();
    for t in [&alice, &bob] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(!recorded.contains(sig) && !stack.sidecar.log().contains(sig));
    }
    // Without a token, or with a foreign one, the front answers 401.
    let no_token = run(
        Command::new("python3")
            .arg(python_script("mcp_agent.py"))
            .arg("http")
            .arg(stack.dir.path().join("calls.json"))
            .arg(format!("http://{}/mcp", stack.front)),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(!no_token.status.success(), "an anonymous agent got through");
}
