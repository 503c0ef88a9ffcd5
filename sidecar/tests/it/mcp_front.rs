//! The MCP front in process, with a test verifier of end-user bearer tokens
//! and a scripted MCP server behind it (the real kubernetes-mcp-server runs
//! in `tests/tests/it/mcp_front.rs`): 401s without or with a rejected
//! bearer; the verified user on the tool call event and on the links of API
//! requests made while it is in flight; an answer read from an event stream
//! as it passes; a denied tool never reaching the server; the older SSE
//! transport (answers on the GET stream, session from its `endpoint` event).

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_warden_shared::audit::Event;
use mcp_warden_shared::contract;
use mcp_warden_shared::enduser::EndUser;
use mcp_warden_shared::identity::Identity;
use mcp_warden_sidecar::enduser::{Rejection, VerifyBearer};
use mcp_warden_sidecar::hooks::{ProxyBody, full};
use mcp_warden_sidecar::mcp::{McpFront, PolicySource, ToolCalls};
use mcp_warden_sidecar::policy_store::PolicyStore;
use mcp_warden_sidecar::recording::{CollectorFormat, Recorder, RecordingConfig};
use mcp_warden_tests::collector::{self, CollectorConfig};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// Accepts `alice-token` as alice; refuses everything else as expired.
struct TestVerifier;

impl VerifyBearer for TestVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<EndUser, Rejection>> {
        Box::pin(async move {
            if token == "alice-token" {
                Ok(EndUser {
                    username: "alice@example.com".into(),
                    groups: vec!["dev".into()],
                    issuer: "https://issuer.test".into(),
                    subject: "alice".into(),
                })
            } else {
                Err("the token has expired".into())
            }
        })
    }
}

/// The scripted MCP server: what it was asked, a gate for the slow tool,
/// and the open event stream of the SSE transport.
#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<String>>,
    release: Notify,
    sse: Mutex<Option<mpsc::Sender<Bytes>>>,
}

type FakeBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn sse_body(rx: mpsc::Receiver<Bytes>) -> FakeBody {
    let s = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    StreamBody::new(s).boxed()
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

async fn fake(state: Arc<Fake>, req: Request<Incoming>) -> Result<Response<FakeBody>, Infallible> {
    let path = req.uri().to_string();
    let method = req.method().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state
        .seen
        .lock()
        .unwrap()
        .push(format!("{method} {path} {msg}"));
    if method == http::Method::GET && path == "/sse" {
        let (tx, rx) = mpsc::channel(8);
        tx.send(Bytes::from(
            "event: endpoint\ndata: /messages?sessionId=legacy-1\n\n",
        ))
        .await
        .unwrap();
        *state.sse.lock().unwrap() = Some(tx);
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(sse_body(rx))
            .unwrap());
    }
    let id = msg["id"].clone();
    let tool = msg["params"]["name"].as_str().unwrap_or("").to_string();
    if path.starts_with("/messages") {
        // The SSE transport: accepted here, answered on the GET stream.
        let tx = state.sse.lock().unwrap().clone().unwrap();
        tokio::spawn(async move {
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "ok"}]}});
            tx.send(event(&answer)).await.unwrap();
        });
        return Ok(Response::builder()
            .status(202)
            .body(http_body_util::Empty::new().boxed())
            .unwrap());
    }
    if tool == "slow" {
        // An event stream: a notification at once, the answer when released.
        let (tx, rx) = mpsc::channel(8);
        let st = state.clone();
        tokio::spawn(async move {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
            tx.send(event(&note)).await.unwrap();
            st.release.notified().await;
            let answer =
                json!({"jsonrpc": "2.0", "id": id, "result": {"content": [], "isError": true}});
            // Split mid-event, as a network would.
            let b = event(&answer);
            tx.send(b.slice(..10)).await.unwrap();
            tx.send(b.slice(10..)).await.unwrap();
        });
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("mcp-session-id", "s-1")
            .body(sse_body(rx))
            .unwrap());
    }
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(answer.to_string())).boxed())
        .unwrap())
}

async fn start_fake(state: Arc<Fake>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let st = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| fake(st.clone(), r));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

const POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: no-danger
    action: deny
    tools: ["danger_*"]
"#;

fn call(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
        .to_string()
}

fn post(
    path: &str,
    bearer: Option<&str>,
    session: Option<&str>,
    body: String,
) -> Request<ProxyBody> {
    let mut b = Request::post(path)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    b.body(full(body)).unwrap()
}

async fn json_of(r: Response<ProxyBody>) -> Value {
    let b = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&b).unwrap()
}

async fn tool_events(out: &std::path::Path, n: usize) -> Vec<Event> {
    for _ in 0..200 {
        let ev: Vec<Event> = collector::read_events(out)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e.annotations
                    .get(contract::ANN_EVENT_KIND)
                    .map(String::as_str)
                    == Some("tool-call")
            })
            .collect();
        if ev.len() >= n {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} tool call events reached the collector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_front_authenticates_records_users_and_reads_both_transports() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let caddr = listener.local_addr().unwrap();
    let (cstop, crx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(collector::run(
        listener,
        CollectorConfig::new(&out),
        async {
            let _ = crx.await;
        },
    ));
    let mut cfg = RecordingConfig::new(d.path().join("spool"));
    cfg.collector_url = Some(format!("http://{caddr}/audit").parse().unwrap());
    cfg.format = CollectorFormat::Ndjson;
    cfg.batch_max_delay = Duration::from_millis(20);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let (recorder, rec_task) = Recorder::start(cfg, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    })
    .unwrap();
    std::fs::write(d.path().join("policy.yaml"), POLICY).unwrap();
    let (store, _task) = PolicyStore::start(Some(d.path().join("policy.yaml"))).unwrap();
    let policy: PolicySource = Arc::new(move || store.current());

    let fake_state = Arc::new(Fake::default());
    let upstream = start_fake(fake_state.clone()).await;
    let calls = Arc::new(ToolCalls::new());
    let front = Arc::new(McpFront::new(
        upstream,
        policy,
        Identity::user("mcp-warden:pod:mcp/p-0"),
        recorder,
        calls.clone(),
        Some(Arc::new(TestVerifier)),
    ));
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();

    // No bearer, a rejected one: 401 with a JSON-RPC error, nothing forwarded.
    let r = front
        .clone()
        .handle(
            post("/mcp", None, Some("s-1"), call(1, "slow", json!({}))),
            peer,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let v = json_of(r).await;
    assert_eq!(v["error"]["code"], -32002);
    let r = front
        .clone()
        .handle(
            post(
                "/mcp",
                Some("bob-token"),
                Some("s-1"),
                call(1, "slow", json!({})),
            ),
            peer,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v = json_of(r).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has expired"),
        "{v}"
    );
    assert!(!v.to_string().contains("bob-token"));
    assert!(fake_state.seen.lock().unwrap().is_empty());

    // The slow call: an event stream read as it passes; while it is in
    // flight an API request would be linked to it, with alice as the user.
    let r = front
        .clone()
        .handle(
            post(
                "/mcp",
                Some("alice-token"),
                Some("s-1"),
                call(7, "slow", json!({"password": "hunter2", "ns": "dev"})),
            ),
            peer,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let links = calls.link_annotations();
    assert_eq!(links[contract::ANN_TOOL].as_str(), "slow");
    assert_eq!(links[contract::ANN_MCP_USER].as_str(), "alice@example.com");
    assert_eq!(links[contract::ANN_MCP_SESSION].as_str(), "s-1");
    assert_eq!(links[contract::ANN_JSONRPC_ID].as_str(), "7");
    let slow_call_id = links[contract::ANN_TOOL_CALL].clone();
    fake_state.release.notify_one();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("notifications/progress") && text.contains("\"isError\":true"),
        "{text}"
    );
    assert!(calls.in_flight().is_empty());
    assert!(calls.link_annotations().is_empty());

    // A denied tool: the error names the rule; the server never sees it.
    let before = fake_state.seen.lock().unwrap().len();
    let r = front
        .clone()
        .handle(
            post(
                "/mcp",
                Some("alice-token"),
                Some("s-1"),
                call(8, "danger_drop", json!({})),
            ),
            peer,
        )
        .await;
    let v = json_of(r).await;
    assert_eq!(v["id"], 8);
    assert_eq!(v["error"]["code"], -32001);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-danger"),
        "{v}"
    );
    assert_eq!(v["error"]["data"]["rule"], "no-danger");
    assert_eq!(fake_state.seen.lock().unwrap().len(), before);

    // The SSE transport: GET /sse names the session, POST /messages is
    // accepted, the answer comes on the stream.
    let get = Request::get("/sse")
        .header("authorization", "Bearer alice-token")
        .body(full(""))
        .unwrap();
    let stream = front.clone().handle(get, peer).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut stream_body = stream.into_body();
    let first = stream_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("sessionId=legacy-1"));
    let r = front
        .clone()
        .handle(
            post(
                "/messages?sessionId=legacy-1",
                Some("alice-token"),
                None,
                call(9, "pods_list", json!({})),
            ),
            peer,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    drop(r);
    assert_eq!(
        calls.in_flight().len(),
        1,
        "the call waits for its answer on the stream"
    );
    let answer = stream_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("\"id\":9"));
    assert!(calls.in_flight().is_empty());
    // A denied call over the SSE transport: accepted, and its error comes
    // on the stream (where the client reads answers), the server never asked.
    let before = fake_state.seen.lock().unwrap().len();
    let r = front
        .clone()
        .handle(
            post(
                "/messages?sessionId=legacy-1",
                Some("alice-token"),
                None,
                call(10, "danger_x", json!({})),
            ),
            peer,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let refusal = stream_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    let refusal = String::from_utf8_lossy(&refusal).into_owned();
    let data: Value = serde_json::from_str(
        refusal
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert!(
        refusal.starts_with("event: message\n") && refusal.ends_with("\n\n"),
        "{refusal:?}"
    );
    assert_eq!(data["id"], 10);
    assert_eq!(data["error"]["data"]["rule"], "no-danger");
    assert_eq!(fake_state.seen.lock().unwrap().len(), before);

    let ev = tool_events(&out, 4).await;
    let by_tool = |t: &str| {
        ev.iter()
            .find(|e| e.annotations[contract::ANN_TOOL] == t)
            .unwrap()
    };
    let slow = by_tool("slow");
    assert_eq!(slow.audit_id, slow_call_id);
    assert_eq!(slow.user.username, "alice@example.com");
    assert_eq!(slow.user.groups, vec!["dev".to_string()]);
    assert_eq!(slow.annotations[contract::ANN_TOOL_OUTCOME], "isError");
    assert_eq!(slow.annotations[contract::ANN_MCP_SESSION], "s-1");
    let args = &slow.request_object.as_ref().unwrap()["arguments"];
    assert_eq!(args["ns"], "dev");
    assert_ne!(args["password"], "hunter2", "arguments are recorded masked");
    let danger = by_tool("danger_drop");
    assert_eq!(danger.annotations[contract::ANN_TOOL_OUTCOME], "refused");
    assert_eq!(danger.annotations["mcp-warden.io/rule"], "no-danger");
    let legacy = by_tool("pods_list");
    assert_eq!(legacy.annotations[contract::ANN_TOOL_OUTCOME], "result");
    assert_eq!(legacy.annotations[contract::ANN_MCP_SESSION], "legacy-1");
    assert!(!collector::read_events(&out).unwrap().iter().any(|e| {
        serde_json::to_string(e).unwrap().contains("hunter2")
            || serde_json::to_string(e).unwrap().contains("alice-token")
    }));

    drop(stream_body);
    let _ = stop.send(true);
    let _ = rec_task.await;
    let _ = cstop.send(());
    let _ = server.await;
}

const HOLD_POLICY: &str = r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
defaultAction: deny
rules:
  - name: held-tools
    action: approve
    tools: ["held_*"]
    message: ask first
"#;

/// Reads the SSE stream until an event's JSON-RPC message has `id`.
async fn answer_on(stream: &mut ProxyBody, id: u64) -> Value {
    let mut text = String::new();
    for _ in 0..100 {
        let frame = tokio::time::timeout(Duration::from_secs(60), stream.frame())
            .await
            .expect("no answer on the stream")
            .unwrap()
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let ev: String = text.drain(..end + 2).collect();
            if let Some(v) = ev
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                && v["id"] == id
            {
                return v;
            }
        }
    }
    panic!("no answer with id {id} on the stream");
}

/// An `approve` tool rule on the SSE transport, with approvals pointed at
/// kube-apisim (the decision written into the AccessRequest's status): the
/// held `POST /messages` is accepted at once (the SSE client sends a
/// session's POSTs one at a time), another call of the session is answered
/// while it waits; approved, the call reaches the server and its answer
/// comes on the stream; denied, the error naming the denier does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_front_holds_a_tool_call_on_the_sse_transport_without_blocking_the_session() {
    use clap::Parser;
    use mcp_warden_sidecar::approval::ApprovalDecider;
    use mcp_warden_sidecar::config::{ApprovalConfig, Cli};
    use mcp_warden_sidecar::policy_store::PolicyDecider;
    use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, run};

    let d = tempfile::tempdir().unwrap();
    let crd = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/crds/accessrequests.yaml"),
    )
    .unwrap();
    let seed = d.path().join("seed.yaml");
    std::fs::write(&seed, crd).unwrap();
    let sim = tokio::task::spawn_blocking(move || {
        ApiSim::start(ApiSimOptions {
            seed: Some(seed),
            ..Default::default()
        })
        .unwrap()
    })
    .await
    .unwrap();
    let sim = Arc::new(sim);

    let out = d.path().join("out");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let caddr = listener.local_addr().unwrap();
    let (cstop, crx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(collector::run(
        listener,
        CollectorConfig::new(&out),
        async {
            let _ = crx.await;
        },
    ));
    let mut cfg = RecordingConfig::new(d.path().join("spool"));
    cfg.collector_url = Some(format!("http://{caddr}/audit").parse().unwrap());
    cfg.format = CollectorFormat::Ndjson;
    cfg.batch_max_delay = Duration::from_millis(20);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let (recorder, rec_task) = Recorder::start(cfg, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    })
    .unwrap();
    let policy_file = d.path().join("policy.yaml");
    std::fs::write(&policy_file, HOLD_POLICY).unwrap();
    let (store, _task) = PolicyStore::start(Some(policy_file.clone())).unwrap();
    let identity = Identity::user("system:serviceaccount:default:agent");
    let ca = sim.ca_path();
    let token = sim.token_path();
    let url = sim.url();
    let config = Cli::try_parse_from([
        "mcp-warden-sidecar",
        "--upstream",
        &url,
        "--upstream-ca-file",
        ca.to_str().unwrap(),
        "--upstream-token-file",
        token.to_str().unwrap(),
        "--pod-namespace",
        "default",
        "--pod-name",
        "agent-0",
    ])
    .unwrap()
    .serve
    .validate()
    .unwrap();
    let approvals = Arc::new(
        ApprovalDecider::new(
            PolicyDecider::new(store.clone(), identity.clone()),
            &config,
            &identity,
            ApprovalConfig {
                approval_timeout: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let policy: PolicySource = Arc::new(move || store.current());
    let fake_state = Arc::new(Fake::default());
    let upstream = start_fake(fake_state.clone()).await;
    let calls = Arc::new(ToolCalls::new());
    let front = Arc::new(
        McpFront::new(upstream, policy, identity, recorder, calls.clone(), None)
            .with_approvals(approvals),
    );
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();

    let get = Request::get("/sse").body(full("")).unwrap();
    let stream = front.clone().handle(get, peer).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut stream_body = stream.into_body();
    let first = stream_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("sessionId=legacy-1"));
    let send = |id: u64, tool: &str| {
        let front = front.clone();
        let req = post(
            "/messages?sessionId=legacy-1",
            None,
            None,
            call(id, tool, json!({"name": "web-0"})),
        );
        async move {
            // Bounded: a held POST would otherwise wait for the decision.
            tokio::time::timeout(Duration::from_secs(30), front.handle(req, peer))
                .await
                .expect("the POST waited for the approval")
        }
    };
    // The AccessRequest in apisim, and writing its decision.
    let pending = |not: Option<String>| {
        let sim = sim.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..150 {
                let out = run(
                    sim.kubectl("32").args([
                        "get",
                        "accessrequests",
                        "-n",
                        "default",
                        "-o",
                        "json",
                    ]),
                    Duration::from_secs(30),
                )
                .unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let found = v["items"].as_array().and_then(|items| {
                    items
                        .iter()
                        .find(|a| {
                            a["status"]["state"] == "Pending"
                                && a["metadata"]["name"].as_str() != not.as_deref()
                        })
                        .cloned()
                });
                if let Some(a) = found {
                    return a;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            panic!("no pending AccessRequest");
        })
    };
    let decide = |name: String, status: Value| {
        let sim = sim.clone();
        tokio::task::spawn_blocking(move || {
            let out = run(
                sim.kubectl("32").args([
                    "patch",
                    "accessrequests",
                    &name,
                    "-n",
                    "default",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &json!({ "status": status }).to_string(),
                ]),
                Duration::from_secs(30),
            )
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };

    // Held: accepted at once; the session goes on meanwhile.
    let r = send(1, "held_delete").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ar = pending(None).await.unwrap();
    assert_eq!(ar["spec"]["verb"], "tools/call");
    assert_eq!(ar["spec"]["resource"], "tools");
    assert_eq!(ar["spec"]["name"], "held_delete");
    assert_eq!(ar["spec"]["rule"], "held-tools");
    assert_eq!(ar["spec"]["message"], "ask first");
    assert_eq!(
        ar["spec"]["summary"],
        r#"call tool held_delete {"name":"web-0"} (session legacy-1)"#
    );
    assert_eq!(
        ar["spec"]["requester"]["serviceAccount"],
        "system:serviceaccount:default:agent"
    );
    let first_name = ar["metadata"]["name"].as_str().unwrap().to_string();
    let r = send(2, "pods_list").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let a2 = answer_on(&mut stream_body, 2).await;
    assert!(a2.get("result").is_some(), "{a2}");
    let seen = |tool: &str| {
        fake_state
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.contains(&format!("\"name\":\"{tool}\"")))
    };
    assert!(!seen("held_delete"), "the held call reached the server");

    // Approved: forwarded, answered on the stream, the AccessRequest Used.
    decide(
        first_name.clone(),
        json!({"state": "Approved", "decidedBy": "alice"}),
    )
    .await
    .unwrap();
    let a1 = answer_on(&mut stream_body, 1).await;
    assert!(a1.get("result").is_some(), "{a1}");
    assert!(seen("held_delete"));

    // Denied: the error on the stream names the denier, nothing forwarded.
    let before = fake_state.seen.lock().unwrap().len();
    let r = send(3, "held_drop").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ar = pending(Some(first_name.clone())).await.unwrap();
    let second_name = ar["metadata"]["name"].as_str().unwrap().to_string();
    decide(
        second_name.clone(),
        json!({"state": "Denied", "decidedBy": "bob", "reason": "not now"}),
    )
    .await
    .unwrap();
    let a3 = answer_on(&mut stream_body, 3).await;
    assert_eq!(a3["error"]["code"], -32001, "{a3}");
    let msg = a3["error"]["message"].as_str().unwrap();
    assert!(msg.contains("held-tools"), "{msg}");
    assert!(msg.contains("denied by bob: not now"), "{msg}");
    assert_eq!(a3["error"]["data"]["decision"], "approve");
    assert_eq!(fake_state.seen.lock().unwrap().len(), before);

    let ev = tool_events(&out, 3).await;
    let by_tool = |t: &str| {
        ev.iter()
            .find(|e| e.annotations[contract::ANN_TOOL] == t)
            .unwrap()
    };
    let approved = by_tool("held_delete");
    assert_eq!(approved.annotations[contract::ANN_TOOL_OUTCOME], "result");
    assert_eq!(approved.annotations[contract::ANN_APPROVED_BY], "alice");
    assert_eq!(
        approved.annotations[contract::ANN_ACCESS_REQUEST],
        format!("default/{first_name}")
    );
    let denied = by_tool("held_drop");
    assert_eq!(denied.annotations[contract::ANN_TOOL_OUTCOME], "refused");
    assert!(!denied.annotations.contains_key(contract::ANN_APPROVED_BY));
    assert!(calls.in_flight().is_empty());

    drop(stream_body);
    let _ = stop.send(true);
    let _ = rec_task.await;
    let _ = cstop.send(());
    let _ = server.await;
}
