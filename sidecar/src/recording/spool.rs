//! The durable on-disk spool: every audit event and session cast is appended
//! here before it is sent, and removed only once the collector
//! has acknowledged it, so a collector outage or a sidecar restart loses
//! nothing that was made durable.
//!
//! Layout under the spool directory:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: append-only segment, named by its first
//!   sequence number. Records are `magic(1) kind(1) len(4) crc32(4) seq(8)
//!   ts_ms(8) payload(len)`, little-endian; the CRC covers everything after
//!   itself plus `kind` and `len`.
//! - `NNNNNNNNNNNNNNNNNNNN.ack`: the sequence numbers acknowledged so far in
//!   that segment (8 bytes each). Not fsync'd: losing an ack only means a
//!   resend, and delivery is at-least-once (deduplicated by `auditID`).
//! - A segment and its ack file are deleted once all its records are acked.
//!
//! Records are written in sequence order under one lock on the active
//! segment's file, each group with a single `write(2)` (group commit). With
//! [`SpoolSync::Interval`] an append whose caller finds the file free writes
//! its record at once from its own thread (no hand-off to another thread and
//! back, which costs two thread wake-ups per record); an append that finds a
//! write or the syncer's fsync in progress (a `write(2)` would wait for it),
//! and every append with [`SpoolSync::Always`] (whose fsync must not block
//! the caller's thread), goes to the writer thread,
//! which writes whatever queued meanwhile as one group. When `append`
//! resolves depends on [`SpoolSync`]: with `Always` only after that group's
//! fsync; with `Interval` as soon as the record is written, i.e. in the
//! kernel's page cache, which outlives a kill of the process, while a syncer
//! thread fsyncs the written groups in bulk within the interval, so a
//! machine crash loses at most the records written in its last interval. Recovery reads all segments, truncates a
//! torn tail of the last one, skips (and counts) corrupt records elsewhere,
//! and makes every unacked record pending again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot};

/// Sequence number of a spooled record; increases with every append.
pub type SeqNo = u64;

const MAGIC: u8 = 0xA5;
const HEADER_LEN: usize = 26;
/// Largest payload a record may carry.
pub const MAX_RECORD_BYTES: usize = 32 << 20;
/// The most [`Spool::read_after`] reads in one go for a run of records
/// (more, e.g. across many acked records, and they are read one by one).
const MAX_READ_SPAN: u64 = 8 << 20;
/// Most appends committed by one fsync.
const MAX_GROUP: usize = 1024;

/// What a record holds; the sender delivers each kind differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// One audit `Event` as JSON.
    Event,
    /// An asciicast session (see `asciicast::encode_session_record`).
    Session,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Event => 1,
            RecordKind::Session => 2,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Event),
            2 => Some(RecordKind::Session),
            _ => None,
        }
    }
}

/// A record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub seq: SeqNo,
    pub kind: RecordKind,
    /// Wall-clock time of the append, milliseconds since the Unix epoch.
    pub appended_unix_ms: u64,
    pub payload: Vec<u8>,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the segments (`--spool-dir`, an emptyDir in a pod).
    pub dir: PathBuf,
    /// Upper bound of the segment files' total size (`--spool-max-bytes`).
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one started; 0 picks
    /// `max_bytes / 16` clamped to 4 KiB..16 MiB, so acked data is freed
    /// in small steps.
    pub segment_bytes: u64,
    /// Free room that `preflight` requires for a new request's events.
    pub reserve_bytes: u64,
    /// When an append counts as done (`--spool-sync-interval`).
    pub sync: SpoolSync,
}

/// When [`Spool::append`] resolves, and so what a released response's record
/// survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolSync {
    /// After the record's group is fsync'd: survives a machine crash too.
    /// One fsync per group, and every response waits for one.
    Always,
    /// As soon as the record's group is written to the segment file
    /// (`write(2)`): survives a kill of the process and a restart of the
    /// container (the page cache belongs to the kernel, the emptyDir to the
    /// pod). Written groups are fsync'd together at most this long after
    /// the first of them was written; a machine crash loses what was
    /// written within that window.
    Interval(Duration),
}

impl SpoolSync {
    /// The default: fsync every 20 ms.
    pub const DEFAULT: SpoolSync = SpoolSync::Interval(Duration::from_millis(20));
}

impl Default for SpoolSync {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl SpoolConfig {
    /// A config with automatic segment size, a reserve of
    /// `min(16 KiB, max_bytes / 8)` and the default [`SpoolSync`].
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            segment_bytes: 0,
            reserve_bytes: (16 << 10).min(max_bytes / 8),
            sync: SpoolSync::DEFAULT,
        }
    }
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {used} bytes used + {need} needed exceeds --spool-max-bytes {max}")]
    Full { used: u64, need: u64, max: u64 },
    #[error("record of {len} bytes exceeds the maximum record size {max}")]
    TooLarge { len: usize, max: usize },
    #[error("spool I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool writer has stopped")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counters kept by the spool.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    /// Records skipped because their checksum did not match (never sent).
    pub corrupt_records: AtomicU64,
    /// Torn tails truncated at recovery.
    pub torn_tails: AtomicU64,
    /// Groups committed, each with one `write(2)` (and, with
    /// [`SpoolSync::Always`], one fsync); each covers one or more appends.
    pub groups_committed: AtomicU64,
    /// Appends committed.
    pub appends_committed: AtomicU64,
    /// fsyncs of segment data, by the writer or the syncer.
    pub syncs: AtomicU64,
    /// fsyncs that failed after their records were released
    /// ([`SpoolSync::Interval`]).
    pub sync_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: SeqNo,
    offset: u64,
    ts_ms: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    ack_path: PathBuf,
    bytes: u64,
    live: BTreeSet<SeqNo>,
    records: u64,
    sealed: bool,
    /// Bytes reserved by a group being written and not yet registered.
    in_flight: u64,
    ack_file: Option<File>,
}

#[derive(Debug)]
struct State {
    segments: BTreeMap<SeqNo, Segment>,
    pending: BTreeMap<SeqNo, Loc>,
    used_bytes: u64,
    next_seq: SeqNo,
    active: Option<SeqNo>,
    retire_active: bool,
    failed_at: Option<Instant>,
}

/// The active segment's file (first sequence number, handle); `None`
/// before the first write and after a rotation or a failed write.
type ActiveFile = Option<(SeqNo, Arc<File>)>;

#[derive(Debug)]
struct Shared {
    cfg: SpoolConfig,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Held while a group is numbered and written, so records land in the
    /// file in sequence order.
    writer: Mutex<ActiveFile>,
    /// The highest committed sequence number.
    durable: AtomicU64,
    /// [`Spool::committed_at_least`]'s mark: `ready` is notified once
    /// `durable` reaches it (`u64::MAX`: nobody waits), so a waiting sender
    /// wakes once per batch, not once per record.
    wanted: AtomicU64,
    ready: Notify,
    counters: SpoolCounters,
    syncer: Syncer,
}

/// Segment files written since their last fsync, for the syncer thread
/// ([`SpoolSync::Interval`]).
#[derive(Debug, Default)]
struct Syncer {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// An fsync is running. A `write(2)` to the file then waits for it
    /// (ext4: up to the fsync's duration), so appends leave their write to
    /// the writer thread meanwhile instead of blocking a request's thread.
    syncing: AtomicBool,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Written and not yet fsync'd, by segment; a rotated segment stays
    /// here until its last groups are synced.
    dirty: Vec<(SeqNo, Arc<File>, PathBuf)>,
    /// When the oldest write in `dirty` was made: its fsync is due one
    /// interval later.
    since: Option<Instant>,
    /// The writer has stopped: sync what is dirty and end.
    stop: bool,
}

impl Syncer {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_dirty(&self, segment: SeqNo, file: &Arc<File>, path: &Path) {
        let mut st = self.lock();
        if !st.dirty.iter().any(|(s, _, _)| *s == segment) {
            st.dirty.push((segment, file.clone(), path.to_path_buf()));
            st.since.get_or_insert_with(Instant::now);
            self.wake.notify_one();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere mid-update; the state is
        // still the best we have and the spool must keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, ActiveFile> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file lock if no write is in progress.
    fn try_lock_writer(&self) -> Option<MutexGuard<'_, ActiveFile>> {
        match self.writer.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Records up to `last` are committed: wake the sender if it waits for
    /// them.
    fn committed(&self, last: SeqNo) {
        self.durable.fetch_max(last, Ordering::SeqCst);
        if last >= self.wanted.load(Ordering::SeqCst) {
            self.ready.notify_one();
        }
    }
}

/// One record to append.
struct Entry {
    kind: RecordKind,
    payload: Vec<u8>,
    ts_ms: u64,
}

struct AppendReq {
    entry: Entry,
    reply: oneshot::Sender<Result<SeqNo, SpoolError>>,
}

/// Handle to the spool; cheap to clone. The writer thread stops when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: mpsc::Sender<AppendReq>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn seg_paths(dir: &Path, first: SeqNo) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{first:020}.seg")),
        dir.join(format!("{first:020}.ack")),
    )
}

fn encode_record(kind: RecordKind, seq: SeqNo, ts_ms: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&record_header(kind, seq, ts_ms, payload));
    out.extend_from_slice(payload);
}

/// The header of a record holding `payload`: magic, kind, length, the
/// CRC-32 of the rest of the header and the payload, sequence number, time.
fn record_header(kind: RecordKind, seq: SeqNo, ts_ms: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = MAGIC;
    h[1] = kind.to_byte();
    h[2..6].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[10..18].copy_from_slice(&seq.to_le_bytes());
    h[18..26].copy_from_slice(&ts_ms.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[1..6]);
    crc.update(&h[10..]);
    crc.update(payload);
    h[6..10].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decode the record starting at `buf[0]`; `None` if it is not a complete,
/// checksum-valid record.
fn decode_record(buf: &[u8]) -> Option<(SpoolRecord, usize)> {
    if buf.len() < HEADER_LEN || buf[0] != MAGIC {
        return None;
    }
    let kind = RecordKind::from_byte(buf[1])?;
    let len = le_u32(&buf[2..6]) as usize;
    if len > MAX_RECORD_BYTES || buf.len() < HEADER_LEN + len {
        return None;
    }
    let crc = le_u32(&buf[6..10]);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[1..6]);
    h.update(&buf[10..HEADER_LEN + len]);
    if h.finalize() != crc {
        return None;
    }
    let rec = SpoolRecord {
        seq: le_u64(&buf[10..18]),
        kind,
        appended_unix_ms: le_u64(&buf[18..26]),
        payload: buf[HEADER_LEN..HEADER_LEN + len].to_vec(),
    };
    Some((rec, HEADER_LEN + len))
}

/// Result of scanning one segment file.
struct Scan {
    records: Vec<(u64, SpoolRecord)>,
    corrupt: u64,
    /// Offset after the last valid record when the file ends in garbage.
    torn_at: Option<u64>,
}

fn scan_segment(buf: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut corrupt = 0;
    let mut off = 0usize;
    while off < buf.len() {
        if let Some((rec, n)) = decode_record(&buf[off..]) {
            records.push((off as u64, rec));
            off += n;
            continue;
        }
        // Resynchronise on the next valid record; none means the rest is a
        // torn (partially written) tail.
        match (off + 1..buf.len()).find(|&o| decode_record(&buf[o..]).is_some()) {
            Some(next) => {
                corrupt += 1;
                off = next;
            }
            None => {
                return Scan {
                    records,
                    corrupt,
                    torn_at: Some(off as u64),
                };
            }
        }
    }
    Scan {
        records,
        corrupt,
        torn_at: None,
    }
}

fn read_acks(path: &Path) -> BTreeSet<SeqNo> {
    match fs::read(path) {
        // A trailing partial entry (crash mid-write) is ignored.
        Ok(b) => b.chunks_exact(8).map(le_u64).collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn remove_segment(st: &mut State, first: SeqNo) {
    if let Some(seg) = st.segments.remove(&first) {
        // Ack file first: a crash in between leaves a segment whose records
        // are resent (allowed), never an ack-less gap the other way round.
        let _ = fs::remove_file(&seg.ack_path);
        if let Err(e) = fs::remove_file(&seg.path) {
            tracing::warn!(path = %seg.path.display(), error = %e, "could not delete acknowledged spool segment");
        }
        st.used_bytes = st.used_bytes.saturating_sub(seg.bytes);
        if st.active == Some(first) {
            st.active = None;
            st.retire_active = false;
        }
    }
}

impl Spool {
    /// Open (or create) the spool, recover what a previous process left, and
    /// start the writer thread.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let counters = SpoolCounters::default();
        let mut st = State {
            segments: BTreeMap::new(),
            pending: BTreeMap::new(),
            used_bytes: 0,
            next_seq: 1,
            active: None,
            retire_active: false,
            failed_at: None,
        };
        let mut seg_firsts = Vec::new();
        let mut ack_firsts = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(io_err(&cfg.dir))? {
            let entry = entry.map_err(io_err(&cfg.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                seg_firsts.push(n);
            } else if let Some(n) = name
                .strip_suffix(".ack")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ack_firsts.push(n);
            }
        }
        seg_firsts.sort_unstable();
        for first in &ack_firsts {
            if !seg_firsts.contains(first) {
                let _ = fs::remove_file(seg_paths(&cfg.dir, *first).1);
            }
        }
        let last = seg_firsts.last().copied();
        for first in seg_firsts {
            let (path, ack_path) = seg_paths(&cfg.dir, first);
            let buf = fs::read(&path).map_err(io_err(&path))?;
            let scan = scan_segment(&buf);
            counters
                .corrupt_records
                .fetch_add(scan.corrupt, Ordering::Relaxed);
            let mut bytes = buf.len() as u64;
            if let Some(at) = scan.torn_at {
                if Some(first) == last {
                    tracing::warn!(path = %path.display(), offset = at, "truncating torn tail of spool segment");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    f.set_len(at).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                    bytes = at;
                    counters.torn_tails.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.corrupt_records.fetch_add(1, Ordering::Relaxed);
                }
            }
            if scan.corrupt > 0 {
                tracing::warn!(path = %path.display(), corrupt = scan.corrupt, "skipped corrupt spool records");
            }
            st.next_seq = st.next_seq.max(first + 1);
            let acked = read_acks(&ack_path);
            let mut live = BTreeSet::new();
            for (offset, rec) in &scan.records {
                st.next_seq = st.next_seq.max(rec.seq + 1);
                if !acked.contains(&rec.seq) {
                    live.insert(rec.seq);
                    st.pending.insert(
                        rec.seq,
                        Loc {
                            segment: first,
                            offset: *offset,
                            ts_ms: rec.appended_unix_ms,
                        },
                    );
                }
            }
            st.used_bytes += bytes;
            st.segments.insert(
                first,
                Segment {
                    path,
                    ack_path,
                    bytes,
                    records: scan.records.len() as u64,
                    live: live.clone(),
                    sealed: true,
                    in_flight: 0,
                    ack_file: None,
                },
            );
            if live.is_empty() {
                remove_segment(&mut st, first);
            }
        }
        tracing::info!(
            dir = %cfg.dir.display(),
            pending = st.pending.len(),
            bytes = st.used_bytes,
            "spool recovered"
        );
        let segment_bytes = if cfg.segment_bytes > 0 {
            cfg.segment_bytes
        } else {
            (cfg.max_bytes / 16)
                .clamp(4 << 10, 16 << 20)
                .min(cfg.max_bytes.max(1))
        };
        let last_durable = st.next_seq - 1;
        let shared = Arc::new(Shared {
            cfg,
            segment_bytes,
            state: Mutex::new(st),
            writer: Mutex::new(None),
            durable: AtomicU64::new(last_durable),
            wanted: AtomicU64::new(u64::MAX),
            ready: Notify::new(),
            counters,
            syncer: Syncer::default(),
        });
        let (tx, rx) = mpsc::channel(8192);
        let syncer = match shared.cfg.sync {
            SpoolSync::Always => None,
            SpoolSync::Interval(every) => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("spool-sync".into())
                        .spawn(move || syncer_loop(&s, every))
                        .map_err(io_err(&shared.cfg.dir))?,
                )
            }
        };
        let w = shared.clone();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                writer_loop(&w, rx);
                w.syncer.stop();
                if let Some(t) = syncer {
                    let _ = t.join();
                }
            })
            .map_err(io_err(&shared.cfg.dir))?;
        Ok(Spool { shared, tx })
    }

    /// Append a record; resolves with its sequence number once it is
    /// committed: written to the segment file, and fsync'd too with
    /// [`SpoolSync::Always`]. Fails with `Full` when it would exceed the
    /// bound.
    ///
    /// With [`SpoolSync::Interval`] and no write or fsync in progress the
    /// record is written here, on the caller's thread (one short `write(2)`
    /// to the page cache), and the future is ready at its first poll;
    /// otherwise the writer thread writes it with whatever else is queued.
    pub async fn append(&self, kind: RecordKind, payload: Vec<u8>) -> Result<SeqNo, SpoolError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(SpoolError::TooLarge {
                len: payload.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let entry = Entry {
            kind,
            payload,
            ts_ms: now_ms(),
        };
        if matches!(self.shared.cfg.sync, SpoolSync::Interval(_))
            && !self.shared.syncer.syncing.load(Ordering::Acquire)
            && let Some(mut file) = self.shared.try_lock_writer()
        {
            let result = commit_group(&self.shared, &mut file, std::slice::from_ref(&entry));
            drop(file);
            return result.into_iter().next().unwrap_or(Err(SpoolError::Closed));
        }
        let (reply, rx) = oneshot::channel();
        let req = AppendReq { entry, reply };
        self.tx.send(req).await.map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Whether a new request's events could be made durable now: the spool
    /// has `reserve_bytes` of room and the last write did not fail (a failed
    /// spool is retried after a second).
    pub fn preflight(&self) -> bool {
        let st = self.shared.lock();
        let writable = st
            .failed_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        writable && st.used_bytes + self.shared.cfg.reserve_bytes <= self.shared.cfg.max_bytes
    }

    /// Up to `max` committed, unacked records with a sequence number above
    /// `after`, in order. Blocking file reads: call from `spawn_blocking`.
    pub fn read_after(&self, after: SeqNo, max: usize) -> Result<Vec<SpoolRecord>, SpoolError> {
        let locs: Vec<(SeqNo, Loc, PathBuf)> = {
            let st = self.shared.lock();
            st.pending
                .range(after.saturating_add(1)..)
                .take(max)
                .filter_map(|(s, l)| {
                    st.segments
                        .get(&l.segment)
                        .map(|seg| (*s, *l, seg.path.clone()))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut files: HashMap<SeqNo, File> = HashMap::new();
        let mut bad = Vec::new();
        let mut i = 0;
        while i < locs.len() {
            // A run of records in one segment, in file order: read in one
            // go up to the last one's start (not one seek and two reads per
            // record); the last, whose length only its header tells, alone.
            let (segment, ref path) = (locs[i].1.segment, locs[i].2.clone());
            let mut j = i + 1;
            while j < locs.len()
                && locs[j].1.segment == segment
                && locs[j].1.offset > locs[j - 1].1.offset
            {
                j += 1;
            }
            let run = &locs[i..j];
            i = j;
            let f = match files.entry(segment) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match File::open(path) {
                    Ok(f) => v.insert(f),
                    // Deleted under us: the records were acked meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(path)(e)),
                },
            };
            let base = run[0].1.offset;
            let span = run[run.len() - 1].1.offset - base;
            let mut head = Vec::new();
            if run.len() > 1 && span <= MAX_READ_SPAN {
                head.resize(span as usize, 0);
                f.seek(SeekFrom::Start(base)).map_err(io_err(path))?;
                f.read_exact(&mut head).map_err(io_err(path))?;
            }
            for (k, (seq, loc, _)) in run.iter().enumerate() {
                let decoded = if k + 1 < run.len() && !head.is_empty() {
                    head.get((loc.offset - base) as usize..)
                        .and_then(decode_record)
                        .map(|(rec, _)| rec)
                } else {
                    let mut hdr = [0u8; HEADER_LEN];
                    f.seek(SeekFrom::Start(loc.offset)).map_err(io_err(path))?;
                    f.read_exact(&mut hdr).map_err(io_err(path))?;
                    let len = (le_u32(&hdr[2..6]) as usize).min(MAX_RECORD_BYTES);
                    let mut buf = hdr.to_vec();
                    buf.resize(HEADER_LEN + len, 0);
                    f.read_exact(&mut buf[HEADER_LEN..]).map_err(io_err(path))?;
                    decode_record(&buf).map(|(rec, _)| rec)
                };
                match decoded {
                    Some(rec) if rec.seq == *seq => out.push(rec),
                    _ => {
                        tracing::error!(path = %path.display(), seq, "spool record corrupted on disk after commit; dropping it");
                        self.shared
                            .counters
                            .corrupt_records
                            .fetch_add(1, Ordering::Relaxed);
                        bad.push(*seq);
                    }
                }
            }
        }
        if !bad.is_empty() {
            self.ack(&bad)?;
        }
        Ok(out)
    }

    /// Acknowledge records: they will not be read again, and segments whose
    /// records are all acknowledged are deleted.
    pub fn ack(&self, seqs: &[SeqNo]) -> Result<(), SpoolError> {
        let mut st = self.shared.lock();
        let mut touched: BTreeMap<SeqNo, Vec<u8>> = BTreeMap::new();
        for &seq in seqs {
            if let Some(loc) = st.pending.remove(&seq)
                && let Some(seg) = st.segments.get_mut(&loc.segment)
            {
                seg.live.remove(&seq);
                touched
                    .entry(loc.segment)
                    .or_default()
                    .extend_from_slice(&seq.to_le_bytes());
            }
        }
        let mut result = Ok(());
        for (first, bytes) in touched {
            let active = st.active == Some(first);
            let Some(seg) = st.segments.get_mut(&first) else {
                continue;
            };
            // The active segment can go too when no group is being written
            // to it; the writer then starts a new one.
            if seg.live.is_empty() && (seg.sealed || !active || seg.in_flight == 0) {
                remove_segment(&mut st, first);
                continue;
            }
            if seg.live.is_empty() {
                // The writer seals and deletes it before its next append.
                st.retire_active = true;
            }
            let Some(seg) = st.segments.get_mut(&first) else {
                continue;
            };
            if seg.ack_file.is_none() {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&seg.ack_path)
                {
                    Ok(f) => seg.ack_file = Some(f),
                    Err(e) => {
                        result = Err(io_err(&seg.ack_path)(e));
                        continue;
                    }
                }
            }
            if let Some(f) = seg.ack_file.as_mut()
                && let Err(e) = f.write_all(&bytes)
            {
                result = Err(io_err(&seg.ack_path)(e));
            }
        }
        result
    }

    /// The highest committed sequence number (sequence numbers are dense:
    /// records that failed to be written, or were acknowledged since, leave
    /// gaps among the pending ones).
    pub fn committed(&self) -> SeqNo {
        self.shared.durable.load(Ordering::SeqCst)
    }

    /// Resolves once the highest committed sequence number is at least
    /// `seq` (at once if it is). Meant for one waiter, the sender: it wakes
    /// once when the mark is reached instead of at every commit.
    pub async fn committed_at_least(&self, seq: SeqNo) {
        let shared = &self.shared;
        loop {
            let notified = shared.ready.notified();
            tokio::pin!(notified);
            // Registered before the mark is published and the count read
            // again, so a commit in between either is seen here or wakes it.
            notified.as_mut().enable();
            shared.wanted.store(seq, Ordering::SeqCst);
            if shared.durable.load(Ordering::SeqCst) >= seq {
                shared.wanted.store(u64::MAX, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }

    /// Bytes of segment files on disk.
    pub fn used_bytes(&self) -> u64 {
        self.shared.lock().used_bytes
    }

    /// Records committed and not yet acknowledged.
    pub fn pending_count(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Append time (ms since the epoch) of the oldest unacknowledged record.
    pub fn oldest_pending_unix_ms(&self) -> Option<u64> {
        let st = self.shared.lock();
        st.pending.values().map(|l| l.ts_ms).min()
    }

    /// The spool's counters.
    pub fn counters(&self) -> &SpoolCounters {
        &self.shared.counters
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.cfg.dir
    }

    /// Holds the file lock: appends queue up for the writer thread.
    #[cfg(test)]
    fn hold_writer(&self) -> MutexGuard<'_, ActiveFile> {
        self.shared.lock_writer()
    }
}

/// fsyncs the segments written since the last round, `every` after the
/// first write of the round (or at once when the previous fsync took longer
/// than that), until the writer stops (then once more).
fn syncer_loop(shared: &Shared, every: Duration) {
    loop {
        let dirty = {
            let mut st = shared.syncer.lock();
            while st.dirty.is_empty() && !st.stop {
                st = shared
                    .syncer
                    .wake
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if st.dirty.is_empty() {
                return;
            }
            // Let more groups land in the page cache, so that one fsync
            // covers them all; the writer stopping cuts the wait short.
            let deadline = st.since.unwrap_or_else(Instant::now) + every;
            while !st.stop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st = shared
                    .syncer
                    .wake
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            st.since = None;
            std::mem::take(&mut st.dirty)
        };
        shared.syncer.syncing.store(true, Ordering::Release);
        for (_, f, path) in dirty {
            let synced = f.sync_data();
            shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = synced {
                // The records were released already; what the kernel keeps
                // is still read and sent. New requests are refused for a
                // while, as after a failed write.
                shared
                    .counters
                    .sync_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %e, "spool fsync failed; records written in the last interval may not survive a machine crash");
                shared.lock().failed_at = Some(Instant::now());
            }
        }
        shared.syncer.syncing.store(false, Ordering::Release);
    }
}

fn writer_loop(shared: &Shared, mut rx: mpsc::Receiver<AppendReq>) {
    while let Some(first) = rx.blocking_recv() {
        // The file first: what queues while a write from another thread
        // runs goes out with this one as a group.
        let mut file = shared.lock_writer();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<Entry>, Vec<_>) =
            group.into_iter().map(|r| (r.entry, r.reply)).unzip();
        let results = commit_group(shared, &mut file, &entries);
        drop(file);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Number, write (and with [`SpoolSync::Always`] fsync) `group` as one
/// `write(2)`; the outcome of each entry, in order. The caller holds the
/// file lock (`file`).
fn commit_group(
    shared: &Shared,
    file: &mut ActiveFile,
    group: &[Entry],
) -> Vec<Result<SeqNo, SpoolError>> {
    let dir = &shared.cfg.dir;
    let mut results: Vec<Result<SeqNo, SpoolError>> = Vec::with_capacity(group.len());
    // Indexes into `group` (and `results`) of the entries that fit.
    let mut accepted: Vec<(SeqNo, usize)> = Vec::with_capacity(group.len());
    let (seg_first, base_offset, total, path) = {
        let mut st = shared.lock();
        if let Some(active) = st.active {
            let (full, empty) = match st.segments.get(&active) {
                Some(seg) => (seg.bytes >= shared.segment_bytes, seg.live.is_empty()),
                None => (true, false),
            };
            if full || st.retire_active {
                if let Some(seg) = st.segments.get_mut(&active) {
                    seg.sealed = true;
                }
                st.active = None;
                st.retire_active = false;
                *file = None;
                if empty {
                    remove_segment(&mut st, active);
                }
            }
        }
        let mut need_total = 0u64;
        for (i, e) in group.iter().enumerate() {
            let need = (HEADER_LEN + e.payload.len()) as u64;
            if st.used_bytes + need_total + need > shared.cfg.max_bytes {
                results.push(Err(SpoolError::Full {
                    used: st.used_bytes + need_total,
                    need,
                    max: shared.cfg.max_bytes,
                }));
                continue;
            }
            need_total += need;
            let seq = st.next_seq;
            st.next_seq += 1;
            accepted.push((seq, i));
            results.push(Ok(seq));
        }
        let Some(first_seq) = accepted.first().map(|(s, _)| *s) else {
            return results;
        };
        if st.active.is_none() {
            let (path, ack_path) = seg_paths(dir, first_seq);
            let opened = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))
                .and_then(|f| sync_dir(dir).map(|_| f));
            match opened {
                Ok(f) => {
                    *file = Some((first_seq, Arc::new(f)));
                    st.segments.insert(
                        first_seq,
                        Segment {
                            path,
                            ack_path,
                            bytes: 0,
                            live: BTreeSet::new(),
                            records: 0,
                            sealed: false,
                            in_flight: 0,
                            ack_file: None,
                        },
                    );
                    st.active = Some(first_seq);
                }
                Err(e) => {
                    st.failed_at = Some(Instant::now());
                    drop(st);
                    fail_all(&accepted, &mut results, &e);
                    return results;
                }
            }
        }
        let Some(active) = st.active else {
            fail_all(&accepted, &mut results, &SpoolError::Closed);
            return results;
        };
        let Some(seg) = st.segments.get_mut(&active) else {
            fail_all(&accepted, &mut results, &SpoolError::Closed);
            return results;
        };
        let base = seg.bytes;
        seg.bytes += need_total;
        seg.in_flight += need_total;
        let path = seg.path.clone();
        st.used_bytes += need_total;
        (active, base, need_total, path)
    };
    let mut buf = Vec::with_capacity(total as usize);
    let mut offsets = Vec::with_capacity(accepted.len());
    for (seq, i) in &accepted {
        let e = &group[*i];
        offsets.push(base_offset + buf.len() as u64);
        encode_record(e.kind, *seq, e.ts_ms, &e.payload, &mut buf);
    }
    let written = match file.as_ref() {
        Some((_, f)) => {
            let mut w: &File = f;
            w.write_all(&buf)
                .and_then(|_| match shared.cfg.sync {
                    SpoolSync::Always => {
                        let synced = f.sync_data();
                        shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
                        synced
                    }
                    SpoolSync::Interval(_) => {
                        shared.syncer.mark_dirty(seg_first, f, &path);
                        Ok(())
                    }
                })
                .map_err(io_err(&path))
        }
        None => Err(SpoolError::Closed),
    };
    let mut st = shared.lock();
    if let Some(seg) = st.segments.get_mut(&seg_first) {
        seg.in_flight = seg.in_flight.saturating_sub(total);
    }
    match written {
        Ok(()) => {
            let mut last = 0;
            for ((seq, i), offset) in accepted.iter().zip(&offsets) {
                st.pending.insert(
                    *seq,
                    Loc {
                        segment: seg_first,
                        offset: *offset,
                        ts_ms: group[*i].ts_ms,
                    },
                );
                if let Some(seg) = st.segments.get_mut(&seg_first) {
                    seg.live.insert(*seq);
                    seg.records += 1;
                }
                last = *seq;
            }
            st.failed_at = None;
            drop(st);
            shared
                .counters
                .groups_committed
                .fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .appends_committed
                .fetch_add(accepted.len() as u64, Ordering::Relaxed);
            shared.committed(last);
            results
        }
        Err(e) => {
            tracing::error!(error = %e, "spool write failed; requests in this group are not durable");
            st.failed_at = Some(Instant::now());
            // Undo what we can and never append to this file again: its
            // tail may hold a partial group that recovery will skip.
            if let Some((_, f)) = file.as_ref()
                && f.set_len(base_offset).is_ok()
            {
                if let Some(seg) = st.segments.get_mut(&seg_first) {
                    seg.bytes = base_offset;
                }
                st.used_bytes = st.used_bytes.saturating_sub(total);
            }
            if let Some(seg) = st.segments.get_mut(&seg_first) {
                seg.sealed = true;
            }
            st.active = None;
            *file = None;
            drop(st);
            fail_all(&accepted, &mut results, &e);
            results
        }
    }
}

/// Every accepted entry of a group failed with `e`.
fn fail_all(
    accepted: &[(SeqNo, usize)],
    results: &mut [Result<SeqNo, SpoolError>],
    e: &SpoolError,
) {
    for (_, i) in accepted {
        let err = match e {
            SpoolError::Io { path, source } => SpoolError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            _ => SpoolError::Closed,
        };
        if let Some(r) = results.get_mut(*i) {
            *r = Err(err);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: max,
            segment_bytes: 256,
            reserve_bytes: 64,
            sync: SpoolSync::DEFAULT,
        }
    }

    fn payloads(sp: &Spool) -> Vec<Vec<u8>> {
        sp.read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.payload)
            .collect()
    }

    #[tokio::test]
    async fn append_ack_restart() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        let mut seqs = Vec::new();
        for i in 0..50u32 {
            seqs.push(
                sp.append(RecordKind::Event, format!("event-{i}").into_bytes())
                    .await
                    .unwrap(),
            );
        }
        let s = sp
            .append(RecordKind::Session, b"cast".to_vec())
            .await
            .unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]) && s > seqs[49]);
        assert_eq!(sp.pending_count(), 51);
        // Ack the first 30: several whole segments become free.
        let before = sp.used_bytes();
        sp.ack(&seqs[..30]).unwrap();
        assert!(sp.used_bytes() < before, "fully acked segments are deleted");
        drop(sp);

        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        let recs = sp.read_after(0, usize::MAX).unwrap();
        let got: Vec<SeqNo> = recs.iter().map(|r| r.seq).collect();
        let mut want = seqs[30..].to_vec();
        want.push(s);
        assert_eq!(got, want, "exactly the unacked records come back, in order");
        assert_eq!(recs[0].payload, b"event-30");
        assert_eq!(recs.last().unwrap().kind, RecordKind::Session);
        // New appends continue the sequence.
        let n = sp
            .append(RecordKind::Event, b"after".to_vec())
            .await
            .unwrap();
        assert!(n > s);
        let all: Vec<SeqNo> = sp
            .read_after(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        sp.ack(&all).unwrap();
        assert_eq!(sp.pending_count(), 0);
        // One more append rotates away the fully acked active segment.
        let last = sp.append(RecordKind::Event, b"x".to_vec()).await.unwrap();
        sp.ack(&[last]).unwrap();
        drop(sp);
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(sp.pending_count(), 0, "acked records are not resent");
        assert_eq!(sp.used_bytes(), 0, "all segments deleted");
    }

    #[tokio::test]
    async fn torn_tail_is_truncated() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        for i in 0..3u32 {
            sp.append(RecordKind::Event, format!("e{i}").into_bytes())
                .await
                .unwrap();
        }
        drop(sp);
        let seg = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let good_len = fs::metadata(&seg).unwrap().len();
        // Half a record: the crash happened mid-write.
        let mut half = Vec::new();
        encode_record(RecordKind::Event, 99, 0, b"never-finished", &mut half);
        half.truncate(HEADER_LEN + 3);
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&half)
            .unwrap();

        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(
            payloads(&sp),
            vec![b"e0".to_vec(), b"e1".to_vec(), b"e2".to_vec()]
        );
        assert_eq!(sp.counters().torn_tails.load(Ordering::Relaxed), 1);
        assert_eq!(sp.counters().corrupt_records.load(Ordering::Relaxed), 0);
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            good_len,
            "tail truncated"
        );
        sp.append(RecordKind::Event, b"e3".to_vec()).await.unwrap();
        assert_eq!(payloads(&sp).len(), 4);
    }

    #[tokio::test]
    async fn corruption_in_the_middle_is_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        for i in 0..5u32 {
            sp.append(RecordKind::Event, format!("record-{i}").into_bytes())
                .await
                .unwrap();
        }
        drop(sp);
        let seg = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        let rec_len = HEADER_LEN + "record-0".len();
        // Flip a payload byte of record 1 and the length field of record 3.
        bytes[rec_len + HEADER_LEN + 2] ^= 0xFF;
        bytes[3 * rec_len + 3] ^= 0x7F;
        fs::write(&seg, &bytes).unwrap();

        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        assert_eq!(
            payloads(&sp),
            vec![
                b"record-0".to_vec(),
                b"record-2".to_vec(),
                b"record-4".to_vec()
            ]
        );
        assert_eq!(sp.counters().corrupt_records.load(Ordering::Relaxed), 2);

        // Garbage of every kind never panics recovery.
        for fill in [0u8, 0xA5, 0xFF] {
            fs::write(&seg, vec![fill; 300]).unwrap();
            let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
            assert_eq!(sp.pending_count(), 0);
        }
    }

    /// Records read back in one go (a run in one segment) are each still
    /// checked: one corrupted after commit is dropped and counted, the
    /// others are read, whether it is in the run or last.
    #[tokio::test]
    async fn records_corrupted_after_commit_are_dropped_from_a_batch_read() {
        use std::io::Write as _;
        let d = tempfile::tempdir().unwrap();
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        for i in 0..6u32 {
            sp.append(RecordKind::Event, format!("record-{i}").into_bytes())
                .await
                .unwrap();
        }
        let seg = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let rec_len = (HEADER_LEN + "record-0".len()) as u64;
        let mut f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        for k in [1u64, 5] {
            f.seek(SeekFrom::Start(k * rec_len + HEADER_LEN as u64 + 1))
                .unwrap();
            f.write_all(b"X").unwrap();
        }
        drop(f);
        let got: Vec<Vec<u8>> = sp
            .read_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(
            got,
            ["record-0", "record-2", "record-3", "record-4"].map(|s| s.as_bytes().to_vec())
        );
        assert_eq!(sp.counters().corrupt_records.load(Ordering::Relaxed), 2);
        // Dropped for good: not offered again.
        assert_eq!(sp.read_after(0, 10).unwrap().len(), 4);
    }

    #[tokio::test]
    async fn full_spool_refuses_appends_until_acked() {
        let d = tempfile::tempdir().unwrap();
        let rec = (HEADER_LEN + 100) as u64;
        let sp = Spool::open(SpoolConfig {
            dir: d.path().to_path_buf(),
            max_bytes: rec * 4,
            segment_bytes: rec,
            reserve_bytes: rec,
            sync: SpoolSync::DEFAULT,
        })
        .unwrap();
        let mut seqs = Vec::new();
        for _ in 0..4 {
            seqs.push(sp.append(RecordKind::Event, vec![7; 100]).await.unwrap());
        }
        assert!(!sp.preflight(), "no room for another request");
        match sp.append(RecordKind::Event, vec![7; 100]).await {
            Err(SpoolError::Full { max, .. }) => assert_eq!(max, rec * 4),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(
            sp.pending_count(),
            4,
            "a refused append leaves nothing behind"
        );
        sp.ack(&seqs[..2]).unwrap();
        assert!(sp.preflight());
        sp.append(RecordKind::Event, vec![7; 100]).await.unwrap();
        assert!(
            sp.append(RecordKind::Event, vec![0; MAX_RECORD_BYTES + 1])
                .await
                .is_err()
        );
    }

    // Holding the std mutex across awaits is the point: it parks the writer
    // thread (not a task) while the appends queue up.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_one_fsync() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        sp.append(RecordKind::Event, b"warm-up".to_vec())
            .await
            .unwrap();
        let groups_before = sp.counters().groups_committed.load(Ordering::Relaxed);
        let hold = sp.hold_writer();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let sp = sp.clone();
            tasks.push(tokio::spawn(async move {
                sp.append(RecordKind::Event, format!("c{i}").into_bytes())
                    .await
            }));
        }
        // Wait until all 200 are queued behind the held writer.
        tokio::time::timeout(Duration::from_secs(10), async {
            while sp.tx.capacity() > 8192 - 199 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        drop(hold);
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 200);
        let groups = sp.counters().groups_committed.load(Ordering::Relaxed) - groups_before;
        assert!(groups <= 2, "200 appends took {groups} fsyncs");
        assert_eq!(sp.pending_count(), 201);
    }

    /// With an interval and the file free, an append is written by its
    /// caller: ready at its first poll, no writer thread involved; a
    /// waiter for a committed sequence number wakes once it is reached.
    #[tokio::test]
    async fn interval_appends_write_on_the_callers_thread() {
        use futures::FutureExt;
        let d = tempfile::tempdir().unwrap();
        let sp = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
        let mut waiter = Box::pin(sp.committed_at_least(3));
        assert!((&mut waiter).now_or_never().is_none());
        for i in 1..=3u64 {
            let seq = sp
                .append(RecordKind::Event, format!("direct-{i}").into_bytes())
                .now_or_never()
                .expect("written without waiting")
                .unwrap();
            assert_eq!(seq, i);
            assert_eq!(sp.committed(), i);
        }
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap();
        sp.committed_at_least(2)
            .now_or_never()
            .expect("already reached");
        assert_eq!(payloads(&sp).len(), 3);
        // `always` goes through the writer thread (its fsync must not block
        // the caller's thread) and counts as committed the same way.
        let mut c = cfg(d.path(), 1 << 20);
        c.sync = SpoolSync::Always;
        drop(sp);
        let sp = Spool::open(c).unwrap();
        assert_eq!(sp.committed(), 3);
        let synced = sp.append(RecordKind::Event, b"synced".to_vec());
        assert_eq!(synced.await.unwrap(), 4);
        assert_eq!(sp.committed(), 4);
    }

    /// With an interval, appends resolve without an fsync of their own; the
    /// syncer covers what was written, and the writer stopping flushes what
    /// is left at once instead of waiting out the interval.
    #[tokio::test]
    async fn interval_sync_releases_before_fsync_and_syncs_later() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(d.path(), 1 << 20);
        c.sync = SpoolSync::Interval(Duration::from_secs(3600));
        let sp = Spool::open(c).unwrap();
        for i in 0..20u32 {
            sp.append(RecordKind::Event, format!("e{i}").into_bytes())
                .await
                .unwrap();
        }
        let shared = sp.shared.clone();
        assert_eq!(
            shared.counters.appends_committed.load(Ordering::Relaxed),
            20
        );
        assert_eq!(
            shared.counters.syncs.load(Ordering::Relaxed),
            0,
            "no append waited for an fsync"
        );
        assert_eq!(sp.pending_count(), 20, "written records are sendable");
        drop(sp);
        tokio::time::timeout(Duration::from_secs(30), async {
            while shared.counters.syncs.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the last written groups are fsync'd when the spool closes");
        assert_eq!(shared.counters.sync_failures.load(Ordering::Relaxed), 0);

        // `always`: one fsync per group before the append resolves.
        let mut c = cfg(d.path(), 1 << 20);
        c.sync = SpoolSync::Always;
        let sp = Spool::open(c).unwrap();
        let before = sp.counters().syncs.load(Ordering::Relaxed);
        sp.append(RecordKind::Event, b"synced".to_vec())
            .await
            .unwrap();
        assert_eq!(sp.counters().syncs.load(Ordering::Relaxed), before + 1);
        assert_eq!(sp.pending_count(), 21);
    }

    /// Child half of `sigkill_loses_nothing_durable`: appends forever,
    /// printing each sequence number once `append` said it is durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_child() {
        let Ok(dir) = std::env::var("MCP_WARDEN_SPOOL_CRASH_DIR") else {
            return; // only meaningful when started by the parent test
        };
        let mut c = cfg(Path::new(&dir), 1 << 30);
        if std::env::var("MCP_WARDEN_SPOOL_CRASH_SYNC").as_deref() == Ok("always") {
            c.sync = SpoolSync::Always;
        }
        let sp = Spool::open(c).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for w in 0..8u64 {
            let sp = sp.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    let seq = sp
                        .append(RecordKind::Event, format!("w{w}-{i}").into_bytes())
                        .await
                        .unwrap();
                    let _ = tx.send(seq);
                }
            });
        }
        let mut out = std::io::stdout();
        while let Some(seq) = rx.recv().await {
            writeln!(out, "DURABLE {seq}").unwrap();
            out.flush().unwrap();
        }
    }

    /// A process killed with SIGKILL mid-append loses no record it had
    /// reported durable, and recovery never panics on what it left. With
    /// the default sync interval "durable" means written, not fsync'd: the
    /// page cache outlives the process.
    #[test]
    fn sigkill_loses_nothing_durable() {
        sigkill_child_and_recover("interval");
    }

    /// The same with fsync before every release.
    #[test]
    fn sigkill_loses_nothing_durable_with_sync_always() {
        sigkill_child_and_recover("always");
    }

    fn sigkill_child_and_recover(sync: &str) {
        use std::io::BufRead;
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "recording::spool::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MCP_WARDEN_SPOOL_CRASH_DIR", d.path())
            .env("MCP_WARDEN_SPOOL_CRASH_SYNC", sync)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut durable = BTreeSet::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("DURABLE ") {
                durable.insert(n.trim().parse::<u64>().unwrap());
                if durable.len() >= 2000 {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(durable.len() >= 2000, "child stopped early");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sp = Spool::open(cfg(d.path(), 1 << 30)).unwrap();
            let recovered: BTreeSet<u64> = sp
                .read_after(0, usize::MAX)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            let missing: Vec<_> = durable.difference(&recovered).take(5).collect();
            assert!(missing.is_empty(), "durable records lost: {missing:?}");
            assert_eq!(sp.counters().corrupt_records.load(Ordering::Relaxed), 0);
            // The spool keeps working after the crash.
            let n = sp
                .append(RecordKind::Event, b"after-crash".to_vec())
                .await
                .unwrap();
            assert!(n > *recovered.iter().max().unwrap());
        });
    }
}
