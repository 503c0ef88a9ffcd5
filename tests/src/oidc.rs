//! A test OIDC issuer: ES256 keys made at start (rcgen), discovery
//! (`/.well-known/openid-configuration`) and the JWKS (`/jwks`) served over
//! HTTPS on loopback with a certificate from `io::pki`, and tokens it signs
//! with any claims (expired, for another audience, for another issuer...).
//!
//! It counts JWKS fetches ([`TestIssuer::jwks_fetches`]) and can rotate its
//! keys ([`TestIssuer::rotate`]) or publish a set without a key that still
//! signs, for the sidecar's key refresh tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_warden_io::pki::{CaProfile, LeafProfile, LocalCa, server_config};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{Value, json};

/// The audience tokens are minted for by default.
pub const AUDIENCE: &str = "mcp-warden-test";

/// One signing key: its id, the private key (PKCS#8) and the public JWK.
pub struct SigningKey {
    /// `kid`.
    pub kid: String,
    der: Vec<u8>,
    /// The public key as a JWK.
    pub jwk: Value,
}

impl SigningKey {
    /// A new ES256 key named `kid`.
    pub fn generate(kid: &str) -> Result<Self> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let raw = kp.public_key_raw();
        anyhow::ensure!(raw.len() == 65 && raw[0] == 4, "uncompressed P-256 point");
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Ok(SigningKey {
            kid: kid.to_string(),
            der: kp.serialize_der(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                "kid": kid, "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
            }),
        })
    }
}

struct State {
    issuer: String,
    keys: Vec<Value>,
}

/// The running issuer (stopped on drop).
pub struct TestIssuer {
    url: String,
    ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    jwks_fetches: Arc<AtomicUsize>,
    signing: Mutex<Vec<SigningKey>>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestIssuer {
    /// Starts an issuer on a loopback port with one key, `key-1`.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = LocalCa::generate(&CaProfile::new("test issuer CA"))?;
        let leaf = ca.issue(&LeafProfile::new(["127.0.0.1"]))?;
        let ca_file = dir.path().join("issuer-ca.crt");
        std::fs::write(&ca_file, &ca.cert_pem)?;
        let cfg = server_config(vec![leaf.cert_der.clone()], leaf.key_der(), &[b"http/1.1"])?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr: SocketAddr = std_listener.local_addr()?;
        let url = format!("https://127.0.0.1:{}", addr.port());
        let key = SigningKey::generate("key-1")?;
        let state = Arc::new(Mutex::new(State {
            issuer: url.clone(),
            keys: vec![key.jwk.clone()],
        }));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (st, fetches) = (state.clone(), jwks_fetches.clone());
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
                tokio::pin!(stop_rx);
                loop {
                    let tcp = tokio::select! {
                        _ = &mut stop_rx => return,
                        r = listener.accept() => match r { Ok((t, _)) => t, Err(_) => continue },
                    };
                    let (acceptor, st, fetches) = (acceptor.clone(), st.clone(), fetches.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (st, fetches) = (st.clone(), fetches.clone());
                            async move {
                                let (code, body) = {
                                    let s = match st.lock() {
                                        Ok(g) => g,
                                        Err(p) => p.into_inner(),
                                    };
                                    match req.uri().path() {
                                        "/.well-known/openid-configuration" => (
                                            200,
                                            json!({"issuer": s.issuer, "jwks_uri": format!("{}/jwks", s.issuer)}),
                                        ),
                                        "/jwks" => {
                                            fetches.fetch_add(1, Ordering::SeqCst);
                                            (200, json!({"keys": s.keys}))
                                        }
                                        _ => (404, json!({})),
                                    }
                                };
                                let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                                *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        Ok(TestIssuer {
            url,
            ca_file,
            state,
            jwks_fetches,
            signing: Mutex::new(vec![key]),
            _dir: dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The issuer URL (`iss`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA file that signs the issuer's serving certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The sidecar flags that trust this issuer for [`AUDIENCE`], with
    /// `groups` as the groups claim and no user name prefix.
    pub fn sidecar_args(&self) -> Vec<String> {
        vec![
            format!("--oidc-issuer-url={}", self.url),
            format!("--oidc-audience={AUDIENCE}"),
            format!("--oidc-ca-file={}", self.ca_file.display()),
            "--oidc-username-claim=email".into(),
            "--oidc-groups-claim=groups".into(),
            "--oidc-groups-prefix=oidc:".into(),
        ]
    }

    /// A new key `kid` that signs from now on and is published alone (the
    /// old keys are withdrawn): a key rotation.
    pub fn rotate(&self, kid: &str) -> Result<()> {
        let key = SigningKey::generate(kid)?;
        self.lock_state().keys = vec![key.jwk.clone()];
        self.lock_signing().insert(0, key);
        Ok(())
    }

    /// A new key `kid` that signs from now on but is not published.
    pub fn sign_with_unpublished(&self, kid: &str) -> Result<()> {
        let key = SigningKey::generate(kid)?;
        self.lock_signing().insert(0, key);
        Ok(())
    }

    /// The published JWKS as a file's content (for `--oidc-jwks-file`).
    pub fn jwks_json(&self) -> String {
        json!({"keys": self.lock_state().keys}).to_string()
    }

    /// A token for `email` in `groups`, valid for an hour, for [`AUDIENCE`].
    pub fn token(&self, email: &str, groups: &[&str]) -> Result<String> {
        self.token_with(self.claims(email, groups))
    }

    /// The default claims of [`TestIssuer::token`], to change before
    /// [`TestIssuer::token_with`].
    pub fn claims(&self, email: &str, groups: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": self.url, "sub": format!("sub-{email}"), "aud": AUDIENCE,
            "email": email, "email_verified": true, "groups": groups,
            "iat": now, "nbf": now - 5, "exp": now + 3600,
        })
    }

    /// `claims` signed with the current key, its `kid` in the header.
    pub fn token_with(&self, claims: Value) -> Result<String> {
        let kid = self.lock_signing().first().map(|k| k.kid.clone());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid;
        self.token_with_header(header, claims)
    }

    /// `claims` signed with the current key under `header` as given.
    pub fn token_with_header(&self, header: Header, claims: Value) -> Result<String> {
        let keys = self.lock_signing();
        let key = keys.first().context("a signing key")?;
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&key.der),
        )?)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn lock_signing(&self) -> std::sync::MutexGuard<'_, Vec<SigningKey>> {
        match self.signing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `claims` unsigned with `alg: none` (what no verifier may accept).
pub fn unsigned_token(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}
