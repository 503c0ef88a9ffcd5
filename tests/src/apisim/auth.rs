//! Bearer-token authentication: the main token, `--extra-user` tokens, and
//! service-account tokens this server issued through TokenRequest.

use std::collections::HashMap;
use std::sync::Mutex;

/// An authenticated user (`userInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Errors parsing `--extra-user NAME=TOKEN[:group,group]`.
#[derive(Debug, thiserror::Error)]
pub enum UserSpecError {
    #[error("--extra-user {0:?}: expected NAME=TOKEN[:group,group]")]
    Malformed(String),
}

/// A user and its token, from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSpec {
    pub user: User,
    pub token: String,
}

impl std::str::FromStr for UserSpec {
    type Err = UserSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UserSpecError::Malformed(s.split('=').next().unwrap_or("").to_string());
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (token, groups) = match rest.split_once(':') {
            Some((t, g)) => (
                t,
                g.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            None => (rest, Vec::new()),
        };
        if name.is_empty() || token.is_empty() {
            return Err(bad());
        }
        let mut groups: Vec<String> = groups;
        groups.push("system:authenticated".into());
        Ok(UserSpec {
            user: User {
                username: name.to_string(),
                uid: uuid::Uuid::new_v4().to_string(),
                groups,
            },
            token: token.to_string(),
        })
    }
}

/// The token table.
#[derive(Debug, Default)]
pub struct Authenticator {
    static_tokens: Vec<UserSpec>,
    issued: Mutex<HashMap<String, (User, i64)>>,
}

/// The user the main token authenticates as.
pub fn admin_user() -> User {
    User {
        username: "kube-apisim-admin".into(),
        uid: "00000000-0000-0000-0000-000000000001".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// Constant-time comparison so response timing does not leak token bytes.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// Accepts `main_token` as the admin plus every extra user.
    pub fn new(main_token: String, extra: Vec<UserSpec>) -> Self {
        let mut static_tokens = vec![UserSpec {
            user: admin_user(),
            token: main_token,
        }];
        static_tokens.extend(extra);
        Authenticator {
            static_tokens,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers a service-account token issued by TokenRequest.
    pub fn remember(&self, token: String, user: User, expires_unix: i64) {
        if let Ok(mut g) = self.issued.lock() {
            g.insert(token, (user, expires_unix));
        }
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>, now_unix: i64) -> Option<User> {
        let h = header?.trim();
        let (scheme, token) = h.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        for s in &self.static_tokens {
            if ct_eq(s.token.as_bytes(), token.as_bytes()) {
                return Some(s.user.clone());
            }
        }
        let g = self.issued.lock().ok()?;
        match g.get(token) {
            Some((u, exp)) if *exp > now_unix => Some(u.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_users() {
        let a = Authenticator::new(
            "t0k".into(),
            vec!["alice=atok:approvers,dev".parse().unwrap()],
        );
        assert_eq!(
            a.authenticate(Some("Bearer t0k"), 0).unwrap().username,
            "kube-apisim-admin"
        );
        assert_eq!(
            a.authenticate(Some("bearer t0k"), 0).unwrap().username,
            "kube-apisim-admin"
        );
        assert!(a.authenticate(Some("Basic t0k"), 0).is_none());
        assert!(a.authenticate(Some("Bearer t0"), 0).is_none());
        assert!(a.authenticate(None, 0).is_none());
        let alice = a.authenticate(Some("Bearer atok"), 0).unwrap();
        assert_eq!(
            alice.groups,
            vec!["approvers", "dev", "system:authenticated"]
        );
        assert!("noequals".parse::<UserSpec>().is_err());
        a.remember("sa".into(), admin_user(), 10);
        assert!(a.authenticate(Some("Bearer sa"), 5).is_some());
        assert!(a.authenticate(Some("Bearer sa"), 11).is_none());
    }
}
