//! The webhook server in-process on 127.0.0.1:0: a real AdmissionReview over
//! HTTPS with a rustls client that trusts only the generated CA and checks
//! the Service's DNS name (as the API server does), malformed reviews, the
//! admin endpoints, and certificate rotation on disk picked up without a
//! restart.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mcp_warden_webhook::config::InjectConfig;
use mcp_warden_webhook::config::{KubeVersion, NativeSidecar};
use mcp_warden_webhook::selfmanaged::{Material, ensure, service_dns_names};
use mcp_warden_webhook::server::{ServeConfig, ServerVersion, TlsSource};
use mcp_warden_webhook::tls::CertFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SERVICE_DNS: &str = "mcp-warden-webhook.mcp-warden.svc";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/webhook")
            .join(name),
    )
    .unwrap()
}

fn material() -> Material {
    ensure(
        None,
        &service_dns_names("mcp-warden-webhook", "mcp-warden"),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .0
}

fn write_atomically(path: &Path, data: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(cfg)
}

/// One HTTPS request; Err if the TLS handshake (certificate check) fails.
async fn https(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Value), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(client_config(ca_pem));
    let tls = connector
        .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVICE_DNS)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("non-JSON body {bytes:?}: {e}"))?;
    Ok((status, v))
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

struct Server {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), mcp_warden_webhook::server::ServeError>>,
}

async fn start(cert: &Path, key: &Path) -> Server {
    start_with(
        cert,
        key,
        InjectConfig::default(),
        ServerVersion::Known(KubeVersion {
            major: 1,
            minor: 33,
        }),
    )
    .await
}

async fn start_with(
    cert: &Path,
    key: &Path,
    inject: InjectConfig,
    server_version: ServerVersion,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServeConfig {
        inject,
        tls: TlsSource::Files(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            poll_interval: Duration::from_millis(200),
        }),
        server_version,
        max_grant: mcp_warden_shared::grant::DEFAULT_MAX_GRANT,
    };
    let task = tokio::spawn(mcp_warden_webhook::run(
        listener,
        admin,
        config,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        admin: admin_addr,
        stop: Some(tx),
        task,
    }
}

#[tokio::test]
async fn mutate_over_https_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let first = material();
    write_atomically(&cert, &first.tls_cert_pem);
    write_atomically(&key, &first.tls_key_pem);
    let mut server = start(&cert, &key).await;

    // A real AdmissionReview for a pod CREATE.
    let review = fixture("admission-review-pod-create.json");
    let sent: Value = serde_json::from_slice(&review).unwrap();
    let (status, body) = https(
        server.addr,
        &first.ca_cert_pem,
        "POST",
        "/mutate",
        review.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let resp = &body["response"];
    assert_eq!(resp["uid"], sent["request"]["uid"]);
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
    let mut pod = sent["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch.0).unwrap();
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
    let spec = typed.spec.unwrap();
    assert_eq!(spec.init_containers.unwrap()[0].name, "mcp-warden");
    assert_eq!(spec.automount_service_account_token, Some(false));

    // kube-apiserver speaks HTTP/2 to webhooks when ALPN offers it.
    {
        let mut cfg = (*client_config(&first.ca_cert_pem)).clone();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("https://{SERVICE_DNS}/mutate"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(review.clone())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["response"]["uid"], sent["request"]["uid"]);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
    }

    // The injected pod coming back (reinvocation): allowed, no patch.
    let mut again = sent.clone();
    again["request"]["object"] = pod;
    let (_, body) = https(
        server.addr,
        &first.ca_cert_pem,
        "POST",
        "/mutate",
        serde_json::to_vec(&again).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none(), "{body}");

    // A refused pod: denied with the reason, uid echoed.
    let mut host = sent.clone();
    host["request"]["uid"] = "refuse-1".into();
    host["request"]["object"]["spec"]["hostNetwork"] = true.into();
    let (status, body) = https(
        server.addr,
        &first.ca_cert_pem,
        "POST",
        "/mutate",
        serde_json::to_vec(&host).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["response"]["uid"], "refuse-1");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 403);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("hostNetwork")
    );

    // Malformed bodies: a Status, never an empty error.
    let (status, body) = https(
        server.addr,
        &first.ca_cert_pem,
        "POST",
        "/mutate",
        b"{\"kind\":".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["kind"], "Status");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a JSON AdmissionReview")
    );
    let (status, body) = https(
        server.addr,
        &first.ca_cert_pem,
        "GET",
        "/mutate",
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 405);
    assert_eq!(body["reason"], "MethodNotAllowed");
    let big = vec![b' '; mcp_warden_webhook::server::MAX_BODY_BYTES + 10];
    let (status, body) = https(server.addr, &first.ca_cert_pem, "POST", "/mutate", big)
        .await
        .unwrap();
    assert_eq!(status, 413);
    assert_eq!(body["kind"], "Status");

    // Admin endpoints.
    assert_eq!(http_get(server.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(server.admin, "/readyz").await.0, 200);
    let (status, metrics) = http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mcp_warden_webhook_admissions_total{outcome=\"injected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_warden_webhook_admissions_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_warden_webhook_admission_duration_seconds_count"),
        "{metrics}"
    );

    // Rotation: a certificate from a new CA replaces the files (key first,
    // then cert, like a non-atomic writer; the half-written state is ignored).
    let second = material();
    assert_ne!(second.ca_cert_pem, first.ca_cert_pem);
    write_atomically(&key, &second.tls_key_pem);
    write_atomically(&cert, &second.tls_cert_pem);
    let mut picked_up = false;
    for _ in 0..200 {
        if https(
            server.addr,
            &second.ca_cert_pem,
            "POST",
            "/mutate",
            review.clone(),
        )
        .await
        .is_ok()
        {
            picked_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(picked_up, "rotated certificate not served");
    let old = https(
        server.addr,
        &first.ca_cert_pem,
        "POST",
        "/mutate",
        review.clone(),
    )
    .await;
    assert!(old.is_err(), "old CA still accepted after rotation");

    // A broken file does not take the server down: the current cert stays.
    std::fs::write(&cert, "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        https(server.addr, &second.ca_cert_pem, "POST", "/mutate", review)
            .await
            .is_ok()
    );

    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn missing_certificate_files_fail_start() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServeConfig {
        inject: InjectConfig::default(),
        tls: TlsSource::Files(CertFiles {
            cert: dir.path().join("nope.crt"),
            key: dir.path().join("nope.key"),
            poll_interval: Duration::from_secs(1),
        }),
        server_version: ServerVersion::Unknown,
        max_grant: mcp_warden_shared::grant::DEFAULT_MAX_GRANT,
    };
    let err = mcp_warden_webhook::run(listener, admin, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
}

/// The sidecar of the admitted fixture pod: `(in init containers, container)`.
async fn admitted_sidecar(server: &Server, ca_pem: &str) -> (bool, Value) {
    let review = fixture("admission-review-pod-create.json");
    let sent: Value = serde_json::from_slice(&review).unwrap();
    let (status, body) = https(server.addr, ca_pem, "POST", "/mutate", review)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(body["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
    let mut pod = sent["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch.0).unwrap();
    let init = pod["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(c) = init.iter().find(|c| c["name"] == "mcp-warden") {
        return (true, c.clone());
    }
    assert_eq!(pod["spec"]["containers"][0]["name"], "mcp-warden", "{pod}");
    (false, pod["spec"]["containers"][0].clone())
}

/// With `nativeSidecar: auto` (the default) the webhook reads the
/// API server's version at start: a 1.20 server gets the container form
/// (which it accepts; the native form's probes on an init container it
/// refuses), a 1.29 server the native sidecar, and an unreachable server
/// the container form, which every server accepts.
#[tokio::test]
async fn auto_picks_the_form_by_the_servers_version() {
    use mcp_warden_tests::harness::{ApiSim, ApiSimOptions};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let m = material();
    write_atomically(&cert, &m.tls_cert_pem);
    write_atomically(&key, &m.tls_key_pem);
    let inject = InjectConfig::default();
    assert_eq!(inject.native_sidecar, NativeSidecar::Auto);

    for (version, native) in [("v1.20.2", false), ("v1.29.4", true)] {
        let sim = ApiSim::start(ApiSimOptions {
            version: Some(version.to_string()),
            ..Default::default()
        })
        .unwrap();
        let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let mut server = start_with(
            &cert,
            &key,
            inject.clone(),
            ServerVersion::Detect {
                recheck: Duration::from_secs(600),
                client: Some(client),
            },
        )
        .await;
        let (in_init, sidecar) = admitted_sidecar(&server, &m.ca_cert_pem).await;
        assert_eq!(in_init, native, "{version}: {sidecar}");
        if native {
            assert_eq!(sidecar["restartPolicy"], "Always");
            assert!(sidecar.get("lifecycle").is_none());
        } else {
            assert!(sidecar.get("restartPolicy").is_none());
            let post = &sidecar["lifecycle"]["postStart"]["exec"]["command"];
            assert_eq!(post[0], "/usr/local/bin/mcp-warden-sidecar");
            assert_eq!(post[1], "wait-ready");
            assert_eq!(
                sidecar["lifecycle"]["preStop"]["exec"]["command"][1],
                "wait-drain"
            );
        }
        server.stop.take().unwrap().send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    // Nothing answers: the container form.
    let dead = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
    let mut server = start_with(
        &cert,
        &key,
        inject,
        ServerVersion::Detect {
            recheck: Duration::from_secs(600),
            client: Some(kube::Client::try_from(dead).unwrap()),
        },
    )
    .await;
    let (in_init, _) = admitted_sidecar(&server, &m.ca_cert_pem).await;
    assert!(!in_init);
    server.stop.take().unwrap().send(()).unwrap();
    server.task.await.unwrap().unwrap();
}
