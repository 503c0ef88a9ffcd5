//! `pods/portforward`: every port of the fake pod is an echo server.
//!
//! Three transports, as kube-apiserver offers them:
//! - SPDY/3.1 (`X-Stream-Protocol-Version: portforward.k8s.io`): the client
//!   opens an `error` and a `data` stream per connection, paired by the
//!   `requestID` header (older clients: by `port`);
//! - the same SPDY session tunnelled in WebSocket binary messages
//!   (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31);
//! - the WebSocket channel protocol (`v4.channel.k8s.io` & co., ports from the
//!   `ports` query parameter): channel 2i is port i's data, 2i+1 its errors,
//!   and each channel starts with the port as two little-endian bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use hyper::{Request, Response};
use mcp_warden_shared::status::{Reason, Status};
use tokio_tungstenite::tungstenite::Message;

use super::spdy::frame::header;
use super::spdy::session::Session;
use super::ws::{self, ChannelProto, Ws, normal_close};
use super::{PodRef, ResBody, Upgrade, upgrade_kind};
use mcp_warden_shared::attrs::Query;

/// SPDY port-forward protocol name.
pub const PORTFORWARD_V1: &str = "portforward.k8s.io";
/// WebSocket subprotocol carrying SPDY/3.1 port-forward.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

fn channel_proto(name: &str) -> Option<ChannelProto> {
    match name {
        "" | "channel.k8s.io" | PORTFORWARD_V1 => Some(ChannelProto {
            version: 1,
            base64: false,
        }),
        "base64.channel.k8s.io" => Some(ChannelProto {
            version: 1,
            base64: true,
        }),
        "v4.channel.k8s.io" => Some(ChannelProto {
            version: 4,
            base64: false,
        }),
        "v4.base64.channel.k8s.io" => Some(ChannelProto {
            version: 4,
            base64: true,
        }),
        _ => None,
    }
}

/// Serves `.../pods/NAME/portforward`.
pub fn serve(
    pod: &PodRef,
    q: &Query,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ResBody>, Status> {
    match upgrade_kind(&req) {
        Upgrade::Spdy => {
            let protocol = super::spdy::negotiate(&req, &[PORTFORWARD_V1])?;
            tracing::debug!(pod = %pod.name, ?protocol, "port-forward over SPDY");
            Ok(super::spdy::upgrade(req, protocol.as_deref(), run_spdy))
        }
        Upgrade::WebSocket => {
            let protocol = ws::negotiate(&req, |p| p == SPDY_TUNNEL || channel_proto(p).is_some())?;
            tracing::debug!(pod = %pod.name, %protocol, "port-forward over WebSocket");
            if protocol == SPDY_TUNNEL {
                return ws::upgrade(req, &protocol, |socket| async move {
                    run_spdy(super::spdy::session::start(ws::tunnel(socket))).await
                });
            }
            let ports = parse_ports(q)?;
            let proto = channel_proto(&protocol).unwrap_or(ChannelProto {
                version: 1,
                base64: false,
            });
            ws::upgrade(req, &protocol, move |socket| {
                run_channels(socket, proto, ports)
            })
        }
        Upgrade::None => Err(Status::new(Reason::BadRequest, "Upgrade request required")),
    }
}

/// The `ports` query parameter (repeated and/or comma-separated).
pub fn parse_ports(q: &Query) -> Result<Vec<u16>, Status> {
    let mut ports = Vec::new();
    for raw in q.all("ports").into_iter().chain(q.all("port")) {
        for p in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(Status::new(
                        Reason::BadRequest,
                        format!("unable to parse {p:?} as a port: must be 1-65535"),
                    ));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(Status::new(
            Reason::BadRequest,
            "query parameter \"ports\" is required",
        ));
    }
    Ok(ports)
}

#[derive(Default)]
struct Pair {
    data: Option<u32>,
    error: Option<u32>,
    done: bool,
}

type Pairs = Arc<Mutex<HashMap<String, Pair>>>;

async fn run_spdy(mut session: Session) {
    let pairs: Pairs = Arc::default();
    let h = session.handle.clone();
    while let Some(mut s) = session.streams.recv().await {
        let kind = header(&s.headers, "streamtype")
            .unwrap_or("")
            .to_ascii_lowercase();
        let port = header(&s.headers, "port").unwrap_or("").to_string();
        let key = match header(&s.headers, "requestid") {
            Some(r) => format!("req:{r}"),
            None => format!("port:{port}"),
        };
        tracing::debug!(stream = s.id, %kind, %port, %key, "port-forward stream");
        match kind.as_str() {
            "error" => {
                let finish_now = {
                    let mut map = pairs.lock().unwrap_or_else(|p| p.into_inner());
                    let pair = map.entry(key).or_default();
                    pair.error = Some(s.id);
                    pair.done
                };
                if finish_now {
                    h.finish(s.id);
                }
                // Nothing is ever written to us on the error stream; drain it.
                tokio::spawn(async move { while s.data.recv().await.is_some() {} });
            }
            "data" => {
                if port.parse::<u16>().map_or(true, |p| p == 0) {
                    tracing::debug!(%port, "port-forward data stream with a bad port");
                    h.reset(s.id);
                    continue;
                }
                pairs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key.clone())
                    .or_default()
                    .data = Some(s.id);
                let (h, pairs) = (h.clone(), pairs.clone());
                tokio::spawn(async move {
                    while let Some(b) = s.data.recv().await {
                        h.send(s.id, b);
                    }
                    h.finish(s.id);
                    let error = {
                        let mut map = pairs.lock().unwrap_or_else(|p| p.into_inner());
                        let pair = map.entry(key).or_default();
                        pair.done = true;
                        pair.error
                    };
                    if let Some(e) = error {
                        h.finish(e);
                    }
                });
            }
            other => {
                tracing::debug!(streamtype = other, "port-forward: unknown stream type");
                h.reset(s.id);
            }
        }
    }
    // The client hung up.
    session.handle.shutdown();
}

async fn run_channels(socket: Ws, p: ChannelProto, ports: Vec<u16>) {
    let (mut sink, mut stream) = socket.split();
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            let Ok(ch) = u8::try_from(ch) else { continue };
            if sink
                .send(ws::encode(p, ch, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    while let Some(Ok(msg)) = stream.next().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
        if let Some((ch, data)) = ws::decode(p, &msg)
            && ch % 2 == 0
            && usize::from(ch / 2) < ports.len()
            && !data.is_empty()
            && sink.send(ws::encode(p, ch, &data)).await.is_err()
        {
            return;
        }
    }
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_ports(&Query::parse("ports=8080,9090&ports=1")).unwrap(),
            vec![8080, 9090, 1]
        );
        assert_eq!(parse_ports(&Query::parse("")).unwrap_err().code(), 400);
        assert_eq!(
            parse_ports(&Query::parse("ports=0")).unwrap_err().code(),
            400
        );
        assert_eq!(
            parse_ports(&Query::parse("ports=x")).unwrap_err().code(),
            400
        );
    }
}
