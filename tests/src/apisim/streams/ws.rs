//! WebSocket side of the streaming subresources: the handshake with
//! subprotocol negotiation, the Kubernetes channel framing (`channel.k8s.io`
//! family: first byte of each message is the channel; the base64 variants
//! send text messages `'0'+channel` + base64 payload), exec/attach sessions,
//! and a byte-stream adapter for SPDY tunnelled through a WebSocket.

use std::future::Future;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mcp_warden_shared::status::{Reason, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::exec::{Out, Program, exit_message, spawn, status_json};
use super::{ExecOptions, ResBody, header_list, switching};

/// A WebSocket on an upgraded HTTP connection.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel (stdin EOF).
pub const CLOSE: u8 = 255;

/// A negotiated channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelProto {
    /// 1 for `channel.k8s.io` … 5 for `v5.channel.k8s.io`.
    pub version: u8,
    pub base64: bool,
}

/// Channel protocols exec/attach accept, by subprotocol name.
pub fn exec_proto(name: &str) -> Option<ChannelProto> {
    let (version, base64) = match name {
        "" | "channel.k8s.io" => (1, false),
        "base64.channel.k8s.io" => (1, true),
        "v2.channel.k8s.io" => (2, false),
        "v3.channel.k8s.io" => (3, false),
        "v4.channel.k8s.io" => (4, false),
        "v4.base64.channel.k8s.io" => (4, true),
        "v5.channel.k8s.io" => (5, false),
        _ => return None,
    };
    Some(ChannelProto { version, base64 })
}

/// Picks the first of the client's subprotocols that `accept` knows (the
/// client lists them in preference order, as wsstream honours). No header at
/// all means the legacy unnamed binary protocol (`""`).
pub fn negotiate<B>(req: &Request<B>, accept: impl Fn(&str) -> bool) -> Result<String, Status> {
    let offered = header_list(req, "sec-websocket-protocol");
    if offered.is_empty() {
        return if accept("") {
            Ok(String::new())
        } else {
            Err(Status::new(
                Reason::BadRequest,
                "a WebSocket subprotocol is required",
            ))
        };
    }
    offered.iter().find(|p| accept(p)).cloned().ok_or_else(|| {
        Status::new(
            Reason::BadRequest,
            format!("requested protocol(s) are not supported: {offered:?}"),
        )
    })
}

/// Answers the WebSocket handshake with `protocol` and runs `session` on the
/// socket once hyper hands it over.
pub fn upgrade<F, Fut>(
    req: Request<hyper::body::Incoming>,
    protocol: &str,
    session: F,
) -> Result<Response<ResBody>, Status>
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let key = req
        .headers()
        .get("sec-websocket-key")
        .ok_or_else(|| Status::new(Reason::BadRequest, "missing Sec-WebSocket-Key"))?;
    let accept = derive_accept_key(key.as_bytes());
    let mut extra = vec![("sec-websocket-accept", accept)];
    if !protocol.is_empty() {
        extra.push(("sec-websocket-protocol", protocol.to_string()));
    }
    let resp = switching("websocket", &extra);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                session(ws).await;
            }
            Err(error) => tracing::warn!(%error, "WebSocket upgrade failed"),
        }
    });
    Ok(resp)
}

/// The message carrying `data` on `channel`.
pub fn encode(p: ChannelProto, channel: u8, data: &[u8]) -> Message {
    if p.base64 {
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push(char::from(b'0' + channel));
        B64.encode_string(data, &mut s);
        Message::Text(s.into())
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::Binary(v.into())
    }
}

/// The channel and payload of a data message; `None` for control messages,
/// empty messages and undecodable base64.
pub fn decode(p: ChannelProto, msg: &Message) -> Option<(u8, Bytes)> {
    match msg {
        Message::Binary(b) if !b.is_empty() => Some((b[0], b.slice(1..))),
        Message::Text(t) if p.base64 && !t.is_empty() => {
            let s = t.as_str();
            let ch = s.as_bytes()[0].checked_sub(b'0')?;
            B64.decode(&s.as_bytes()[1..])
                .ok()
                .map(|d| (ch, Bytes::from(d)))
        }
        // Binary protocols take text frames as raw bytes too, as kubelet's
        // wsstream does; the Python client sends stdin given as `str` so.
        Message::Text(t) if !t.is_empty() => {
            let b = Bytes::from(t.clone());
            Some((b[0], b.slice(1..)))
        }
        _ => None,
    }
}

/// Serves exec/attach over a WebSocket channel protocol.
pub fn serve_exec(
    opts: ExecOptions,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ResBody>, Status> {
    let protocol = negotiate(&req, |p| exec_proto(p).is_some())?;
    let proto = exec_proto(&protocol).unwrap_or(ChannelProto {
        version: 1,
        base64: false,
    });
    tracing::debug!(%protocol, command = ?opts.command, "exec over WebSocket");
    upgrade(req, &protocol, move |ws| run_exec(ws, proto, opts))
}

async fn run_exec(ws: Ws, p: ChannelProto, opts: ExecOptions) {
    let (mut sink, mut stream) = ws.split();
    // As kube-apiserver does: an empty message on the lowest writable channel
    // tells the client the session is up.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr && !opts.tty {
        STDERR
    } else {
        ERROR
    };
    if sink.send(encode(p, first, &[])).await.is_err() {
        return;
    }
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<()>();
    let want_stdin = opts.stdin;
    let v5 = p.version >= 5;
    tokio::spawn(async move {
        let mut stdin_tx = want_stdin.then_some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            match decode(p, &msg) {
                Some((STDIN, data)) => {
                    if let Some(tx) = &stdin_tx
                        && !data.is_empty()
                        && tx.send(data).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Some((CLOSE, data)) if v5 && data.first() == Some(&STDIN) => stdin_tx = None,
                Some((RESIZE, _)) => {}
                Some((ch, _)) => {
                    tracing::debug!(channel = ch, "ignoring message on unexpected channel")
                }
                None => {}
            }
        }
        drop(stdin_tx);
        let _ = gone_tx.send(());
    });

    let argv = if opts.attach {
        vec!["cat".to_string()]
    } else {
        opts.command.clone()
    };
    let program = Program::parse(&argv, &opts.pod);
    let (job, mut out_rx) = spawn(program, opts.tty, stdin_rx);
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                let msg = match out {
                    Out::Stdout(b) if opts.stdout => encode(p, STDOUT, &b),
                    Out::Stderr(b) if opts.tty && opts.stdout => encode(p, STDOUT, &b),
                    Out::Stderr(b) if opts.stderr && !opts.tty => encode(p, STDERR, &b),
                    _ => continue,
                };
                if sink.send(msg).await.is_err() {
                    job.abort();
                    return;
                }
            }
            _ = &mut gone_rx => {
                job.abort();
                return;
            }
        }
    }
    let code = job.await.unwrap_or(1);
    let status = if p.version >= 4 {
        Some(status_json(&argv, code))
    } else {
        exit_message(&argv, code).map(String::into_bytes)
    };
    if let Some(s) = status {
        let _ = sink.send(encode(p, ERROR, &s)).await;
    }
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

/// A close frame with status 1000: gorilla/websocket (client-go) treats a
/// close without a status (1005) as an error.
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Turns a WebSocket carrying a byte stream in binary messages (kubectl's
/// SPDY-over-WebSocket port-forward tunnel) into an in-memory byte stream.
pub fn tunnel(ws: Ws) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async move {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink
                            .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(normal_close()).await;
            let _ = sink.close().await;
        };
        tokio::join!(inbound, outbound);
    });
    theirs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing_round_trip() {
        for p in [
            ChannelProto {
                version: 5,
                base64: false,
            },
            ChannelProto {
                version: 4,
                base64: true,
            },
        ] {
            let m = encode(p, STDERR, b"oops\n");
            assert_eq!(decode(p, &m), Some((STDERR, Bytes::from_static(b"oops\n"))));
        }
        let m = encode(
            ChannelProto {
                version: 4,
                base64: true,
            },
            STDOUT,
            b"hi",
        );
        assert_eq!(m, Message::Text("1aGk=".into()));
        assert_eq!(
            encode(
                ChannelProto {
                    version: 5,
                    base64: false
                },
                STDOUT,
                b"hi"
            ),
            Message::Binary(Bytes::from_static(b"\x01hi"))
        );
        assert_eq!(
            decode(
                ChannelProto {
                    version: 5,
                    base64: false
                },
                &Message::Binary(Bytes::new())
            ),
            None
        );
        assert_eq!(
            decode(
                ChannelProto {
                    version: 4,
                    base64: true
                },
                &Message::Text("1!!".into())
            ),
            None
        );
        // Multi-byte first character: no slicing panic.
        assert_eq!(
            decode(
                ChannelProto {
                    version: 4,
                    base64: true
                },
                &Message::Text("éaGk=".into())
            ),
            None
        );
        assert_eq!(
            decode(
                ChannelProto {
                    version: 4,
                    base64: false
                },
                &Message::Text("\u{0}ping".into())
            ),
            Some((STDIN, Bytes::from_static(b"ping")))
        );
    }

    #[test]
    fn protocol_names() {
        assert_eq!(
            exec_proto("v5.channel.k8s.io"),
            Some(ChannelProto {
                version: 5,
                base64: false
            })
        );
        assert_eq!(
            exec_proto("v4.base64.channel.k8s.io"),
            Some(ChannelProto {
                version: 4,
                base64: true
            })
        );
        assert_eq!(
            exec_proto(""),
            Some(ChannelProto {
                version: 1,
                base64: false
            })
        );
        assert_eq!(exec_proto("v6.channel.k8s.io"), None);
        let req = Request::builder()
            .header(
                "sec-websocket-protocol",
                "v6.channel.k8s.io, v4.channel.k8s.io",
            )
            .header("sec-websocket-protocol", "v5.channel.k8s.io")
            .body(())
            .unwrap();
        assert_eq!(
            negotiate(&req, |p| exec_proto(p).is_some()).unwrap(),
            "v4.channel.k8s.io"
        );
        let none = Request::builder()
            .header("sec-websocket-protocol", "x")
            .body(())
            .unwrap();
        assert_eq!(
            negotiate(&none, |p| exec_proto(p).is_some())
                .unwrap_err()
                .code(),
            400
        );
    }
}
