//! The sidecar's logging: the `tracing` subscriber of the binary and the
//! access-log setting.
//!
//! A line is formatted on the thread that logs it and handed to a writer
//! thread (`tracing-appender`'s non-blocking writer), so no request waits
//! for a `write(2)` or for the lock of stderr. The queue is bounded
//! ([`QUEUED_LINES`]) and not lossy: a writer that falls behind slows the
//! loggers rather than dropping lines. The [`LogGuard`] flushes what is queued when dropped, so
//! the binary holds it until it exits.
//!
//! Audit events logged because there is no collector (target
//! `mcp_warden::audit`) go to stdout; everything else goes to stderr.
//! `MCP_WARDEN_LOG` filters both (default `info`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Lines queued per writer. The queue is allocated and written whole at start
/// (32 bytes a line, resident from then on), so tracing-appender's default of
/// 128,000 would cost 4 MB of RSS per writer, and 8,192 cost 256 KiB each;
/// a burst beyond this many lines waits for the writer, which writes a line
/// in a few microseconds.
pub const QUEUED_LINES: usize = 1024;

/// Target of the audit events written to the log (no collector).
pub const AUDIT_TARGET: &str = "mcp_warden::audit";

/// Which requests get an access-log line (`--access-log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccessLog {
    /// None (the metrics and the recording still count every request).
    Off,
    /// Every request that was refused, failed or is not a read (status
    /// outside 200–399, or a verb other than get/list/watch), and one in
    /// [`SAMPLE_EVERY`] successful reads.
    #[default]
    Sampled,
    /// Every request.
    All,
}

/// With [`AccessLog::Sampled`], one successful read in this many is logged.
pub const SAMPLE_EVERY: u32 = 100;

static ACCESS_LOG: AtomicU8 = AtomicU8::new(AccessLog::Sampled as u8);

thread_local! {
    // Per thread, so that sampling shares no cache line between cores.
    static READS_SEEN: Cell<u32> = const { Cell::new(0) };
}

/// Sets the process's access-log setting (the binary, from `--access-log`).
pub fn set_access_log(mode: AccessLog) {
    ACCESS_LOG.store(mode as u8, Ordering::Relaxed);
}

/// The process's access-log setting.
pub fn access_log() -> AccessLog {
    match ACCESS_LOG.load(Ordering::Relaxed) {
        x if x == AccessLog::Off as u8 => AccessLog::Off,
        x if x == AccessLog::All as u8 => AccessLog::All,
        _ => AccessLog::Sampled,
    }
}

/// Whether the access-log line of a finished request is written.
pub fn wants_access_log(verb: &str, code: u16) -> bool {
    sample(access_log(), verb, code)
}

fn sample(mode: AccessLog, verb: &str, code: u16) -> bool {
    match mode {
        AccessLog::Off => false,
        AccessLog::All => true,
        AccessLog::Sampled => {
            let plain_read = matches!(verb, "get" | "list" | "watch") && (200..400).contains(&code);
            if !plain_read {
                return true;
            }
            READS_SEEN.with(|n| {
                let seen = n.get();
                n.set(if seen + 1 >= SAMPLE_EVERY {
                    0
                } else {
                    seen + 1
                });
                seen == 0
            })
        }
    }
}

/// Keeps the log writer threads; dropping it flushes the queued lines.
#[must_use = "dropping the guard stops the log writers"]
pub struct LogGuard {
    _writers: [WorkerGuard; 2],
}

/// Installs the global subscriber of the binary and sets the access-log
/// setting. Hold the guard until the process ends.
pub fn init(format: LogFormat, access: AccessLog) -> LogGuard {
    set_access_log(access);
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("MCP_WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube's client and runtime log response bodies (a body that does not
    // decode is logged whole): they may carry what masking exists to hide, so
    // they stay off whatever MCP_WARDEN_LOG says; our callers log kube's
    // errors themselves.
    for quiet in ["kube_client=off", "kube_runtime=off"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let (stderr, err_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let (stdout, out_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("audit-log-writer")
        .finish(std::io::stdout());
    let (logs, audit) = match format {
        LogFormat::Json => (
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(stderr)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(stdout)
                .boxed(),
        ),
        LogFormat::Text => (
            tracing_subscriber::fmt::layer().with_writer(stderr).boxed(),
            tracing_subscriber::fmt::layer().with_writer(stdout).boxed(),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs.with_filter(filter_fn(|m| m.target() != AUDIT_TARGET)))
        .with(audit.with_filter(filter_fn(|m| m.target() == AUDIT_TARGET)))
        .init();
    LogGuard {
        _writers: [err_guard, out_guard],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_what_matters() {
        for (verb, code) in [
            ("create", 201),
            ("delete", 200),
            ("get", 403),
            ("list", 429),
            ("watch", 503),
            ("unknown", 401),
        ] {
            assert!(
                (0..10).all(|_| sample(AccessLog::Sampled, verb, code)),
                "{verb} {code}"
            );
        }
        let logged = (0..1000)
            .filter(|_| sample(AccessLog::Sampled, "get", 200))
            .count();
        assert_eq!(logged, 1000 / SAMPLE_EVERY as usize);
        assert!(!sample(AccessLog::Off, "create", 500));
        assert!(sample(AccessLog::All, "get", 200));
    }
}
