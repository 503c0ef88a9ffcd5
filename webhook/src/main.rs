//! mcp-warden-webhook binary.
fn main() {}
