//! kube-rs through the sidecar, configured in-cluster style from nothing but
//! the sidecar's local directory (`ca.crt`, `token`, `namespace`), the way
//! `Config::incluster()` reads the service-account mount.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::AuthInfo;
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};
use tokio::io::AsyncReadExt;

const SEED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: echo
  namespace: default
spec:
  containers:
  - name: main
    image: busybox
status:
  phase: Running
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
data:
  mode: fast
"#;

fn incluster_style_config(local_dir: &std::path::Path, port: u16) -> kube::Config {
    let pem = std::fs::read(local_dir.join("ca.crt")).unwrap();
    let ders: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.unwrap().to_vec())
        .collect();
    let mut cfg = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    cfg.default_namespace = std::fs::read_to_string(local_dir.join("namespace")).unwrap();
    cfg.root_cert = Some(ders);
    cfg.root_cert_file = Some(local_dir.join("ca.crt"));
    cfg.auth_info = AuthInfo {
        token_file: Some(local_dir.join("token").display().to_string()),
        ..Default::default()
    };
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_through_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let sim = ApiSim::start(ApiSimOptions {
        seed: Some(seed),
        ..Default::default()
    })
    .unwrap();
    let token_dir: PathBuf = dir.path().join("upstream");
    std::fs::create_dir(&token_dir).unwrap();
    common::kubelet_write_token(&token_dir, 1, &sim.token());
    let sc =
        common::InProcessSidecar::start(&sim.url(), &sim.ca_path(), &token_dir.join("token"), &[])
            .await;

    let client =
        kube::Client::try_from(incluster_style_config(&sc.local_dir, sc.addr.port())).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["echo"]);

    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let settings = cms.get("settings").await.unwrap();
    assert_eq!(settings.data.unwrap()["mode"], "fast");

    // A watch from the current resourceVersion sees a create made while it is open.
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "from-kube-rs"}, "data": {"k": "v"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match stream.try_next().await.unwrap() {
                Some(WatchEvent::Added(c)) => return c,
                Some(_) => continue,
                None => panic!("watch ended"),
            }
        }
    })
    .await
    .expect("watch event");
    assert_eq!(ev.metadata.name.as_deref(), Some("from-kube-rs"));
    drop(stream);
    cms.delete("from-kube-rs", &DeleteParams::default())
        .await
        .unwrap();
    assert!(cms.get_opt("from-kube-rs").await.unwrap().is_none());

    let log = pods.logs("echo", &LogParams::default()).await.unwrap();
    assert!(log.starts_with("line 1 from echo/main\n"), "{log}");

    // exec over kube-rs' WebSocket client (no ALPN), tunnelled by the sidecar.
    let mut proc = pods
        .exec(
            "echo",
            vec!["echo", "hi from kube-rs"],
            &AttachParams::default().stdout(true).stderr(false),
        )
        .await
        .unwrap();
    let mut out = String::new();
    proc.stdout()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    proc.join().await.unwrap();
    assert_eq!(out, "hi from kube-rs\n");
    sc.stop().await;
}
