//! kube-apisim's wire behaviour checked request by request (through kube-rs'
//! raw `Client::send`, so TLS and auth are the ordinary client's): status
//! codes and reasons, Table / PartialObjectMetadata shapes, aggregated
//! discovery, gzip for large bodies, watch replay and bookmarks, dry runs,
//! optimistic concurrency, deletecollection, CRDs created through the API.

#![allow(clippy::unwrap_used)]

use flate2::read::GzDecoder;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

struct Resp {
    code: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn ct(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn client(sim: &ApiSim, token: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    if let Some(t) = token {
        cfg.auth_info = serde_json::from_value::<AuthInfo>(json!({"token": t})).unwrap();
    }
    Client::try_from(cfg).unwrap()
}

async fn send(
    c: &Client,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .send(b.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        code,
        headers,
        body,
    }
}

async fn get(c: &Client, uri: &str) -> Resp {
    send(c, Method::GET, uri, &[], b"").await
}

fn assert_status(r: &Resp, code: u16, reason: &str) {
    assert_eq!(r.code, code, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(v["code"], code);
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn errors_are_statuses() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let c = client(&sim, None).await;
    let bad = client(&sim, Some("not-the-token")).await;
    assert_status(
        &get(&bad, "/api/v1/namespaces/default/pods").await,
        401,
        "Unauthorized",
    );
    assert_status(&get(&bad, "/version").await, 401, "Unauthorized");
    assert_status(
        &get(&c, "/api/v1/namespaces/default/pods/nope").await,
        404,
        "NotFound",
    );
    assert_status(
        &get(&c, "/api/v1/namespaces/default/nothings").await,
        404,
        "NotFound",
    );
    assert_status(
        &get(&c, "/api/v1/namespaces/default/pods?labelSelector=a%20b").await,
        400,
        "BadRequest",
    );
    assert_status(
        &get(
            &c,
            "/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3D1",
        )
        .await,
        400,
        "BadRequest",
    );
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        b"{not json",
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        b"[1,2]",
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/yaml")],
        b"a: [",
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/nope/configmaps",
        &[JSON],
        br#"{"metadata":{"name":"x"}}"#,
    )
    .await;
    assert_status(&r, 404, "NotFound");
    assert_eq!(r.json()["message"], "namespaces \"nope\" not found");
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        br#"{"metadata":{"name":"UPPER"}}"#,
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.name");
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        br#"{"kind":"Secret","metadata":{"name":"x"}}"#,
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        br#"{"metadata":{"name":"app-config"}}"#,
    )
    .await;
    assert_status(&r, 409, "AlreadyExists");
    let r = send(
        &c,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        b"{}",
    )
    .await;
    assert_status(&r, 405, "MethodNotAllowed");
    let r = send(&c, Method::DELETE, "/api/v1/namespaces/default", &[], b"").await;
    assert_status(&r, 403, "Forbidden");
    let r = send(
        &c,
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/app-config",
        &[("content-type", "text/plain")],
        b"{}",
    )
    .await;
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = send(
        &c,
        Method::PATCH,
        "/apis/example.com/v1/namespaces/default/widgets/gizmo",
        &[("content-type", "application/strategic-merge-patch+json")],
        b"{}",
    )
    .await;
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = send(
        &c,
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/app-config",
        &[("content-type", "application/apply-patch+yaml")],
        b"data: {a: b}",
    )
    .await;
    assert_status(&r, 400, "BadRequest");

    // Optimistic concurrency: a stale resourceVersion conflicts.
    let cm = get(&c, "/api/v1/namespaces/default/configmaps/app-config")
        .await
        .json();
    let mut stale = cm.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let r = send(
        &c,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/app-config",
        &[JSON],
        stale.to_string().as_bytes(),
    )
    .await;
    assert_status(&r, 409, "Conflict");
    let mut fresh = cm.clone();
    fresh["data"]["new"] = json!("1");
    let r = send(
        &c,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/app-config",
        &[JSON],
        fresh.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_ne!(
        r.json()["metadata"]["resourceVersion"],
        cm["metadata"]["resourceVersion"]
    );
    let r = send(
        &c,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/app-config",
        &[JSON],
        fresh.to_string().as_bytes(),
    )
    .await;
    assert_status(&r, 409, "Conflict");
}

#[tokio::test]
async fn tables_partial_metadata_and_discovery() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let c = client(&sim, None).await;
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let r = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/pods",
        &[("accept", table)],
        b"",
    )
    .await;
    assert_eq!(r.ct(), "application/json;as=Table;v=v1;g=meta.k8s.io");
    let t = r.json();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    assert_eq!(
        t["rows"][0]["object"]["kind"], "PartialObjectMetadata",
        "default includeObject is Metadata"
    );
    assert!(t["rows"][0]["object"].get("spec").is_none());
    let t = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/pods/web-0?includeObject=Object",
        &[("accept", table)],
        b"",
    )
    .await
    .json();
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(t["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(t["rows"][0]["cells"][0], "web-0");
    let t = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/secrets?includeObject=None",
        &[("accept", table)],
        b"",
    )
    .await
    .json();
    assert!(t["rows"][0].get("object").is_none());
    assert_eq!(
        t["rows"][0]["cells"],
        json!(["db-credentials", "Opaque", 2, t["rows"][0]["cells"][3]])
    );
    let t = send(
        &c,
        Method::GET,
        "/apis/example.com/v1/namespaces/default/widgets",
        &[("accept", table)],
        b"",
    )
    .await
    .json();
    assert_eq!(t["columnDefinitions"][1]["name"], "Size");
    assert_eq!(t["rows"][0]["cells"][1], 3);

    let pom = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json";
    let r = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/secrets",
        &[("accept", pom)],
        b"",
    )
    .await;
    let l = r.json();
    assert_eq!(l["kind"], "PartialObjectMetadataList");
    assert_eq!(l["items"][0]["kind"], "PartialObjectMetadata");
    assert!(l["items"][0].get("data").is_none());
    let one = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/secrets/db-credentials",
        &[(
            "accept",
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        )],
        b"",
    )
    .await
    .json();
    assert_eq!(one["metadata"]["name"], "db-credentials");
    assert!(one.get("data").is_none());

    let agg =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let r = send(&c, Method::GET, "/apis", &[("accept", agg)], b"").await;
    assert_eq!(
        r.ct(),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let d = r.json();
    assert_eq!(d["kind"], "APIGroupDiscoveryList");
    let groups: Vec<&str> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"apps") && groups.contains(&"example.com"),
        "{groups:?}"
    );
    let r = send(
        &c,
        Method::GET,
        "/api",
        &[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        )],
        b"",
    )
    .await;
    assert_eq!(r.json()["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let legacy = get(&c, "/api/v1").await.json();
    assert!(
        legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/exec")
    );
    assert_eq!(get(&c, "/version").await.json()["minor"], "32");
}

#[tokio::test]
async fn gzip_for_large_bodies_only() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let c = client(&sim, None).await;
    let big = "x".repeat(40 * 1024);
    for i in 0..4 {
        let body = json!({"metadata": {"name": format!("big-{i}")}, "data": {"blob": big}});
        assert_eq!(
            send(
                &c,
                Method::POST,
                "/api/v1/namespaces/default/configmaps",
                &[JSON],
                body.to_string().as_bytes()
            )
            .await
            .code,
            201
        );
    }
    let r = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/configmaps",
        &[("accept-encoding", "gzip")],
        b"",
    )
    .await;
    assert_eq!(r.headers.get(header::CONTENT_ENCODING).unwrap(), "gzip");
    let mut plain = Vec::new();
    GzDecoder::new(r.body.as_slice())
        .read_to_end(&mut plain)
        .unwrap();
    let list: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        6,
        "4 big + app-config + kube-root-ca.crt"
    );
    let small = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/app-config",
        &[("accept-encoding", "gzip")],
        b"",
    )
    .await;
    assert!(small.headers.get(header::CONTENT_ENCODING).is_none());
    let uncompressed = get(&c, "/api/v1/namespaces/default/configmaps").await;
    assert!(uncompressed.headers.get(header::CONTENT_ENCODING).is_none());
    assert!(uncompressed.body.len() > 128 * 1024);
}

#[tokio::test]
async fn dry_run_patch_deletecollection_and_crds() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let c = client(&sim, None).await;
    let r = send(
        &c,
        Method::POST,
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        &[JSON],
        br#"{"metadata":{"generateName":"gen-"}}"#,
    )
    .await;
    assert_eq!(r.code, 201);
    let name = r.json()["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert_status(
        &get(&c, &format!("/api/v1/namespaces/default/configmaps/{name}")).await,
        404,
        "NotFound",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            "/api/v1/namespaces/default/configmaps?dryRun=Some",
            &[JSON],
            br#"{"metadata":{"name":"a"}}"#,
        )
        .await,
        400,
        "BadRequest",
    );
    let r = send(
        &c,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/web-0?dryRun=All",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(
        get(&c, "/api/v1/namespaces/default/pods/web-0").await.code,
        200
    );
    let r = send(
        &c,
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/app-config?dryRun=All",
        &[("content-type", "application/merge-patch+json")],
        br#"{"data":{"log_level":"x"}}"#,
    )
    .await;
    assert_eq!(r.json()["data"]["log_level"], "x");
    assert_eq!(
        get(&c, "/api/v1/namespaces/default/configmaps/app-config")
            .await
            .json()["data"]["log_level"],
        "debug"
    );

    // Strategic merge patch keyed by container name keeps the other fields.
    let r = send(
        &c,
        Method::PATCH,
        "/api/v1/namespaces/default/pods/web-0",
        &[("content-type", "application/strategic-merge-patch+json")],
        br#"{"spec":{"containers":[{"name":"web","env":[{"name":"LOG_LEVEL","value":"debug"}]}]}}"#,
    )
    .await;
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    let env = &r.json()["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "debug"}])
    );

    let r = send(
        &c,
        Method::DELETE,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.json()["kind"], "PodList");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
    let left = get(&c, "/api/v1/namespaces/default/pods").await.json();
    assert_eq!(left["items"].as_array().unwrap().len(), 1);

    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gadgets.example.org"},
        "spec": {"group": "example.org", "scope": "Cluster", "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}});
    let r = send(
        &c,
        Method::POST,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &[JSON],
        crd.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        get(&c, "/apis/example.org/v1alpha1").await.json()["resources"][0]["name"],
        "gadgets"
    );
    let r = send(&c, Method::POST, "/apis/example.org/v1alpha1/gadgets", &[JSON], br#"{"apiVersion":"example.org/v1alpha1","kind":"Gadget","metadata":{"name":"g1"},"spec":{"a":1}}"#).await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        get(&c, "/apis/example.org/v1alpha1/gadgets/g1")
            .await
            .json()["spec"]["a"],
        1
    );
    let r = send(
        &c,
        Method::DELETE,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.org",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.code, 200);
    assert_status(
        &get(&c, "/apis/example.org/v1alpha1/gadgets").await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn watch_replays_from_resource_version_and_sends_bookmarks() {
    let sim = ApiSim::start(ApiSimOptions {
        bookmark_interval_ms: Some(100),
        ..ApiSimOptions::demo()
    })
    .unwrap();
    let c = client(&sim, None).await;
    let list = get(&c, "/api/v1/namespaces/default/configmaps")
        .await
        .json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["w1", "w2"] {
        let body = json!({"metadata": {"name": name, "labels": {"w": "yes"}}});
        send(
            &c,
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            &[JSON],
            body.to_string().as_bytes(),
        )
        .await;
    }
    send(
        &c,
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/w1",
        &[],
        b"",
    )
    .await;
    let uri = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2&labelSelector=w"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), get(&c, &uri))
        .await
        .expect("watch ends at timeoutSeconds");
    assert_eq!(r.code, 200);
    let events: Vec<Value> = r
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let changes: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("ADDED".into(), "w1".into()),
            ("ADDED".into(), "w2".into()),
            ("DELETED".into(), "w1".into())
        ]
    );
    let bookmark = events
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .expect("a BOOKMARK within 2 s at 100 ms interval");
    assert_eq!(bookmark["object"]["kind"], "ConfigMap");
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv.parse::<u64>().unwrap()
    );
    // Leaving and re-entering the selection is DELETED then ADDED.
    let rv2 = get(&c, "/api/v1/namespaces/default/configmaps")
        .await
        .json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (c2, uri2) = (
        c.clone(),
        format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv2}&timeoutSeconds=2&labelSelector=w%3Dyes"
        ),
    );
    let watching = tokio::spawn(async move { get(&c2, &uri2).await });
    for v in ["no", "yes"] {
        let p = json!({"metadata": {"labels": {"w": v}}}).to_string();
        let r = send(
            &c,
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/w2",
            &[("content-type", "application/merge-patch+json")],
            p.as_bytes(),
        )
        .await;
        assert_eq!(r.code, 200);
    }
    let r = tokio::time::timeout(Duration::from_secs(10), watching)
        .await
        .unwrap()
        .unwrap();
    let types: Vec<String> = r
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["DELETED", "ADDED"]);
    // Table watch events carry Table objects.
    let r = send(
        &c,
        Method::GET,
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        b"",
    )
    .await;
    let first: Value =
        serde_json::from_slice(r.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "app-config");
}

#[tokio::test]
async fn extra_users_authenticate_as_themselves() {
    let sim = ApiSim::start(ApiSimOptions {
        extra_users: vec!["alice=alice-token:approvers,dev".into()],
        ..ApiSimOptions::demo()
    })
    .unwrap();
    let alice = client(&sim, Some("alice-token")).await;
    let body = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let r = send(
        &alice,
        Method::POST,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[JSON],
        body,
    )
    .await;
    assert_eq!(r.code, 201);
    let info = &r.json()["status"]["userInfo"];
    assert_eq!(info["username"], "alice");
    assert_eq!(
        info["groups"],
        json!(["approvers", "dev", "system:authenticated"])
    );
    let admin = client(&sim, None).await;
    let r = send(
        &admin,
        Method::POST,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[JSON],
        body,
    )
    .await;
    assert_eq!(
        r.json()["status"]["userInfo"]["username"],
        "kube-apisim-admin"
    );
}
