//! The batching sender: reads durable records from the spool, POSTs them to
//! the collector and acknowledges them on success.
//!
//! - Events go out in batches of at most `batch_max_events`, or whatever
//!   accumulated `batch_max_delay` after the oldest one was appended, as an
//!   `audit.k8s.io/v1` `EventList` (`application/json`, the body
//!   kube-apiserver's audit webhook backend sends) or as NDJSON
//!   (`application/x-ndjson`, one `Event` per line).
//! - A session cast is POSTed alone to `<collector-url>/sessions/<auditID>`
//!   as `application/x-asciicast`.
//! - At most `concurrency` POSTs are in flight. A failed POST (connection
//!   error, timeout, 5xx, 408, 429) is retried with exponential backoff and
//!   full jitter, capped at `backoff_max`, until it succeeds.
//! - Any other 4xx will never succeed: the batch is written to
//!   `<spool-dir>/dead-letter/`, logged, counted as rejected and acked, so
//!   one poisoned batch cannot block the stream forever.
//! - `http://` is accepted only for loopback collectors.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::sync::Semaphore;

use mcp_warden_shared::collector::CollectorFormat;

use super::spool::{RecordKind, SeqNo, Spool, SpoolRecord};
use super::{RecordingConfig, RecordingStats};

/// Why the sender could not be set up, or a POST failed.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("--collector-url {url}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error(
        "--collector-url {url}: http:// is allowed only for a loopback collector; use https://"
    )]
    InsecureUrl { url: String },
    #[error("{setting} {path}: {why}")]
    Tls {
        setting: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("--collector-client-cert-file and --collector-client-key-file must be given together")]
    HalfClientCert,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("POST {url}: {why}")]
    Post { url: String, why: String },
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The sender; `run` it on a task.
pub struct Sender {
    url: Uri,
    cfg: RecordingConfig,
    spool: Spool,
    stats: RecordingStats,
    client: HttpClient,
    sessions_base: String,
}

/// Check `--collector-url`: absolute http(s), and http only for loopback.
pub fn validate_url(url: &Uri) -> Result<(), SenderError> {
    use crate::config::UrlRefusal;
    crate::config::check_transport(url).map_err(|r| {
        let url = url.to_string();
        match r {
            UrlRefusal::NoHost => SenderError::BadUrl {
                url,
                why: "no host",
            },
            UrlRefusal::HttpNotLoopback => SenderError::InsecureUrl { url },
            UrlRefusal::Scheme(_) => SenderError::BadUrl {
                url,
                why: "scheme must be https (or http for loopback)",
            },
        }
    })
}

fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, SenderError> {
    std::fs::read(path).map_err(|e| SenderError::Tls {
        setting,
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn tls_config(cfg: &RecordingConfig) -> Result<rustls::ClientConfig, SenderError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let pem = read_pem("--collector-ca-file", path)?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| SenderError::Tls {
                    setting: "--collector-ca-file",
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| SenderError::Tls {
                    setting: "--collector-ca-file",
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                n += 1;
            }
            if n == 0 {
                return Err(SenderError::Tls {
                    setting: "--collector-ca-file",
                    path: path.clone(),
                    why: "no PEM certificate in file".into(),
                });
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SenderError::Tls {
            setting: "--collector-ca-file",
            path: PathBuf::new(),
            why: e.to_string(),
        })?
        .with_root_certificates(roots);
    match (&cfg.client_cert_file, &cfg.client_key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert_path), Some(key_path)) => {
            let pem = read_pem("--collector-client-cert-file", cert_path)?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| SenderError::Tls {
                    setting: "--collector-client-cert-file",
                    path: cert_path.clone(),
                    why: e.to_string(),
                })?;
            let key_pem = read_pem("--collector-client-key-file", key_path)?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|e| SenderError::Tls {
                    setting: "--collector-client-key-file",
                    path: key_path.clone(),
                    why: e.to_string(),
                })?
                .ok_or_else(|| SenderError::Tls {
                    setting: "--collector-client-key-file",
                    path: key_path.clone(),
                    why: "no PEM private key in file".into(),
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| SenderError::Tls {
                    setting: "--collector-client-cert-file",
                    path: cert_path.clone(),
                    why: e.to_string(),
                })
        }
        _ => Err(SenderError::HalfClientCert),
    }
}

/// One unit of delivery.
#[derive(Debug, Clone, PartialEq)]
enum Batch {
    Events(Vec<SpoolRecord>),
    Session(SpoolRecord),
}

impl Batch {
    fn seqs(&self) -> Vec<SeqNo> {
        match self {
            Batch::Events(r) => r.iter().map(|r| r.seq).collect(),
            Batch::Session(r) => vec![r.seq],
        }
    }
}

/// Split the head of `records` into one batch: a session alone, or the
/// events before the next session.
fn cut_batch(records: Vec<SpoolRecord>) -> Option<Batch> {
    let mut it = records.into_iter().peekable();
    let first = it.next()?;
    if first.kind == RecordKind::Session {
        return Some(Batch::Session(first));
    }
    let mut events = vec![first];
    while let Some(r) = it.next_if(|r| r.kind == RecordKind::Event) {
        events.push(r);
    }
    Some(Batch::Events(events))
}

/// The body of an events POST: an `EventList` built around the spooled
/// event JSON without re-encoding it, or NDJSON. Records that are not one
/// JSON object on one line (cannot happen short of a bug) are left out and
/// returned; see [`json_object_line`] for how far that is checked.
pub fn events_body(format: CollectorFormat, payloads: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = Vec::with_capacity(96 + payloads.iter().map(|p| p.len() + 1).sum::<usize>());
    let mut bad = 0;
    if format == CollectorFormat::EventList {
        body.extend_from_slice(
            br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
        );
    }
    let mut first = true;
    for p in payloads {
        if !json_object_line(p) {
            bad += 1;
            continue;
        }
        match format {
            CollectorFormat::EventList => {
                if !first {
                    body.push(b',');
                }
                body.extend_from_slice(p);
            }
            CollectorFormat::Ndjson => {
                body.extend_from_slice(p);
                body.push(b'\n');
            }
        }
        first = false;
    }
    if format == CollectorFormat::EventList {
        body.extend_from_slice(b"]}");
    }
    (body, bad)
}

/// Whether `p` is framed as one JSON object on one line: valid UTF-8, `{`
/// first, `}` last, no line break. That is all that is checked, on
/// purpose: every event record is written by serde_json and CRC-checked in
/// the spool, so this only has to catch a record that is something else
/// entirely (a bug) before it spoils a batch; parsing each event again cost
/// as much as building it, and a record that slipped through would only
/// send its batch to the dead-letter directory (the collector refuses it).
pub fn json_object_line(p: &[u8]) -> bool {
    p.first() == Some(&b'{')
        && p.last() == Some(&b'}')
        && memchr::memchr(b'\n', p).is_none()
        && std::str::from_utf8(p).is_ok()
}

enum Outcome {
    Delivered,
    Rejected(StatusCode, Bytes),
    Retry(String),
}

impl Sender {
    /// Validate the URL, load TLS material and build the HTTP client.
    pub fn new(
        url: Uri,
        cfg: RecordingConfig,
        spool: Spool,
        stats: RecordingStats,
    ) -> Result<Sender, SenderError> {
        validate_url(&url)?;
        let tls = tls_config(&cfg)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let base = url.to_string();
        let base_path = base
            .split('?')
            .next()
            .unwrap_or(&base)
            .trim_end_matches('/');
        let sessions_base = format!("{base_path}/sessions/");
        Ok(Sender {
            url,
            cfg,
            spool,
            stats,
            client,
            sessions_base,
        })
    }

    /// Deliver until `shutdown` resolves. Batches in flight when it does are
    /// abandoned unacked; the spool resends them on the next start.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let this = Arc::new(self);
        let sem = Arc::new(Semaphore::new(this.cfg.concurrency.max(1)));
        let mut cursor: SeqNo = 0;
        let max = this.cfg.batch_max_events.max(1);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        'outer: loop {
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = &mut shutdown => break,
            };
            // Wait for something to send.
            let mut records = loop {
                let seen = this.spool.committed();
                let recs = this.read(cursor, max).await;
                if !recs.is_empty() {
                    break recs;
                }
                // Woken by the next commit after what was just read (not
                // by every commit); the tick re-reads after a failed read
                // even when nothing new is appended.
                tokio::select! {
                    _ = this.spool.committed_at_least(seen.max(cursor) + 1) => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    _ = &mut shutdown => break 'outer,
                }
            };
            // Let the batch fill, up to the delay counted from the oldest
            // record's append (an old backlog goes out at once).
            if records.len() < max && records[0].kind == RecordKind::Event {
                let age = now_ms().saturating_sub(records[0].appended_unix_ms);
                let wait = this
                    .cfg
                    .batch_max_delay
                    .saturating_sub(Duration::from_millis(age));
                let deadline = tokio::time::Instant::now() + wait;
                // Sequence numbers are dense, so the highest committed one
                // tells how many records wait without reading them; the
                // spool wakes this once when a full batch is there.
                if this.spool.committed().saturating_sub(cursor) < max as u64 {
                    tokio::select! {
                        _ = this.spool.committed_at_least(cursor.saturating_add(max as u64)) => {},
                        _ = tokio::time::sleep_until(deadline) => {},
                        _ = &mut shutdown => break 'outer,
                    }
                }
                records = this.read(cursor, max).await;
            }
            let Some(batch) = cut_batch(records) else {
                continue;
            };
            if let Some(last) = batch.seqs().last() {
                cursor = *last;
            }
            let worker = this.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tokio::select! {
                    _ = worker.deliver(batch) => {},
                    _ = stop.wait_for(|s| *s) => {},
                }
            });
        }
        let _ = stop_tx.send(true);
    }

    async fn read(&self, after: SeqNo, max: usize) -> Vec<SpoolRecord> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.read_after(after, max)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the spool failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "spool reader task failed");
                Vec::new()
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .backoff_initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cfg.backoff_max);
        // Full jitter on the upper half keeps retries of many sidecars from
        // arriving in lockstep after an outage.
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    async fn deliver(&self, batch: Batch) {
        let seqs = batch.seqs();
        let (url, content_type, body, count, is_session) = match &batch {
            Batch::Events(recs) => {
                let payloads: Vec<&[u8]> = recs.iter().map(|r| r.payload.as_slice()).collect();
                let (body, bad) = events_body(self.cfg.format, &payloads);
                if bad > 0 {
                    tracing::error!(bad, "spooled events that are not JSON were dropped");
                    self.stats.events_lost.inc_by(bad as u64);
                }
                let ct = self.cfg.format.content_type();
                (self.url.to_string(), ct, body, recs.len() - bad, false)
            }
            Batch::Session(rec) => match super::asciicast::decode_session_record(&rec.payload) {
                Some((audit_id, cast)) => (
                    format!("{}{audit_id}", self.sessions_base),
                    "application/x-asciicast",
                    cast.to_vec(),
                    1,
                    true,
                ),
                None => {
                    tracing::error!(seq = rec.seq, "malformed session record dropped");
                    let _ = self.spool.ack(&seqs);
                    return;
                }
            },
        };
        if count == 0 {
            let _ = self.spool.ack(&seqs);
            return;
        }
        let body = Bytes::from(body);
        let mut attempt = 0u32;
        loop {
            match self.post(&url, content_type, body.clone()).await {
                Outcome::Delivered => {
                    if is_session {
                        self.stats.sessions_sent.inc();
                    } else {
                        self.stats.events_sent.inc_by(count as u64);
                    }
                    if let Err(e) = self.spool.ack(&seqs) {
                        tracing::warn!(error = %e, "persisting acknowledgements failed; records may be resent");
                    }
                    return;
                }
                Outcome::Rejected(status, answer) => {
                    let file = self.dead_letter(seqs[0], status, content_type, &body).await;
                    tracing::error!(
                        url = %url,
                        status = status.as_u16(),
                        count,
                        dead_letter = %file,
                        answer = %String::from_utf8_lossy(&answer[..answer.len().min(512)]),
                        "collector rejected a batch permanently; moved to dead-letter"
                    );
                    self.stats.events_rejected.inc_by(count as u64);
                    if let Err(e) = self.spool.ack(&seqs) {
                        tracing::warn!(error = %e, "persisting acknowledgements failed");
                    }
                    return;
                }
                Outcome::Retry(why) => {
                    self.stats.post_failures.inc();
                    self.stats.events_retried.inc_by(count as u64);
                    let delay = self.backoff(attempt);
                    tracing::warn!(url = %url, attempt, delay_ms = delay.as_millis() as u64, why = %why, "collector POST failed; retrying");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn post(&self, url: &str, content_type: &'static str, body: Bytes) -> Outcome {
        let mut req = Request::post(url)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::USER_AGENT, "mcp-warden-sidecar");
        if let Some(path) = &self.cfg.token_file {
            match tokio::fs::read_to_string(path).await {
                Ok(t) if !t.trim().is_empty() => {
                    req = req.header(header::AUTHORIZATION, format!("Bearer {}", t.trim()));
                }
                Ok(_) => return Outcome::Retry(format!("token file {} is empty", path.display())),
                Err(e) => {
                    return Outcome::Retry(format!("reading token file {}: {e}", path.display()));
                }
            }
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Rejected(StatusCode::BAD_REQUEST, Bytes::from(e.to_string()));
            }
        };
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let answer = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, answer))
        };
        match tokio::time::timeout(self.cfg.request_timeout, exchange).await {
            Err(_) => Outcome::Retry("timed out".into()),
            Ok(Err(e)) => Outcome::Retry(e),
            Ok(Ok((status, answer))) => classify(status, answer),
        }
    }

    async fn dead_letter(
        &self,
        first: SeqNo,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
    ) -> String {
        let dir = self.spool.dir().join("dead-letter");
        let ext = match content_type {
            "application/x-asciicast" => "cast",
            "application/x-ndjson" => "ndjson",
            _ => "json",
        };
        let path = dir.join(format!("{first:020}-{}.{ext}", status.as_u16()));
        let res = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&path, body).await
        }
        .await;
        match res {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("(not written: {e})"),
        }
    }
}

fn classify(status: StatusCode, answer: Bytes) -> Outcome {
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Rejected(status, answer)
    } else {
        Outcome::Retry(format!("HTTP {status}"))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(seq: SeqNo, kind: RecordKind) -> SpoolRecord {
        SpoolRecord {
            seq,
            kind,
            appended_unix_ms: 0,
            payload: br#"{"auditID":"a"}"#.to_vec(),
        }
    }

    #[test]
    fn urls_are_checked() {
        for ok in [
            "https://collector.example:8443/audit",
            "http://127.0.0.1:9000/",
            "http://[::1]:9/x",
            "http://localhost:1",
        ] {
            validate_url(&ok.parse().unwrap()).unwrap();
        }
        assert!(matches!(
            validate_url(&"http://collector.example/".parse().unwrap()),
            Err(SenderError::InsecureUrl { .. })
        ));
        assert!(validate_url(&"ftp://127.0.0.1/".parse().unwrap()).is_err());
        assert!(validate_url(&"/relative".parse().unwrap()).is_err());
    }

    #[test]
    fn batches_cut_at_sessions() {
        use RecordKind::*;
        let b = cut_batch(vec![
            rec(1, Event),
            rec(2, Event),
            rec(3, Session),
            rec(4, Event),
        ])
        .unwrap();
        assert_eq!(b.seqs(), vec![1, 2]);
        let b = cut_batch(vec![rec(3, Session), rec(4, Event)]).unwrap();
        assert!(matches!(b, Batch::Session(_)));
        assert!(cut_batch(vec![]).is_none());
    }

    #[test]
    fn bodies() {
        let a = br#"{"auditID":"a"}"#.as_slice();
        let b = br#"{"auditID":"b"}"#.as_slice();
        let (body, bad) = events_body(CollectorFormat::EventList, &[a, b"not json", b]);
        assert_eq!(bad, 1);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["items"][1]["auditID"], "b");
        let (body, _) = events_body(CollectorFormat::Ndjson, &[a, b]);
        assert_eq!(body, b"{\"auditID\":\"a\"}\n{\"auditID\":\"b\"}\n");
    }

    #[test]
    fn json_object_lines_are_told_from_anything_else() {
        let good: &[&[u8]] = &[
            br#"{}"#,
            br#"{"a":1}"#,
            br#"{"a":[1,-2.5e+3,true,false,null,{"b":[]}],"c":"x\"}]{\\"}"#,
            "{\"s\":\"\\u00e9 café\"}".as_bytes(),
        ];
        for g in good {
            assert!(json_object_line(g), "{}", String::from_utf8_lossy(g));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"not json",
            b"[1]",
            br#"{"a":1"#,
            br#"{"a":1}x"#,
            br#""{}""#,
            b"{\"a\":1}\n",
            b"{\"a\":\n1}",
            b"{\"a\":\"\xff\"}",
        ];
        for b in bad {
            assert!(!json_object_line(b), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn status_classes() {
        assert!(matches!(
            classify(StatusCode::OK, Bytes::new()),
            Outcome::Delivered
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, Bytes::new()),
            Outcome::Rejected(..)
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, Bytes::new()),
            Outcome::Rejected(..)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, Bytes::new()),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, Bytes::new()),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()),
            Outcome::Retry(_)
        ));
    }
}
