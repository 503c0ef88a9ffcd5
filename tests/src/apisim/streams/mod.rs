//! Streaming pod subresources of kube-apisim: `pods/log`, `pods/exec`,
//! `pods/attach` (WebSocket channel protocols `v5`…`v1`, base64 variants, and
//! SPDY/3.1 fallback) and `pods/portforward` (SPDY, SPDY tunnelled in a
//! WebSocket, and the WebSocket channel protocol). The "container" is an echo
//! machine (see [`exec`]).
//!
//! The router has authenticated the request and found the pod; [`serve`]
//! checks the query, negotiates the protocol, answers `101 Switching
//! Protocols` and runs the session on the upgraded connection in a task.
//!
//! What real clients send (observed with `kubectl -v=9`, see
//! `tests/tests/it/apisim_streams.rs`): exec/attach — kubectl ≤ 1.29 `POST` +
//! `Upgrade: SPDY/3.1` + `X-Stream-Protocol-Version` v4…v1; kubectl ≥ 1.30
//! `GET` + WebSocket `v5.channel.k8s.io` only; the Python client WebSocket
//! `v4.channel.k8s.io` (stdin in text frames). port-forward — kubectl ≤ 1.30
//! `POST` + SPDY `portforward.k8s.io`; kubectl ≥ 1.31 `GET` + WebSocket
//! `SPDY/3.1+portforward.k8s.io` (SPDY frames inside binary messages); the
//! Python client WebSocket `v4.channel.k8s.io` with `ports=`.

pub mod exec;
pub mod log;
pub mod portforward;
pub mod spdy;
pub mod ws;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use mcp_warden_shared::status::{Reason, Status};

use super::ResBody;
use mcp_warden_shared::attrs::Query;

/// Which streaming subresource was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Log,
    Exec,
    Attach,
    PortForward,
}

/// The pod the request is about (the router found it).
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// The stored pod object.
    pub pod: serde_json::Value,
}

/// What exec/attach should run and which streams the client wants.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub container: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub attach: bool,
    pub pod: String,
}

/// Serves one streaming request.
pub async fn serve(
    kind: StreamKind,
    pod: PodRef,
    req: Request<hyper::body::Incoming>,
) -> Response<ResBody> {
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let result = match kind {
        StreamKind::Log => log::serve(&pod, &query).await,
        StreamKind::Exec | StreamKind::Attach => serve_exec(kind, &pod, &query, req),
        StreamKind::PortForward => portforward::serve(&pod, &query, req),
    };
    result.unwrap_or_else(status_response)
}

fn serve_exec(
    kind: StreamKind,
    pod: &PodRef,
    q: &Query,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ResBody>, Status> {
    let container = resolve_container(pod, q.get("container"))?;
    let attach = kind == StreamKind::Attach;
    let command: Vec<String> = q.all("command").into_iter().map(str::to_string).collect();
    if !attach && command.is_empty() {
        return Err(Status::new(
            Reason::BadRequest,
            "you must specify at least 1 command",
        ));
    }
    let opts = ExecOptions {
        command,
        container,
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        tty: q.flag("tty"),
        attach,
        pod: pod.name.clone(),
    };
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return Err(Status::new(
            Reason::BadRequest,
            "you must specify at least one of stdin, stdout, stderr",
        ));
    }
    if opts.tty && opts.stderr && !attach {
        // kube-apiserver allows it; kubelet merges stderr into the tty.
        tracing::debug!("tty with stderr: stderr is merged into stdout");
    }
    match upgrade_kind(&req) {
        Upgrade::WebSocket => ws::serve_exec(opts, req),
        Upgrade::Spdy => spdy::serve_exec(opts, req),
        Upgrade::None => Err(upgrade_required()),
    }
}

/// The container a request names, or the pod's only container.
pub fn resolve_container(pod: &PodRef, asked: Option<&str>) -> Result<String, Status> {
    let names: Vec<String> = pod.pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match asked.filter(|s| !s.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => {
            let init: Vec<&str> = pod.pod["spec"]["initContainers"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
                .unwrap_or_default();
            if init.contains(&c) {
                return Ok(c.to_string());
            }
            Err(Status::new(
                Reason::BadRequest,
                format!("container {c} is not valid for pod {}", pod.name),
            ))
        }
        None => match names.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(Status::new(
                Reason::BadRequest,
                format!("pod {} does not have a container", pod.name),
            )),
            _ => Err(Status::new(
                Reason::BadRequest,
                format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    pod.name,
                    names.join(" ")
                ),
            )),
        },
    }
}

/// How the client asked to upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    WebSocket,
    Spdy,
    None,
}

/// Reads `Connection: Upgrade` + `Upgrade: websocket|SPDY/3.1`.
pub fn upgrade_kind<B>(req: &Request<B>) -> Upgrade {
    let has_conn_upgrade = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !has_conn_upgrade {
        return Upgrade::None;
    }
    let ups: Vec<String> = req
        .headers()
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    if ups.iter().any(|u| u == "websocket") {
        Upgrade::WebSocket
    } else if ups.iter().any(|u| u.starts_with("spdy/3.1")) {
        Upgrade::Spdy
    } else {
        Upgrade::None
    }
}

/// All values of a header that may be repeated and/or comma-joined.
pub fn header_list<B>(req: &Request<B>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn upgrade_required() -> Status {
    Status::new(Reason::BadRequest, "Upgrade request required")
}

/// A `101 Switching Protocols` with the given `Upgrade` and extra headers.
pub fn switching(upgrade: &'static str, extra: &[(&str, String)]) -> Response<ResBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(upgrade));
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::try_from(*name),
            HeaderValue::try_from(value.as_str()),
        ) {
            h.insert(n, v);
        }
    }
    resp
}

/// An empty body.
pub fn empty() -> ResBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Maps a `Status` to its HTTP response.
pub fn status_response(status: Status) -> Response<ResBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(status.to_json()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() =
        StatusCode::from_u16(status.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
