//! A server-side SPDY/3.1 session over any byte stream (an upgraded HTTP/1.1
//! connection, or a WebSocket tunnel for port-forward).
//!
//! The peer (client-go's spdystream) opens every stream; we answer each
//! SYN_STREAM with a SYN_REPLY at once, as kubelet does, because spdystream
//! drops DATA on streams that were not replied to. Handlers get the streams
//! through [`Session::streams`] and write through a cloneable
//! [`SessionHandle`]; one writer task owns the socket so frames never
//! interleave and SYN_REPLY always precedes the stream's DATA.
//!
//! Flow control: we grant WINDOW_UPDATEs for what we receive. On the send
//! side spdystream never sends WINDOW_UPDATE (it does no flow control), so we
//! only hold data back once the peer has shown it does flow control (sent a
//! WINDOW_UPDATE or an initial-window SETTINGS).

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::frame::{
    Codec, FLAG_FIN, Frame, Headers, INITIAL_WINDOW, SETTINGS_INITIAL_WINDOW_SIZE, Window, rst,
};

/// Bytes of received DATA after which we send a WINDOW_UPDATE.
const WINDOW_UPDATE_BATCH: u32 = 32 * 1024;
/// Largest DATA frame we send.
const MAX_DATA_FRAME: usize = 32 * 1024;

/// A stream the peer opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// DATA payloads; ends when the peer half-closes (FIN) or resets the stream.
    pub data: mpsc::Receiver<Bytes>,
}

/// A running session.
pub struct Session {
    /// Streams the peer opens, in order; ends when the connection ends.
    pub streams: mpsc::Receiver<IncomingStream>,
    pub handle: SessionHandle,
}

/// Writes to the session; cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

enum Cmd {
    Frame(Frame),
    Data { id: u32, data: Bytes, fin: bool },
    Grow { id: u32, delta: u32 },
    InitialWindow(u32),
    GoAway(oneshot::Sender<()>),
    Shutdown,
}

impl SessionHandle {
    /// Queues DATA on stream `id` (split into frames as needed).
    pub fn send(&self, id: u32, data: Bytes) {
        if !data.is_empty() {
            let _ = self.tx.send(Cmd::Data {
                id,
                data,
                fin: false,
            });
        }
    }

    /// Half-closes stream `id` from our side (empty DATA with FIN).
    pub fn finish(&self, id: u32) {
        let _ = self.tx.send(Cmd::Data {
            id,
            data: Bytes::new(),
            fin: true,
        });
    }

    /// Resets stream `id`.
    pub fn reset(&self, id: u32) {
        let _ = self.tx.send(Cmd::Frame(Frame::RstStream {
            stream_id: id,
            status: rst::CANCEL,
        }));
    }

    /// Sends GOAWAY after everything queued before it; returns once it is
    /// flushed (or the socket is gone).
    pub async fn go_away(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Cmd::GoAway(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
    }

    /// Shuts the socket down and stops both tasks.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Shutdown);
    }
}

impl Session {
    /// Ends the session the way spdystream's `Close` does: GOAWAY, then wait
    /// (bounded by `grace`) for the peer to close the connection, so it reads
    /// every frame we sent before the socket goes away, then shut down.
    pub async fn close(mut self, grace: std::time::Duration) {
        self.handle.go_away().await;
        let _ = tokio::time::timeout(grace, async {
            while self.streams.recv().await.is_some() {}
        })
        .await;
        self.handle.shutdown();
    }
}

/// Starts reader and writer tasks for a session on `io`.
pub fn start<IO>(io: IO) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (streams_tx, streams_rx) = mpsc::channel(32);
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(writer(wr, cmd_rx, stop_tx));
    tokio::spawn(reader(rd, cmd_tx.clone(), streams_tx, stop_rx));
    Session {
        streams: streams_rx,
        handle: SessionHandle { tx: cmd_tx },
    }
}

struct RecvStream {
    tx: Option<mpsc::Sender<Bytes>>,
    unacked: u32,
}

async fn reader<R: AsyncRead>(
    rd: R,
    cmd: mpsc::UnboundedSender<Cmd>,
    streams: mpsc::Sender<IncomingStream>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut rd = std::pin::pin!(rd);
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut open: HashMap<u32, RecvStream> = HashMap::new();
    loop {
        let frame = match codec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                tokio::select! {
                    r = rd.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue,
                    },
                    _ = &mut stop => break,
                }
            }
            Err(error) => {
                tracing::debug!(%error, "SPDY decode failed; ending session");
                let _ = cmd.send(Cmd::Frame(Frame::GoAway {
                    last_good_stream_id: 0,
                    status: 1,
                }));
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client-initiated streams have odd ids; anything else is a
                // protocol error for this stream only.
                if stream_id % 2 == 0 || open.contains_key(&stream_id) {
                    let _ = cmd.send(Cmd::Frame(Frame::RstStream {
                        stream_id,
                        status: rst::PROTOCOL_ERROR,
                    }));
                    continue;
                }
                let _ = cmd.send(Cmd::Frame(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                }));
                let (tx, rx) = mpsc::channel(64);
                let tx = if flags & FLAG_FIN != 0 {
                    None
                } else {
                    Some(tx)
                };
                open.insert(stream_id, RecvStream { tx, unacked: 0 });
                tracing::debug!(stream_id, ?headers, "SPDY stream opened");
                if streams
                    .send(IncomingStream {
                        id: stream_id,
                        headers,
                        data: rx,
                    })
                    .await
                    .is_err()
                {
                    // Nobody takes new streams any more: refuse politely.
                    let _ = cmd.send(Cmd::Frame(Frame::RstStream {
                        stream_id,
                        status: rst::CANCEL,
                    }));
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let Some(s) = open.get_mut(&stream_id) else {
                    let _ = cmd.send(Cmd::Frame(Frame::RstStream {
                        stream_id,
                        status: rst::INVALID_STREAM,
                    }));
                    continue;
                };
                let len = data.len() as u32;
                if !data.is_empty() {
                    if let Some(tx) = &s.tx
                        && tx.send(data).await.is_err()
                    {
                        s.tx = None;
                    }
                    s.unacked += len;
                    if s.unacked >= WINDOW_UPDATE_BATCH {
                        let _ = cmd.send(Cmd::Frame(Frame::WindowUpdate {
                            stream_id,
                            delta: s.unacked,
                        }));
                        s.unacked = 0;
                    }
                }
                if flags & FLAG_FIN != 0 {
                    s.tx = None;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Only answer the peer's pings (odd ids from a client).
                if id % 2 == 1 {
                    let _ = cmd.send(Cmd::Frame(Frame::Ping { id }));
                }
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let _ = cmd.send(Cmd::Grow {
                    id: stream_id,
                    delta,
                });
            }
            Frame::Settings { entries, .. } => {
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let _ = cmd.send(Cmd::InitialWindow(value));
                    }
                }
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0
                    && let Some(s) = open.get_mut(&stream_id)
                {
                    s.tx = None;
                }
            }
            Frame::GoAway { .. } | Frame::SynReply { .. } | Frame::Unknown { .. } => {}
        }
    }
    tracing::debug!("SPDY session reader finished");
}

#[derive(Default)]
struct SendState {
    /// Set once the peer has shown it does flow control.
    enforce: bool,
    initial: i64,
    windows: HashMap<u32, Window>,
    pending: HashMap<u32, VecDeque<(Bytes, bool)>>,
}

async fn writer<W: AsyncWrite>(
    wr: W,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    stop: oneshot::Sender<()>,
) {
    let mut wr = std::pin::pin!(wr);
    let mut codec = Codec::new();
    let mut st = SendState {
        initial: INITIAL_WINDOW,
        ..Default::default()
    };
    let mut out = BytesMut::new();
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Frame(f) => encode(&mut codec, &f, &mut out),
            Cmd::Data { id, data, fin } => {
                if st.pending.get(&id).is_some_and(|q| !q.is_empty()) {
                    st.pending.entry(id).or_default().push_back((data, fin));
                } else {
                    queue_data(&mut codec, &mut st, &mut out, id, data, fin);
                }
            }
            Cmd::Grow { id, delta } => {
                st.enforce = true;
                if id != 0 {
                    let initial = st.initial;
                    st.windows
                        .entry(id)
                        .or_insert(Window(initial))
                        .grow(i64::from(delta));
                    if let Some(mut q) = st.pending.remove(&id) {
                        while let Some((data, fin)) = q.pop_front() {
                            queue_data(&mut codec, &mut st, &mut out, id, data, fin);
                            if st.pending.contains_key(&id) {
                                // Blocked again: keep the rest behind it.
                                st.pending.entry(id).or_default().extend(q.drain(..));
                                break;
                            }
                        }
                    }
                }
            }
            Cmd::InitialWindow(v) => {
                st.enforce = true;
                let delta = i64::from(v) - st.initial;
                st.initial = i64::from(v);
                for w in st.windows.values_mut() {
                    w.grow(delta);
                }
            }
            Cmd::GoAway(done) => {
                if !st.pending.is_empty() {
                    tracing::warn!(
                        streams = st.pending.len(),
                        "SPDY GOAWAY with data held back by flow control"
                    );
                }
                encode(
                    &mut codec,
                    &Frame::GoAway {
                        last_good_stream_id: 0,
                        status: 0,
                    },
                    &mut out,
                );
                let ok = wr.write_all(&out).await.is_ok() && wr.flush().await.is_ok();
                out.clear();
                let _ = done.send(());
                if !ok {
                    break;
                }
            }
            Cmd::Shutdown => {
                let _ = wr.shutdown().await;
                break;
            }
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                tracing::debug!("SPDY peer gone");
                break;
            }
            out.clear();
        }
    }
    let _ = stop.send(());
}

fn encode(codec: &mut Codec, f: &Frame, out: &mut BytesMut) {
    if let Err(error) = codec.encode(f, out) {
        tracing::warn!(%error, "SPDY encode failed");
    }
}

fn queue_data(
    codec: &mut Codec,
    st: &mut SendState,
    out: &mut BytesMut,
    id: u32,
    mut data: Bytes,
    fin: bool,
) {
    loop {
        let want = data.len().min(MAX_DATA_FRAME);
        let n = if st.enforce {
            let initial = st.initial;
            st.windows
                .entry(id)
                .or_insert(Window(initial))
                .allowance(want)
        } else {
            want
        };
        if want > 0 && n == 0 {
            st.pending.entry(id).or_default().push_back((data, fin));
            return;
        }
        let chunk = data.split_to(n);
        if st.enforce {
            let initial = st.initial;
            st.windows.entry(id).or_insert(Window(initial)).consume(n);
        }
        let last = data.is_empty();
        let flags = if last && fin { FLAG_FIN } else { 0 };
        encode(
            codec,
            &Frame::Data {
                stream_id: id,
                flags,
                data: chunk,
            },
            out,
        );
        if last {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::super::frame::{self, Headers};
    use super::*;

    /// The client end of a session under test.
    struct Peer {
        io: DuplexStream,
        codec: Codec,
        buf: BytesMut,
    }

    impl Peer {
        async fn send(&mut self, f: Frame) {
            let mut out = BytesMut::new();
            self.codec.encode(&f, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        async fn recv(&mut self) -> Frame {
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    if let Some(f) = self.codec.decode(&mut self.buf).unwrap() {
                        return f;
                    }
                    assert!(
                        self.io.read_buf(&mut self.buf).await.unwrap() > 0,
                        "server closed"
                    );
                }
            })
            .await
            .expect("a frame in time")
        }

        async fn nothing_pending(&mut self) -> bool {
            tokio::time::timeout(Duration::from_millis(200), self.io.read_buf(&mut self.buf))
                .await
                .is_err()
                && self.buf.is_empty()
        }
    }

    fn peer_and_session() -> (Peer, Session) {
        let (client, server) = tokio::io::duplex(1 << 20);
        (
            Peer {
                io: client,
                codec: Codec::new(),
                buf: BytesMut::new(),
            },
            start(server),
        )
    }

    fn syn(id: u32, kind: &str) -> Frame {
        let headers: Headers = vec![("streamtype".into(), kind.into())];
        Frame::SynStream {
            stream_id: id,
            assoc_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers,
        }
    }

    #[tokio::test]
    async fn replies_delivers_data_and_answers_pings() {
        let (mut peer, mut session) = peer_and_session();
        peer.send(syn(1, "stdin")).await;
        assert_eq!(
            peer.recv().await,
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![]
            }
        );
        let mut s = session.streams.recv().await.unwrap();
        assert_eq!(frame::header(&s.headers, "streamType"), Some("stdin"));
        peer.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"abc"),
        })
        .await;
        peer.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await;
        assert_eq!(s.data.recv().await.unwrap(), Bytes::from_static(b"abc"));
        assert_eq!(s.data.recv().await, None, "FIN ends the stream's data");
        peer.send(Frame::Ping { id: 7 }).await;
        assert_eq!(peer.recv().await, Frame::Ping { id: 7 });
        // Server-initiated (even) stream ids from the peer are refused.
        peer.send(syn(2, "data")).await;
        assert!(matches!(
            peer.recv().await,
            Frame::RstStream { stream_id: 2, .. }
        ));
        session.handle.send(1, Bytes::from_static(b"out"));
        session.handle.finish(1);
        assert_eq!(
            peer.recv().await,
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"out")
            }
        );
        assert_eq!(
            peer.recv().await,
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new()
            }
        );
        session.handle.go_away().await;
        assert!(matches!(peer.recv().await, Frame::GoAway { .. }));
    }

    #[tokio::test]
    async fn send_window_is_respected_once_the_peer_does_flow_control() {
        let (mut peer, mut session) = peer_and_session();
        peer.send(Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 4)],
        })
        .await;
        peer.send(syn(1, "data")).await;
        assert!(matches!(
            peer.recv().await,
            Frame::SynReply { stream_id: 1, .. }
        ));
        let s = session.streams.recv().await.unwrap();
        session
            .handle
            .send(s.id, Bytes::from_static(b"hello world"));
        session.handle.finish(s.id);
        assert_eq!(
            peer.recv().await,
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"hell")
            }
        );
        assert!(
            peer.nothing_pending().await,
            "held back until WINDOW_UPDATE"
        );
        peer.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 100,
        })
        .await;
        assert_eq!(
            peer.recv().await,
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"o world")
            }
        );
        assert_eq!(
            peer.recv().await,
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new()
            }
        );
    }

    #[tokio::test]
    async fn received_data_is_acknowledged_with_window_updates() {
        let (mut peer, mut session) = peer_and_session();
        peer.send(syn(1, "data")).await;
        assert!(matches!(peer.recv().await, Frame::SynReply { .. }));
        let mut s = session.streams.recv().await.unwrap();
        let chunk = Bytes::from(vec![7u8; WINDOW_UPDATE_BATCH as usize]);
        peer.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: chunk.clone(),
        })
        .await;
        assert_eq!(s.data.recv().await.unwrap(), chunk);
        assert_eq!(
            peer.recv().await,
            Frame::WindowUpdate {
                stream_id: 1,
                delta: WINDOW_UPDATE_BATCH
            }
        );
    }

    #[tokio::test]
    async fn garbage_ends_the_session_with_goaway() {
        let (mut peer, mut session) = peer_and_session();
        peer.io
            .write_all(b"\x80\x07\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01")
            .await
            .unwrap();
        assert!(matches!(peer.recv().await, Frame::GoAway { .. }));
        assert!(session.streams.recv().await.is_none());
    }
}
