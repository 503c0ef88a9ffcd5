//! mcp-warden-webhook library.
