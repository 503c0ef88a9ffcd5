//! mcp-warden-sidecar: the enforcement point in every MCP server pod.
//!
//! Module ownership while the first version is built in parallel:
//! proxy/config/tls/admin (sidecar work), `policy_store` + `policy_cli`
//! (policy work), `mask_body` (masking work), `recording` (recording work).

pub mod mask_body;
pub mod policy_cli;
pub mod policy_store;
pub mod recording;
