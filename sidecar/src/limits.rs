//! Connection and request limits: the flags (each with its `MCP_WARDEN_*`
//! twin) and their validation into [`Limits`], which the listeners
//! ([`crate::listener`]) and the in-flight caps ([`crate::inflight`]) use.
//!
//! Defaults and why:
//! - `--header-read-timeout 32s` and `--idle-timeout 90s` are
//!   kube-apiserver's own (`ReadHeaderTimeout`, `IdleTimeout`), so clients
//!   tuned for the API server (client-go closes idle connections after 90s)
//!   see the same behaviour through the sidecar;
//! - `--first-byte-timeout 10s`, `--tls-handshake-timeout 10s`: a client on
//!   localhost sends its request as soon as it connects;
//! - `--body-read-timeout 30s`: clients write request bodies at once; 30s of
//!   silence in the middle of one is a stuck or hostile client;
//! - `--http2-keepalive-interval 30s`, `--http2-keepalive-timeout 20s`:
//!   a dead peer of a long watch is noticed within a minute;
//! - `--max-connections 2048`: room for the 1,000-watch benchmark over
//!   HTTP/1.1 plus ordinary traffic, at about 23 KB per idle TLS connection
//!   (~50 MB), well inside the chart's 256Mi limit;
//! - `--admin-max-connections 64`, `--admin-timeout 10s`: the kubelet's probes
//!   and a Prometheus scrape need one connection each, for a second;
//! - `--max-inflight-requests 400`: kube-apiserver's `--max-requests-inflight`;
//! - `--max-long-running-requests 1000`: the 1,000-watch benchmark; each
//!   long-running request holds an upstream connection of its own.
//!
//! The caps only protect the sidecar if they fit its file-descriptor limit:
//! at start [`raise_fd_limit`] raises the soft `RLIMIT_NOFILE` to the hard
//! one (as Go programs do; container runtimes often start processes at a
//! soft 1024) and warns, naming the flags, when the caps could still need
//! more descriptors than that.

use std::time::Duration;

use clap::Args;

use crate::config::{NamedParser, duration, positive_duration};
use crate::listener::ListenerConfig;

/// Most connections a cap may allow (the semaphore counts in `u32`).
const MAX_CAP: usize = 1_000_000;

/// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to the app.
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 250;

/// Descriptors the sidecar needs besides connections: spool segments,
/// policy and token files, notify watches, the upstream pool's idle
/// connections, logs.
const FD_RESERVE: u64 = 256;

impl Limits {
    /// Descriptors the caps may need at once: both listeners' connections,
    /// plus an upstream connection per request in flight, plus a reserve.
    pub fn fd_budget(&self) -> u64 {
        let n = self.app.max_connections
            + self.admin.max_connections
            + self.max_inflight_requests
            + self.max_long_running_requests;
        n as u64 + FD_RESERVE
    }
}

/// What [`raise_fd_limit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force after raising it (`None`: unlimited).
    pub soft: Option<u64>,
    /// When the caps may need more descriptors than `soft`: the warning.
    pub warning: Option<String>,
}

/// The warning for `budget` descriptors under a soft limit of `soft`.
pub fn fd_warning(budget: u64, soft: Option<u64>) -> Option<String> {
    let soft = soft?;
    (budget > soft).then(|| {
        format!(
            "the connection and request caps may need {budget} file descriptors, but RLIMIT_NOFILE is {soft}: \
             lower --max-connections, --admin-max-connections, --max-inflight-requests or \
             --max-long-running-requests, or raise the container's open-files limit"
        )
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks the caps
/// of `limits` against it.
pub fn raise_fd_limit(limits: &Limits) -> FdLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let have = getrlimit(Resource::Nofile);
    if have.current != have.maximum {
        let want = Rlimit {
            current: have.maximum,
            maximum: have.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, want) {
            tracing::debug!(error = %e, "cannot raise RLIMIT_NOFILE");
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    FdLimit {
        soft,
        warning: fd_warning(limits.fd_budget(), soft),
    }
}

/// Connection and request limit flags (flattened into the sidecar's flags);
/// their value parsers check each value, so [`LimitArgs::limits`] cannot fail.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Most connections open at once on the app listener; more are closed at once.
    #[arg(long, env = "MCP_WARDEN_MAX_CONNECTIONS", default_value = "2048", value_parser = cap())]
    pub max_connections: usize,

    /// Longest TLS handshake on the app listener.
    #[arg(long, env = "MCP_WARDEN_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = positive_duration())]
    pub tls_handshake_timeout: Duration,

    /// Longest wait for the first byte of a request after the TLS handshake.
    #[arg(long, env = "MCP_WARDEN_FIRST_BYTE_TIMEOUT", default_value = "10s", value_parser = positive_duration())]
    pub first_byte_timeout: Duration,

    /// Longest time to receive an HTTP/1.1 request head, from its first byte.
    #[arg(long, env = "MCP_WARDEN_HEADER_READ_TIMEOUT", default_value = "32s", value_parser = positive_duration())]
    pub header_read_timeout: Duration,

    /// Close a connection with no request in progress after this long
    /// (HTTP/1.1: between keep-alive requests; HTTP/2: no open streams).
    /// Streaming responses (watch, follow) and tunnels are never idle.
    #[arg(long, env = "MCP_WARDEN_IDLE_TIMEOUT", default_value = "90s", value_parser = positive_duration())]
    pub idle_timeout: Duration,

    /// Interval of HTTP/2 keep-alive pings to the app (`0`: no pings).
    #[arg(
        long,
        env = "MCP_WARDEN_HTTP2_KEEPALIVE_INTERVAL",
        default_value = "30s",
        value_parser = duration()
    )]
    pub http2_keepalive_interval: Duration,

    /// Drop an HTTP/2 connection whose ping is not answered within this long.
    #[arg(
        long,
        env = "MCP_WARDEN_HTTP2_KEEPALIVE_TIMEOUT",
        default_value = "20s",
        value_parser = positive_duration()
    )]
    pub http2_keepalive_timeout: Duration,

    /// Cut a request whose body stalls (no new bytes from the app) this long.
    #[arg(long, env = "MCP_WARDEN_BODY_READ_TIMEOUT", default_value = "30s", value_parser = positive_duration())]
    pub body_read_timeout: Duration,

    /// Most connections open at once on the admin listener; more are closed at once.
    #[arg(long, env = "MCP_WARDEN_ADMIN_MAX_CONNECTIONS", default_value = "64", value_parser = cap())]
    pub admin_max_connections: usize,

    /// First-byte, header, idle and body timeout of the admin listener.
    #[arg(long, env = "MCP_WARDEN_ADMIN_TIMEOUT", default_value = "10s", value_parser = positive_duration())]
    pub admin_timeout: Duration,

    /// Most ordinary (not long-running) requests in flight at once; more get 429.
    #[arg(long, env = "MCP_WARDEN_MAX_INFLIGHT_REQUESTS", default_value = "400", value_parser = cap())]
    pub max_inflight_requests: usize,

    /// Most long-running requests (watches, followed logs, exec/attach/port-forward)
    /// open at once; more get 429.
    #[arg(
        long,
        env = "MCP_WARDEN_MAX_LONG_RUNNING_REQUESTS",
        default_value = "1000",
        value_parser = cap()
    )]
    pub max_long_running_requests: usize,
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Limits of the app-facing TLS listener (`--listen`).
    pub app: ListenerConfig,
    /// Limits of the admin listener (`--admin-listen`).
    pub admin: ListenerConfig,
    /// `--max-inflight-requests`.
    pub max_inflight_requests: usize,
    /// `--max-long-running-requests`.
    pub max_long_running_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let app = ListenerConfig {
            name: "app".into(),
            max_connections: 2048,
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(30),
            http2_max_concurrent_streams: HTTP2_MAX_CONCURRENT_STREAMS,
        };
        let admin = admin_config(&app, 64, Duration::from_secs(10));
        Limits {
            app,
            admin,
            max_inflight_requests: 400,
            max_long_running_requests: 1000,
        }
    }
}

fn admin_config(app: &ListenerConfig, max: usize, timeout: Duration) -> ListenerConfig {
    ListenerConfig {
        name: "admin".into(),
        max_connections: max,
        handshake_timeout: timeout,
        first_byte_timeout: timeout,
        header_read_timeout: timeout,
        idle_timeout: timeout,
        body_read_timeout: timeout,
        ..app.clone()
    }
}

/// A connection or request cap: 1 to [`MAX_CAP`].
fn cap() -> NamedParser<usize> {
    NamedParser::new(|s| {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_CAP).contains(n))
            .ok_or_else(|| format!("{s:?} is not between 1 and {MAX_CAP}"))
    })
}

impl LimitArgs {
    /// The limits of both listeners and the in-flight caps.
    pub fn limits(&self) -> Limits {
        let keepalive = self.http2_keepalive_interval;
        let app = ListenerConfig {
            name: "app".into(),
            max_connections: self.max_connections,
            handshake_timeout: self.tls_handshake_timeout,
            first_byte_timeout: self.first_byte_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            http2_keepalive_interval: (!keepalive.is_zero()).then_some(keepalive),
            http2_keepalive_timeout: self.http2_keepalive_timeout,
            body_read_timeout: self.body_read_timeout,
            http2_max_concurrent_streams: HTTP2_MAX_CONCURRENT_STREAMS,
        };
        let admin = admin_config(&app, self.admin_max_connections, self.admin_timeout);
        Limits {
            app,
            admin,
            max_inflight_requests: self.max_inflight_requests,
            max_long_running_requests: self.max_long_running_requests,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_checked_against_the_fd_limit() {
        let l = Limits::default();
        assert_eq!(l.fd_budget(), 2048 + 64 + 400 + 1000 + FD_RESERVE);
        assert_eq!(fd_warning(l.fd_budget(), None), None);
        assert_eq!(fd_warning(l.fd_budget(), Some(1 << 20)), None);
        let w = fd_warning(l.fd_budget(), Some(1024)).unwrap();
        assert!(w.contains("--max-connections"), "{w}");
        assert!(w.contains("1024"), "{w}");
        // Raising never lowers the limit.
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let after = raise_fd_limit(&l).soft;
        assert!(after.unwrap_or(u64::MAX) >= before.unwrap_or(u64::MAX));
    }
}
