//! mcp-warden-sidecar binary.
fn main() {}
