//! Request attributes: what a Kubernetes API request asks for, parsed the way
//! kube-apiserver's `RequestInfoFactory.NewRequestInfo`
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) parses it.
//!
//! The policy decides on these attributes and the request is then forwarded
//! byte for byte, so the parser must read a path exactly as the API server will.
//! Where the API server (Go's `net/url` plus the restful router) could read a
//! path differently from us — percent-encoded slashes, backslashes or dots,
//! `.`/`..` segments, empty segments, double encoding, control characters —
//! the request is rejected, never guessed.
//!
//! Everything here is pure: two functions over strings and headers.

use serde::Serialize;

/// What kube-apiserver's `RequestInfo` holds, plus the selectors and dryRun.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestAttributes {
    /// True for `/api/...` and `/apis/...` resource requests; false for
    /// non-resource URLs (`/version`, `/healthz`, discovery roots...).
    pub is_resource_request: bool,
    /// The request path (no query), percent-decoded once as the API server
    /// decodes it. Since every escape that could change the meaning of the
    /// path is rejected, this is the received path for every request real
    /// clients send.
    pub path: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete,
    /// deletecollection; for non-resource requests the lower-cased HTTP
    /// method (get, post, ...). Connect subresources (`pods/exec`,
    /// `pods/attach`, `pods/portforward`, `*/proxy`) are always `create`,
    /// whether the client POSTs (SPDY) or GETs (WebSocket upgrade): that is
    /// what kube-apiserver checks since 1.30 and what keeps a read-only rule
    /// from allowing a WebSocket exec.
    pub verb: String,
    /// `api` or `apis` (empty for non-resource requests).
    pub api_prefix: String,
    /// API group; empty for the core group.
    pub api_group: String,
    /// API version, e.g. `v1`.
    pub api_version: String,
    /// Namespace; empty for cluster-scoped requests and for lists across all namespaces.
    /// As in kube-apiserver, the namespace object itself
    /// (`/api/v1/namespaces/NS`, and its `status`/`finalize`) carries
    /// namespace `NS` as well as name `NS`.
    pub namespace: String,
    /// Resource, lower-case plural, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `log`, `exec`, `status`, `token`; empty if none.
    pub subresource: String,
    /// Object name; empty for lists and creates. For a list or watch with a
    /// `fieldSelector` that pins `metadata.name` (what `kubectl get pod X -w`
    /// sends), the pinned name, as kube-apiserver does.
    pub name: String,
    /// `labelSelector` query parameter, decoded.
    pub label_selector: Option<String>,
    /// `fieldSelector` query parameter, decoded.
    pub field_selector: Option<String>,
    /// `dryRun=All` was asked for.
    pub dry_run: bool,
    /// The response is long-running, as kube-apiserver reads the query:
    /// a watch (verb `watch`, or a named GET with `watch`), or a `pods/log`
    /// with `follow`. Booleans are read as the server reads them, so
    /// `watch=True`, `watch=1` and even `watch=` count.
    pub long_running: bool,
}

impl RequestAttributes {
    /// `resource/subresource`, or just `resource`.
    pub fn resource_with_subresource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// True for the discovery requests RBAC's `system:discovery` role grants
    /// every authenticated user: GET of `/api`, `/api/v1` (any version),
    /// `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`, `/version` and
    /// `/openapi/*`.
    pub fn is_discovery(&self) -> bool {
        if self.is_resource_request || self.verb != "get" {
            return false;
        }
        let segs: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        matches!(
            segs.as_slice(),
            ["api"]
                | ["api", _]
                | ["apis"]
                | ["apis", _]
                | ["apis", _, _]
                | ["version"]
                | ["openapi", ..]
        )
    }

    /// True for the connect-style subresources whose verb is always `create`.
    pub fn is_connect(&self) -> bool {
        self.is_resource_request && is_connect_subresource(&self.subresource)
    }

    /// True where kube-apiserver answers a connection upgrade and the
    /// sidecar tunnels it: the core connect subresources `pods/exec`,
    /// `pods/attach`, `pods/portforward`, `pods/proxy`, `services/proxy` and
    /// `nodes/proxy`. Everywhere else an `Upgrade` header is dropped and the
    /// request is an ordinary one, so it is masked and recorded as such: an
    /// upgrade must never be a way around masking.
    pub fn upgrade_allowed(&self) -> bool {
        self.is_resource_request
            && self.api_prefix == "api"
            && self.api_group.is_empty()
            && matches!(
                (self.resource.as_str(), self.subresource.as_str()),
                ("pods", "exec" | "attach" | "portforward" | "proxy")
                    | ("services" | "nodes", "proxy")
            )
    }
}

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

/// Why a request line could not be parsed; answered with 400 `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("path {path:?} is not canonical: {why}")]
    NonCanonicalPath { path: String, why: &'static str },
    #[error("invalid query string: {why}")]
    BadQuery { why: String },
    #[error("unsupported method {method:?}")]
    BadMethod { method: String },
    #[error("invalid header {name}: {why}")]
    BadHeader { name: String, why: String },
}

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

/// Subresources that open a connection (exec, attach, port-forward, proxy).
fn is_connect_subresource(sub: &str) -> bool {
    matches!(sub, "exec" | "attach" | "portforward" | "proxy")
}

/// Parse a request line (method and the request target in origin form,
/// `/path?query`) into Kubernetes attributes.
pub fn parse_request(method: &str, path_and_query: &str) -> Result<RequestAttributes, AttrError> {
    let (raw_path, raw_query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let segments = canonical_segments(raw_path)?;
    let query = parse_query(raw_query.unwrap_or(""))?;

    let lower_method = match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
            method.to_ascii_lowercase()
        }
        _ => {
            return Err(AttrError::BadMethod {
                method: method.to_string(),
            });
        }
    };
    let path = if segments.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", segments.join("/"))
    };

    let mut attrs = RequestAttributes {
        path,
        verb: lower_method,
        ..RequestAttributes::default()
    };
    // Selectors and dryRun are recorded whatever the request kind.
    attrs.label_selector = query.first("labelSelector").map(str::to_string);
    attrs.field_selector = query.first("fieldSelector").map(str::to_string);
    attrs.dry_run = parse_dry_run(&query)?;

    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    // Shorter than /api/v1/X or not under a known prefix: a non-resource URL.
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return Ok(attrs);
    }
    let prefix = parts[0];
    let mut rest = &parts[1..];
    let mut group = "";
    if prefix == "apis" {
        // /apis/GROUP/VERSION alone is discovery, not a resource.
        if rest.len() < 3 {
            return Ok(attrs);
        }
        group = rest[0];
        rest = &rest[1..];
    }
    let version = rest[0];
    rest = &rest[1..];

    let verb: String;
    let mut special_verb = false;
    if matches!(rest[0], "watch" | "proxy") {
        if rest.len() < 2 {
            return Err(AttrError::NonCanonicalPath {
                path: attrs.path,
                why: "a watch or proxy path prefix must be followed by a resource",
            });
        }
        if rest[0] == "watch" && !matches!(method, "GET" | "HEAD") {
            // kube-apiserver would call this `watch` whatever the method and
            // then fail to route it; refusing is clearer than a verb that lies.
            return Err(AttrError::BadMethod {
                method: method.to_string(),
            });
        }
        verb = rest[0].to_string();
        rest = &rest[1..];
        special_verb = true;
    } else {
        verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => {
                return Err(AttrError::BadMethod {
                    method: method.to_string(),
                });
            }
        }
        .to_string();
    }

    let mut namespace = "";
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = rest[1];
        // /namespaces/NS/status and /finalize are subresources of the
        // namespace object itself; anything else is a namespaced resource.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }

    let mut resource = "";
    let mut name = "";
    let mut subresource = "";
    if let Some(r) = rest.first() {
        resource = r;
    }
    if let Some(n) = rest.get(1) {
        name = n;
    }
    // The legacy proxy verb takes everything after the name as a proxied path.
    if rest.len() >= 3 && verb != "proxy" {
        subresource = rest[2];
    }

    attrs.is_resource_request = true;
    attrs.api_prefix = prefix.to_string();
    attrs.api_group = group.to_string();
    attrs.api_version = version.to_string();
    attrs.namespace = namespace.to_string();
    attrs.resource = resource.to_string();
    attrs.name = name.to_string();
    attrs.subresource = subresource.to_string();
    attrs.verb = verb;

    if !special_verb && attrs.verb == "get" && attrs.name.is_empty() {
        attrs.verb = if query_bool(&query, "watch") {
            "watch"
        } else {
            "list"
        }
        .to_string();
        check_list_options(&query)?;
        let pinned = match &attrs.field_selector {
            Some(fs) => field_selector_exact_name(fs)?,
            None => None,
        };
        if let Some(pinned) = pinned.filter(|n| is_valid_path_segment_name(n)) {
            attrs.name = pinned;
        }
    }
    if !special_verb && attrs.verb == "delete" && attrs.name.is_empty() {
        attrs.verb = "deletecollection".to_string();
    }
    if !special_verb && is_connect_subresource(&attrs.subresource) {
        attrs.verb = "create".to_string();
    }
    attrs.long_running = attrs.verb == "watch"
        // kube-apiserver also streams a named GET with ?watch (verb get).
        || (attrs.verb == "get" && query_bool(&query, "watch"))
        || (attrs.subresource == "log" && query_bool(&query, "follow"));
    Ok(attrs)
}

/// Check the raw path and return its segments, each percent-decoded once.
/// The root path `/` has no segments.
fn canonical_segments(raw: &str) -> Result<Vec<String>, AttrError> {
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
        let bytes =
            percent_decode(seg.as_bytes()).ok_or_else(|| bad("malformed percent-escape"))?;
        if seg.contains('%') {
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
        if s == "." || s == ".." {
            return Err(bad("'.' or '..' segment"));
        }
        out.push(s);
    }
    Ok(out)
}

/// Decode `%XX` escapes; `None` on a malformed escape.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = hex_val(*input.get(i + 1)?)?;
            let lo = hex_val(*input.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A decoded query string, in order, as Go's `url.ParseQuery` reads it.
struct Query(Vec<(String, String)>);

impl Query {
    /// The first value of `key`: what kube-apiserver's parameter codec uses.
    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_query(raw: &str) -> Result<Query, AttrError> {
    let bad = |why: String| AttrError::BadQuery { why };
    let mut pairs = Vec::new();
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
    for piece in raw.split('&') {
        if piece.is_empty() {
            continue;
        }
        // Go's url.ParseQuery silently drops pairs with ';' — the API server
        // would then see different parameters than a naive reader.
        if piece.contains(';') {
            return Err(bad(format!("';' in query parameter {piece:?}")));
        }
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let key = query_unescape(k)
            .ok_or_else(|| bad(format!("malformed escape in parameter name {k:?}")))?;
        let value = query_unescape(v).ok_or_else(|| {
            bad(format!(
                "malformed escape in the value of parameter {key:?}"
            ))
        })?;
        if key.is_empty() {
            continue;
        }
        pairs.push((key, value));
    }
    Ok(Query(pairs))
}

/// `url.QueryUnescape`: `+` is a space, `%XX` escapes; result must be UTF-8.
fn query_unescape(s: &str) -> Option<String> {
    let plus: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    String::from_utf8(percent_decode(&plus)?).ok()
}

/// kube-apiserver's `Convert_Slice_string_To_bool`: the first value decides;
/// only `0` and `false` (any case) are false, everything else (even empty) true.
fn query_bool(q: &Query, key: &str) -> bool {
    match q.first(key) {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

/// The integer list options kube-apiserver decodes before deciding list vs
/// watch; a value it cannot decode fails the request there, so it fails here.
fn check_list_options(q: &Query) -> Result<(), AttrError> {
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = q.first(key).filter(|v| v.parse::<i64>().is_err()) {
            return Err(AttrError::BadQuery {
                why: format!("{key}={v:?} is not an integer"),
            });
        }
    }
    Ok(())
}

/// `dryRun` accepts only `All` (kube-apiserver answers anything else with 400).
fn parse_dry_run(q: &Query) -> Result<bool, AttrError> {
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
fn field_selector_exact_name(selector: &str) -> Result<Option<String>, AttrError> {
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

/// `path.IsValidPathSegmentName`: usable as one path segment.
fn is_valid_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('%')
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
                    let key = percent_decode(raw_key.as_bytes())
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

    /// Expected attributes, compactly: verb, group, version, ns, resource, sub, name.
    struct Want {
        resource_request: bool,
        verb: &'static str,
        group: &'static str,
        version: &'static str,
        ns: &'static str,
        resource: &'static str,
        sub: &'static str,
        name: &'static str,
    }

    const fn r(
        verb: &'static str,
        group: &'static str,
        version: &'static str,
        ns: &'static str,
        resource: &'static str,
        sub: &'static str,
        name: &'static str,
    ) -> Want {
        Want {
            resource_request: true,
            verb,
            group,
            version,
            ns,
            resource,
            sub,
            name,
        }
    }

    const fn nr(verb: &'static str) -> Want {
        Want {
            resource_request: false,
            verb,
            group: "",
            version: "",
            ns: "",
            resource: "",
            sub: "",
            name: "",
        }
    }

    /// Request lines as kubectl, client-go, the Python client and kube-rs send them.
    fn table() -> Vec<(&'static str, &'static str, Want)> {
        vec![
            // --- discovery and other non-resource URLs ---
            ("GET", "/version?timeout=32s", nr("get")),
            ("GET", "/api?timeout=32s", nr("get")),
            ("GET", "/apis?timeout=32s", nr("get")),
            ("GET", "/api/v1?timeout=32s", nr("get")),
            ("GET", "/apis/apps", nr("get")),
            ("GET", "/apis/apps/v1?timeout=32s", nr("get")),
            ("GET", "/apis/apiextensions.k8s.io/v1", nr("get")),
            ("GET", "/openapi/v2?timeout=32s", nr("get")),
            ("GET", "/openapi/v3?timeout=32s", nr("get")),
            (
                "GET",
                "/openapi/v3/apis/apps/v1?hash=9C4C0E2DBB3E4F8A1D1E2B6F0C2E5A7B9D3F1A2C4E6B8D0F2A4C6E8B0D2F4A6C8E0B2D4F6A8C0E2B4D6F8A0C2E4B6D8F0A2C4E6",
                nr("get"),
            ),
            (
                "GET",
                "/openapi/v3/api/v1?hash=ABCDEF0123&timeout=32s",
                nr("get"),
            ),
            ("GET", "/healthz", nr("get")),
            ("GET", "/livez?verbose", nr("get")),
            ("GET", "/readyz", nr("get")),
            ("GET", "/metrics", nr("get")),
            ("GET", "/", nr("get")),
            ("HEAD", "/version", nr("head")),
            ("POST", "/logs", nr("post")),
            // --- core group, namespaced ---
            (
                "GET",
                "/api/v1/namespaces/default/pods?limit=500",
                r("list", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0",
                r("get", "", "v1", "default", "pods", "", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-0&watch=true&resourceVersion=123&allowWatchBookmarks=true&timeoutSeconds=300",
                r("watch", "", "v1", "default", "pods", "", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-0&limit=500",
                r("list", "", "v1", "default", "pods", "", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&limit=500",
                r("list", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?allowWatchBookmarks=true&resourceVersion=4711&timeoutSeconds=412&watch=true",
                r("watch", "", "v1", "default", "pods", "", ""),
            ),
            // Python client renders booleans as True.
            (
                "GET",
                "/api/v1/namespaces/default/pods?watch=True&timeoutSeconds=5",
                r("watch", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?watch=false",
                r("list", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?watch=0",
                r("list", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?watch=1",
                r("watch", "", "v1", "default", "pods", "", ""),
            ),
            // kube-rs watcher with bookmarks and a continue token.
            (
                "GET",
                "/api/v1/namespaces/default/pods?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12",
                r("watch", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods?limit=500&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTJ9",
                r("list", "", "v1", "default", "pods", "", ""),
            ),
            // Legacy /watch/ prefix.
            (
                "GET",
                "/api/v1/watch/namespaces/default/pods",
                r("watch", "", "v1", "default", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/default/pods/web-0",
                r("watch", "", "v1", "default", "pods", "", "web-0"),
            ),
            (
                "GET",
                "/api/v1/watch/pods",
                r("watch", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces",
                r("watch", "", "v1", "", "namespaces", "", ""),
            ),
            (
                "GET",
                "/api/v1/pods?limit=500",
                r("list", "", "v1", "", "pods", "", ""),
            ),
            (
                "GET",
                "/api/v1/pods?watch=true&resourceVersion=0",
                r("watch", "", "v1", "", "pods", "", ""),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods?fieldManager=kubectl-create&fieldValidation=Strict",
                r("create", "", "v1", "default", "pods", "", ""),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods?fieldManager=kubectl-run",
                r("create", "", "v1", "default", "pods", "", ""),
            ),
            (
                "PUT",
                "/api/v1/namespaces/default/configmaps/app-config?fieldManager=kubectl-replace&fieldValidation=Strict",
                r(
                    "update",
                    "",
                    "v1",
                    "default",
                    "configmaps",
                    "",
                    "app-config",
                ),
            ),
            (
                "PATCH",
                "/api/v1/namespaces/default/configmaps/app-config?fieldManager=kubectl-edit&fieldValidation=Strict",
                r("patch", "", "v1", "default", "configmaps", "", "app-config"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods/web-0",
                r("delete", "", "v1", "default", "pods", "", "web-0"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
                r("deletecollection", "", "v1", "default", "pods", "", ""),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/configmaps",
                r(
                    "deletecollection",
                    "",
                    "v1",
                    "default",
                    "configmaps",
                    "",
                    "",
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/secrets/db-password",
                r("get", "", "v1", "default", "secrets", "", "db-password"),
            ),
            (
                "GET",
                "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt",
                r(
                    "get",
                    "",
                    "v1",
                    "kube-system",
                    "configmaps",
                    "",
                    "kube-root-ca.crt",
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb-0%2CinvolvedObject.namespace%3Ddefault%2CinvolvedObject.uid%3D1f0e&limit=500",
                r("list", "", "v1", "default", "events", "", ""),
            ),
            // --- subresources ---
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/log?container=app&follow=true&tailLines=10",
                r("get", "", "v1", "default", "pods", "log", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/log",
                r("get", "", "v1", "default", "pods", "log", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/status",
                r("get", "", "v1", "default", "pods", "status", "web-0"),
            ),
            (
                "PATCH",
                "/api/v1/namespaces/default/pods/web-0/status?fieldManager=kube-rs",
                r("patch", "", "v1", "default", "pods", "status", "web-0"),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-0/eviction",
                r("create", "", "v1", "default", "pods", "eviction", "web-0"),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-0/binding",
                r("create", "", "v1", "default", "pods", "binding", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/ephemeralcontainers",
                r(
                    "get",
                    "",
                    "v1",
                    "default",
                    "pods",
                    "ephemeralcontainers",
                    "web-0",
                ),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/serviceaccounts/mcp/token",
                r(
                    "create",
                    "",
                    "v1",
                    "default",
                    "serviceaccounts",
                    "token",
                    "mcp",
                ),
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/prod/deployments/web/scale",
                r(
                    "update",
                    "apps",
                    "v1",
                    "prod",
                    "deployments",
                    "scale",
                    "web",
                ),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/prod/deployments/web/scale",
                r("get", "apps", "v1", "prod", "deployments", "scale", "web"),
            ),
            // --- connect subresources: always create ---
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-0/exec?command=echo&command=hi&container=app&stdout=true&stderr=true",
                r("create", "", "v1", "default", "pods", "exec", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/exec?command=sh&container=app&stdin=true&stdout=true&tty=true",
                r("create", "", "v1", "default", "pods", "exec", "web-0"),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-0/attach?container=app&stdin=true&stdout=true&tty=true",
                r("create", "", "v1", "default", "pods", "attach", "web-0"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/attach?container=app&stdout=true",
                r("create", "", "v1", "default", "pods", "attach", "web-0"),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-0/portforward",
                r(
                    "create",
                    "",
                    "v1",
                    "default",
                    "pods",
                    "portforward",
                    "web-0",
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0/portforward?ports=8080",
                r(
                    "create",
                    "",
                    "v1",
                    "default",
                    "pods",
                    "portforward",
                    "web-0",
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-0:8080/proxy/metrics",
                r("create", "", "v1", "default", "pods", "proxy", "web-0:8080"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/services/http:web:80/proxy/healthz",
                r(
                    "create",
                    "",
                    "v1",
                    "default",
                    "services",
                    "proxy",
                    "http:web:80",
                ),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/services/web/proxy/cache",
                r("create", "", "v1", "default", "services", "proxy", "web"),
            ),
            (
                "GET",
                "/api/v1/nodes/node-1/proxy/stats/summary",
                r("create", "", "v1", "", "nodes", "proxy", "node-1"),
            ),
            (
                "GET",
                "/api/v1/nodes/node-1/proxy/metrics/cadvisor",
                r("create", "", "v1", "", "nodes", "proxy", "node-1"),
            ),
            // --- namespaces and cluster-scoped objects ---
            (
                "GET",
                "/api/v1/namespaces",
                r("list", "", "v1", "", "namespaces", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default",
                r("get", "", "v1", "default", "namespaces", "", "default"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/scratch",
                r("delete", "", "v1", "scratch", "namespaces", "", "scratch"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/scratch/finalize",
                r(
                    "update",
                    "",
                    "v1",
                    "scratch",
                    "namespaces",
                    "finalize",
                    "scratch",
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/scratch/status",
                r(
                    "get",
                    "",
                    "v1",
                    "scratch",
                    "namespaces",
                    "status",
                    "scratch",
                ),
            ),
            (
                "POST",
                "/api/v1/namespaces?fieldManager=kubectl-create",
                r("create", "", "v1", "", "namespaces", "", ""),
            ),
            (
                "GET",
                "/api/v1/nodes?limit=500",
                r("list", "", "v1", "", "nodes", "", ""),
            ),
            (
                "GET",
                "/api/v1/nodes/node-1",
                r("get", "", "v1", "", "nodes", "", "node-1"),
            ),
            (
                "GET",
                "/api/v1/persistentvolumes",
                r("list", "", "v1", "", "persistentvolumes", "", ""),
            ),
            (
                "GET",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                r(
                    "list",
                    "apiextensions.k8s.io",
                    "v1",
                    "",
                    "customresourcedefinitions",
                    "",
                    "",
                ),
            ),
            (
                "GET",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/accessrequests.mcp-warden.io",
                r(
                    "get",
                    "apiextensions.k8s.io",
                    "v1",
                    "",
                    "customresourcedefinitions",
                    "",
                    "accessrequests.mcp-warden.io",
                ),
            ),
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector=kubernetes.io%2Fbootstrapping%3Drbac-defaults",
                r(
                    "list",
                    "rbac.authorization.k8s.io",
                    "v1",
                    "",
                    "clusterroles",
                    "",
                    "",
                ),
            ),
            (
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings",
                r(
                    "create",
                    "rbac.authorization.k8s.io",
                    "v1",
                    "prod",
                    "rolebindings",
                    "",
                    "",
                ),
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                r(
                    "create",
                    "authorization.k8s.io",
                    "v1",
                    "",
                    "selfsubjectaccessreviews",
                    "",
                    "",
                ),
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                r(
                    "create",
                    "authorization.k8s.io",
                    "v1",
                    "",
                    "selfsubjectrulesreviews",
                    "",
                    "",
                ),
            ),
            (
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                r(
                    "create",
                    "authentication.k8s.io",
                    "v1",
                    "",
                    "selfsubjectreviews",
                    "",
                    "",
                ),
            ),
            // --- named groups ---
            (
                "GET",
                "/apis/apps/v1/namespaces/prod/deployments?limit=500",
                r("list", "apps", "v1", "prod", "deployments", "", ""),
            ),
            (
                "GET",
                "/apis/apps/v1/deployments",
                r("list", "apps", "v1", "", "deployments", "", ""),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/prod/deployments/web?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
                r("patch", "apps", "v1", "prod", "deployments", "", "web"),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/prod/deployments/web?fieldManager=kubectl&fieldValidation=Strict&force=true",
                r("patch", "apps", "v1", "prod", "deployments", "", "web"),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/prod/deployments/web?dryRun=All&fieldManager=kubectl-client-side-apply",
                r("patch", "apps", "v1", "prod", "deployments", "", "web"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/prod/replicasets?labelSelector=app%3Dweb%2Cpod-template-hash+in+%28abc%29",
                r(
                    "deletecollection",
                    "apps",
                    "v1",
                    "prod",
                    "replicasets",
                    "",
                    "",
                ),
            ),
            (
                "GET",
                "/apis/batch/v1/namespaces/jobs/cronjobs/nightly",
                r("get", "batch", "v1", "jobs", "cronjobs", "", "nightly"),
            ),
            (
                "POST",
                "/apis/batch/v1/namespaces/default/jobs",
                r("create", "batch", "v1", "default", "jobs", "", ""),
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager",
                r(
                    "get",
                    "coordination.k8s.io",
                    "v1",
                    "kube-system",
                    "leases",
                    "",
                    "kube-controller-manager",
                ),
            ),
            (
                "GET",
                "/apis/networking.k8s.io/v1/ingresses",
                r("list", "networking.k8s.io", "v1", "", "ingresses", "", ""),
            ),
            (
                "GET",
                "/apis/mcp-warden.io/v1alpha1/namespaces/agents/accessrequests?watch=1",
                r(
                    "watch",
                    "mcp-warden.io",
                    "v1alpha1",
                    "agents",
                    "accessrequests",
                    "",
                    "",
                ),
            ),
            (
                "PUT",
                "/apis/mcp-warden.io/v1alpha1/namespaces/agents/accessrequests/ar-1/status",
                r(
                    "update",
                    "mcp-warden.io",
                    "v1alpha1",
                    "agents",
                    "accessrequests",
                    "status",
                    "ar-1",
                ),
            ),
            (
                "GET",
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                r(
                    "list",
                    "metrics.k8s.io",
                    "v1beta1",
                    "default",
                    "pods",
                    "",
                    "",
                ),
            ),
            (
                "GET",
                "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/http_requests",
                r(
                    "get",
                    "custom.metrics.k8s.io",
                    "v1beta1",
                    "default",
                    "pods",
                    "http_requests",
                    "*",
                ),
            ),
            (
                "HEAD",
                "/api/v1/namespaces/default/pods/web-0",
                r("get", "", "v1", "default", "pods", "", "web-0"),
            ),
            // Legacy proxy verb: no subresource, the rest is the proxied path.
            (
                "GET",
                "/api/v1/proxy/namespaces/default/pods/web-0/metrics",
                r("proxy", "", "v1", "default", "pods", "", "web-0"),
            ),
        ]
    }

    #[test]
    fn real_request_lines() {
        let table = table();
        assert!(table.len() >= 60, "only {} lines", table.len());
        for (method, line, want) in table {
            let got =
                parse_request(method, line).unwrap_or_else(|e| panic!("{method} {line}: {e}"));
            let ctx = format!("{method} {line} -> {got:?}");
            assert_eq!(
                got.is_resource_request, want.resource_request,
                "resource? {ctx}"
            );
            assert_eq!(got.verb, want.verb, "verb {ctx}");
            assert_eq!(got.api_group, want.group, "group {ctx}");
            assert_eq!(got.api_version, want.version, "version {ctx}");
            assert_eq!(got.namespace, want.ns, "namespace {ctx}");
            assert_eq!(got.resource, want.resource, "resource {ctx}");
            assert_eq!(got.subresource, want.sub, "subresource {ctx}");
            assert_eq!(got.name, want.name, "name {ctx}");
            if want.resource_request {
                let prefix = if want.group.is_empty() { "api" } else { "apis" };
                assert_eq!(got.api_prefix, prefix, "prefix {ctx}");
            } else {
                assert_eq!(got.api_prefix, "", "prefix {ctx}");
            }
            let path = line.split('?').next().unwrap_or_default();
            assert_eq!(got.path, path, "path {ctx}");
        }
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
    fn discovery_is_recognised() {
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
            "/openapi/v3/apis/apps/v1",
        ] {
            let a = parse_request("GET", p).unwrap();
            assert!(a.is_discovery(), "{p}");
        }
        for (m, p) in [
            ("POST", "/api"),
            ("GET", "/healthz"),
            ("GET", "/api/v1/pods"),
            ("GET", "/apis/apps/v1/deployments"),
            ("GET", "/metrics"),
            ("GET", "/"),
        ] {
            let a = parse_request(m, p).unwrap();
            assert!(!a.is_discovery(), "{m} {p}");
        }
    }

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
    fn harmless_escapes_decode_like_the_api_server() {
        let a = parse_request("GET", "/api/v1/namespaces/de%66ault/pods/web-0").unwrap();
        assert_eq!(
            (a.namespace.as_str(), a.path.as_str()),
            ("default", "/api/v1/namespaces/default/pods/web-0")
        );
        let a =
            parse_request("GET", "/api/v1/namespaces/d/services/web/proxy/search%20me").unwrap();
        assert_eq!(a.verb, "create");
        // Exec commands may carry newlines and non-ASCII once decoded.
        let a = parse_request(
            "POST",
            "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=echo+a%0Aecho+%C3%A9",
        )
        .unwrap();
        assert_eq!(a.resource_with_subresource(), "pods/exec");
        assert!(a.is_connect());
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
            "/api/v1/namespaces/d/pods/p?follow=true",
        ] {
            assert!(!parse_request("GET", path).unwrap().long_running, "{path}");
        }
    }

    #[test]
    fn upgrades_only_for_the_connect_subresources_the_sidecar_tunnels() {
        for (method, path) in [
            ("GET", "/api/v1/namespaces/d/pods/p/exec?command=sh"),
            ("POST", "/api/v1/namespaces/d/pods/p/attach"),
            ("POST", "/api/v1/namespaces/d/pods/p/portforward"),
            ("GET", "/api/v1/namespaces/d/pods/p/proxy/x"),
            ("GET", "/api/v1/namespaces/d/services/s/proxy"),
            ("GET", "/api/v1/nodes/n/proxy/metrics"),
        ] {
            assert!(
                parse_request(method, path).unwrap().upgrade_allowed(),
                "{path}"
            );
        }
        for (method, path) in [
            ("GET", "/api/v1/namespaces/demo/secrets/db"),
            ("GET", "/api/v1/namespaces/demo/secrets"),
            ("GET", "/api/v1/namespaces/demo/pods?watch=true"),
            ("PATCH", "/api/v1/namespaces/demo/configmaps/c"),
            ("GET", "/api/v1/namespaces/d/pods/p/log"),
            ("GET", "/apis/example.com/v1/namespaces/d/widgets/w/exec"),
            ("GET", "/api/v1/namespaces/d/secrets/s/proxy"),
            ("GET", "/version"),
            ("GET", "/api"),
        ] {
            assert!(
                !parse_request(method, path).unwrap().upgrade_allowed(),
                "{path}"
            );
        }
    }

    #[test]
    fn duplicate_watch_first_value_wins_like_the_api_server() {
        let a = parse_request("GET", "/api/v1/pods?watch=false&watch=true").unwrap();
        assert_eq!(a.verb, "list");
        let a = parse_request("GET", "/api/v1/pods?watch=").unwrap();
        assert_eq!(a.verb, "watch");
    }

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
