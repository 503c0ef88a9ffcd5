//! Serving certificates: a rustls `ResolvesServerCert` whose key pair can be
//! swapped while the server runs, and a watcher that reloads it from files.
//!
//! cert-manager (and the kubelet, for Secret volumes) replace the files by
//! swapping a `..data` symlink, so the watcher re-reads on any event in their
//! directories and on a poll ([`mcp_warden_io::watch::FileWatch`]). A pair
//! that does not parse or does not match (a half-written
//! rotation) is ignored and the previous certificate keeps serving.

use arc_swap::ArcSwap;
use mcp_warden_io::pki::{ALPN_H2_HTTP1, provider};
use mcp_warden_io::watch::FileWatch;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors loading a certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The certificate PEM holds no certificate or does not parse.
    #[error("certificate {what}: {message}")]
    Cert { what: String, message: String },
    /// The private key PEM does not parse or does not match the certificate.
    #[error("private key {what}: {message}")]
    Key { what: String, message: String },
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Parses a PEM certificate chain and private key into a rustls key pair.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            what: what.to_string(),
            message: "no CERTIFICATE block".to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Key {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// The certificate currently served; swap it with [`CertStore::set`].
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// A store serving the PEM pair.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<Self>, TlsError> {
        Ok(Self::new(certified_key(cert_pem, key_pem, "in memory")?))
    }

    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate chain currently served (leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// A rustls server configuration resolving through this store (h2 and
    /// http/1.1 via ALPN).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = ALPN_H2_HTTP1.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Certificate and key files, reloaded when they change.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
    /// How often to re-read the files even without a file-system event.
    pub poll_interval: Duration,
}

impl CertFiles {
    /// Reads and parses both files.
    pub fn load(&self) -> Result<(CertifiedKey, Vec<u8>), TlsError> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let ck = certified_key(&cert, &key, &self.cert.display().to_string())?;
        let mut fingerprint = cert;
        fingerprint.extend_from_slice(&key);
        Ok((ck, fingerprint))
    }

    /// Keeps `store` in step with the files until `shutdown` resolves.
    /// `loaded` is the content (cert ++ key) already in the store.
    pub async fn watch(
        self,
        store: Arc<CertStore>,
        mut loaded: Vec<u8>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut changes = FileWatch::new(
            &[&self.cert, &self.key],
            "certificate",
            self.poll_interval,
            Duration::ZERO,
        );
        loop {
            tokio::select! {
                _ = changes.changed() => {}
                _ = shutdown.changed() => return,
            }
            match self.load() {
                Ok((ck, fp)) if fp != loaded => {
                    store.set(ck);
                    loaded = fp;
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "certificate files not usable; keeping the current certificate");
                }
            }
        }
    }
}
