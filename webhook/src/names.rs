//! Names, paths and ports that DESIGN.md fixes as contracts ("Names on the
//! cluster"). Everything that writes or reads a pod uses these constants.

/// Namespace label that turns injection on.
pub const NAMESPACE_INJECTION_LABEL: &str = "mcp-warden.io/injection";
/// Value of [`NAMESPACE_INJECTION_LABEL`] that turns injection on.
pub const NAMESPACE_INJECTION_ENABLED: &str = "enabled";
/// Pod label to opt one pod in (`"true"`) or out (`"false"`).
pub const POD_INJECT_LABEL: &str = "mcp-warden.io/inject";
/// Pod annotation naming the policy ConfigMap.
pub const POLICY_ANNOTATION: &str = "mcp-warden.io/policy";
/// Annotation set by the webhook on an injected pod.
pub const STATUS_ANNOTATION: &str = "mcp-warden.io/status";
/// Value of [`STATUS_ANNOTATION`].
pub const STATUS_INJECTED: &str = "injected";
/// Key of the policy in its ConfigMap.
pub const POLICY_KEY: &str = "policy.yaml";

/// Sidecar container name.
pub const SIDECAR_NAME: &str = "mcp-warden";
/// Named port of the sidecar's admin listener (at most 15 characters).
pub const ADMIN_PORT_NAME: &str = "mcp-warden-adm";

/// Projected volume with the real token, mounted only into the sidecar.
pub const TOKEN_VOLUME: &str = "mcp-warden-token";
/// In-memory emptyDir where the sidecar writes the app's `ca.crt`, `token`, `namespace`.
pub const LOCAL_VOLUME: &str = "mcp-warden-local";
/// emptyDir for the recording spool.
pub const SPOOL_VOLUME: &str = "mcp-warden-spool";
/// Policy ConfigMap volume.
pub const POLICY_VOLUME: &str = "mcp-warden-policy";
/// Collector CA Secret volume (only when configured).
pub const COLLECTOR_CA_VOLUME: &str = "mcp-warden-collector-ca";
/// Collector token Secret volume (only when configured).
pub const COLLECTOR_TOKEN_VOLUME: &str = "mcp-warden-collector-token";

/// Where client libraries look for in-cluster credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Sidecar: the real token, CA and namespace.
pub const UPSTREAM_DIR: &str = "/var/run/secrets/mcp-warden/upstream";
/// Sidecar: where it writes the app's local files.
pub const LOCAL_DIR: &str = "/var/run/secrets/mcp-warden/local";
/// Sidecar: the policy ConfigMap.
pub const POLICY_DIR: &str = "/etc/mcp-warden/policy";
/// Sidecar: recording spool.
pub const SPOOL_DIR: &str = "/var/run/mcp-warden/spool";
/// Sidecar: collector CA.
pub const COLLECTOR_CA_DIR: &str = "/etc/mcp-warden/collector-ca";
/// Sidecar: collector token.
pub const COLLECTOR_TOKEN_DIR: &str = "/etc/mcp-warden/collector-token";
