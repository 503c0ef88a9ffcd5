//! mcp-warden-io: the I/O helpers the sidecar, the webhook and the test
//! servers share, each written once.
//!
//! - [`watch`]: re-reading files the kubelet or cert-manager replace by
//!   swapping a `..data` symlink (file events plus a poll, our own reads
//!   filtered out).
//! - [`accept`]: the TCP accept loop and the TLS handshake with its timeout.
//! - [`pki`]: a local CA and the serving certificates it signs (rcgen), and
//!   the rustls server configuration they are served with.
//! - [`signal`]: the shutdown signal (SIGTERM or SIGINT).
//!
//! The pure cores stay in `mcp-warden-shared`, which does no I/O.

pub mod accept;
pub mod pki;
pub mod signal;
pub mod watch;

pub use signal::shutdown_signal;
