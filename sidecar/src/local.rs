//! The app-side credentials: a local CA, a serving certificate for every name
//! the app may use to reach the API server, and a random local token.
//!
//! They are created fresh at every start and written into `--local-dir` as
//! `ca.crt`, `token` and `namespace` — the three files of a service-account
//! mount — each atomically (temporary file + rename) so the app never reads a
//! half-written file. The CA key never leaves memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use mcp_warden_io::pki::{ALPN_H2_HTTP1, CaProfile, LeafProfile, LocalCa, PkiError, server_config};
use rand::RngCore;
use rustls::ServerConfig;
use subtle::ConstantTimeEq;

/// Names in the serving certificate besides `kubernetes.default.svc.<cluster
/// domain>` (see [`serving_names`]): every way in-cluster clients address the
/// API server.
pub const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// Every name of the serving certificate for `cluster_domain`.
pub fn serving_names(cluster_domain: &str) -> Vec<String> {
    let mut names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
    names.push(format!(
        "kubernetes.default.svc.{}",
        cluster_domain.trim_end_matches('.')
    ));
    names
}

/// The files the sidecar writes into `--local-dir`, and nothing else.
pub const LOCAL_FILES: &[&str] = &["ca.crt", "token", "namespace"];

/// Errors creating or writing the local credentials.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("local CA and serving certificate: {0}")]
    Pki(#[from] PkiError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The token the app must present. Compared in constant time.
#[derive(Clone)]
pub struct LocalToken(Arc<str>);

impl LocalToken {
    /// A fresh random 256-bit token, base64url without padding.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        LocalToken(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(b)
                .into(),
        )
    }

    /// The token text (to write into the app's file; never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a client presented.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // `ct_eq` on slices of different length returns false without
        // looking at content; the length of the token is not a secret.
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

impl std::fmt::Debug for LocalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalToken(<redacted>)")
    }
}

/// Everything created at start.
pub struct LocalCredentials {
    /// PEM of the local CA, written as `ca.crt`.
    pub ca_pem: String,
    /// TLS configuration of the app-facing listener (ALPN h2, http/1.1).
    pub server_config: Arc<ServerConfig>,
    /// The local token.
    pub token: LocalToken,
}

impl std::fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCredentials").finish_non_exhaustive()
    }
}

/// Creates a CA, a serving certificate signed by it (for
/// [`serving_names`]`(cluster_domain)`) and a token.
pub fn generate(cluster_domain: &str) -> Result<LocalCredentials, LocalError> {
    let ca = LocalCa::generate(&CaProfile::new("mcp-warden local CA"))?;
    let leaf =
        ca.issue(&LeafProfile::new(serving_names(cluster_domain)).with_common_name("kubernetes"))?;
    let server_config = server_config(vec![leaf.cert_der.clone()], leaf.key_der(), ALPN_H2_HTTP1)?;
    Ok(LocalCredentials {
        ca_pem: ca.cert_pem,
        server_config: Arc::new(server_config),
        token: LocalToken::generate(),
    })
}

/// Writes `ca.crt`, `token` (no trailing newline: the Python client sends the
/// file verbatim) and `namespace` into `dir`, each atomically. With `app_uid`
/// the files belong to that uid with mode 0600; otherwise they are 0644.
pub fn write_files(
    dir: &Path,
    creds: &LocalCredentials,
    namespace: &str,
    app_uid: Option<u32>,
) -> Result<(), LocalError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    for (name, content) in [
        ("ca.crt", creds.ca_pem.as_bytes()),
        ("token", creds.token.expose().as_bytes()),
        ("namespace", namespace.as_bytes()),
    ] {
        let target = dir.join(name);
        // A dot-file in the same directory, so the rename is atomic; it is
        // removed or renamed before this function returns.
        let tmp = dir.join(format!(".{name}.mcp-warden-tmp"));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let _ = std::fs::remove_file(&tmp);
            let mode = if app_uid.is_some() { 0o600 } else { 0o644 };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(content)?;
            f.sync_all()?;
            // The umask may have narrowed the mode given at creation.
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
            if let Some(uid) = app_uid {
                std::os::unix::fs::chown(&tmp, Some(uid), None)?;
            }
            std::fs::rename(&tmp, &target)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(werr(&target)(e));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_is_256_bit_base64url() {
        let t = LocalToken::generate();
        assert_eq!(t.expose().len(), 43);
        assert!(
            t.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(t.matches(t.expose().as_bytes()));
        assert!(!t.matches(b"nope"));
        assert_ne!(t.expose(), LocalToken::generate().expose());
    }

    #[test]
    fn files_are_written_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let creds = generate("cluster.local").unwrap();
        write_files(dir.path(), &creds, "team-a", None).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "namespace", "token"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token")).unwrap(),
            creds.token.expose()
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("namespace")).unwrap(),
            "team-a"
        );
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!ca.contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // A second start replaces the files.
        let creds2 = generate("cluster.local").unwrap();
        write_files(dir.path(), &creds2, "team-a", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token")).unwrap(),
            creds2.token.expose()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
