//! A local CA and the serving certificates it signs (rcgen), and the rustls
//! server configuration they are served with (ring, TLS 1.2 and 1.3).
//!
//! One certificate profile for every server here — the sidecar's app-facing
//! listener, the webhook's self-managed CA, the test API server and the test
//! collector: the CA may sign leaves only (path length 0; key usages
//! certificate and CRL signing, digital signature); a leaf is no CA, for
//! server authentication (digital signature, key encipherment; client
//! authentication too on request), and names its issuer's key. What differs per server is the names, the subjects and the
//! validity, which the profiles carry.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// ALPN of a server speaking HTTP/2 and HTTP/1.1.
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Errors minting keys and certificates or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not mint or load a key or certificate.
    #[error("generating the {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration.
    #[error("building the TLS server configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

/// When a certificate is valid. Without one, rcgen's default (1975 to 4096)
/// applies: fine for certificates that live as long as one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The subject and validity of a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaProfile {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization, if any.
    pub organization: Option<String>,
    /// Validity; `None`: rcgen's default.
    pub validity: Option<Validity>,
}

impl CaProfile {
    /// A CA called `common_name`, no organization, default validity.
    pub fn new(common_name: impl Into<String>) -> Self {
        CaProfile {
            common_name: common_name.into(),
            organization: None,
            validity: None,
        }
    }

    // Rebuilt identically for minting and for signing, so a CA loaded back
    // from its key signs leaves that chain to the stored CA certificate.
    fn params(&self) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if let Some(v) = self.validity {
            p.not_before = v.not_before;
            p.not_after = v.not_after;
        }
        p
    }
}

/// The names, subject and validity of a serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafProfile {
    /// Subject alternative names: each an IP address SAN when it parses as
    /// one, a DNS name otherwise.
    pub names: Vec<String>,
    /// Subject common name; `None`: rcgen's default subject.
    pub common_name: Option<String>,
    /// Validity; `None`: rcgen's default.
    pub validity: Option<Validity>,
    /// Also for client authentication (mutual TLS), besides server
    /// authentication.
    pub client_auth: bool,
}

impl LeafProfile {
    /// A certificate for `names`, default subject and validity.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        LeafProfile {
            names: names.into_iter().map(Into::into).collect(),
            common_name: None,
            validity: None,
            client_auth: false,
        }
    }

    /// The same with subject common name `cn`.
    pub fn with_common_name(mut self, cn: impl Into<String>) -> Self {
        self.common_name = Some(cn.into());
        self
    }

    /// The same valid over `validity`.
    pub fn with_validity(mut self, validity: Validity) -> Self {
        self.validity = Some(validity);
        self
    }

    /// The same, usable as a client certificate too.
    pub fn with_client_auth(mut self) -> Self {
        self.client_auth = true;
        self
    }
}

/// A certificate and its new private key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    key_pkcs8: Vec<u8>,
}

impl Leaf {
    /// The private key for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf").finish_non_exhaustive()
    }
}

/// A CA's key with the subject it signs as: all that signing a leaf needs.
pub struct CaSigner(Issuer<'static, KeyPair>);

impl CaSigner {
    /// The CA described by `profile` whose key is `key_pem` (the CA
    /// certificate itself is not needed: a leaf carries its subject and key
    /// identifier, both given by the profile and the key).
    pub fn from_key_pem(profile: &CaProfile, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(gen_err("CA key from PEM"))?;
        Ok(CaSigner(Issuer::new(profile.params(), key)))
    }

    /// The CA key, PKCS#8 PEM (to store it; never log it).
    pub fn key_pem(&self) -> String {
        self.0.key().serialize_pem()
    }

    /// A new key and a serving certificate for it, signed by this CA.
    pub fn issue(&self, leaf: &LeafProfile) -> Result<Leaf, PkiError> {
        let mut p = CertificateParams::new(leaf.names.clone()).map_err(gen_err("serving names"))?;
        if let Some(cn) = &leaf.common_name {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn.as_str());
            p.distinguished_name = dn;
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if leaf.client_auth {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        p.use_authority_key_identifier_extension = true;
        if let Some(v) = leaf.validity {
            p.not_before = v.not_before;
            p.not_after = v.not_after;
        }
        let key = KeyPair::generate().map_err(gen_err("serving key"))?;
        let cert = p
            .signed_by(&key, &self.0)
            .map_err(gen_err("serving certificate"))?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_pkcs8: key.serialize_der(),
        })
    }
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner").finish_non_exhaustive()
    }
}

/// A freshly minted CA: its certificate and the signer.
#[derive(Debug)]
pub struct LocalCa {
    /// The CA certificate, PEM (what clients trust).
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Signs serving certificates.
    pub signer: CaSigner,
}

impl LocalCa {
    /// A new key and a self-signed CA certificate as `profile` describes.
    pub fn generate(profile: &CaProfile) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(gen_err("CA key"))?;
        let params = profile.params();
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("CA certificate"))?;
        Ok(LocalCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            signer: CaSigner(Issuer::new(params, key)),
        })
    }

    /// A serving certificate signed by this CA (see [`CaSigner::issue`]).
    pub fn issue(&self, leaf: &LeafProfile) -> Result<Leaf, PkiError> {
        self.signer.issue(leaf)
    }
}

/// The crypto provider of every TLS configuration here (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration serving `chain` (leaf first) with `key`, with the
/// given ALPN protocols and no client certificates.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, PkiError> {
    server_config_with_client_auth(None, chain, key, alpn)
}

/// [`server_config`], requiring client certificates that `verifier` accepts
/// when one is given.
pub fn server_config_with_client_auth(
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, PkiError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    };
    let mut cfg = builder.with_single_cert(chain, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn a_leaf_chains_to_its_ca_also_when_signed_from_the_stored_key() {
        let now = OffsetDateTime::now_utc();
        let profile = CaProfile {
            common_name: "test-ca".into(),
            organization: Some("mcp-warden".into()),
            validity: Some(Validity {
                not_before: now - time::Duration::hours(1),
                not_after: now + time::Duration::days(10),
            }),
        };
        let ca = LocalCa::generate(&profile).unwrap();
        let stored = CaSigner::from_key_pem(&profile, &ca.signer.key_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        for signer in [&ca.signer, &stored] {
            let leaf = signer
                .issue(&LeafProfile::new(["svc.ns.svc", "127.0.0.1"]).with_common_name("svc"))
                .unwrap();
            for name in ["svc.ns.svc", "127.0.0.1"] {
                verifier
                    .verify_server_cert(
                        &leaf.cert_der,
                        &[],
                        &rustls_pki_types::ServerName::try_from(name).unwrap(),
                        &[],
                        rustls_pki_types::UnixTime::now(),
                    )
                    .unwrap();
            }
            server_config(vec![leaf.cert_der.clone()], leaf.key_der(), ALPN_H2_HTTP1).unwrap();
        }
    }

    #[test]
    fn a_client_certificate_only_on_request() {
        let ca = LocalCa::generate(&CaProfile::new("test-ca")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let verify = |leaf: &Leaf| {
            verifier.verify_client_cert(&leaf.cert_der, &[], rustls_pki_types::UnixTime::now())
        };
        let client = ca
            .issue(&LeafProfile::new(["sidecar"]).with_client_auth())
            .unwrap();
        verify(&client).unwrap();
        let server_only = ca.issue(&LeafProfile::new(["sidecar"])).unwrap();
        assert!(verify(&server_only).is_err());
    }
}
