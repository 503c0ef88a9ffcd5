//! kube-apisim's own CA and serving certificate (rcgen), and the rustls
//! server configuration (ALPN h2 and http/1.1).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::IpAddr;
use std::sync::Arc;

/// Errors building the certificates or the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating {what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the rustls server config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A CA certificate (PEM) and a rustls config serving a leaf it signed.
pub struct ServerTls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Rcgen { what, source }
}

/// The DNS names and IPs the serving certificate covers.
pub fn subject_alt_names(extra_ip: Option<IpAddr>) -> (Vec<String>, Vec<IpAddr>) {
    let dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if let Some(ip) = extra_ip
        && !ips.contains(&ip)
        && !ip.is_unspecified()
    {
        ips.push(ip);
    }
    (dns, ips)
}

/// Creates a fresh CA and a serving certificate for the usual in-cluster
/// names, loopback addresses and `extra_ip` (the listen address).
pub fn generate(extra_ip: Option<IpAddr>) -> Result<ServerTls, TlsError> {
    let ca_key = KeyPair::generate().map_err(rc("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA params"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apisim-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(rc("CA certificate"))?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let (dns, ips) = subject_alt_names(extra_ip);
    let leaf_key = KeyPair::generate().map_err(rc("serving key"))?;
    let mut leaf = CertificateParams::new(dns).map_err(rc("serving params"))?;
    leaf.subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(rc("serving certificate"))?;

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
