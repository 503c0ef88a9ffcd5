//! The person an MCP server acts for: the end user named by a verified
//! OIDC/OAuth access token the MCP server passes through, as opposed to the
//! pod's service account ([`crate::identity`]).
//!
//! Only claims live here, never token text: an [`EndUser`] is what policy
//! (`users:`, `groups:`) judges and what the recording shows.
//! [`ClaimMapping::map`] turns a token's verified claims into an
//! [`EndUser`] the way kube-apiserver's `--oidc-username-claim`,
//! `--oidc-username-prefix`, `--oidc-groups-claim` and
//! `--oidc-groups-prefix` do.

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

impl EndUser {
    /// A user named `username` in `groups` (for `policy eval` and tests:
    /// issuer and subject stay empty).
    pub fn named(username: impl Into<String>, groups: Vec<String>) -> Self {
        EndUser {
            username: username.into(),
            groups,
            ..EndUser::default()
        }
    }
}

/// The claim that names the user when none is configured (as kube-apiserver).
pub const DEFAULT_USERNAME_CLAIM: &str = "sub";

/// How verified claims become an [`EndUser`], as kube-apiserver's `--oidc-*`
/// flags describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The claim holding the user name (`sub` by default; `email` is
    /// refused when `email_verified` is present and false).
    pub username_claim: String,
    /// Prefix of user names. `None`: kube-apiserver's default, the issuer
    /// and `#` (`https://issuer#alice`), except for the `email` claim,
    /// which gets none. `Some("-")`: no prefix.
    pub username_prefix: Option<String>,
    /// The claim holding the groups (a string or a list of strings);
    /// `None`: the user has no groups.
    pub groups_claim: Option<String>,
    /// Prefix of every group name.
    pub groups_prefix: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            username_claim: DEFAULT_USERNAME_CLAIM.to_string(),
            username_prefix: None,
            groups_claim: None,
            groups_prefix: String::new(),
        }
    }
}

/// Why verified claims do not name a user. Messages name claims, never
/// their values (a claim may hold anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The claims are not a JSON object.
    #[error("the token's claims are not a JSON object")]
    NotAnObject,
    /// The username claim is missing, empty or not a string.
    #[error("the username claim {claim:?} is missing, empty or not a string")]
    NoUsername {
        /// The claim's name.
        claim: String,
    },
    /// `email` names the user but the issuer says it is not verified.
    #[error("the email claim is not verified (email_verified is false)")]
    EmailNotVerified,
    /// The groups claim is neither a string nor a list of strings.
    #[error("the groups claim {claim:?} is neither a string nor a list of strings")]
    BadGroups {
        /// The claim's name.
        claim: String,
    },
    /// `iss` is missing or not a string.
    #[error("the token has no issuer (iss)")]
    NoIssuer,
}

impl ClaimMapping {
    /// The end user the verified `claims` name.
    pub fn map(&self, claims: &serde_json::Value) -> Result<EndUser, ClaimError> {
        let obj = claims.as_object().ok_or(ClaimError::NotAnObject)?;
        let issuer = obj
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or(ClaimError::NoIssuer)?
            .to_string();
        let subject = obj
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let name = obj
            .get(&self.username_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ClaimError::NoUsername {
                claim: self.username_claim.clone(),
            })?;
        if self.username_claim == "email"
            && obj.get("email_verified").and_then(|v| v.as_bool()) == Some(false)
        {
            return Err(ClaimError::EmailNotVerified);
        }
        let prefix = match self.username_prefix.as_deref() {
            Some("-") => String::new(),
            Some(p) => p.to_string(),
            None if self.username_claim == "email" => String::new(),
            None => format!("{issuer}#"),
        };
        let groups = match &self.groups_claim {
            None => Vec::new(),
            Some(claim) => {
                let bad = || ClaimError::BadGroups {
                    claim: claim.clone(),
                };
                let raw: Vec<&str> = match obj.get(claim) {
                    None | Some(serde_json::Value::Null) => Vec::new(),
                    Some(serde_json::Value::String(s)) => vec![s.as_str()],
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().ok_or_else(bad))
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(bad()),
                };
                raw.into_iter()
                    .filter(|g| !g.is_empty())
                    .map(|g| format!("{}{g}", self.groups_prefix))
                    .collect()
            }
        };
        Ok(EndUser {
            username: format!("{prefix}{name}"),
            groups,
            issuer,
            subject,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";

    fn mapping(claim: &str, prefix: Option<&str>, groups: Option<&str>, gp: &str) -> ClaimMapping {
        ClaimMapping {
            username_claim: claim.to_string(),
            username_prefix: prefix.map(str::to_string),
            groups_claim: groups.map(str::to_string),
            groups_prefix: gp.to_string(),
        }
    }

    #[test]
    fn username_prefix_follows_kube_apiserver() {
        let c = json!({"iss": ISS, "sub": "u-1", "email": "alice@example.com", "groups": ["dev"]});
        // Default: sub, prefixed with the issuer and '#'.
        let u = ClaimMapping::default().map(&c).unwrap();
        assert_eq!(u.username, "https://idp.example.com#u-1");
        assert_eq!((u.issuer.as_str(), u.subject.as_str()), (ISS, "u-1"));
        assert!(u.groups.is_empty());
        // email gets no default prefix.
        let u = mapping("email", None, None, "").map(&c).unwrap();
        assert_eq!(u.username, "alice@example.com");
        // "-" means none; anything else is the prefix.
        assert_eq!(
            mapping("sub", Some("-"), None, "")
                .map(&c)
                .unwrap()
                .username,
            "u-1"
        );
        assert_eq!(
            mapping("email", Some("oidc:"), None, "")
                .map(&c)
                .unwrap()
                .username,
            "oidc:alice@example.com"
        );
    }

    #[test]
    fn groups_claim_is_a_string_or_a_list_and_gets_its_prefix() {
        let m = mapping("sub", Some("-"), Some("groups"), "oidc:");
        let u = m
            .map(&json!({"iss": ISS, "sub": "a", "groups": ["dev", "", "ops"]}))
            .unwrap();
        assert_eq!(u.groups, ["oidc:dev", "oidc:ops"]);
        let u = m
            .map(&json!({"iss": ISS, "sub": "a", "groups": "dev"}))
            .unwrap();
        assert_eq!(u.groups, ["oidc:dev"]);
        let u = m.map(&json!({"iss": ISS, "sub": "a"})).unwrap();
        assert!(u.groups.is_empty());
        assert_eq!(
            m.map(&json!({"iss": ISS, "sub": "a", "groups": [1]})),
            Err(ClaimError::BadGroups {
                claim: "groups".into()
            })
        );
        assert!(
            m.map(&json!({"iss": ISS, "sub": "a", "groups": {"x": 1}}))
                .is_err()
        );
    }

    #[test]
    fn missing_or_unverified_names_are_refused() {
        let m = mapping("email", None, None, "");
        assert_eq!(
            m.map(&json!({"iss": ISS, "sub": "a"})),
            Err(ClaimError::NoUsername {
                claim: "email".into()
            })
        );
        assert_eq!(
            m.map(&json!({"iss": ISS, "email": "a@b", "email_verified": false})),
            Err(ClaimError::EmailNotVerified)
        );
        assert!(
            m.map(&json!({"iss": ISS, "email": "a@b", "email_verified": true}))
                .is_ok()
        );
        assert_eq!(
            ClaimMapping::default().map(&json!({"iss": ISS, "sub": ""})),
            Err(ClaimError::NoUsername {
                claim: "sub".into()
            })
        );
        assert_eq!(
            ClaimMapping::default().map(&json!({"sub": "a"})),
            Err(ClaimError::NoIssuer)
        );
        assert_eq!(
            ClaimMapping::default().map(&json!("x")),
            Err(ClaimError::NotAnObject)
        );
        // A message never carries a claim's value.
        let e = mapping("sub", None, Some("groups"), "")
            .map(&json!({"iss": ISS, "sub": "a", "groups": [{"secret": "hunter2"}]}))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }
}
