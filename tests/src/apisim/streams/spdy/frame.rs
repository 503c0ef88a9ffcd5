//! SPDY/3.1 frame codec: the framing client-go's `spdystream` speaks for
//! `pods/exec`, `pods/attach` and `pods/portforward` after an
//! `Upgrade: SPDY/3.1`. Pure: bytes in, frames out, and back.
//!
//! Header blocks of SYN_STREAM / SYN_REPLY / HEADERS are zlib-compressed with
//! one compression context per direction for the whole connection, seeded
//! with the fixed SPDY/3 dictionary; that is why [`Codec`] is stateful.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// SPDY protocol version carried in control frames.
pub const VERSION: u16 = 3;
/// FLAG_FIN on DATA and SYN_STREAM/SYN_REPLY/HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Initial per-stream flow-control window (SPDY/3.1 §2.6.8).
pub const INITIAL_WINDOW: i64 = 64 * 1024;
/// SETTINGS id of SETTINGS_INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// Largest frame payload we accept (a frame length is 24 bits anyway); keeps a
/// hostile peer from making us buffer more.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Largest decompressed header block we accept.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// RST_STREAM status codes we send.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const CANCEL: u32 = 5;
}

/// Control frame types.
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// Header name/value pairs; names lower-case (SPDY requires it), a value with
/// several entries joined by NUL as on the wire.
pub type Headers = Vec<(String, String)>;

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        assoc_id: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type we do not know; SPDY says ignore it.
    Unknown {
        kind: u16,
    },
}

/// Codec failures; any of them ends the session (SPDY has no recovery from a
/// broken compression context).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY frame too large: {len} bytes")]
    TooLarge { len: usize },
    #[error("unsupported SPDY version {version}")]
    Version { version: u16 },
    #[error("malformed SPDY {what} frame")]
    Malformed { what: &'static str },
    #[error("SPDY header block: {detail}")]
    HeaderBlock { detail: String },
}

/// The SPDY/3 zlib dictionary (draft 3, §2.6.10.1): length-prefixed words
/// followed by a run of common header values.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    );
    let mut d = Vec::with_capacity(1424);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// Per-connection codec state: one zlib context each way.
pub struct Codec {
    dict: Vec<u8>,
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Self {
        Codec {
            dict: dictionary(),
            deflate: Compress::new(Compression::default(), true),
            inflate: Decompress::new(true),
        }
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_len(out, *flags, data.len())?;
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                assoc_id,
                priority,
                slot,
                flags,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                let mut body = BytesMut::with_capacity(10 + block.len());
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(assoc_id & 0x7fff_ffff);
                body.put_u8((priority & 0x07) << 5);
                body.put_u8(*slot);
                body.extend_from_slice(&block);
                put_control(out, kind::SYN_STREAM, *flags, &body)?;
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let body = self.stream_and_block(*stream_id, headers)?;
                put_control(out, kind::SYN_REPLY, *flags, &body)?;
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let body = self.stream_and_block(*stream_id, headers)?;
                put_control(out, kind::HEADERS, *flags, &body)?;
            }
            Frame::RstStream { stream_id, status } => {
                put_control(
                    out,
                    kind::RST_STREAM,
                    0,
                    &two_words(stream_id & 0x7fff_ffff, *status),
                )?;
            }
            Frame::Settings { flags, entries } => {
                let mut body = BytesMut::with_capacity(4 + 8 * entries.len());
                body.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    body.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                put_control(out, kind::SETTINGS, *flags, &body)?;
            }
            Frame::Ping { id } => put_control(out, kind::PING, 0, &id.to_be_bytes())?,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control(
                    out,
                    kind::GOAWAY,
                    0,
                    &two_words(last_good_stream_id & 0x7fff_ffff, *status),
                )?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control(
                    out,
                    kind::WINDOW_UPDATE,
                    0,
                    &two_words(stream_id & 0x7fff_ffff, delta & 0x7fff_ffff),
                )?;
            }
            Frame::Unknown { .. } => return Err(FrameError::Malformed { what: "unknown" }),
        }
        Ok(())
    }

    /// Takes one complete frame off the front of `buf`; `Ok(None)` when more
    /// bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge { len });
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let mut head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version { version });
        }
        let frame = match (first & 0xffff) as u16 {
            kind::SYN_STREAM => {
                need(&body, 10, "SYN_STREAM")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let assoc_id = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                let slot = body.get_u8();
                let headers = self.decompress_headers(&body)?;
                Frame::SynStream {
                    stream_id,
                    assoc_id,
                    priority,
                    slot,
                    flags,
                    headers,
                }
            }
            kind::SYN_REPLY => {
                need(&body, 4, "SYN_REPLY")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers: self.decompress_headers(&body)?,
                }
            }
            kind::HEADERS => {
                need(&body, 4, "HEADERS")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                Frame::Headers {
                    stream_id,
                    flags,
                    headers: self.decompress_headers(&body)?,
                }
            }
            kind::RST_STREAM => {
                need(&body, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            kind::SETTINGS => {
                need(&body, 4, "SETTINGS")?;
                let n = body.get_u32() as usize;
                if body.len() != n.saturating_mul(8) {
                    return Err(FrameError::Malformed { what: "SETTINGS" });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let w = body.get_u32();
                    entries.push(((w >> 24) as u8, w & 0x00ff_ffff, body.get_u32()));
                }
                Frame::Settings { flags, entries }
            }
            kind::PING => {
                need(&body, 4, "PING")?;
                Frame::Ping { id: body.get_u32() }
            }
            kind::GOAWAY => {
                need(&body, 4, "GOAWAY")?;
                let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            kind::WINDOW_UPDATE => {
                need(&body, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }

    fn stream_and_block(
        &mut self,
        stream_id: u32,
        headers: &Headers,
    ) -> Result<BytesMut, FrameError> {
        let block = self.compress_headers(headers)?;
        let mut body = BytesMut::with_capacity(4 + block.len());
        body.put_u32(stream_id & 0x7fff_ffff);
        body.extend_from_slice(&block);
        Ok(body)
    }

    fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            plain.extend_from_slice(&(name.len() as u32).to_be_bytes());
            plain.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            plain.extend_from_slice(&(value.len() as u32).to_be_bytes());
            plain.extend_from_slice(value.as_bytes());
        }
        let zerr = |e: flate2::CompressError| FrameError::HeaderBlock {
            detail: e.to_string(),
        };
        if self.deflate.total_in() == 0 && self.deflate.total_out() == 0 {
            self.deflate.set_dictionary(&self.dict).map_err(zerr)?;
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input: &[u8] = &plain;
        // Bounded: each round either consumes input or grows the buffer.
        for _ in 0..64 {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(zerr)?;
            let consumed = (self.deflate.total_in() - before_in) as usize;
            input = &input[consumed..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                break;
            }
        }
        Err(FrameError::HeaderBlock {
            detail: "compression did not finish".into(),
        })
    }

    fn decompress_headers(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let bad = |detail: String| FrameError::HeaderBlock { detail };
        let mut plain: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        let mut rounds = 0;
        while !input.is_empty() || plain.len() == plain.capacity() {
            rounds += 1;
            if rounds > 4096 || plain.len() > MAX_HEADER_BLOCK {
                return Err(bad("header block too large".into()));
            }
            plain.reserve(1024);
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            match self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dict)
                        .map_err(|e| bad(e.to_string()))?;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
            let consumed = (self.inflate.total_in() - before_in) as usize;
            input = &input[consumed..];
            if consumed == 0
                && self.inflate.total_out() == before_out
                && plain.len() < plain.capacity()
            {
                break;
            }
        }
        parse_header_block(&plain)
    }
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    let bad = || FrameError::HeaderBlock {
        detail: "truncated name/value block".into(),
    };
    if b.len() < 4 {
        return Err(bad());
    }
    let n = b.get_u32() as usize;
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let take = |b: &mut &[u8]| -> Result<String, FrameError> {
            if b.len() < 4 {
                return Err(bad());
            }
            let len = b.get_u32() as usize;
            if b.len() < len {
                return Err(bad());
            }
            let s = String::from_utf8_lossy(&b[..len]).into_owned();
            b.advance(len);
            Ok(s)
        };
        let name = take(&mut b)?;
        let value = take(&mut b)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

fn need(body: &Bytes, n: usize, what: &'static str) -> Result<(), FrameError> {
    if body.len() < n {
        Err(FrameError::Malformed { what })
    } else {
        Ok(())
    }
}

fn two_words(a: u32, b: u32) -> [u8; 8] {
    let mut w = [0u8; 8];
    w[..4].copy_from_slice(&a.to_be_bytes());
    w[4..].copy_from_slice(&b.to_be_bytes());
    w
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > 0x00ff_ffff {
        return Err(FrameError::TooLarge { len });
    }
    out.put_u32((u32::from(flags) << 24) | len as u32);
    Ok(())
}

fn put_control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) -> Result<(), FrameError> {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, flags, body.len())?;
    out.extend_from_slice(body);
    Ok(())
}

/// Header value lookup by case-insensitive name.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A SPDY/3.1 send window: how many DATA bytes we may still send on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(pub i64);

impl Window {
    /// How many of `want` bytes may be sent now.
    pub fn allowance(self, want: usize) -> usize {
        if self.0 <= 0 {
            0
        } else {
            want.min(self.0 as usize)
        }
    }
    pub fn consume(&mut self, n: usize) {
        self.0 -= n as i64;
    }
    pub fn grow(&mut self, delta: i64) {
        self.0 = self.0.saturating_add(delta);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn roundtrip(frames: Vec<Frame>) {
        let mut tx = Codec::new();
        let mut rx = Codec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            tx.encode(f, &mut wire).unwrap();
        }
        let mut got = Vec::new();
        while let Some(f) = rx.decode(&mut wire).unwrap() {
            got.push(f);
        }
        assert!(wire.is_empty());
        assert_eq!(got, frames);
    }

    #[test]
    fn dictionary_matches_spec_size() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(d.ends_with(b",utf-,*,enq=0."));
    }

    #[test]
    fn all_frame_kinds_round_trip() {
        let h: Headers = vec![
            ("streamtype".into(), "error".into()),
            ("port".into(), "8080".into()),
        ];
        roundtrip(vec![
            Frame::SynStream {
                stream_id: 1,
                assoc_id: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: h.clone(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                assoc_id: 0,
                priority: 7,
                slot: 0,
                flags: FLAG_FIN,
                headers: h.clone(),
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: h,
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536)],
            },
            Frame::Ping { id: 7 },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1234,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ]);
    }

    #[test]
    fn header_block_uses_the_dictionary() {
        let mut c = Codec::new();
        let block = c
            .compress_headers(&vec![("content-type".into(), "text/plain".into())])
            .unwrap();
        // zlib header with FDICT set and the Adler-32 of the SPDY dictionary.
        assert_eq!(block[1] & 0x20, 0x20);
        let (mut a, mut b) = (1u32, 0u32);
        for byte in dictionary() {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(block[2..6], ((b << 16) | a).to_be_bytes());
        let mut d = Codec::new();
        let mut body = BytesMut::new();
        body.put_u32(1);
        body.extend_from_slice(&block);
        let mut wire = BytesMut::new();
        put_control(&mut wire, kind::SYN_REPLY, 0, &body).unwrap();
        let f = d.decode(&mut wire).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![("content-type".into(), "text/plain".into())]
            }
        );
    }

    #[test]
    fn incomplete_input_waits_for_more() {
        let mut tx = Codec::new();
        let mut wire = BytesMut::new();
        tx.encode(&Frame::Ping { id: 1 }, &mut wire).unwrap();
        let mut rx = Codec::new();
        let mut part = wire.split_to(5);
        assert_eq!(rx.decode(&mut part).unwrap(), None);
        part.unsplit(wire);
        assert_eq!(rx.decode(&mut part).unwrap(), Some(Frame::Ping { id: 1 }));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut rx = Codec::new();
        let mut wire = BytesMut::from(
            &b"\x80\x03\x00\x01\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00garb"[..],
        );
        assert!(rx.decode(&mut wire).is_err());
        let mut v2 = BytesMut::from(&b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"[..]);
        assert_eq!(
            Codec::new().decode(&mut v2),
            Err(FrameError::Version { version: 2 })
        );
        let mut short = BytesMut::from(&b"\x80\x03\x00\x03\x00\x00\x00\x02\x00\x00"[..]);
        assert!(Codec::new().decode(&mut short).is_err());
    }

    #[test]
    fn window_limits_sending() {
        let mut w = Window(INITIAL_WINDOW);
        assert_eq!(w.allowance(10), 10);
        w.consume(INITIAL_WINDOW as usize);
        assert_eq!(w.allowance(10), 0);
        w.grow(4);
        assert_eq!(w.allowance(10), 4);
    }
}
