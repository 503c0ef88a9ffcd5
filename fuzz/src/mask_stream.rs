//! `mask_stream`: the streaming masker (`shared/src/mask/stream.rs`).
//!
//! Byte 0 chooses the mode (bit 0). Byte 1 seeds the chunk splits.
//!
//! - Raw mode (bit 0 = 0): the rest is a body. Bits 1–2 choose the stream
//!   kind (JSON document, watch stream, log), bits 3–5 the request's
//!   resource, bits 6–7 its verb. Properties: the output does not depend on
//!   how the body was split into chunks (byte for byte for logs, value for
//!   value for JSON); a JSON body that is valid JSON and is
//!   accepted gives valid JSON (the same number of values for a watch stream);
//!   for a single document, no string that masking the whole value at once
//!   hides is left in clear by the stream.
//! - Planted mode (bit 0 = 1): the rest drives [`arbitrary`] to build a
//!   Secret, a `SecretList` (kind before or after `items`, items with or
//!   without `kind`), a watch stream of Secrets, a ConfigMap with
//!   secret-looking keys, a Pod with secret env values, or a Table with
//!   Secrets in its rows, with `PLANTED…` values in every place the default
//!   masking covers, filler fields and any key order or indentation; when
//!   every kind comes before the values, on any request path. Properties:
//!   the masker accepts it, the output is valid JSON, and no planted value
//!   appears in it, raw or base64-encoded.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mcp_warden_shared::mask::{
    LAST_APPLIED_ANNOTATION, MaskContext, MaskError, Masker, MaskingConfig, StreamKind,
    StreamMasker,
};
use serde_json::{Map, Value, json};

use crate::Splitter;

/// Bound on one buffered value in the fuzzer: small, so the `TooLarge`
/// path is exercised too.
const MAX_VALUE: usize = 16 << 10;

const RESOURCES: [&str; 8] = [
    "secrets",
    "configmaps",
    "pods",
    "",
    "widgets",
    "deployments",
    "serviceaccounts",
    "events",
];
const VERBS: [&str; 4] = ["get", "list", "watch", ""];

/// The embedded default masking, compiled once per process.
pub fn masker() -> Arc<Masker> {
    static M: OnceLock<Arc<Masker>> = OnceLock::new();
    M.get_or_init(|| {
        Arc::new(
            MaskingConfig::embedded_default()
                .compile()
                .expect("the embedded masking compiles"),
        )
    })
    .clone()
}

/// The property check; panics on a violation.
pub fn check(data: &[u8]) {
    let [mode, split, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        raw(*mode, *split, rest);
    } else {
        planted(*split, rest);
    }
}

/// Stream `body` through a masker in the chunks `splitter` gives.
pub fn stream(
    ctx: &MaskContext,
    kind: StreamKind,
    body: &[u8],
    splitter: &mut Splitter,
) -> Result<Vec<u8>, MaskError> {
    let mut s = StreamMasker::new(masker(), ctx.clone(), kind).with_max_value_bytes(MAX_VALUE);
    let mut out = Vec::new();
    for chunk in splitter.split(body) {
        out.extend(s.push(chunk)?);
    }
    out.extend(s.finish()?);
    Ok(out)
}

fn raw(mode: u8, split: u8, body: &[u8]) {
    let kind = match (mode >> 1) & 3 {
        1 => StreamKind::Watch,
        2 => StreamKind::Log,
        _ => StreamKind::Json,
    };
    let ctx = MaskContext {
        resource: RESOURCES[usize::from((mode >> 3) & 7)].to_string(),
        verb: VERBS[usize::from(mode >> 6)].to_string(),
        ..MaskContext::default()
    };
    let chunked = stream(&ctx, kind, body, &mut Splitter::new(split));
    let whole = stream(&ctx, kind, body, &mut Splitter::new(0));
    match (&chunked, &whole) {
        (Ok(a), Ok(b)) => assert!(
            same_output(kind, a, b),
            "output depends on the chunking ({kind:?}, {ctx:?}):\n split: {}\n whole: {}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        ),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "accepted or refused depending on the chunking ({kind:?}, {ctx:?}): split {:?}, whole {:?}",
            chunked
                .as_ref()
                .map(|o| String::from_utf8_lossy(o).into_owned()),
            whole
                .as_ref()
                .map(|o| String::from_utf8_lossy(o).into_owned()),
        ),
    }
    let Ok(out) = whole else {
        return;
    };
    match kind {
        StreamKind::Json => {
            if serde_json::from_slice::<Value>(body).is_ok() {
                let masked: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                    panic!(
                        "valid JSON in, invalid JSON out ({e}): {}",
                        String::from_utf8_lossy(&out)
                    )
                });
                // What masking the whole value at once hides, the stream
                // must hide too (it may hide more).
                if let Ok((w, _)) = masker().mask_json_bytes(&ctx, body) {
                    let w: Value = serde_json::from_slice(&w).expect("mask_json_bytes gives JSON");
                    let input: Value = serde_json::from_slice(body).expect("checked above");
                    let hidden: BTreeSet<&str> = &strings(&input) - &strings(&w);
                    let passed = strings(&masked);
                    let leaked: Vec<&&str> = hidden.intersection(&passed).collect();
                    assert!(
                        leaked.is_empty(),
                        "the stream passes {leaked:?} that whole-value masking hides ({ctx:?}):\n in:     {input}\n stream: {masked}\n whole:  {w}"
                    );
                }
            }
        }
        StreamKind::Watch => {
            let n_in = serde_json::Deserializer::from_slice(body)
                .into_iter::<Value>()
                .collect::<Result<Vec<_>, _>>();
            if let Ok(values) = n_in {
                let outs = serde_json::Deserializer::from_slice(&out)
                    .into_iter::<Value>()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| {
                        panic!(
                            "valid watch stream in, invalid JSON out ({e}): {}",
                            String::from_utf8_lossy(&out)
                        )
                    });
                assert_eq!(values.len(), outs.len(), "watch events lost or invented");
            }
        }
        StreamKind::Log => {
            let lines_in = body.iter().filter(|&&b| b == b'\n').count();
            let lines_out = out.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(lines_in, lines_out, "log lines lost or invented");
        }
    }
}

/// Outputs are the same: byte for byte for logs; for JSON the same values
/// (whitespace between values may differ: the stream passes whitespace
/// before a document on as it arrives, whole masking re-serializes it away).
fn same_output(kind: StreamKind, a: &[u8], b: &[u8]) -> bool {
    let values = |x: &[u8]| {
        serde_json::Deserializer::from_slice(x)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    match kind {
        StreamKind::Log => a == b,
        _ => a == b || (values(a).is_some() && values(a) == values(b)),
    }
}

/// Every string (value or key) in `v`.
fn strings(v: &Value) -> BTreeSet<&str> {
    fn walk<'a>(v: &'a Value, out: &mut BTreeSet<&'a str>) {
        match v {
            Value::String(s) => {
                out.insert(s);
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => {
                for (k, x) in m {
                    out.insert(k);
                    walk(x, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut out);
    out
}

// ------------------------------------------------------------ planted mode

/// What the planted document looks like.
#[derive(Debug, Arbitrary)]
enum Shape {
    Secret(SecretGen),
    List {
        items: Vec<SecretGen>,
        kind_last: bool,
        list_kind: bool,
    },
    Watch {
        events: Vec<(EventType, SecretGen)>,
        separator: Sep,
    },
    ConfigMap {
        secret_keys: Vec<(KeyWord, Filler)>,
        plain: Vec<(Filler, Filler)>,
    },
    Pod {
        template: PodShape,
        env: Vec<(bool, KeyWord, Filler)>,
    },
    Table {
        rows: Vec<SecretGen>,
    },
}

#[derive(Debug, Arbitrary)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Arbitrary)]
enum Sep {
    Newline,
    Space,
    None,
    Crlf,
}

#[derive(Debug, Arbitrary)]
enum PodShape {
    Pod,
    Deployment,
    CronJob,
}

#[derive(Debug, Arbitrary)]
enum KeyWord {
    Password,
    Secret,
    Token,
    ApiKey,
}

/// A string that is not (and does not contain) a planted value.
#[derive(Debug, Arbitrary)]
struct Filler(String);

impl Filler {
    fn get(&self) -> String {
        // Keep fillers from containing the planted marker or being mistaken
        // for one in base64.
        self.0
            .replace("PLANTED", "planted")
            .replace("UExBTlRFR", "x")
    }
}

/// A Secret with planted values in `data`, `stringData` and the
/// last-applied annotation.
#[derive(Debug, Arbitrary)]
struct SecretGen {
    with_kind: bool,
    data: Vec<(Filler, u64)>,
    string_data: Vec<(Filler, u64)>,
    last_applied: bool,
    labels: Vec<(Filler, Filler)>,
    extra_first: bool,
}

/// Planted values: `PLANTED` and a distinctive suffix.
#[derive(Default)]
struct Plants(Vec<String>);

impl Plants {
    fn plant(&mut self, seed: u64) -> String {
        let p = format!("PLANTED{:016x}q{}", seed, self.0.len());
        self.0.push(p.clone());
        p
    }
}

impl SecretGen {
    fn build(&self, plants: &mut Plants, kind: bool) -> Value {
        let mut m = Map::new();
        let mut meta = Map::new();
        meta.insert("name".into(), json!("s"));
        meta.insert("namespace".into(), json!("default"));
        let mut data = Map::new();
        for (k, seed) in &self.data {
            data.insert(k.get(), json!(B64.encode(plants.plant(*seed))));
        }
        let mut string_data = Map::new();
        for (k, seed) in &self.string_data {
            string_data.insert(k.get(), json!(plants.plant(*seed)));
        }
        let mut annotations = Map::new();
        if self.last_applied {
            let applied = json!({"apiVersion": "v1", "kind": "Secret",
                "stringData": {"k": plants.plant(7)}});
            annotations.insert(LAST_APPLIED_ANNOTATION.into(), json!(applied.to_string()));
        }
        let labels: Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.get(), json!(v.get())))
            .collect();
        meta.insert("annotations".into(), Value::Object(annotations));
        meta.insert("labels".into(), Value::Object(labels));
        if self.extra_first {
            m.insert("data".into(), Value::Object(data.clone()));
        }
        if kind {
            m.insert("kind".into(), json!("Secret"));
        }
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), Value::Object(meta));
        m.insert("type".into(), json!("Opaque"));
        m.insert("data".into(), Value::Object(data));
        m.insert("stringData".into(), Value::Object(string_data));
        Value::Object(m)
    }
}

fn key_word(k: &KeyWord) -> &'static str {
    match k {
        KeyWord::Password => "password",
        KeyWord::Secret => "SECRET",
        KeyWord::Token => "token",
        KeyWord::ApiKey => "apikey",
    }
}

fn pod_spec(env: &[(bool, KeyWord, Filler)], plants: &mut Plants) -> Value {
    let env: Vec<Value> = env
        .iter()
        .enumerate()
        .map(|(i, (secret, kw, f))| {
            if *secret {
                json!({"name": format!("DB_{}_{i}", key_word(kw)), "value": plants.plant(i as u64)})
            } else {
                json!({"name": format!("PLAIN_{i}"), "value": f.get()})
            }
        })
        .collect();
    json!({"containers": [{"name": "c", "image": "busybox", "env": env}]})
}

/// Build the document; returns (context, stream kind, body, planted values).
fn build(shape: &Shape, pretty: bool) -> (MaskContext, StreamKind, Vec<u8>, Vec<String>) {
    let mut plants = Plants::default();
    let ctx = |resource: &str, verb: &str| MaskContext {
        resource: resource.into(),
        verb: verb.into(),
        ..MaskContext::default()
    };
    let ser = |v: &Value| {
        if pretty {
            serde_json::to_vec_pretty(v).expect("serializes")
        } else {
            serde_json::to_vec(v).expect("serializes")
        }
    };
    match shape {
        Shape::Secret(s) => {
            let v = s.build(&mut plants, s.with_kind);
            (ctx("secrets", "get"), StreamKind::Json, ser(&v), plants.0)
        }
        Shape::List {
            items,
            kind_last,
            list_kind,
        } => {
            let items: Vec<Value> = items
                .iter()
                .map(|s| s.build(&mut plants, s.with_kind))
                .collect();
            let mut m = Map::new();
            if *list_kind && !kind_last {
                m.insert("kind".into(), json!("SecretList"));
            }
            m.insert("apiVersion".into(), json!("v1"));
            m.insert("metadata".into(), json!({"resourceVersion": "1"}));
            m.insert("items".into(), Value::Array(items));
            if *list_kind && *kind_last {
                m.insert("kind".into(), json!("SecretList"));
            }
            let v = Value::Object(m);
            (ctx("secrets", "list"), StreamKind::Json, ser(&v), plants.0)
        }
        Shape::Watch { events, separator } => {
            let sep: &[u8] = match separator {
                Sep::Newline => b"\n",
                Sep::Space => b" ",
                Sep::None => b"",
                Sep::Crlf => b"\r\n",
            };
            let mut body = Vec::new();
            for (t, s) in events {
                let t = match t {
                    EventType::Added => "ADDED",
                    EventType::Modified => "MODIFIED",
                    EventType::Deleted => "DELETED",
                };
                let ev = json!({"type": t, "object": s.build(&mut plants, true)});
                body.extend(ser(&ev));
                body.extend_from_slice(sep);
            }
            (ctx("secrets", "watch"), StreamKind::Watch, body, plants.0)
        }
        Shape::ConfigMap { secret_keys, plain } => {
            let mut data = Map::new();
            for (i, (kw, f)) in secret_keys.iter().enumerate() {
                let k = format!("{}{}_{}", f.get().replace(['\n'], ""), key_word(kw), i);
                data.insert(k, json!(plants.plant(i as u64)));
            }
            for (k, v) in plain {
                let k = format!("plain-{}", k.get());
                data.entry(k).or_insert_with(|| json!(v.get()));
            }
            let v = json!({"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "c"}, "data": data});
            (
                ctx("configmaps", "get"),
                StreamKind::Json,
                ser(&v),
                plants.0,
            )
        }
        Shape::Pod { template, env } => {
            let spec = pod_spec(env, &mut plants);
            let (v, res) = match template {
                PodShape::Pod => (
                    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": spec}),
                    "pods",
                ),
                PodShape::Deployment => (
                    json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "d"},
                        "spec": {"template": {"spec": spec}}}),
                    "deployments",
                ),
                PodShape::CronJob => (
                    json!({"kind": "CronJob", "apiVersion": "batch/v1", "metadata": {"name": "j"},
                        "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
                    "cronjobs",
                ),
            };
            (ctx(res, "get"), StreamKind::Json, ser(&v), plants.0)
        }
        Shape::Table { rows } => {
            let rows: Vec<Value> = rows
                .iter()
                .map(|s| {
                    json!({"cells": ["s", "Opaque", 1, "1d"],
                        "object": s.build(&mut plants, true)})
                })
                .collect();
            let v = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "1"},
                "columnDefinitions": [{"name": "Name", "type": "string"}],
                "rows": rows});
            (ctx("secrets", "list"), StreamKind::Json, ser(&v), plants.0)
        }
    }
}

/// Every object of the document names its kind before its values (a list
/// its `kind` before `items`).
fn kinds_up_front(shape: &Shape) -> bool {
    match shape {
        Shape::Secret(s) => s.with_kind,
        Shape::List {
            kind_last,
            list_kind,
            ..
        } => *list_kind && !kind_last,
        Shape::Watch { .. } | Shape::ConfigMap { .. } | Shape::Pod { .. } | Shape::Table { .. } => {
            true
        }
    }
}

fn planted(split: u8, rest: &[u8]) {
    let mut u = Unstructured::new(rest);
    let Ok(shape) = Shape::arbitrary(&mut u) else {
        return;
    };
    let pretty = split & 0x80 != 0;
    let (mut ctx, kind, body, plants) = build(&shape, pretty);
    // A document whose kinds are all known before its values says what it
    // is: it is masked as that kind whatever path it came from.
    let other: u8 = u.arbitrary().unwrap_or(0);
    if other & 1 == 1 && kinds_up_front(&shape) {
        ctx.resource = RESOURCES[usize::from((other >> 1) & 7)].to_string();
        ctx.verb = VERBS[usize::from((other >> 4) & 3)].to_string();
    }
    if body.len() > MAX_VALUE / 2 {
        // One value may not exceed the bound; such inputs say nothing here.
        return;
    }
    let moved = other & 1 == 1 && kinds_up_front(&shape);
    let out = match stream(&ctx, kind, &body, &mut Splitter::new(split)) {
        Ok(out) => out,
        // Served on another resource's path, a list whose `kind` names a
        // different resource is refused (fail closed): nothing leaks.
        Err(e) if moved && e.to_string().contains("contradicts") => return,
        Err(e) => panic!(
            "a well-formed {kind:?} body was refused ({e}): {}",
            String::from_utf8_lossy(&body)
        ),
    };
    let values = serde_json::Deserializer::from_slice(&out)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>();
    assert!(
        values.is_ok(),
        "invalid JSON out: {}",
        String::from_utf8_lossy(&out)
    );
    let text = String::from_utf8_lossy(&out);
    for p in &plants {
        assert!(!text.contains(p.as_str()), "planted {p} leaked: {text}");
        let b = B64.encode(p);
        assert!(
            !text.contains(&b),
            "planted {p} leaked as base64 {b}: {text}"
        );
    }
}
