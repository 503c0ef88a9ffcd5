//! Tests of the JSON-RPC and SSE parsing and of argument masking.

use serde_json::json;

use super::*;
use crate::mask::MaskingConfig;

#[test]
fn a_tool_call_request_is_read_with_its_name_and_arguments() {
    let b = parse_body(
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pods_list","arguments":{"namespace":"dev"}}}"#,
    )
    .unwrap();
    assert!(!b.is_batch);
    let call = b.messages[0].tool_call().unwrap().unwrap();
    assert_eq!(call.id.as_json(), "7");
    assert_eq!(call.name, "pods_list");
    assert_eq!(call.arguments, json!({"namespace": "dev"}));
}

#[test]
fn string_and_number_ids_stay_distinct() {
    let a = RpcId::from_value(&json!(1)).unwrap();
    let b = RpcId::from_value(&json!("1")).unwrap();
    assert_ne!(a, b);
    assert_eq!(b.display(), "1");
    assert_eq!(b.to_value(), json!("1"));
    assert!(RpcId::from_value(&json!({"x": 1})).is_none());
}

#[test]
fn other_methods_notifications_and_responses_are_not_tool_calls() {
    let b = parse_body(
        br#"[{"jsonrpc":"2.0","id":"a","method":"tools/list"},
             {"jsonrpc":"2.0","method":"notifications/initialized"},
             {"jsonrpc":"2.0","id":"a","result":{"tools":[]}}]"#,
    )
    .unwrap();
    assert!(b.is_batch);
    assert_eq!(b.messages.len(), 3);
    assert!(b.messages.iter().all(|m| m.tool_call().is_none()));
    assert_eq!(
        b.messages[1],
        Message::Notification {
            method: "notifications/initialized".into()
        }
    );
}

#[test]
fn a_tool_call_without_a_name_is_an_error() {
    let b = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#).unwrap();
    assert_eq!(
        b.messages[0].tool_call(),
        Some(Err(McpError::BadToolCall { id: "1".into() }))
    );
}

#[test]
fn outcomes_result_is_error_and_error() {
    let b = parse_body(
        br#"[{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}},
             {"jsonrpc":"2.0","id":2,"result":{"content":[]}},
             {"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad"}},
             {"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}]"#,
    )
    .unwrap();
    let outcomes: Vec<_> = b
        .messages
        .iter()
        .map(|m| match m {
            Message::Response { id, outcome } => {
                (id.clone().map(|i| i.to_string()), outcome.clone())
            }
            _ => panic!("not a response"),
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Some("1".into()), Outcome::Result { is_error: true }),
            (Some("2".into()), Outcome::Result { is_error: false }),
            (
                Some("3".into()),
                Outcome::Error {
                    code: -32602,
                    message: "bad".into()
                }
            ),
            (
                None,
                Outcome::Error {
                    code: -32700,
                    message: "parse".into()
                }
            ),
        ]
    );
}

#[test]
fn malformed_messages_are_refused_with_the_reason() {
    for (body, why) in [
        (&b"{"[..], "not JSON"),
        (b"[]", "empty batch"),
        (b"42", "JSON object"),
        (br#"{"id":1,"method":"x"}"#, "jsonrpc"),
        (br#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#, "`id`"),
        (br#"{"jsonrpc":"2.0","id":1}"#, "neither"),
        (br#"{"jsonrpc":"2.0","result":{}}"#, "needs an `id`"),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"x"}, 3]"#,
            "batch item 1",
        ),
    ] {
        let e = parse_body(body).unwrap_err().to_string();
        assert!(e.contains(why), "{e:?} should say {why:?}");
    }
}

#[test]
fn the_error_response_echoes_the_id() {
    let id = RpcId::from_value(&json!("x-1")).unwrap();
    let v = error_response(
        Some(&id),
        POLICY_REFUSED,
        "denied by rule \"r\"",
        Some(json!({"rule": "r"})),
    );
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","id":"x-1","error":{"code":-32001,"message":"denied by rule \"r\"","data":{"rule":"r"}}})
    );
    assert_eq!(
        error_response(None, PARSE_ERROR, "x", None)["id"],
        json!(null)
    );
}

#[test]
fn arguments_are_masked_by_detectors_and_secret_keys() {
    let masker = MaskingConfig::embedded_default().compile().unwrap();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl";
    let mut args = json!({
        "namespace": "dev",
        "password": "hunter2",
        "nested": [{"header": format!("Authorization: Bearer {jwt}")}, {"dbToken": "x"}],
        "count": 3
    });
    let n = mask_arguments(&masker, &mut args);
    assert!(n >= 2, "{n}");
    let text = args.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(jwt), "{text}");
    assert_eq!(args["namespace"], json!("dev"));
    assert_eq!(args["password"], json!(MARKER));
    assert_eq!(args["count"], json!(3));
}

fn feed_all(p: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
    chunks.iter().flat_map(|c| p.feed(c)).collect()
}

#[test]
fn sse_events_are_parsed_across_chunk_boundaries() {
    let stream = b"event: message\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: keep-alive\n\ndata: two\n\n";
    // Every split point gives the same events.
    for cut in 0..stream.len() {
        let mut p = SseParser::new(1 << 16);
        let evs = feed_all(&mut p, &[&stream[..cut], &stream[cut..]]);
        assert_eq!(evs.len(), 2, "cut at {cut}: {evs:?}");
        assert_eq!(evs[0].kind(), "message");
        assert_eq!(evs[0].id.as_deref(), Some("1"));
        assert_eq!(evs[0].data, "{\"a\":\n1}");
        assert_eq!(evs[1].data, "two");
        assert!(!evs[0].overflow && !evs[1].overflow);
    }
}

#[test]
fn sse_byte_by_byte_and_cr_only_lines() {
    let stream = b"event: endpoint\rdata: /message?sessionId=abc\r\r";
    let mut p = SseParser::new(1024);
    let evs: Vec<_> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind(), "endpoint");
    assert_eq!(evs[0].data, "/message?sessionId=abc");
}

#[test]
fn sse_an_event_past_the_bound_is_marked_and_the_next_one_is_whole() {
    let mut p = SseParser::new(16);
    let mut stream = b"data: ".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 100));
    stream.extend(b"\n\ndata: ok\n\n");
    let evs = p.feed(&stream);
    assert_eq!(evs.len(), 2);
    assert!(evs[0].overflow);
    assert!(evs[0].data.len() <= 16);
    assert_eq!(
        evs[1],
        SseEvent {
            data: "ok".into(),
            ..Default::default()
        }
    );
}

#[test]
fn sse_an_event_without_data_is_not_dispatched() {
    let mut p = SseParser::new(1024);
    assert!(p.feed(b"event: ping\n\nretry: 10\n\n").is_empty());
}

fn call(id: &str, tool: &str) -> InFlightCall {
    InFlightCall {
        call_id: format!("uuid-{id}"),
        tool: tool.into(),
        jsonrpc_id: id.into(),
        session: "s-1".into(),
        user: Some("alice@example.com".into()),
    }
}

#[test]
fn one_call_in_flight_is_named_as_the_cause() {
    let a = link_annotations(&[call("3", "pods_list")]);
    assert_eq!(a[contract::ANN_TOOL_CALL], "uuid-3");
    assert_eq!(a[contract::ANN_TOOL], "pods_list");
    assert_eq!(a[contract::ANN_JSONRPC_ID], "3");
    assert_eq!(a[contract::ANN_MCP_SESSION], "s-1");
    assert_eq!(a[contract::ANN_MCP_USER], "alice@example.com");
    assert!(!a.contains_key(contract::ANN_TOOL_CALL_CANDIDATES));
}

#[test]
fn several_calls_in_flight_are_all_candidates_and_none_is_the_cause() {
    let a = link_annotations(&[call("3", "pods_list"), call("4", "pods_get")]);
    assert_eq!(a.len(), 1, "{a:?}");
    let list: Value = serde_json::from_str(&a[contract::ANN_TOOL_CALL_CANDIDATES]).unwrap();
    assert_eq!(
        list,
        json!([
            {"toolCall": "uuid-3", "tool": "pods_list", "jsonrpcId": "3", "mcpSession": "s-1", "mcpUser": "alice@example.com"},
            {"toolCall": "uuid-4", "tool": "pods_get", "jsonrpcId": "4", "mcpSession": "s-1", "mcpUser": "alice@example.com"}
        ])
    );
    assert!(link_annotations(&[]).is_empty());
}

#[test]
fn the_tool_call_event_carries_tool_arguments_outcome_and_duration() {
    let attrs = crate::attrs::RequestAttributes {
        verb: TOOL_CALL_VERB.into(),
        path: "/mcp".into(),
        ..Default::default()
    };
    let c = call("9", "resources_delete");
    let info = || audit::RequestInfo {
        audit_id: &c.call_id,
        request_uri: "/mcp",
        attrs: &attrs,
        user: audit::UserInfo::new("alice@example.com", "", vec![], Default::default()).into(),
        impersonated_user: None,
        source_ips: vec!["127.0.0.1".into()],
        user_agent: "python-httpx",
        level: audit::Level::Metadata,
        received: audit::MicroTime::from_unix_micros(1_000_000),
        decision: audit::DecisionInfo {
            decision: "deny".into(),
            rule: "no-deletes".into(),
            policy_hash: "abc".into(),
            enforced: true,
        },
        pod: "mcp/p-0",
        cluster: "",
    };
    let args = json!({"name": "x"});
    let end = CallEnd::Refused {
        message: "denied by rule \"no-deletes\"".into(),
    };
    let e = tool_call_event(
        info(),
        &ToolCallRecord {
            call: &c,
            arguments: &args,
            end: &end,
            ended: audit::MicroTime::from_unix_micros(1_250_000),
        },
    );
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["verb"], "tools/call");
    assert_eq!(v["stage"], "ResponseComplete");
    assert_eq!(v["auditID"], "uuid-9");
    assert!(v.get("objectRef").is_none());
    assert_eq!(
        v["requestObject"],
        json!({"name": "resources_delete", "arguments": {"name": "x"}})
    );
    assert_eq!(v["responseStatus"]["code"], 403);
    assert_eq!(v["annotations"][contract::ANN_TOOL_OUTCOME], "refused");
    assert_eq!(v["annotations"][contract::ANN_EVENT_KIND], "tool-call");
    assert_eq!(v["annotations"]["mcp-warden.io/rule"], "no-deletes");
    assert_eq!(v["requestReceivedTimestamp"], "1970-01-01T00:00:01.000000Z");
    assert_eq!(v["stageTimestamp"], "1970-01-01T00:00:01.250000Z");

    let end = CallEnd::Answered(Outcome::Error {
        code: -32602,
        message: "bad".into(),
    });
    let e = tool_call_event(
        info(),
        &ToolCallRecord {
            call: &c,
            arguments: &args,
            end: &end,
            ended: audit::MicroTime::from_unix_micros(2_000_000),
        },
    );
    assert_eq!(e.annotations[contract::ANN_TOOL_OUTCOME], "error");
    assert_eq!(
        e.response_object,
        Some(json!({"error": {"code": -32602, "message": "bad"}}))
    );
    let end = CallEnd::Answered(Outcome::Result { is_error: true });
    let e = tool_call_event(
        info(),
        &ToolCallRecord {
            call: &c,
            arguments: &args,
            end: &end,
            ended: audit::MicroTime::from_unix_micros(2_000_000),
        },
    );
    assert_eq!(e.annotations[contract::ANN_TOOL_OUTCOME], "isError");
    assert_eq!(CallEnd::NoResponse.name(), "no-response");
}

#[test]
fn sse_boundaries_are_only_between_events() {
    let mut p = SseParser::new(1024);
    assert!(p.at_boundary());
    p.feed(b"event: message\n");
    assert!(!p.at_boundary());
    p.feed(b"data: {}\n");
    assert!(!p.at_boundary());
    assert_eq!(p.feed(b"\n").len(), 1);
    assert!(p.at_boundary());
    p.feed(b"da");
    assert!(!p.at_boundary());
    p.feed(b"ta: x\r");
    assert!(!p.at_boundary());
    p.feed(b"\n\n");
    assert!(p.at_boundary());
}
