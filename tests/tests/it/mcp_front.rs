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
        let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
        Stack::start_on(dir, sim, policy_text, extra, None)
    }

    /// On `sim`, the sidecar reading its upstream token from `token_file`
    /// (else the harness's default).
    fn start_on(
        dir: tempfile::TempDir,
        sim: ApiSim,
        policy_text: &str,
        extra: Vec<String>,
        token_file: Option<std::path::PathBuf>,
    ) -> Stack {
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, policy_text).unwrap();
        let collector = Collector::start().unwrap();
        let server_port = free_port().unwrap();
        let front: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let mut opts = SidecarOptions::default()
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
            );
        opts.upstream_token_file = token_file;
        let sidecar = Sidecar::start(&sim, opts).unwrap();
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

const APPROVE_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: read-everything
    action: allow
    verbs: [get, list, watch]
    resources: ["*"]
    namespaces: ["*"]
  - name: pod-deletes
    action: allow
    verbs: [delete]
    resources: [pods]
    namespaces: [default]
  - name: tool-deletes-need-a-human
    action: approve
    tools: [pods_delete]
    message: a person decides on pod deletes
"#;

/// For the webhook's AccessRequest configuration on kube-apisim.
const WEBHOOK_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: mutatingwebhookconfigurations.admissionregistration.k8s.io
spec:
  group: admissionregistration.k8s.io
  scope: Cluster
  names: {plural: mutatingwebhookconfigurations, singular: mutatingwebhookconfiguration, kind: MutatingWebhookConfiguration}
  versions:
    - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
"#;

fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An `approve` tool rule holds `pods_delete` with the approvals flow
/// (AccessRequests on kube-apisim, decided with the `kubectl-mcp_warden`
/// plugin through the admission webhook): the approved call reaches the
/// real MCP server (the pod is deleted), its event names the approver and
/// the AccessRequest, which is then Used; the denied one is a JSON-RPC
/// error naming the rule and the denier, and the pod stays.
#[test]
fn mcp_front_holds_an_approve_tool_rule_for_a_person() {
    use mcp_warden_tests::harness::{fixture, workspace_bin, write_kubeconfig};
    use mcp_warden_tests::stack::{Webhook, WebhookOptions};
    const LIMIT: Duration = Duration::from_secs(60);

    let dir = tempfile::tempdir().unwrap();
    let crd = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/crds/accessrequests.yaml"),
    )
    .unwrap();
    let demo = std::fs::read_to_string(fixture("seed-demo.yaml")).unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, format!("{demo}\n---\n{WEBHOOK_CRD}---\n{crd}")).unwrap();
    let sim = ApiSim::start(ApiSimOptions {
        seed: Some(seed),
        version: Some("v1.32.3".into()),
        extra_users: vec!["alice=alice-token".into(), "bob=bob-token".into()],
        ..Default::default()
    })
    .unwrap();
    let webhook = Webhook::start(WebhookOptions {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let cfg = dir.path().join("mwc.yaml");
    std::fs::write(&cfg, webhook.accessrequest_mutating_config()).unwrap();
    succeeded(&run(sim.kubectl("32").args(["apply", "-f"]).arg(&cfg), LIMIT).unwrap());
    // The sidecar runs with the pod's service-account token: the requester.
    let token = succeeded(
        &run(
            sim.kubectl("32")
                .args(["create", "token", "default", "-n", "default"]),
            LIMIT,
        )
        .unwrap(),
    );
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let kubeconfig = |user: &str| {
        let path = dir.path().join(format!("{user}.kubeconfig"));
        write_kubeconfig(&path, &sim.url(), &sim.ca_path(), &format!("{user}-token")).unwrap();
        path
    };
    let (alice, bob) = (kubeconfig("alice"), kubeconfig("bob"));
    let plugin = |kubeconfig: &std::path::Path, args: &[&str]| {
        succeeded(
            &run(
                Command::new(workspace_bin("kubectl-mcp_warden"))
                    .env("KUBECONFIG", kubeconfig)
                    .args(args),
                LIMIT,
            )
            .unwrap(),
        )
    };
    let stack_dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_on(
        stack_dir,
        sim,
        APPROVE_POLICY,
        vec!["--approval-timeout".into(), "50s".into()],
        Some(token_file),
    );
    let access_requests = || -> Vec<Value> {
        let out = run(
            stack
                ._sim
                .kubectl("32")
                .args(["get", "accessrequests", "-n", "default", "-o", "json"]),
            LIMIT,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["items"].as_array().cloned().unwrap_or_default()
    };
    let pending = |not: Option<&str>| -> Value {
        wait_for("a pending AccessRequest", Duration::from_secs(40), || {
            access_requests().into_iter().find(|a| {
                a["status"]["state"] == "Pending" && a["metadata"]["name"].as_str() != not
            })
        })
        .unwrap_or_else(|e| panic!("{e}: {}", stack.sidecar.log()))
    };
    let pod_exists = |name: &str| {
        run(
            stack
                ._sim
                .kubectl("32")
                .args(["get", "pod", name, "-n", "default"]),
            LIMIT,
        )
        .unwrap()
        .status
        .success()
    };

    let calls = r#"[
 {"tool": "pods_delete", "arguments": {"namespace": "default", "name": "web-0"}},
 {"tool": "pods_delete", "arguments": {"namespace": "default", "name": "web-1"}}
]"#;
    let agent = std::thread::scope(|s| {
        let agent = s.spawn(|| stack.agent("http", "/mcp", calls));
        // The first call waits for a person: its AccessRequest says what.
        let first = pending(None);
        let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
        let spec = &first["spec"];
        assert_eq!(spec["verb"], "tools/call", "{first:#}");
        assert_eq!(spec["resource"], "tools", "{first:#}");
        assert_eq!(spec["name"], "pods_delete", "{first:#}");
        assert_eq!(spec["rule"], "tool-deletes-need-a-human", "{first:#}");
        assert_eq!(
            spec["message"], "a person decides on pod deletes",
            "{first:#}"
        );
        assert_eq!(
            spec["requester"]["serviceAccount"], "system:serviceaccount:default:default",
            "{first:#}"
        );
        let summary = spec["summary"].as_str().unwrap();
        assert!(
            summary.starts_with(
                r#"call tool pods_delete {"namespace":"default","name":"web-0"} (session "#
            ),
            "{summary}"
        );
        assert!(
            spec["expiresAt"].as_str().is_some_and(|t| !t.is_empty()),
            "{first:#}"
        );
        assert!(spec.get("namespace").is_none(), "{first:#}");
        assert!(pod_exists("web-0"), "the held call went through");
        assert!(!agent.is_finished(), "the call was not held");
        let out = plugin(&alice, &["approve", &first_name, "-n", "default"]);
        assert!(out.contains("decidedBy: alice"), "{out}");

        // The second: denied.
        let second = pending(Some(&first_name));
        let second_name = second["metadata"]["name"].as_str().unwrap().to_string();
        assert!(
            second["spec"]["summary"]
                .as_str()
                .unwrap()
                .contains("web-1"),
            "{second:#}"
        );
        plugin(
            &bob,
            &[
                "deny",
                &second_name,
                "-n",
                "default",
                "--reason",
                "not today",
            ],
        );
        let agent = agent.join().unwrap();
        (agent, first_name, second_name)
    });
    let (agent, first_name, second_name) = agent;
    let results = agent["calls"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{agent:#}");
    assert_eq!(results[0]["isError"], false, "{agent:#}");
    assert!(
        !pod_exists("web-0"),
        "the approved call did not delete web-0"
    );
    let err = &results[1]["error"];
    assert_eq!(err["code"], -32001, "{agent:#}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("tool-deletes-need-a-human"), "{msg}");
    assert!(msg.contains("denied by bob"), "{msg}");
    assert!(msg.contains("not today"), "{msg}");
    assert!(msg.contains(&second_name), "{msg}");
    assert!(pod_exists("web-1"), "the denied call went through");

    let state = |name: &str| {
        access_requests()
            .into_iter()
            .find(|a| a["metadata"]["name"] == name)
            .map(|a| a["status"]["state"].clone())
    };
    assert_eq!(state(&first_name), Some(Value::from("Used")));
    assert_eq!(state(&second_name), Some(Value::from("Denied")));

    // The recording: the approved call names its approver and AccessRequest.
    let events = stack.events_with_tool_calls(2);
    let deletes: Vec<&Value> = events
        .iter()
        .filter(|e| {
            ann(e, contract::ANN_EVENT_KIND) == Some("tool-call")
                && ann(e, contract::ANN_TOOL) == Some("pods_delete")
        })
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:#?}");
    let approved = deletes
        .iter()
        .find(|e| e["requestObject"]["arguments"]["name"] == "web-0")
        .unwrap();
    assert_eq!(
        ann(approved, "mcp-warden.io/decision"),
        Some("approve"),
        "{approved:#}"
    );
    assert_eq!(
        ann(approved, contract::ANN_APPROVED_BY),
        Some("alice"),
        "{approved:#}"
    );
    assert_eq!(
        ann(approved, contract::ANN_ACCESS_REQUEST),
        Some(format!("default/{first_name}").as_str()),
        "{approved:#}"
    );
    assert_eq!(
        ann(approved, contract::ANN_TOOL_OUTCOME),
        Some("result"),
        "{approved:#}"
    );
    let denied = deletes
        .iter()
        .find(|e| e["requestObject"]["arguments"]["name"] == "web-1")
        .unwrap();
    assert_eq!(
        ann(denied, contract::ANN_TOOL_OUTCOME),
        Some("refused"),
        "{denied:#}"
    );
    assert_eq!(ann(denied, contract::ANN_APPROVED_BY), None, "{denied:#}");
    // The API request the approved call made is linked to it.
    let api_delete = events
        .iter()
        .find(|e| {
            e["verb"] == "delete"
                && e["stage"] == "ResponseComplete"
                && e["objectRef"]["name"] == "web-0"
        })
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(
        ann(api_delete, contract::ANN_TOOL_CALL),
        approved["auditID"].as_str(),
        "{api_delete:#}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["verb"] == "delete" && e["objectRef"]["name"] == "web-1"),
        "the denied call reached the API"
    );
}
