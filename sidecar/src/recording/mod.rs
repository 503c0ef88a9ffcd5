//! Recording: every request becomes `audit.k8s.io/v1` events that are made
//! durable in an on-disk spool and streamed to the collector; exec/attach
//! sessions become asciicast recordings delivered the same way.
//!
//! [`Recorder`] is the facade the proxy uses:
//! - before forwarding any request in fail-closed mode, [`Recorder::preflight`]
//!   (refuse with 503 if false);
//! - for a mutating request, [`Recorder::record`] of its `RequestReceived`
//!   event must return `Ok` before the request is forwarded;
//! - long-running requests also record `ResponseStarted`; every request
//!   records `ResponseComplete` when its response is finished;
//! - upgraded exec/attach tunnels feed an [`asciicast::SessionRecorder`] and
//!   hand the finished cast to [`Recorder::record_session`].
//!
//! Without a collector URL nothing is spooled: events are written to the
//! log (target `mcp_warden::audit`, level info) as JSON lines, which is
//! enough for local runs and keeps a sidecar without a collector from filling
//! its spool forever.

pub mod asciicast;
pub mod hook;
pub mod sender;
pub mod spool;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Uri;
use mcp_warden_shared::audit;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

pub use hook::RecordingHook;
pub use mcp_warden_shared::collector::CollectorFormat;
pub use sender::SenderError;
pub use spool::{SpoolConfig, SpoolError, SpoolSync};

/// What to do when an event cannot be made durable (`--on-recording-failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnFailure {
    /// Refuse new requests with 503 rather than forward an unrecorded one.
    #[default]
    FailClosed,
    /// Forward anyway and count the loss in metrics.
    Continue,
}

/// Recording settings: the spool, the collector and its delivery. The
/// sidecar builds it once from its flags
/// ([`crate::config::RecordingArgs::validate`]); the sender takes it as is.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// `--spool-dir`: where events wait until the collector has them.
    pub spool_dir: PathBuf,
    /// `--spool-max-bytes`: bound of the spool's size on disk.
    pub spool_max_bytes: u64,
    /// `--spool-sync-interval`: when a spooled event counts as recorded.
    pub spool_sync: spool::SpoolSync,
    /// `--on-recording-failure`.
    pub on_failure: OnFailure,
    /// `--collector-url`; `None`: events are logged, not spooled or sent.
    pub collector_url: Option<Uri>,
    /// `--collector-format`.
    pub format: CollectorFormat,
    /// `--collector-ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--collector-token-file` (re-read before every POST).
    pub token_file: Option<PathBuf>,
    /// `--collector-client-cert-file` (needs the key file too).
    pub client_cert_file: Option<PathBuf>,
    /// `--collector-client-key-file`.
    pub client_key_file: Option<PathBuf>,
    /// Most events per POST (default 100).
    pub batch_max_events: usize,
    /// Longest an event waits for its batch (default 200 ms).
    pub batch_max_delay: Duration,
    /// Concurrent POSTs (default 2).
    pub concurrency: usize,
    /// First retry delay, doubling per attempt (default 100 ms).
    pub backoff_initial: Duration,
    /// Retry delay cap (default 10 s).
    pub backoff_max: Duration,
    /// Timeout of one POST, response included (default 30 s).
    pub request_timeout: Duration,
    /// Cluster name put in the `mcp-warden.io/cluster` annotation.
    pub cluster_name: String,
    /// `namespace/name` of the pod (`mcp-warden.io/pod`).
    pub pod: String,
}

impl RecordingConfig {
    /// Defaults for everything but the spool directory.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            spool_max_bytes: 256 << 20,
            spool_sync: spool::SpoolSync::DEFAULT,
            on_failure: OnFailure::FailClosed,
            collector_url: None,
            format: CollectorFormat::default(),
            ca_file: None,
            token_file: None,
            client_cert_file: None,
            client_key_file: None,
            batch_max_events: 100,
            batch_max_delay: Duration::from_millis(200),
            concurrency: 2,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            cluster_name: String::new(),
            pod: String::new(),
        }
    }
}

/// Why recording could not start, or an event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The event is not durable (spool full or unwritable); in fail-closed
    /// mode the proxy answers 503 and does not forward.
    #[error("audit event could not be made durable: {source}")]
    NotDurable {
        #[source]
        source: SpoolError,
    },
    #[error("encoding audit event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invalid auditID {audit_id:?} for a session recording")]
    BadAuditId { audit_id: String },
    #[error("opening spool {dir}: {source}")]
    Spool {
        dir: PathBuf,
        #[source]
        source: SpoolError,
    },
    #[error(transparent)]
    Sender(#[from] SenderError),
}

/// Recording metrics; clones share the same values.
#[derive(Debug, Clone, Default)]
pub struct RecordingStats {
    /// Events handed to `record`.
    pub events_recorded: Counter,
    /// Events acknowledged by the collector.
    pub events_sent: Counter,
    /// Event deliveries retried (events × failed attempts).
    pub events_retried: Counter,
    /// Events the collector refused with a permanent 4xx (dead-lettered).
    pub events_rejected: Counter,
    /// Events that could not be made durable.
    pub events_lost: Counter,
    /// Requests refused (503, fail-closed) because their events could not be
    /// made durable: counted here even though their own events are lost.
    pub requests_refused: Counter,
    /// Session casts handed to `record_session`.
    pub sessions_recorded: Counter,
    /// Session casts acknowledged by the collector.
    pub sessions_sent: Counter,
    /// Failed POSTs (each is retried).
    pub post_failures: Counter,
    /// Bytes of spool segments on disk.
    pub spool_bytes: Gauge,
    /// Records spooled and not yet acknowledged.
    pub spool_pending: Gauge,
    /// Corrupt spool records skipped.
    pub spool_corrupt_records: Gauge,
    /// Age of the oldest unacknowledged record, seconds (0 when none).
    pub oldest_unsent_age_seconds: Gauge<f64, AtomicU64>,
}

#[derive(Debug)]
struct Inner {
    cfg: RecordingConfig,
    spool: Option<spool::Spool>,
    stats: RecordingStats,
}

/// The recording facade; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The current time as an audit timestamp.
pub fn now_micro_time() -> audit::MicroTime {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    audit::MicroTime::from_unix_micros(micros)
}

fn update_gauges(spool: &spool::Spool, stats: &RecordingStats) {
    stats.spool_bytes.set(spool.used_bytes() as i64);
    stats.spool_pending.set(spool.pending_count() as i64);
    stats
        .spool_corrupt_records
        .set(spool.counters().corrupt_records.load(Ordering::Relaxed) as i64);
    let age = spool
        .oldest_pending_unix_ms()
        .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
        .unwrap_or(0.0);
    stats.oldest_unsent_age_seconds.set(age);
}

impl Recorder {
    /// Open the spool (recovering what a previous run left), start the
    /// sender and the metrics updater. The returned task ends after
    /// `shutdown` resolves. Must be called inside a tokio runtime.
    pub fn start(
        cfg: RecordingConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(Recorder, JoinHandle<()>), RecordError> {
        let stats = RecordingStats::default();
        let Some(url) = cfg.collector_url.clone() else {
            tracing::warn!(
                "no --collector-url: audit events go to the log only and are not spooled"
            );
            let handle = tokio::spawn(shutdown);
            let inner = Arc::new(Inner {
                cfg,
                spool: None,
                stats,
            });
            return Ok((Recorder { inner }, handle));
        };
        // Check the collector settings before touching the disk.
        sender::validate_url(&url)?;
        let mut spool_cfg = SpoolConfig::new(&cfg.spool_dir, cfg.spool_max_bytes);
        spool_cfg.sync = cfg.spool_sync;
        let spool = spool::Spool::open(spool_cfg).map_err(|source| RecordError::Spool {
            dir: cfg.spool_dir.clone(),
            source,
        })?;
        let sender = sender::Sender::new(url, cfg.clone(), spool.clone(), stats.clone())?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_sender = stop_rx.clone();
        let sender_task = tokio::spawn(sender.run(async move {
            let _ = stop_sender.wait_for(|s| *s).await;
        }));
        let (g_spool, g_stats) = (spool.clone(), stats.clone());
        let mut stop_gauges = stop_rx;
        let gauge_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => update_gauges(&g_spool, &g_stats),
                    _ = stop_gauges.wait_for(|s| *s) => break,
                }
            }
        });
        let handle = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            let _ = sender_task.await;
            let _ = gauge_task.await;
        });
        update_gauges(&spool, &stats);
        let inner = Arc::new(Inner {
            cfg,
            spool: Some(spool),
            stats,
        });
        Ok((Recorder { inner }, handle))
    }

    /// Whether a new request's events could be made durable right now
    /// (spool has room and is writable). In fail-closed mode the proxy
    /// refuses a request with 503 before forwarding it when this is false.
    /// Always true without a collector.
    pub fn preflight(&self) -> bool {
        self.inner.spool.as_ref().is_none_or(|s| s.preflight())
    }

    /// True when the proxy must refuse a new request now: fail-closed mode
    /// and `preflight()` false.
    pub fn must_refuse(&self) -> bool {
        self.inner.cfg.on_failure == OnFailure::FailClosed && !self.preflight()
    }

    /// The `/readyz` condition `recording`: failing while every new request
    /// would be refused (fail-closed and the spool full or unwritable), so
    /// the pod leaves its Service's endpoints instead of answering 503s.
    pub fn readiness_check(&self) -> crate::admin::Check {
        if self.must_refuse() {
            crate::admin::Check::Failing(
                "the spool is full or unwritable: requests are refused (503) until the collector catches up"
                    .into(),
            )
        } else {
            crate::admin::Check::Ok
        }
    }

    /// Counts a request refused because its events cannot be made durable.
    pub fn count_refused_request(&self) {
        self.inner.stats.requests_refused.inc();
    }

    /// The configured failure mode.
    pub fn on_failure(&self) -> OnFailure {
        self.inner.cfg.on_failure
    }

    /// `namespace/name` of the pod, for the `mcp-warden.io/pod` annotation.
    pub fn pod(&self) -> &str {
        &self.inner.cfg.pod
    }

    /// Cluster name, for the `mcp-warden.io/cluster` annotation.
    pub fn cluster_name(&self) -> &str {
        &self.inner.cfg.cluster_name
    }

    /// Record one (already masked) event. Resolves once it is durable.
    /// Fail-closed: `Err(NotDurable)` when it cannot be; continue: the loss
    /// is counted and logged and `Ok` returned.
    pub async fn record(&self, event: &audit::Event) -> Result<(), RecordError> {
        match serde_json::to_vec(event) {
            Ok(json) => self.record_json(&event.audit_id, json).await,
            Err(e) => self.encode_failed(&event.audit_id, e),
        }
    }

    /// Record one event already encoded as JSON (one line, from
    /// [`audit::EventView::to_json_vec`]); otherwise as [`Recorder::record`].
    pub async fn record_json(&self, audit_id: &str, json: Vec<u8>) -> Result<(), RecordError> {
        self.inner.stats.events_recorded.inc();
        let Some(spool) = &self.inner.spool else {
            tracing::info!(
                target: "mcp_warden::audit",
                audit_id,
                event = %String::from_utf8_lossy(&json),
                "audit event"
            );
            return Ok(());
        };
        match spool.append(spool::RecordKind::Event, json).await {
            Ok(_) => Ok(()),
            Err(source) => self.on_append_failure(audit_id, source),
        }
    }

    /// An event that could not be encoded (counted as recorded, as
    /// [`Recorder::record`] counts it).
    pub fn encode_failed(&self, audit_id: &str, e: serde_json::Error) -> Result<(), RecordError> {
        self.inner.stats.events_recorded.inc();
        tracing::error!(audit_id, error = %e, "audit event not encodable");
        Err(RecordError::Encode(e))
    }

    fn on_append_failure(&self, audit_id: &str, source: SpoolError) -> Result<(), RecordError> {
        self.inner.stats.events_lost.inc();
        tracing::error!(audit_id, error = %source, mode = ?self.inner.cfg.on_failure, "recording is not durable");
        match self.inner.cfg.on_failure {
            OnFailure::FailClosed => Err(RecordError::NotDurable { source }),
            OnFailure::Continue => Ok(()),
        }
    }

    /// Record a finished session cast (from
    /// [`asciicast::SessionRecorder::finish`]); delivered to
    /// `<collector-url>/sessions/<auditID>`. Same failure rules as `record`.
    pub async fn record_session(&self, audit_id: &str, cast: &[u8]) -> Result<(), RecordError> {
        if !asciicast::valid_audit_id(audit_id) {
            return Err(RecordError::BadAuditId {
                audit_id: audit_id.to_string(),
            });
        }
        self.inner.stats.sessions_recorded.inc();
        let Some(spool) = &self.inner.spool else {
            tracing::info!(target: "mcp_warden::audit", audit_id, cast_bytes = cast.len(), "session recorded (no collector: not kept)");
            return Ok(());
        };
        let payload = asciicast::encode_session_record(audit_id, cast);
        match spool.append(spool::RecordKind::Session, payload).await {
            Ok(_) => Ok(()),
            Err(source) => self.on_append_failure(audit_id, source),
        }
    }

    /// The metrics.
    pub fn stats(&self) -> &RecordingStats {
        &self.inner.stats
    }

    /// Register the metrics (prefix `mcp_warden_recording_`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.register_metrics_with_prefix(registry, "mcp_warden_recording");
    }

    /// Register the metrics under `prefix` (the sidecar's own registry is
    /// already prefixed `mcp_warden`, so it passes `recording`).
    pub fn register_metrics_with_prefix(&self, registry: &mut Registry, prefix: &str) {
        let s = &self.inner.stats;
        let r = registry.sub_registry_with_prefix(prefix);
        r.register(
            "events_recorded",
            "Audit events recorded",
            s.events_recorded.clone(),
        );
        r.register(
            "events_sent",
            "Audit events acknowledged by the collector",
            s.events_sent.clone(),
        );
        r.register(
            "events_retried",
            "Audit event deliveries retried",
            s.events_retried.clone(),
        );
        r.register(
            "events_rejected",
            "Audit events refused by the collector (dead-lettered)",
            s.events_rejected.clone(),
        );
        r.register(
            "events_lost",
            "Audit events that could not be made durable",
            s.events_lost.clone(),
        );
        r.register(
            "requests_refused",
            "Requests refused (503) because their audit events could not be made durable",
            s.requests_refused.clone(),
        );
        r.register(
            "sessions_recorded",
            "Session recordings made",
            s.sessions_recorded.clone(),
        );
        r.register(
            "sessions_sent",
            "Session recordings acknowledged by the collector",
            s.sessions_sent.clone(),
        );
        r.register(
            "post_failures",
            "Failed collector POSTs",
            s.post_failures.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes of spool segments on disk",
            s.spool_bytes.clone(),
        );
        r.register(
            "spool_pending",
            "Spooled records not yet acknowledged",
            s.spool_pending.clone(),
        );
        r.register(
            "spool_corrupt_records",
            "Corrupt spool records skipped",
            s.spool_corrupt_records.clone(),
        );
        r.register(
            "oldest_unsent_age_seconds",
            "Age of the oldest record not yet acknowledged by the collector",
            s.oldest_unsent_age_seconds.clone(),
        );
    }
}
