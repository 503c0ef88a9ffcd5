//! The self-managed TLS shell against kube-apisim with a real kube client:
//! two replicas starting at once agree on one Secret, the CA bundle lands in
//! every webhook of the MutatingWebhookConfiguration (the one rendered in
//! manifests/), an expiring serving certificate is renewed with the same CA,
//! and what is served chains to the published bundle.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};
use mcp_warden_webhook::selfmanaged::{
    Material, SelfManagedConfig, bootstrap, publish_ca_bundle, sync_once,
};
use rustls::client::danger::ServerCertVerifier;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn client(sim: &ApiSim) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn secret_shared_by_replicas_ca_bundle_published_and_renewal() {
    let sim = ApiSim::start(ApiSimOptions {
        seed: Some(repo().join("tests/fixtures/webhook/selfmanaged-seed.yaml")),
        ..Default::default()
    })
    .unwrap();
    let client = client(&sim).await;

    // The MutatingWebhookConfiguration exactly as manifests/ installs it.
    let manifests = std::fs::read_to_string(repo().join("manifests/mcp-warden.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&manifests).unwrap();
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(&PostParams::default(), &mwc).await.unwrap();
    let vwc: ValidatingWebhookConfiguration = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    vwcs.create(&PostParams::default(), &vwc).await.unwrap();

    let cfg = SelfManagedConfig {
        service_name: "mcp-warden-webhook".into(),
        service_namespace: "mcp-warden".into(),
        webhook_config_name: "mcp-warden".into(),
        secret_name: "mcp-warden-webhook-tls".into(),
        resync: Duration::from_secs(600),
    };

    // Two replicas start at the same time: one creates, the other reads.
    let (a, b) = tokio::join!(bootstrap(&client, &cfg), bootstrap(&client, &cfg));
    let (store_a, m_a) = a.unwrap();
    let (_store_b, m_b) = b.unwrap();
    assert_eq!(m_a, m_b, "replicas disagree on the certificate");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "mcp-warden");
    let secret = secrets.get("mcp-warden-webhook-tls").await.unwrap();
    assert_eq!(Material::from_secret(&secret).as_ref(), Some(&m_a));

    // Every webhook carries the CA bundle.
    let want = base64::engine::general_purpose::STANDARD.encode(&m_a.ca_cert_pem);
    let live = serde_json::to_value(mwcs.get("mcp-warden").await.unwrap()).unwrap();
    let hooks = live["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 3);
    for h in hooks {
        assert_eq!(h["clientConfig"]["caBundle"], want.as_str(), "{h}");
        assert_eq!(
            h["failurePolicy"], "Fail",
            "the rest of the webhook is untouched"
        );
    }
    let vlive = serde_json::to_value(vwcs.get("mcp-warden").await.unwrap()).unwrap();
    assert_eq!(
        vlive["webhooks"][0]["clientConfig"]["caBundle"],
        want.as_str()
    );
    // Publishing again is a no-op.
    let rv = live["metadata"]["resourceVersion"].clone();
    publish_ca_bundle(&client, &cfg, &m_a.ca_cert_pem)
        .await
        .unwrap();
    let again = serde_json::to_value(mwcs.get("mcp-warden").await.unwrap()).unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], rv);

    // The served certificate chains to the published CA for the Service name.
    let mut roots = rustls::RootCertStore::empty();
    for c in
        <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::pem_slice_iter(
            m_a.ca_cert_pem.as_bytes(),
        )
    {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let chain = store_a.current_chain();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &rustls_pki_types::ServerName::try_from("mcp-warden-webhook.mcp-warden.svc").unwrap(),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();

    // An expiring serving certificate is renewed, with the same CA.
    let mut s = secrets.get("mcp-warden-webhook-tls").await.unwrap();
    let soon = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
    s.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("mcp-warden.io/tls-not-after".into(), soon.to_string());
    secrets
        .replace("mcp-warden-webhook-tls", &PostParams::default(), &s)
        .await
        .unwrap();
    let renewed = sync_once(&client, &cfg).await.unwrap();
    assert_eq!(renewed.ca_cert_pem, m_a.ca_cert_pem);
    assert_ne!(renewed.tls_cert_pem, m_a.tls_cert_pem);
    assert!(renewed.tls_not_after > soon);
    let stored =
        Material::from_secret(&secrets.get("mcp-warden-webhook-tls").await.unwrap()).unwrap();
    assert_eq!(stored, renewed);
    // Another replica's next round just reads it.
    assert_eq!(sync_once(&client, &cfg).await.unwrap(), renewed);
}
