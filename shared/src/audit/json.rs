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

fn string_map(out: &mut Vec<u8>, map: &super::Annotations) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    for (k, v) in map {
        o.dyn_key(k)?.str(v)?;
    }
    o.close();
    Ok(())
}

/// `s` as a JSON string (see [`crate::json_text::push_quoted`]).
fn string(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    crate::json_text::push_quoted(out, s);
    Ok(())
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
