//! Serving certificates: a rustls `ResolvesServerCert` whose key pair can be
//! swapped while the server runs, and a watcher that reloads it from files.
//!
//! cert-manager (and the kubelet, for Secret volumes) replace the files by
//! swapping a `..data` symlink, so the watcher looks at the directories and
//! re-reads on any event; a poll covers file systems where inotify says
//! nothing. A pair that does not parse or does not match (a half-written
//! rotation) is ignored and the previous certificate keeps serving.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // The watcher lives as long as this task; its callback runs on
        // notify's thread and only nudges the loop.
        let _watcher = {
            use notify::Watcher;
            let tx = tx.clone();
            let handler = move |res: notify::Result<notify::Event>| {
                // Our own reads of the files raise access events (open,
                // close): reacting to those would reload in a loop forever.
                if let Ok(ev) = res
                    && matches!(ev.kind, notify::EventKind::Access(_))
                {
                    return;
                }
                let _ = tx.try_send(());
            };
            match notify::recommended_watcher(handler) {
                Ok(mut w) => {
                    let mut dirs: Vec<PathBuf> = Vec::new();
                    for f in [&self.cert, &self.key] {
                        let dir = f
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| PathBuf::from("."));
                        if !dirs.contains(&dir) {
                            dirs.push(dir);
                        }
                    }
                    for d in &dirs {
                        if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
                            tracing::warn!(dir = %d.display(), error = %e, "cannot watch certificate directory; polling only");
                        }
                    }
                    Some(w)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no file watcher; polling certificate files only");
                    None
                }
            }
        };
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = rx.recv() => {}
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
