//! The webhook's end-to-end tests, one test binary (one link on CI): each
//! module is one area. Select an area by its module name, e.g.
//! `cargo test -p mcp-warden-webhook --test it -- fixtures::`.

mod fixtures;
mod manifests;
mod selfmanaged;
mod serve;
