//! Equality of the byte-level path (`bytes.rs`) and the tree engine: random
//! objects, lists and watch streams with planted secrets (raw, base64 and
//! URL-safe base64 copies elsewhere, escapes, unicode, numbers of every
//! form, pretty and compact), under several request contexts, whole and
//! chunked: same count, same error, outputs that parse to the same JSON,
//! and the byte path's output is valid JSON. The byte path must also be the
//! one taken for the shapes it handles.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn masker() -> Arc<Masker> {
    Arc::new(MaskingConfig::embedded_default().compile().unwrap())
}

/// A masker with more rules: field paths with indexes and wildcards, keys
/// on every resource.
fn masker_wide() -> Arc<Masker> {
    let mut cfg = MaskingConfig::embedded_default();
    cfg.rules.push(MaskRule {
        resources: vec!["*".into()],
        fields: vec![
            "spec.secretRef.*".into(),
            "spec.items.1".into(),
            "status.*.token".into(),
            "data".into(),
        ],
        keys: Some("(?i)key$".into()),
        ..MaskRule::default()
    });
    cfg.rules.push(MaskRule {
        resources: vec!["widgets".into(), "pods".into()],
        fields: vec!["*.creds".into(), "metadata.labels.secret".into()],
        env_names: Some("^TOKEN".into()),
        ..MaskRule::default()
    });
    Arc::new(cfg.compile().unwrap())
}

type Outcome = Result<(Vec<u8>, usize), MaskError>;

/// Stream `input` through a masker (tree engine only or not), holding at
/// most `hold` bytes of a JSON document unscanned; the outcome and (units
/// by bytes, units by tree).
fn run(
    m: &Arc<Masker>,
    c: &MaskContext,
    kind: StreamKind,
    input: &[u8],
    chunk: usize,
    tree: bool,
    hold: usize,
) -> (Outcome, (usize, usize)) {
    let mut s = StreamMasker::new(m.clone(), c.clone(), kind).with_hold_bytes(hold);
    if tree {
        s = s.with_tree_engine_only();
    }
    let mut out = Vec::new();
    let mut go = || -> Result<(), MaskError> {
        for piece in input.chunks(chunk.max(1)) {
            out.extend(s.push(piece)?);
        }
        out.extend(s.finish()?);
        Ok(())
    };
    let r = go().map(|()| (out, s.masked_count()));
    (r, s.units_masked())
}

/// Every JSON value in `b` (one for a document, one per event for a watch).
fn values(b: &[u8]) -> Vec<Value> {
    let mut v = serde_json::Deserializer::from_slice(b)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "invalid JSON out of the masker: {e}: {}",
                String::from_utf8_lossy(b)
            )
        });
    v.iter_mut().for_each(round_floats);
    v
}

/// Floating-point numbers rounded to 15 significant digits. The tree engine
/// writes a number back from the `f64` it parsed, the byte path keeps the
/// number's text, and serde_json (without `float_roundtrip`) parses a long
/// integer such as a mutated `1234567890123456789012345678900` and its
/// exponent form to neighbouring `f64`s: the same number, one ulp apart.
fn round_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let rounded = n
                .as_f64()
                .and_then(|f| format!("{f:.14e}").parse::<f64>().ok())
                .and_then(serde_json::Number::from_f64);
            if let Some(r) = rounded {
                *n = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round_floats),
        Value::Object(o) => o.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// Both paths over `input`; returns the byte path's unit counts (both 0
/// when the body was refused).
fn same(
    m: &Arc<Masker>,
    c: &MaskContext,
    kind: StreamKind,
    input: &[u8],
    chunk: usize,
) -> (usize, usize) {
    let (tree, _) = run(m, c, kind, input, chunk, true, DEFAULT_HOLD_BYTES);
    let (bytes, units) = run(m, c, kind, input, chunk, false, DEFAULT_HOLD_BYTES);
    // Held whole to its end (these inputs are short) or scanned chunk by
    // chunk: the same bytes out, the same units by either path.
    let (scanned, scanned_units) = run(m, c, kind, input, chunk, false, 0);
    assert_eq!(
        (&bytes, units),
        (&scanned, scanned_units),
        "held and scanned differ for {}",
        String::from_utf8_lossy(input)
    );
    match (&tree, &bytes) {
        (Ok((t, tn)), Ok((b, bn))) => {
            assert_eq!(
                tn,
                bn,
                "count differs for {}\ntree  {}\nbytes {}",
                String::from_utf8_lossy(input),
                String::from_utf8_lossy(t),
                String::from_utf8_lossy(b)
            );
            assert_eq!(
                values(t),
                values(b),
                "output differs for {}",
                String::from_utf8_lossy(input)
            );
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return (0, 0);
        }
        _ => panic!(
            "one path failed: tree {:?} bytes {:?} for {}",
            tree.as_ref().map(|x| x.1),
            bytes.as_ref().map(|x| x.1),
            String::from_utf8_lossy(input)
        ),
    }
    if kind == StreamKind::Json {
        let whole = m.mask_json_bytes(c, input);
        let whole_tree = m.mask_json_bytes_tree(c, input);
        match (&whole, &whole_tree) {
            (Ok((b, bn)), Ok((t, tn))) => {
                assert_eq!(bn, tn);
                assert_eq!(values(b), values(t));
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("mask_json_bytes: one path failed: {whole:?} / {whole_tree:?}"),
        }
    }
    units
}

const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpkZWZhdWx0In0.c2lnbmF0dXJl";

/// Texts for the other strings of an object: plain, tricky, detector hits.
fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ._-]{0,20}",
        Just("quote \" backslash \\ newline \n tab \t".to_string()),
        Just("unicode é ü 日本 🎉".to_string()),
        Just(format!("token: {JWT}")),
        Just("password=hunter2hunter2".to_string()),
        Just("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345".to_string()),
        Just("AKIAABCDEFGHIJKLMNOP".to_string()),
        Just(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
                .to_string()
        ),
        Just("***MASKED***".to_string()),
        Just("KioqTUFTS0VEKioq".to_string()),
        Just("esc__UA__ped".to_string()),
        // Detector hits only once decoded: through a `\u` escape, through
        // a tab written `\t` (ASCII and not), and a literal split by an
        // escape, which is no hit.
        Just("P__UA__SSWORD=hunter2hunter2".to_string()),
        Just("password\t=hunter2hunter2".to_string()),
        Just("paſsword\t=hunter2hunter2".to_string()),
        Just("pass\nword=hunter2hunter2 to\\ken=x".to_string()),
        Just("__N__".to_string()),
    ]
}

/// A planted secret and the places its copies go.
fn planted() -> impl Strategy<Value = String> {
    "[a-z0-9]{8,20}".prop_map(|s| format!("PLANTED{s}"))
}

/// How a planted value is copied into another string.
fn copy(secret: &str, how: u8) -> String {
    match how % 5 {
        0 => secret.to_string(),
        1 => B64.encode(secret),
        2 => URL_SAFE_NO_PAD.encode(secret),
        3 => format!("prefix-{secret}-suffix"),
        _ => format!("x{}", B64.encode(format!("ab{secret}cd"))),
    }
}

#[derive(Debug, Clone)]
struct Gen {
    value: Value,
    /// The text has parts the byte path leaves to the tree engine.
    odd: bool,
}

fn meta(name: &str, secret: &str, how: u8, fill: &str, ann: Option<String>) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert("note".into(), json!(copy(secret, how)));
    annotations.insert("other".into(), json!(fill));
    if let Some(a) = ann {
        annotations.insert(LAST_APPLIED_ANNOTATION.into(), json!(a));
    }
    json!({
        "name": name,
        "generateName": copy(secret, how.wrapping_add(1)),
        "namespace": "default",
        "uid": "1234-5678",
        "resourceVersion": "__N__",
        "labels": {"app": "web", "copy": copy(secret, how.wrapping_add(2))},
        "annotations": annotations,
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"k:{\"name\":\"web\"}": {".": {}}}}}],
    })
}

fn object() -> impl Strategy<Value = Gen> {
    (
        0u8..8,
        planted(),
        planted(),
        any::<u8>(),
        filler(),
        filler(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(shape, a, b, how, f1, f2, with_kind, ann, value_first)| {
            let applied = ann.then(|| {
                format!(
                    "{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"n\"}},\"stringData\":{{\"k\":\"{a}\"}}}}"
                )
            });
            let entry = |name: &str, value: Value| {
                if value_first {
                    json!({"value": value, "name": name})
                } else {
                    json!({"name": name, "value": value})
                }
            };
            let mut v = match shape {
                0 => json!({"kind":"Secret","apiVersion":"v1","metadata":meta("s", &a, how, &f1, applied),
                    "type":"Opaque","data":{"password":B64.encode(&a),"other":B64.encode(&f2),"jwt":B64.encode(JWT)},
                    "stringData":{"s": b},"extra":[copy(&a, how), f2]}),
                1 => json!({"kind":"ConfigMap","apiVersion":"v1","metadata":meta("cm", &a, how, &f1, applied),
                    "data":{"db_password":a,"color":f2,"apiKey":"__N__"},"binaryData":{"blob":B64.encode(JWT),"b2":B64.encode(&b)}}),
                2 => json!({"kind":"Pod","apiVersion":"v1","metadata":meta("p", &a, how, &f1, applied),
                    "spec":{"containers":[{"name":"c","image":f2,"env":[entry("SECRET_KEY", json!(a)), entry("PLAIN", json!(f1)), entry("TOKEN_N", json!("__N__")), entry("API_TOKEN", json!({"nested":[b.clone(), "__N__"]}))],
                        "command":["sh","-c",copy(&a, how)]}],
                        "initContainers":[{"name":"i","env":[entry("PASSWORD", json!(b))]}]},
                    "status":{"podIP":"10.0.0.1","token":f1}}),
                3 => json!({"kind":"Deployment","apiVersion":"apps/v1","metadata":meta("d", &a, how, &f1, applied),
                    "spec":{"replicas":"__N__","template":{"metadata":{"labels":{"secret": b}},"spec":{"containers":[{"name":"c","env":[entry("DB_PASSWORD", json!(a))]}]}}}}),
                4 => json!({"kind":"CronJob","apiVersion":"batch/v1","metadata":meta("cj", &a, how, &f1, applied),
                    "spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"c","env":[entry("CREDENTIAL", json!(a)), entry("X", json!(f2))]}]}}}}}}),
                5 => json!({"kind":"Widget","apiVersion":"example.com/v1","metadata":meta("w", &a, how, &f1, applied),
                    "spec":{"secretRef":{"x":a,"n":"__N__"},"items":[f1, b, "__N__"],"creds":{"k":copy(&b, how)},"list":[[["deep", f2]]]},
                    "status":{"one":{"token":"tok-tok-tok"},"two":{"token":"__N__"}}}),
                6 => json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":f1,"reason":f2,"code":"__N__"}),
                _ => json!({"kind":"ServiceAccount","apiVersion":"v1","metadata":meta("sa", &a, how, &f1, applied),
                    "secrets":[{"name":copy(&a, how)}],"data":{"k":a},"token":b}),
            };
            if !with_kind {
                v.as_object_mut().unwrap().remove("kind");
            }
            Gen { value: v, odd: false }
        })
}

/// Numbers substituted for `"__N__"` strings, in order.
const NUMBERS: [&str; 14] = [
    "0",
    "-0",
    "1",
    "-2",
    "18446744073709551615",
    "1.5",
    "1e3",
    "0.1",
    "1E+2",
    "-0.0",
    "123456789012345678901234567890",
    "2.5e-3",
    "0e0",
    "7",
];

/// The JSON text of `v`: numbers put in, escapes planted, pretty or not.
fn text(v: &Value, pretty: bool, seed: usize) -> Vec<u8> {
    let s = if pretty {
        serde_json::to_string_pretty(v).unwrap()
    } else {
        serde_json::to_string(v).unwrap()
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    let mut k = seed;
    while let Some(p) = rest.find("\"__N__\"") {
        out.push_str(&rest[..p]);
        out.push_str(NUMBERS[k % NUMBERS.len()]);
        k += 1;
        rest = &rest[p + 7..];
    }
    out.push_str(rest);
    // An escaped `A` inside strings (values and keys).
    let out = out.replace("__UA__", "\\u0041");
    // Some planted values spelled with an escape.
    if seed.is_multiple_of(3) {
        out.replacen("PLANTED", "PL\\u0041NTED", 2).into_bytes()
    } else {
        out.into_bytes()
    }
}

fn contexts(resource: &str, verb: &str, secret: &str) -> Vec<MaskContext> {
    let base = MaskContext {
        resource: resource.into(),
        verb: verb.into(),
        ..MaskContext::default()
    };
    vec![
        base.clone(),
        MaskContext {
            resource: "secrets".into(),
            ..base.clone()
        },
        MaskContext {
            resource: String::new(),
            ..base.clone()
        },
        MaskContext {
            scrub: Some(Arc::new(ScrubSet::new([secret.as_bytes(), b"tok-tok-tok"]))),
            ..base.clone()
        },
        MaskContext {
            subresource: "token".into(),
            resource: "serviceaccounts".into(),
            ..base
        },
    ]
}

fn resource_of(v: &Value) -> &'static str {
    match v.get("kind").and_then(Value::as_str) {
        Some("ConfigMap") => "configmaps",
        Some("Pod") => "pods",
        Some("Deployment") => "deployments",
        Some("CronJob") => "cronjobs",
        Some("Widget") => "widgets",
        Some("ServiceAccount") => "serviceaccounts",
        _ => "secrets",
    }
}

fn first_planted(v: &Value) -> String {
    let s = v.to_string();
    s.find("PLANTED")
        .map(|p| {
            s[p..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        })
        .unwrap_or_else(|| "PLANTEDnone".into())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prop_single_objects_equal(g in object(), pretty in any::<bool>(), seed in 0usize..100, chunk in 1usize..400, wide in any::<bool>()) {
        let m = if wide { masker_wide() } else { masker() };
        let input = text(&g.value, pretty, seed);
        let secret = first_planted(&g.value);
        for c in contexts(resource_of(&g.value), "get", &secret) {
            let (by_bytes, by_tree) = same(&m, &c, StreamKind::Json, &input, chunk);
            if g.value.get("kind").is_some() && !g.odd {
                prop_assert_eq!(by_tree, 0, "fell back on {}", String::from_utf8_lossy(&input));
                prop_assert_eq!(by_bytes, 1);
            }
        }
    }

    #[test]
    fn prop_lists_equal(gs in proptest::collection::vec(object(), 0..5), pretty in any::<bool>(), seed in 0usize..100, chunk in 1usize..600, typed in any::<bool>(), wide in any::<bool>()) {
        let m = if wide { masker_wide() } else { masker() };
        let res = gs.first().map_or("secrets", |g| resource_of(&g.value));
        let items: Vec<Value> = gs
            .iter()
            .map(|g| {
                let mut v = g.value.clone();
                if typed {
                    v.as_object_mut().unwrap().remove("kind");
                }
                v
            })
            .collect();
        let kind = match res {
            "configmaps" => "ConfigMapList",
            "pods" => "PodList",
            "deployments" => "DeploymentList",
            "widgets" => "WidgetList",
            _ => "SecretList",
        };
        let list = json!({"kind":kind,"apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":items});
        let input = text(&list, pretty, seed);
        let secret = first_planted(&list);
        for c in contexts(res, "list", &secret) {
            let (by_bytes, by_tree) = same(&m, &c, StreamKind::Json, &input, chunk);
            let refused = (by_bytes, by_tree) == (0, 0);
            if !gs.iter().any(|g| g.odd) && !refused {
                prop_assert_eq!(by_tree, 0, "fell back on {}", String::from_utf8_lossy(&input));
                prop_assert_eq!(by_bytes, gs.len());
            }
        }
    }

    #[test]
    fn prop_watch_streams_equal(gs in proptest::collection::vec(object(), 0..5), seed in 0usize..100, chunk in 1usize..600, extra in any::<bool>()) {
        let m = masker();
        let mut input = Vec::new();
        for (i, g) in gs.iter().enumerate() {
            let ev = if extra {
                json!({"object": g.value, "type": "MODIFIED", "note": format!("{JWT} x")})
            } else {
                json!({"type": if i % 2 == 0 { "ADDED" } else { "DELETED" }, "object": g.value})
            };
            input.extend(text(&ev, false, seed + i));
            input.push(b'\n');
        }
        let secret = first_planted(&json!(gs.iter().map(|g| g.value.clone()).collect::<Vec<_>>()));
        for c in contexts("secrets", "watch", &secret) {
            let (by_bytes, by_tree) = same(&m, &c, StreamKind::Watch, &input, chunk);
            if gs.iter().all(|g| g.value.get("kind").is_some() && !g.odd) {
                prop_assert_eq!(by_tree, 0, "fell back on {}", String::from_utf8_lossy(&input));
                prop_assert_eq!(by_bytes, gs.len());
            }
        }
    }

    /// Mutated inputs: whatever either path accepts or refuses, both agree.
    #[test]
    fn prop_mutated_bodies_equal(g in object(), seed in 0usize..100, at in any::<prop::sample::Index>(), byte in any::<u8>(), chunk in 1usize..300, watch in any::<bool>()) {
        let m = masker();
        let mut input = if watch {
            text(&json!({"type":"ADDED","object":g.value}), false, seed)
        } else {
            text(&g.value, false, seed)
        };
        let i = at.index(input.len());
        match seed % 4 {
            0 => input[i] = byte,
            1 => input.insert(i, byte),
            2 => { input.remove(i); }
            _ => input.insert(i, b"\"'{}[],:\\-.e0 "[usize::from(byte) % 14]),
        }
        let kind = if watch { StreamKind::Watch } else { StreamKind::Json };
        let secret = first_planted(&g.value);
        for c in contexts(resource_of(&g.value), if watch { "watch" } else { "get" }, &secret) {
            same(&m, &c, kind, &input, chunk);
        }
    }
}

#[test]
fn odd_shapes_fall_back_and_agree() {
    let m = masker();
    let c = MaskContext {
        resource: "secrets".into(),
        verb: "get".into(),
        ..MaskContext::default()
    };
    let odd: [&[u8]; 14] = [
        br#"{"kind":"Secret","data":{"a":"eA=="},"data":{"b":"eA=="}}"#,
        br#"{"kind":"Secret","kind":"Secret"}"#,
        br#"{"kind":"Secret","n":1e400}"#,
        br#"{"kind":"Secret","n":01}"#,
        br#"{"kind":"Secret","s":"a\u0000b","data":{"a":"eA=="}}"#,
        br#"{"kind":"Secret","s":"\ud800","data":{"a":"eA=="}}"#,
        b"{\"kind\":\"Secret\",\"s\":\"\xff\"}",
        b"{\"kind\":\"Secret\",\"s\":\"a\tb\"}",
        br#"{"kind":"Secret","data":{"a":"eA=="},}"#,
        br#"{"kind":"Table","rows":[{"cells":["x"],"object":{"kind":"Secret","data":{"a":"eA=="}}}]}"#,
        br#"{"kind":"PartialObjectMetadata","metadata":{"name":"x"}}"#,
        br#"{"kind":"SecretList","items":[{"data":{"a":"eA=="}}]}"#,
        br#"[{"op":"add","path":"/data/a","value":"eA=="}]"#,
        br#"{"kind":"Secret","data":{"PLANTEDkeyxx":"eA=="},"metadata":{"labels":{"UExBTlRFRGtleXh4":"x"}}}"#,
    ];
    for body in odd {
        for chunk in [1, 7, 1000] {
            same(&m, &c, StreamKind::Json, body, chunk);
        }
    }
    let deep = format!(
        "{{\"kind\":\"Secret\",\"x\":{}1{}}}",
        "[".repeat(120),
        "]".repeat(120)
    );
    same(&m, &c, StreamKind::Json, deep.as_bytes(), 64);
}

#[test]
fn benchmark_shapes_take_the_byte_path() {
    let m = masker();
    let pod = br#"{"metadata":{"name":"web-1","managedFields":[{"fieldsV1":{"f:spec":{"k:{\"name\":\"web\"}":{}}}}]},"spec":{"containers":[{"name":"web","env":[{"name":"DB_PASSWORD","value":"pw-1-hunter2"}]}]}}"#;
    let list = [
        br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":["#.as_slice(),
        pod,
        b",",
        pod,
        b"]}",
    ]
    .concat();
    let c = MaskContext {
        resource: "pods".into(),
        verb: "list".into(),
        ..MaskContext::default()
    };
    let (units, _) = (same(&m, &c, StreamKind::Json, &list, 100), ());
    assert_eq!(units, (2, 0));
    let (out, _) = run(
        &m,
        &c,
        StreamKind::Json,
        &list,
        100,
        false,
        DEFAULT_HOLD_BYTES,
    )
    .0
    .unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(!s.contains("hunter2"));
    // Untouched bytes are passed on as they came (the escaped key too).
    assert!(s.contains(r#""k:{\"name\":\"web\"}""#));
}

/// Strings the detectors match, and near misses.
fn detector_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(JWT.to_string()),
        Just("PassWord = hunter22".to_string()),
        Just("paſsword=hunter22".to_string()),
        Just("api_KEY: 'abcdef'".to_string()),
        Just("TOKEN=\\\"abc\\\"".to_string()),
        Just("bEaReR abcdefghijklmnopqrstuvwxyz".to_string()),
        Just("ASIAABCDEFGHIJKLMNOP".to_string()),
        Just("-----BEGIN EC PRIVATE KEY-----\nabc".to_string()),
        Just("-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----".to_string()),
        "[a-zA-Z0-9 =:\"'._-]{0,12}",
        "\\PC{0,6}",
    ];
    proptest::collection::vec(piece, 1..4).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The run prefilter is a superset: a string the detectors change
    /// makes any text holding it as a JSON string (quotes around) match.
    #[test]
    fn prop_detector_prefilter_is_a_superset(s in detector_text(), before in "[a-z\":,{ ]{0,8}", after in "[a-z\":,} ]{0,8}") {
        let m = masker();
        let (_, n) = m.detectors.apply(&s);
        if n > 0 {
            let quoted = serde_json::to_string(&s).unwrap();
            if !quoted.contains('\\') {
                let run = format!("{before}{quoted}{after}");
                prop_assert!(m.detectors.may_match(&run), "{run:?}");
            }
        }
    }
}

/// Units with many literal hits and many strings (a value of repeated
/// `pwd`, thousands of keys, a non-ASCII run between masked values): the
/// byte path agrees with the tree engine; its searches per string are
/// binary searches (`in_runs`, `hit_inside`), so such a unit costs about
/// what the tree engine's pass costs, not strings times hits.
#[test]
fn many_hits_and_many_strings_agree() {
    let m = masker();
    let pwd = "pwd".repeat(20_000);
    let keys: String = (0..2_000).map(|i| format!(",\"k{i}\":\"v\"")).collect();
    let cm = format!(
        "{{\"kind\":\"ConfigMap\",\"data\":{{\"big\":\"{pwd}\"{keys},\"pwd{pwd}\":\"x\"}}}}"
    );
    let secret_keys: String = (0..2_000)
        .map(|i| format!(",\"\u{e9} password=a{i}\":\"eA==\",\"s{i}\":\"a\""))
        .collect();
    let secret = format!("{{\"kind\":\"Secret\",\"data\":{{\"first\":\"eA==\"{secret_keys}}}}}");
    for (resource, body) in [("configmaps", cm), ("secrets", secret)] {
        let c = MaskContext {
            resource: resource.into(),
            verb: "get".into(),
            ..MaskContext::default()
        };
        let (by_bytes, _) = same(&m, &c, StreamKind::Json, body.as_bytes(), 1 << 16);
        assert_eq!(by_bytes, 1, "{resource}: the byte path took it");
    }
}

/// A unit far larger than usual is masked, and its working set does not
/// stay with the thread afterwards.
#[test]
fn a_huge_unit_leaves_no_large_scratch_behind() {
    let m = masker();
    let c = MaskContext {
        resource: "configmaps".into(),
        verb: "get".into(),
        ..MaskContext::default()
    };
    let keys: Vec<String> = (0..20_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
    let body = format!("{{\"kind\":\"ConfigMap\",\"data\":{{{}}}}}", keys.join(","));
    let (out, n) = m.mask_json_bytes(&c, body.as_bytes()).unwrap();
    assert_eq!((out.as_slice(), n), (body.as_bytes(), 0));
    super::bytes::SCRATCH.with(|sc| {
        assert!(sc.borrow().entries_kept() <= super::bytes::SCRATCH_KEPT);
    });
}

proptest! {
    /// The binary searches give what a scan over every run and hit gives.
    #[test]
    fn run_and_hit_searches_equal_a_scan(
        gaps in proptest::collection::vec((0u32..5, 1u32..6), 0..40),
        hit_list in proptest::collection::vec((0u32..200, 1u32..6), 0..60),
        probes in proptest::collection::vec((0u32..210, 0u32..20), 1..40),
    ) {
        let mut runs = Vec::new();
        let mut at = 0;
        for (gap, len) in gaps {
            runs.push((at + gap, at + gap + len));
            at += gap + len;
        }
        let mut hits: Vec<(u32, u32)> = hit_list.into_iter().map(|(a, n)| (a, a + n)).collect();
        hits.sort_unstable();
        for (p, w) in probes {
            prop_assert_eq!(
                super::bytes::in_runs(&runs, p),
                runs.iter().any(|&(a, b)| a <= p && p < b)
            );
            prop_assert_eq!(
                super::bytes::hit_inside(&hits, p, p + w),
                hits.iter().any(|&(a, b)| a > p && b < p + w)
            );
        }
    }
}

/// The word-at-a-time search for the end of a string (the stream's value
/// scan) finds what a byte loop finds: every length to 80, a quote or a
/// backslash at every position (in the words, the tail, past 32 bytes),
/// none at all, with control characters and bytes above 0x7f around it.
#[test]
fn quote_or_backslash_is_the_first_quote_or_backslash() {
    let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\');
    for n in 0..80usize {
        let base: Vec<u8> = (0..n)
            .map(|i| [b'a', 0x01, 0x1f, 0xe2, b'/', 0x7f][i % 6])
            .collect();
        assert_eq!(
            bytes::quote_or_backslash(&base),
            naive(&base),
            "none, len {n}"
        );
        for at in 0..n {
            for special in [b'"', b'\\'] {
                let mut b = base.clone();
                b[at] = special;
                if at + 1 < n {
                    b[n - 1] = b'"';
                }
                assert_eq!(bytes::quote_or_backslash(&b), naive(&b), "len {n}, at {at}");
            }
        }
    }
}
