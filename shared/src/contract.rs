//! The names mcp-warden fixes on the cluster: labels, annotations, container
//! and volume names, paths, ports and the environment variables the webhook
//! sets on the sidecar. Users, the chart, the webhook and the sidecar's
//! defaults all rely on them, so each is written once, here (see
//! docs/injection.md for what each one means to a user).

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
/// Policy ConfigMap used when a pod has no [`POLICY_ANNOTATION`].
pub const DEFAULT_POLICY_CONFIGMAP: &str = "mcp-warden-policy";

/// API group of mcp-warden's own resources (`AccessRequest`) and of the
/// policy document's `apiVersion`.
pub const API_GROUP: &str = "mcp-warden.io";

/// Recorded on the audit events of approved requests: who approved.
pub const ANN_APPROVED_BY: &str = "mcp-warden.io/approved-by";
/// Recorded on the audit events of approved requests: `NAMESPACE/NAME` of
/// the AccessRequest.
pub const ANN_ACCESS_REQUEST: &str = "mcp-warden.io/access-request";
/// Recorded on the audit events of requests an `approve` rule held: what the
/// dry-run preview said (`refused`: the server would refuse it, answered at
/// once, nobody asked; `shown`: approved after the approver saw the preview;
/// `changed`: approved, but the object changed since the preview, refused).
pub const ANN_PREVIEW: &str = "mcp-warden.io/preview";
/// Recorded on the audit events of requests a time-bounded grant let
/// through (with [`ANN_APPROVED_BY`], who granted it): `NAMESPACE/NAME` of
/// the grant's AccessRequest.
pub const ANN_GRANT: &str = "mcp-warden.io/grant";
/// `userInfo.extra` key kube-apiserver sets for a pod-bound service-account
/// token: the pod's name. The AccessRequest admission uses it to refuse a
/// grant approved with the granted pod's own token.
pub const USER_EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// Pod annotation: the port of the MCP server's own HTTP endpoint, which the
/// sidecar then fronts on [`MCP_PORT`] (opt-in).
pub const MCP_PORT_ANNOTATION: &str = "mcp-warden.io/mcp-port";
/// Port of the sidecar's MCP front (plain HTTP, on the pod IP), where the
/// platform team points the MCP server's Service.
pub const MCP_PORT: u16 = 15080;
/// Named port of the sidecar's MCP front (at most 15 characters).
pub const MCP_PORT_NAME: &str = "mcp-warden-mcp";
/// Recorded on API request events: the tool call in flight when the request
/// was made (the tool call event's `auditID`); only when exactly one was.
pub const ANN_TOOL_CALL: &str = "mcp-warden.io/tool-call";
/// Recorded with [`ANN_TOOL_CALL`]: that call's tool name.
pub const ANN_TOOL: &str = "mcp-warden.io/tool";
/// Recorded with [`ANN_TOOL_CALL`] and on tool call events: the JSON-RPC id.
pub const ANN_JSONRPC_ID: &str = "mcp-warden.io/jsonrpc-id";
/// Recorded with [`ANN_TOOL_CALL`] and on tool call events: the MCP session
/// (`Mcp-Session-Id`, or the SSE transport's `sessionId`).
pub const ANN_MCP_SESSION: &str = "mcp-warden.io/mcp-session";
/// Recorded with [`ANN_TOOL_CALL`] and on tool call events: the end user of
/// the call (from its verified bearer token), when there is one.
pub const ANN_MCP_USER: &str = "mcp-warden.io/mcp-user";
/// Recorded on API request events when several tool calls were in flight:
/// all of them, a JSON array, none of them claimed as the cause.
pub const ANN_TOOL_CALL_CANDIDATES: &str = "mcp-warden.io/tool-call-candidates";
/// Recorded on tool call events: `tool-call`, what the event is.
pub const ANN_EVENT_KIND: &str = "mcp-warden.io/event";
/// Recorded on tool call events: how the call ended (`result`, `isError`,
/// `error`, `refused`, `no-response`, `unknown`).
pub const ANN_TOOL_OUTCOME: &str = "mcp-warden.io/tool-outcome";

/// Sidecar container name.
pub const SIDECAR_NAME: &str = "mcp-warden";
/// Named port of the sidecar's admin listener (at most 15 characters).
pub const ADMIN_PORT_NAME: &str = "mcp-warden-adm";
/// The sidecar binary in its image.
pub const SIDECAR_BINARY: &str = "/usr/local/bin/mcp-warden-sidecar";

/// Port of the sidecar's TLS listener for the app on 127.0.0.1.
pub const API_PORT: u16 = 15443;
/// Port of the sidecar's plain-HTTP admin listener (probes, metrics).
pub const ADMIN_PORT: u16 = 15020;
/// The sidecar's default `--listen`: [`API_PORT`] on 127.0.0.1.
pub const SIDECAR_LISTEN: &str = "127.0.0.1:15443";
/// The sidecar's default `--admin-listen`: [`ADMIN_PORT`] on every address.
pub const SIDECAR_ADMIN_LISTEN: &str = "0.0.0.0:15020";
/// Admin path answering 200 while the sidecar (or webhook) can serve requests.
pub const READYZ_PATH: &str = "/readyz";
/// Admin path answering 200 while the process is alive.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Admin path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// Namespace the webhook runs in unless told otherwise (never injected).
pub const WEBHOOK_NAMESPACE: &str = "mcp-warden";
/// Service in front of the webhook, which the API server calls.
pub const WEBHOOK_SERVICE: &str = "mcp-warden-webhook";
/// The MutatingWebhookConfiguration whose `caBundle` a self-managed webhook keeps.
pub const WEBHOOK_CONFIGURATION: &str = "mcp-warden";
/// Secret holding the self-managed webhook CA and serving certificate.
pub const WEBHOOK_TLS_SECRET: &str = "mcp-warden-webhook-tls";
/// Path of the pod-injecting admission webhook.
pub const MUTATE_PATH: &str = "/mutate";
/// Path of the AccessRequest webhook that stamps who decided.
pub const ACCESS_REQUEST_MUTATE_PATH: &str = "/mutate-accessrequests";
/// Path of the AccessRequest webhook that only verifies.
pub const ACCESS_REQUEST_VALIDATE_PATH: &str = "/validate-accessrequests";
/// Annotation of the self-managed TLS Secret: the serving certificate's
/// expiry (unix seconds).
pub const TLS_NOT_AFTER_ANNOTATION: &str = "mcp-warden.io/tls-not-after";
/// Annotation of the self-managed TLS Secret: the CA's expiry (unix seconds).
pub const CA_NOT_AFTER_ANNOTATION: &str = "mcp-warden.io/ca-not-after";
/// Annotation of the self-managed TLS Secret: the DNS names the serving
/// certificate was issued for.
pub const DNS_NAMES_ANNOTATION: &str = "mcp-warden.io/dns-names";

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
/// Sidecar: the real token, in [`UPSTREAM_DIR`].
pub const UPSTREAM_TOKEN_FILE: &str = "/var/run/secrets/mcp-warden/upstream/token";
/// Sidecar: the API server's CA bundle, in [`UPSTREAM_DIR`].
pub const UPSTREAM_CA_FILE: &str = "/var/run/secrets/mcp-warden/upstream/ca.crt";
/// Sidecar: where it writes the app's local files.
pub const LOCAL_DIR: &str = "/var/run/secrets/mcp-warden/local";
/// Sidecar: the policy ConfigMap.
pub const POLICY_DIR: &str = "/etc/mcp-warden/policy";
/// Sidecar: the policy file, [`POLICY_KEY`] in [`POLICY_DIR`].
pub const POLICY_FILE: &str = "/etc/mcp-warden/policy/policy.yaml";
/// Sidecar: recording spool.
pub const SPOOL_DIR: &str = "/var/run/mcp-warden/spool";
/// Sidecar: collector CA.
pub const COLLECTOR_CA_DIR: &str = "/etc/mcp-warden/collector-ca";
/// Sidecar: collector token.
pub const COLLECTOR_TOKEN_DIR: &str = "/etc/mcp-warden/collector-token";

/// File names inside the directories above (the kubelet's projected volume
/// and the sidecar's local directory use the same ones).
pub mod files {
    /// A service-account token.
    pub const TOKEN: &str = "token";
    /// A CA bundle.
    pub const CA_CRT: &str = "ca.crt";
    /// The pod's namespace.
    pub const NAMESPACE: &str = "namespace";
}

/// Environment variables of the sidecar that the webhook sets (each is the
/// twin of the sidecar flag of the same name).
pub mod env {
    /// `--listen`.
    pub const LISTEN: &str = "MCP_WARDEN_LISTEN";
    /// `--admin-listen`.
    pub const ADMIN_LISTEN: &str = "MCP_WARDEN_ADMIN_LISTEN";
    /// `--listen-https-alias`.
    pub const LISTEN_HTTPS_ALIAS: &str = "MCP_WARDEN_LISTEN_HTTPS_ALIAS";
    /// `--cluster-domain`.
    pub const CLUSTER_DOMAIN: &str = "MCP_WARDEN_CLUSTER_DOMAIN";
    /// `--upstream-token-file`.
    pub const UPSTREAM_TOKEN_FILE: &str = "MCP_WARDEN_UPSTREAM_TOKEN_FILE";
    /// `--upstream-ca-file`.
    pub const UPSTREAM_CA_FILE: &str = "MCP_WARDEN_UPSTREAM_CA_FILE";
    /// `--local-dir`.
    pub const LOCAL_DIR: &str = "MCP_WARDEN_LOCAL_DIR";
    /// `--policy-file`.
    pub const POLICY_FILE: &str = "MCP_WARDEN_POLICY_FILE";
    /// `--spool-dir`.
    pub const SPOOL_DIR: &str = "MCP_WARDEN_SPOOL_DIR";
    /// `--collector-url`.
    pub const COLLECTOR_URL: &str = "MCP_WARDEN_COLLECTOR_URL";
    /// `--collector-format`.
    pub const COLLECTOR_FORMAT: &str = "MCP_WARDEN_COLLECTOR_FORMAT";
    /// `--collector-ca-file`.
    pub const COLLECTOR_CA_FILE: &str = "MCP_WARDEN_COLLECTOR_CA_FILE";
    /// `--collector-token-file`.
    pub const COLLECTOR_TOKEN_FILE: &str = "MCP_WARDEN_COLLECTOR_TOKEN_FILE";
    /// `--cluster-name`.
    pub const CLUSTER_NAME: &str = "MCP_WARDEN_CLUSTER_NAME";
    /// `--mcp-upstream`.
    pub const MCP_UPSTREAM: &str = "MCP_WARDEN_MCP_UPSTREAM";
    /// `--mcp-listen`.
    pub const MCP_LISTEN: &str = "MCP_WARDEN_MCP_LISTEN";
    /// `--oidc-issuer-url` (comma-separated).
    pub const OIDC_ISSUER_URL: &str = "MCP_WARDEN_OIDC_ISSUER_URL";
    /// `--oidc-audience`.
    pub const OIDC_AUDIENCE: &str = "MCP_WARDEN_OIDC_AUDIENCE";
    /// `--oidc-username-claim`.
    pub const OIDC_USERNAME_CLAIM: &str = "MCP_WARDEN_OIDC_USERNAME_CLAIM";
    /// `--oidc-username-prefix`.
    pub const OIDC_USERNAME_PREFIX: &str = "MCP_WARDEN_OIDC_USERNAME_PREFIX";
    /// `--oidc-groups-claim`.
    pub const OIDC_GROUPS_CLAIM: &str = "MCP_WARDEN_OIDC_GROUPS_CLAIM";
    /// `--oidc-groups-prefix`.
    pub const OIDC_GROUPS_PREFIX: &str = "MCP_WARDEN_OIDC_GROUPS_PREFIX";
    /// `--impersonate-end-user`.
    pub const IMPERSONATE_END_USER: &str = "MCP_WARDEN_IMPERSONATE_END_USER";
    /// `--pod-name`.
    pub const POD_NAME: &str = "MCP_WARDEN_POD_NAME";
    /// `--pod-namespace`.
    pub const POD_NAMESPACE: &str = "MCP_WARDEN_POD_NAMESPACE";
    /// The pod IP (downward API `status.podIP`), referenced as `$(POD_IP)`
    /// by [`ADMIN_LISTEN`].
    pub const POD_IP: &str = "POD_IP";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spelled-out paths and addresses are the pieces they are built from.
    #[test]
    fn composed_names_agree() {
        assert_eq!(
            UPSTREAM_TOKEN_FILE,
            format!("{UPSTREAM_DIR}/{}", files::TOKEN)
        );
        assert_eq!(
            UPSTREAM_CA_FILE,
            format!("{UPSTREAM_DIR}/{}", files::CA_CRT)
        );
        assert_eq!(POLICY_FILE, format!("{POLICY_DIR}/{POLICY_KEY}"));
        for name in [
            POD_INJECT_LABEL,
            POLICY_ANNOTATION,
            ANN_APPROVED_BY,
            ANN_ACCESS_REQUEST,
            ANN_PREVIEW,
            ANN_GRANT,
            TLS_NOT_AFTER_ANNOTATION,
            CA_NOT_AFTER_ANNOTATION,
            DNS_NAMES_ANNOTATION,
            MCP_PORT_ANNOTATION,
            ANN_TOOL_CALL,
            ANN_TOOL,
            ANN_JSONRPC_ID,
            ANN_MCP_SESSION,
            ANN_MCP_USER,
            ANN_TOOL_CALL_CANDIDATES,
            ANN_EVENT_KIND,
            ANN_TOOL_OUTCOME,
        ] {
            assert!(name.starts_with(&format!("{API_GROUP}/")), "{name}");
        }
        assert_eq!(SIDECAR_LISTEN, format!("127.0.0.1:{API_PORT}"));
        assert_eq!(SIDECAR_ADMIN_LISTEN, format!("0.0.0.0:{ADMIN_PORT}"));
        assert!(MCP_PORT_NAME.len() <= 15);
        assert!(
            ADMIN_PORT_NAME.len() <= 15,
            "a port name has at most 15 characters"
        );
    }
}
