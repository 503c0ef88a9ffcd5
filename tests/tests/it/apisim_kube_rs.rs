//! kube-rs against kube-apisim: `Api::list`/`get`/`create`/`delete`, a
//! `watcher` stream (list+watch and streaming-list strategies) that sees an
//! object created meanwhile, and error statuses surfaced as `kube::Error::Api`.
//! Each client is built the ordinary way: from the kubeconfig the harness
//! writes, or from a `kube::Config` with the root CA read from `ca.crt`.
//!
//! Needs `cargo build --workspace --bins` (the harness spawns kube-apisim).

#![allow(clippy::unwrap_used)]

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn sim() -> ApiSim {
    ApiSim::start(ApiSimOptions::demo()).expect("start kube-apisim")
}

async fn client_from_kubeconfig(sim: &ApiSim) -> Client {
    let kc = Kubeconfig::read_from(sim.kubeconfig_path()).expect("read kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// A Config built by hand: server URL, the root CA from ca.crt, the token.
fn client_from_ca(sim: &ApiSim) -> Client {
    let pem = std::fs::read(sim.ca_path()).unwrap();
    let ders: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(ders.len(), 1, "ca.crt holds one certificate");
    let mut cfg = Config::new(sim.url().parse().unwrap());
    cfg.root_cert = Some(ders);
    cfg.default_namespace = "default".into();
    cfg.auth_info = serde_json::from_value::<AuthInfo>(json!({"token": sim.token()})).unwrap();
    Client::try_from(cfg).expect("client")
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "made-by".to_string(),
                "kube-rs".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn kube_rs_list_get_create_delete() {
    let sim = sim();
    let client = client_from_kubeconfig(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let names: Vec<String> = list
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["web-0", "web-1"]);
    let paged = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(paged.items.len(), 2);
    assert!(paged.metadata.continue_.is_some());
    assert_eq!(paged.metadata.remaining_item_count, Some(1));

    let web0 = pods.get("web-0").await.unwrap();
    assert_eq!(web0.status.unwrap().phase.as_deref(), Some("Running"));
    let secret: Secret = Api::namespaced(client.clone(), "default")
        .get("db-credentials")
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"s3cr3t-password");
    let deploy: Deployment = Api::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    assert_eq!(deploy.status.unwrap().ready_replicas, Some(2));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("from-kube-rs"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    match cms
        .create(&PostParams::default(), &cm("from-kube-rs"))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "AlreadyExists");
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let got = cms.get("from-kube-rs").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");
    let deleted = cms
        .delete("from-kube-rs", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right(), "configmap deletes answer with a Status");
    assert!(cms.get_opt("from-kube-rs").await.unwrap().is_none());
    match pods.get("nope").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A pod delete answers with the object.
    let gone = pods
        .delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(gone.is_left());
}

async fn watch_sees_new_object(cfg: watcher::Config) {
    let sim = sim();
    let client = client_from_ca(&sim);
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut stream = watcher(cms.clone(), cfg).boxed();
    let mut init_done = false;
    let mut seen_initial = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !init_done {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("initial list in time")
            .unwrap()
            .unwrap();
        match ev {
            watcher::Event::InitApply(o) => seen_initial.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => init_done = true,
            _ => {}
        }
    }
    assert_eq!(seen_initial, ["app-config", "kube-root-ca.crt"]);
    cms.create(&PostParams::default(), &cm("watched"))
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        if let watcher::Event::Apply(o) = ev {
            assert_eq!(o.metadata.name.as_deref(), Some("watched"));
            assert_eq!(o.metadata.labels.unwrap()["made-by"], "kube-rs");
            break;
        }
    }
    cms.delete("watched", &DeleteParams::default())
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("delete event in time")
            .unwrap()
            .unwrap();
        if let watcher::Event::Delete(o) = ev {
            assert_eq!(o.metadata.name.as_deref(), Some("watched"));
            break;
        }
    }
}

#[tokio::test]
async fn kube_rs_watcher_list_watch() {
    watch_sees_new_object(watcher::Config::default()).await;
}

#[tokio::test]
async fn kube_rs_watcher_streaming_list() {
    watch_sees_new_object(watcher::Config::default().streaming_lists()).await;
}
