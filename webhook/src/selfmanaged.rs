//! Self-managed TLS: the webhook is its own small CA.
//!
//! The pure part decides and mints: [`ensure`] takes what the Secret holds
//! (if anything) and returns the material to serve, creating a CA (10 years)
//! and a serving certificate (1 year) for the Service's DNS names
//! ([`mcp_warden_io::pki`]), and renewing the serving certificate 90 days
//! before it expires with the same CA — so the caBundle stays valid across
//! renewals.
//!
//! The I/O shell ([`sync_once`], [`maintain`]) keeps that material in one
//! Secret (create-or-read, with optimistic concurrency, so all replicas serve
//! certificates of the same CA) and writes the CA bundle into the webhook's
//! own MutatingWebhookConfiguration.

use crate::tls::{CertStore, certified_key};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use mcp_warden_io::pki::{CaProfile, CaSigner, LeafProfile, LocalCa, PkiError, Validity};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Errors of the self-managed mode.
#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    /// A key or certificate could not be minted or loaded.
    #[error("certificate generation: {0}")]
    Pki(#[from] PkiError),
    /// A Kubernetes API call failed.
    #[error("kubernetes {action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        source: kube::Error,
    },
    /// An object kept changing under us.
    #[error("{0} kept changing; giving up this round")]
    Conflict(String),
    /// The object to publish the CA bundle into does not exist.
    #[error("{0} not found: install the MutatingWebhookConfiguration first")]
    Missing(String),
    /// The minted material does not load into rustls.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Where the self-managed mode keeps and publishes its certificates.
#[derive(Debug, Clone)]
pub struct SelfManagedConfig {
    /// The webhook's Service name (certificate DNS names).
    pub service_name: String,
    /// The webhook's namespace (Service and Secret).
    pub service_namespace: String,
    /// MutatingWebhookConfiguration whose caBundle is kept current.
    pub webhook_config_name: String,
    /// Secret holding the CA and serving certificate.
    pub secret_name: String,
    /// How often to re-check the Secret and the caBundle.
    pub resync: Duration,
}

const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;
const LEAF_RENEW_BEFORE_DAYS: i64 = 90;
const CA_RENEW_BEFORE_DAYS: i64 = 365;
use mcp_warden_shared::contract::{
    CA_NOT_AFTER_ANNOTATION, DNS_NAMES_ANNOTATION, TLS_NOT_AFTER_ANNOTATION as NOT_AFTER_ANNOTATION,
};

/// CA and serving certificate as PEM, with their expiry (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
    pub ca_not_after: i64,
    pub tls_not_after: i64,
    /// DNS names of the serving certificate, comma-joined (to notice a
    /// renamed Service).
    pub dns_names: String,
}

/// The Service's in-cluster DNS names.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The CA's subject and validity from `now`. Also what a CA loaded back
/// from the Secret signs as, so its leaves chain to the stored certificate.
fn ca_profile(now: OffsetDateTime) -> CaProfile {
    CaProfile {
        common_name: "mcp-warden-webhook-ca".to_string(),
        organization: Some("mcp-warden".to_string()),
        validity: Some(Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(CA_VALIDITY_DAYS),
        }),
    }
}

fn new_ca(now: OffsetDateTime) -> Result<(String, String, i64), SelfManagedError> {
    let profile = ca_profile(now);
    let ca = LocalCa::generate(&profile)?;
    let not_after = profile.validity.map_or(0, |v| v.not_after.unix_timestamp());
    Ok((ca.cert_pem, ca.signer.key_pem(), not_after))
}

fn issue_leaf(
    ca_key_pem: &str,
    dns_names: &[String],
    now: OffsetDateTime,
) -> Result<(String, String, i64), SelfManagedError> {
    let ca = CaSigner::from_key_pem(&ca_profile(now), ca_key_pem)?;
    let validity = Validity {
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(LEAF_VALIDITY_DAYS),
    };
    let leaf = ca.issue(
        &LeafProfile::new(dns_names.iter().cloned())
            .with_common_name(dns_names.get(2).cloned().unwrap_or_default())
            .with_validity(validity),
    )?;
    Ok((
        leaf.cert_pem,
        leaf.key_pem,
        validity.not_after.unix_timestamp(),
    ))
}

/// The material to serve given what is stored: `(material, changed)`. A
/// missing or unusable store, an expiring CA or renamed Service mean new
/// material; an expiring serving certificate means a new leaf from the same CA.
pub fn ensure(
    existing: Option<Material>,
    dns_names: &[String],
    now: OffsetDateTime,
) -> Result<(Material, bool), SelfManagedError> {
    let now_s = now.unix_timestamp();
    let day = 86_400;
    let joined = dns_names.join(",");
    if let Some(m) = existing {
        let ca_ok = m.ca_not_after - now_s > CA_RENEW_BEFORE_DAYS * day
            && CaSigner::from_key_pem(&ca_profile(now), &m.ca_key_pem).is_ok();
        if ca_ok {
            let leaf_ok = m.tls_not_after - now_s > LEAF_RENEW_BEFORE_DAYS * day
                && m.dns_names == joined
                && certified_key(
                    m.tls_cert_pem.as_bytes(),
                    m.tls_key_pem.as_bytes(),
                    "Secret",
                )
                .is_ok();
            if leaf_ok {
                return Ok((m, false));
            }
            let (tls_cert_pem, tls_key_pem, tls_not_after) =
                issue_leaf(&m.ca_key_pem, dns_names, now)?;
            return Ok((
                Material {
                    tls_cert_pem,
                    tls_key_pem,
                    tls_not_after,
                    dns_names: joined,
                    ..m
                },
                true,
            ));
        }
    }
    let (ca_cert_pem, ca_key_pem, ca_not_after) = new_ca(now)?;
    let (tls_cert_pem, tls_key_pem, tls_not_after) = issue_leaf(&ca_key_pem, dns_names, now)?;
    Ok((
        Material {
            ca_cert_pem,
            ca_key_pem,
            tls_cert_pem,
            tls_key_pem,
            ca_not_after,
            tls_not_after,
            dns_names: joined,
        },
        true,
    ))
}

impl Material {
    /// Reads the material from a Secret; `None` if anything is missing.
    pub fn from_secret(s: &Secret) -> Option<Material> {
        let data = s.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let ann = s.metadata.annotations.as_ref()?;
        let num = |k: &str| ann.get(k).and_then(|v| v.parse::<i64>().ok());
        Some(Material {
            ca_cert_pem: text("ca.crt")?,
            ca_key_pem: text("ca.key")?,
            tls_cert_pem: text("tls.crt")?,
            tls_key_pem: text("tls.key")?,
            ca_not_after: num(CA_NOT_AFTER_ANNOTATION)?,
            tls_not_after: num(NOT_AFTER_ANNOTATION)?,
            dns_names: ann.get(DNS_NAMES_ANNOTATION).cloned().unwrap_or_default(),
        })
    }

    /// Writes the material into `s` (data and annotations).
    pub fn to_secret(&self, s: &mut Secret) {
        let data = BTreeMap::from([
            (
                "ca.crt".to_string(),
                ByteString(self.ca_cert_pem.clone().into_bytes()),
            ),
            (
                "ca.key".to_string(),
                ByteString(self.ca_key_pem.clone().into_bytes()),
            ),
            (
                "tls.crt".to_string(),
                ByteString(self.tls_cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(self.tls_key_pem.clone().into_bytes()),
            ),
        ]);
        s.data = Some(data);
        s.string_data = None;
        s.type_ = Some("Opaque".to_string());
        let ann = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(
            CA_NOT_AFTER_ANNOTATION.to_string(),
            self.ca_not_after.to_string(),
        );
        ann.insert(
            NOT_AFTER_ANNOTATION.to_string(),
            self.tls_not_after.to_string(),
        );
        ann.insert(DNS_NAMES_ANNOTATION.to_string(), self.dns_names.clone());
    }
}

fn kube_err<'a>(
    action: &'static str,
    object: &'a str,
) -> impl Fn(kube::Error) -> SelfManagedError + 'a {
    move |source| SelfManagedError::Kube {
        action,
        object: object.to_string(),
        source,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Reads (or creates) the Secret, renewing as needed; returns what to serve.
pub async fn sync_once(
    client: &kube::Client,
    cfg: &SelfManagedConfig,
) -> Result<Material, SelfManagedError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.service_namespace);
    let names = service_dns_names(&cfg.service_name, &cfg.service_namespace);
    let obj = format!("secret {}/{}", cfg.service_namespace, cfg.secret_name);
    for _ in 0..5 {
        let current = secrets
            .get_opt(&cfg.secret_name)
            .await
            .map_err(kube_err("get", &obj))?;
        match current {
            None => {
                let (m, _) = ensure(None, &names, OffsetDateTime::now_utc())?;
                let mut s = Secret {
                    metadata: ObjectMeta {
                        name: Some(cfg.secret_name.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Secret::default()
                };
                m.to_secret(&mut s);
                match secrets.create(&PostParams::default(), &s).await {
                    Ok(_) => return Ok(m),
                    // Another replica won the race: serve what it stored.
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(kube_err("create", &obj)(e)),
                }
            }
            Some(mut s) => {
                let (m, changed) =
                    ensure(Material::from_secret(&s), &names, OffsetDateTime::now_utc())?;
                if !changed {
                    return Ok(m);
                }
                m.to_secret(&mut s);
                match secrets
                    .replace(&cfg.secret_name, &PostParams::default(), &s)
                    .await
                {
                    Ok(_) => return Ok(m),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(kube_err("update", &obj)(e)),
                }
            }
        }
    }
    Err(SelfManagedError::Conflict(obj))
}

/// A JSON merge patch that sets `ca_pem` as the caBundle of every webhook
/// in `mwc`; `None` when all are current. It carries the whole `webhooks`
/// list (a merge patch replaces lists) and the object's `resourceVersion`,
/// so a concurrent change makes it fail with a conflict instead of being
/// overwritten; the next round re-reads and tries again.
pub fn ca_bundle_patch(mwc: &serde_json::Value, ca_pem: &str) -> Option<serde_json::Value> {
    let want = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let hooks = mwc.get("webhooks").and_then(serde_json::Value::as_array)?;
    let stale = hooks.iter().any(|h| {
        h.pointer("/clientConfig/caBundle")
            .and_then(serde_json::Value::as_str)
            != Some(want.as_str())
    });
    if !stale {
        return None;
    }
    let mut hooks = hooks.clone();
    for h in &mut hooks {
        if let Some(cc) = h
            .get_mut("clientConfig")
            .and_then(serde_json::Value::as_object_mut)
        {
            cc.insert(
                "caBundle".to_string(),
                serde_json::Value::String(want.clone()),
            );
        }
    }
    let rv = mwc
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Some(serde_json::json!({ "metadata": { "resourceVersion": rv }, "webhooks": hooks }))
}

/// Writes the CA bundle into the webhook's MutatingWebhookConfiguration and,
/// if there is one of the same name (AccessRequest validation), its
/// ValidatingWebhookConfiguration.
pub async fn publish_ca_bundle(
    client: &kube::Client,
    cfg: &SelfManagedConfig,
    ca_pem: &str,
) -> Result<(), SelfManagedError> {
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    publish_to(
        mutating,
        &cfg.webhook_config_name,
        "mutatingwebhookconfiguration",
        ca_pem,
        true,
    )
    .await?;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    publish_to(
        validating,
        &cfg.webhook_config_name,
        "validatingwebhookconfiguration",
        ca_pem,
        false,
    )
    .await
}

async fn publish_to<K>(
    api: Api<K>,
    name: &str,
    kind: &str,
    ca_pem: &str,
    required: bool,
) -> Result<(), SelfManagedError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj = format!("{kind} {name}");
    for _ in 0..5 {
        let current = api.get_opt(name).await.map_err(kube_err("get", &obj))?;
        let Some(current) = current else {
            if required {
                return Err(SelfManagedError::Missing(obj));
            }
            return Ok(());
        };
        let v = serde_json::to_value(&current).unwrap_or_default();
        let Some(patch) = ca_bundle_patch(&v, ca_pem) else {
            return Ok(());
        };
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(object = %obj, "caBundle updated");
                return Ok(());
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(kube_err("patch", &obj)(e)),
        }
    }
    Err(SelfManagedError::Conflict(obj))
}

/// First sync at start-up: returns a store serving the Secret's certificate.
pub async fn bootstrap(
    client: &kube::Client,
    cfg: &SelfManagedConfig,
) -> Result<(Arc<CertStore>, Material), SelfManagedError> {
    let m = sync_once(client, cfg).await?;
    let store = CertStore::new(certified_key(
        m.tls_cert_pem.as_bytes(),
        m.tls_key_pem.as_bytes(),
        "Secret",
    )?);
    publish_ca_bundle(client, cfg, &m.ca_cert_pem).await?;
    Ok((store, m))
}

/// Re-syncs every `cfg.resync` until shutdown: renews, reloads what another
/// replica renewed, and re-publishes the CA bundle if someone reset it.
pub async fn maintain(
    client: kube::Client,
    cfg: SelfManagedConfig,
    store: Arc<CertStore>,
    mut current: Material,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cfg.resync);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match sync_once(&client, &cfg).await {
            Ok(m) => {
                if m != current {
                    match certified_key(
                        m.tls_cert_pem.as_bytes(),
                        m.tls_key_pem.as_bytes(),
                        "Secret",
                    ) {
                        Ok(ck) => {
                            store.set(ck);
                            tracing::info!("self-managed serving certificate reloaded");
                            current = m;
                        }
                        Err(e) => tracing::warn!(error = %e, "self-managed certificate unusable"),
                    }
                }
                if let Err(e) = publish_ca_bundle(&client, &cfg, &current.ca_cert_pem).await {
                    tracing::warn!(error = %e, "cannot publish caBundle");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "self-managed TLS sync failed; keeping the current certificate")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renews_leaf_with_same_ca_and_keeps_fresh_material() {
        let names = service_dns_names("mcp-warden-webhook", "mcp-warden");
        let now = OffsetDateTime::now_utc();
        let (m, changed) = ensure(None, &names, now).unwrap();
        assert!(changed);
        let (same, changed) = ensure(Some(m.clone()), &names, now).unwrap();
        assert!(!changed);
        assert_eq!(same, m);
        let later = now + time::Duration::days(300);
        let (renewed, changed) = ensure(Some(m.clone()), &names, later).unwrap();
        assert!(changed);
        assert_eq!(renewed.ca_cert_pem, m.ca_cert_pem);
        assert_ne!(renewed.tls_cert_pem, m.tls_cert_pem);
        let renamed = service_dns_names("other", "mcp-warden");
        let (r2, changed) = ensure(Some(m.clone()), &renamed, now).unwrap();
        assert!(changed && r2.ca_cert_pem == m.ca_cert_pem);
        let mut s = Secret::default();
        renewed.to_secret(&mut s);
        assert_eq!(Material::from_secret(&s), Some(renewed));
    }

    #[test]
    fn ca_bundle_patch_only_for_stale_entries() {
        let ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
        let mwc = serde_json::json!({ "webhooks": [
            { "name": "a", "clientConfig": { "caBundle": b64 } },
            { "name": "b", "clientConfig": {} } ] });
        let mut mwc = mwc;
        mwc["metadata"] = serde_json::json!({ "resourceVersion": "42" });
        let p = ca_bundle_patch(&mwc, ca).unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["webhooks"].as_array().unwrap().len(), 2);
        assert_eq!(p["webhooks"][1]["name"], "b");
        assert_eq!(p["webhooks"][1]["clientConfig"]["caBundle"], b64);
        let all = serde_json::json!({ "webhooks": [ { "name": "a", "clientConfig": { "caBundle": b64 } } ] });
        assert!(ca_bundle_patch(&all, ca).is_none());
    }
}
