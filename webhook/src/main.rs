//! mcp-warden-webhook binary: `serve` (the admission webhook) and `inject -f`
//! (the same patch offline). All logic is in the library.

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use mcp_warden_shared::contract;
use mcp_warden_webhook::config::{InjectConfig, KubeVersion, NativeSidecar};
use mcp_warden_webhook::selfmanaged::SelfManagedConfig;
use mcp_warden_webhook::server::{ServeConfig, ServerVersion, TlsSource};
use mcp_warden_webhook::tls::CertFiles;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Static builds (the image's musl build) use mimalloc, with the image's
/// settings (see the Dockerfile): musl's malloc serialises every allocation
/// on one lock. A static glibc build uses it too, so that the two compare on
/// their C library alone (bench/results.md, "Sixth pass").
#[cfg(target_feature = "crt-static")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mcp-warden-webhook",
    version,
    about = "mcp-warden mutating admission webhook"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /mutate over TLS and /healthz, /readyz, /metrics on the admin port.
    Serve(ServeArgs),
    /// Inject the sidecar into workload manifests offline (multi-document YAML).
    Inject(InjectArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TLS listener for AdmissionReviews.
    #[arg(
        long,
        env = "MCP_WARDEN_LISTEN",
        default_value = "0.0.0.0:8443",
        value_parser = socket_addr("MCP_WARDEN_LISTEN")
    )]
    listen: SocketAddr,
    /// Plain-HTTP admin listener (/healthz /readyz /metrics).
    #[arg(
        long,
        env = "MCP_WARDEN_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080",
        value_parser = socket_addr("MCP_WARDEN_ADMIN_LISTEN")
    )]
    admin_listen: SocketAddr,
    /// PEM certificate chain (reloaded when it changes).
    #[arg(
        long,
        env = "MCP_WARDEN_TLS_CERT_FILE",
        requires = "tls_key_file",
        conflicts_with = "self_managed_tls"
    )]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key (reloaded when it changes).
    #[arg(long, env = "MCP_WARDEN_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// How often to re-read the certificate files without a file event
    /// (at least 1).
    #[arg(
        long,
        env = "MCP_WARDEN_TLS_POLL_SECONDS",
        default_value_t = 30,
        value_parser = seconds_at_least(1, "MCP_WARDEN_TLS_POLL_SECONDS")
    )]
    tls_poll_seconds: u64,
    /// Create and rotate a CA and serving certificate, kept in a Secret, and
    /// write the CA bundle into the MutatingWebhookConfiguration.
    #[arg(long, env = "MCP_WARDEN_SELF_MANAGED_TLS")]
    self_managed_tls: bool,
    /// Service name the API server calls (self-managed mode).
    #[arg(
        long,
        env = "MCP_WARDEN_SERVICE_NAME",
        default_value = contract::WEBHOOK_SERVICE
    )]
    service_name: String,
    /// Namespace of the Service and Secret (self-managed mode).
    #[arg(
        long,
        env = "MCP_WARDEN_SERVICE_NAMESPACE",
        default_value = contract::WEBHOOK_NAMESPACE
    )]
    service_namespace: String,
    /// MutatingWebhookConfiguration to keep the caBundle of (self-managed mode).
    #[arg(
        long,
        env = "MCP_WARDEN_WEBHOOK_CONFIG_NAME",
        default_value = contract::WEBHOOK_CONFIGURATION
    )]
    webhook_config_name: String,
    /// Secret holding the self-managed CA and certificate.
    #[arg(
        long,
        env = "MCP_WARDEN_SECRET_NAME",
        default_value = contract::WEBHOOK_TLS_SECRET
    )]
    secret_name: String,
    /// Injection settings (YAML); every key also has an MCP_WARDEN_* twin.
    #[arg(long, env = "MCP_WARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// With nativeSidecar: auto, how often to re-read the API server's
    /// version (GET /version) after the read at start (at least 10).
    #[arg(
        long,
        env = "MCP_WARDEN_VERSION_RECHECK_SECONDS",
        default_value_t = 600,
        value_parser = seconds_at_least(10, "MCP_WARDEN_VERSION_RECHECK_SECONDS")
    )]
    version_recheck_seconds: u64,
    /// The longest window an AccessRequest grant may be approved for
    /// (`90s`, `30m`, `1h`); longer ones are refused at admission.
    #[arg(
        long,
        env = "MCP_WARDEN_MAX_GRANT",
        default_value = "1h",
        value_parser = grant_window("MCP_WARDEN_MAX_GRANT")
    )]
    max_grant: Duration,
}

#[derive(Args)]
struct InjectArgs {
    /// Manifest file, or - for standard input.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Injection settings (YAML); every key also has an MCP_WARDEN_* twin.
    #[arg(long, env = "MCP_WARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Sidecar form, overriding the config's nativeSidecar: true (native
    /// sidecar, Kubernetes >= 1.29), false (first regular container, every
    /// version) or auto (by --kubernetes-version; without it the container
    /// form, which every server accepts).
    #[arg(long, value_parser = native_sidecar())]
    native_sidecar: Option<NativeSidecar>,
    /// Version of the cluster the output is for (e.g. 1.30), for
    /// nativeSidecar: auto.
    #[arg(long)]
    kubernetes_version: Option<String>,
}

/// `true`, `false` or `auto`, listed in `--help`.
fn native_sidecar() -> impl TypedValueParser<Value = NativeSidecar> {
    PossibleValuesParser::new(["true", "false", "auto"]).try_map(|s| {
        NativeSidecar::parse(&s).ok_or_else(|| format!("{s:?} is not true, false or auto"))
    })
}

/// `IP:PORT`; the error names the environment twin (clap names the flag).
fn socket_addr(
    env: &'static str,
) -> impl Fn(&str) -> Result<SocketAddr, String> + Clone + Send + Sync + 'static {
    move |s| {
        s.trim()
            .parse()
            .map_err(|e| format!("{s:?} is not an IP:PORT address ({e}; env {env})"))
    }
}

/// A grant window (`90s`, `30m`, `1h`); the error names the environment
/// twin (clap names the flag).
fn grant_window(
    env: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| mcp_warden_shared::grant::parse_duration(s).map_err(|e| format!("{e} (env {env})"))
}

/// A whole number of seconds, refused below `min`; the error names the
/// environment twin (clap names the flag).
fn seconds_at_least(
    min: u64,
    env: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| match s.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(n) => Err(format!("{n} is below the minimum of {min} (env {env})")),
        Err(e) => Err(format!("{s:?} is not a number of seconds ({e}; env {env})")),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<InjectConfig> {
    let base = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading --config {}", p.display()))?;
            InjectConfig::from_yaml(&p.display().to_string(), &text)?
        }
        None => InjectConfig::default(),
    };
    Ok(base.with_env(|k| std::env::var(k).ok())?)
}

async fn serve(args: ServeArgs) -> Result<()> {
    let inject = load_config(args.config.as_ref())?;
    let tls = match (args.tls_cert_file, args.tls_key_file, args.self_managed_tls) {
        (Some(cert), Some(key), false) => TlsSource::Files(CertFiles {
            cert,
            key,
            poll_interval: Duration::from_secs(args.tls_poll_seconds),
        }),
        (None, None, true) => TlsSource::SelfManaged(SelfManagedConfig {
            service_name: args.service_name,
            service_namespace: args.service_namespace,
            webhook_config_name: args.webhook_config_name,
            secret_name: args.secret_name,
            resync: Duration::from_secs(600),
        }),
        _ => bail!("give either --tls-cert-file and --tls-key-file, or --self-managed-tls"),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("--admin-listen {}", args.admin_listen))?;
    let server_version = ServerVersion::Detect {
        recheck: Duration::from_secs(args.version_recheck_seconds),
        client: None,
    };
    let config = ServeConfig {
        inject,
        tls,
        server_version,
        max_grant: args.max_grant,
    };
    mcp_warden_webhook::run(listener, admin, config, mcp_warden_io::shutdown_signal()).await?;
    Ok(())
}

fn inject(args: InjectArgs) -> Result<bool> {
    let config = load_config(args.config.as_ref())?;
    let input = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let mut config = config;
    if let Some(n) = args.native_sidecar {
        config.native_sidecar = n;
    }
    let version = match args.kubernetes_version.as_deref() {
        Some(v) => Some(KubeVersion::parse(v).with_context(|| {
            format!("--kubernetes-version {v:?} is not a version such as 1.30")
        })?),
        None => None,
    };
    let form = config.native_sidecar.resolve(version);
    if config.native_sidecar == NativeSidecar::Auto && version.is_none() {
        eprintln!(
            "mcp-warden: nativeSidecar is auto and the cluster's version is unknown offline: \
             injecting the container form, which every Kubernetes version accepts \
             (--kubernetes-version 1.NN or --native-sidecar=true for the native sidecar)"
        );
    }
    let (out, reports) = mcp_warden_webhook::manifest::inject_yaml(&input, &config, form)?;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing standard output")?;
    let mut refused = false;
    for r in &reports {
        eprintln!("{}: {}", r.object, r.outcome);
        refused |= r.is_refused();
    }
    Ok(!refused)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    match cli.command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(serve(args))
        }
        Command::Inject(args) => {
            if !inject(args)? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["webhook", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(a) => Ok(a),
            Command::Inject(_) => unreachable!(),
        }
    }

    #[test]
    fn defaults_parse() {
        let a = serve_args(&[]).unwrap();
        assert_eq!(a.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(a.admin_listen.to_string(), "0.0.0.0:8080");
        assert_eq!((a.tls_poll_seconds, a.version_recheck_seconds), (30, 600));
    }

    #[test]
    fn bad_values_name_the_flag_and_its_env() {
        let e = serve_args(&["--listen", "nowhere"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--listen") && e.contains("MCP_WARDEN_LISTEN"),
            "{e}"
        );
        let e = serve_args(&["--tls-poll-seconds", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--tls-poll-seconds") && e.contains("minimum of 1"),
            "{e}"
        );
        let e = serve_args(&["--version-recheck-seconds", "9"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--version-recheck-seconds") && e.contains("minimum of 10"),
            "{e}"
        );
    }
}
