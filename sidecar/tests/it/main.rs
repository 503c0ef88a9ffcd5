//! The sidecar's end-to-end tests, one test binary (one link on CI): each
//! module is one area, `common` the support they share. Select an area by
//! its module name, e.g. `cargo test --workspace --test it -- proxy::`.

mod approvals;
mod binary;
mod clients;
mod common;
mod connections;
mod https_alias;
mod kube_rs;
mod mcp_front;
mod proxy;
mod recording_collector;
mod recording_delivery;
