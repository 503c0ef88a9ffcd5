//! kube-apisim validates custom resources against their CRD's structural
//! schema as kube-apiserver does (an AccessRequest with `null` optional
//! fields is refused by a real 1.20 server, so it must be refused here).
//!
//! Through kube-rs' raw `Client::send` against a kube-apisim process: the
//! AccessRequest CRD from `manifests/crds/`, the body earlier sidecars sent
//! (empty optional strings), the body they send now (omitted), explicit
//! nulls (dropped, as the server drops non-nullable nulls), unknown fields
//! (pruned), and patches and `/status` writes (validated after applying).

#![allow(clippy::unwrap_used)]

use http::{Method, Request};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");
const MERGE: (&str, &str) = ("content-type", "application/merge-patch+json");
const COLLECTION: &str = "/apis/mcp-warden.io/v1alpha1/namespaces/default/accessrequests";

async fn client(sim: &ApiSim) -> Client {
    let kc = Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

async fn send(
    c: &Client,
    method: Method,
    uri: &str,
    ct: (&str, &str),
    body: &Value,
) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(ct.0, ct.1)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The CRD as shipped, or (`old`) with every `nullable` removed.
fn crd(old: bool) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("nullable");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/crds/accessrequests.yaml");
    let mut v: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    if old {
        strip(&mut v);
    }
    v
}

/// What a sidecar sent for a held `kubectl delete configmap scratch` before
/// the fix: every optional string present, empty ones as "".
fn old_body() -> Value {
    json!({"apiVersion": "mcp-warden.io/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "delete-configmaps-old"},
        "spec": {"verb": "delete", "group": "", "resource": "configmaps", "subresource": "",
            "namespace": "default", "name": "scratch", "requestHash": "h",
            "summary": "delete configmaps default/scratch",
            "requester": {"serviceAccount": "system:serviceaccount:default:agent", "pod": "agent-0"},
            "rule": "deletes-need-a-human", "message": "", "expiresAt": "2026-11-22T01:05:00Z"}})
}

/// What it sends now: empty optional strings omitted.
fn new_body() -> Value {
    json!({"apiVersion": "mcp-warden.io/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "delete-configmaps-new"},
        "spec": {"verb": "delete", "resource": "configmaps",
            "namespace": "default", "name": "scratch", "requestHash": "h",
            "summary": "delete configmaps default/scratch",
            "requester": {"serviceAccount": "system:serviceaccount:default:agent", "pod": "agent-0"},
            "rule": "deletes-need-a-human", "expiresAt": "2026-11-22T01:05:00Z"}})
}

async fn install(c: &Client, crd: &Value) {
    let (code, body) = send(
        c,
        Method::POST,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        JSON,
        crd,
    )
    .await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn the_old_sidecar_body_is_refused_by_the_old_crd_like_kube_apiserver_1_20() {
    let sim = ApiSim::start(ApiSimOptions::default()).unwrap();
    let c = client(&sim).await;
    install(&c, &crd(true)).await;

    let (code, st) = send(&c, Method::POST, COLLECTION, JSON, &old_body()).await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["kind"], "AccessRequest");
    assert_eq!(st["details"]["group"], "mcp-warden.io");
    // The real server's text, field by field.
    assert_eq!(
        st["message"],
        "AccessRequest.mcp-warden.io \"delete-configmaps-old\" is invalid: [\
         spec.group: Invalid value: \"null\": spec.group in body must be of type string: \"null\", \
         spec.message: Invalid value: \"null\": spec.message in body must be of type string: \"null\", \
         spec.subresource: Invalid value: \"null\": spec.subresource in body must be of type string: \"null\"]"
    );
    let (code, _) = send(
        &c,
        Method::GET,
        &format!("{COLLECTION}/delete-configmaps-old"),
        JSON,
        &Value::Null,
    )
    .await;
    assert_eq!(code, 404, "nothing stored");

    // What sidecars send now passes even the old CRD.
    let (code, body) = send(&c, Method::POST, COLLECTION, JSON, &new_body()).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn the_shipped_crd_accepts_old_and_new_sidecars_and_prunes_like_the_server() {
    let sim = ApiSim::start(ApiSimOptions::default()).unwrap();
    let c = client(&sim).await;
    install(&c, &crd(false)).await;

    let (code, body) = send(&c, Method::POST, COLLECTION, JSON, &old_body()).await;
    assert_eq!(code, 201, "old sidecars keep working: {body}");
    let (code, body) = send(&c, Method::POST, COLLECTION, JSON, &new_body()).await;
    assert_eq!(code, 201, "{body}");
    assert!(body["spec"].get("group").is_none());

    // Explicit nulls: nullable ones are kept, the others dropped; unknown
    // fields are pruned; nothing is refused for them.
    let mut b = new_body();
    b["metadata"]["name"] = json!("with-nulls");
    b["spec"]["group"] = Value::Null;
    b["spec"]["requester"]["serviceAccount"] = Value::Null;
    b["spec"]["bogus"] = json!({"a": 1});
    b["extra"] = json!(true);
    let (code, body) = send(&c, Method::POST, COLLECTION, JSON, &b).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"].get("group"), Some(&Value::Null), "{body}");
    assert!(
        body["spec"]["requester"].get("serviceAccount").is_none(),
        "{body}"
    );
    assert!(
        body["spec"].get("bogus").is_none() && body.get("extra").is_none(),
        "{body}"
    );

    // Required fields, types and formats are checked.
    let mut b = new_body();
    b["metadata"]["name"] = json!("broken");
    b["spec"]["grant"] = json!({"duration": "1m"});
    b["spec"]["expiresAt"] = json!("tomorrow");
    b["spec"]["requester"] = json!("me");
    let (code, st) = send(&c, Method::POST, COLLECTION, JSON, &b).await;
    assert_eq!(code, 422, "{st}");
    let msg = st["message"].as_str().unwrap();
    for want in [
        "spec.grant.rule: Required value",
        "spec.expiresAt: Invalid value: \"tomorrow\": spec.expiresAt in body must be of type date-time: \"tomorrow\"",
        "spec.requester: Invalid value: \"string\": spec.requester in body must be of type object: \"string\"",
    ] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }

    // A merge patch is validated on the object it produces.
    let (code, st) = send(
        &c,
        Method::PATCH,
        &format!("{COLLECTION}/delete-configmaps-new"),
        MERGE,
        &json!({"spec": {"verb": 7}}),
    )
    .await;
    assert_eq!(code, 422, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("spec.verb in body must be of type string: \"integer\"")
    );

    // /status: the enum is enforced.
    let (_, mut cur) = send(
        &c,
        Method::GET,
        &format!("{COLLECTION}/delete-configmaps-new"),
        JSON,
        &Value::Null,
    )
    .await;
    cur["status"] = json!({"state": "Maybe"});
    let (code, st) = send(
        &c,
        Method::PUT,
        &format!("{COLLECTION}/delete-configmaps-new/status"),
        JSON,
        &cur,
    )
    .await;
    assert_eq!(code, 422, "{st}");
    assert!(
        st["message"].as_str().unwrap().contains(
            "status.state: Unsupported value: \"Maybe\": supported values: \"Pending\", \"Approved\", \"Denied\", \"Expired\", \"Used\""
        ),
        "{st}"
    );
    cur["status"] = json!({"state": "Approved", "reason": ""});
    let (code, st) = send(
        &c,
        Method::PUT,
        &format!("{COLLECTION}/delete-configmaps-new/status"),
        JSON,
        &cur,
    )
    .await;
    assert_eq!(code, 200, "{st}");
}
