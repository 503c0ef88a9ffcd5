//! Unit tests of the protobuf decoder, from bodies kubectl 1.32 sent
//! (`tests/fixtures/protobuf/`, see its README) and from bodies built here.

use super::*;
use serde_json::json;

const CONFIGMAP: &[u8] = include_bytes!("../../../tests/fixtures/protobuf/configmap.pb");
const SECRET: &[u8] = include_bytes!("../../../tests/fixtures/protobuf/secret.pb");
const NAMESPACE: &[u8] = include_bytes!("../../../tests/fixtures/protobuf/namespace.pb");
const SERVICEACCOUNT: &[u8] = include_bytes!("../../../tests/fixtures/protobuf/serviceaccount.pb");
const DEPLOYMENT: &[u8] = include_bytes!("../../../tests/fixtures/protobuf/deployment.pb");
const TOKENREQUEST: &[u8] = include_bytes!("../../../tests/fixtures/protobuf/tokenrequest.pb");

#[test]
fn kubectl_configmap() {
    assert_eq!(
        decode(CONFIGMAP),
        Ok(json!({
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "scratch"},
            "data": {"color": "blue", "password": "hunter2"},
        }))
    );
    let e = envelope(CONFIGMAP);
    assert_eq!(
        e.map(|e| (e.api_version, e.kind, e.name)),
        Ok(("v1".into(), "ConfigMap".into(), "scratch".into()))
    );
}

#[test]
fn kubectl_secret_data_is_base64_as_in_json() {
    assert_eq!(
        decode(SECRET),
        Ok(json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s1"},
            "data": {"token": "YWJj"},
        }))
    );
}

#[test]
fn kubectl_namespace_serviceaccount_tokenrequest() {
    assert_eq!(
        decode(NAMESPACE),
        Ok(json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns1"}}))
    );
    assert_eq!(
        decode(SERVICEACCOUNT),
        Ok(json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "sa1"}}))
    );
    let t = decode(TOKENREQUEST);
    assert_eq!(
        t.as_ref()
            .map(|v| (v["kind"].clone(), v["apiVersion"].clone())),
        Ok((json!("TokenRequest"), json!("authentication.k8s.io/v1")))
    );
    assert_eq!(t.map(|v| v["spec"]["audiences"].clone()), Ok(json!([])));
}

#[test]
fn a_kind_not_decoded_still_names_its_object() {
    assert_eq!(
        decode(DEPLOYMENT),
        Err(ProtoError::Unsupported {
            api_version: "apps/v1".into(),
            kind: "Deployment".into()
        })
    );
    let e = envelope(DEPLOYMENT);
    assert_eq!(
        e.map(|e| (e.kind, e.name)),
        Ok(("Deployment".into(), "d1".into()))
    );
}

#[test]
fn round_trip_of_every_field_kind() {
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), "x".to_string());
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: Some("cm".into()),
            namespace: Some("ns".into()),
            labels,
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            owner_references: vec![meta::OwnerReference {
                api_version: Some("apps/v1".into()),
                kind: Some("ReplicaSet".into()),
                name: Some("rs".into()),
                uid: Some("u1".into()),
                controller: Some(true),
                block_owner_deletion: None,
            }],
            finalizers: vec!["f".into()],
            ..Default::default()
        }),
        immutable: Some(true),
        data: BTreeMap::from([("k".to_string(), "v".to_string())]),
        binary_data: BTreeMap::from([("b".to_string(), vec![0u8, 1, 2])]),
    };
    let body = encode("v1", "ConfigMap", &cm);
    assert_eq!(
        decode(&body),
        Ok(json!({
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {
                "name": "cm", "namespace": "ns", "labels": {"app": "x"},
                "creationTimestamp": "2023-11-14T22:13:20Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}],
                "finalizers": ["f"],
            },
            "immutable": true,
            "data": {"k": "v"},
            "binaryData": {"b": "AAEC"},
        }))
    );
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    assert_eq!(
        rfc3339(951_782_400).as_deref(),
        Some("2000-02-29T00:00:00Z")
    );
    assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59Z"));
    assert_eq!(rfc3339(i64::MAX), None);
}

#[test]
fn malformed_bodies_are_errors_never_panics() {
    assert_eq!(decode(b"{}"), Err(ProtoError::NoMagic));
    assert!(matches!(
        decode(b"k8s\0\x0a\xff"),
        Err(ProtoError::Envelope(_))
    ));
    assert_eq!(decode(b"k8s\0"), Err(ProtoError::NoKind));
    // A ConfigMap envelope whose object is cut short.
    let cut = &CONFIGMAP[..CONFIGMAP.len() - 6];
    assert!(decode(cut).is_err());
    // Every prefix of every fixture: an error or a value, never a panic.
    for f in [
        CONFIGMAP,
        SECRET,
        NAMESPACE,
        SERVICEACCOUNT,
        DEPLOYMENT,
        TOKENREQUEST,
    ] {
        for n in 0..f.len() {
            let _ = decode(&f[..n]);
            let _ = envelope(&f[..n]);
        }
    }
}
