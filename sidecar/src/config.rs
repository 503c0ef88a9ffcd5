//! Command line and environment configuration of the sidecar.
//!
//! Every setting is a flag with an `MCP_WARDEN_*` environment twin; the
//! defaults fit the pod the webhook injects, so the webhook passes few.
//! [`ServeArgs`] is what clap parses; [`ServeArgs::validate`] turns it into a
//! [`Config`] whose values are known to be usable, or a [`ConfigError`] that
//! names the offending setting and its environment variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use http::Uri;

/// Default directory of the sidecar's own projected volume (service-account
/// token, `kube-root-ca.crt`, namespace), mounted only into the sidecar.
pub const UPSTREAM_DIR: &str = "/var/run/secrets/mcp-warden/upstream";

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

/// Wire format of the recording stream sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CollectorFormat {
    /// `audit.k8s.io/v1` `EventList` batches, as kube-apiserver's audit webhook sends.
    Eventlist,
    /// One audit `Event` JSON object per line.
    Ndjson,
}

/// What to do when an event cannot be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordingFailureMode {
    /// Refuse new requests with 503 rather than forward an unrecorded one.
    FailClosed,
    /// Forward anyway and count the loss in metrics.
    Continue,
}

/// The proxy's flags, each with an `MCP_WARDEN_*` environment twin.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the TLS listener for the app (localhost only in a pod).
    #[arg(long, env = "MCP_WARDEN_LISTEN", default_value = "127.0.0.1:15443")]
    pub listen: String,

    /// A second address serving the same app-facing TLS API: in a pod
    /// `127.0.0.1:443`, where the webhook's hostAliases send
    /// `https://kubernetes.default.svc` (needs NET_BIND_SERVICE as non-root;
    /// tests use a high port). Empty or `off`: none.
    #[arg(long, env = "MCP_WARDEN_LISTEN_HTTPS_ALIAS")]
    pub listen_https_alias: Option<String>,

    /// The cluster's DNS domain: the serving certificate also names
    /// `kubernetes.default.svc.<domain>`.
    #[arg(
        long,
        env = "MCP_WARDEN_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Address of the plain-HTTP admin server: /healthz, /readyz, /metrics.
    #[arg(long, env = "MCP_WARDEN_ADMIN_LISTEN", default_value = "0.0.0.0:15020")]
    pub admin_listen: String,

    /// URL of the real API server (https://HOST:PORT). Default:
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
    #[arg(long, env = "MCP_WARDEN_UPSTREAM")]
    pub upstream: Option<String>,

    /// CA bundle (PEM) that signs the API server's serving certificate.
    #[arg(
        long,
        env = "MCP_WARDEN_UPSTREAM_CA_FILE",
        default_value = "/var/run/secrets/mcp-warden/upstream/ca.crt"
    )]
    pub upstream_ca_file: PathBuf,

    /// The real service-account token; re-read when the kubelet rotates it.
    #[arg(
        long,
        env = "MCP_WARDEN_UPSTREAM_TOKEN_FILE",
        default_value = "/var/run/secrets/mcp-warden/upstream/token"
    )]
    pub upstream_token_file: PathBuf,

    /// Directory where the sidecar writes `ca.crt`, `token` and `namespace` for the app.
    #[arg(
        long,
        env = "MCP_WARDEN_LOCAL_DIR",
        default_value = "/var/run/secrets/mcp-warden/local"
    )]
    pub local_dir: PathBuf,

    /// Policy file (ConfigMap key `policy.yaml`); a missing file means the embedded default policy.
    #[arg(
        long,
        env = "MCP_WARDEN_POLICY_FILE",
        default_value = "/etc/mcp-warden/policy/policy.yaml"
    )]
    pub policy_file: PathBuf,

    /// Collector URL for recordings (https://; http:// only for loopback). Unset: no remote delivery.
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_URL")]
    pub collector_url: Option<String>,

    /// Wire format of the recording stream.
    #[arg(
        long,
        env = "MCP_WARDEN_COLLECTOR_FORMAT",
        value_enum,
        default_value = "eventlist"
    )]
    pub collector_format: CollectorFormat,

    /// CA bundle (PEM) for the collector's serving certificate (default: the
    /// public web PKI roots, as a collector outside the cluster would use).
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_CA_FILE")]
    pub collector_ca_file: Option<PathBuf>,

    /// Bearer token file sent to the collector (re-read on change).
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_TOKEN_FILE")]
    pub collector_token_file: Option<PathBuf>,

    /// Client certificate (PEM) presented to the collector (mutual TLS); needs the key file too.
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_CLIENT_CERT_FILE")]
    pub collector_client_cert_file: Option<PathBuf>,

    /// Private key (PEM) of `--collector-client-cert-file`.
    #[arg(long, env = "MCP_WARDEN_COLLECTOR_CLIENT_KEY_FILE")]
    pub collector_client_key_file: Option<PathBuf>,

    /// Directory of the on-disk spool of not-yet-delivered events (an emptyDir in a pod).
    #[arg(
        long,
        env = "MCP_WARDEN_SPOOL_DIR",
        default_value = "/var/run/mcp-warden/spool"
    )]
    pub spool_dir: PathBuf,

    /// Maximum size of the spool in bytes.
    #[arg(long, env = "MCP_WARDEN_SPOOL_MAX_BYTES", default_value = "268435456")]
    pub spool_max_bytes: String,

    /// Data-path cost settings (see docs/recording.md and docs/sidecar.md).
    /// How long written spool records may wait for their fsync: a response is
    /// released once its event is written to the spool file (it survives a
    /// kill of the sidecar) and records are fsync'd in groups at most this
    /// long after; `always`: fsync before every release (survives a machine
    /// crash too, slower).
    #[arg(long, env = "MCP_WARDEN_SPOOL_SYNC_INTERVAL", default_value = "20ms")]
    pub spool_sync_interval: String,

    /// Per-request access log: `off`, `sampled` (every refused, failed or
    /// writing request, 1 in 100 successful reads) or `all`.
    #[arg(
        long,
        env = "MCP_WARDEN_ACCESS_LOG",
        value_enum,
        default_value = "sampled"
    )]
    pub access_log: crate::logging::AccessLog,

    /// Behaviour when an event cannot be made durable.
    #[arg(
        long,
        env = "MCP_WARDEN_ON_RECORDING_FAILURE",
        value_enum,
        default_value = "fail-closed"
    )]
    pub on_recording_failure: RecordingFailureMode,

    /// Name of the pod (downward API), recorded in events.
    #[arg(long, env = "MCP_WARDEN_POD_NAME")]
    pub pod_name: Option<String>,

    /// Namespace of the pod (downward API); default: the `namespace` file next to the upstream token.
    #[arg(long, env = "MCP_WARDEN_POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// Numeric uid of the app containers: the local files are chowned to it and made 0600.
    /// Unset: files are 0644, which every container of the pod can read.
    #[arg(long, env = "MCP_WARDEN_APP_UID")]
    pub app_uid: Option<u32>,

    /// Cluster name, recorded in events.
    #[arg(long, env = "MCP_WARDEN_CLUSTER_NAME", default_value = "kubernetes")]
    pub cluster_name: String,

    /// How long in-flight requests may take to finish after SIGTERM (e.g. `15s`, `500ms`, `1m`).
    #[arg(long, env = "MCP_WARDEN_SHUTDOWN_GRACE", default_value = "15s")]
    pub shutdown_grace: String,

    /// Timeout for establishing a connection (TCP + TLS) to the upstream; requests themselves
    /// have no total timeout, so watches last as long as the server keeps them.
    #[arg(
        long,
        env = "MCP_WARDEN_UPSTREAM_CONNECT_TIMEOUT",
        default_value = "10s"
    )]
    pub upstream_connect_timeout: String,

    /// Log format.
    #[arg(
        long,
        env = "MCP_WARDEN_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,

    /// Approvals: `--approval-timeout`, `--approval-reuse-window`, `--approval-notify-url`.
    #[command(flatten)]
    pub approval: crate::approval::ApprovalArgs,

    /// Connection and request limits: timeouts and caps of both listeners,
    /// in-flight caps (see [`crate::limits`]).
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
}

/// Validated configuration of the proxy.
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
    /// Collector URL, if recordings are delivered remotely.
    pub collector_url: Option<Uri>,
    /// Collector wire format.
    pub collector_format: CollectorFormat,
    /// Collector CA bundle.
    pub collector_ca_file: Option<PathBuf>,
    /// Collector bearer token file.
    pub collector_token_file: Option<PathBuf>,
    /// `--collector-client-cert-file`.
    pub collector_client_cert_file: Option<PathBuf>,
    /// `--collector-client-key-file`.
    pub collector_client_key_file: Option<PathBuf>,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool size limit in bytes.
    pub spool_max_bytes: u64,
    /// When a spooled record counts as recorded (`--spool-sync-interval`).
    pub spool_sync: crate::recording::spool::SpoolSync,
    /// `--access-log`.
    pub access_log: crate::logging::AccessLog,
    /// Recording failure behaviour.
    pub on_recording_failure: RecordingFailureMode,
    /// Pod name, if known.
    pub pod_name: Option<String>,
    /// Pod namespace, if given (see [`Config::namespace`] for the resolved value).
    pub pod_namespace: Option<String>,
    /// Owner of the local files.
    pub app_uid: Option<u32>,
    /// Cluster name.
    pub cluster_name: String,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Approvals (held requests, AccessRequests).
    pub approval: crate::approval::ApprovalConfig,
    /// Connection and request limits of both listeners and the in-flight caps.
    pub limits: crate::limits::Limits,
}

impl Config {
    /// The namespace written to the app's `namespace` file: `--pod-namespace`,
    /// else the `namespace` file beside the upstream token, else `default`.
    pub fn namespace(&self) -> String {
        if let Some(ns) = &self.pod_namespace {
            return ns.clone();
        }
        if let Some(dir) = self.upstream_token_file.parent()
            && let Ok(ns) = std::fs::read_to_string(dir.join("namespace"))
        {
            let ns = ns.trim();
            if !ns.is_empty() {
                return ns.to_string();
            }
        }
        "default".to_string()
    }
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
        let listen = parse_addr(&self.listen, "listen", "MCP_WARDEN_LISTEN")?;
        let admin_listen = parse_addr(
            &self.admin_listen,
            "admin-listen",
            "MCP_WARDEN_ADMIN_LISTEN",
        )?;
        let listen_https_alias = match self.listen_https_alias.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(a) => Some(parse_addr(
                a,
                "listen-https-alias",
                "MCP_WARDEN_LISTEN_HTTPS_ALIAS",
            )?),
        };
        if listen_https_alias.is_some_and(|a| a == listen || a == admin_listen) {
            return Err(ConfigError::new(
                "listen-https-alias",
                "MCP_WARDEN_LISTEN_HTTPS_ALIAS",
                "must differ from --listen and --admin-listen",
            ));
        }
        let cluster_domain = self.cluster_domain.trim().trim_end_matches('.').to_string();
        if cluster_domain.is_empty()
            || !cluster_domain.split('.').all(is_dns_label)
            || cluster_domain.len() > 253
        {
            return Err(ConfigError::new(
                "cluster-domain",
                "MCP_WARDEN_CLUSTER_DOMAIN",
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
        let collector_url = match &self.collector_url {
            Some(u) if !u.trim().is_empty() => Some(parse_base_url(
                u,
                "collector-url",
                "MCP_WARDEN_COLLECTOR_URL",
                true,
            )?),
            _ => None,
        };
        let spool_max_bytes = self
            .spool_max_bytes
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                ConfigError::new(
                    "spool-max-bytes",
                    "MCP_WARDEN_SPOOL_MAX_BYTES",
                    format!(
                        "{:?} is not a positive number of bytes",
                        self.spool_max_bytes
                    ),
                )
            })?;
        let spool_sync = parse_spool_sync(&self.spool_sync_interval).map_err(|m| {
            ConfigError::new("spool-sync-interval", "MCP_WARDEN_SPOOL_SYNC_INTERVAL", m)
        })?;
        let shutdown_grace = parse_duration(&self.shutdown_grace)
            .map_err(|m| ConfigError::new("shutdown-grace", "MCP_WARDEN_SHUTDOWN_GRACE", m))?;
        let upstream_connect_timeout = parse_duration(&self.upstream_connect_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ConfigError::new(
                    "upstream-connect-timeout",
                    "MCP_WARDEN_UPSTREAM_CONNECT_TIMEOUT",
                    format!(
                        "{:?} is not a positive duration such as 10s",
                        self.upstream_connect_timeout
                    ),
                )
            })?;
        non_empty_path(
            &self.upstream_ca_file,
            "upstream-ca-file",
            "MCP_WARDEN_UPSTREAM_CA_FILE",
        )?;
        non_empty_path(
            &self.upstream_token_file,
            "upstream-token-file",
            "MCP_WARDEN_UPSTREAM_TOKEN_FILE",
        )?;
        non_empty_path(&self.local_dir, "local-dir", "MCP_WARDEN_LOCAL_DIR")?;
        non_empty_path(&self.policy_file, "policy-file", "MCP_WARDEN_POLICY_FILE")?;
        non_empty_path(&self.spool_dir, "spool-dir", "MCP_WARDEN_SPOOL_DIR")?;
        if let Some(ns) = &self.pod_namespace
            && !is_dns_label(ns)
        {
            return Err(ConfigError::new(
                "pod-namespace",
                "MCP_WARDEN_POD_NAMESPACE",
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
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
        if self.cluster_name.trim().is_empty() {
            return Err(ConfigError::new(
                "cluster-name",
                "MCP_WARDEN_CLUSTER_NAME",
                "must not be empty",
            ));
        }
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
            collector_url,
            collector_format: self.collector_format,
            collector_ca_file: self.collector_ca_file.clone(),
            collector_token_file: self.collector_token_file.clone(),
            collector_client_cert_file: self.collector_client_cert_file.clone(),
            collector_client_key_file: self.collector_client_key_file.clone(),
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes,
            spool_sync,
            access_log: self.access_log,
            on_recording_failure: self.on_recording_failure,
            pod_name: self.pod_name.clone().filter(|s| !s.is_empty()),
            pod_namespace: self.pod_namespace.clone().filter(|s| !s.is_empty()),
            app_uid: self.app_uid,
            cluster_name: self.cluster_name.clone(),
            shutdown_grace,
            upstream_connect_timeout,
            log_format: self.log_format,
            approval: self.approval.validate()?,
            limits: self.limits.validate()?,
        })
    }
}

/// Parses `IP:PORT`. An IPv6 address may also come unbracketed
/// (`fd00::5:15020`, which is what `$(POD_IP):15020` expands to on an IPv6
/// pod): the port is then what follows the last colon.
pub(crate) fn parse_addr(
    s: &str,
    flag: &'static str,
    env: &'static str,
) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    t.parse::<SocketAddr>()
        .or_else(|e| {
            t.rsplit_once(':')
                .and_then(|(ip, port)| {
                    let ip = ip.parse::<std::net::Ipv6Addr>().ok()?;
                    let port = port.parse::<u16>().ok()?;
                    Some(SocketAddr::new(IpAddr::V6(ip), port))
                })
                .ok_or(e)
        })
        .map_err(|e| ConfigError::new(flag, env, format!("{s:?} is not an IP:PORT address: {e}")))
}

fn non_empty_path(
    p: &std::path::Path,
    flag: &'static str,
    env: &'static str,
) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(ConfigError::new(flag, env, "must not be empty"));
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, with an IPv6
/// host bracketed, as client-go's in-cluster config builds it.
pub fn default_upstream(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty())?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{port}"))
}

/// Parses a base URL (scheme + authority, no path beyond `/` for the
/// upstream). `http://` is accepted only when the host is loopback, because
/// the token or recordings would otherwise cross the network in clear.
fn parse_base_url(
    s: &str,
    flag: &'static str,
    env: &'static str,
    allow_path: bool,
) -> Result<Uri, ConfigError> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| ConfigError::new(flag, env, format!("{s:?} is not a URL: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or("");
    let Some(authority) = uri.authority() else {
        return Err(ConfigError::new(flag, env, format!("{s:?} has no host")));
    };
    match scheme {
        "https" => {}
        "http" if is_loopback_host(authority.host()) => {}
        "http" => {
            return Err(ConfigError::new(
                flag,
                env,
                format!("{s:?}: http:// is allowed only for loopback hosts"),
            ));
        }
        other => {
            return Err(ConfigError::new(
                flag,
                env,
                format!("{s:?}: unsupported scheme {other:?}, use https://"),
            ));
        }
    }
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(
            flag,
            env,
            "credentials in the URL are not allowed",
        ));
    }
    if !allow_path {
        let path = uri.path();
        if !(path.is_empty() || path == "/") || uri.query().is_some() {
            return Err(ConfigError::new(
                flag,
                env,
                format!("{s:?}: a path prefix is not supported"),
            ));
        }
        let base = format!("{scheme}://{authority}/");
        return base
            .parse()
            .map_err(|e| ConfigError::new(flag, env, format!("{s:?}: {e}")));
    }
    Ok(uri)
}

/// True for `localhost`, 127.0.0.0/8 and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// `always`, or a positive duration (`20ms`) between grouped fsyncs.
fn parse_spool_sync(s: &str) -> Result<crate::recording::spool::SpoolSync, String> {
    use crate::recording::spool::SpoolSync;
    if s.trim() == "always" {
        return Ok(SpoolSync::Always);
    }
    parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .map(SpoolSync::Interval)
        .ok_or_else(|| format!("{s:?} is neither `always` nor a positive duration such as 20ms"))
}

/// Parses `500ms`, `15s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 15s, 500ms or 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    };
    Ok(d)
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
        assert_eq!(c.collector_url.unwrap().path(), "/events");
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
            let e = args(&v).validate_with_env(no_env).unwrap_err();
            assert!(e.to_string().contains(flag), "{flag}: {e}");
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
        assert!(
            args(&["--upstream", "https://h:1", "--admin-listen", "fd00::5"])
                .validate_with_env(no_env)
                .is_err()
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
            let e = args(&["--upstream", "https://h:1", flag, val])
                .validate_with_env(no_env)
                .unwrap_err();
            assert!(e.to_string().contains(flag), "{flag}: {e}");
            assert!(e.to_string().contains("MCP_WARDEN_"), "{flag}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("7d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn spool_sync_and_access_log() {
        use crate::logging::AccessLog;
        use crate::recording::spool::SpoolSync;
        let base = ["--upstream", "https://h:1"];
        let c = args(&base).validate_with_env(no_env).unwrap();
        assert_eq!(c.spool_sync, SpoolSync::Interval(Duration::from_millis(20)));
        assert_eq!(c.access_log, AccessLog::Sampled);
        let mut v = base.to_vec();
        v.extend(["--spool-sync-interval", "always", "--access-log", "off"]);
        let c = args(&v).validate_with_env(no_env).unwrap();
        assert_eq!(c.spool_sync, SpoolSync::Always);
        assert_eq!(c.access_log, AccessLog::Off);
        for bad in ["0ms", "never", ""] {
            let mut v = base.to_vec();
            v.extend(["--spool-sync-interval", bad]);
            let e = args(&v).validate_with_env(no_env).unwrap_err();
            assert_eq!(e.flag, "spool-sync-interval", "{bad}: {e}");
        }
    }
}
