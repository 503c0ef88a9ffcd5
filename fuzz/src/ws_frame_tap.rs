//! `ws_frame_tap`: the WebSocket frame tap that records exec/attach sessions
//! (`sidecar/src/recording/asciicast.rs`: `WsFrameParser`, `SessionRecorder`).
//!
//! Byte 0 chooses the mode (bit 0) and the subprotocol (bit 1:
//! `v5.channel.k8s.io` or `base64.channel.k8s.io`); byte 1 seeds the splits
//! and the cast size limit.
//!
//! - Raw mode (bit 0 = 0): the rest is a sequence of records
//!   `[dir:1 | len:7][len bytes]` fed to the recorder, bit 7 = client to
//!   server. Properties: the parser reads the same messages whatever the
//!   chunking; the cast is a JSON header line and event lines
//!   `[time, "i"|"o"|"r", data]` with times that never go backwards, and it
//!   stays within its size limit (plus the truncation notice).
//! - Generated mode (bit 0 = 1): the rest drives [`arbitrary`] to build a
//!   valid session: stdin and stdout text split into channel messages, each
//!   message into fragments (with control frames between them), each frame
//!   with any length encoding and with or without a mask, sent in arbitrary
//!   chunks. Properties: the parser yields exactly the messages sent, and
//!   the cast's `"i"` and `"o"` data are exactly the text sent (UTF-8
//!   characters split across frames included).

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mcp_warden_sidecar::recording::asciicast::{
    SessionMeta, SessionRecorder, WsFrameParser, WsMessage,
};
use serde_json::Value;

use crate::Splitter;

fn meta() -> SessionMeta {
    SessionMeta {
        audit_id: "fuzz".into(),
        title: "fuzz kubectl exec default/p -- sh".into(),
        started_unix_secs: 0,
        env: Default::default(),
    }
}

fn protocol(mode: u8) -> &'static str {
    if mode & 2 == 0 {
        "v5.channel.k8s.io"
    } else {
        "base64.channel.k8s.io"
    }
}

/// The property check; panics on a violation.
pub fn check(data: &[u8]) {
    let [mode, seed, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        raw(*mode, *seed, rest);
    } else {
        generated(*mode, *seed, rest);
    }
}

/// Parse `bytes` pushed in the given chunks.
pub fn parse_all(chunks: &[&[u8]]) -> (Vec<WsMessage>, bool) {
    let mut p = WsFrameParser::default();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(p.push(c));
    }
    (out, p.broken)
}

fn raw(mode: u8, seed: u8, mut rest: &[u8]) {
    let limit = 64 + usize::from(seed) * 64;
    let mut rec = SessionRecorder::with_limit(meta(), protocol(mode), limit);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut up_chunks, mut down_chunks) = (Vec::new(), Vec::new());
    let mut t = 0u64;
    while let [hdr, tail @ ..] = rest {
        let n = usize::from(hdr & 0x7f).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        rest = tail;
        // Time goes back now and then: the cast must not.
        t = if t % 5 == 4 { t / 2 } else { t + 1 };
        let at = Duration::from_millis(t * 37);
        if hdr & 0x80 != 0 {
            rec.client_to_server(at, bytes);
            up.extend_from_slice(bytes);
            up_chunks.push(bytes);
        } else {
            rec.server_to_client(at, bytes);
            down.extend_from_slice(bytes);
            down_chunks.push(bytes);
        }
    }
    for (whole, chunks) in [(&up, &up_chunks), (&down, &down_chunks)] {
        let a = parse_all(&[whole.as_slice()]);
        let b = parse_all(chunks);
        assert_eq!(a, b, "frame parsing depends on the chunking");
    }
    let cast = rec.finish();
    let events = check_cast(&cast);
    let event_bytes: usize = cast.len() - cast.iter().position(|&b| b == b'\n').unwrap_or(0) - 1;
    let notice = 80;
    assert!(
        event_bytes <= limit + notice,
        "cast of {event_bytes} bytes over its limit {limit} ({} events)",
        events.len()
    );
}

/// Check the cast's shape; returns the events `(time, code, data)`.
fn check_cast(cast: &[u8]) -> Vec<(f64, String, String)> {
    let text = std::str::from_utf8(cast).expect("a cast is UTF-8");
    let mut lines = text.split_terminator('\n');
    let header: Value =
        serde_json::from_str(lines.next().expect("a header line")).expect("header is JSON");
    assert_eq!(header["version"], 2, "header: {header}");
    assert!(
        header["width"].is_u64() && header["height"].is_u64(),
        "header: {header}"
    );
    let mut events = Vec::new();
    let mut last = 0.0f64;
    for l in lines {
        let (t, code, data): (f64, String, String) =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"));
        assert!(matches!(code.as_str(), "i" | "o" | "r"), "event code {l}");
        assert!(t >= last && t.is_finite(), "time went backwards at {l}");
        last = t;
        events.push((t, code, data));
    }
    events
}

// ------------------------------------------------------------ generated mode

#[derive(Debug, Arbitrary)]
struct Session {
    /// Text typed (stdin, client to server) and printed (stdout).
    stdin: String,
    stdout: String,
    /// Where the texts are cut into channel messages (byte offsets, any,
    /// also inside a UTF-8 character).
    cuts: Vec<u16>,
    /// How each message is framed.
    framing: Vec<Framing>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
struct Framing {
    /// Fragments of the message (1 + fragments % 4).
    fragments: u8,
    /// 0: minimal length, 1: 16-bit, 2: 64-bit.
    len_form: u8,
    mask: Option<[u8; 4]>,
    /// A control frame (ping/pong) before the last fragment.
    control: Option<bool>,
}

/// Encode one frame.
pub fn frame(
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    len_form: u8,
) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    match len_form % 3 {
        0 if n < 126 => f.push(m | n as u8),
        0 | 1 if n <= usize::from(u16::MAX) => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
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

/// Cut `text` at the offsets in `cuts` (clamped), never into empty pieces.
fn cut<'a>(text: &'a [u8], cuts: &mut impl Iterator<Item = u16>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let n = cuts
            .next()
            .map_or(rest.len(), |c| 1 + usize::from(c) % rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

fn generated(mode: u8, seed: u8, rest: &[u8]) {
    let Ok(s) = Session::arbitrary(&mut Unstructured::new(rest)) else {
        return;
    };
    let b64 = mode & 2 != 0;
    let mut cuts = s.cuts.iter().copied().cycle();
    let mut framings = s.framing.iter().copied().cycle();
    let mut rec = SessionRecorder::new(meta(), protocol(mode));
    for (channel, text) in [(0u8, s.stdin.as_bytes()), (1u8, s.stdout.as_bytes())] {
        let pieces = if s.cuts.is_empty() {
            vec![text].into_iter().filter(|t| !t.is_empty()).collect()
        } else {
            cut(text, &mut cuts)
        };
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for piece in pieces {
            let (opcode, msg) = if b64 {
                let mut m = vec![b'0' + channel];
                m.extend_from_slice(B64.encode(piece).as_bytes());
                (1u8, m)
            } else {
                let mut m = vec![channel];
                m.extend_from_slice(piece);
                (2u8, m)
            };
            let fr = framings.next().unwrap_or(Framing {
                fragments: 0,
                len_form: 0,
                mask: None,
                control: None,
            });
            let n_frag = 1 + usize::from(fr.fragments % 4);
            let size = msg.len().div_ceil(n_frag).max(1);
            let parts: Vec<&[u8]> = msg.chunks(size).collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                if last
                    && parts.len() > 1
                    && let Some(ping) = fr.control
                {
                    let op = if ping { 0x9 } else { 0xA };
                    wire.extend(frame(true, op, b"hb", fr.mask, fr.len_form));
                    expected.push(if ping {
                        WsMessage::Ping
                    } else {
                        WsMessage::Pong
                    });
                }
                let op = if i == 0 { opcode } else { 0 };
                wire.extend(frame(last, op, part, fr.mask, fr.len_form));
            }
            expected.push(if b64 {
                WsMessage::Text(msg)
            } else {
                WsMessage::Binary(msg)
            });
        }
        let chunks = Splitter::new(seed).split(&wire);
        let (got, broken) = parse_all(&chunks);
        assert!(!broken, "valid frames broke the parser");
        assert_eq!(got, expected, "messages differ from those sent");
        let at = Duration::from_millis(u64::from(channel));
        for c in &chunks {
            if channel == 0 {
                rec.client_to_server(at, c);
            } else {
                rec.server_to_client(at, c);
            }
        }
    }
    assert!(!rec.is_broken());
    let events = check_cast(&rec.finish());
    let typed: String = events
        .iter()
        .filter(|e| e.1 == "i")
        .map(|e| e.2.as_str())
        .collect();
    let printed: String = events
        .iter()
        .filter(|e| e.1 == "o")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(
        typed, s.stdin,
        "stdin in the cast differs from what was typed"
    );
    assert_eq!(
        printed, s.stdout,
        "stdout in the cast differs from what was printed"
    );
}
