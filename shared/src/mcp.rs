//! MCP traffic as data: the JSON-RPC 2.0 messages an MCP client and server
//! exchange (single or batched), the `tools/call` requests among them and
//! the outcome of their responses, the Server-Sent Events framing of the
//! streamable HTTP and SSE transports (parsed incrementally, chunk by chunk,
//! with a bound per event), the JSON-RPC error the sidecar answers a refused
//! call with, and the masking of tool arguments.
//!
//! Pure: the sidecar's MCP front (`sidecar::mcp`) feeds it the bytes it
//! passes on and acts on what comes out.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::mask::{MARKER, Masker};
use crate::{audit, contract};

/// The method of a tool call.
pub const TOOLS_CALL: &str = "tools/call";
/// JSON-RPC's "invalid request" code.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's "parse error" code.
pub const PARSE_ERROR: i64 = -32700;
/// The code of a tool call the policy refused (implementation-defined
/// server-error range of JSON-RPC 2.0).
pub const POLICY_REFUSED: i64 = -32001;
/// The code of a request refused because its bearer token was not accepted.
pub const UNAUTHENTICATED: i64 = -32002;

/// Why bytes are not JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// Not JSON at all.
    #[error("not JSON: {why}")]
    NotJson { why: String },
    /// JSON, but not a JSON-RPC 2.0 message (or batch of them).
    #[error("not a JSON-RPC 2.0 message{at}: {why}", at = index.map(|i| format!(" (batch item {i})")).unwrap_or_default())]
    NotJsonRpc { index: Option<usize>, why: String },
    /// A `tools/call` request without a tool name.
    #[error("tools/call request {id} has no string `params.name`")]
    BadToolCall { id: String },
}

/// A JSON-RPC id (a string or a number), kept as its JSON text (`7`,
/// `"abc"`), so ids compare as the peer wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcId(String);

impl RpcId {
    /// The id of a JSON value, if it is a valid JSON-RPC id.
    pub fn from_value(v: &Value) -> Option<RpcId> {
        match v {
            Value::String(_) | Value::Number(_) => serde_json::to_string(v).ok().map(RpcId),
            _ => None,
        }
    }

    /// The id's JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The id as a JSON value (for an answer that echoes it).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The id for people: a string id without its quotes.
    pub fn display(&self) -> Cow<'_, str> {
        match serde_json::from_str::<Value>(&self.0) {
            Ok(Value::String(s)) => Cow::Owned(s),
            _ => Cow::Borrowed(&self.0),
        }
    }
}

impl std::fmt::Display for RpcId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A `result`; for a tool call, `isError` of the `CallToolResult`.
    Result {
        /// The result says `isError: true` (the tool ran and failed).
        is_error: bool,
    },
    /// A JSON-RPC `error`.
    Error {
        /// Its `code`.
        code: i64,
        /// Its `message`.
        message: String,
    },
}

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (has an id, expects a response).
    Request {
        /// Its id.
        id: RpcId,
        /// Its method.
        method: String,
        /// Its params, if any.
        params: Option<Value>,
    },
    /// A notification (no id, no response).
    Notification {
        /// Its method.
        method: String,
    },
    /// A response to a request.
    Response {
        /// The id it answers (`None`: an error answering an unreadable request).
        id: Option<RpcId>,
        /// Result or error.
        outcome: Outcome,
    },
}

/// The messages of one HTTP body or SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The body was a JSON array (a JSON-RPC batch).
    pub is_batch: bool,
}

/// Parses a body: one JSON-RPC message or a batch of them.
pub fn parse_body(bytes: &[u8]) -> Result<Batch, McpError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| McpError::NotJson { why: e.to_string() })?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(McpError::NotJsonRpc {
                    index: None,
                    why: "an empty batch".into(),
                });
            }
            let messages = items
                .into_iter()
                .enumerate()
                .map(|(i, m)| parse_message(m, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok(Batch {
                messages,
                is_batch: true,
            })
        }
        other => Ok(Batch {
            messages: vec![parse_message(other, None)?],
            is_batch: false,
        }),
    }
}

fn parse_message(v: Value, index: Option<usize>) -> Result<Message, McpError> {
    let bad = |why: &str| McpError::NotJsonRpc {
        index,
        why: why.to_string(),
    };
    let Value::Object(mut o) = v else {
        return Err(bad("a message is a JSON object"));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad("`jsonrpc` must be \"2.0\""));
    }
    let id = match o.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(RpcId::from_value(v).ok_or_else(|| bad("`id` must be a string or a number"))?)
        }
    };
    if let Some(m) = o.get("method") {
        let method = m
            .as_str()
            .ok_or_else(|| bad("`method` must be a string"))?
            .to_string();
        return Ok(match id {
            Some(id) => Message::Request {
                id,
                method,
                params: o.remove("params"),
            },
            None => Message::Notification { method },
        });
    }
    if let Some(err) = o.get("error") {
        let code = err
            .get("code")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("`error.code` must be an integer"))?;
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Ok(Message::Response {
            id,
            outcome: Outcome::Error { code, message },
        });
    }
    if let Some(result) = o.get("result") {
        let Some(id) = id else {
            return Err(bad("a result needs an `id`"));
        };
        let is_error = result.get("isError").and_then(Value::as_bool) == Some(true);
        return Ok(Message::Response {
            id: Some(id),
            outcome: Outcome::Result { is_error },
        });
    }
    Err(bad(
        "neither a request (`method`) nor a response (`result`/`error`)",
    ))
}

/// A `tools/call` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The request's id.
    pub id: RpcId,
    /// `params.name`: the tool.
    pub name: String,
    /// `params.arguments` (`null` when absent), unmasked.
    pub arguments: Value,
}

impl Message {
    /// The tool call this message is, if it is a `tools/call` request;
    /// `Err` for a `tools/call` without a tool name.
    pub fn tool_call(&self) -> Option<Result<ToolCall, McpError>> {
        let Message::Request { id, method, params } = self else {
            return None;
        };
        if method != TOOLS_CALL {
            return None;
        }
        let params = params.as_ref();
        let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
            return Some(Err(McpError::BadToolCall { id: id.to_string() }));
        };
        Some(Ok(ToolCall {
            id: id.clone(),
            name: name.to_string(),
            arguments: params
                .and_then(|p| p.get("arguments"))
                .cloned()
                .unwrap_or(Value::Null),
        }))
    }
}

/// A JSON-RPC error response to request `id` (`null` when unknown).
pub fn error_response(id: Option<&RpcId>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), Value::from(code));
    err.insert("message".into(), Value::from(message));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.map(RpcId::to_value).unwrap_or(Value::Null),
        "error": Value::Object(err),
    })
}

/// Object keys whose string values are secrets whatever they look like.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "credentials",
];

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

/// Masks tool arguments in place: every string through the policy's
/// detectors (as a log line: JWTs, bearer tokens, private keys, `password=`
/// assignments, ...), and string values under secret-looking keys
/// (`password`, `token`, `apiKey`, ...) whole. Returns how many values were
/// masked.
pub fn mask_arguments(masker: &Masker, args: &mut Value) -> usize {
    match args {
        Value::String(s) => {
            let (masked, n) = masker.mask_log_line(s);
            if n > 0 {
                *s = masked.into_owned();
            }
            n
        }
        Value::Array(items) => items.iter_mut().map(|v| mask_arguments(masker, v)).sum(),
        Value::Object(o) => o
            .iter_mut()
            .map(|(k, v)| match v {
                Value::String(s) if is_secret_key(k) && s != MARKER => {
                    *s = MARKER.to_string();
                    1
                }
                v => mask_arguments(masker, v),
            })
            .sum(),
        _ => 0,
    }
}

/// A tool call in flight (forwarded, its response not seen yet), as the
/// recording of an API request made meanwhile names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InFlightCall {
    /// The tool call event's `auditID`.
    #[serde(rename = "toolCall")]
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The JSON-RPC id, as JSON text.
    #[serde(rename = "jsonrpcId")]
    pub jsonrpc_id: String,
    /// The MCP session (empty when the transport has none).
    #[serde(rename = "mcpSession", skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// The end user, when the call carried a verified bearer token.
    #[serde(rename = "mcpUser", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The annotations linking an API request to the tool calls in flight when
/// it was made: with exactly one, `tool-call`, `tool`, `jsonrpc-id`,
/// `mcp-session` and `mcp-user` name it; with several, only
/// `tool-call-candidates` (a JSON array of all of them) is set, so no
/// candidate is presented as the cause; with none, nothing.
pub fn link_annotations(calls: &[InFlightCall]) -> audit::Annotations {
    let mut out = audit::Annotations::new();
    match calls {
        [] => {}
        [one] => {
            out.insert(contract::ANN_TOOL_CALL.into(), one.call_id.clone());
            out.insert(contract::ANN_TOOL.into(), one.tool.clone());
            out.insert(contract::ANN_JSONRPC_ID.into(), one.jsonrpc_id.clone());
            if !one.session.is_empty() {
                out.insert(contract::ANN_MCP_SESSION.into(), one.session.clone());
            }
            if let Some(u) = &one.user {
                out.insert(contract::ANN_MCP_USER.into(), u.clone());
            }
        }
        many => {
            // Serializing plain strings cannot fail.
            let list = serde_json::to_string(many).unwrap_or_default();
            out.insert(contract::ANN_TOOL_CALL_CANDIDATES.into(), list);
        }
    }
    out
}

/// How a tool call ended, as recorded in `mcp-warden.io/tool-outcome`
/// (`result`, `isError`, `error`, `refused`, `no-response`, `unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// The server answered: a result (maybe `isError`) or a JSON-RPC error.
    Answered(Outcome),
    /// The sidecar refused it (policy); never forwarded.
    Refused {
        /// The refusal's message (names the rule).
        message: String,
    },
    /// The response never came: the stream ended or the client went away.
    NoResponse,
    /// A response passed but could not be read (larger than the bound,
    /// not JSON-RPC): the outcome is unknown.
    Unreadable,
}

impl CallEnd {
    /// The `mcp-warden.io/tool-outcome` value.
    pub fn name(&self) -> &'static str {
        match self {
            CallEnd::Answered(Outcome::Result { is_error: false }) => "result",
            CallEnd::Answered(Outcome::Result { is_error: true }) => "isError",
            CallEnd::Answered(Outcome::Error { .. }) => "error",
            CallEnd::Refused { .. } => "refused",
            CallEnd::NoResponse => "no-response",
            CallEnd::Unreadable => "unknown",
        }
    }
}

/// The verb of a tool call event.
pub const TOOL_CALL_VERB: &str = "tools/call";

/// Everything a tool call event says, besides what every event carries
/// ([`audit::RequestInfo`]).
#[derive(Debug, Clone)]
pub struct ToolCallRecord<'a> {
    /// The call.
    pub call: &'a InFlightCall,
    /// The masked arguments.
    pub arguments: &'a Value,
    /// How it ended.
    pub end: &'a CallEnd,
    /// When it ended.
    pub ended: audit::MicroTime,
}

/// The `ResponseComplete` event of a tool call: verb `tools/call`, no
/// `objectRef`, the tool name and masked arguments as `requestObject`
/// (`{"name", "arguments"}`), the outcome as `responseStatus` (200 answered,
/// 403 refused, 499 no response) and `responseObject` (`{"isError"}` or the
/// JSON-RPC `{"error": {"code", "message"}}`, the message masked by the
/// caller), and the `mcp-warden.io/` annotations `event: tool-call`, `tool`,
/// `jsonrpc-id`, `mcp-session`, `mcp-user`, `tool-outcome`.
pub fn tool_call_event(info: audit::RequestInfo<'_>, rec: &ToolCallRecord<'_>) -> audit::Event {
    let mut e = audit::Event::from_request(info);
    let status = match rec.end {
        CallEnd::Answered(Outcome::Error { code, message }) => {
            let mut s = audit::ResponseStatus::from_code(200);
            s.message = format!("JSON-RPC error {code}: {message}");
            s
        }
        CallEnd::Answered(_) => audit::ResponseStatus::from_code(200),
        CallEnd::Refused { message } => {
            audit::ResponseStatus::failure(403, "Forbidden", message.clone())
        }
        CallEnd::NoResponse => audit::ResponseStatus::failure(
            499,
            "",
            "the tool call's response never came (stream ended or client gone)",
        ),
        CallEnd::Unreadable => {
            let mut s = audit::ResponseStatus::from_code(200);
            s.message = "the tool call's response could not be read: outcome unknown".into();
            s
        }
    };
    e = e.at_stage(audit::Stage::ResponseComplete, rec.ended, status);
    e.request_object = Some(serde_json::json!({
        "name": rec.call.tool,
        "arguments": rec.arguments,
    }));
    e.response_object = match rec.end {
        CallEnd::Answered(Outcome::Result { is_error }) => {
            Some(serde_json::json!({"isError": is_error}))
        }
        CallEnd::Answered(Outcome::Error { code, message }) => {
            Some(serde_json::json!({"error": {"code": code, "message": message}}))
        }
        _ => None,
    };
    let a = &mut e.annotations;
    a.insert(contract::ANN_EVENT_KIND.into(), "tool-call".into());
    a.insert(contract::ANN_TOOL.into(), rec.call.tool.clone());
    a.insert(contract::ANN_JSONRPC_ID.into(), rec.call.jsonrpc_id.clone());
    if !rec.call.session.is_empty() {
        a.insert(contract::ANN_MCP_SESSION.into(), rec.call.session.clone());
    }
    if let Some(u) = &rec.call.user {
        a.insert(contract::ANN_MCP_USER.into(), u.clone());
    }
    a.insert(contract::ANN_TOOL_OUTCOME.into(), rec.end.name().into());
    e
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` (empty means `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// `id:`, if any.
    pub id: Option<String>,
    /// The event grew past the parser's bound: `data` is incomplete and
    /// must not be read as a message.
    pub overflow: bool,
}

impl SseEvent {
    /// The event's type, `message` by default.
    pub fn kind(&self) -> &str {
        if self.event.is_empty() {
            "message"
        } else {
            &self.event
        }
    }
}

/// An incremental `text/event-stream` parser: feed it the chunks as they
/// pass, take the complete events out. Memory is bounded by `max_event`
/// (the bytes of one event's fields); past it the event is marked
/// [`SseEvent::overflow`] and the rest of it skipped.
#[derive(Debug, Clone)]
pub struct SseParser {
    max_event: usize,
    line: Vec<u8>,
    line_overflow: bool,
    after_cr: bool,
    current: SseEvent,
    has_data: bool,
    size: usize,
}

impl SseParser {
    /// A parser keeping at most `max_event` bytes of one event.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            max_event,
            line: Vec::new(),
            line_overflow: false,
            after_cr: false,
            current: SseEvent::default(),
            has_data: false,
            size: 0,
        }
    }

    /// True between events: nothing of a next event has been seen, so an
    /// event of one's own can be put into the stream here without cutting
    /// one of the peer's in two.
    pub fn at_boundary(&self) -> bool {
        self.line.is_empty()
            && !self.line_overflow
            && !self.after_cr
            && !self.has_data
            && self.size == 0
            && self.current == SseEvent::default()
    }

    /// Feeds the next chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => {
                    // The `\n` of a `\r\n`: the line already ended at `\r`.
                    self.after_cr = false;
                }
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut out);
                }
                _ => {
                    self.after_cr = false;
                    if self.size + self.line.len() < self.max_event {
                        self.line.push(b);
                    } else {
                        self.line_overflow = true;
                    }
                }
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.line_overflow) {
            self.current.overflow = true;
        }
        if line.is_empty() {
            if self.has_data || self.current.overflow {
                let mut ev = std::mem::take(&mut self.current);
                if ev.data.ends_with('\n') {
                    ev.data.pop();
                }
                out.push(ev);
            }
            self.current = SseEvent::default();
            self.has_data = false;
            self.size = 0;
            return;
        }
        if line[0] == b':' {
            return;
        }
        self.size += line.len();
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                self.current.data.push_str(value);
                self.current.data.push('\n');
                self.has_data = true;
            }
            "event" => self.current.event = value.to_string(),
            "id" => self.current.id = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
