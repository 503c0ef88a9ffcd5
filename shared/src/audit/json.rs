//! One audit event as JSON, written directly: the same bytes as the derived
//! `Serialize` of [`EventView`] (field order, names, omitted fields and
//! escaping), without going through serde's data model.
//!
//! Every proxied request writes at least one event, and serde_json spent
//! most of an event's cost on escaping its ~40 field names one byte at a
//! time (they are constants here), on the serializer's per-field calls, and
//! on writing the fields after a vouched-for body twice to find where it
//! goes. Strings that hold a byte JSON must escape (a quote, a backslash, a
//! control character) are handed to serde_json, so escaping stays exactly
//! serde_json's. The property test in `audit.rs` (`view_tests`) compares
//! this writer with the derived form on generated events.

use std::collections::BTreeMap;

use super::{
    EventView, Level, ListMeta, MicroTime, ObjectReference, ResponseStatus, Stage, UserInfo,
};

/// Appends `view` to `out` as one JSON object (one NDJSON line when its
/// bodies are one line each, as [`super::raw_json`] and
/// [`super::one_line_json_text`] make them).
pub(super) fn write_view(view: &EventView<'_>, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    if let Some(kind) = view.kind {
        o.key("kind").str(kind)?;
    }
    if let Some(v) = view.api_version {
        o.key("apiVersion").str(v)?;
    }
    o.key("level").raw(level(view.level));
    o.key("auditID").str(view.audit_id)?;
    o.key("stage").raw(stage(view.stage));
    o.key("requestURI").str(view.request_uri)?;
    o.key("verb").str(view.verb)?;
    o.key("user");
    user(o.out, view.user)?;
    if let Some(u) = view.impersonated_user {
        o.key("impersonatedUser");
        user(o.out, u)?;
    }
    if !view.source_ips.is_empty() {
        o.key("sourceIPs");
        strings(o.out, view.source_ips)?;
    }
    if !view.user_agent.is_empty() {
        o.key("userAgent").str(view.user_agent)?;
    }
    if let Some(r) = view.object_ref {
        o.key("objectRef");
        object_ref(o.out, r)?;
    }
    if let Some(s) = view.response_status {
        o.key("responseStatus");
        response_status(o.out, s)?;
    }
    if let Some(b) = view.request_object {
        o.key("requestObject").raw(b.get());
    }
    // Vouched-for text replaces a checked body (see
    // `EventView::with_response_json_text`).
    if let Some(text) = view.response_text {
        o.key("responseObject").raw(text);
    } else if let Some(b) = view.response_object {
        o.key("responseObject").raw(b.get());
    }
    o.key("requestReceivedTimestamp")
        .time(view.request_received_timestamp)?;
    o.key("stageTimestamp").time(view.stage_timestamp)?;
    if !view.annotations.is_empty() {
        o.key("annotations");
        string_map(o.out, view.annotations)?;
    }
    o.close();
    Ok(())
}

fn level(l: Level) -> &'static str {
    match l {
        Level::None => "\"None\"",
        Level::Metadata => "\"Metadata\"",
        Level::Request => "\"Request\"",
        Level::RequestResponse => "\"RequestResponse\"",
    }
}

fn stage(s: Stage) -> &'static str {
    match s {
        Stage::RequestReceived => "\"RequestReceived\"",
        Stage::ResponseStarted => "\"ResponseStarted\"",
        Stage::ResponseComplete => "\"ResponseComplete\"",
        Stage::Panic => "\"Panic\"",
    }
}

fn user(out: &mut Vec<u8>, u: &UserInfo) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    o.opt_str("username", &u.username)?;
    o.opt_str("uid", &u.uid)?;
    if !u.groups.is_empty() {
        o.key("groups");
        strings(o.out, &u.groups)?;
    }
    if !u.extra.is_empty() {
        o.key("extra");
        let mut m = Obj::open(o.out);
        for (k, v) in &u.extra {
            m.dyn_key(k)?;
            strings(m.out, v)?;
        }
        m.close();
    }
    o.close();
    Ok(())
}

fn object_ref(out: &mut Vec<u8>, r: &ObjectReference) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    o.opt_str("resource", &r.resource)?;
    o.opt_str("namespace", &r.namespace)?;
    o.opt_str("name", &r.name)?;
    o.opt_str("uid", &r.uid)?;
    o.opt_str("apiGroup", &r.api_group)?;
    o.opt_str("apiVersion", &r.api_version)?;
    o.opt_str("resourceVersion", &r.resource_version)?;
    o.opt_str("subresource", &r.subresource)?;
    o.close();
    Ok(())
}

fn list_meta(out: &mut Vec<u8>, m: &ListMeta) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    o.opt_str("selfLink", &m.self_link)?;
    o.opt_str("resourceVersion", &m.resource_version)?;
    o.opt_str("continue", &m.continue_token)?;
    if let Some(n) = m.remaining_item_count {
        o.key("remainingItemCount");
        serde_json::to_writer(&mut *o.out, &n)?;
    }
    o.close();
    Ok(())
}

fn response_status(out: &mut Vec<u8>, s: &ResponseStatus) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    if let Some(k) = &s.kind {
        o.key("kind").str(k)?;
    }
    if let Some(v) = &s.api_version {
        o.key("apiVersion").str(v)?;
    }
    o.key("metadata");
    list_meta(o.out, &s.metadata)?;
    o.opt_str("status", &s.status)?;
    o.opt_str("message", &s.message)?;
    o.opt_str("reason", &s.reason)?;
    if let Some(d) = &s.details {
        o.key("details");
        serde_json::to_writer(&mut *o.out, d)?;
    }
    if s.code != 0 {
        o.key("code");
        serde_json::to_writer(&mut *o.out, &s.code)?;
    }
    o.close();
    Ok(())
}

fn strings(out: &mut Vec<u8>, items: &[String]) -> Result<(), serde_json::Error> {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s)?;
    }
    out.push(b']');
    Ok(())
}

fn string_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    for (k, v) in map {
        o.dyn_key(k)?.str(v)?;
    }
    o.close();
    Ok(())
}

/// `s` as a JSON string: copied between quotes when nothing in it needs an
/// escape (the usual case), else written by serde_json.
fn string(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(&mut *out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether `b` holds a byte JSON escapes: a quote, a backslash or a control
/// character. Eight bytes at a time (an event's strings are mostly tens of
/// bytes with none of them; a byte at a time was most of the writer's cost).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero exactly when some byte of `x` is below `n` (n <= 128).
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            return true;
        };
        let x = u64::from_le_bytes(w);
        if below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            != 0
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// An object being written: tracks whether a comma goes before the next key.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
    }

    /// A constant field name (plain ASCII, nothing to escape).
    fn key(&mut self, name: &'static str) -> &mut Self {
        self.comma();
        self.out.reserve(name.len() + 3);
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self
    }

    /// A map key from data.
    fn dyn_key(&mut self, name: &str) -> Result<&mut Self, serde_json::Error> {
        self.comma();
        string(self.out, name)?;
        self.out.push(b':');
        Ok(self)
    }

    /// A field left out when empty, as `skip_serializing_if = "String::is_empty"`.
    fn opt_str(&mut self, name: &'static str, v: &str) -> Result<(), serde_json::Error> {
        if !v.is_empty() {
            self.key(name).str(v)?;
        }
        Ok(())
    }

    fn str(&mut self, v: &str) -> Result<(), serde_json::Error> {
        string(self.out, v)
    }

    /// Text that already is JSON.
    fn raw(&mut self, json: &str) {
        self.out.extend_from_slice(json.as_bytes());
    }

    fn time(&mut self, t: MicroTime) -> Result<(), serde_json::Error> {
        match t.fixed_text().filter(|b| b.is_ascii()) {
            Some(text) => {
                self.out.push(b'"');
                self.out.extend_from_slice(&text);
                self.out.push(b'"');
                Ok(())
            }
            None => serde_json::to_writer(&mut *self.out, &t),
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::needs_escape;

    /// The word-at-a-time check agrees with a byte-at-a-time one for every
    /// byte value at every position of short and long texts.
    #[test]
    fn needs_escape_finds_every_escaped_byte() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 0..20usize {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = byte;
                    assert_eq!(needs_escape(&b), naive(&b), "len {len} at {at} byte {byte}");
                }
            }
        }
        // Bytes next to the ones that count (borrows between bytes).
        for b in [
            &b"\x21\x21\x1f\x21"[..],
            b"!!!!!!!#",
            b"]]]]]]]]]",
            b"\x80\x80\x80\x80\x80\x80\x80\x80",
        ] {
            assert_eq!(needs_escape(b), naive(b), "{b:?}");
        }
    }
}
