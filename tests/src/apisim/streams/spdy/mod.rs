//! SPDY/3.1 transport for `pods/exec`, `pods/attach` and `pods/portforward`
//! (`Upgrade: SPDY/3.1`, version negotiated by `X-Stream-Protocol-Version`),
//! as client-go's SPDY executor and port-forwarder use it.

pub mod frame;
pub mod session;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mcp_warden_shared::status::{Reason, Status};
use tokio::sync::mpsc;

use super::exec::{Out, Program, exit_message, spawn, status_json};
use super::{ExecOptions, ResBody, header_list, switching};
use session::{IncomingStream, Session};

/// How long the client gets to open the streams it announced (kubelet: 30s).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for the client to hang up after GOAWAY.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Exec/attach protocol versions, newest first.
const EXEC_PROTOCOLS: &[(&str, u8)] = &[
    ("v5.channel.k8s.io", 5),
    ("v4.channel.k8s.io", 4),
    ("v3.channel.k8s.io", 3),
    ("v2.channel.k8s.io", 2),
    ("channel.k8s.io", 1),
];

/// Negotiates `X-Stream-Protocol-Version`: the first of the client's offers
/// we support; no offer at all means the legacy protocol (`None`).
pub fn negotiate<B>(req: &Request<B>, supported: &[&str]) -> Result<Option<String>, Status> {
    let offered = header_list(req, "x-stream-protocol-version");
    if offered.is_empty() {
        return Ok(None);
    }
    offered.iter().find(|p| supported.contains(&p.as_str())).cloned().map(Some).ok_or_else(|| {
        Status::new(
            Reason::Forbidden,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
        )
    })
}

/// Answers `101` for SPDY/3.1 and runs `session` on the upgraded connection.
pub fn upgrade<F, Fut>(
    req: Request<hyper::body::Incoming>,
    protocol: Option<&str>,
    run: F,
) -> Response<ResBody>
where
    F: FnOnce(Session) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let extra: Vec<(&str, String)> = protocol
        .map(|p| vec![("x-stream-protocol-version", p.to_string())])
        .unwrap_or_default();
    let resp = switching("SPDY/3.1", &extra);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => run(session::start(TokioIo::new(upgraded))).await,
            Err(error) => tracing::warn!(%error, "SPDY upgrade failed"),
        }
    });
    resp
}

/// Serves exec/attach over SPDY.
pub fn serve_exec(
    opts: ExecOptions,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ResBody>, Status> {
    let names: Vec<&str> = EXEC_PROTOCOLS.iter().map(|(n, _)| *n).collect();
    let protocol = negotiate(&req, &names)?;
    let version = protocol
        .as_deref()
        .and_then(|p| EXEC_PROTOCOLS.iter().find(|(n, _)| *n == p))
        .map(|(_, v)| *v)
        .unwrap_or(1);
    tracing::debug!(?protocol, command = ?opts.command, "exec over SPDY");
    Ok(upgrade(req, protocol.as_deref(), move |s| {
        run_exec(s, version, opts)
    }))
}

async fn run_exec(mut session: Session, version: u8, opts: ExecOptions) {
    let mut expected = vec!["error"];
    if opts.stdin {
        expected.push("stdin");
    }
    if opts.stdout {
        expected.push("stdout");
    }
    if opts.stderr && !opts.tty {
        expected.push("stderr");
    }
    if opts.tty && version >= 3 {
        expected.push("resize");
    }
    let mut got: HashMap<String, IncomingStream> = HashMap::new();
    let collected = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while !expected.iter().all(|e| got.contains_key(*e)) {
            let Some(s) = session.streams.recv().await else {
                return false;
            };
            let kind = frame::header(&s.headers, "streamtype")
                .unwrap_or("")
                .to_ascii_lowercase();
            got.insert(kind, s);
        }
        true
    })
    .await;
    if collected != Ok(true) {
        tracing::warn!(?expected, got = ?got.keys().collect::<Vec<_>>(), "exec: client did not open the expected streams");
        session.close(CLOSE_GRACE).await;
        return;
    }
    let id = |k: &str| got.get(k).map(|s| s.id);
    let (error_id, stdout_id, stderr_id) = (id("error"), id("stdout"), id("stderr"));
    let stdin_rx = match got.remove("stdin") {
        Some(s) => s.data,
        None => mpsc::channel(1).1,
    };
    let argv = if opts.attach {
        vec!["cat".to_string()]
    } else {
        opts.command.clone()
    };
    let program = Program::parse(&argv, &opts.pod);
    let (job, mut out_rx) = spawn(program, opts.tty, stdin_rx);
    let h = session.handle.clone();
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                match out {
                    Out::Stdout(b) => send_opt(&h, stdout_id, b),
                    Out::Stderr(b) if opts.tty => send_opt(&h, stdout_id, b),
                    Out::Stderr(b) => send_opt(&h, stderr_id, b),
                }
            }
            s = session.streams.recv() => {
                if s.is_none() {
                    // The client hung up.
                    job.abort();
                    h.shutdown();
                    return;
                }
            }
        }
    }
    let code = job.await.unwrap_or(1);
    if let Some(err) = error_id {
        let status = if version >= 4 {
            Some(status_json(&argv, code))
        } else {
            exit_message(&argv, code).map(String::into_bytes)
        };
        if let Some(s) = status {
            h.send(err, Bytes::from(s));
        }
    }
    for s in [error_id, stdout_id, stderr_id].into_iter().flatten() {
        h.finish(s);
    }
    session.close(CLOSE_GRACE).await;
}

fn send_opt(h: &session::SessionHandle, id: Option<u32>, data: Bytes) {
    if let Some(id) = id {
        h.send(id, data);
    }
}
