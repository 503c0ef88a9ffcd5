//! mcp-warden-webhook: the mutating admission webhook that injects the
//! mcp-warden sidecar into MCP server pods and takes the service-account token
//! away from the app containers.
//!
//! - [`patch`]: the pure core — which pods to inject and the RFC 6902 patch.
//! - [`config`]: the injection settings (`--config` YAML + `MCP_WARDEN_*`).
//! - [`manifest`]: `inject -f`, the same patch offline over workload YAML.
//! - [`admission`]: AdmissionReview in, AdmissionReview out (pure).
//! - [`server`]: the HTTPS `/mutate` server and the admin server ([`run`]).
//! - [`tls`]: serving certificates from files, hot-reloaded.
//! - [`selfmanaged`]: the self-managed CA, its Secret and the caBundle (kube I/O).

pub mod admission;
pub mod approval;
pub mod config;
pub mod manifest;
pub mod patch;
pub mod plugin;
pub mod selfmanaged;
pub mod server;
pub mod tls;

pub use config::InjectConfig;
pub use patch::{PatchOutcome, RefuseReason, SkipReason, patch};
pub use server::{ServeConfig, run};
