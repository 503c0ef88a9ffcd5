//! Clients that use `https://kubernetes.default.svc` (port 443)
//! reach the sidecar: a second TLS listener (`--listen-https-alias`, a high
//! port here; 127.0.0.1:443 in a pod) serving the same API, a certificate
//! for the cluster domain's name, and the container form's lifecycle hooks
//! (`wait-ready`, `wait-drain`) run as the kubelet runs them: the binary in
//! the sidecar's container.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::sync::Arc;

use crate::common::{Alpn, InProcessSidecar, Upstream, client, send};

const REAL: &str = "real-upstream-token";

fn free_port() -> u16 {
    // Below the ephemeral range, so no outgoing connection takes it
    // before the sidecar binds it.
    mcp_warden_tests::stack::free_port().expect("a free loopback port")
}

async fn tls_to(
    sc: &InProcessSidecar,
    port: u16,
    name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = common::client_tls(&sc.ca_pem(), Alpn::H1);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let sni = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    connector
        .connect(sni, tcp)
        .await
        .unwrap_or_else(|e| panic!("{name} on port {port}: {e}"))
}

#[tokio::test]
async fn the_same_api_answers_on_the_https_alias_for_every_in_cluster_name() {
    let up = Upstream::start(&[REAL]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, REAL);
    let port = free_port();
    let alias = format!("127.0.0.1:{port}");
    let sc = InProcessSidecar::start(
        &up.url(),
        &up.ca_file,
        &tdir.path().join("token"),
        &[
            "--listen-https-alias",
            &alias,
            "--cluster-domain",
            "corp.example",
        ],
    )
    .await;

    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.corp.example",
    ] {
        tls_to(&sc, port, name).await;
        tls_to(&sc, sc.addr.port(), name).await;
    }

    // A request through the alias is the same pipeline: local token checked,
    // forwarded with the real token.
    let c = client(&sc.ca_pem(), Alpn::H1);
    let auth = format!("Bearer {}", sc.token());
    let url = format!("https://{alias}/api/v1/namespaces/default/pods");
    let (code, _, body) = send(&c, "GET", &url, &[("authorization", auth.as_str())]).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = send(&c, "GET", &url, &[]).await;
    assert_eq!(code, 401);
    assert!(
        up.seen()
            .iter()
            .all(|s| s.authorization().as_deref() == Some(&format!("Bearer {REAL}")[..])),
        "only the real token reaches the upstream"
    );
    let (_, metrics) = sc.admin_get("/metrics").await.unwrap();
    assert!(
        metrics.contains("mcp_warden_connections_open{listener=\"app-https-alias\"}"),
        "{metrics}"
    );
    let (code, readyz) = sc.admin_get("/readyz").await.unwrap();
    assert_eq!(code, 200, "{readyz}");
    sc.stop().await;
}

fn hook(args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-warden-sidecar"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn run_hook(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || hook(&args))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_wait_for_ready_and_for_the_app_to_go() {
    let up = Upstream::start(&[REAL]).await;
    let tdir = tempfile::tempdir().unwrap();
    common::kubelet_write_token(tdir.path(), 1, REAL);
    let sc = InProcessSidecar::start(&up.url(), &up.ca_file, &tdir.path().join("token"), &[]).await;
    let admin = sc.admin_addr.port().to_string();

    // postStart: returns once /readyz is 200; gives up (non-zero) when nothing answers.
    let (ok, err) = run_hook(&["wait-ready", "--admin-port", &admin, "--timeout", "20s"]).await;
    assert!(ok, "{err}");
    let closed = free_port().to_string();
    let (ok, err) = run_hook(&["wait-ready", "--admin-port", &closed, "--timeout", "1s"]).await;
    assert!(!ok);
    assert!(err.contains("was not ready within"), "{err}");

    // preStop: with no app connection it lets the sidecar stop ...
    let (ok, err) = run_hook(&[
        "wait-drain",
        "--admin-port",
        &admin,
        "--min",
        "0s",
        "--max",
        "20s",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("no app connection open"), "{err}");
    // ... while the app still holds one, it waits until --max.
    let held = tls_to(&sc, sc.addr.port(), "kubernetes.default.svc").await;
    let (ok, err) = run_hook(&[
        "wait-drain",
        "--admin-port",
        &admin,
        "--min",
        "0s",
        "--max",
        "1s",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        err.contains("--max reached with 1 app connection(s) open"),
        "{err}"
    );
    drop(held);
    // The app is gone (its connection closed): done.
    let (ok, err) = run_hook(&[
        "wait-drain",
        "--admin-port",
        &admin,
        "--min",
        "0s",
        "--max",
        "20s",
    ])
    .await;
    assert!(ok && err.contains("no app connection open"), "{err}");
    sc.stop().await;
}
