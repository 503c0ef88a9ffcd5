//! Query strings: the one parser of the project, on `form_urlencoded`
//! (`&`-separated `key=value` pairs, `+` for a space, `%XX` escapes), and the
//! parameters kube-apiserver reads before it decides what a request is.
//!
//! [`Query::parse`] reads any query the way a server reads it and never fails
//! (a malformed escape stays text, invalid UTF-8 becomes U+FFFD); it is what
//! the test API server and the session recorder use. [`Query::parse_strict`]
//! is what the sidecar decides on: it refuses whatever Go's `url.ParseQuery`
//! would read differently (a `;`, a malformed escape, invalid UTF-8, unencoded
//! spaces or control characters), so the policy never judges parameters the
//! API server would not see.
//!
//! Booleans are read one way everywhere, kube-apiserver's
//! ([`parse_bool`]): `watch=True`, `watch=1` and even a bare `watch` are true.

use super::{AttrError, escapes_are_well_formed};

/// Decoded query parameters, in order; a key may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Reads `raw` (the part after `?`; `None` or empty: no parameters)
    /// leniently: a malformed escape is kept as text, invalid UTF-8 is
    /// replaced. Pairs with an empty key are kept.
    pub fn parse<'a>(raw: impl Into<Option<&'a str>>) -> Query {
        let raw = raw.into().unwrap_or("");
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Reads `raw` as kube-apiserver will, refusing what Go's
    /// `url.ParseQuery` could read differently from us. Pairs with an empty
    /// key are dropped (no parameter has one).
    pub fn parse_strict(raw: &str) -> Result<Query, AttrError> {
        let bad = |why: String| AttrError::BadQuery { why };
        for b in raw.bytes() {
            match b {
                0x00..=0x20 | 0x7f..=0xff => {
                    return Err(bad(
                        "unencoded space, control or non-ASCII character".to_string()
                    ));
                }
                b'#' => return Err(bad("fragment marker '#'".to_string())),
                _ => {}
            }
        }
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            // Go's url.ParseQuery silently drops pairs with ';' — the API server
            // would then see different parameters than a naive reader.
            if piece.contains(';') {
                return Err(bad(format!("';' in query parameter {piece:?}")));
            }
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            if !decodes_exactly(k) {
                return Err(bad(format!("malformed escape in parameter name {k:?}")));
            }
            if !decodes_exactly(v) {
                let key = Query::parse(k).0.into_iter().next().map(|(k, _)| k);
                return Err(bad(format!(
                    "malformed escape in the value of parameter {:?}",
                    key.unwrap_or_default()
                )));
            }
        }
        // Every escape is well formed and every value UTF-8: the lenient
        // reading is the exact one.
        let mut q = Query::parse(raw);
        q.0.retain(|(k, _)| !k.is_empty());
        Ok(q)
    }

    /// The first value of `key`: what kube-apiserver's parameter codec uses.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean parameter as kube-apiserver reads it ([`parse_bool`] of the
    /// first value); false when absent.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(parse_bool)
    }

    /// All pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// kube-apiserver's `Convert_Slice_string_To_bool` for a present parameter:
/// only `0` and `false` (any case) are false, everything else (even empty) is
/// true.
pub fn parse_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// Well-formed escapes that decode (with `+` as a space) to UTF-8.
fn decodes_exactly(s: &str) -> bool {
    escapes_are_well_formed(s)
        && percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .is_ok()
}

/// The integer list options kube-apiserver decodes before deciding list vs
/// watch; a value it cannot decode fails the request there, so it fails here.
pub(crate) fn check_list_options(q: &Query) -> Result<(), AttrError> {
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = q.get(key).filter(|v| v.parse::<i64>().is_err()) {
            return Err(AttrError::BadQuery {
                why: format!("{key}={v:?} is not an integer"),
            });
        }
    }
    Ok(())
}

/// `dryRun` accepts only `All` (kube-apiserver answers anything else with 400).
pub(crate) fn dry_run(q: &Query) -> Result<bool, AttrError> {
    let mut any = false;
    for v in q.all("dryRun") {
        if v != "All" {
            return Err(AttrError::BadQuery {
                why: format!("dryRun={v:?}: the only supported value is \"All\""),
            });
        }
        any = true;
    }
    Ok(any)
}

/// The name a field selector pins with `metadata.name=X` or `metadata.name==X`
/// (Go's `fields.Selector.RequiresExactMatch("metadata.name")`).
pub(crate) fn field_selector_exact_name(selector: &str) -> Result<Option<String>, AttrError> {
    for term in split_unescaped(selector, ',') {
        if term.is_empty() {
            continue;
        }
        let (lhs, op, rhs) = split_term(term).ok_or_else(|| AttrError::BadQuery {
            why: format!("invalid field selector term {term:?}"),
        })?;
        let lhs = unescape_selector(lhs)?;
        let rhs = unescape_selector(rhs)?;
        if lhs == "metadata.name" && op != "!=" {
            return Ok(Some(rhs));
        }
    }
    Ok(None)
}

/// Split on `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Go's `fields.splitTerm`: the first unescaped `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// Go's `fields.UnescapeValue`: only `\\`, `\,` and `\=` are escapes.
fn unescape_selector(s: &str) -> Result<String, AttrError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => {
                    return Err(AttrError::BadQuery {
                        why: format!("invalid escape sequence in field selector value {s:?}"),
                    });
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attrs::parse_request;

    #[test]
    fn lenient_parse_keeps_what_it_cannot_decode() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=exit+3&stdout=true&container=c%2F1&x=%zz&y=%4&bare&&=v",
        ));
        assert_eq!(q.all("command"), vec!["sh", "-c", "exit 3"]);
        assert_eq!(q.get("container"), Some("c/1"));
        assert_eq!(q.get("x"), Some("%zz"));
        assert_eq!(q.get("y"), Some("%4"));
        assert_eq!(q.get("bare"), Some(""));
        assert_eq!(q.get(""), Some("v"));
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(Query::parse("a=%FF").get("a"), Some("\u{FFFD}"));
    }

    #[test]
    fn strict_parse_refuses_what_go_reads_differently() {
        let q = Query::parse_strict("labelSelector=app%3Dweb%2Ctier+in+%28a%29&=x&watch").unwrap();
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.pairs().len(), 2);
        for raw in [
            "a=1;b=2", "a=%zz", "%4=1", "a=%FF", "a=b c", "a=\u{e9}", "a=b#c",
        ] {
            assert!(
                matches!(Query::parse_strict(raw), Err(AttrError::BadQuery { .. })),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn booleans_are_read_as_the_api_server_reads_them() {
        for (raw, want) in [
            ("follow=True", true),
            ("follow=true", true),
            ("follow=1", true),
            ("follow=0", false),
            ("follow=false", false),
            ("follow=FALSE", false),
            ("watch=True", true),
            ("watch=1", true),
            ("watch=false", false),
            ("watch=0", false),
            ("watch=", true),
            ("watch", true),
            ("watch=yes", true),
            ("watch=false&watch=true", false),
        ] {
            let key = raw.split(['=', '&']).next().unwrap();
            assert_eq!(Query::parse(raw).flag(key), want, "{raw}");
            assert_eq!(Query::parse_strict(raw).unwrap().flag(key), want, "{raw}");
        }
        assert!(!Query::parse("follow=true").flag("watch"));
    }

    #[test]
    fn selectors_and_dry_run_are_decoded() {
        let a = parse_request(
            "DELETE",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&fieldSelector=status.phase%3DFailed",
        )
        .unwrap();
        assert_eq!(a.label_selector.as_deref(), Some("app=web,tier in (a,b)"));
        assert_eq!(a.field_selector.as_deref(), Some("status.phase=Failed"));
        assert!(!a.dry_run);
        assert_eq!(a.verb, "deletecollection");

        let a = parse_request(
            "POST",
            "/api/v1/namespaces/default/configmaps?dryRun=All&fieldManager=kubectl-create",
        )
        .unwrap();
        assert!(a.dry_run);
        let a = parse_request("GET", "/api/v1/pods").unwrap();
        assert_eq!(
            (a.label_selector, a.field_selector, a.dry_run),
            (None, None, false)
        );
    }

    #[test]
    fn field_selector_name_rules() {
        // `==` pins too; `!=` does not; other terms are fine alongside.
        let a = parse_request(
            "GET",
            "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3D%3Dweb-1",
        )
        .unwrap();
        assert_eq!(a.name, "web-1");
        let a = parse_request(
            "GET",
            "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%21%3Dweb-1",
        )
        .unwrap();
        assert_eq!(a.name, "");
        let a = parse_request(
            "GET",
            "/api/v1/namespaces/d/pods?fieldSelector=status.phase%3DRunning%2Cmetadata.name%3Dweb-2&watch=true",
        )
        .unwrap();
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "web-2"));
        // A name that is no valid path segment is not taken (as kube-apiserver).
        let a = parse_request(
            "GET",
            "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3D..",
        )
        .unwrap();
        assert_eq!(a.name, "");
        // Not for deletes: kube-apiserver only pins names on get->list/watch.
        let a = parse_request(
            "DELETE",
            "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3Dweb-1",
        )
        .unwrap();
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("deletecollection", ""));
        // Malformed selectors are refused.
        assert!(matches!(
            parse_request(
                "GET",
                "/api/v1/namespaces/d/pods?fieldSelector=metadata.name"
            ),
            Err(AttrError::BadQuery { .. })
        ));
        assert!(matches!(
            parse_request(
                "GET",
                "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3Dweb%5Cx"
            ),
            Err(AttrError::BadQuery { .. })
        ));
    }

    #[test]
    fn bad_queries_and_methods_are_rejected() {
        for q in [
            "/api/v1/pods?watch=true;limit=5",
            "/api/v1/pods?labelSelector=%zz",
            "/api/v1/pods?labelSelector=a b",
            "/api/v1/pods?limit=abc",
            "/api/v1/pods?timeoutSeconds=1.5",
            "/api/v1/namespaces/d/configmaps?dryRun=true",
            "/api/v1/namespaces/d/configmaps?dryRun=All&dryRun=None",
            "/api/v1/pods?labelSelector=%FF",
        ] {
            let got = parse_request("GET", q);
            assert!(
                matches!(got, Err(AttrError::BadQuery { .. })),
                "{q:?} gave {got:?}"
            );
        }
        for (m, p) in [
            ("get", "/api/v1/pods"),
            ("TRACE", "/api/v1/pods"),
            ("CONNECT", "/version"),
            ("OPTIONS", "/api/v1/pods"),
            ("POST", "/api/v1/watch/namespaces/default/pods"),
            ("DELETE", "/api/v1/watch/pods"),
        ] {
            let got = parse_request(m, p);
            assert!(
                matches!(got, Err(AttrError::BadMethod { .. })),
                "{m} {p} gave {got:?}"
            );
        }
        // OPTIONS on a non-resource URL is just the lower-cased method.
        assert_eq!(
            parse_request("OPTIONS", "/version").unwrap().verb,
            "options"
        );
    }

    #[test]
    fn long_running_reads_booleans_as_the_server_does() {
        for path in [
            "/api/v1/pods?watch=true",
            "/api/v1/pods?watch=True",
            "/api/v1/pods?watch=1",
            "/api/v1/namespaces/d/pods/p?watch=true",
            "/api/v1/namespaces/d/pods/p/log?follow=True",
            "/api/v1/namespaces/d/pods/p/log?follow=1",
            "/api/v1/namespaces/d/pods/p/log?follow=true",
        ] {
            assert!(parse_request("GET", path).unwrap().long_running, "{path}");
        }
        for path in [
            "/api/v1/pods",
            "/api/v1/pods?watch=false",
            "/api/v1/pods?watch=0",
            "/api/v1/namespaces/d/pods/p",
            "/api/v1/namespaces/d/pods/p/log",
            "/api/v1/namespaces/d/pods/p/log?follow=false",
            "/api/v1/namespaces/d/pods/p/log?follow=0",
            "/api/v1/namespaces/d/pods/p?follow=true",
        ] {
            assert!(!parse_request("GET", path).unwrap().long_running, "{path}");
        }
    }

    #[test]
    fn duplicate_watch_first_value_wins_like_the_api_server() {
        let a = parse_request("GET", "/api/v1/pods?watch=false&watch=true").unwrap();
        assert_eq!(a.verb, "list");
        let a = parse_request("GET", "/api/v1/pods?watch=").unwrap();
        assert_eq!(a.verb, "watch");
    }
}
