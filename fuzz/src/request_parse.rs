//! `request_parse`: `shared::attrs::parse_request` and
//! `impersonation_from_headers` on a request head given as text:
//!
//! ```text
//! METHOD SP PATH-AND-QUERY LF
//! header-name: value LF ...
//! ```
//!
//! (a first line without a space is a `GET` of that target; header lines
//! that are not valid HTTP headers are skipped).
//!
//! Properties, beyond "never panics":
//! - an accepted path is canonical: starts with `/`, no empty, `.` or `..`
//!   segment; the verb is non-empty lower-case ASCII;
//! - a resource request has `api`/`apis`, a version, a resource (and a
//!   group under `apis`); a connect subresource (exec, attach, portforward,
//!   proxy) is always verb `create` unless the path used the `watch`/`proxy`
//!   verb prefix; a `watch` prefix only with GET/HEAD;
//! - reading is stable: the decoded path, re-encoded with escapes only where
//!   needed, parses to the same attributes (the sidecar decides on what it
//!   parsed and forwards the raw bytes, so both must mean the same request);
//! - accepted impersonation always names a user.

use mcp_warden_shared::attrs::{RequestAttributes, impersonation_from_headers, parse_request};

/// The property check; panics on a violation.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let first = first.strip_suffix('\r').unwrap_or(first);
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));

    if let Ok(attrs) = parse_request(method, target) {
        check_attrs(method, target, &attrs);
        let again = reencode(&attrs.path);
        let query = target.split_once('?').map(|(_, q)| q);
        let target2 = match query {
            Some(q) => format!("{again}?{q}"),
            None => again,
        };
        match parse_request(method, &target2) {
            Ok(a2) => assert_eq!(
                a2, attrs,
                "{method} {target:?} and its re-encoding {target2:?} read differently"
            ),
            Err(e) => {
                panic!("{method} {target:?} accepted but its re-encoding {target2:?} not: {e}")
            }
        }
    }

    let mut headers = http::HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_bytes(value.trim_start().as_bytes()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(imp) = impersonation_from_headers(&headers) {
        assert!(
            imp.is_empty() || imp.user.is_some(),
            "impersonation without a user accepted: {imp:?}"
        );
        let groups = headers.get_all("impersonate-group").iter().count();
        assert_eq!(
            imp.groups.len(),
            groups,
            "impersonated groups lost or invented"
        );
    }
}

fn check_attrs(method: &str, target: &str, a: &RequestAttributes) {
    let ctx = || format!("{method} {target:?} -> {a:?}");
    assert!(a.path.starts_with('/'), "path not absolute: {}", ctx());
    if a.path != "/" {
        for seg in a.path[1..].split('/') {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "non-canonical segment accepted: {}",
                ctx()
            );
        }
    }
    assert!(
        !a.verb.is_empty() && a.verb.bytes().all(|b| b.is_ascii_lowercase()),
        "bad verb: {}",
        ctx()
    );
    if !a.is_resource_request {
        return;
    }
    assert!(
        matches!(a.api_prefix.as_str(), "api" | "apis"),
        "bad prefix: {}",
        ctx()
    );
    assert!(!a.api_version.is_empty(), "no version: {}", ctx());
    assert!(!a.resource.is_empty(), "no resource: {}", ctx());
    assert_eq!(
        a.api_prefix == "apis",
        !a.api_group.is_empty(),
        "group: {}",
        ctx()
    );
    let segs: Vec<&str> = a.path[1..].split('/').collect();
    let prefixed_verb = segs
        .get(if a.api_prefix == "apis" { 3 } else { 2 })
        .copied();
    let special = matches!(prefixed_verb, Some("watch" | "proxy"));
    if special {
        assert_eq!(
            Some(a.verb.as_str()),
            prefixed_verb,
            "verb prefix: {}",
            ctx()
        );
        if a.verb == "watch" {
            assert!(matches!(method, "GET" | "HEAD"), "watch via {}", ctx());
        }
    } else if a.is_connect() {
        assert_eq!(
            a.verb,
            "create",
            "connect subresource not `create`: {}",
            ctx()
        );
    }
    assert!(
        matches!(
            a.verb.as_str(),
            "get"
                | "list"
                | "watch"
                | "create"
                | "update"
                | "patch"
                | "delete"
                | "deletecollection"
                | "proxy"
        ),
        "not a Kubernetes verb: {}",
        ctx()
    );
}

/// The decoded path written back with `%XX` only where a raw byte could not
/// stand in a path segment.
fn reencode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'/' => out.push('/'),
            0x21..=0x7e if !matches!(b, b'%' | b'?' | b'#' | b'\\') => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
