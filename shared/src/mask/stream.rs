//! Streaming masker: masks a body as it arrives, chunk by chunk, with memory
//! bounded by the largest single value it must hold, not by the body.
//!
//! - [`StreamKind::Json`]: one JSON document. When it is a list (`items`) or
//!   a `Table` (`rows`), a small tokenizer (depth, strings, escapes) finds the
//!   elements' boundaries; each element is masked alone and emitted (from
//!   its bytes with splices where values changed, or by the tree engine:
//!   verbatim when nothing was masked, else re-serialized; see the module
//!   docs of `mask` for which takes which); the text around
//!   the array (`kind`, `metadata`, separators) is checked and passed on.
//!   Any other document is held whole and masked at its end. A document
//!   that ends within its first [`DEFAULT_HOLD_BYTES`] is not scanned as it
//!   comes: at its end an object with no `items` or `rows` key is masked
//!   whole from its bytes, and anything else scanned then as above.
//!   A list `kind` that contradicts the path is refused, in the head or in
//!   the tail (after the items); a `kind` in both head and tail is a
//!   duplicate and refused.
//! - [`StreamKind::Watch`]: a sequence of JSON values (one watch event per
//!   line from kube-apiserver); each is masked and emitted as soon as it ends.
//!   A value that is not an event (`type` + `object`, no `kind`) or a plain
//!   `Status` is refused.
//! - [`StreamKind::Log`]: text, line by line, detectors (with the log-only
//!   ones) and the context's scrub set; a private key spread over several
//!   lines is masked from its BEGIN to its END line.
//!
//! A duplicate `kind` key anywhere is refused (the client and the masker
//! could read different kinds).
//!
//! Malformed or truncated input is an error; after an error the masker emits
//! nothing more.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::bytes::{Shape, with_scratch};
use super::detect::Detectors;
use super::engine::{check_watch_value, is_list_verb, list_kind_contradicts};
use super::scrub::ScrubSet;
use super::{MaskContext, MaskError, Masker, check_document, json_error};

/// Default bound on one buffered value (a list item, a watch event, a
/// non-list document). etcd caps objects at ~1.5 MiB; this leaves room for
/// large Tables and custom resources while bounding a hostile upstream.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 << 20;

/// A JSON document is held unscanned while it is no longer than this, in
/// case it ends there: most responses are one object of a few KiB, which the
/// byte path then masks whole, without the tokenizer's pass over it first
/// (the scan that finds a list's items, ~16 instructions a byte of a Pod).
/// A list this short is masked at its end instead of item by item.
pub const DEFAULT_HOLD_BYTES: usize = 16 << 10;

/// The keys of a streamed array, as searched for in a held document: built
/// once (a one-shot `memmem::find` builds its searcher every call).
static LIST_KEYS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
    std::sync::LazyLock::new(|| {
        [
            memchr::memmem::Finder::new(b"\"items\""),
            memchr::memmem::Finder::new(b"\"rows\""),
        ]
    });

/// A log line longer than this is masked and passed on in pieces, so a
/// `follow` stream that never sends a newline cannot grow the buffer.
const MAX_LOG_LINE: usize = 1 << 20;

/// What kind of body a [`StreamMasker`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// One JSON document (object, list, Table, Status...).
    Json,
    /// A stream of JSON watch events.
    Watch,
    /// Plain text (pod logs), masked line by line.
    Log,
}

/// Resumable scanner for one JSON value: tracks nesting depth, strings and
/// escapes; the value's content is validated later by serde_json.
#[derive(Debug, Clone, Copy, Default)]
struct ValueScan {
    started: bool,
    depth: u32,
    in_str: bool,
    esc: bool,
    scalar: bool,
}

impl ValueScan {
    /// Scan `buf[from..]`; the first byte of the value must be at or after
    /// `from` when not started. Returns the end (exclusive) once the value is
    /// complete, and the position scanned to otherwise.
    ///
    /// The state lives in locals while scanning and is stored once on the
    /// way out: this runs over every byte of every list item before the
    /// byte path parses it, and kept in `self` it cost ~90 instructions a
    /// string of a Pod list (13 % of the masker there).
    fn feed(&mut self, buf: &[u8], from: usize) -> Result<Result<usize, usize>, &'static str> {
        let len = buf.len();
        let mut i = from;
        if !self.started {
            let Some(&b) = buf.get(i) else {
                return Ok(Err(len.max(i)));
            };
            self.started = true;
            match b {
                b'{' | b'[' => self.depth = 1,
                b'"' => self.in_str = true,
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.scalar = true,
                _ => return Err("expected a JSON value"),
            }
            i += 1;
        }
        if self.scalar {
            let end = buf.get(i..).and_then(|rest| {
                rest.iter()
                    .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))
            });
            return Ok(end.map(|p| i + p).ok_or(len));
        }
        let (mut depth, mut in_str, mut esc) = (self.depth, self.in_str, self.esc);
        let r = 'value: loop {
            if in_str {
                if esc {
                    // The escaped byte, left over from the last chunk.
                    if i >= len {
                        break 'value Err(len);
                    }
                    esc = false;
                    i += 1;
                }
                loop {
                    let Some(p) = buf.get(i..).and_then(super::bytes::quote_or_backslash) else {
                        break 'value Err(len);
                    };
                    i += p;
                    if buf.get(i) == Some(&b'\\') {
                        if i + 1 >= len {
                            esc = true;
                            break 'value Err(len);
                        }
                        i += 2;
                        continue;
                    }
                    i += 1;
                    in_str = false;
                    if depth == 0 {
                        break 'value Ok(i);
                    }
                    break;
                }
            }
            // In a container, outside strings: only quotes and brackets
            // matter.
            loop {
                let Some(&b) = buf.get(i) else {
                    break 'value Err(len);
                };
                i += 1;
                match b {
                    b'"' => {
                        in_str = true;
                        continue 'value;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break 'value Ok(i);
                        }
                    }
                    _ => {}
                }
            }
        };
        (self.depth, self.in_str, self.esc) = (depth, in_str, esc);
        Ok(r)
    }

    /// A scalar ends at the end of input.
    fn complete_at_eof(&self) -> bool {
        self.started && self.scalar
    }
}

/// Where the JSON-document tokenizer is.
#[derive(Debug, Clone, Copy)]
enum J {
    /// Before the top-level value.
    Start,
    /// A top-level value that is not an object: held whole.
    Whole(ValueScan),
    /// In the top-level object, before a key (`first`: right after `{`).
    ExpectKey {
        first: bool,
    },
    InKey {
        start: usize,
        esc: bool,
    },
    ExpectColon {
        key: (usize, usize),
    },
    ExpectValue {
        key: (usize, usize),
    },
    InValue(ValueScan),
    ExpectCommaOrEnd,
    /// In the streamed array.
    ArrExpectValue {
        first: bool,
    },
    ArrInValue {
        start: usize,
        scan: ValueScan,
    },
    ArrExpectCommaOrEnd,
    /// After the top-level value: only whitespace.
    Done,
}

/// What is being streamed, once a list/Table array was found.
#[derive(Debug, Clone)]
struct Streaming {
    rows: bool,
    list_kind: Option<String>,
    /// The head had no `kind`: the tail's kind must confirm a list.
    kind_unconfirmed: bool,
    tail_start: usize,
}

/// Masks a body chunk by chunk. See the module docs.
pub struct StreamMasker {
    masker: Arc<Masker>,
    ctx: MaskContext,
    kind: StreamKind,
    max_value: usize,
    /// JSON: hold this many bytes unscanned (see [`DEFAULT_HOLD_BYTES`]).
    hold: usize,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already passed on.
    emitted: usize,
    /// Scan position in `buf`.
    pos: usize,
    /// Input bytes dropped from `buf` before index 0 (for error offsets).
    consumed: u64,
    state: J,
    streaming: Option<Streaming>,
    /// Watch: start of the current event, if inside one.
    event: Option<(usize, ValueScan)>,
    /// Log: inside a multi-line private key.
    in_pem: bool,
    count: usize,
    failed: bool,
    /// Units are masked from their bytes where the byte path can
    /// ([`super::bytes`]); `false`: by the tree engine alone.
    byte_path: bool,
    byte_units: usize,
    tree_units: usize,
}

impl fmt::Debug for StreamMasker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the buffer: it holds unmasked bytes.
        f.debug_struct("StreamMasker")
            .field("kind", &self.kind)
            .field("buffered", &(self.buf.len() - self.emitted))
            .field("count", &self.count)
            .field("failed", &self.failed)
            .finish()
    }
}

impl StreamMasker {
    /// A masker for one body of the request described by `ctx`.
    pub fn new(masker: Arc<Masker>, ctx: MaskContext, kind: StreamKind) -> StreamMasker {
        StreamMasker {
            masker,
            ctx,
            kind,
            max_value: DEFAULT_MAX_VALUE_BYTES,
            hold: DEFAULT_HOLD_BYTES,
            buf: Vec::new(),
            emitted: 0,
            pos: 0,
            consumed: 0,
            state: J::Start,
            streaming: None,
            event: None,
            in_pem: false,
            count: 0,
            failed: false,
            byte_path: true,
            byte_units: 0,
            tree_units: 0,
        }
    }

    /// Mask every unit with the tree engine (a `serde_json::Value` per
    /// unit), never from its bytes: the reference the byte-level path is
    /// tested against. The output parses to the same JSON either way.
    pub fn with_tree_engine_only(mut self) -> StreamMasker {
        self.byte_path = false;
        self
    }

    /// Units (single objects, list items, watch events) masked so far from
    /// their bytes, and by the tree engine (shapes the byte path leaves to
    /// it, see the module docs of `shared::mask`).
    pub fn units_masked(&self) -> (usize, usize) {
        (self.byte_units, self.tree_units)
    }

    /// Try the byte path on `buf[start..end]`; `true` when it masked it.
    fn try_bytes(&mut self, out: &mut Vec<u8>, shape: Shape<'_>, start: usize, end: usize) -> bool {
        if !self.byte_path {
            return false;
        }
        let masked = with_scratch(|sc| {
            self.masker
                .mask_bytes(&self.ctx, shape, &self.buf[start..end], sc, out)
        });
        match masked {
            Some(n) => {
                self.count += n;
                self.byte_units += 1;
                self.emitted = end;
                true
            }
            None => {
                self.tree_units += 1;
                false
            }
        }
    }

    /// Bound the bytes one value may occupy (default [`DEFAULT_MAX_VALUE_BYTES`]).
    pub fn with_max_value_bytes(mut self, max: usize) -> StreamMasker {
        self.max_value = max.max(1);
        self
    }

    /// Hold at most this many bytes of a JSON document unscanned (default
    /// [`DEFAULT_HOLD_BYTES`]; `0`: scan every chunk as it comes).
    pub fn with_hold_bytes(mut self, hold: usize) -> StreamMasker {
        self.hold = hold;
        self
    }

    /// Values masked so far.
    pub fn masked_count(&self) -> usize {
        self.count
    }

    /// Bytes held that were not passed on yet (the value being read).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.emitted
    }

    /// Feed the next chunk; returns the masked bytes that are ready.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        self.buf.extend_from_slice(chunk);
        if self.holding() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(chunk.len());
        let r = self.process(&mut out, false);
        self.settle(r, out)
    }

    /// A JSON document not scanned yet, still short enough to hold (and
    /// within the bound on one value, which a held list might otherwise
    /// pass where its items streamed would not).
    fn holding(&self) -> bool {
        self.kind == StreamKind::Json
            && self.byte_path
            && matches!(self.state, J::Start)
            && self.pos == 0
            && self.buf.len() <= self.hold.min(self.max_value)
    }

    /// At the end of a held document: mask it whole from its bytes if it is
    /// an object with no list or Table array (no `"items"` or `"rows"` key
    /// anywhere) and the byte path takes it; `false` (nothing done) to
    /// scan it as if it had come in one chunk, which gives what the byte
    /// path refused to the tree engine and reports what is malformed.
    fn finish_held(&mut self, out: &mut Vec<u8>) -> bool {
        let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        let Some(first) = self.buf.iter().position(|b| !ws(b)) else {
            return false;
        };
        let end = self.buf.iter().rposition(|b| !ws(b)).map_or(0, |p| p + 1);
        let doc = &self.buf[..end];
        if doc.get(first) != Some(&b'{') || LIST_KEYS.iter().any(|f| f.find(doc).is_some()) {
            return false;
        }
        let masked = with_scratch(|sc| {
            self.masker
                .mask_bytes(&self.ctx, Shape::Document, doc, sc, out)
        });
        let Some(n) = masked else {
            return false;
        };
        self.count += n;
        self.byte_units += 1;
        // Whitespace after the document, as the scan would pass it on.
        out.extend_from_slice(&self.buf[end..]);
        self.emitted = self.buf.len();
        self.pos = self.buf.len();
        self.state = J::Done;
        true
    }

    /// The body ended: returns the last masked bytes, or an error if the body
    /// was truncated.
    pub fn finish(&mut self) -> Result<Vec<u8>, MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        let mut out = Vec::new();
        if self.holding() && self.finish_held(&mut out) {
            return Ok(out);
        }
        let r = self.process(&mut out, true);
        self.settle(r, out)
    }

    fn settle(&mut self, r: Result<(), MaskError>, out: Vec<u8>) -> Result<Vec<u8>, MaskError> {
        match r {
            Ok(()) => {
                if self.buf.len() - self.emitted > self.max_value {
                    return self.fail(MaskError::TooLarge {
                        limit: self.max_value,
                    });
                }
                Ok(out)
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: MaskError) -> Result<Vec<u8>, MaskError> {
        self.failed = true;
        self.buf = Vec::new();
        Err(e)
    }

    fn process(&mut self, out: &mut Vec<u8>, eof: bool) -> Result<(), MaskError> {
        match self.kind {
            StreamKind::Json => self.process_json(out, eof)?,
            StreamKind::Watch => self.process_watch(out, eof)?,
            StreamKind::Log => self.process_log(out, eof),
        }
        self.compact();
        Ok(())
    }

    /// Drop the bytes already passed on, when no state refers into them.
    fn compact(&mut self) {
        if self.emitted == 0 {
            return;
        }
        let e = self.emitted;
        match &mut self.state {
            J::ArrInValue { start, .. } => *start -= e,
            J::ArrExpectValue { .. } | J::ArrExpectCommaOrEnd | J::Done | J::Start => {}
            _ if self.kind != StreamKind::Json => {}
            // Head, tail or a whole document: small or held anyway.
            _ => return,
        }
        if let Some((start, _)) = &mut self.event {
            *start -= e;
        }
        self.buf.drain(..e);
        if self.buf.is_empty() && self.kind != StreamKind::Json {
            // Between two watch events or log lines: a quiet watch may
            // wait hours for the next, so it should not keep the last
            // one's capacity (1.3 KB a watch, heaptrack).
            self.buf = Vec::new();
        }
        self.pos -= e;
        self.emitted = 0;
        self.consumed += e as u64;
    }

    fn malformed(&self, at: usize, why: &str) -> MaskError {
        MaskError::Malformed {
            offset: self.consumed + at as u64,
            why: why.to_string(),
        }
    }

    fn parse(&self, start: usize, end: usize) -> Result<(Value, bool), MaskError> {
        parse_strict(&self.buf[start..end])
            .map_err(|e| json_error(self.consumed + start as u64, &self.buf[start..end], &e))
    }

    fn process_json(&mut self, out: &mut Vec<u8>, eof: bool) -> Result<(), MaskError> {
        while self.pos < self.buf.len() {
            let i = self.pos;
            let b = self.buf[i];
            let ws = matches!(b, b' ' | b'\t' | b'\r' | b'\n');
            match self.state {
                J::Start => {
                    if ws {
                        self.pos += 1;
                    } else if b == b'{' {
                        self.state = J::ExpectKey { first: true };
                        self.pos += 1;
                    } else {
                        self.state = J::Whole(ValueScan::default());
                    }
                }
                J::Whole(mut scan) => {
                    let r = scan.feed(&self.buf, i).map_err(|w| self.malformed(i, w))?;
                    self.state = J::Whole(scan);
                    match r {
                        Ok(end) => {
                            self.emit_whole(out, end)?;
                            self.pos = end;
                        }
                        Err(p) => self.pos = p,
                    }
                }
                J::ExpectKey { first } => {
                    if ws {
                        self.pos += 1;
                    } else if b == b'"' {
                        self.state = J::InKey {
                            start: i,
                            esc: false,
                        };
                        self.pos += 1;
                    } else if b == b'}' && first {
                        self.end_top_object(out, i)?;
                    } else {
                        return Err(self.malformed(i, "expected an object key"));
                    }
                }
                J::InKey { start, esc } => {
                    self.pos += 1;
                    self.state = if esc {
                        J::InKey { start, esc: false }
                    } else if b == b'\\' {
                        J::InKey { start, esc: true }
                    } else if b == b'"' {
                        J::ExpectColon {
                            key: (start, i + 1),
                        }
                    } else {
                        J::InKey { start, esc: false }
                    };
                }
                J::ExpectColon { key } => {
                    if ws {
                        self.pos += 1;
                    } else if b == b':' {
                        self.state = J::ExpectValue { key };
                        self.pos += 1;
                    } else {
                        return Err(self.malformed(i, "expected `:`"));
                    }
                }
                J::ExpectValue { key } => {
                    if ws {
                        self.pos += 1;
                    } else if b == b'[' && self.start_streaming(out, key, i)? {
                        self.state = J::ArrExpectValue { first: true };
                        self.pos = i + 1;
                    } else {
                        self.state = J::InValue(ValueScan::default());
                    }
                }
                J::InValue(mut scan) => {
                    let r = scan.feed(&self.buf, i).map_err(|w| self.malformed(i, w))?;
                    match r {
                        Ok(end) => {
                            self.state = J::ExpectCommaOrEnd;
                            self.pos = end;
                        }
                        Err(p) => {
                            self.state = J::InValue(scan);
                            self.pos = p;
                        }
                    }
                }
                J::ExpectCommaOrEnd => {
                    if ws {
                        self.pos += 1;
                    } else if b == b',' {
                        self.state = J::ExpectKey { first: false };
                        self.pos += 1;
                    } else if b == b'}' {
                        self.end_top_object(out, i)?;
                    } else {
                        return Err(self.malformed(i, "expected `,` or `}`"));
                    }
                }
                J::ArrExpectValue { first } => {
                    if ws {
                        self.pos += 1;
                    } else if b == b']' && first {
                        self.end_array(out, i);
                    } else {
                        // Separators so far pass on verbatim.
                        out.extend_from_slice(&self.buf[self.emitted..i]);
                        self.emitted = i;
                        self.state = J::ArrInValue {
                            start: i,
                            scan: ValueScan::default(),
                        };
                    }
                }
                J::ArrInValue { start, mut scan } => {
                    let r = scan.feed(&self.buf, i).map_err(|w| self.malformed(i, w))?;
                    match r {
                        Ok(end) => {
                            self.emit_element(out, start, end)?;
                            self.state = J::ArrExpectCommaOrEnd;
                            self.pos = end;
                        }
                        Err(p) => {
                            self.state = J::ArrInValue { start, scan };
                            self.pos = p;
                        }
                    }
                }
                J::ArrExpectCommaOrEnd => {
                    if ws {
                        self.pos += 1;
                    } else if b == b',' {
                        self.state = J::ArrExpectValue { first: false };
                        self.pos += 1;
                    } else if b == b']' {
                        self.end_array(out, i);
                    } else {
                        return Err(self.malformed(i, "expected `,` or `]` in the list"));
                    }
                }
                J::Done => {
                    if !ws {
                        return Err(self.malformed(i, "data after the JSON document"));
                    }
                    self.pos += 1;
                }
            }
        }
        if matches!(self.state, J::Done | J::Start) {
            // Trailing (or only) whitespace.
            out.extend_from_slice(&self.buf[self.emitted..]);
            self.emitted = self.buf.len();
        }
        if eof {
            match self.state {
                J::Done | J::Start => {}
                J::Whole(scan) if scan.complete_at_eof() => {
                    let end = self.buf.len();
                    self.emit_whole(out, end)?;
                }
                _ => return Err(MaskError::Truncated),
            }
        }
        Ok(())
    }

    /// The top-level object closed at `i`.
    fn end_top_object(&mut self, out: &mut Vec<u8>, i: usize) -> Result<(), MaskError> {
        match self.streaming.take() {
            None => self.emit_whole(out, i + 1)?,
            Some(s) => self.emit_tail(out, &s, i)?,
        }
        self.pos = i + 1;
        self.state = J::Done;
        Ok(())
    }

    /// Parse, mask and pass on `buf[emitted..end]`, a whole document.
    fn emit_whole(&mut self, out: &mut Vec<u8>, end: usize) -> Result<(), MaskError> {
        let start = self.emitted;
        if self.try_bytes(out, Shape::Document, start, end) {
            self.state = J::Done;
            return Ok(());
        }
        let (mut v, dup) = self.parse(start, end)?;
        check_document(&self.ctx, &v)?;
        let n = self.masker.mask_value(&self.ctx, &mut v);
        self.count += n;
        if n == 0 && !dup {
            out.extend_from_slice(&self.buf[start..end]);
        } else {
            super::write_json(out, &v);
        }
        self.emitted = end;
        self.state = J::Done;
        Ok(())
    }

    /// At `"items": [` (or `"rows": [`): decide whether to stream the array;
    /// if so, mask and pass on everything before it.
    fn start_streaming(
        &mut self,
        out: &mut Vec<u8>,
        key: (usize, usize),
        bracket: usize,
    ) -> Result<bool, MaskError> {
        if self.streaming.is_some() || self.emitted != 0 {
            return Ok(false);
        }
        let name = &self.buf[key.0..key.1];
        let rows = name == b"\"rows\"";
        if name != b"\"items\"" && !rows {
            return Ok(false);
        }
        // The head as a document of its own: `{...,` → `{...}`.
        let mut head: Vec<u8> = self.buf[..key.0].to_vec();
        while head.last().is_some_and(|b| b.is_ascii_whitespace()) {
            head.pop();
        }
        if head.last() == Some(&b',') {
            head.pop();
        }
        head.push(b'}');
        let (mut hv, dup) =
            parse_strict(&head).map_err(|e| json_error(self.consumed, &head, &e))?;
        let Value::Object(hm) = &hv else {
            return Ok(false);
        };
        if hm.contains_key("items") || hm.contains_key("rows") {
            return Ok(false);
        }
        let kind = hm.get("kind").and_then(Value::as_str).map(str::to_owned);
        let stream = match (rows, kind.as_deref()) {
            (true, Some("Table")) => true,
            (false, Some(k)) => k.ends_with("List"),
            (false, None) => is_list_verb(&self.ctx.verb),
            (true, _) => false,
        };
        if !stream {
            return Ok(false);
        }
        check_document(&self.ctx, &hv)?;
        let n = self.masker.mask_value(&self.ctx, &mut hv);
        self.count += n;
        if n == 0 && !dup {
            out.extend_from_slice(&self.buf[..key.0]);
        } else {
            let mut bytes = super::to_json_bytes(&hv);
            bytes.pop();
            if hv.as_object().is_some_and(|m| !m.is_empty()) {
                bytes.push(b',');
            }
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(&self.buf[key.0..=bracket]);
        self.emitted = bracket + 1;
        self.streaming = Some(Streaming {
            rows,
            kind_unconfirmed: kind.is_none(),
            list_kind: kind,
            tail_start: 0,
        });
        Ok(true)
    }

    fn emit_element(
        &mut self,
        out: &mut Vec<u8>,
        start: usize,
        end: usize,
    ) -> Result<(), MaskError> {
        let list_kind = match &self.streaming {
            Some(s) if !s.rows => Some(s.list_kind.clone()),
            _ => None,
        };
        if let Some(kind) = list_kind {
            let shape = Shape::Item {
                list_kind: kind.as_deref(),
            };
            if self.try_bytes(out, shape, start, end) {
                return Ok(());
            }
        }
        let (mut v, dup) = self.parse(start, end)?;
        let n = match &self.streaming {
            Some(s) if s.rows => self.masker.mask_stream_row(&self.ctx, &mut v),
            Some(s) => self
                .masker
                .mask_stream_item(&self.ctx, s.list_kind.as_deref(), &mut v),
            None => self.masker.mask_value(&self.ctx, &mut v),
        };
        self.count += n;
        if n == 0 && !dup {
            out.extend_from_slice(&self.buf[start..end]);
        } else {
            super::write_json(out, &v);
        }
        self.emitted = end;
        Ok(())
    }

    /// The streamed array closed at `i`; the rest of the object is the tail.
    fn end_array(&mut self, out: &mut Vec<u8>, i: usize) {
        out.extend_from_slice(&self.buf[self.emitted..=i]);
        self.emitted = i + 1;
        self.pos = i + 1;
        if let Some(s) = &mut self.streaming {
            s.tail_start = i + 1;
        }
        self.state = J::ExpectCommaOrEnd;
    }

    /// The tail `, "k": v ... }` closed at `close`: check, mask, pass on.
    fn emit_tail(
        &mut self,
        out: &mut Vec<u8>,
        s: &Streaming,
        close: usize,
    ) -> Result<(), MaskError> {
        let raw = &self.buf[s.tail_start..=close];
        let trimmed = raw.trim_ascii_start();
        let members = trimmed.strip_prefix(b",").unwrap_or(trimmed);
        let mut doc = Vec::with_capacity(members.len() + 1);
        doc.push(b'{');
        doc.extend_from_slice(members);
        let base = self.consumed + s.tail_start as u64;
        let (mut tv, dup) = parse_strict(&doc).map_err(|e| json_error(base, &doc, &e))?;
        let Value::Object(tm) = &tv else {
            return Err(self.malformed(s.tail_start, "expected object members after the list"));
        };
        if tm.contains_key("items") || tm.contains_key("rows") {
            return Err(self.malformed(s.tail_start, "duplicate `items`/`rows`"));
        }
        if let Some(k) = tm.get("kind") {
            if !s.kind_unconfirmed {
                return Err(MaskError::Refused {
                    why: "a duplicate `kind` key (before and after the list)",
                });
            }
            let k = k.as_str().unwrap_or("");
            if !k.ends_with("List") {
                return Err(self.malformed(
                    s.tail_start,
                    "an object with `items` before its non-list `kind` cannot be masked as a stream",
                ));
            }
            if list_kind_contradicts(&self.ctx, k) {
                return Err(MaskError::Refused {
                    why: "the list `kind` after the items contradicts the resource of the request",
                });
            }
        }
        let n = self.masker.mask_value(&self.ctx, &mut tv);
        self.count += n;
        if n == 0 && !dup {
            out.extend_from_slice(raw);
        } else {
            let bytes = super::to_json_bytes(&tv);
            if tv.as_object().is_some_and(|m| !m.is_empty()) {
                out.push(b',');
                out.extend_from_slice(bytes.get(1..).unwrap_or_default());
            } else {
                out.push(b'}');
            }
        }
        self.emitted = close + 1;
        Ok(())
    }

    fn process_watch(&mut self, out: &mut Vec<u8>, eof: bool) -> Result<(), MaskError> {
        while self.pos < self.buf.len() {
            let i = self.pos;
            match self.event {
                None => {
                    let b = self.buf[i];
                    if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                        self.pos += 1;
                    } else {
                        out.extend_from_slice(&self.buf[self.emitted..i]);
                        self.emitted = i;
                        self.event = Some((i, ValueScan::default()));
                    }
                }
                Some((start, mut scan)) => {
                    let r = scan.feed(&self.buf, i).map_err(|w| self.malformed(i, w))?;
                    match r {
                        Ok(end) => {
                            self.emit_event(out, start, end)?;
                            self.event = None;
                            self.pos = end;
                        }
                        Err(p) => {
                            self.event = Some((start, scan));
                            self.pos = p;
                        }
                    }
                }
            }
        }
        match self.event {
            None => {
                out.extend_from_slice(&self.buf[self.emitted..]);
                self.emitted = self.buf.len();
            }
            Some((start, scan)) if eof && scan.complete_at_eof() => {
                let end = self.buf.len();
                self.emit_event(out, start, end)?;
                self.event = None;
            }
            Some(_) if eof => return Err(MaskError::Truncated),
            Some(_) => {}
        }
        Ok(())
    }

    fn emit_event(&mut self, out: &mut Vec<u8>, start: usize, end: usize) -> Result<(), MaskError> {
        if self.try_bytes(out, Shape::Event, start, end) {
            return Ok(());
        }
        let (mut v, dup) = self.parse(start, end)?;
        check_watch_value(&v).map_err(|why| MaskError::Refused { why })?;
        let n = self.masker.mask_value(&self.ctx, &mut v);
        self.count += n;
        if n == 0 && !dup {
            out.extend_from_slice(&self.buf[start..end]);
        } else {
            super::write_json(out, &v);
        }
        self.emitted = end;
        Ok(())
    }

    fn process_log(&mut self, out: &mut Vec<u8>, eof: bool) {
        loop {
            let rest = &self.buf[self.emitted..];
            let (line_end, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(p) => (self.emitted + p, self.emitted + p + 1),
                None if eof || rest.len() > MAX_LOG_LINE => (self.buf.len(), self.buf.len()),
                None => break,
            };
            if line_end == self.emitted && next == line_end {
                break;
            }
            let line = &self.buf[self.emitted..line_end];
            let (masked, n) = mask_line(
                &self.masker.detectors,
                self.ctx.scrub.as_deref(),
                &mut self.in_pem,
                line,
            );
            self.count += n;
            match masked {
                Some(m) => out.extend_from_slice(m.as_bytes()),
                None => out.extend_from_slice(line),
            }
            out.extend_from_slice(&self.buf[line_end..next]);
            self.emitted = next;
        }
        self.pos = self.emitted;
    }
}

/// Mask one log line (without its newline); `None` when unchanged. Invalid
/// UTF-8 is read lossily; such a line is re-encoded only if something in it
/// was masked. The values of `scrub` are scrubbed from the result.
fn mask_line(
    d: &Detectors,
    scrub: Option<&ScrubSet>,
    in_pem: &mut bool,
    line: &[u8],
) -> (Option<String>, usize) {
    let (out, n) = mask_line_detect(d, in_pem, line);
    let Some(set) = scrub.filter(|s| !s.is_empty()) else {
        return (out, n);
    };
    let text: Cow<'_, str> = match &out {
        Some(o) => Cow::Borrowed(o.as_str()),
        None => String::from_utf8_lossy(line),
    };
    match set.scrub_str(&text) {
        Some(scrubbed) => (Some(scrubbed), n + 1),
        None => (out, n),
    }
}

fn mask_line_detect(d: &Detectors, in_pem: &mut bool, line: &[u8]) -> (Option<String>, usize) {
    let text: Cow<'_, str> = String::from_utf8_lossy(line);
    if *in_pem {
        // Key material until the END line.
        return match d.block_end(&text) {
            Some(p) => {
                *in_pem = false;
                let (rest, n) = d.apply_log(&text[p..]);
                (Some(format!("{}{rest}", super::MARKER)), n + 1)
            }
            None => (Some(super::MARKER.to_string()), 1),
        };
    }
    let (masked, n) = d.apply_log(&text);
    if d.opens_block(&text) {
        *in_pem = true;
    }
    if n == 0 {
        (None, 0)
    } else {
        (Some(masked.into_owned()), n)
    }
}

/// Parse JSON into a `Value`, telling whether any object had duplicate keys
/// (serde keeps the last; the bytes would still carry the first, so such a
/// value is never passed on verbatim).
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<(Value, bool), serde_json::Error> {
    let dup = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict(&dup).deserialize(&mut de)?;
    de.end()?;
    Ok((v, dup.get()))
}

struct Strict<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(Strict(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Strict(self.0))?;
            let is_kind = k == "kind";
            if out.insert(k, v).is_some() {
                if is_kind {
                    // The client might read the other one.
                    return Err(serde::de::Error::custom("duplicate `kind` key"));
                }
                self.0.set(true);
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod scan_tests {
    use super::ValueScan;

    /// Where serde_json ends the first value of `input`.
    fn reference_end(input: &[u8]) -> usize {
        let mut it =
            serde_json::Deserializer::from_slice(input).into_iter::<serde::de::IgnoredAny>();
        it.next().unwrap().unwrap();
        it.byte_offset()
    }

    /// Fed whole, in two pieces split at every position, and a byte at a
    /// time, the scan ends every value where serde_json does (a string
    /// split inside an escape, at a quote, between brackets).
    #[test]
    fn value_scan_ends_values_where_serde_json_does_however_split() {
        let values: [&[u8]; 9] = [
            br#"{"a":"b","c":[1,{"d":"e\"}]"}],"f":{}}"#,
            br#"["\\","\\\"",[],{},"]","}"]"#,
            br#""a string with \"quotes\" and \\ a backslash""#,
            br#"{"long":"0123456789012345678901234567890123456789\n\"","k":null}"#,
            br#"[[[["deep"]]]]"#,
            br#"{"u":"\u00e9\u20ac","x":true,"y":-1.5e3}"#,
            b"12345",
            b"true",
            br#""""#,
        ];
        for v in values {
            // Followed by what ends a list item.
            let input = [v, &b",{\"next\":1}]"[..]].concat();
            let want = reference_end(&input);
            let mut whole = ValueScan::default();
            assert_eq!(
                whole.feed(&input, 0),
                Ok(Ok(want)),
                "{}",
                String::from_utf8_lossy(v)
            );
            for cut in 0..=want {
                let mut scan = ValueScan::default();
                let first = scan.feed(&input[..cut], 0).unwrap();
                let got = match first {
                    Ok(end) => end,
                    Err(p) => {
                        assert_eq!(p, cut);
                        scan.feed(&input, p).unwrap().unwrap()
                    }
                };
                assert_eq!(got, want, "{} cut at {cut}", String::from_utf8_lossy(v));
            }
            let mut scan = ValueScan::default();
            let mut end = None;
            for n in 1..=input.len() {
                if let Ok(e) = scan.feed(&input[..n], n - 1).unwrap() {
                    end = Some(e);
                    break;
                }
            }
            assert_eq!(
                end,
                Some(want),
                "{} a byte at a time",
                String::from_utf8_lossy(v)
            );
        }
        assert!(ValueScan::default().feed(b"}", 0).is_err());
    }
}
