//! kube-apisim: a small API server that behaves like kube-apiserver for what
//! kubectl, client-go, the Python client and kube-rs send.
//!
//! Layout: [`server`] (TLS accept loop, start-up), [`auth`] (bearer tokens),
//! [`router`] (paths), [`handler`] (verbs, the one place errors become
//! Status responses), [`store`] (objects, resourceVersions, watch hub),
//! [`registry`] + [`discovery`] (types, discovery documents), [`table`],
//! [`patch`], [`selector`], [`objects`] (defaults, validation), [`schema`]
//! (custom resources against their CRD's structural schema), [`seed`],
//! [`web`] (HTTP plumbing), [`streams`] (log/exec/attach/port-forward).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Response body type of every kube-apisim handler (streams included).
pub type ResBody = BoxBody<Bytes, std::io::Error>;

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod handler;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod registry;
pub mod router;
pub mod schema;
pub mod seed;
pub mod selector;
pub mod server;
pub mod store;
pub mod streams;
pub mod table;
pub mod tls;
pub mod web;
