//! The `--oidc-*` flags (and `--impersonate-end-user`), flattened into
//! [`crate::config::ServeArgs`], and the [`OidcConfig`] they validate into.
//! Named as kube-apiserver's `--oidc-*` flags where they mean the same.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use http::Uri;
use mcp_warden_shared::enduser::ClaimMapping;

use crate::config::{ConfigError, positive_duration};

/// End-user authentication flags.
#[derive(Debug, Clone, Args)]
pub struct OidcArgs {
    /// Issuer URL (https) whose tokens name end users; repeatable (or
    /// comma-separated in the env twin). Unset: only the local token is
    /// accepted.
    #[arg(
        long = "oidc-issuer-url",
        env = "MCP_WARDEN_OIDC_ISSUER_URL",
        value_delimiter = ','
    )]
    pub oidc_issuer_url: Vec<String>,

    /// The audience (`aud`) every end-user token must carry (kube-apiserver's
    /// `--oidc-client-id`). Required with `--oidc-issuer-url`.
    #[arg(long, env = "MCP_WARDEN_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// The claim naming the user.
    #[arg(long, env = "MCP_WARDEN_OIDC_USERNAME_CLAIM", default_value = "sub")]
    pub oidc_username_claim: String,

    /// Prefix of user names; unset: `ISSUER#` unless the claim is `email`;
    /// `-`: none.
    #[arg(long, env = "MCP_WARDEN_OIDC_USERNAME_PREFIX")]
    pub oidc_username_prefix: Option<String>,

    /// The claim holding the user's groups (a string or a list of strings).
    /// Unset: no groups.
    #[arg(long, env = "MCP_WARDEN_OIDC_GROUPS_CLAIM")]
    pub oidc_groups_claim: Option<String>,

    /// Prefix of every group name.
    #[arg(long, env = "MCP_WARDEN_OIDC_GROUPS_PREFIX", default_value = "")]
    pub oidc_groups_prefix: String,

    /// A JWKS file holding the issuers' keys, for clusters that cannot reach
    /// the issuer: no discovery, the file is re-read on an unknown key id.
    #[arg(long, env = "MCP_WARDEN_OIDC_JWKS_FILE")]
    pub oidc_jwks_file: Option<PathBuf>,

    /// CA bundle (PEM) for the issuers' discovery and JWKS endpoints
    /// (default: the public web PKI roots).
    #[arg(long, env = "MCP_WARDEN_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,

    /// The keys are fetched again for an unknown key id at most this often.
    #[arg(
        long,
        env = "MCP_WARDEN_OIDC_JWKS_REFRESH_INTERVAL",
        default_value = "10s",
        value_parser = positive_duration()
    )]
    pub oidc_jwks_refresh_interval: Duration,

    /// Send requests made with an end-user token upstream as that user
    /// (`Impersonate-User`, `Impersonate-Group`,
    /// `Impersonate-Extra-mcp-warden.io-pod`); the ServiceAccount needs the
    /// `impersonate` grant. Off: they go as the ServiceAccount and the user
    /// is only recorded.
    #[arg(long, env = "MCP_WARDEN_IMPERSONATE_END_USER", default_value_t = false)]
    pub impersonate_end_user: bool,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `ISSUER/.well-known/openid-configuration` → `jwks_uri`, over HTTPS.
    Discovery,
    /// A JWKS file (`--oidc-jwks-file`) for every issuer.
    File(PathBuf),
}

/// Validated end-user authentication settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Issuer URLs, exactly as tokens carry them in `iss`.
    pub issuers: Vec<String>,
    /// The audience every token must carry.
    pub audience: String,
    /// How claims name the user and groups.
    pub mapping: ClaimMapping,
    /// Where the keys come from.
    pub keys: KeySource,
    /// CA bundle for discovery and JWKS (public roots when unset).
    pub ca_file: Option<PathBuf>,
    /// Least time between two fetches of one issuer's keys.
    pub refresh_interval: Duration,
    /// Impersonate the end user upstream.
    pub impersonate: bool,
}

fn err(flag: &'static str, env: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        env,
        message: message.into(),
    }
}

impl OidcArgs {
    /// `None` when no issuer is configured (then no other `--oidc-*` flag
    /// may be set either, so a typo does not silently disable end users).
    pub fn validate(&self) -> Result<Option<OidcConfig>, ConfigError> {
        const ISS: (&str, &str) = ("oidc-issuer-url", "MCP_WARDEN_OIDC_ISSUER_URL");
        let issuers: Vec<String> = self
            .oidc_issuer_url
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if issuers.is_empty() {
            if self.oidc_audience.is_some()
                || self.oidc_groups_claim.is_some()
                || self.oidc_jwks_file.is_some()
                || self.impersonate_end_user
            {
                return Err(err(
                    ISS.0,
                    ISS.1,
                    "end-user settings are given but no issuer: set --oidc-issuer-url",
                ));
            }
            return Ok(None);
        }
        for i in &issuers {
            let uri: Uri = i
                .parse()
                .map_err(|e| err(ISS.0, ISS.1, format!("{i:?} is not a URL: {e}")))?;
            if uri.scheme_str() != Some("https") || uri.host().is_none() || uri.query().is_some() {
                return Err(err(
                    ISS.0,
                    ISS.1,
                    format!("{i:?} must be an https:// URL without a query"),
                ));
            }
        }
        let audience = self
            .oidc_audience
            .clone()
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                err(
                    "oidc-audience",
                    "MCP_WARDEN_OIDC_AUDIENCE",
                    "required with --oidc-issuer-url: tokens for other audiences must not pass",
                )
            })?;
        if self.oidc_username_claim.trim().is_empty() {
            return Err(err(
                "oidc-username-claim",
                "MCP_WARDEN_OIDC_USERNAME_CLAIM",
                "must not be empty",
            ));
        }
        let keys = match &self.oidc_jwks_file {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(err(
                    "oidc-jwks-file",
                    "MCP_WARDEN_OIDC_JWKS_FILE",
                    "must not be empty",
                ));
            }
            Some(p) => KeySource::File(p.clone()),
            None => KeySource::Discovery,
        };
        Ok(Some(OidcConfig {
            issuers,
            audience,
            mapping: ClaimMapping {
                username_claim: self.oidc_username_claim.clone(),
                username_prefix: self.oidc_username_prefix.clone(),
                groups_claim: self.oidc_groups_claim.clone().filter(|c| !c.is_empty()),
                groups_prefix: self.oidc_groups_prefix.clone(),
            },
            keys,
            ca_file: self.oidc_ca_file.clone(),
            refresh_interval: self.oidc_jwks_refresh_interval,
            impersonate: self.impersonate_end_user,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        oidc: OidcArgs,
    }

    fn parse(args: &[&str]) -> Result<Option<OidcConfig>, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.oidc.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn issuers_need_an_audience_and_https() {
        assert!(parse(&[]).unwrap().is_none());
        let c = parse(&[
            "--oidc-issuer-url=https://a.example.com",
            "--oidc-issuer-url=https://b.example.com/realms/x",
            "--oidc-audience=mcp",
            "--oidc-groups-claim=groups",
            "--oidc-username-prefix=-",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.issuers.len(), 2);
        assert_eq!(c.mapping.username_claim, "sub");
        assert_eq!(c.mapping.username_prefix.as_deref(), Some("-"));
        assert_eq!(c.keys, KeySource::Discovery);
        assert!(!c.impersonate);
        let e = parse(&["--oidc-issuer-url=https://a.example.com"]).unwrap_err();
        assert!(
            e.contains("--oidc-audience (MCP_WARDEN_OIDC_AUDIENCE)"),
            "{e}"
        );
        let e = parse(&[
            "--oidc-issuer-url=http://a.example.com",
            "--oidc-audience=x",
        ])
        .unwrap_err();
        assert!(e.contains("https://"), "{e}");
        // End-user settings without an issuer are a mistake, not a no-op.
        let e = parse(&["--impersonate-end-user"]).unwrap_err();
        assert!(e.contains("--oidc-issuer-url"), "{e}");
        let c = parse(&[
            "--oidc-issuer-url=https://a.example.com",
            "--oidc-audience=x",
            "--oidc-jwks-file=/keys/jwks.json",
            "--impersonate-end-user",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.keys, KeySource::File("/keys/jwks.json".into()));
        assert!(c.impersonate);
        assert!(parse(&["--oidc-jwks-refresh-interval=0s"]).is_err());
    }
}
