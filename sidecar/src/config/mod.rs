//! Command line and environment configuration of the sidecar.
//!
//! Every setting is a flag with an `MCP_WARDEN_*` environment twin; the
//! defaults fit the pod the webhook injects (the names it relies on are in
//! [`mcp_warden_shared::contract`]), so the webhook passes few.
//! [`ServeArgs`] is what clap parses, with one flattened group per subsystem
//! ([`RecordingArgs`], [`ApprovalArgs`], [`crate::limits::LimitArgs`]);
//! durations, sizes and addresses are parsed by clap value parsers. Then
//! [`ServeArgs::validate`] checks what depends on more than one value and
//! turns it into a [`Config`] holding the one validated type each subsystem
//! takes ([`RecordingConfig`], [`ApprovalConfig`], [`crate::limits::Limits`]).
//! Every error, from clap or from validation, names the offending flag and
//! its environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use http::Uri;
use mcp_warden_shared::contract;

mod values;

use mcp_warden_shared::names::{is_dns_domain, is_dns_label};
pub(crate) use values::parse_addr;
pub use values::{
    NamedParser, UrlRefusal, check_transport, collector_format, default_upstream, duration,
    is_loopback_host, notify_url, parse_duration, positive_bytes, positive_duration, socket_addr,
    spool_sync,
};
use values::{non_empty_path, parse_base_url};

pub use crate::recording::{CollectorFormat, OnFailure, RecordingConfig};

/// A configuration value that cannot be used; the message names the flag and
/// its environment twin so an operator can find it whichever way it was set.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag} ({env}): {message}")]
pub struct ConfigError {
    /// Flag name without the leading dashes, e.g. `upstream`.
    pub flag: &'static str,
    /// Environment twin, e.g. `MCP_WARDEN_UPSTREAM`.
    pub env: &'static str,
    /// What is wrong with the value.
    pub message: String,
}

impl ConfigError {
    fn new(flag: &'static str, env: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            flag,
            env,
            message: message.into(),
        }
    }
}

/// `mcp-warden-sidecar [FLAGS]` runs the proxy; `mcp-warden-sidecar policy ...`
/// runs the offline policy tools.
#[derive(Debug, Parser)]
#[command(
    name = "mcp-warden-sidecar",
    version,
    about = "mcp-warden sidecar: a localhost TLS proxy that alone holds the pod's service-account token",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Optional subcommand; without one the proxy runs with the flags below.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Proxy settings (used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands of the sidecar binary.
// Parsed once at start: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the same as giving no subcommand).
    Serve(ServeArgs),
    /// Check or evaluate a policy file offline.
    Policy(crate::policy_cli::PolicyArgs),
    /// Wait until the sidecar's /readyz answers 200 (the container form's
    /// postStart hook: the kubelet starts the app only after it returns).
    WaitReady(crate::lifecycle::WaitReadyArgs),
    /// Wait until the app's connections are gone (the container form's
    /// preStop hook: the sidecar keeps serving while the app shuts down).
    WaitDrain(crate::lifecycle::WaitDrainArgs),
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines).
    Json,
    /// Human-readable lines.
    Text,
}

/// The proxy's flags, each with an `MCP_WARDEN_*` environment twin.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the TLS listener for the app (localhost only in a pod).
    #[arg(long, env = contract::env::LISTEN, default_value = contract::SIDECAR_LISTEN, value_parser = socket_addr())]
    pub listen: SocketAddr,

    /// A second address serving the same app-facing TLS API: in a pod
    /// `127.0.0.1:443`, where the webhook's hostAliases send
    /// `https://kubernetes.default.svc` (needs NET_BIND_SERVICE as non-root;
    /// tests use a high port). Empty or `off`: none.
    #[arg(long, env = contract::env::LISTEN_HTTPS_ALIAS)]
    pub listen_https_alias: Option<String>,

    /// The cluster's DNS domain: the serving certificate also names
    /// `kubernetes.default.svc.<domain>`.
    #[arg(long, env = contract::env::CLUSTER_DOMAIN, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Address of the plain-HTTP admin server: /healthz, /readyz, /metrics.
    #[arg(long, env = contract::env::ADMIN_LISTEN, default_value = contract::SIDECAR_ADMIN_LISTEN, value_parser = socket_addr())]
    pub admin_listen: SocketAddr,

    /// URL of the real API server (https://HOST:PORT). Default:
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
    #[arg(long, env = "MCP_WARDEN_UPSTREAM")]
    pub upstream: Option<String>,

    /// CA bundle (PEM) that signs the API server's serving certificate.
    #[arg(long, env = contract::env::UPSTREAM_CA_FILE, default_value = contract::UPSTREAM_CA_FILE)]
    pub upstream_ca_file: PathBuf,

    /// The real service-account token; re-read when the kubelet rotates it.
    #[arg(long, env = contract::env::UPSTREAM_TOKEN_FILE, default_value = contract::UPSTREAM_TOKEN_FILE)]
    pub upstream_token_file: PathBuf,

    /// Directory where the sidecar writes `ca.crt`, `token` and `namespace` for the app.
    #[arg(long, env = contract::env::LOCAL_DIR, default_value = contract::LOCAL_DIR)]
    pub local_dir: PathBuf,

    /// Policy file (ConfigMap key `policy.yaml`); a missing file means the embedded default policy.
    #[arg(long, env = contract::env::POLICY_FILE, default_value = contract::POLICY_FILE)]
    pub policy_file: PathBuf,

    /// Recording: the collector and the spool.
    #[command(flatten)]
    pub recording: RecordingArgs,

    /// Per-request access log: `off`, `sampled` (every refused, failed or
    /// writing request, and 1 in 100 successful reads) or `all`.
    #[arg(
        long,
        env = "MCP_WARDEN_ACCESS_LOG",
        value_enum,
        default_value = "sampled"
    )]
    pub access_log: crate::logging::AccessLog,

    /// Name of the pod (downward API), recorded in events.
    #[arg(long, env = contract::env::POD_NAME)]
    pub pod_name: Option<String>,

    /// Namespace of the pod (downward API); default: the `namespace` file next to the upstream token.
    #[arg(long, env = contract::env::POD_NAMESPACE)]
    pub pod_namespace: Option<String>,

    /// Numeric uid of the app containers: the local files are chowned to it and made 0600.
    /// Unset: files are 0644, which every container of the pod can read.
    #[arg(long, env = "MCP_WARDEN_APP_UID")]
    pub app_uid: Option<u32>,

    /// Cluster name, recorded in events.
    #[arg(long, env = contract::env::CLUSTER_NAME, default_value = "kubernetes")]
    pub cluster_name: String,

    /// How long in-flight requests may take to finish after SIGTERM (e.g. `15s`, `500ms`, `1m`).
    #[arg(long, env = "MCP_WARDEN_SHUTDOWN_GRACE", default_value = "15s", value_parser = duration())]
    pub shutdown_grace: Duration,

    /// Timeout for establishing a connection (TCP + TLS) to the upstream; requests themselves
    /// have no total timeout, so watches last as long as the server keeps them.
    #[arg(
        long,
        env = "MCP_WARDEN_UPSTREAM_CONNECT_TIMEOUT",
        default_value = "10s",
        value_parser = positive_duration()
    )]
    pub upstream_connect_timeout: Duration,

    /// Log format.
    #[arg(
        long,
        env = "MCP_WARDEN_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,

    /// Threads that serve requests: at most this many, and no more than
    /// the CPUs the container may use (its CPU limit, else the node's
    /// cores); `0` means one per such CPU.
    #[arg(
        long,
        env = "MCP_WARDEN_WORKER_THREADS",
        default_value_t = DEFAULT_WORKER_THREADS,
        value_parser = clap::value_parser!(u16).range(0..=MAX_WORKER_THREADS as i64)
    )]
    pub worker_threads: u16,

    /// Approvals: `--approval-timeout`, `--approval-reuse-window`, `--approval-notify-url`.
    #[command(flatten)]
    pub approval: ApprovalArgs,

    /// The MCP server's own HTTP endpoint (IP:PORT on loopback, e.g.
    /// `127.0.0.1:8080`): the sidecar then fronts it on `--mcp-listen`,
    /// recording and judging tool calls. Unset: no MCP front.
    #[arg(long, env = contract::env::MCP_UPSTREAM)]
    pub mcp_upstream: Option<String>,

    /// Address of the MCP front (plain HTTP; the Service points here).
    #[arg(long, env = contract::env::MCP_LISTEN, default_value = "0.0.0.0:15080")]
    pub mcp_listen: String,

    /// Connection and request limits: timeouts and caps of both listeners,
    /// in-flight caps (see [`crate::limits`]).
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,

    /// End users: `--oidc-*` and `--impersonate-end-user` (see [`crate::enduser`]).
    #[command(flatten)]
    pub oidc: crate::enduser::OidcArgs,
}

/// The recording flags (flattened into [`ServeArgs`]); with the pod and
/// cluster names of `ServeArgs` they make the [`RecordingConfig`].
#[derive(Debug, Clone, Args)]
pub struct RecordingArgs {
    /// Collector URL for recordings (https://; http:// only for loopback). Unset: no remote delivery.
    #[arg(long, env = contract::env::COLLECTOR_URL)]
    pub collector_url: Option<String>,

    /// Wire format of the recording stream.
    #[arg(
        long,
        env = contract::env::COLLECTOR_FORMAT,
        default_value = "eventlist",
        value_parser = collector_format()
    )]
    pub collector_format: CollectorFormat,

    /// CA bundle (PEM) for the collector's serving certificate (default: the
    /// public web PKI roots, as a collector outside the cluster would use).
    #[arg(long, env = contract::env::COLLECTOR_CA_FILE)]
    pub collector_ca_file: Option<PathBuf>,

    /// Bearer token file sent to the collector (re-read on change).
    #[arg(long, env = contract::env::COLLECTOR_TOKEN_FILE)]
    pub collector_token_file: Option<PathBuf>,

    /// Client certificate (PEM) presented to the collector (mutual TLS); needs the key file too.
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_CLIENT_CERT_FILE")]
    pub collector_client_cert_file: Option<PathBuf>,

    /// Private key (PEM) of `--collector-client-cert-file`.
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_CLIENT_KEY_FILE")]
    pub collector_client_key_file: Option<PathBuf>,

    /// Directory of the on-disk spool of not-yet-delivered events (an emptyDir in a pod).
    #[arg(long, env = contract::env::SPOOL_DIR, default_value = contract::SPOOL_DIR)]
    pub spool_dir: PathBuf,

    /// Maximum size of the spool in bytes.
    #[arg(
        long,
        env = "MCP_WARDEN_SPOOL_MAX_BYTES",
        default_value = "268435456",
        value_parser = positive_bytes()
    )]
    pub spool_max_bytes: u64,

    /// How long written spool records may wait for their fsync. A response
    /// is released once its event is written to the spool file (which
    /// survives a kill of the sidecar) and records are fsync'd in groups at
    /// most this long after; `always`: fsync before every release (survives
    /// a machine crash too, slower). See docs/recording.md.
    #[arg(
        long,
        env = "MCP_WARDEN_SPOOL_SYNC_INTERVAL",
        default_value = "20ms",
        value_parser = spool_sync()
    )]
    pub spool_sync_interval: crate::recording::SpoolSync,

    /// Behaviour when an event cannot be made durable.
    #[arg(
        long,
        env = "MCP_WARDEN_ON_RECORDING_FAILURE",
        value_enum,
        default_value = "fail-closed"
    )]
    pub on_recording_failure: OnFailure,
}

/// The approval flags (flattened into [`ServeArgs`]);
/// [`ApprovalArgs::validate`] gives the [`ApprovalConfig`].
#[derive(Debug, Clone, Args)]
pub struct ApprovalArgs {
    /// How long a request under an `approve` rule is held waiting for a decision
    /// (e.g. `5m`, `90s`); then 403 and the AccessRequest is marked Expired.
    #[arg(
        long,
        env = "MCP_WARDEN_APPROVAL_TIMEOUT",
        default_value = "5m",
        value_parser = positive_duration()
    )]
    pub approval_timeout: Duration,

    /// How long after the decision an approval whose client went away lets one
    /// identical request (same method, path, query) through.
    #[arg(
        long,
        env = "MCP_WARDEN_APPROVAL_REUSE_WINDOW",
        default_value = "10m",
        value_parser = duration()
    )]
    pub approval_reuse_window: Duration,

    /// Slack-compatible incoming-webhook URL that gets `{"text": ...}` when a
    /// request waits for approval (https, or http to loopback).
    #[arg(long, env = "MCP_WARDEN_APPROVAL_NOTIFY_URL", value_parser = notify_url())]
    pub approval_notify_url: Option<Uri>,
}

/// Approval settings: what the approvals decider takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalConfig {
    /// How long a request is held waiting for a decision; then 403 and the
    /// AccessRequest is marked Expired.
    pub approval_timeout: Duration,
    /// How long after the decision an approval whose client went away lets
    /// one identical request through.
    pub approval_reuse_window: Duration,
    /// Where to POST `{"text": ...}` (Slack incoming-webhook shape) when a
    /// request is pending; http:// only for loopback.
    pub approval_notify_url: Option<Uri>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            approval_timeout: Duration::from_secs(300),
            approval_reuse_window: Duration::from_secs(600),
            approval_notify_url: None,
        }
    }
}

impl ApprovalArgs {
    /// Checks the values; errors name the flag and its environment twin.
    pub fn validate(&self) -> Result<ApprovalConfig, ConfigError> {
        Ok(ApprovalConfig {
            approval_timeout: self.approval_timeout,
            approval_reuse_window: self.approval_reuse_window,
            approval_notify_url: self.approval_notify_url.clone(),
        })
    }
}

/// Validated configuration of the proxy: what [`crate::assemble`] and
/// [`crate::run_with`] hand to each part.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS listener address for the app.
    pub listen: SocketAddr,
    /// Second TLS listener for the app (`127.0.0.1:443` in a pod), if any.
    pub listen_https_alias: Option<SocketAddr>,
    /// Cluster DNS domain, for the serving certificate's names.
    pub cluster_domain: String,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Upstream base URL: scheme and authority only.
    pub upstream: Uri,
    /// CA bundle for the upstream.
    pub upstream_ca_file: PathBuf,
    /// Real token file.
    pub upstream_token_file: PathBuf,
    /// Directory of the app-side files.
    pub local_dir: PathBuf,
    /// Policy file.
    pub policy_file: PathBuf,
    /// Recording (spool, collector, the pod and cluster names on events).
    pub recording: RecordingConfig,
    /// `--access-log`.
    pub access_log: crate::logging::AccessLog,
    /// Pod name, if known.
    pub pod_name: Option<String>,
    /// Pod namespace, if given (see [`Config::namespace`] for the resolved value).
    pub pod_namespace: Option<String>,
    /// Owner of the local files.
    pub app_uid: Option<u32>,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Runtime worker threads, resolved against the CPUs the process may use.
    pub worker_threads: usize,
    /// Approvals (held requests, AccessRequests).
    pub approval: ApprovalConfig,
    /// The MCP front (`--mcp-upstream`, `--mcp-listen`), if configured.
    pub mcp: Option<crate::mcp::McpConfig>,
    /// Connection and request limits of both listeners and the in-flight caps.
    pub limits: crate::limits::Limits,
    /// End-user authentication; `None`: only the local token is accepted.
    pub oidc: Option<crate::enduser::OidcConfig>,
}

impl Config {
    /// The namespace written to the app's `namespace` file: `--pod-namespace`,
    /// else the `namespace` file beside the upstream token, else `default`.
    pub fn namespace(&self) -> String {
        namespace(self.pod_namespace.as_deref(), &self.upstream_token_file)
    }
}

/// Default `--worker-threads`. A sidecar serves one MCP server, whose agent
/// makes a few requests at a time, so one thread runs them all, as
/// linkerd2-proxy's does by default: with one, the runtime is tokio's
/// single-threaded one, where a request's tasks (client connection, handler,
/// upstream connection) wake each other without crossing threads. At 800
/// GETs/s that cost about a third less CPU per request than two threads,
/// and at saturation on two shared cores it served as many requests
/// (bench/results.md, "Fifth pass"). Lists and watch streams are masked
/// item by item, so a large list does not hold the other requests for its
/// whole length; one very large object does, while it is masked.
pub const DEFAULT_WORKER_THREADS: u16 = 1;
/// Upper bound of `--worker-threads`.
pub const MAX_WORKER_THREADS: u16 = 256;

/// The runtime's worker threads: the setting (`0`: no cap), never more than
/// the CPUs the process may use and never fewer than one.
pub fn worker_threads(setting: u16, cpus: usize) -> usize {
    let cpus = cpus.max(1);
    match usize::from(setting) {
        0 => cpus,
        n => n.min(cpus),
    }
}

/// The CPUs this process may use: its CPU affinity and cgroup CPU quota
/// (a container's CPU limit), as the standard library reads them.
fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn namespace(pod_namespace: Option<&str>, upstream_token_file: &Path) -> String {
    if let Some(ns) = pod_namespace {
        return ns.to_string();
    }
    if let Some(dir) = upstream_token_file.parent()
        && let Ok(ns) = std::fs::read_to_string(dir.join(contract::files::NAMESPACE))
    {
        let ns = ns.trim();
        if !ns.is_empty() {
            return ns.to_string();
        }
    }
    "default".to_string()
}

impl ServeArgs {
    /// Checks every value and resolves defaults that depend on the environment.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        self.validate_with_env(|k| std::env::var(k).ok())
    }

    /// [`ServeArgs::validate`] with an injectable environment, for tests.
    pub fn validate_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let listen = self.listen;
        let admin_listen = self.admin_listen;
        let listen_https_alias = match self.listen_https_alias.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(a) => Some(parse_addr(
                a,
                "listen-https-alias",
                contract::env::LISTEN_HTTPS_ALIAS,
            )?),
        };
        if listen_https_alias.is_some_and(|a| a == listen || a == admin_listen) {
            return Err(ConfigError::new(
                "listen-https-alias",
                contract::env::LISTEN_HTTPS_ALIAS,
                "must differ from --listen and --admin-listen",
            ));
        }
        let cluster_domain = self.cluster_domain.trim().trim_end_matches('.').to_string();
        if !is_dns_domain(&cluster_domain) {
            return Err(ConfigError::new(
                "cluster-domain",
                contract::env::CLUSTER_DOMAIN,
                format!("{:?} is not a DNS domain", self.cluster_domain),
            ));
        }
        let upstream_raw = match &self.upstream {
            Some(u) => u.clone(),
            None => default_upstream(&env).ok_or_else(|| {
                ConfigError::new(
                    "upstream",
                    "MCP_WARDEN_UPSTREAM",
                    "not set, and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not in the environment",
                )
            })?,
        };
        let upstream = parse_base_url(&upstream_raw, "upstream", "MCP_WARDEN_UPSTREAM", false)?;
        non_empty_path(
            &self.upstream_ca_file,
            "upstream-ca-file",
            contract::env::UPSTREAM_CA_FILE,
        )?;
        non_empty_path(
            &self.upstream_token_file,
            "upstream-token-file",
            contract::env::UPSTREAM_TOKEN_FILE,
        )?;
        non_empty_path(&self.local_dir, "local-dir", contract::env::LOCAL_DIR)?;
        non_empty_path(&self.policy_file, "policy-file", contract::env::POLICY_FILE)?;
        if let Some(ns) = &self.pod_namespace
            && !is_dns_label(ns)
        {
            return Err(ConfigError::new(
                "pod-namespace",
                contract::env::POD_NAMESPACE,
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        if self.cluster_name.trim().is_empty() {
            return Err(ConfigError::new(
                "cluster-name",
                contract::env::CLUSTER_NAME,
                "must not be empty",
            ));
        }
        let pod_name = self.pod_name.clone().filter(|s| !s.is_empty());
        let pod_namespace = self.pod_namespace.clone().filter(|s| !s.is_empty());
        let pod = format!(
            "{}/{}",
            namespace(pod_namespace.as_deref(), &self.upstream_token_file),
            pod_name.as_deref().unwrap_or("unknown")
        );
        let recording = self.recording.validate(self.cluster_name.clone(), pod)?;
        let mcp = self.mcp_config(&[listen, admin_listen])?;
        Ok(Config {
            listen,
            listen_https_alias,
            cluster_domain,
            admin_listen,
            upstream,
            upstream_ca_file: self.upstream_ca_file.clone(),
            upstream_token_file: self.upstream_token_file.clone(),
            local_dir: self.local_dir.clone(),
            policy_file: self.policy_file.clone(),
            recording,
            pod_name,
            pod_namespace,
            app_uid: self.app_uid,
            shutdown_grace: self.shutdown_grace,
            upstream_connect_timeout: self.upstream_connect_timeout,
            log_format: self.log_format,
            worker_threads: worker_threads(self.worker_threads, available_cpus()),
            access_log: self.access_log,
            approval: self.approval.validate()?,
            limits: self.limits.limits(),
            oidc: self.oidc.validate()?,
            mcp,
        })
    }

    /// The MCP front's settings: the upstream must be a loopback address
    /// (the MCP server in the same pod), the listener must not be taken.
    fn mcp_config(
        &self,
        taken: &[SocketAddr],
    ) -> Result<Option<crate::mcp::McpConfig>, ConfigError> {
        let Some(raw) = self
            .mcp_upstream
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let upstream = parse_addr(raw, "mcp-upstream", contract::env::MCP_UPSTREAM)?;
        if !upstream.ip().is_loopback() {
            return Err(ConfigError::new(
                "mcp-upstream",
                contract::env::MCP_UPSTREAM,
                format!(
                    "{raw:?} is not a loopback address: the MCP front forwards only to the MCP server in its own pod"
                ),
            ));
        }
        let listen = parse_addr(&self.mcp_listen, "mcp-listen", contract::env::MCP_LISTEN)?;
        if taken.contains(&listen) || listen == upstream {
            return Err(ConfigError::new(
                "mcp-listen",
                contract::env::MCP_LISTEN,
                "must differ from --listen, --admin-listen and --mcp-upstream",
            ));
        }
        Ok(Some(crate::mcp::McpConfig { upstream, listen }))
    }
}

impl RecordingArgs {
    /// Checks the values; `cluster_name` and `pod` (`namespace/name`) are
    /// stamped on every event.
    pub fn validate(
        &self,
        cluster_name: String,
        pod: String,
    ) -> Result<RecordingConfig, ConfigError> {
        let collector_url = match &self.collector_url {
            Some(u) if !u.trim().is_empty() => Some(parse_base_url(
                u,
                "collector-url",
                contract::env::COLLECTOR_URL,
                true,
            )?),
            _ => None,
        };
        non_empty_path(&self.spool_dir, "spool-dir", contract::env::SPOOL_DIR)?;
        if self.collector_client_cert_file.is_some() != self.collector_client_key_file.is_some() {
            let (flag, env) = if self.collector_client_cert_file.is_some() {
                (
                    "collector-client-key-file",
                    "MCP_WARDEN_COLLECTOR_CLIENT_KEY_FILE",
                )
            } else {
                (
                    "collector-client-cert-file",
                    "MCP_WARDEN_COLLECTOR_CLIENT_CERT_FILE",
                )
            };
            return Err(ConfigError::new(
                flag,
                env,
                "a collector client certificate needs both the certificate and the key file",
            ));
        }
        Ok(RecordingConfig {
            spool_max_bytes: self.spool_max_bytes,
            on_failure: self.on_recording_failure,
            collector_url,
            format: self.collector_format,
            ca_file: self.collector_ca_file.clone(),
            token_file: self.collector_token_file.clone(),
            client_cert_file: self.collector_client_cert_file.clone(),
            client_key_file: self.collector_client_key_file.clone(),
            spool_sync: self.spool_sync_interval,
            cluster_name,
            pod,
            ..RecordingConfig::new(self.spool_dir.clone())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["mcp-warden-sidecar"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().serve
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// The error a bad value gets, whether clap's value parser or the
    /// validation finds it.
    fn error_of(extra: &[&str]) -> String {
        let mut v = vec!["mcp-warden-sidecar"];
        v.extend_from_slice(extra);
        match Cli::try_parse_from(v) {
            Err(e) => e.to_string(),
            Ok(cli) => cli.serve.validate_with_env(no_env).unwrap_err().to_string(),
        }
    }

    #[test]
    fn upstream_from_service_env_brackets_ipv6() {
        let a = args(&[]);
        let c = a
            .validate_with_env(|k| match k {
                "KUBERNETES_SERVICE_HOST" => Some("fd00::1".into()),
                "KUBERNETES_SERVICE_PORT" => Some("443".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(c.upstream.to_string(), "https://[fd00::1]:443/");
        assert_eq!(c.listen.to_string(), "127.0.0.1:15443");
        assert_eq!(c.admin_listen.to_string(), "0.0.0.0:15020");
    }

    #[test]
    fn mcp_front_flags() {
        let up = ["--upstream", "https://h:1"];
        let c = args(&up).validate_with_env(no_env).unwrap();
        assert_eq!(c.mcp, None);
        let c = args(&[up[0], up[1], "--mcp-upstream", "127.0.0.1:8080"])
            .validate_with_env(no_env)
            .unwrap();
        let mcp = c.mcp.unwrap();
        assert_eq!(mcp.upstream.to_string(), "127.0.0.1:8080");
        assert_eq!(mcp.listen.to_string(), "0.0.0.0:15080");
        let e = error_of(&[up[0], up[1], "--mcp-upstream", "10.0.0.7:8080"]);
        assert!(
            e.starts_with("invalid --mcp-upstream (MCP_WARDEN_MCP_UPSTREAM):")
                && e.contains("not a loopback address"),
            "{e}"
        );
        let e = error_of(&[up[0], up[1], "--mcp-upstream", "localhost"]);
        assert!(e.contains("--mcp-upstream"), "{e}");
        let e = error_of(&[
            up[0],
            up[1],
            "--mcp-upstream",
            "127.0.0.1:8080",
            "--mcp-listen",
            "0.0.0.0:15020",
        ]);
        assert!(
            e.starts_with("invalid --mcp-listen (MCP_WARDEN_MCP_LISTEN):"),
            "{e}"
        );
    }

    #[test]
    fn missing_upstream_names_the_setting() {
        let e = args(&[]).validate_with_env(no_env).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid --upstream (MCP_WARDEN_UPSTREAM):"),
            "{e}"
        );
    }

    #[test]
    fn http_only_for_loopback() {
        let e = args(&["--upstream", "http://10.0.0.1:80"])
            .validate_with_env(no_env)
            .unwrap_err();
        assert_eq!(e.flag, "upstream");
        args(&["--upstream", "http://127.0.0.1:80"])
            .validate_with_env(no_env)
            .unwrap();
        let e = args(&[
            "--upstream",
            "https://h:1",
            "--collector-url",
            "http://collector.example:80/x",
        ])
        .validate_with_env(no_env)
        .unwrap_err();
        assert_eq!(e.flag, "collector-url");
        let c = args(&[
            "--upstream",
            "https://h:1",
            "--collector-url",
            "http://[::1]:9/events",
        ])
        .validate_with_env(no_env)
        .unwrap();
        assert_eq!(c.recording.collector_url.unwrap().path(), "/events");
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (flag, val) in [
            ("--listen", "nope"),
            ("--admin-listen", "1.2.3.4"),
            ("--shutdown-grace", "ten"),
            ("--spool-max-bytes", "12x"),
            ("--pod-namespace", "Bad_NS"),
            ("--upstream", "ftp://x"),
        ] {
            let mut v = if flag == "--upstream" {
                vec![]
            } else {
                vec!["--upstream", "https://h:1"]
            };
            v.extend_from_slice(&[flag, val]);
            let e = error_of(&v);
            assert!(e.contains(flag), "{flag}: {e}");
            assert!(e.contains("(MCP_WARDEN_"), "{flag}: {e}");
        }
    }

    #[test]
    fn https_alias_and_cluster_domain() {
        let base = ["--upstream", "https://h:1"];
        let c = args(&base).validate_with_env(no_env).unwrap();
        assert_eq!(c.listen_https_alias, None, "off unless asked for");
        assert_eq!(c.cluster_domain, "cluster.local");
        let mut v = base.to_vec();
        v.extend([
            "--listen-https-alias",
            "127.0.0.1:443",
            "--cluster-domain",
            "corp.example.",
        ]);
        let c = args(&v).validate_with_env(no_env).unwrap();
        assert_eq!(c.listen_https_alias.unwrap().to_string(), "127.0.0.1:443");
        assert_eq!(c.cluster_domain, "corp.example");
        let mut v = base.to_vec();
        v.extend(["--listen-https-alias", "off"]);
        assert_eq!(
            args(&v)
                .validate_with_env(no_env)
                .unwrap()
                .listen_https_alias,
            None
        );
        for (flag, val) in [
            ("--listen-https-alias", "443"),
            ("--listen-https-alias", "127.0.0.1:15443"),
            ("--cluster-domain", "Bad_Domain"),
        ] {
            let mut v = base.to_vec();
            v.extend([flag, val]);
            let e = args(&v).validate_with_env(no_env).unwrap_err();
            assert!(e.to_string().contains(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn admin_listen_takes_an_unbracketed_ipv6_pod_ip() {
        let c = args(&[
            "--upstream",
            "https://h:1",
            "--admin-listen",
            "fd00::5:15020",
        ])
        .validate_with_env(no_env)
        .unwrap();
        assert_eq!(c.admin_listen.to_string(), "[fd00::5]:15020");
        let c = args(&[
            "--upstream",
            "https://h:1",
            "--admin-listen",
            "10.1.2.3:15020",
        ])
        .validate_with_env(no_env)
        .unwrap();
        assert_eq!(c.admin_listen.to_string(), "10.1.2.3:15020");
        let e = error_of(&["--upstream", "https://h:1", "--admin-listen", "fd00::5"]);
        assert!(
            e.contains("--admin-listen (MCP_WARDEN_ADMIN_LISTEN)"),
            "{e}"
        );
    }

    #[test]
    fn limits_have_defaults_and_bad_ones_name_their_setting() {
        let c = args(&["--upstream", "https://h:1"])
            .validate_with_env(no_env)
            .unwrap();
        let d = crate::limits::Limits::default();
        assert_eq!(c.limits.app.idle_timeout, d.app.idle_timeout);
        assert_eq!(c.limits.app.header_read_timeout, Duration::from_secs(32));
        assert_eq!(c.limits.app.max_connections, d.app.max_connections);
        assert_eq!(c.limits.admin.max_connections, d.admin.max_connections);
        assert_eq!(c.limits.admin.idle_timeout, d.admin.idle_timeout);
        assert_eq!(c.limits.max_inflight_requests, d.max_inflight_requests);
        assert_eq!(
            c.limits.max_long_running_requests,
            d.max_long_running_requests
        );
        let c = args(&[
            "--upstream",
            "https://h:1",
            "--http2-keepalive-interval",
            "0",
        ])
        .validate_with_env(no_env)
        .unwrap();
        assert_eq!(c.limits.app.http2_keepalive_interval, None);
        for (flag, val) in [
            ("--idle-timeout", "0"),
            ("--first-byte-timeout", "soon"),
            ("--body-read-timeout", "0s"),
            ("--max-connections", "0"),
            ("--admin-max-connections", "0"),
            ("--max-long-running-requests", "0"),
        ] {
            let e = error_of(&["--upstream", "https://h:1", flag, val]);
            assert!(e.contains(flag), "{flag}: {e}");
            assert!(e.contains("MCP_WARDEN_"), "{flag}: {e}");
        }
    }

    #[test]
    fn approval_flags_have_defaults_and_name_themselves_when_bad() {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ApprovalArgs,
        }
        let c = T::try_parse_from(["x"]).unwrap().a.validate().unwrap();
        assert_eq!(c, ApprovalConfig::default());
        let c = T::try_parse_from([
            "x",
            "--approval-timeout",
            "90s",
            "--approval-reuse-window",
            "1m",
            "--approval-notify-url",
            "http://127.0.0.1:9/hook",
        ])
        .unwrap()
        .a
        .validate()
        .unwrap();
        assert_eq!(c.approval_timeout, Duration::from_secs(90));
        assert_eq!(c.approval_reuse_window, Duration::from_secs(60));
        assert!(c.approval_notify_url.is_some());
        let e = T::try_parse_from(["x", "--approval-notify-url", "http://hooks.example.com/x"])
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("MCP_WARDEN_APPROVAL_NOTIFY_URL"),
            "{e}"
        );
        let e = T::try_parse_from(["x", "--approval-timeout", "soon"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("approval-timeout"), "{e}");
        let e = T::try_parse_from(["x", "--approval-timeout", "0s"])
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("--approval-timeout (MCP_WARDEN_APPROVAL_TIMEOUT)"),
            "{e}"
        );
    }

    #[test]
    fn recording_flags_make_the_recording_config() {
        let c = args(&[
            "--upstream",
            "https://h:1",
            "--pod-namespace",
            "ns",
            "--pod-name",
            "p",
        ])
        .validate_with_env(no_env)
        .unwrap();
        let r = &c.recording;
        assert_eq!(r.spool_dir, PathBuf::from(contract::SPOOL_DIR));
        assert_eq!(r.spool_max_bytes, 256 << 20);
        assert_eq!(r.format, CollectorFormat::EventList);
        assert_eq!(r.on_failure, OnFailure::FailClosed);
        assert_eq!(r.pod, "ns/p");
        assert_eq!(r.cluster_name, "kubernetes");
        assert!(r.collector_url.is_none());
        let c = args(&[
            "--upstream",
            "https://h:1",
            "--collector-url",
            "https://c.example/audit",
            "--collector-format",
            "ndjson",
            "--spool-max-bytes",
            "4096",
            "--on-recording-failure",
            "continue",
        ])
        .validate_with_env(no_env)
        .unwrap();
        let r = &c.recording;
        assert_eq!(r.format, CollectorFormat::Ndjson);
        assert_eq!(r.spool_max_bytes, 4096);
        assert_eq!(r.on_failure, OnFailure::Continue);
        assert_eq!(r.pod, "default/unknown");
        let e = error_of(&["--upstream", "https://h:1", "--collector-format", "xml"]);
        assert!(e.contains("--collector-format"), "{e}");
        let e = error_of(&[
            "--upstream",
            "https://h:1",
            "--collector-client-cert-file",
            "/c.crt",
        ]);
        assert!(
            e.contains("--collector-client-key-file (MCP_WARDEN_COLLECTOR_CLIENT_KEY_FILE)"),
            "{e}"
        );
    }

    #[test]
    fn worker_threads_are_capped_by_the_cpus() {
        assert_eq!(worker_threads(2, 64), 2);
        assert_eq!(worker_threads(2, 1), 1);
        assert_eq!(worker_threads(0, 8), 8);
        assert_eq!(worker_threads(0, 0), 1);
        assert_eq!(worker_threads(16, 4), 4);
        let base = ["--upstream", "https://h:1"];
        let c = args(&base).validate_with_env(no_env).unwrap();
        assert_eq!(c.worker_threads, 1);
        let mut v = base.to_vec();
        v.extend(["--worker-threads", "1"]);
        assert_eq!(
            args(&v).validate_with_env(no_env).unwrap().worker_threads,
            1
        );
        for bad in ["-1", "257", "two", ""] {
            let mut v = base.to_vec();
            let flag = format!("--worker-threads={bad}");
            v.push(&flag);
            let e = error_of(&v);
            assert!(e.contains("--worker-threads"), "{bad}: {e}");
        }
    }

    #[test]
    fn spool_sync_and_access_log() {
        use crate::logging::AccessLog;
        use crate::recording::spool::SpoolSync;
        let base = ["--upstream", "https://h:1"];
        let c = args(&base).validate_with_env(no_env).unwrap();
        assert_eq!(
            c.recording.spool_sync,
            SpoolSync::Interval(Duration::from_millis(20))
        );
        assert_eq!(c.access_log, AccessLog::Sampled);
        let mut v = base.to_vec();
        v.extend(["--spool-sync-interval", "always", "--access-log", "off"]);
        let c = args(&v).validate_with_env(no_env).unwrap();
        assert_eq!(c.recording.spool_sync, SpoolSync::Always);
        assert_eq!(c.access_log, AccessLog::Off);
        for bad in ["0ms", "never", ""] {
            let mut v = base.to_vec();
            v.extend(["--spool-sync-interval", bad]);
            let e = error_of(&v);
            assert!(
                e.contains("--spool-sync-interval (MCP_WARDEN_SPOOL_SYNC_INTERVAL)"),
                "{bad}: {e}"
            );
        }
    }
}
