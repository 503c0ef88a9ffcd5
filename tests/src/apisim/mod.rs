//! kube-apisim: a small API server that behaves like kube-apiserver for what
//! kubectl, client-go, the Python client and kube-rs send.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Response body type of every kube-apisim handler (streams included).
pub type ResBody = BoxBody<Bytes, std::io::Error>;

pub mod streams;
