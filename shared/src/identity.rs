//! Who the sidecar acts for: the pod's service account, read from the claims
//! of its own kubelet-issued token.
//!
//! The signature is not checked: the sidecar reads the token the kubelet wrote
//! into its own volume, and the API server verifies it on every forwarded
//! request anyway. The identity is used for policy (`serviceAccounts`) and
//! recorded as the audit event's `user`, the way kube-apiserver's
//! service-account authenticator would report it.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::audit::UserInfo;

/// The `system:serviceaccount:` prefix of service-account user names.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// A request's identity, as kube-apiserver would authenticate the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `system:serviceaccount:NS:NAME` for service accounts.
    pub username: String,
    /// The service account's UID (empty when the token does not carry it).
    pub uid: String,
    /// `system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`.
    pub groups: Vec<String>,
    /// `(namespace, name)` of the service account.
    pub service_account: Option<(String, String)>,
    /// Name of the pod the token is bound to.
    pub pod_name: Option<String>,
    /// UID of the pod the token is bound to.
    pub pod_uid: Option<String>,
    /// Name of the node the token is bound to.
    pub node_name: Option<String>,
    /// Token ID (`jti`), if any.
    pub token_id: Option<String>,
    /// The `extra` map kube-apiserver attaches to service-account users
    /// (`authentication.kubernetes.io/pod-name`, `.../pod-uid`,
    /// `.../node-name`, `.../node-uid`, `.../credential-id`).
    pub extra: BTreeMap<String, Vec<String>>,
    /// The person the request is made for, when the app presented a
    /// verified end-user token instead of its local token (policy `users:`
    /// and `groups:` match it; `None` matches neither).
    pub end_user: Option<crate::enduser::EndUser>,
}

/// Why a token could not be read as a service-account identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the token is not a JWT (expected three dot-separated parts, found {parts})")]
    NotAJwt { parts: usize },
    #[error("the token's claims are not valid base64url: {why}")]
    BadBase64 { why: String },
    #[error("the token's claims are not a JSON object: {why}")]
    BadClaims { why: String },
    #[error("the token has no service-account subject (sub {sub:?})")]
    NotAServiceAccount { sub: String },
    #[error("the token's claims disagree: {why}")]
    Inconsistent { why: String },
    #[error("{input:?} is not NAMESPACE/NAME")]
    BadServiceAccountRef { input: String },
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    jti: Option<String>,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes_io: Option<KubeClaims>,
    // Legacy (secret-based) service-account tokens.
    #[serde(rename = "kubernetes.io/serviceaccount/namespace", default)]
    legacy_namespace: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name", default)]
    legacy_name: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid", default)]
    legacy_uid: Option<String>,
}

#[derive(Deserialize, Default)]
struct KubeClaims {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    serviceaccount: Option<Ref>,
    #[serde(default)]
    pod: Option<Ref>,
    #[serde(default)]
    node: Option<Ref>,
}

#[derive(Deserialize, Default)]
struct Ref {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

impl Identity {
    /// A service-account identity from its namespace and name, with the
    /// groups kube-apiserver gives every service account (for tests and the CLI).
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            username: format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
            groups: service_account_groups(namespace),
            service_account: Some((namespace.to_string(), name.to_string())),
            ..Self::default()
        }
    }

    /// Parse `NAMESPACE/NAME` (as given to `--service-account`).
    pub fn from_service_account_ref(reference: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::BadServiceAccountRef {
            input: reference.to_string(),
        };
        let (ns, name) = reference.split_once('/').ok_or_else(bad)?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Self::service_account(ns, name))
    }

    /// A plain user (for `policy eval --as USER`): the user's name and
    /// `system:authenticated`, no service account.
    pub fn user(username: &str) -> Self {
        if let Some((ns, name)) = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
        {
            return Self::service_account(ns, name);
        }
        Self {
            username: username.to_string(),
            groups: vec!["system:authenticated".to_string()],
            ..Self::default()
        }
    }

    /// `NS/NAME` of the service account, if this is one.
    pub fn service_account_ref(&self) -> Option<String> {
        self.service_account
            .as_ref()
            .map(|(ns, name)| format!("{ns}/{name}"))
    }

    /// The audit event's `user`.
    pub fn user_info(&self) -> UserInfo {
        UserInfo::new(
            self.username.clone(),
            self.uid.clone(),
            self.groups.clone(),
            self.extra.clone(),
        )
    }
}

fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_string(),
    ]
}

/// Read the identity from a service-account JWT's claims (bound tokens with
/// the `kubernetes.io` claim, and legacy secret-based tokens). The signature
/// is not verified; see the module docs.
pub fn from_service_account_jwt(token: &str) -> Result<Identity, IdentityError> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(IdentityError::NotAJwt { parts: parts.len() });
    }
    // Encoders differ on padding; accept both.
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|e| IdentityError::BadBase64 { why: e.to_string() })?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|e| IdentityError::BadClaims { why: e.to_string() })?;

    let (ns, name) = claims
        .sub
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
        .ok_or_else(|| IdentityError::NotAServiceAccount {
            sub: claims.sub.clone(),
        })?;

    let mut id = Identity::service_account(ns, name);
    id.token_id = claims.jti.filter(|j| !j.is_empty());
    if let Some(k) = claims.kubernetes_io {
        if !k.namespace.is_empty() && k.namespace != ns {
            return Err(IdentityError::Inconsistent {
                why: format!(
                    "sub names namespace {ns:?}, kubernetes.io.namespace {:?}",
                    k.namespace
                ),
            });
        }
        if let Some(sa) = k.serviceaccount {
            if !sa.name.is_empty() && sa.name != name {
                return Err(IdentityError::Inconsistent {
                    why: format!(
                        "sub names service account {name:?}, kubernetes.io.serviceaccount.name {:?}",
                        sa.name
                    ),
                });
            }
            id.uid = sa.uid;
        }
        if let Some(pod) = k.pod.filter(|p| !p.name.is_empty()) {
            id.extra
                .insert(EXTRA_POD_NAME.to_string(), vec![pod.name.clone()]);
            if !pod.uid.is_empty() {
                id.extra
                    .insert(EXTRA_POD_UID.to_string(), vec![pod.uid.clone()]);
                id.pod_uid = Some(pod.uid);
            }
            id.pod_name = Some(pod.name);
        }
        if let Some(node) = k.node.filter(|n| !n.name.is_empty()) {
            id.extra
                .insert(EXTRA_NODE_NAME.to_string(), vec![node.name.clone()]);
            if !node.uid.is_empty() {
                id.extra.insert(EXTRA_NODE_UID.to_string(), vec![node.uid]);
            }
            id.node_name = Some(node.name);
        }
    } else {
        if claims.legacy_namespace.as_deref().is_some_and(|n| n != ns)
            || claims.legacy_name.as_deref().is_some_and(|n| n != name)
        {
            return Err(IdentityError::Inconsistent {
                why: "sub and the kubernetes.io/serviceaccount/* claims name different accounts"
                    .to_string(),
            });
        }
        id.uid = claims.legacy_uid.unwrap_or_default();
    }
    if let Some(jti) = &id.token_id {
        id.extra
            .insert(EXTRA_CREDENTIAL_ID.to_string(), vec![format!("JTI={jti}")]);
    }
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = e.encode(br#"{"alg":"RS256","kid":"x3Kq1Hn8eJk2pVbZ0s7T9wYfQm4cL6rA"}"#);
        let payload = e.encode(serde_json::to_vec(&claims).unwrap());
        // A signature-shaped third part; it is not checked.
        let sig = e.encode([7u8; 256]);
        format!("{header}.{payload}.{sig}")
    }

    /// The claims of a projected token the kubelet writes (Kubernetes 1.30+).
    fn bound_claims() -> serde_json::Value {
        serde_json::json!({
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "exp": 1_795_000_000,
            "iat": 1_763_464_000,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "jti": "6f1c0e0a-3b8e-4d6a-9a0b-2f1d8e7c6b5a",
            "kubernetes.io": {
                "namespace": "agents",
                "node": {"name": "worker-1", "uid": "a1b2c3d4-0000-4000-8000-000000000001"},
                "pod": {"name": "mcp-k8s-7d9f8b6c5-x2x4q", "uid": "0d5c8f2e-1111-4a2b-9c3d-4e5f6a7b8c9d"},
                "serviceaccount": {"name": "mcp", "uid": "9a8b7c6d-2222-4e5f-8a9b-0c1d2e3f4a5b"},
                "warnafter": 1_763_467_607
            },
            "nbf": 1_763_464_000,
            "sub": "system:serviceaccount:agents:mcp"
        })
    }

    #[test]
    fn bound_token() {
        let id = from_service_account_jwt(&format!("{}\n", jwt(bound_claims()))).unwrap();
        assert_eq!(id.username, "system:serviceaccount:agents:mcp");
        assert_eq!(id.uid, "9a8b7c6d-2222-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(
            id.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:agents",
                "system:authenticated"
            ]
        );
        assert_eq!(
            id.service_account,
            Some(("agents".to_string(), "mcp".to_string()))
        );
        assert_eq!(id.service_account_ref().as_deref(), Some("agents/mcp"));
        assert_eq!(id.pod_name.as_deref(), Some("mcp-k8s-7d9f8b6c5-x2x4q"));
        assert_eq!(
            id.pod_uid.as_deref(),
            Some("0d5c8f2e-1111-4a2b-9c3d-4e5f6a7b8c9d")
        );
        assert_eq!(id.node_name.as_deref(), Some("worker-1"));
        assert_eq!(
            id.extra.get(EXTRA_POD_NAME),
            Some(&vec!["mcp-k8s-7d9f8b6c5-x2x4q".to_string()])
        );
        assert_eq!(
            id.extra.get(EXTRA_CREDENTIAL_ID),
            Some(&vec![
                "JTI=6f1c0e0a-3b8e-4d6a-9a0b-2f1d8e7c6b5a".to_string()
            ])
        );
        let ui = id.user_info();
        assert_eq!(ui.username, id.username);
        assert_eq!(ui.extra.len(), 5);
    }

    #[test]
    fn legacy_secret_token() {
        let id = from_service_account_jwt(&jwt(serde_json::json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "default",
            "kubernetes.io/serviceaccount/secret.name": "old-token-abcde",
            "kubernetes.io/serviceaccount/service-account.name": "old",
            "kubernetes.io/serviceaccount/service-account.uid": "u-1",
            "sub": "system:serviceaccount:default:old"
        })))
        .unwrap();
        assert_eq!(id.username, "system:serviceaccount:default:old");
        assert_eq!(id.uid, "u-1");
        assert_eq!(id.pod_name, None);
        assert!(id.extra.is_empty());
    }

    #[test]
    fn padded_payload_is_accepted() {
        let t = jwt(bound_claims());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        while !parts[1].len().is_multiple_of(4) {
            parts[1].push('=');
        }
        assert!(from_service_account_jwt(&parts.join(".")).is_ok());
    }

    #[test]
    fn bad_tokens() {
        assert!(matches!(
            from_service_account_jwt("not-a-jwt"),
            Err(IdentityError::NotAJwt { parts: 1 })
        ));
        assert!(matches!(
            from_service_account_jwt("a.!!!.c"),
            Err(IdentityError::BadBase64 { .. })
        ));
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert!(matches!(
            from_service_account_jwt(&format!("a.{}.c", e.encode("[1,2]"))),
            Err(IdentityError::BadClaims { .. })
        ));
        assert!(matches!(
            from_service_account_jwt(&jwt(serde_json::json!({"sub": "jane"}))),
            Err(IdentityError::NotAServiceAccount { .. })
        ));
        assert!(matches!(
            from_service_account_jwt(&jwt(serde_json::json!({"sub": "system:serviceaccount:ns"}))),
            Err(IdentityError::NotAServiceAccount { .. })
        ));
        let mut c = bound_claims();
        c["kubernetes.io"]["namespace"] = "other".into();
        assert!(matches!(
            from_service_account_jwt(&jwt(c)),
            Err(IdentityError::Inconsistent { .. })
        ));
        let mut c = bound_claims();
        c["kubernetes.io"]["serviceaccount"]["name"] = "other".into();
        assert!(matches!(
            from_service_account_jwt(&jwt(c)),
            Err(IdentityError::Inconsistent { .. })
        ));
    }

    #[test]
    fn constructors() {
        let id = Identity::from_service_account_ref("prod/deployer").unwrap();
        assert_eq!(id.username, "system:serviceaccount:prod:deployer");
        assert_eq!(id.groups[1], "system:serviceaccounts:prod");
        for bad in ["prod", "/x", "x/", "a/b/c", ""] {
            assert!(Identity::from_service_account_ref(bad).is_err(), "{bad}");
        }
        let u = Identity::user("jane");
        assert_eq!(
            (u.username.as_str(), u.service_account.clone()),
            ("jane", None)
        );
        assert_eq!(u.groups, vec!["system:authenticated"]);
        let sa = Identity::user("system:serviceaccount:a:b");
        assert_eq!(sa.service_account_ref().as_deref(), Some("a/b"));
    }
}
