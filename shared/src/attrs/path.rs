//! The request path: checked to be canonical and split into segments, each
//! percent-decoded once, as kube-apiserver reads it. Anything the API server
//! could read differently from us is refused, not guessed.

use std::borrow::Cow;

use super::{AttrError, percent_decode};

/// Request targets that are valid on the wire (an HTTP client will send
/// them) but that [`parse_request`] refuses, because kube-apiserver could read
/// them differently from the sidecar. For end-to-end tests: each must get 400
/// and never reach the upstream.
pub const HOSTILE_PATH_EXAMPLES: &[&str] = &[
    "/api/v1/namespaces/default%2Fsecrets",
    "/api/v1/namespaces/default/pods%2f..%2fsecrets",
    "/api/v1/namespaces/default/pods/%2E%2E/secrets",
    "/api/v1/namespaces/default/pods/web%2E0",
    "/api/v1/namespaces/default/pods/..%5Csecrets",
    "/api/v1/namespaces/default/pods/../../secrets",
    "/api/v1/namespaces/default/./pods",
    "/api/v1/namespaces//pods",
    "//api/v1/pods",
    "/api/v1/pods/",
    "/api/v1/namespaces/default/pods/web%000",
    "/api/v1/namespaces/default/pods/w%FF%FE",
    "/api/v1/namespaces/default%252Fsecrets",
    "/api/v1/watch",
];

/// Check the raw path and return its segments, each percent-decoded once
/// (a segment without an escape is borrowed: the common case, and this runs
/// for every request). The root path `/` has no segments.
pub(crate) fn canonical_segments(raw: &str) -> Result<Vec<Cow<'_, str>>, AttrError> {
    let bad = |why: &'static str| AttrError::NonCanonicalPath {
        path: raw.to_string(),
        why,
    };
    if !raw.starts_with('/') {
        return Err(bad("the path must start with '/'"));
    }
    for b in raw.bytes() {
        match b {
            0x00..=0x1f | 0x7f => return Err(bad("control character")),
            b' ' => return Err(bad("unencoded space")),
            b'\\' => return Err(bad("backslash")),
            b'#' => return Err(bad("fragment marker '#'")),
            0x80..=0xff => return Err(bad("unencoded non-ASCII character")),
            _ => {}
        }
    }
    if raw == "/" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for seg in raw[1..].split('/') {
        if seg.is_empty() {
            return Err(bad("empty path segment ('//' or a trailing '/')"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("'.' or '..' segment"));
        }
        if !seg.as_bytes().contains(&b'%') {
            out.push(Cow::Borrowed(seg));
            continue;
        }
        let bytes = percent_decode(seg).ok_or_else(|| bad("malformed percent-escape"))?;
        {
            for &b in &bytes {
                match b {
                    b'/' => return Err(bad("percent-encoded '/'")),
                    b'\\' => return Err(bad("percent-encoded backslash")),
                    b'.' => return Err(bad("percent-encoded '.'")),
                    b'%' => return Err(bad("percent-encoded '%' (double encoding)")),
                    0x00..=0x1f | 0x7f => return Err(bad("percent-encoded control character")),
                    _ => {}
                }
            }
        }
        let s = String::from_utf8(bytes).map_err(|_| bad("percent-escapes that are not UTF-8"))?;
        // No '.' is left after decoding (a percent-encoded one is refused).
        out.push(Cow::Owned(s));
    }
    Ok(out)
}

/// `path.IsValidPathSegmentName`: usable as one path segment.
pub(crate) fn is_valid_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attrs::parse_request;

    #[test]
    fn hostile_paths_are_rejected() {
        let hostile = [
            "/api/v1/namespaces/default%2Fpods",
            "/api/v1/namespaces/default%2fpods",
            "/api/v1/namespaces/default/pods/%2E%2E/secrets",
            "/api/v1/namespaces/default/pods/%2e%2e",
            "/api/v1/namespaces/default/pods/%2e",
            "/api/v1/namespaces/default/pods/web%2E0",
            "/api/v1/namespaces/default/pods/..%5Csecrets",
            "/api/v1/namespaces/default/pods/..\\secrets",
            "/api/v1/namespaces/default/pods/../secrets",
            "/api/v1/namespaces/default/./pods",
            "/api/v1/namespaces/default/pods/..",
            "/api/v1/namespaces//pods",
            "//api/v1/pods",
            "/api/v1/pods/",
            "/api/v1/namespaces/default/pods/web-0/",
            "/api/",
            // Real (kubectl proxy to a service root) but ends in '/': strict.
            "/api/v1/namespaces/default/services/http:web:80/proxy/",
            "/api/v1/namespaces/default/pods/web%000",
            "/api/v1/namespaces/default/pods/web\u{0}0",
            "/api/v1/namespaces/default/pods/web%0A0",
            "/api/v1/namespaces/default/pods/web\t0",
            "/api/v1/namespaces/default/pods/web 0",
            "/api/v1/namespaces/default/pods/w%C3",
            "/api/v1/namespaces/default/pods/w%FF%FE",
            "/api/v1/namespaces/default/pods/w%zz",
            "/api/v1/namespaces/default/pods/w%4",
            "/api/v1/namespaces/default/pods/wé",
            "/api/v1/namespaces/default%252Fpods",
            "/api/v1/namespaces/default/pods#frag",
            "api/v1/pods",
            "",
            "*",
            "/api/v1/watch",
            "/apis/apps/v1/proxy",
        ];
        for p in hostile {
            let got = parse_request("GET", p);
            assert!(
                matches!(got, Err(AttrError::NonCanonicalPath { .. })),
                "{p:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn published_hostile_examples_are_rejected() {
        for p in HOSTILE_PATH_EXAMPLES {
            assert!(http::Uri::try_from(*p).is_ok(), "{p} is not sendable");
            assert!(
                matches!(
                    parse_request("GET", p),
                    Err(AttrError::NonCanonicalPath { .. })
                ),
                "{p}"
            );
        }
    }
}
