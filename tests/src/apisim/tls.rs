//! kube-apisim's own CA and serving certificate ([`mcp_warden_io::pki`]),
//! and the rustls server configuration (ALPN h2 and http/1.1).

use mcp_warden_io::pki::{ALPN_H2_HTTP1, CaProfile, LeafProfile, LocalCa, PkiError, server_config};
use std::net::IpAddr;
use std::sync::Arc;

/// A CA certificate (PEM) and a rustls config serving a leaf it signed.
pub struct ServerTls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
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
pub fn generate(extra_ip: Option<IpAddr>) -> Result<ServerTls, PkiError> {
    let ca = LocalCa::generate(&CaProfile::new("kube-apisim-ca"))?;
    let (dns, ips) = subject_alt_names(extra_ip);
    let names = dns.into_iter().chain(ips.iter().map(IpAddr::to_string));
    let leaf = ca.issue(&LeafProfile::new(names).with_common_name("kube-apiserver"))?;
    let chain = vec![leaf.cert_der.clone(), ca.cert_der.clone()];
    let config = server_config(chain, leaf.key_der(), ALPN_H2_HTTP1)?;
    Ok(ServerTls {
        ca_pem: ca.cert_pem,
        config: Arc::new(config),
    })
}
