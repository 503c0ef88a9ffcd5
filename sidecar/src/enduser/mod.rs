//! End-user authentication: turns a bearer token that is not the sidecar's
//! local token into an [`EndUser`], for the API listener and the MCP front.

pub mod config;
pub mod oidc;

use futures::future::BoxFuture;
pub use mcp_warden_shared::enduser::EndUser;

pub use config::{OidcArgs, OidcConfig};
pub use oidc::{OidcVerifier, VerifyError};

/// Why a bearer token was not accepted as an end user. The message names the
/// reason (expired, wrong audience, unknown issuer, ...) and never contains
/// token text.
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// Verifies end-user bearer tokens.
pub trait VerifyBearer: Send + Sync {
    /// Verifies `token` (the text after `Bearer `) and returns the user it names.
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<EndUser, Rejection>>;
}

/// The verifier `--oidc-*` configures, `None` without an issuer. The API
/// listener and the MCP front each build one (each caches the issuers' keys).
pub fn from_config(
    config: &crate::Config,
) -> Result<Option<std::sync::Arc<dyn VerifyBearer>>, crate::ConfigError> {
    let Some(o) = &config.oidc else {
        return Ok(None);
    };
    let v = OidcVerifier::new(o).map_err(|e| crate::ConfigError {
        flag: "oidc-ca-file",
        env: "MCP_WARDEN_OIDC_CA_FILE",
        message: e.to_string(),
    })?;
    Ok(Some(std::sync::Arc::new(v)))
}

/// Whether a bearer token has the shape of a JWT (three dot-separated
/// parts), so it is worth handing to the end-user verifier.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.iter().filter(|b| **b == b'.').count() == 2
}

/// The end user as the upstream's impersonation headers name them
/// (`Impersonate-User`, one `Impersonate-Group` each,
/// `Impersonate-Extra-mcp-warden.io-pod` with the pod's name), in the order
/// they are sent.
pub fn impersonation_headers(user: &EndUser, pod: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![("impersonate-user", user.username.clone())];
    for g in &user.groups {
        h.push(("impersonate-group", g.clone()));
    }
    if let Some(pod) = pod {
        h.push((POD_EXTRA_HEADER, pod.to_string()));
    }
    h
}

/// The extra-key header naming the pod an end user's request came through
/// (the key is `mcp-warden.io-pod`; header names cannot hold a `/`).
pub const POD_EXTRA_HEADER: &str = "impersonate-extra-mcp-warden.io-pod";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonation_headers_name_user_groups_and_pod() {
        let u = EndUser::named(
            "alice@example.com",
            vec!["oidc:dev".into(), "oidc:sre".into()],
        );
        assert_eq!(
            impersonation_headers(&u, Some("web-0")),
            [
                ("impersonate-user", "alice@example.com".to_string()),
                ("impersonate-group", "oidc:dev".to_string()),
                ("impersonate-group", "oidc:sre".to_string()),
                ("impersonate-extra-mcp-warden.io-pod", "web-0".to_string()),
            ]
        );
        assert_eq!(impersonation_headers(&u, None).len(), 3);
        assert!(looks_like_jwt(b"a.b.c") && looks_like_jwt(b"a.b."));
        assert!(!looks_like_jwt(b"abc") && !looks_like_jwt(b"a.b.c.d"));
    }
}
