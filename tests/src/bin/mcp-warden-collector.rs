//! mcp-warden-collector: test collector (being written).
fn main() {}
