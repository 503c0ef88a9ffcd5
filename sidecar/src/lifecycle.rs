//! The container form's lifecycle hooks, run by the kubelet inside the
//! sidecar's container (the image has no shell, so the binary itself is the
//! hook): `wait-ready` and `wait-drain`.
//!
//! - `wait-ready` (postStart): polls the admin server's `/readyz` until it
//!   answers 200, bounded by `--timeout`. The kubelet starts a pod's regular
//!   containers in order and does not start the next one before the
//!   previous one's postStart hook returns, so with the sidecar first the app
//!   starts only once the sidecar serves (as Istio's
//!   `holdApplicationUntilProxyStarts`). On timeout it exits 1: the kubelet
//!   then kills and restarts the sidecar container.
//! - `wait-drain` (preStop): on pod deletion the kubelet runs preStop hooks
//!   and only then sends SIGTERM to that container, while the app receives
//!   its SIGTERM at once. The hook waits until no app connection is open
//!   (`mcp_warden_connections_open` of the app-facing listeners on `/metrics`; the app's
//!   connections close when it exits) for at least `--min`, or until `--max`
//!   has passed, so the app keeps its API access while it shuts down. The
//!   sidecar's own SIGTERM handling (stop accepting, let in-flight requests
//!   finish within `--shutdown-grace`) follows. The webhook sets `--max` to
//!   the pod's grace period minus 5 s. It always exits 0: a preStop failure
//!   only delays the kill.
//!
//! Both speak plain HTTP/1.0 to `127.0.0.1:<admin port>` with a bounded
//! connect and read time; no request ever leaves the pod.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Args;
use mcp_warden_shared::contract;

use crate::config::{duration, positive_duration};

/// Name of the second app-facing listener (127.0.0.1:443) in metrics.
pub const HTTPS_ALIAS_LISTENER: &str = "app-https-alias";

/// How often the hooks poll the admin server.
const POLL: Duration = Duration::from_millis(200);

/// Bound of one admin request (connect, write, read).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest admin response read.
const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// Errors of the lifecycle hooks.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The admin server did not report ready in time.
    #[error("the sidecar was not ready within {timeout:?} (GET http://{addr}/readyz: {last})")]
    NotReady {
        timeout: Duration,
        addr: SocketAddr,
        last: String,
    },
}

/// `wait-ready` flags.
#[derive(Debug, Clone, Args)]
pub struct WaitReadyArgs {
    /// The sidecar's admin port on 127.0.0.1, used when `--admin-listen` is
    /// not given.
    #[arg(long, default_value_t = contract::ADMIN_PORT)]
    pub admin_port: u16,
    /// The sidecar's admin address. A hook runs in the sidecar container
    /// with its env, so it reads the same `MCP_WARDEN_ADMIN_LISTEN` the
    /// sidecar binds (the pod IP in an injected pod); `0.0.0.0`/`::` mean
    /// loopback.
    #[arg(long, env = contract::env::ADMIN_LISTEN)]
    pub admin_listen: Option<String>,
    /// Give up (exit 1) after this long, e.g. `120s`.
    #[arg(long, default_value = "120s", value_parser = positive_duration())]
    pub timeout: Duration,
}

/// `wait-drain` flags.
#[derive(Debug, Clone, Args)]
pub struct WaitDrainArgs {
    /// The sidecar's admin port on 127.0.0.1, used when `--admin-listen` is
    /// not given.
    #[arg(long, default_value_t = contract::ADMIN_PORT)]
    pub admin_port: u16,
    /// The sidecar's admin address. A hook runs in the sidecar container
    /// with its env, so it reads the same `MCP_WARDEN_ADMIN_LISTEN` the
    /// sidecar binds (the pod IP in an injected pod); `0.0.0.0`/`::` mean
    /// loopback.
    #[arg(long, env = contract::env::ADMIN_LISTEN)]
    pub admin_listen: Option<String>,
    /// Wait at least this long, even with no app connection open (the app
    /// may connect while it shuts down), e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = duration())]
    pub min: Duration,
    /// Wait at most this long, e.g. `25s`.
    #[arg(long, default_value = "25s", value_parser = positive_duration())]
    pub max: Duration,
}

fn admin(port: u16, listen: Option<&str>) -> SocketAddr {
    let Some(listen) = listen else {
        return SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    };
    match crate::config::parse_addr(listen, "admin-listen", contract::env::ADMIN_LISTEN) {
        Ok(a) if a.ip().is_unspecified() => SocketAddr::from((Ipv4Addr::LOCALHOST, a.port())),
        Ok(a) => a,
        // The sidecar itself refuses such a value and never becomes ready;
        // the hook then times out naming the address it tried.
        Err(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    }
}

/// `GET path` on the admin server: (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Open connections from the app: the sum of `mcp_warden_connections_open`
/// over the app-facing listeners (`app`, `app-https-alias`) in a Prometheus
/// text body; `None` when neither is there.
pub fn app_connections(metrics: &str) -> Option<i64> {
    let mut total = None;
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("mcp_warden_connections_open{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let app = labels.split(',').any(|kv| {
            kv == "listener=\"app\"" || kv == format!("listener=\"{HTTPS_ALIAS_LISTENER}\"")
        });
        if let (true, Ok(v)) = (app, value.trim().parse::<i64>()) {
            total = Some(total.unwrap_or(0) + v);
        }
    }
    total
}

/// Runs `wait-ready`: Ok once `/readyz` answered 200.
pub fn wait_ready(args: &WaitReadyArgs) -> Result<(), LifecycleError> {
    let timeout = args.timeout;
    let addr = admin(args.admin_port, args.admin_listen.as_deref());
    let start = Instant::now();
    loop {
        let last = match get(addr, contract::READYZ_PATH) {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code}: {}", body.trim()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(LifecycleError::NotReady {
                timeout,
                addr,
                last,
            });
        }
        std::thread::sleep(POLL.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// How `wait-drain` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// No app connection was open (after `--min`).
    Idle,
    /// The admin server stopped answering: the sidecar is already stopping.
    AdminGone(String),
    /// `--max` passed with this many app connections still open.
    MaxReached(i64),
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drained::Idle => write!(f, "no app connection open: letting the sidecar stop"),
            Drained::AdminGone(e) => write!(f, "the admin server does not answer ({e}): stopping"),
            Drained::MaxReached(n) => write!(
                f,
                "--max reached with {n} app connection(s) open: letting the sidecar stop"
            ),
        }
    }
}

/// Runs `wait-drain` and says how it ended (it cannot fail: a preStop
/// hook that fails only delays the kill).
pub fn wait_drain(args: &WaitDrainArgs) -> Drained {
    let min = args.min;
    let max = args.max.max(min);
    let addr = admin(args.admin_port, args.admin_listen.as_deref());
    let start = Instant::now();
    loop {
        let open = match get(addr, contract::METRICS_PATH) {
            Ok((200, body)) => app_connections(&body).unwrap_or(0),
            Ok((code, _)) => return Drained::AdminGone(format!("HTTP {code}")),
            Err(e) => return Drained::AdminGone(e.to_string()),
        };
        if open <= 0 && start.elapsed() >= min {
            return Drained::Idle;
        }
        if start.elapsed() >= max {
            return Drained::MaxReached(open);
        }
        std::thread::sleep(POLL.min(max.saturating_sub(start.elapsed())));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gauge() {
        let text = "# HELP mcp_warden_connections_open Connections open, by listener\n# TYPE mcp_warden_connections_open gauge\nmcp_warden_connections_open{listener=\"app\"} 3\nmcp_warden_connections_open{listener=\"app-https-alias\"} 2\nmcp_warden_connections_open{listener=\"admin\"} 9\n";
        assert_eq!(app_connections(text), Some(5));
        assert_eq!(app_connections("nothing\n"), None);
    }

    #[test]
    fn hooks_reach_the_admin_listener_where_the_sidecar_binds_it() {
        assert_eq!(admin(15020, None).to_string(), "127.0.0.1:15020");
        assert_eq!(
            admin(1, Some("10.1.2.3:15020")).to_string(),
            "10.1.2.3:15020"
        );
        assert_eq!(
            admin(1, Some("0.0.0.0:15021")).to_string(),
            "127.0.0.1:15021"
        );
        assert_eq!(
            admin(1, Some("fd00::5:15020")).to_string(),
            "[fd00::5]:15020"
        );
    }

    #[derive(clap::Parser)]
    struct Hooks {
        #[command(subcommand)]
        command: Hook,
    }

    #[derive(clap::Subcommand)]
    enum Hook {
        WaitReady(WaitReadyArgs),
        WaitDrain(WaitDrainArgs),
    }

    fn parse(args: &[&str]) -> Result<Hook, clap::Error> {
        use clap::Parser;
        Hooks::try_parse_from(std::iter::once("sidecar").chain(args.iter().copied()))
            .map(|h| h.command)
    }

    #[test]
    fn bad_durations_name_the_flag() {
        let e = parse(&["wait-ready", "--timeout", "soon"]).err().unwrap();
        assert!(e.to_string().contains("--timeout"), "{e}");
        let e = parse(&["wait-drain", "--max", "0s"]).err().unwrap();
        assert!(e.to_string().contains("--max"), "{e}");
    }

    /// The defaults, and the flags the webhook writes into the hooks.
    #[test]
    fn reads_what_the_webhook_writes() {
        let Ok(Hook::WaitReady(r)) = parse(&["wait-ready"]) else {
            panic!("wait-ready")
        };
        assert_eq!(r.timeout, Duration::from_secs(120));
        let Ok(Hook::WaitDrain(d)) = parse(&["wait-drain"]) else {
            panic!("wait-drain")
        };
        assert_eq!(
            (d.min, d.max),
            (Duration::from_secs(2), Duration::from_secs(25))
        );
        let Ok(Hook::WaitReady(r)) =
            parse(&["wait-ready", "--admin-port", "15020", "--timeout", "600s"])
        else {
            panic!("wait-ready")
        };
        assert_eq!((r.admin_port, r.timeout), (15020, Duration::from_secs(600)));
        let Ok(Hook::WaitDrain(d)) = parse(&[
            "wait-drain",
            "--admin-port",
            "15020",
            "--min",
            "2s",
            "--max",
            "25s",
        ]) else {
            panic!("wait-drain")
        };
        assert_eq!(
            (d.min, d.max),
            (Duration::from_secs(2), Duration::from_secs(25))
        );
    }
}
