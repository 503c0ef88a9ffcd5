//! Tests of the masking engine: every shape, the configuration errors, the
//! streaming masker, and property tests with planted secrets.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn masker() -> Masker {
    MaskingConfig::embedded_default().compile().unwrap()
}

fn ctx(resource: &str) -> MaskContext {
    MaskContext::for_resource(resource)
}

fn ctx_verb(resource: &str, verb: &str) -> MaskContext {
    MaskContext {
        verb: verb.into(),
        ..ctx(resource)
    }
}

const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpkZWZhdWx0In0.c2lnbmF0dXJl";

fn b64(s: &str) -> String {
    B64.encode(s)
}

fn secret(name: &str, pw: &str) -> Value {
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "annotations": {
            LAST_APPLIED_ANNOTATION: format!("{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"stringData\":{{\"password\":\"{pw}\"}}}}"),
            "team": "blue"
        }},
        "type": "Opaque",
        "data": {"password": b64(pw), "user": b64("admin")}
    })
}

fn masked(m: &Masker, c: &MaskContext, mut v: Value) -> (Value, usize) {
    let n = m.mask_value(c, &mut v);
    (v, n)
}

// ---------------------------------------------------------------- config

#[test]
fn embedded_default_yaml_matches_constructor_and_compiles() {
    let parsed: MaskingConfig = serde_saphyr::from_str(EMBEDDED_DEFAULT_YAML).unwrap();
    assert_eq!(parsed, MaskingConfig::embedded_default());
    masker();
}

#[test]
fn config_serde_shape() {
    let yaml = "rules:\n  - resources: [configmaps]\n    keys: \"(?i)pw\"\n    envNames: x\n    fields: [\"data.*\"]\ndetectors: [jwt]\n";
    let c: MaskingConfig = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(c.rules[0].env_names.as_deref(), Some("x"));
    assert_eq!(c.rules[0].keys.as_deref(), Some("(?i)pw"));
    assert!(
        serde_saphyr::from_str::<MaskingConfig>("rules: [{resources: [a], bogus: 1}]").is_err()
    );
}

#[test]
fn config_errors_name_rule_and_field() {
    let rule = |f: fn(&mut MaskRule)| {
        let mut r = MaskRule {
            resources: vec!["secrets".into()],
            fields: vec!["data.*".into()],
            ..MaskRule::default()
        };
        f(&mut r);
        let ok = MaskRule {
            resources: vec!["*".into()],
            fields: vec!["x".into()],
            ..MaskRule::default()
        };
        MaskingConfig {
            rules: vec![ok, r],
            detectors: vec![],
        }
        .compile()
        .unwrap_err()
    };
    let e = rule(|r| r.keys = Some("(unclosed".into()));
    assert!(
        matches!(
            e,
            MaskConfigError::BadRegex {
                index: 1,
                field: "keys",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("masking.rules[1].keys: invalid regex"),
        "{e}"
    );
    let e = rule(|r| r.env_names = Some("[".into()));
    assert!(
        matches!(
            e,
            MaskConfigError::BadRegex {
                index: 1,
                field: "envNames",
                ..
            }
        ),
        "{e}"
    );
    for bad in ["", "data..x", "data.", "da*ta", "spec.containers[0]"] {
        let e = MaskingConfig {
            rules: vec![MaskRule {
                resources: vec!["pods".into()],
                fields: vec!["ok".into(), bad.into()],
                ..MaskRule::default()
            }],
            detectors: vec![],
        }
        .compile()
        .unwrap_err();
        assert!(
            matches!(&e, MaskConfigError::BadFieldPath { index: 0, path_index: 1, path, .. } if path == bad),
            "{bad}: {e}"
        );
    }
    let e = rule(|r| r.resources = vec!["secrets".into(), "Secrets".into()]);
    assert!(
        matches!(
            e,
            MaskConfigError::BadResource {
                index: 1,
                resource_index: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = rule(|r| r.resources.clear());
    assert_eq!(e, MaskConfigError::NoResources { index: 1 });
    let e = rule(|r| r.fields.clear());
    assert_eq!(e, MaskConfigError::EmptyRule { index: 1 });
    let e = MaskingConfig {
        rules: vec![],
        detectors: vec!["jwt".into(), "credit-card".into()],
    }
    .compile()
    .unwrap_err();
    assert!(
        matches!(&e, MaskConfigError::UnknownDetector { index: 1, name } if name == "credit-card")
    );
    assert!(e.to_string().contains("masking.detectors[1]"));
}

#[test]
fn resource_patterns() {
    let p = |s: &str| ResourcePattern::parse(s).unwrap();
    assert!(p("*").matches("secrets", ""));
    assert!(p("*").matches("serviceaccounts", "token"));
    assert!(p("secrets").matches("secrets", ""));
    assert!(!p("secrets").matches("configmaps", ""));
    assert!(!p("pods").matches("pods", "log"));
    assert!(p("serviceaccounts/token").matches("serviceaccounts", "token"));
    assert!(!p("serviceaccounts/token").matches("serviceaccounts", ""));
    assert!(p("pods/*").matches("pods", "status"));
    assert!(p("*/token").matches("serviceaccounts", "token"));
    assert!(ResourcePattern::parse("a/b/c").is_err());
}

// ---------------------------------------------------------------- objects

#[test]
fn secret_data_masked_with_valid_base64_and_last_applied() {
    let m = masker();
    let (v, n) = masked(&m, &ctx("secrets"), secret("s", "hunter2"));
    assert_eq!(v["data"]["password"], MARKER_BASE64);
    assert_eq!(v["data"]["user"], MARKER_BASE64);
    assert_eq!(B64.decode(MARKER_BASE64).unwrap(), MARKER.as_bytes());
    assert_eq!(
        v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"default"}}"#
    );
    assert_eq!(v["metadata"]["annotations"]["team"], "blue");
    assert_eq!(v["metadata"]["name"], "s");
    assert_eq!(n, 3);
    // Key order kept.
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["kind", "apiVersion", "metadata", "type", "data"]);
    // Idempotent: masking masked output changes nothing.
    let (v2, n2) = masked(&m, &ctx("secrets"), v.clone());
    assert_eq!((v2, n2), (v, 0));
}

#[test]
fn secret_string_data_and_sa_token_and_kind_beats_request() {
    let m = masker();
    let s = json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"t"},
        "type":"kubernetes.io/service-account-token",
        "data":{"token": b64(JWT), "ca.crt": b64("CERT"), "namespace": b64("default")},
        "stringData":{"extra":"plain-secret"}});
    // Even when the request was for something else (kind decides).
    let (v, n) = masked(&m, &ctx("configmaps"), s);
    assert_eq!(n, 4);
    for k in ["token", "ca.crt", "namespace"] {
        assert_eq!(v["data"][k], MARKER_BASE64);
    }
    assert_eq!(v["stringData"]["extra"], MARKER);
    // No kind: the request's resource decides (create request body).
    let (v, n) = masked(
        &m,
        &ctx("secrets"),
        json!({"metadata":{"name":"x"},"stringData":{"password":"pw"}}),
    );
    assert_eq!((v["stringData"]["password"].as_str(), n), (Some(MARKER), 1));
}

#[test]
fn configmap_keys_rule() {
    let m = masker();
    let cm = json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","annotations":{
            LAST_APPLIED_ANNOTATION: "{\"data\":{\"DB_PASSWORD\":\"pw\"}}"}},
        "data":{"DB_PASSWORD":"pw","apiKey":"k","color":"blue"},
        "binaryData":{"secret.bin": b64("bin"), "logo.png": b64("png")}});
    let (v, n) = masked(&m, &ctx("configmaps"), cm);
    assert_eq!(v["data"]["DB_PASSWORD"], MARKER);
    assert_eq!(v["data"]["apiKey"], MARKER);
    assert_eq!(v["data"]["color"], "blue");
    assert_eq!(v["binaryData"]["secret.bin"], MARKER_BASE64);
    assert_eq!(v["binaryData"]["logo.png"], b64("png"));
    assert_eq!(
        v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#
    );
    assert_eq!(n, 4);
    // Nothing secret: unchanged, bytes identical.
    let plain = br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"color\":\"blue\"}}"}},"data":{"color":"blue"},"n":1.50}"#;
    let (out, n) = m.mask_json_bytes(&ctx("configmaps"), plain).unwrap();
    assert_eq!((out.as_slice(), n), (&plain[..], 0));
}

#[test]
fn last_applied_masked_when_its_content_would_be() {
    let m = masker();
    // The live object no longer has the key, the annotation still does.
    let cm = json!({"kind":"ConfigMap","metadata":{"name":"c","annotations":{
        LAST_APPLIED_ANNOTATION: "{\"kind\":\"ConfigMap\",\"data\":{\"token\":\"abc\"}}"}},"data":{}});
    let (v, n) = masked(&m, &ctx("configmaps"), cm);
    assert_eq!(
        v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"kind":"ConfigMap","metadata":{"name":"c"}}"#
    );
    assert_eq!(n, 1);
    // A Deployment whose annotation holds a secret env value.
    let d = json!({"kind":"Deployment","metadata":{"annotations":{LAST_APPLIED_ANNOTATION:
        "{\"kind\":\"Deployment\",\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"env\":[{\"name\":\"API_TOKEN\",\"value\":\"t0k\"}]}]}}}}"}}});
    let (v, n) = masked(&m, &ctx("deployments"), d);
    assert_eq!(
        v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"kind":"Deployment","metadata":{}}"#
    );
    assert_eq!(n, 1);
}

#[test]
fn env_values_in_every_pod_spec_shape() {
    let m = masker();
    let containers = json!([{"name":"app","env":[
        {"name":"DB_PASSWORD","value":"pw1"},
        {"name":"MODE","value":"prod"},
        {"name":"API_TOKEN","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}}]}]);
    let spec = json!({"containers": containers, "initContainers": containers, "ephemeralContainers": containers});
    let cases = [
        ("pods", json!({"kind":"Pod","spec": spec})),
        (
            "deployments",
            json!({"kind":"Deployment","spec":{"template":{"spec": spec}}}),
        ),
        (
            "podtemplates",
            json!({"kind":"PodTemplate","template":{"spec": spec}}),
        ),
        (
            "cronjobs",
            json!({"kind":"CronJob","spec":{"jobTemplate":{"spec":{"template":{"spec": spec}}}}}),
        ),
        (
            "widgets",
            json!({"kind":"Widget","apiVersion":"x.io/v1","spec":{"template":{"spec": spec}}}),
        ),
    ];
    for (res, obj) in cases {
        let (v, n) = masked(&m, &ctx(res), obj);
        let s = v.to_string();
        assert!(!s.contains("pw1"), "{res}: {s}");
        assert!(s.contains("\"prod\""), "{res}");
        assert!(s.contains("secretKeyRef"), "{res}");
        assert_eq!(n, 3, "{res}");
    }
}

#[test]
fn field_paths_with_wildcards_and_indexes() {
    let m = MaskingConfig {
        rules: vec![MaskRule {
            resources: vec!["widgets".into()],
            fields: vec![
                "spec.creds.*.password".into(),
                "spec.list.1".into(),
                "spec.pin".into(),
            ],
            ..MaskRule::default()
        }],
        detectors: vec![],
    }
    .compile()
    .unwrap();
    let w = json!({"spec":{"creds":{"a":{"password":"p1","user":"u"},"b":{"password":{"nested":"p2"}}},
        "list":["keep","drop","keep2"],"pin":1234}});
    let (v, n) = masked(&m, &ctx("widgets"), w.clone());
    assert_eq!(
        v,
        json!({"spec":{"creds":{"a":{"password":MARKER,"user":"u"},"b":{"password":{"nested":MARKER}}},
        "list":["keep",MARKER,"keep2"],"pin":0}})
    );
    assert_eq!(n, 4);
    // Other resources untouched.
    assert_eq!(masked(&m, &ctx("gadgets"), w.clone()), (w, 0));
}

#[test]
fn token_request_status_token() {
    let m = masker();
    let c = MaskContext {
        resource: "serviceaccounts".into(),
        subresource: "token".into(),
        api_group: String::new(),
        verb: "create".into(),
        scrub: None,
    };
    let tr = json!({"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1",
        "spec":{"audiences":["api"]},"status":{"token":"opaque-token","expirationTimestamp":"2030-01-01T00:00:00Z"}});
    let (v, n) = masked(&m, &c, tr);
    assert_eq!(v["status"]["token"], MARKER);
    assert_eq!(v["status"]["expirationTimestamp"], "2030-01-01T00:00:00Z");
    assert_eq!(n, 1);
    let (v, _) = masked(&m, &c, json!({"status":{"token":"opaque"}}));
    assert_eq!(v["status"]["token"], MARKER);
    // A ServiceAccount itself (no subresource) has no status.token rule.
    let (v, n) = masked(
        &m,
        &ctx("serviceaccounts"),
        json!({"kind":"ServiceAccount","status":{"token":"x"}}),
    );
    assert_eq!((v["status"]["token"].as_str(), n), (Some("x"), 0));
}

#[test]
fn detectors_apply_to_any_string() {
    let m = masker();
    let ev = json!({"kind":"Event","message":format!("login with {JWT} failed"),
        "metadata":{"annotations":{"note":"aws AKIAIOSFODNN7EXAMPLE"}}});
    let (v, n) = masked(&m, &ctx("events"), ev);
    assert_eq!(v["message"], "login with ***MASKED*** failed");
    assert_eq!(v["metadata"]["annotations"]["note"], "aws ***MASKED***");
    assert_eq!(n, 2);
}

// ---------------------------------------------------------------- shapes

#[test]
fn request_bodies_json_patch() {
    let m = masker();
    let c = ctx_verb("secrets", "patch");
    let ops = json!([
        {"op":"replace","path":"/data/password","value":b64("pw-1")},
        {"op":"add","path":"/stringData","value":{"token":"pw-2"}},
        {"op":"add","path":"/metadata/labels/a~1b","value":"plain"},
        {"op":"remove","path":"/data/old"},
        {"op":"test","path":"/metadata/annotations/note","value":format!("Bearer {JWT}")}
    ]);
    let (v, n) = masked(&m, &c, ops);
    assert_eq!(
        v,
        json!([
            {"op":"replace","path":"/data/password","value":MARKER_BASE64},
            {"op":"add","path":"/stringData","value":{"token":MARKER}},
            {"op":"add","path":"/metadata/labels/a~1b","value":"plain"},
            {"op":"remove","path":"/data/old"},
            {"op":"test","path":"/metadata/annotations/note","value":"Bearer ***MASKED***"}
        ])
    );
    assert_eq!(n, 3);
    // A merge patch is an object: masked like one.
    let (v, n) = masked(&m, &c, json!({"data":{"password":b64("pw")}}));
    assert_eq!(
        (v["data"]["password"].as_str(), n),
        (Some(MARKER_BASE64), 1)
    );
}

#[test]
fn list_items_without_kind() {
    let m = masker();
    let mut s1 = secret("a", "pw-a");
    let mut s2 = secret("b", "pw-b");
    s1.as_object_mut().unwrap().remove("kind");
    s2.as_object_mut().unwrap().remove("kind");
    let list = json!({"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"abc"},"items":[s1,s2]});
    let (v, n) = masked(&m, &ctx("secrets"), list);
    assert_eq!(n, 6);
    assert_eq!(v["metadata"]["continue"], "abc");
    assert_eq!(v["items"][1]["data"]["password"], MARKER_BASE64);
    assert!(!v.to_string().contains("pw-a"));
}

#[test]
fn watch_events() {
    let m = masker();
    let c = ctx_verb("secrets", "watch");
    let (v, n) = masked(&m, &c, json!({"type":"ADDED","object":secret("a","pw")}));
    assert_eq!(v["object"]["data"]["password"], MARKER_BASE64);
    assert_eq!(n, 3);
    let bookmark = json!({"type":"BOOKMARK","object":{"kind":"Secret","apiVersion":"v1","metadata":{"resourceVersion":"12"}}});
    assert_eq!(masked(&m, &c, bookmark.clone()), (bookmark, 0));
    let err = json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410}});
    assert_eq!(masked(&m, &c, err.clone()), (err, 0));
}

#[test]
fn last_applied_skeleton_sources_and_idempotence() {
    let m = masker();
    // Fields from the annotation's own JSON win; no value survives.
    let s = json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"live","namespace":"prod","annotations":{
        LAST_APPLIED_ANNOTATION: "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\",\"namespace\":\"ns\",\"labels\":{\"a\":\"b\"}},\"stringData\":{\"password\":\"pw\"}}"}},
        "data":{"password": b64("pw")}});
    let (v, n) = masked(&m, &ctx("secrets"), s);
    let ann = v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .unwrap();
    assert_eq!(
        ann,
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"ns"}}"#
    );
    assert_eq!(n, 2);
    // Masking the output again changes and counts nothing.
    assert_eq!(masked(&m, &ctx("secrets"), v.clone()), (v, 0));
    // Not JSON: the plain marker, counted once.
    let s = json!({"kind":"Secret","metadata":{"name":"x","annotations":{LAST_APPLIED_ANNOTATION:"password=pw"}}});
    let (v, n) = masked(&m, &ctx("secrets"), s);
    assert_eq!(
        v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        MARKER
    );
    assert_eq!(n, 1);
    assert_eq!(masked(&m, &ctx("secrets"), v.clone()), (v, 0));
    // A PartialObjectMetadata's own kind is not the object's.
    let pom = json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"p","namespace":"default",
        "annotations":{LAST_APPLIED_ANNOTATION:"{\"kind\":\"Secret\",\"data\":{\"password\":\"cHc=\"}}"}}});
    let (v, _) = masked(&m, &ctx_verb("secrets", "get"), pom);
    assert_eq!(
        v["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"kind":"Secret","metadata":{"name":"p","namespace":"default"}}"#
    );
}

#[test]
fn tables_object_metadata_none_and_cells() {
    let m = masker();
    let c = ctx_verb("secrets", "list");
    let cols = json!([{"name":"Name","type":"string"},{"name":"Data","type":"string"}]);
    let full = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":cols,
        "rows":[{"cells":["a",format!("Bearer {JWT}")],"object":secret("a","pw")}]});
    let (v, n) = masked(&m, &c, full);
    assert_eq!(v["rows"][0]["object"]["data"]["password"], MARKER_BASE64);
    assert_eq!(v["rows"][0]["cells"][1], "Bearer ***MASKED***");
    assert_eq!(n, 4);
    let pom = json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"a",
        "annotations":{LAST_APPLIED_ANNOTATION:"{\"data\":{\"password\":\"cHc=\"}}"}}});
    let meta = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":cols,
        "rows":[{"cells":["a","1"],"object":pom}]});
    let (v, n) = masked(&m, &c, meta);
    assert_eq!(
        v["rows"][0]["object"]["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"metadata":{"name":"a"}}"#
    );
    assert_eq!(n, 1);
    let none = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":cols,
        "rows":[{"cells":["a","1"]}]});
    assert_eq!(masked(&m, &c, none.clone()), (none, 0));
}

#[test]
fn table_watch_events_stream() {
    // `kubectl get secrets -w`: watch events whose objects are Tables.
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "watch");
    let table = |pw: &str| {
        json!({"type":"ADDED","object":{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"3"},
            "columnDefinitions":[],"rows":[{"cells":["a","Opaque",1,"1s"],"object":{"kind":"PartialObjectMetadata",
            "apiVersion":"meta.k8s.io/v1","metadata":{"name":"a","annotations":{LAST_APPLIED_ANNOTATION:
            format!("{{\"data\":{{\"password\":\"{}\"}}}}", b64(pw))}}}}]}})
    };
    let mut input = Vec::new();
    for pw in ["pw-one", "pw-two"] {
        input.extend(serde_json::to_vec(&table(pw)).unwrap());
        input.push(b'\n');
    }
    let (out, n) = stream_all(&m, &c, StreamKind::Watch, &input, 11).unwrap();
    assert_eq!(n, 2);
    assert_clean(&out, &["pw-one".into(), "pw-two".into()]);
    let text = String::from_utf8(out).unwrap();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["object"]["rows"][0]["cells"][2], 1);
        assert_eq!(
            v["object"]["rows"][0]["object"]["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            r#"{"metadata":{"name":"a"}}"#
        );
    }
}

#[test]
fn partial_object_metadata_list() {
    let m = masker();
    let item = json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"a",
        "annotations":{LAST_APPLIED_ANNOTATION:"{\"data\":{\"password\":\"cHc=\"}}", "x":"y"}}});
    let list = json!({"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{},"items":[item]});
    let (v, n) = masked(&m, &ctx_verb("secrets", "list"), list.clone());
    assert_eq!(
        v["items"][0]["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        r#"{"metadata":{"name":"a"}}"#
    );
    assert_eq!(v["items"][0]["metadata"]["annotations"]["x"], "y");
    assert_eq!(n, 1);
    // The same metadata of a harmless ConfigMap is left alone.
    let cm = json!({"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{},"items":[
        {"kind":"PartialObjectMetadata","metadata":{"annotations":{LAST_APPLIED_ANNOTATION:"{\"data\":{\"color\":\"x\"}}"}}}]});
    assert_eq!(
        masked(&m, &ctx_verb("configmaps", "list"), cm.clone()),
        (cm, 0)
    );
}

#[test]
fn status_bodies_pass_unchanged() {
    let m = masker();
    let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"secrets"},"code":404}"#;
    let (out, n) = m.mask_json_bytes(&ctx("secrets"), body).unwrap();
    assert_eq!((out.as_slice(), n), (&body[..], 0));
}

#[test]
fn malformed_and_duplicate_keys() {
    let m = masker();
    let c = ctx("secrets");
    assert_eq!(
        m.mask_json_bytes(&c, br#"{"kind":"Secret","data":{"a":"#),
        Err(MaskError::Truncated)
    );
    assert!(matches!(
        m.mask_json_bytes(&c, b"{\"a\":1}}"),
        Err(MaskError::Malformed { .. })
    ));
    assert!(matches!(
        m.mask_json_bytes(&c, b"k8s\0\x0a\x02v1"),
        Err(MaskError::Malformed { .. })
    ));
    // A shadowed duplicate must not survive in the bytes.
    let dup = br#"{"kind":"ConfigMap","data":{"color":"SHADOWED-SECRET","color":"blue"}}"#;
    let (out, _) = m.mask_json_bytes(&ctx("configmaps"), dup).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("SHADOWED"));
    // Deep nesting is an error, not a stack overflow.
    let deep = "[".repeat(100_000);
    assert!(m.mask_json_bytes(&c, deep.as_bytes()).is_err());
}

#[test]
fn numbers_round_trip() {
    let m = masker();
    let body =
        br#"{"kind":"Secret","data":{"a":"eA=="},"n":[1,-2,18446744073709551615,1.5,1e3,0.1]}"#;
    // The byte-level path splices the masked value into the input: the
    // numbers keep their spelling.
    let (out, n) = m.mask_json_bytes(&ctx("secrets"), body).unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        r#"{"kind":"Secret","data":{"a":"KioqTUFTS0VEKioq"},"n":[1,-2,18446744073709551615,1.5,1e3,0.1]}"#
    );
    // The tree engine re-serializes the masked object: through i64/u64/f64.
    let (tree, tn) = m.mask_json_bytes_tree(&ctx("secrets"), body).unwrap();
    assert_eq!(tn, 1);
    assert_eq!(
        String::from_utf8(tree.clone()).unwrap(),
        r#"{"kind":"Secret","data":{"a":"KioqTUFTS0VEKioq"},"n":[1,-2,18446744073709551615,1.5,1000.0,0.1]}"#
    );
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
    assert_eq!(parse(&out), parse(&tree));
}

// ---------------------------------------------------------------- streaming

fn stream_all(
    m: &Arc<Masker>,
    c: &MaskContext,
    kind: StreamKind,
    input: &[u8],
    chunk: usize,
) -> Result<(Vec<u8>, usize), MaskError> {
    let mut s = StreamMasker::new(m.clone(), c.clone(), kind);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        out.extend(s.push(piece)?);
    }
    out.extend(s.finish()?);
    Ok((out, s.masked_count()))
}

fn secret_list_bytes(n: usize, pretty: bool) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let mut s = secret(&format!("s{i}"), &format!("pw-{i}-x"));
            s.as_object_mut().unwrap().remove("kind");
            s
        })
        .collect();
    let list = json!({"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":items});
    if pretty {
        serde_json::to_vec_pretty(&list).unwrap()
    } else {
        serde_json::to_vec(&list).unwrap()
    }
}

#[test]
fn stream_list_matches_whole_masking_for_every_chunk_size() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "list");
    for pretty in [false, true] {
        let input = secret_list_bytes(3, pretty);
        let (whole, wn) = m.mask_json_bytes(&c, &input).unwrap();
        let whole_v: Value = serde_json::from_slice(&whole).unwrap();
        for chunk in [1, 2, 3, 7, 64, 1000, input.len()] {
            let (out, n) = stream_all(&m, &c, StreamKind::Json, &input, chunk).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v, whole_v, "chunk {chunk}");
            assert_eq!(n, wn);
            assert!(!String::from_utf8_lossy(&out).contains("pw-"));
        }
    }
}

#[test]
fn stream_list_memory_is_bounded_by_item() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "list");
    let input = secret_list_bytes(2000, false);
    // Scanned from the first chunk: a chunk and an item. Held first: at most
    // the held bytes and a chunk, then the same.
    for (hold, bound) in [
        (0, 4096 + 2048),
        (
            stream::DEFAULT_HOLD_BYTES,
            stream::DEFAULT_HOLD_BYTES + 4096,
        ),
    ] {
        let mut s = StreamMasker::new(m.clone(), c.clone(), StreamKind::Json).with_hold_bytes(hold);
        let mut max_buffered = 0;
        let mut last_buffered = 0;
        let mut out = Vec::new();
        for piece in input.chunks(4096) {
            out.extend(s.push(piece).unwrap());
            max_buffered = max_buffered.max(s.buffered());
            last_buffered = s.buffered();
        }
        out.extend(s.finish().unwrap());
        assert!(
            max_buffered <= bound,
            "hold {hold}: buffered {max_buffered} of {}",
            input.len()
        );
        assert!(
            last_buffered < 4096 + 2048,
            "hold {hold}: {last_buffered} at the end"
        );
        assert_eq!(s.masked_count(), 6000);
        serde_json::from_slice::<Value>(&out).unwrap();
    }
}

/// A short object is held to its end and masked whole (nothing comes out
/// before); a document past the held bytes is scanned as it comes, so a
/// long list's first items come out before its end.
#[test]
fn stream_holds_short_documents_and_streams_long_lists() {
    let m = Arc::new(masker());
    let one = serde_json::to_vec(&secret("a", "pw-a-x")).unwrap();
    let mut s = StreamMasker::new(m.clone(), ctx("secrets"), StreamKind::Json);
    let (head, tail) = one.split_at(one.len() / 2);
    assert!(s.push(head).unwrap().is_empty());
    assert!(s.push(tail).unwrap().is_empty(), "held to the end");
    let out = s.finish().unwrap();
    assert_eq!(s.units_masked(), (1, 0));
    let (whole, n) = m.mask_json_bytes(&ctx("secrets"), &one).unwrap();
    assert_eq!((out, s.masked_count()), (whole, n));
    // Whitespace around it passes on as the scan passes it on.
    let spaced = [b" \n\t".as_slice(), &one, b"\r\n \n"].concat();
    let held = stream_all(&m, &ctx("secrets"), StreamKind::Json, &spaced, 5).unwrap();
    let mut s = StreamMasker::new(m.clone(), ctx("secrets"), StreamKind::Json).with_hold_bytes(0);
    let mut scanned = Vec::new();
    for piece in spaced.chunks(5) {
        scanned.extend(s.push(piece).unwrap());
    }
    scanned.extend(s.finish().unwrap());
    assert_eq!(held.0, scanned);
    assert!(held.0.ends_with(b"}\r\n \n") && held.0.starts_with(b" \n\t{"));

    let list = secret_list_bytes(200, false);
    assert!(list.len() > 2 * stream::DEFAULT_HOLD_BYTES);
    let mut s = StreamMasker::new(m, ctx_verb("secrets", "list"), StreamKind::Json);
    let mut early = 0;
    for piece in list[..list.len() / 2].chunks(4096) {
        early += s.push(piece).unwrap().len();
    }
    assert!(early > 0, "nothing passed on from half a long list");
}

#[test]
fn stream_unmasked_items_are_verbatim() {
    let m = Arc::new(masker());
    let input = br#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[ {"metadata":{"name":"a"},"data":{"x":"1.50"},"n":1.50} ,
 {"metadata":{"name":"b"},"data":{"password":"p"}} ]}
"#;
    let (out, n) = stream_all(
        &m,
        &ctx_verb("configmaps", "list"),
        StreamKind::Json,
        input,
        5,
    )
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":[ {\"metadata\":{\"name\":\"a\"},\"data\":{\"x\":\"1.50\"},\"n\":1.50} ,\n {\"metadata\":{\"name\":\"b\"},\"data\":{\"password\":\"***MASKED***\"}} ]}\n"
    );
}

#[test]
fn stream_custom_resource_list_with_sorted_keys() {
    let m = Arc::new(
        MaskingConfig {
            rules: vec![MaskRule {
                resources: vec!["widgets".into()],
                fields: vec!["spec.password".into()],
                ..MaskRule::default()
            }],
            detectors: vec![],
        }
        .compile()
        .unwrap(),
    );
    let input = br#"{"apiVersion":"x.io/v1","items":[{"apiVersion":"x.io/v1","kind":"Widget","spec":{"password":"p1"}},{"apiVersion":"x.io/v1","kind":"Widget","spec":{"password":"p2"}}],"kind":"WidgetList","metadata":{"continue":""}}"#;
    let (out, n) =
        stream_all(&m, &ctx_verb("widgets", "list"), StreamKind::Json, input, 9).unwrap();
    assert_eq!(n, 2);
    let s = String::from_utf8(out).unwrap();
    assert!(!s.contains("p1") && !s.contains("p2"), "{s}");
    serde_json::from_str::<Value>(&s).unwrap();
    // A single object with a top-level `items` field (GET): masked whole.
    let obj = br#"{"apiVersion":"x.io/v1","items":[{"password":"keep"}],"kind":"Widget","spec":{"password":"p3"}}"#;
    let (out, n) = stream_all(&m, &ctx_verb("widgets", "get"), StreamKind::Json, obj, 4).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert_eq!(n, 1);
    assert!(s.contains("keep") && !s.contains("p3"));
    // The same object under a list verb is refused rather than mis-masked.
    assert!(stream_all(&m, &ctx_verb("widgets", "list"), StreamKind::Json, obj, 4).is_err());
}

#[test]
fn stream_table_rows() {
    let m = Arc::new(masker());
    let table = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"1"},
        "columnDefinitions":[{"name":"Name","type":"string"}],
        "rows":[{"cells":["a"],"object":secret("a","pw-a")},{"cells":[format!("{JWT}")]}]});
    let input = serde_json::to_vec(&table).unwrap();
    let c = ctx_verb("secrets", "list");
    let (out, n) = stream_all(&m, &c, StreamKind::Json, &input, 13).unwrap();
    assert_eq!(n, 4);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v, masked(&m, &c, table).0);
}

#[test]
fn stream_single_objects_and_errors() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "get");
    let input = serde_json::to_vec(&secret("a", "pw-a")).unwrap();
    let (out, n) = stream_all(&m, &c, StreamKind::Json, &input, 3).unwrap();
    assert_eq!(n, 3);
    assert!(!String::from_utf8(out).unwrap().contains("pw-a"));
    // Empty body: nothing to mask.
    assert_eq!(
        stream_all(&m, &c, StreamKind::Json, b"", 3).unwrap(),
        (vec![], 0)
    );
    let list = secret_list_bytes(3, false);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("truncated list", list[..list.len() - 40].to_vec()),
        ("truncated object", input[..input.len() - 1].to_vec()),
        ("protobuf", b"k8s\x00\n\x0f\n\x02v1\x12\x06Secret".to_vec()),
        ("cbor", vec![0xd9, 0xd9, 0xf7, 0xa1]),
        (
            "trailing comma",
            br#"{"kind":"SecretList","items":[{"data":{"a":"b"}},]}"#.to_vec(),
        ),
        (
            "missing comma",
            br#"{"kind":"SecretList","items":[{"data":{"a":"b"}} {"data":{}}]}"#.to_vec(),
        ),
        (
            "bad item",
            br#"{"kind":"SecretList","items":[{"data":{"a":"b"},}]}"#.to_vec(),
        ),
        (
            "trailing data",
            br#"{"kind":"Secret"} {"kind":"Secret"}"#.to_vec(),
        ),
        (
            "dup items",
            br#"{"kind":"SecretList","items":[],"items":[{"data":{"a":"b"}}]}"#.to_vec(),
        ),
        (
            "bad head",
            br#"{"kind":"SecretList","metadata":{,"items":[]}"#.to_vec(),
        ),
    ];
    for (what, body) in bad {
        for chunk in [1, 5, body.len().max(1)] {
            let mut s = StreamMasker::new(m.clone(), c.clone(), StreamKind::Json);
            let mut out = Vec::new();
            let mut err = None;
            for piece in body.chunks(chunk) {
                match s.push(piece) {
                    Ok(o) => out.extend(o),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            let err = err.or_else(|| s.finish().err());
            assert!(err.is_some(), "{what} chunk {chunk}: no error");
            assert!(
                !String::from_utf8_lossy(&out).contains("YWRtaW4"),
                "{what}: leaked"
            );
            assert_eq!(s.push(b"x"), Err(MaskError::Poisoned));
        }
    }
}

#[test]
fn stream_too_large_value() {
    let m = Arc::new(masker());
    let input = serde_json::to_vec(&secret("a", &"x".repeat(10_000))).unwrap();
    let mut s = StreamMasker::new(m, ctx("secrets"), StreamKind::Json).with_max_value_bytes(1000);
    let r = input.chunks(100).try_for_each(|p| s.push(p).map(drop));
    assert_eq!(r, Err(MaskError::TooLarge { limit: 1000 }));
}

#[test]
fn stream_watch_events() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "watch");
    let mut input = Vec::new();
    for i in 0..3 {
        input.extend(
            serde_json::to_vec(
                &json!({"type":"ADDED","object":secret(&format!("s{i}"), &format!("pw-{i}-x"))}),
            )
            .unwrap(),
        );
        input.push(b'\n');
    }
    let bookmark = br#"{"type":"BOOKMARK","object":{"kind":"Secret","apiVersion":"v1","metadata":{"resourceVersion":"77"}}}"#;
    input.extend_from_slice(bookmark);
    input.push(b'\n');
    for chunk in [1, 10, 100, input.len()] {
        let (out, n) = stream_all(&m, &c, StreamKind::Watch, &input, chunk).unwrap();
        assert_eq!(n, 9);
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3].as_bytes(), bookmark);
        assert!(!s.contains("pw-"));
        for l in lines {
            serde_json::from_str::<Value>(l).unwrap();
        }
    }
    // Each event is emitted as soon as it is complete (not buffered).
    let mut s = StreamMasker::new(m.clone(), c.clone(), StreamKind::Watch);
    let first = s
        .push(&input[..input.iter().position(|&b| b == b'\n').unwrap() + 1])
        .unwrap();
    assert!(first.ends_with(b"\n") && !first.is_empty());
    assert_eq!(s.buffered(), 0);
    // A truncated event is an error at the end.
    let mut s = StreamMasker::new(m, c, StreamKind::Watch);
    s.push(&input[..50]).unwrap();
    assert_eq!(s.finish(), Err(MaskError::Truncated));
}

#[test]
fn stream_logs() {
    let m = Arc::new(masker());
    let c = MaskContext {
        resource: "pods".into(),
        subresource: "log".into(),
        ..MaskContext::default()
    };
    let log = format!(
        "start\nlogin token {JWT} ok\n-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretline1\nsecretline2\n-----END RSA PRIVATE KEY----- after\nplain password=hunter2\nno newline at end"
    );
    for chunk in [1, 4, 17, log.len()] {
        let (out, n) = stream_all(&m, &c, StreamKind::Log, log.as_bytes(), chunk).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "start\nlogin token ***MASKED*** ok\n-----BEGIN RSA PRIVATE KEY-----***MASKED***\n***MASKED***\n***MASKED***\n***MASKED***-----END RSA PRIVATE KEY----- after\nplain password=***MASKED***\nno newline at end"
        );
        assert_eq!(n, 6);
    }
    let (line, n) = m.mask_log_line("Authorization: Bearer abcdefghijklmnopqrstuvwxyz");
    assert_eq!(
        (line.as_ref(), n),
        ("Authorization: Bearer ***MASKED***", 1)
    );
    // Invalid UTF-8 without secrets passes byte for byte.
    let raw = b"bin \xff\xfe data\n";
    assert_eq!(
        stream_all(&m, &c, StreamKind::Log, raw, 3).unwrap(),
        (raw.to_vec(), 0)
    );
}

// ---------------------------------------------------------------- properties

/// A planted secret: recognisable, never a substring of anything else we generate.
fn planted() -> impl Strategy<Value = String> {
    "[a-z0-9]{12,24}".prop_map(|s| format!("PLANTED{s}"))
}

fn plain() -> impl Strategy<Value = String> {
    "[a-z0-9 ]{0,16}".prop_map(|s| format!("plain-{s}"))
}

/// A generated object with planted secrets, and the secrets planted.
fn object() -> impl Strategy<Value = (Value, Vec<String>)> {
    let secret = (planted(), planted(), plain(), any::<bool>()).prop_map(|(a, b, p, with_kind)| {
        let mut v = json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":p,"annotations":{
            LAST_APPLIED_ANNOTATION: format!("{{\"stringData\":{{\"k\":\"{a}\"}}}}")}},
            "type":"Opaque","data":{"k": B64.encode(&a)},"stringData":{"s": b}});
        if !with_kind {
            v.as_object_mut().unwrap().remove("kind");
        }
        (v, vec![a, b])
    });
    let configmap = (planted(), plain(), plain()).prop_map(|(a, p, q)| {
        (
            json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":p},"data":{"db_password":a,"color":q}}),
            vec![a],
        )
    });
    let pod = (planted(), planted(), plain()).prop_map(|(a, b, p)| {
        (
            json!({"kind":"Pod","apiVersion":"v1","metadata":{"name":p,"annotations":{"note":format!("eyJhbGciOi.{b}.sig")}},
                "spec":{"containers":[{"name":"c","image":"busybox","env":[{"name":"SECRET_KEY","value":a},{"name":"PLAIN","value":p}]}]}}),
            vec![a, b],
        )
    });
    prop_oneof![secret, configmap, pod]
}

/// Every value of `input` is in `output` except where `output` holds a marker.
fn same_except_masked(input: &Value, output: &Value) -> bool {
    match (input, output) {
        (_, Value::String(o)) if o == MARKER || o == MARKER_BASE64 => true,
        (Value::String(i), Value::String(o)) => {
            i == o || o.contains(MARKER) || is_last_applied_skeleton(o)
        }
        (Value::Object(i), Value::Object(o)) => {
            i.len() == o.len()
                && i.iter()
                    .zip(o.iter())
                    .all(|((ik, iv), (ok, ov))| ik == ok && same_except_masked(iv, ov))
        }
        (Value::Array(i), Value::Array(o)) => {
            i.len() == o.len() && i.iter().zip(o).all(|(a, b)| same_except_masked(a, b))
        }
        (i, o) => i == o,
    }
}

/// The value-free JSON that replaces a masked last-applied annotation.
fn is_last_applied_skeleton(s: &str) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(s) else {
        return false;
    };
    let meta_ok = m
        .get("metadata")
        .and_then(Value::as_object)
        .is_some_and(|md| {
            md.iter()
                .all(|(k, v)| (k == "name" || k == "namespace") && v.is_string())
        });
    meta_ok
        && m.iter()
            .all(|(k, v)| k == "metadata" || ((k == "apiVersion" || k == "kind") && v.is_string()))
}

fn assert_clean(out: &[u8], secrets: &[String]) {
    let s = String::from_utf8_lossy(out);
    for p in secrets {
        assert!(!s.contains(p.as_str()), "planted {p} leaked");
        assert!(!s.contains(&B64.encode(p)), "planted {p} leaked as base64");
    }
}

fn resource_of(v: &Value) -> &'static str {
    match v.get("kind").and_then(Value::as_str) {
        Some("ConfigMap") => "configmaps",
        Some("Pod") => "pods",
        _ => "secrets",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_single_objects((obj, secrets) in object(), chunk in 1usize..200) {
        let m = Arc::new(masker());
        let c = ctx_verb(resource_of(&obj), "get");
        let input = serde_json::to_vec(&obj).unwrap();
        let (out, _) = stream_all(&m, &c, StreamKind::Json, &input, chunk).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_clean(&out, &secrets);
        prop_assert!(same_except_masked(&obj, &v));
        prop_assert!(!out.is_empty());
    }

    #[test]
    fn prop_lists(objs in proptest::collection::vec(object(), 0..6), chunk in 1usize..300, pretty in any::<bool>()) {
        let m = Arc::new(masker());
        // A list of one resource, like the API server sends.
        let res = objs.first().map_or("secrets", |(o, _)| resource_of(o));
        let (items, secrets): (Vec<Value>, Vec<Vec<String>>) =
            objs.into_iter().filter(|(o, _)| resource_of(o) == res).unzip();
        let kind = match res { "configmaps" => "ConfigMapList", "pods" => "PodList", _ => "SecretList" };
        let list = json!({"kind":kind,"apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":items});
        let input = if pretty { serde_json::to_vec_pretty(&list).unwrap() } else { serde_json::to_vec(&list).unwrap() };
        let c = ctx_verb(res, "list");
        let (out, n) = stream_all(&m, &c, StreamKind::Json, &input, chunk).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_clean(&out, &secrets.concat());
        prop_assert!(same_except_masked(&list, &v));
        // Same result as masking the whole value at once.
        let (whole, wn) = masked(&m, &c, list.clone());
        prop_assert_eq!(v, whole);
        prop_assert_eq!(n, wn);
    }

    #[test]
    fn prop_watch_streams(objs in proptest::collection::vec(object(), 0..6), chunk in 1usize..300) {
        let m = Arc::new(masker());
        let mut input = Vec::new();
        let mut events = Vec::new();
        for (o, _) in &objs {
            let ev = json!({"type":"MODIFIED","object":o});
            input.extend(serde_json::to_vec(&ev).unwrap());
            input.push(b'\n');
            events.push(ev);
        }
        let secrets: Vec<String> = objs.iter().flat_map(|(_, s)| s.clone()).collect();
        let (out, _) = stream_all(&m, &ctx_verb("secrets", "watch"), StreamKind::Watch, &input, chunk).unwrap();
        assert_clean(&out, &secrets);
        let text = String::from_utf8(out).unwrap();
        let got: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        prop_assert_eq!(got.len(), events.len());
        for (e, g) in events.iter().zip(&got) {
            prop_assert!(same_except_masked(e, g));
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..50) {
        let m = Arc::new(masker());
        for kind in [StreamKind::Json, StreamKind::Watch, StreamKind::Log] {
            let _ = stream_all(&m, &ctx("secrets"), kind, &bytes, chunk);
        }
        let _ = m.mask_json_bytes(&ctx("secrets"), &bytes);
    }
}

// ------------------------------------------------- structural gaps, scrub

/// No planted value survives, raw or in any base64 form (std, URL-safe,
/// padded or not).
fn assert_scrubbed(out: &str, clear: &[&str]) {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    for c in clear {
        assert!(!out.contains(c), "{c:?} leaked: {out}");
        for enc in [
            B64.encode(c),
            STANDARD_NO_PAD.encode(c),
            URL_SAFE.encode(c),
            URL_SAFE_NO_PAD.encode(c),
        ] {
            assert!(!out.contains(&enc), "{c:?} leaked as {enc}: {out}");
        }
    }
}

#[test]
fn masked_values_copied_elsewhere_in_the_object_are_scrubbed() {
    // What a JSON patch `copy` from /data/password shows in a dry-run answer.
    let m = masker();
    let pw = "hunter2-copied-Zq/+x";
    let enc = b64(pw);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pw);
    let obj = json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "default", "generateName": enc,
            "labels": {"app": "db"},
            "annotations": {"leak": enc, "leak-raw": format!("the password is {pw}!"),
                "leak-url": url, "team": "blue"},
            "managedFields": [{"manager": "kubectl", "operation": "Update",
                "fieldsV1": {"f:metadata": {"f:finalizers": {format!("v:\"{pw}\""): {}}}}}]},
        "type": "Opaque",
        "data": {"password": enc}
    });
    let (v, n) = masked(&m, &ctx("secrets"), obj);
    let out = v.to_string();
    assert_scrubbed(&out, &[pw]);
    assert_eq!(v["data"]["password"], MARKER_BASE64);
    assert_eq!(v["metadata"]["annotations"]["leak"], MARKER);
    assert_eq!(
        v["metadata"]["annotations"]["leak-raw"],
        format!("the password is {MARKER}!")
    );
    assert_eq!(v["metadata"]["annotations"]["team"], "blue");
    assert_eq!(v["metadata"]["labels"]["app"], "db");
    assert_eq!(v["metadata"]["name"], "db");
    assert!(n >= 6, "{n}");
    // Idempotent: masking the masked object changes nothing.
    assert_eq!(masked(&m, &ctx("secrets"), v.clone()), (v, 0));
}

#[test]
fn scrub_finds_base64_of_the_value_inside_longer_base64_at_any_offset() {
    let m = masker();
    let pw = "s3cret-inside-a-blob";
    for prefix in ["", "a", "ab", "abc", "{\"pw\":\""] {
        let inner = b64(&format!("{prefix}{pw}\"}} trailing"));
        let obj = json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"x",
            "annotations":{"blob": inner}},"data":{"password": b64(pw)}});
        let (v, _) = masked(&m, &ctx("secrets"), obj);
        let blob = v["metadata"]["annotations"]["blob"].as_str().unwrap();
        assert!(blob.contains(MARKER), "prefix {prefix:?}: {blob}");
        assert_scrubbed(&v.to_string(), &[pw]);
    }
}

#[test]
fn scrub_leaves_short_values_and_object_identity_alone() {
    let m = masker();
    // `admin` is shorter than the scrub minimum; `default-x1` is the
    // object's own name and namespace, which are never rewritten.
    let obj = json!({"kind":"Secret","apiVersion":"v1",
        "metadata":{"name":"default-x1","namespace":"default-x1","uid":"u-1","annotations":{"who":"admin","n":"default-x1"}},
        "data":{"user": b64("admin"), "ns": b64("default-x1")}});
    let (v, _) = masked(&m, &ctx("secrets"), obj);
    assert_eq!(v["metadata"]["name"], "default-x1");
    assert_eq!(v["metadata"]["namespace"], "default-x1");
    assert_eq!(v["metadata"]["annotations"]["who"], "admin");
    assert_eq!(v["metadata"]["annotations"]["n"], MARKER);
}

#[test]
fn scrub_env_value_copied_into_annotation_and_command() {
    let m = masker();
    let pw = "pod-env-pw-991";
    let pod = json!({"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","annotations":{"copy":pw}},
        "spec":{"containers":[{"name":"c","image":"busybox","command":["sh","-c",format!("login -p {pw}")],
            "env":[{"name":"DB_PASSWORD","value":pw}]}]},
        "status":{"message": b64(pw)}});
    let (v, _) = masked(&m, &ctx("pods"), pod);
    assert_scrubbed(&v.to_string(), &[pw]);
    assert_eq!(
        v["spec"]["containers"][0]["command"][2],
        format!("login -p {MARKER}")
    );
}

#[test]
fn scrub_is_per_list_item_and_the_stream_agrees_with_the_whole() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "list");
    let items: Vec<Value> = (0..3)
        .map(|i| {
            let pw = format!("item-pw-{i}-long");
            json!({"metadata":{"name":format!("s{i}"),"annotations":{"copy":b64(&pw)}},"data":{"password":b64(&pw)}})
        })
        .collect();
    let list = json!({"kind":"SecretList","apiVersion":"v1","metadata":{},"items":items});
    let input = serde_json::to_vec(&list).unwrap();
    let (whole, wn) = m.mask_json_bytes(&c, &input).unwrap();
    for chunk in [1, 7, 100, input.len()] {
        let (out, n) = stream_all(&m, &c, StreamKind::Json, &input, chunk).unwrap();
        assert_eq!(out, whole, "chunk {chunk}");
        assert_eq!(n, wn);
        assert_scrubbed(
            &String::from_utf8(out).unwrap(),
            &["item-pw-0-long", "item-pw-1-long", "item-pw-2-long"],
        );
    }
}

#[test]
fn table_cells_scrubbed_with_the_row_objects_values() {
    let m = masker();
    let c = ctx_verb("secrets", "list");
    let pw = "printer-column-pw";
    let t = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},
        "columnDefinitions":[{"name":"Name","type":"string"},{"name":"Pw","type":"string"}],
        "rows":[{"cells":["a", pw, b64(pw)],"object":{"kind":"Secret","apiVersion":"v1",
            "metadata":{"name":"a"},"data":{"password":b64(pw)}}}]});
    let (v, _) = masked(&m, &c, t);
    assert_scrubbed(&v.to_string(), &[pw]);
    assert_eq!(v["rows"][0]["cells"][0], "a");
}

#[test]
fn the_stricter_of_path_and_kind_decides() {
    let m = masker();
    // A ConfigMap on a secrets path is masked as a Secret too.
    let cm = json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x"},"data":{"blob":"clear-value-1"}});
    let (v, _) = masked(&m, &ctx("secrets"), cm);
    assert_ne!(v["data"]["blob"], "clear-value-1");
    // A Status carrying data on a secrets path.
    let st = json!({"kind":"Status","apiVersion":"v1","status":"Failure","data":{"blob":"clear-value-2"}});
    let (v, _) = masked(&m, &ctx("secrets"), st);
    assert_ne!(v["data"]["blob"], "clear-value-2");
    // A Secret on a configmaps path is still a Secret.
    let s = json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"x"},"data":{"blob":b64("clear-value-3")}});
    let (v, _) = masked(&m, &ctx("configmaps"), s);
    assert_eq!(v["data"]["blob"], MARKER_BASE64);
    // A subresource nobody knows on a secrets path is masked as secrets.
    let c = MaskContext {
        subresource: "bogus".into(),
        ..ctx("secrets")
    };
    let s = json!({"apiVersion":"v1","metadata":{"name":"x"},"data":{"blob":b64("clear-value-4")}});
    let (v, _) = masked(&m, &c, s);
    assert_eq!(v["data"]["blob"], MARKER_BASE64);
}

#[test]
fn list_kind_contradicting_the_path_is_refused() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "list");
    let item = json!({"metadata":{"name":"x"},"data":{"blob":"Y2xlYXItdmFsdWU="}});
    let bodies = [
        // A ConfigMapList on a secrets path.
        json!({"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[item.clone()]})
            .to_string(),
        // `kind` after the items, contradicting the path.
        format!(r#"{{"apiVersion":"v1","items":[{item}],"kind":"ConfigMapList","metadata":{{}}}}"#),
        // Differing head and tail `kind`.
        format!(r#"{{"kind":"SecretList","items":[{item}],"kind":"ConfigMapList"}}"#),
    ];
    for body in &bodies {
        assert!(
            m.mask_json_bytes(&c, body.as_bytes()).is_err(),
            "whole: {body}"
        );
        for chunk in [1, 5, body.len()] {
            assert!(
                stream_all(&m, &c, StreamKind::Json, body.as_bytes(), chunk).is_err(),
                "chunk {chunk}: {body}"
            );
        }
    }
    // On a configmaps path, a SecretList after the items (custom-resource
    // style sorted keys): the items were masked as ConfigMaps; refused.
    let cmc = ctx_verb("configmaps", "list");
    let body =
        format!(r#"{{"apiVersion":"v1","items":[{item}],"kind":"SecretList","metadata":{{}}}}"#);
    assert!(stream_all(&m, &cmc, StreamKind::Json, body.as_bytes(), 3).is_err());
    // The kind the path expects, after the items, is fine.
    let body =
        format!(r#"{{"apiVersion":"v1","items":[{item}],"kind":"SecretList","metadata":{{}}}}"#);
    let (out, _) = stream_all(&m, &c, StreamKind::Json, body.as_bytes(), 3).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("Y2xlYXItdmFsdWU="));
}

#[test]
fn duplicate_kind_keys_are_refused() {
    let m = Arc::new(masker());
    let c = ctx("configmaps");
    let body =
        br#"{"kind":"Secret","apiVersion":"v1","data":{"blob":"Y2xlYXI="},"kind":"ConfigMap"}"#;
    assert!(m.mask_json_bytes(&c, body).is_err());
    assert!(stream_all(&m, &c, StreamKind::Json, body, 4).is_err());
    let nested = br#"{"kind":"List","items":[{"kind":"Secret","kind":"ConfigMap","data":{"blob":"Y2xlYXI="}}]}"#;
    assert!(
        stream_all(
            &m,
            &ctx_verb("configmaps", "list"),
            StreamKind::Json,
            nested,
            4
        )
        .is_err()
    );
}

#[test]
fn watch_events_with_their_own_kind_are_refused() {
    let m = Arc::new(masker());
    let c = ctx_verb("secrets", "watch");
    let ev = json!({"kind":"WatchEvent","type":"ADDED","object":{"kind":"Secret","apiVersion":"v1",
        "metadata":{"name":"x"},"data":{"password":b64("watch-kind-pw")}}});
    let input = format!("{ev}\n");
    let r = stream_all(&m, &c, StreamKind::Watch, input.as_bytes(), 9);
    assert!(r.is_err(), "{r:?}");
    // A plain Status (a watch that failed to start) is still fine.
    let st =
        br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410}"#;
    let (out, n) = stream_all(&m, &c, StreamKind::Watch, st, 9).unwrap();
    assert_eq!((out.as_slice(), n), (&st[..], 0));
}

#[test]
fn binary_data_is_masked_like_data() {
    let m = masker();
    // Detectors see the decoded content of binaryData.
    let cm = json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x"},
        "binaryData":{"blob": b64(&format!("token: {JWT}")), "img": b64("GIF89a")}});
    let (v, _) = masked(&m, &ctx("configmaps"), cm);
    assert_eq!(v["binaryData"]["blob"], MARKER_BASE64);
    assert_eq!(v["binaryData"]["img"], b64("GIF89a"));
    // A `data.KEY` field rule covers `binaryData.KEY` too.
    let custom = MaskingConfig {
        rules: vec![MaskRule {
            resources: vec!["configmaps".into()],
            fields: vec!["data.cert".into()],
            ..MaskRule::default()
        }],
        detectors: vec![],
    }
    .compile()
    .unwrap();
    let cm = json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x"},
        "data":{"cert":"c1"},"binaryData":{"cert": b64("binary-cert"), "other": b64("o")}});
    let (v, n) = masked(&custom, &ctx("configmaps"), cm);
    assert_eq!(v["data"]["cert"], MARKER);
    assert_eq!(v["binaryData"]["cert"], MARKER_BASE64);
    assert_eq!(v["binaryData"]["other"], b64("o"));
    assert_eq!(n, 2);
}

#[test]
fn high_entropy_base64_detector_is_opt_in_and_for_logs() {
    let secret_b64 = "dGhpcyBpcyBhIHJlYWwgc2VjcmV0IHZhbHVlIDk4NzY1NDMyMQ==";
    let line = format!("connecting with {secret_b64} to db");
    // Off by default.
    assert_eq!(masker().mask_log_line(&line).1, 0);
    let m = MaskingConfig {
        detectors: vec!["high-entropy-base64".into()],
        ..MaskingConfig::default()
    }
    .compile()
    .unwrap();
    let (out, n) = m.mask_log_line(&line);
    assert_eq!((out.as_ref(), n), ("connecting with ***MASKED*** to db", 1));
    // Ordinary log text is left alone.
    for benign in [
        "GET /api/v1/namespaces/default/pods?limit=500 200 OK",
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "pod kube-controller-manager-control-plane-1 started",
        "uid=6f1c2a9e-3b1d-4c8e-9a57-0e4b1f2d3c4a",
        "/var/lib/kubelet/pods/6f1c2a9e/volumes/kubernetes.io~projected",
        "2026-12-06T08:30:05.123456789Z INFO reconciling deployment/web",
        "ThisIsAVeryLongCamelCaseIdentifierName",
    ] {
        assert_eq!(m.mask_log_line(benign).1, 0, "{benign}");
    }
    // JSON string values are not judged by entropy (certificates, hashes).
    let mut v = json!({"kind":"ConfigMap","data":{"ca.crt": secret_b64}});
    assert_eq!(m.mask_value(&ctx("configmaps"), &mut v), 0);
}

#[test]
fn json_patch_values_copied_between_ops_are_scrubbed() {
    // A recorded `kubectl patch --type=json` request body.
    let m = masker();
    let pw = "patch-copied-pw-77";
    let ops = json!([
        {"op":"add","path":"/data/password","value":b64(pw)},
        {"op":"add","path":"/metadata/annotations/leak","value":b64(pw)},
        {"op":"add","path":"/metadata/generateName","value":format!("x-{pw}")}
    ]);
    let (v, _) = masked(&m, &ctx("secrets"), ops);
    assert_scrubbed(&v.to_string(), &[pw]);
    assert_eq!(v[0]["value"], MARKER_BASE64);
    assert_eq!(v[1]["value"], MARKER);
}

#[test]
fn context_scrub_set_reaches_every_string_key_and_log_line_and_is_never_printed() {
    let token = "ctx-scrub-token-value-0123456789";
    let c = MaskContext {
        scrub: Some(Arc::new(ScrubSet::new([token]))),
        ..ctx_verb("configmaps", "list")
    };
    assert!(!format!("{c:?}").contains(token));
    let m = Arc::new(masker());
    let list = json!({"kind":"ConfigMapList","apiVersion":"v1","metadata":{"continue":token},
        "items":[{"metadata":{"name":"a","annotations":{token:"k"}},"data":{"color":b64(token)}}]});
    let input = serde_json::to_vec(&list).unwrap();
    for chunk in [1, 9, input.len()] {
        let (out, n) = stream_all(&m, &c, StreamKind::Json, &input, chunk).unwrap();
        assert_scrubbed(&String::from_utf8(out).unwrap(), &[token]);
        assert_eq!(n, 3);
    }
    let log = format!("a\nAuthorization: {token}\n");
    let lc = MaskContext {
        subresource: "log".into(),
        ..c.clone()
    };
    let (out, n) = stream_all(&m, &lc, StreamKind::Log, log.as_bytes(), 5).unwrap();
    assert_eq!(
        (String::from_utf8(out).unwrap(), n),
        (format!("a\nAuthorization: {MARKER}\n"), 1)
    );
}

/// The skeleton as it was first written (a map built and serialized by
/// serde_json): the reference the directly written one must equal.
fn reference_skeleton(ann: &str, live: &Value) -> String {
    let applied = match serde_json::from_str::<Value>(ann) {
        Ok(v) if v.is_object() => v,
        _ => return MARKER.to_string(),
    };
    let live_kind = live.get("kind").and_then(Value::as_str);
    let own_type = !matches!(live_kind, Some("PartialObjectMetadata" | "Table"));
    let pick = |from: Option<&Value>, key: &str| -> Option<Value> {
        from.and_then(|m| m.get(key))
            .filter(|x| x.is_string())
            .cloned()
    };
    let applied_meta = applied.get("metadata");
    let live_meta = live.get("metadata");
    let mut out = serde_json::Map::new();
    for key in ["apiVersion", "kind"] {
        let from_live = if own_type {
            pick(Some(live), key)
        } else {
            None
        };
        if let Some(x) = pick(Some(&applied), key).or(from_live) {
            out.insert(key.to_string(), x);
        }
    }
    let mut meta = serde_json::Map::new();
    for key in ["name", "namespace"] {
        if let Some(x) = pick(applied_meta, key).or_else(|| pick(live_meta, key)) {
            meta.insert(key.to_string(), x);
        }
    }
    out.insert("metadata".to_string(), Value::Object(meta));
    serde_json::to_string(&Value::Object(out)).unwrap()
}

/// Strings with what JSON escaping must handle: quotes, backslashes,
/// control characters, non-ASCII, `<>&`, U+2028.
fn tricky_string() -> impl Strategy<Value = String> {
    "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀<>&/\u{2028} ]{0,12}"
}

/// A field of a skeleton source: missing, a string, or another type.
fn field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        tricky_string().prop_map(|s| Some(Value::String(s))),
        Just(Some(json!(7))),
        Just(Some(Value::Null)),
        Just(Some(json!({"x": "y"}))),
    ]
}

fn skeleton_source() -> impl Strategy<Value = Value> {
    (field(), field(), field(), field(), any::<bool>()).prop_map(
        |(api, kind, name, ns, meta_object)| {
            let mut meta = serde_json::Map::new();
            if let Some(v) = name {
                meta.insert("name".into(), v);
            }
            meta.insert("labels".into(), json!({"a": "b"}));
            if let Some(v) = ns {
                meta.insert("namespace".into(), v);
            }
            let mut o = serde_json::Map::new();
            if let Some(v) = kind {
                o.insert("kind".into(), v);
            }
            o.insert(
                "metadata".into(),
                if meta_object {
                    Value::Object(meta)
                } else {
                    json!("not an object")
                },
            );
            if let Some(v) = api {
                o.insert("apiVersion".into(), v);
            }
            o.insert("data".into(), json!({"password": "cHc="}));
            Value::Object(o)
        },
    )
}

#[test]
fn skeleton_of_odd_annotations_matches_the_serialized_map() {
    let live = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "live", "namespace": "ns"}});
    for ann in [
        r#"{"kind":"A","metadata":{"name":"x"},"metadata":"no"}"#,
        r#"{"metadata":"no","metadata":{"name":"x","name":"y","namespace":7}}"#,
        r#"{"kind":"A","kind":"B","apiVersion":1,"apiVersion":"v2"}"#,
        r#"{"$serde_json::private::RawValue":"{"kind":"Raw"}"}"#,
        r#"{"$serde_json::private::RawValue":"{"kind":"Raw"}"}"#,
        r#"{"metadata":{"$serde_json::private::RawValue":"{"name":"raw"}"}}"#,
        r#"{"kind":"A","metadata":{"name":"x","$serde_json::private::RawValue":1}}"#,
        r#"{"kind":"A","x":1e400}"#,
        r#"{"kind":"A"} trailing"#,
        r#"{"kind":"A"}   "#,
        r#"{"kind":"A","metadata":{"name":"é
"}}"#,
        r#"{"kind":"A","deep":[[[[[[[[[[[[[[[[[[[[{"a":[1,2,{"b":null}]}]]]]]]]]]]]]]]]]]]]]}"#,
        r#"[{"kind":"A"}]"#,
        r#""{"kind":"A"}""#,
        r#"{"kind":"\ud800"}"#,
        "",
        "{",
        "null",
    ] {
        assert_eq!(
            engine::last_applied_skeleton(ann, &live),
            reference_skeleton(ann, &live),
            "{ann}"
        );
    }
    let deep = format!(
        "{{\"kind\":\"A\",\"x\":{}1{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(
        engine::last_applied_skeleton(&deep, &live),
        reference_skeleton(&deep, &live)
    );
}

proptest! {
    /// The directly written last-applied skeleton is byte for byte what
    /// serde_json writes for the same map, whatever the annotation and the
    /// live object hold.
    #[test]
    fn prop_skeleton_matches_the_serialized_map(
        applied in skeleton_source(),
        live in skeleton_source(),
        live_kind in prop_oneof![Just(None), Just(Some("PartialObjectMetadata")), Just(Some("Table")), Just(Some("Secret"))],
        raw in prop_oneof![Just(None), tricky_string().prop_map(Some), Just(Some("[1,2]".to_string())), Just(Some("{\"kind\":\"A\",\"kind\":\"B\"}".to_string()))],
    ) {
        let mut live = live;
        if let (Some(k), Value::Object(m)) = (live_kind, &mut live) {
            m.insert("kind".into(), json!(k));
        }
        let ann = raw.unwrap_or_else(|| serde_json::to_string(&applied).unwrap());
        prop_assert_eq!(
            engine::last_applied_skeleton(&ann, &live),
            reference_skeleton(&ann, &live)
        );
    }
}
