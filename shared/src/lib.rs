//! mcp-warden-shared: the pure cores of mcp-warden.
//!
//! Everything in this crate is a function over data: no sockets, no files, no
//! clocks, no environment. The sidecar and the webhook wrap these cores in
//! small servers; tests exercise them directly.

pub mod access_request;
pub mod attrs;
pub mod audit;
pub mod body;
pub mod collector;
pub mod contract;
pub mod enduser;
pub mod grant;
pub mod identity;
pub mod json_text;
pub mod mask;
pub mod mcp;
pub mod names;
pub mod policy;
pub mod preview;
pub mod proto;
pub mod status;
