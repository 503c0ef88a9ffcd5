//! Request attributes: what a Kubernetes API request asks for, parsed the way
//! kube-apiserver's `RequestInfoFactory` parses it.
//!
//! INTERFACE FIXED BY THE LEAD — the parser helper fills in the bodies.
//! Sidecar, policy and recording code depend on these names.

use serde::Serialize;

/// What kube-apiserver's `RequestInfo` holds, plus the selectors and dryRun.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestAttributes {
    /// True for `/api/...` and `/apis/...` resource requests; false for
    /// non-resource URLs (`/version`, `/healthz`, discovery roots...).
    pub is_resource_request: bool,
    /// The request path (no query), as received.
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
    pub namespace: String,
    /// Resource, lower-case plural, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `log`, `exec`, `status`, `token`; empty if none.
    pub subresource: String,
    /// Object name; empty for lists and creates.
    pub name: String,
    /// `labelSelector` query parameter, decoded.
    pub label_selector: Option<String>,
    /// `fieldSelector` query parameter, decoded.
    pub field_selector: Option<String>,
    /// `dryRun=All` was asked for.
    pub dry_run: bool,
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
    /// `Impersonate-Extra-KEY: value` pairs.
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
}
