//! Request attributes: what a Kubernetes API request asks for, parsed the way
//! kube-apiserver's `RequestInfoFactory.NewRequestInfo`
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) parses it.
//!
//! The policy decides on these attributes and the request is then forwarded
//! byte for byte, so the parser must read a request exactly as the API server
//! will. Three jobs, one module each:
//! - [`path`]: the request path, checked to be canonical. Where the API server
//!   (Go's `net/url` plus the restful router) could read a path differently
//!   from us — percent-encoded slashes, backslashes or dots, `.`/`..`
//!   segments, empty segments, double encoding, control characters — the
//!   request is rejected, never guessed.
//! - [`query`]: the one query-string parser of the project ([`Query`]), and
//!   the parameters the API server reads before deciding (booleans as its
//!   parameter codec reads them, list options, `dryRun`, a field selector
//!   pinning a name).
//! - [`impersonation`]: the `Impersonate-*` headers.
//!
//! Everything here is pure: functions over strings and headers.

use std::borrow::Cow;

use serde::Serialize;

pub mod impersonation;
pub mod path;
pub mod query;

pub use impersonation::{Impersonation, impersonation_from_headers};
pub use path::HOSTILE_PATH_EXAMPLES;
pub use query::{Query, parse_bool};

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
    let segments = path::canonical_segments(raw_path)?;
    let query = Query::parse_strict(raw_query.unwrap_or(""))?;

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
    // Without an escape, the canonical path is the path as sent.
    let path = if segments.iter().all(|s| matches!(s, Cow::Borrowed(_))) {
        raw_path.to_string()
    } else {
        format!("/{}", segments.join("/"))
    };

    let mut attrs = RequestAttributes {
        path,
        verb: lower_method,
        ..RequestAttributes::default()
    };
    // Selectors and dryRun are recorded whatever the request kind.
    attrs.label_selector = query.get("labelSelector").map(str::to_string);
    attrs.field_selector = query.get("fieldSelector").map(str::to_string);
    attrs.dry_run = query::dry_run(&query)?;

    let parts: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
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
        attrs.verb = if query.flag("watch") { "watch" } else { "list" }.to_string();
        query::check_list_options(&query)?;
        let pinned = match &attrs.field_selector {
            Some(fs) => query::field_selector_exact_name(fs)?,
            None => None,
        };
        if let Some(pinned) = pinned.filter(|n| path::is_valid_path_segment_name(n)) {
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
        || (attrs.verb == "get" && query.flag("watch"))
        || (attrs.subresource == "log" && query.flag("follow"));
    Ok(attrs)
}

/// Decode `%XX` escapes as the API server does for paths, names and header
/// keys; `None` on a malformed escape (a `%` not followed by two hex digits).
/// The bytes may be anything, including invalid UTF-8: callers decide.
pub(crate) fn percent_decode(input: &str) -> Option<Vec<u8>> {
    if !escapes_are_well_formed(input) {
        return None;
    }
    Some(percent_encoding::percent_decode_str(input).collect())
}

/// Every `%` starts a `%XX` escape. `percent_encoding` passes a malformed
/// escape through as text; Go's `url` package refuses it, so we do too.
pub(crate) fn escapes_are_well_formed(input: &str) -> bool {
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests;
