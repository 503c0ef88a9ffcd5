//! Exec/attach session recording as asciicast v2
//! (<https://docs.asciinema.org/manual/asciicast/v2/>), replayable with
//! `asciinema play`.
//!
//! The proxy feeds the raw bytes that pass through an upgraded WebSocket
//! tunnel, after the `101 Switching Protocols` response, in both directions.
//! A small incremental WebSocket frame parser (RFC 6455: fragmentation,
//! client masking, control frames) recovers the messages; the
//! `channel.k8s.io` protocols (`v4`/`v5.channel.k8s.io` binary frames whose
//! first byte is the stream id, and the `base64.` variants in text frames)
//! give stdin (`"i"`), stdout and stderr (`"o"`) and resize (`"r"`) events.
//!
//! SPDY sessions (`SPDY/3.1` upgrades, the fallback of kubectl < 1.30) are
//! not decoded: their streams are zlib-compressed header blocks plus data
//! frames and are recorded only as audit events, not as casts.
//!
//! Pure: the caller supplies elapsed times.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use mcp_warden_shared::attrs::Query;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes of cast one session keeps; beyond it the cast is truncated
/// (and says so in a final output line) so a long session cannot exhaust
/// the spool.
pub const DEFAULT_MAX_CAST_BYTES: usize = 8 << 20;
/// Largest WebSocket message the parser reassembles.
const MAX_MESSAGE: usize = 16 << 20;

/// One complete WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Close,
    Ping,
    Pong,
}

/// Incremental parser of one direction of a WebSocket connection.
#[derive(Debug, Default)]
pub struct WsFrameParser {
    buf: Vec<u8>,
    fragment: Option<(u8, Vec<u8>)>,
    /// Set on a protocol violation; later input is ignored.
    pub broken: bool,
}

impl WsFrameParser {
    /// Feed bytes; returns the messages completed by them.
    pub fn push(&mut self, data: &[u8]) -> Vec<WsMessage> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            match self.parse_frame(&self.buf[pos..]) {
                Ok(None) => break,
                Ok(Some((fin, opcode, payload, used))) => {
                    pos += used;
                    if let Err(()) = self.on_frame(fin, opcode, payload, &mut out) {
                        self.broken = true;
                        break;
                    }
                }
                Err(()) => {
                    self.broken = true;
                    break;
                }
            }
        }
        self.buf.drain(..pos.min(self.buf.len()));
        if self.broken {
            self.buf = Vec::new();
        }
        out
    }

    /// `Ok(None)`: need more bytes.
    #[allow(clippy::type_complexity)]
    fn parse_frame(&self, b: &[u8]) -> Result<Option<(bool, u8, Vec<u8>, usize)>, ()> {
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            // RSV bits: an extension (permessage-deflate) we do not decode.
            return Err(());
        }
        let opcode = b[0] & 0x0F;
        let masked = b[1] & 0x80 != 0;
        let mut len = u64::from(b[1] & 0x7F);
        let mut i = 2;
        if len == 126 {
            if b.len() < 4 {
                return Ok(None);
            }
            len = u64::from(u16::from_be_bytes([b[2], b[3]]));
            i = 4;
        } else if len == 127 {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            len = u64::from_be_bytes(a);
            i = 10;
        }
        if len > MAX_MESSAGE as u64 {
            return Err(());
        }
        let len = len as usize;
        let mask = if masked {
            if b.len() < i + 4 {
                return Ok(None);
            }
            let m = [b[i], b[i + 1], b[i + 2], b[i + 3]];
            i += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < i + len {
            return Ok(None);
        }
        let mut payload = b[i..i + len].to_vec();
        if let Some(m) = mask {
            for (k, byte) in payload.iter_mut().enumerate() {
                *byte ^= m[k % 4];
            }
        }
        Ok(Some((fin, opcode, payload, i + len)))
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
        out: &mut Vec<WsMessage>,
    ) -> Result<(), ()> {
        match opcode {
            0x8 => out.push(WsMessage::Close),
            0x9 => out.push(WsMessage::Ping),
            0xA => out.push(WsMessage::Pong),
            0x1 | 0x2 => {
                if self.fragment.is_some() {
                    return Err(());
                }
                if fin {
                    out.push(message(opcode, payload));
                } else {
                    self.fragment = Some((opcode, payload));
                }
            }
            0x0 => {
                let Some((op, mut acc)) = self.fragment.take() else {
                    return Err(());
                };
                if acc.len() + payload.len() > MAX_MESSAGE {
                    return Err(());
                }
                acc.extend_from_slice(&payload);
                if fin {
                    out.push(message(op, acc));
                } else {
                    self.fragment = Some((op, acc));
                }
            }
            _ => return Err(()),
        }
        Ok(())
    }
}

fn message(opcode: u8, payload: Vec<u8>) -> WsMessage {
    if opcode == 0x1 {
        WsMessage::Text(payload)
    } else {
        WsMessage::Binary(payload)
    }
}

/// Header fields of a cast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMeta {
    /// `auditID` of the exec/attach request; names the cast at the collector.
    pub audit_id: String,
    /// e.g. `<auditID> kubectl exec ns/pod -- sh` (see [`session_title`]).
    pub title: String,
    /// Session start, seconds since the Unix epoch.
    pub started_unix_secs: i64,
    /// Header `env` (e.g. `TERM`, `SHELL`).
    pub env: BTreeMap<String, String>,
}

/// The cast title: `<auditID> kubectl exec|attach ns/pod [-c container] -- cmd...`.
pub fn session_title(
    audit_id: &str,
    verb: &str,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    command: &[String],
) -> String {
    let mut t = format!("{audit_id} kubectl {verb} {namespace}/{pod}");
    if let Some(c) = container {
        t.push_str(&format!(" -c {c}"));
    }
    if !command.is_empty() {
        t.push_str(" -- ");
        t.push_str(&command.join(" "));
    }
    t
}

/// Turns Go-style lossy UTF-8 decoding into a stream operation: an
/// incomplete sequence at the end of one frame is completed by the next.
#[derive(Debug, Default)]
struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    fn decode(&mut self, data: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(data);
        let mut out = String::new();
        let mut rest = bytes.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.carry = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

/// Records one exec/attach WebSocket session as an asciicast v2 document.
#[derive(Debug)]
pub struct SessionRecorder {
    meta: SessionMeta,
    base64: bool,
    up: WsFrameParser,
    down: WsFrameParser,
    stdin: Utf8Stream,
    stdout: Utf8Stream,
    stderr: Utf8Stream,
    size: Option<(u32, u32)>,
    events: Vec<u8>,
    max_bytes: usize,
    truncated: bool,
    last_elapsed: f64,
}

#[derive(serde::Deserialize)]
struct Resize {
    #[serde(rename = "Width")]
    width: u32,
    #[serde(rename = "Height")]
    height: u32,
}

impl SessionRecorder {
    /// Start a recording for a tunnel that negotiated `subprotocol`
    /// (`Sec-WebSocket-Protocol` of the 101 response).
    pub fn new(meta: SessionMeta, subprotocol: &str) -> Self {
        Self::with_limit(meta, subprotocol, DEFAULT_MAX_CAST_BYTES)
    }

    /// As `new`, keeping at most `max_bytes` of events.
    pub fn with_limit(meta: SessionMeta, subprotocol: &str, max_bytes: usize) -> Self {
        Self {
            meta,
            base64: subprotocol.contains("base64."),
            up: WsFrameParser::default(),
            down: WsFrameParser::default(),
            stdin: Utf8Stream::default(),
            stdout: Utf8Stream::default(),
            stderr: Utf8Stream::default(),
            size: None,
            events: Vec::new(),
            max_bytes,
            truncated: false,
            last_elapsed: 0.0,
        }
    }

    /// Bytes the client sent to the API server, `elapsed` after the start.
    pub fn client_to_server(&mut self, elapsed: Duration, bytes: &[u8]) {
        for m in self.up.push(bytes) {
            self.on_message(elapsed, m);
        }
    }

    /// Bytes the API server sent to the client, `elapsed` after the start.
    pub fn server_to_client(&mut self, elapsed: Duration, bytes: &[u8]) {
        for m in self.down.push(bytes) {
            self.on_message(elapsed, m);
        }
    }

    /// Whether either direction hit something the parser cannot follow
    /// (the cast then ends there).
    pub fn is_broken(&self) -> bool {
        self.up.broken || self.down.broken
    }

    fn on_message(&mut self, elapsed: Duration, m: WsMessage) {
        let (channel, data) = match m {
            WsMessage::Binary(p) if !self.base64 && !p.is_empty() => (p[0], p[1..].to_vec()),
            WsMessage::Text(p) if self.base64 && !p.is_empty() && p[0].is_ascii_digit() => {
                match base64::engine::general_purpose::STANDARD.decode(&p[1..]) {
                    Ok(d) => (p[0] - b'0', d),
                    Err(_) => return,
                }
            }
            _ => return,
        };
        if data.is_empty() {
            return;
        }
        let t = elapsed.as_secs_f64();
        match channel {
            0 => {
                let s = self.stdin.decode(&data);
                self.event(t, "i", &s);
            }
            1 => {
                let s = self.stdout.decode(&data);
                self.event(t, "o", &s);
            }
            2 => {
                let s = self.stderr.decode(&data);
                self.event(t, "o", &s);
            }
            4 => {
                if let Ok(r) = serde_json::from_slice::<Resize>(&data) {
                    if self.size.is_none() && self.events.is_empty() {
                        self.size = Some((r.width, r.height));
                    } else {
                        self.event(t, "r", &format!("{}x{}", r.width, r.height));
                    }
                }
            }
            // 3: the error/exit status JSON; 255: v5 stream close.
            _ => {}
        }
    }

    fn event(&mut self, t: f64, code: &str, data: &str) {
        if data.is_empty() || self.truncated {
            return;
        }
        // Elapsed times must not go backwards in a cast.
        let t = t.max(self.last_elapsed);
        self.last_elapsed = t;
        let line = match serde_json::to_string(&(round_micros(t), code, data)) {
            Ok(l) => l,
            Err(_) => return,
        };
        if self.events.len() + line.len() + 1 > self.max_bytes {
            self.truncated = true;
            if let Ok(l) = serde_json::to_string(&(
                round_micros(t),
                "o",
                "\r\n[mcp-warden: recording truncated]\r\n",
            )) {
                self.events.extend_from_slice(l.as_bytes());
                self.events.push(b'\n');
            }
            return;
        }
        self.events.extend_from_slice(line.as_bytes());
        self.events.push(b'\n');
    }

    /// The complete cast: header line, then the event lines.
    pub fn finish(self) -> Vec<u8> {
        let (width, height) = self.size.unwrap_or((80, 24));
        let header = serde_json::json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": self.meta.started_unix_secs,
            "env": self.meta.env,
            "title": self.meta.title,
        });
        let mut out = header.to_string().into_bytes();
        out.push(b'\n');
        out.extend_from_slice(&self.events);
        out
    }

    /// The `auditID` this cast belongs to.
    pub fn audit_id(&self) -> &str {
        &self.meta.audit_id
    }
}

fn round_micros(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

/// Whether `id` may name a session at the collector (`/sessions/<id>`).
pub fn valid_audit_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && id != "."
        && id != ".."
}

/// The spool payload of a session record: `auditID`, a newline, the cast.
pub fn encode_session_record(audit_id: &str, cast: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(audit_id.len() + 1 + cast.len());
    v.extend_from_slice(audit_id.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(cast);
    v
}

/// Inverse of [`encode_session_record`]; `None` if malformed.
pub fn decode_session_record(payload: &[u8]) -> Option<(&str, &[u8])> {
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(&payload[..nl]).ok()?;
    valid_audit_id(id).then_some((id, &payload[nl + 1..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// Encode one WebSocket frame (masked when `mask` is given, as clients must).
    pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xFFFF => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    fn chan(c: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![c];
        v.extend_from_slice(data);
        v
    }

    fn meta() -> SessionMeta {
        SessionMeta {
            audit_id: "0e5c7a1d-1111-4222-8333-944455556666".into(),
            title: session_title(
                "0e5c7a1d-1111-4222-8333-944455556666",
                "exec",
                "default",
                "web-0",
                None,
                &["sh".into()],
            ),
            started_unix_secs: 1_700_000_000,
            env: BTreeMap::from([("TERM".to_string(), "xterm-256color".to_string())]),
        }
    }

    #[test]
    fn parser_handles_masking_fragments_and_split_input() {
        let key = Some([1, 2, 3, 4]);
        let mut wire = frame(false, 0x2, b"hel", key);
        wire.extend(frame(true, 0x9, b"", key)); // ping between fragments
        wire.extend(frame(true, 0x0, b"lo", key));
        wire.extend(frame(true, 0x1, &vec![b'x'; 300], None));
        wire.extend(frame(true, 0x2, &vec![b'y'; 70_000], None));
        let mut p = WsFrameParser::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            got.extend(p.push(chunk));
        }
        assert_eq!(
            got,
            vec![
                WsMessage::Ping,
                WsMessage::Binary(b"hello".to_vec()),
                WsMessage::Text(vec![b'x'; 300]),
                WsMessage::Binary(vec![b'y'; 70_000])
            ]
        );
        assert!(!p.broken);
        // Continuation without a start is a protocol error, never a panic.
        let mut p = WsFrameParser::default();
        assert!(p.push(&frame(true, 0x0, b"x", None)).is_empty());
        assert!(p.broken);
        let mut p = WsFrameParser::default();
        p.push(&[0xFF, 0xFF, 0xFF]);
        assert!(p.broken);
    }

    #[test]
    fn echo_session_replays_in_order() {
        let mut r = SessionRecorder::new(meta(), "v5.channel.k8s.io");
        let ms = Duration::from_millis;
        let key = Some([9, 8, 7, 6]);
        // Server signals ready streams with empty frames, client sends size.
        r.server_to_client(ms(1), &frame(true, 2, &chan(1, b""), None));
        r.client_to_server(
            ms(2),
            &frame(true, 2, &chan(4, br#"{"Width":120,"Height":40}"#), key),
        );
        r.server_to_client(ms(10), &frame(true, 2, &chan(1, b"$ "), None));
        let typed = frame(true, 2, &chan(0, b"echo hello\n"), key);
        r.client_to_server(ms(20), &typed[..5]);
        r.client_to_server(ms(21), &typed[5..]);
        // "héllo" split inside the two-byte 'é' across frames.
        let out = "echo hello\r\nhéllo\r\n".as_bytes();
        let cut = out.iter().position(|&b| b == 0xC3).unwrap() + 1;
        r.server_to_client(ms(30), &frame(true, 2, &chan(1, &out[..cut]), None));
        r.server_to_client(ms(31), &frame(true, 2, &chan(1, &out[cut..]), None));
        r.server_to_client(ms(40), &frame(true, 2, &chan(2, b"warn\n"), None));
        r.client_to_server(
            ms(50),
            &frame(true, 2, &chan(4, br#"{"Width":100,"Height":30}"#), key),
        );
        r.server_to_client(
            ms(60),
            &frame(true, 2, &chan(3, br#"{"status":"Success"}"#), None),
        );
        r.server_to_client(ms(61), &frame(true, 8, b"", None));
        assert!(!r.is_broken());
        let cast = String::from_utf8(r.finish()).unwrap();
        let mut lines = cast.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(header["width"], 120);
        assert_eq!(header["height"], 40);
        assert_eq!(header["timestamp"], 1_700_000_000);
        assert_eq!(header["env"]["TERM"], "xterm-256color");
        assert_eq!(
            header["title"],
            "0e5c7a1d-1111-4222-8333-944455556666 kubectl exec default/web-0 -- sh"
        );
        let events: Vec<(f64, String, String)> =
            lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(
            events.windows(2).all(|w| w[0].0 <= w[1].0),
            "times never go backwards"
        );
        let output: String = events
            .iter()
            .filter(|e| e.1 == "o")
            .map(|e| e.2.as_str())
            .collect();
        assert_eq!(output, "$ echo hello\r\nhéllo\r\nwarn\n");
        let input: String = events
            .iter()
            .filter(|e| e.1 == "i")
            .map(|e| e.2.as_str())
            .collect();
        assert_eq!(input, "echo hello\n");
        assert!(events.iter().any(|e| e.1 == "r" && e.2 == "100x30"));
        let hello_out = events
            .iter()
            .position(|e| e.1 == "o" && e.2.contains("hello"))
            .unwrap();
        let typed_in = events.iter().position(|e| e.1 == "i").unwrap();
        assert!(typed_in < hello_out, "input precedes its echo");
        assert_eq!(events[0], (0.01, "o".to_string(), "$ ".to_string()));
    }

    #[test]
    fn base64_protocol_and_truncation() {
        let mut r = SessionRecorder::with_limit(meta(), "base64.channel.k8s.io", 200);
        let b64 = |c: char, d: &[u8]| {
            format!("{c}{}", base64::engine::general_purpose::STANDARD.encode(d)).into_bytes()
        };
        r.server_to_client(
            Duration::from_millis(5),
            &frame(true, 1, &b64('1', b"hi there"), None),
        );
        for i in 0..50 {
            r.server_to_client(
                Duration::from_millis(10 + i),
                &frame(true, 1, &b64('1', b"0123456789"), None),
            );
        }
        let cast = String::from_utf8(r.finish()).unwrap();
        assert!(cast.contains("hi there"));
        assert!(cast.contains("recording truncated"));
        assert!(cast.len() < 600);
    }

    #[test]
    fn session_record_codec() {
        let p = encode_session_record("abc-1", b"{\"version\":2}\n");
        assert_eq!(
            decode_session_record(&p),
            Some(("abc-1", b"{\"version\":2}\n".as_slice()))
        );
        assert!(decode_session_record(b"../etc\nx").is_none());
        assert!(decode_session_record(b"no-newline").is_none());
    }
}

/// A recording in progress, shared by the two halves of a tunnel.
#[derive(Debug, Clone)]
pub struct SessionTap {
    rec: Arc<Mutex<SessionRecorder>>,
    start: Instant,
}

/// The app's side of an upgraded connection, recorded: what is read from
/// it went to the API server (`client_to_server`), what is written to it
/// came from the API server (`server_to_client`). Bytes pass unchanged.
#[derive(Debug)]
pub struct TappedIo<T> {
    inner: T,
    tap: SessionTap,
}

impl SessionTap {
    /// Start recording a session.
    pub fn new(meta: SessionMeta, subprotocol: &str) -> Self {
        Self {
            rec: Arc::new(Mutex::new(SessionRecorder::new(meta, subprotocol))),
            start: Instant::now(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut SessionRecorder, Duration) -> R) -> R {
        let mut r = self.rec.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r, self.start.elapsed())
    }

    /// Wrap the app's side of the tunnel (the upgraded client connection).
    pub fn wrap<T>(&self, io: T) -> TappedIo<T> {
        TappedIo {
            inner: io,
            tap: self.clone(),
        }
    }

    /// The `auditID` of the session.
    pub fn audit_id(&self) -> String {
        self.with(|r, _| r.audit_id().to_string())
    }

    /// The cast so far (call when the tunnel has closed).
    pub fn finish(&self) -> Vec<u8> {
        self.with(|r, _| {
            let meta = r.meta.clone();
            let base64 = r.base64;
            let done = std::mem::replace(
                r,
                SessionRecorder::new(meta, if base64 { "base64." } else { "" }),
            );
            done.finish()
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TappedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.tap.with(|rec, t| rec.client_to_server(t, new));
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TappedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let n = (*n).min(buf.len());
            self.tap.with(|rec, t| rec.server_to_client(t, &buf[..n]));
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `command` parameters (in order) and `container` of an exec/attach query.
pub fn exec_query(query: &str) -> (Vec<String>, Option<String>) {
    let q = Query::parse(query);
    let command = q.all("command").into_iter().map(str::to_string).collect();
    (command, q.get("container").map(str::to_string))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tap_tests {
    use super::tests::frame;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn exec_query_decodes() {
        let (cmd, c) = exec_query(
            "command=sh&command=-c&command=echo%20hi%2Bthere&container=app&stdin=true&tty=true",
        );
        assert_eq!(cmd, vec!["sh", "-c", "echo hi+there"]);
        assert_eq!(c.as_deref(), Some("app"));
        let (cmd, c) = exec_query("command=%zz&command=%4");
        assert_eq!(cmd, vec!["%zz", "%4"]);
        assert!(c.is_none());
    }

    /// A tunnel through `copy_bidirectional`, as the proxy runs it, with the
    /// app's side wrapped: the cast shows the echoed output in order.
    #[tokio::test]
    async fn tapped_tunnel_records_both_directions() {
        let (app, app_side) = tokio::io::duplex(64);
        let (upstream_side, mut server) = tokio::io::duplex(64);
        let meta = SessionMeta {
            audit_id: "a-1".into(),
            title: "a-1 kubectl exec default/web-0 -- sh".into(),
            started_unix_secs: 0,
            env: BTreeMap::new(),
        };
        let tap = SessionTap::new(meta, "v5.channel.k8s.io");
        let mut client = tap.wrap(app_side);
        let mut upstream = upstream_side;
        let tunnel =
            tokio::spawn(
                async move { tokio::io::copy_bidirectional(&mut client, &mut upstream).await },
            );
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let mut to_server = Vec::new();
        for line in ["echo a\n", "echo b\n"] {
            let mut payload = vec![0u8];
            payload.extend_from_slice(line.as_bytes());
            let f = frame(true, 2, &payload, Some([1, 2, 3, 4]));
            app_w.write_all(&f).await.unwrap();
            // The "API server" reads the frame and echoes.
            let mut got = vec![0u8; f.len()];
            server.read_exact(&mut got).await.unwrap();
            to_server.extend_from_slice(&got);
            let word = &line[5..6];
            let mut out = vec![1u8];
            out.extend_from_slice(format!("{}\r\n{word}\r\n", line.trim_end()).as_bytes());
            server.write_all(&frame(true, 2, &out, None)).await.unwrap();
            let mut echoed = vec![0u8; out.len() + 2];
            app_r.read_exact(&mut echoed).await.unwrap();
        }
        drop(server);
        drop(app_w);
        drop(app_r);
        let _ = tunnel.await.unwrap();
        let cast = String::from_utf8(tap.finish()).unwrap();
        let events: Vec<(f64, String, String)> = cast
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let out: String = events
            .iter()
            .filter(|e| e.1 == "o")
            .map(|e| e.2.as_str())
            .collect();
        assert_eq!(out, "echo a\r\na\r\necho b\r\nb\r\n");
        let inp: Vec<&str> = events
            .iter()
            .filter(|e| e.1 == "i")
            .map(|e| e.2.as_str())
            .collect();
        assert_eq!(inp, vec!["echo a\n", "echo b\n"]);
        assert_eq!(tap.audit_id(), "a-1");
    }
}
