//! Impersonation: the `Impersonate-*` headers of a request, read as
//! kube-apiserver reads them, stricter where it would pick one of several.

use serde::Serialize;

use super::{AttrError, percent_decode};

/// Impersonation asked for by `Impersonate-*` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Impersonation {
    /// `Impersonate-User`.
    pub user: Option<String>,
    /// `Impersonate-Group`, each occurrence.
    pub groups: Vec<String>,
    /// `Impersonate-Uid`.
    pub uid: Option<String>,
    /// `Impersonate-Extra-KEY: value` pairs (KEY lower-cased and
    /// percent-decoded, as kube-apiserver does).
    pub extra: Vec<(String, String)>,
}

impl Impersonation {
    /// True when no impersonation header was present.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.groups.is_empty() && self.uid.is_none() && self.extra.is_empty()
    }
}

const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_EXTRA: &str = "impersonate-extra-";

/// Collect the `Impersonate-*` headers of a request. Following kube-apiserver,
/// groups, uid and extras need a user; unlike it, a header we would have to
/// guess about (repeated user or uid, empty value, non-UTF-8, a malformed
/// escape in an extra key) is an error rather than a first-one-wins.
pub fn impersonation_from_headers(headers: &http::HeaderMap) -> Result<Impersonation, AttrError> {
    let mut imp = Impersonation::default();
    for (name, value) in headers {
        // HeaderName is always lower case.
        let hname = name.as_str();
        if !hname.starts_with("impersonate-") {
            continue;
        }
        let bad = |why: &str| AttrError::BadHeader {
            name: hname.to_string(),
            why: why.to_string(),
        };
        let v = std::str::from_utf8(value.as_bytes()).map_err(|_| bad("value is not UTF-8"))?;
        if v.is_empty() {
            return Err(bad("empty value"));
        }
        if v.chars().any(char::is_control) {
            return Err(bad("control character in value"));
        }
        match hname {
            IMPERSONATE_USER => {
                if imp.user.replace(v.to_string()).is_some() {
                    return Err(bad("given more than once"));
                }
            }
            IMPERSONATE_UID => {
                if imp.uid.replace(v.to_string()).is_some() {
                    return Err(bad("given more than once"));
                }
            }
            IMPERSONATE_GROUP => imp.groups.push(v.to_string()),
            _ => {
                if let Some(raw_key) = hname.strip_prefix(IMPERSONATE_EXTRA) {
                    if raw_key.is_empty() {
                        return Err(bad("empty extra key"));
                    }
                    let key = percent_decode(raw_key)
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| bad("malformed percent-escape in the extra key"))?;
                    imp.extra.push((key, v.to_string()));
                } else {
                    return Err(bad("unknown impersonation header"));
                }
            }
        }
    }
    if imp.user.is_none() && !imp.is_empty() {
        return Err(AttrError::BadHeader {
            name: "Impersonate-User".to_string(),
            why: "Impersonate-Group, Impersonate-Uid and Impersonate-Extra-* need Impersonate-User"
                .to_string(),
        });
    }
    Ok(imp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn impersonation_headers() {
        let none = impersonation_from_headers(&headers(&[
            ("Authorization", "Bearer x"),
            ("Accept", "application/json"),
        ]))
        .unwrap();
        assert!(none.is_empty());

        // What `kubectl --as=jane --as-group=devs --as-group=ops --as-uid=42` sends.
        let imp = impersonation_from_headers(&headers(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Uid", "42"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-Scopes", "edit"),
            ("Impersonate-Extra-Example.com%2fTeam", "a"),
        ]))
        .unwrap();
        assert_eq!(imp.user.as_deref(), Some("jane"));
        assert_eq!(imp.groups, vec!["devs", "ops"]);
        assert_eq!(imp.uid.as_deref(), Some("42"));
        assert_eq!(
            imp.extra,
            vec![
                ("scopes".to_string(), "view".to_string()),
                ("scopes".to_string(), "edit".to_string()),
                ("example.com/team".to_string(), "a".to_string()),
            ]
        );

        let sa = impersonation_from_headers(&headers(&[(
            "Impersonate-User",
            "system:serviceaccount:kube-system:default",
        )]))
        .unwrap();
        assert_eq!(
            sa.user.as_deref(),
            Some("system:serviceaccount:kube-system:default")
        );

        for bad in [
            vec![("Impersonate-Group", "devs")],
            vec![("Impersonate-Uid", "1")],
            vec![("Impersonate-Extra-Scopes", "x")],
            vec![("Impersonate-User", "a"), ("Impersonate-User", "b")],
            vec![("Impersonate-User", "")],
            vec![
                ("Impersonate-User", "a"),
                ("Impersonate-Uid", "1"),
                ("Impersonate-Uid", "2"),
            ],
            vec![("Impersonate-User", "a"), ("Impersonate-Extra-%zz", "x")],
            vec![("Impersonate-User", "a"), ("Impersonate-Extra-", "x")],
            vec![("Impersonate-User", "a"), ("Impersonate-Someone", "x")],
        ] {
            let got = impersonation_from_headers(&headers(&bad));
            assert!(
                matches!(got, Err(AttrError::BadHeader { .. })),
                "{bad:?} gave {got:?}"
            );
        }
        let mut h = http::HeaderMap::new();
        h.insert(
            "impersonate-user",
            http::HeaderValue::from_bytes(b"j\xffne").unwrap(),
        );
        assert!(impersonation_from_headers(&h).is_err());
    }
}
