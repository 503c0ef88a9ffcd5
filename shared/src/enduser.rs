//! The person an MCP server acts for: the end user named by a verified
//! OIDC/OAuth access token the MCP server passes through, as opposed to the
//! pod's service account ([`crate::identity`]).
//!
//! Only claims live here, never token text: an [`EndUser`] is what policy
//! (`users:`, `groups:`) judges and what the recording shows.

use serde::Serialize;

/// A verified end user, named the way kube-apiserver's `--oidc-*` flags
/// would name them (claims mapped, prefixes applied).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndUser {
    /// The user name after the username claim and prefix are applied.
    pub username: String,
    /// The groups after the groups claim and prefix are applied.
    pub groups: Vec<String>,
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
}
