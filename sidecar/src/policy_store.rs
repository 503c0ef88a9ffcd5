//! The effective policy, hot-reloaded from the ConfigMap volume.
//!
//! The kubelet updates a ConfigMap volume by writing a new timestamped
//! directory and atomically renaming the `..data` symlink to it; the file the
//! sidecar is pointed at (`policy.yaml -> ..data/policy.yaml`) never changes
//! as an inode, so the store re-reads on any file event in the directory and
//! every [`POLL_INTERVAL`] ([`mcp_warden_io::watch::FileWatch`]). A re-read whose
//! bytes hash like the current policy is a no-op, so polling costs one small
//! file read per second.
//!
//! A new policy that does not parse or validate never replaces the last good
//! one: the error is logged, counted and kept for `/readyz`. A missing file
//! means the embedded default policy. In-flight requests keep the
//! `Arc<LoadedPolicy>` they started with.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use mcp_warden_io::watch::FileWatch;
use mcp_warden_shared::mask::Masker;
use mcp_warden_shared::policy::{Policy, PolicyErrors, source_hash};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;

use futures::future::BoxFuture;
use mcp_warden_shared::attrs::{Impersonation, RequestAttributes};
use mcp_warden_shared::identity::Identity;
use mcp_warden_shared::policy;

use crate::admin::{Check, Readiness};
use crate::hooks::{self, DecideHook, RequestContext};
use crate::metrics::Metrics;

/// How often the file is re-read even without file events.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Events arriving within this window after the first are handled by one re-read.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Larger files are refused (a ConfigMap holds at most 1 MiB).
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Where the effective policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The policy file.
    File(PathBuf),
    /// The embedded default (no policy file configured, or the file does not exist).
    EmbeddedDefault,
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::File(p) => write!(f, "{}", p.display()),
            PolicySource::EmbeddedDefault => f.write_str("embedded default"),
        }
    }
}

/// A policy in effect, with everything derived from it once at load time.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The validated policy.
    pub policy: Policy,
    /// The compiled `masking` section.
    pub masker: Arc<Masker>,
    /// File or embedded default.
    pub source: PolicySource,
    /// When this policy was swapped in.
    pub loaded_at: SystemTime,
    /// 1 for the first policy, +1 for every policy swapped in since.
    pub generation: u64,
}

impl LoadedPolicy {
    /// SHA-256 of the policy's source bytes, hex.
    pub fn hash(&self) -> &str {
        self.policy.hash()
    }

    /// Short hash for annotations, metrics and logs.
    pub fn short_hash(&self) -> &str {
        self.policy.short_hash()
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// The policy file exists but cannot be read.
    #[error("invalid --policy-file (MCP_WARDEN_POLICY_FILE) {path}: cannot read: {why}")]
    Read { path: PathBuf, why: String },
    /// The policy file exists but is not a valid policy.
    #[error("invalid --policy-file (MCP_WARDEN_POLICY_FILE): {0}")]
    Invalid(#[from] PolicyErrors),
    /// The policy's masking section does not compile.
    #[error("invalid --policy-file (MCP_WARDEN_POLICY_FILE) {path}: masking: {why}")]
    Masking { path: PathBuf, why: String },
}

/// What one re-read did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Same bytes (or same failed bytes) as before: nothing to do.
    Unchanged,
    /// A new policy is in effect.
    Swapped {
        /// Its short hash.
        short_hash: String,
    },
    /// The new content was refused; the previous policy stays.
    Rejected,
}

/// The effective policy and its reload state; share it as `Arc<PolicyStore>`.
#[derive(Debug)]
pub struct PolicyStore {
    path: Option<PathBuf>,
    current: ArcSwap<LoadedPolicy>,
    last_error: Mutex<Option<String>>,
    /// Hash of the last content that was refused, so polling an unchanged
    /// bad file counts and logs it once.
    last_rejected: Mutex<Option<String>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    condition_errors: AtomicU64,
    /// Serializes re-reads (the watcher and explicit callers).
    reload_lock: Mutex<()>,
    /// Set by [`PolicyStore::register_metrics`].
    metrics: Mutex<Option<PolicyMetrics>>,
    /// Set by [`PolicyStore::attach_readiness`].
    readiness: Mutex<Option<Arc<Readiness>>>,
}

/// Labels of `mcp_warden_policy_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// `ok` or `error`.
    result: String,
}

/// Labels of `mcp_warden_policy_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    /// Short hash of the policy in effect.
    hash: String,
    /// `file` or `embedded`.
    source: String,
    /// `enforce` or `audit`.
    mode: String,
}

/// Labels of `mcp_warden_policy_condition_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    /// The rule whose `when:` failed (rule names are the policy's, so the
    /// series are bounded by its rules).
    rule: String,
}

#[derive(Debug, Clone)]
struct PolicyMetrics {
    reloads: Family<ReloadLabels, Counter>,
    condition_errors: Family<ConditionLabels, Counter>,
    info: Family<InfoLabels, Gauge>,
    last_reload_failed: Gauge,
}

fn info_labels(l: &LoadedPolicy) -> InfoLabels {
    InfoLabels {
        hash: l.short_hash().to_string(),
        source: match l.source {
            PolicySource::File(_) => "file",
            PolicySource::EmbeddedDefault => "embedded",
        }
        .to_string(),
        mode: l.policy.mode.as_str().to_string(),
    }
}

enum FileRead {
    Missing,
    Bytes(Vec<u8>),
}

fn read_policy_file(path: &Path) -> Result<FileRead, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileRead::Missing),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(format!("the file is larger than {MAX_POLICY_BYTES} bytes"));
    }
    Ok(FileRead::Bytes(bytes))
}

/// Parse and compile; the error text is what `/readyz` and logs show.
fn build(path: &Path, bytes: &[u8]) -> Result<(Policy, Arc<Masker>), PolicyStoreError> {
    let policy = Policy::parse_bytes(&path.display().to_string(), bytes)?;
    let masker = policy
        .masking
        .compile()
        .map_err(|e| PolicyStoreError::Masking {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    Ok((policy, Arc::new(masker)))
}

fn embedded(generation: u64) -> Result<LoadedPolicy, PolicyStoreError> {
    let policy = Policy::embedded_default();
    // Compiles by construction (a unit test makes sure); still no panic here.
    let masker = policy
        .masking
        .compile()
        .map_err(|e| PolicyStoreError::Masking {
            path: PathBuf::from(mcp_warden_shared::policy::EMBEDDED_DEFAULT_NAME),
            why: e.to_string(),
        })?;
    Ok(LoadedPolicy {
        policy,
        masker: Arc::new(masker),
        source: PolicySource::EmbeddedDefault,
        loaded_at: SystemTime::now(),
        generation,
    })
}

impl PolicyStore {
    /// Load the policy and start watching it. `None`, or a path that does
    /// not exist, means the embedded default (a file that appears later is
    /// picked up). A file that exists but is unreadable or invalid at start
    /// is an error: the sidecar exits rather than run a policy it was not
    /// given. Must be called inside a Tokio runtime; the returned task runs
    /// until aborted.
    pub fn start(
        path: Option<PathBuf>,
    ) -> Result<(Arc<PolicyStore>, JoinHandle<()>), PolicyStoreError> {
        let store = Arc::new(PolicyStore::load(path)?);
        let task = match store.path.clone() {
            None => tokio::spawn(async {}),
            Some(p) => tokio::spawn(watch(store.clone(), p)),
        };
        Ok((store, task))
    }

    /// The initial load, without a watcher (used by [`PolicyStore::start`]).
    pub fn load(path: Option<PathBuf>) -> Result<PolicyStore, PolicyStoreError> {
        let initial = match &path {
            None => embedded(1)?,
            Some(p) => match read_policy_file(p).map_err(|why| PolicyStoreError::Read {
                path: p.clone(),
                why,
            })? {
                FileRead::Missing => {
                    tracing::warn!(path = %p.display(), "policy file not found: using the embedded default policy");
                    embedded(1)?
                }
                FileRead::Bytes(bytes) => {
                    let (policy, masker) = build(p, &bytes)?;
                    LoadedPolicy {
                        policy,
                        masker,
                        source: PolicySource::File(p.clone()),
                        loaded_at: SystemTime::now(),
                        generation: 1,
                    }
                }
            },
        };
        tracing::info!(
            source = %initial.source,
            policy_hash = initial.short_hash(),
            mode = initial.policy.mode.as_str(),
            rules = initial.policy.rules.len(),
            "policy loaded"
        );
        Ok(PolicyStore {
            path,
            current: ArcSwap::from_pointee(initial),
            last_error: Mutex::new(None),
            last_rejected: Mutex::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            condition_errors: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
            metrics: Mutex::new(None),
            readiness: Mutex::new(None),
        })
    }

    /// The policy in effect. Keep the `Arc` for the whole request so that a
    /// reload in the middle does not change its rules.
    pub fn current(&self) -> Arc<LoadedPolicy> {
        self.current.load_full()
    }

    /// The configured policy file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Why the newest policy file content was refused, while the previous
    /// policy stays in effect; `None` once a good policy is loaded. For
    /// `/readyz` (which stays 200: a good policy is serving).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Policies swapped in after the first (`mcp_warden_policy_reloads_total{result="ok"}`).
    pub fn reloads_ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Acquire)
    }

    /// Distinct new contents refused (`mcp_warden_policy_reloads_total{result="error"}`).
    pub fn reloads_failed(&self) -> u64 {
        self.reloads_failed.load(Ordering::Acquire)
    }

    /// Registers `mcp_warden_policy_reloads_total{result="ok"|"error"}`,
    /// `mcp_warden_policy_condition_errors_total{rule}`,
    /// `mcp_warden_policy_info{hash,source,mode}` (1 for the policy in
    /// effect) and `mcp_warden_policy_last_reload_failed` (1 while the newest
    /// file content is refused) and keeps them current. Call once.
    pub fn register_metrics(&self, metrics: &Metrics) {
        let m = PolicyMetrics {
            reloads: Family::default(),
            condition_errors: Family::default(),
            info: Family::default(),
            last_reload_failed: Gauge::default(),
        };
        m.reloads
            .get_or_create(&ReloadLabels {
                result: "ok".into(),
            })
            .inc_by(self.reloads_ok());
        m.reloads
            .get_or_create(&ReloadLabels {
                result: "error".into(),
            })
            .inc_by(self.reloads_failed());
        m.info.get_or_create(&info_labels(&self.current())).set(1);
        m.last_reload_failed
            .set(i64::from(self.last_error().is_some()));
        metrics.register(
            "policy_reloads",
            "Policy file changes swapped in (ok) or refused (error)",
            m.reloads.clone(),
        );
        metrics.register(
            "policy_condition_errors",
            "when: conditions that failed at run time (counted as matching for deny/approve rules, not for allow rules), by rule",
            m.condition_errors.clone(),
        );
        metrics.register(
            "policy_info",
            "The policy in effect (value 1), by short hash, source and mode",
            m.info.clone(),
        );
        metrics.register(
            "policy_last_reload_failed",
            "1 while the newest policy file content is refused and the last good policy is kept",
            m.last_reload_failed.clone(),
        );
        *lock(&self.metrics) = Some(m);
    }

    /// Counts a `when:` condition of `rule` that failed at run time
    /// (`mcp_warden_policy_condition_errors_total{rule}`).
    pub fn count_condition_error(&self, rule: &str) {
        self.condition_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = lock(&self.metrics).as_ref() {
            m.condition_errors
                .get_or_create(&ConditionLabels {
                    rule: rule.to_string(),
                })
                .inc();
        }
    }

    /// `when:` conditions that failed at run time since start.
    pub fn condition_errors(&self) -> u64 {
        self.condition_errors.load(Ordering::Relaxed)
    }

    /// Keeps the `policy` condition of `/readyz` current: `Ok` while the
    /// newest policy is in effect, `Warning(error)` (still ready: a good
    /// policy serves) while a newer file content is refused.
    pub fn attach_readiness(&self, readiness: Arc<Readiness>) {
        *lock(&self.readiness) = Some(readiness);
        self.update_readiness();
    }

    fn update_readiness(&self) {
        let Some(r) = lock(&self.readiness).clone() else {
            return;
        };
        let cur = self.current();
        let check = match self.last_error() {
            None => Check::Ok,
            Some(e) => Check::Warning(format!(
                "policy {} ({}) is in effect; the newest policy file was refused: {e}",
                cur.short_hash(),
                cur.source
            )),
        };
        r.set("policy", check);
    }

    /// Re-read the file now and swap in a new valid policy. Called by the
    /// watcher; blocking (one small file read).
    pub fn reload(&self) -> ReloadOutcome {
        let Some(path) = &self.path else {
            return ReloadOutcome::Unchanged;
        };
        let _guard = match self.reload_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let cur = self.current();
        let read = match read_policy_file(path) {
            Ok(r) => r,
            Err(why) => {
                let fingerprint = format!("read-error:{why}");
                return self.reject(
                    &fingerprint,
                    format!("{}: cannot read: {why}", path.display()),
                );
            }
        };
        let bytes = match read {
            FileRead::Missing if cur.source == PolicySource::EmbeddedDefault => {
                return ReloadOutcome::Unchanged;
            }
            FileRead::Missing => {
                tracing::warn!(path = %path.display(), "policy file removed: switching to the embedded default policy");
                return match embedded(cur.generation + 1) {
                    Ok(next) => self.swap(next),
                    Err(e) => self.reject("embedded", e.to_string()),
                };
            }
            FileRead::Bytes(b) => b,
        };
        let hash = source_hash(&bytes);
        if cur.source != PolicySource::EmbeddedDefault && hash == cur.hash() {
            // The file went back to the policy in effect: nothing is refused any more.
            if self.last_error().is_some() {
                self.clear_rejection();
                if let Some(m) = lock(&self.metrics).as_ref() {
                    m.last_reload_failed.set(0);
                }
                self.update_readiness();
            }
            return ReloadOutcome::Unchanged;
        }
        match build(path, &bytes) {
            Ok((policy, masker)) => self.swap(LoadedPolicy {
                policy,
                masker,
                source: PolicySource::File(path.clone()),
                loaded_at: SystemTime::now(),
                generation: cur.generation + 1,
            }),
            Err(e) => self.reject(&hash, e.to_string()),
        }
    }

    fn swap(&self, next: LoadedPolicy) -> ReloadOutcome {
        let short_hash = next.short_hash().to_string();
        tracing::info!(
            source = %next.source,
            policy_hash = %short_hash,
            mode = next.policy.mode.as_str(),
            rules = next.policy.rules.len(),
            generation = next.generation,
            "policy reloaded"
        );
        let next = Arc::new(next);
        // Counted and the rejection cleared before the policy is published:
        // whoever sees the new policy in effect sees the rest of it too.
        self.reloads_ok.fetch_add(1, Ordering::Release);
        self.clear_rejection();
        let prev = self.current.swap(next.clone());
        if let Some(m) = lock(&self.metrics).as_ref() {
            m.reloads
                .get_or_create(&ReloadLabels {
                    result: "ok".into(),
                })
                .inc();
            m.info.remove(&info_labels(&prev));
            m.info.get_or_create(&info_labels(&next)).set(1);
            m.last_reload_failed.set(0);
        }
        self.update_readiness();
        ReloadOutcome::Swapped { short_hash }
    }

    fn clear_rejection(&self) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
        if let Ok(mut r) = self.last_rejected.lock() {
            *r = None;
        }
    }

    fn reject(&self, fingerprint: &str, error: String) -> ReloadOutcome {
        let mut last = match self.last_rejected.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if last.as_deref() == Some(fingerprint) {
            return ReloadOutcome::Unchanged;
        }
        *last = Some(fingerprint.to_string());
        drop(last);
        let cur = self.current();
        tracing::error!(
            error = %error,
            keeping_policy_hash = cur.short_hash(),
            "new policy refused: keeping the last good policy"
        );
        // The error before the count: whoever sees the refusal counted can
        // read why.
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
        self.reloads_failed.fetch_add(1, Ordering::Release);
        if let Some(m) = lock(&self.metrics).as_ref() {
            m.reloads
                .get_or_create(&ReloadLabels {
                    result: "error".into(),
                })
                .inc();
            m.last_reload_failed.set(1);
        }
        self.update_readiness();
        ReloadOutcome::Rejected
    }
}

/// The policy as the proxy's [`DecideHook`]: evaluates every parsed request
/// against the policy in effect, with the pod's identity.
///
/// On its own, `approve` blocks like `deny` with a message saying approval
/// is required (the approvals decider wraps it to hold such requests
/// instead). In `mode: audit` nothing is refused (the decision is
/// still returned for recording). `Impersonate-*` headers are forwarded only
/// when the impersonation was allowed (or in audit mode).
#[derive(Debug, Clone)]
pub struct PolicyDecider {
    store: Arc<PolicyStore>,
    identity: Arc<Identity>,
}

impl PolicyDecider {
    /// `identity` is the pod's, from its own token
    /// ([`mcp_warden_shared::identity::from_service_account_jwt`]).
    pub fn new(store: Arc<PolicyStore>, identity: Identity) -> Self {
        PolicyDecider {
            store,
            identity: Arc::new(identity),
        }
    }

    /// The pure decision and the policy that made it, without bodies (for
    /// tools and tests; the pipeline uses [`PolicyDecider::judge`]).
    pub fn evaluate(
        &self,
        attrs: &RequestAttributes,
        imp: &Impersonation,
    ) -> (Arc<LoadedPolicy>, policy::Decision) {
        self.evaluate_with(attrs, imp, policy::Bodies::default())
    }

    /// The pure decision with the bodies `when:` conditions read, and the
    /// policy that made it.
    pub fn evaluate_with(
        &self,
        attrs: &RequestAttributes,
        imp: &Impersonation,
        bodies: policy::Bodies<'_>,
    ) -> (Arc<LoadedPolicy>, policy::Decision) {
        let loaded = self.store.current();
        let d = policy::evaluate_with(&loaded.policy, attrs, imp, &self.identity, bodies);
        (loaded, d)
    }

    /// Which bodies the policy in effect reads for this request.
    pub fn body_needed(&self, attrs: &RequestAttributes) -> policy::BodyNeed {
        self.store
            .current()
            .policy
            .body_needed(attrs, &self.identity)
    }

    /// The decision on a parsed request, with the bodies the pipeline read
    /// into the context, and the policy that made it (for wrappers such as
    /// approvals). Conditions that failed are counted and logged here, once
    /// per request.
    pub fn judge(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
    ) -> (Arc<LoadedPolicy>, policy::Decision) {
        let bodies = ctx
            .bodies
            .as_deref()
            .map(hooks::DecisionBodies::as_policy)
            .unwrap_or_default();
        let (loaded, d) = match &ctx.end_user {
            None => self.evaluate_with(attrs, &ctx.impersonation, bodies),
            Some(user) => {
                let who = Identity {
                    end_user: Some((**user).clone()),
                    ..(*self.identity).clone()
                };
                let loaded = self.store.current();
                let d =
                    policy::evaluate_with(&loaded.policy, attrs, &ctx.impersonation, &who, bodies);
                (loaded, d)
            }
        };
        for failure in &d.condition_errors {
            self.store.count_condition_error(&failure.rule);
            tracing::warn!(request_id = %ctx.request_id, rule = %failure.rule, error = %loggable(&failure.error), policy_hash = loaded.short_hash(), "policy condition failed: counted as matching for deny/approve, not for allow");
        }
        (loaded, d)
    }

    /// The pipeline's decision for the policy's decision `d` (logged).
    pub fn apply(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
        loaded: &LoadedPolicy,
        d: &policy::Decision,
    ) -> hooks::Decision {
        if d.action == policy::Action::Allow {
            tracing::debug!(request_id = %ctx.request_id, verb = %attrs.verb, resource = %attrs.resource_with_subresource(), namespace = %attrs.namespace, name = %attrs.name, decision = d.action.as_str(), rule = d.rule.as_deref().unwrap_or(""), enforced = d.enforced, policy_hash = loaded.short_hash(), "policy decision");
        } else {
            tracing::info!(request_id = %ctx.request_id, verb = %attrs.verb, resource = %attrs.resource_with_subresource(), namespace = %attrs.namespace, name = %attrs.name, decision = d.action.as_str(), rule = d.rule.as_deref().unwrap_or(""), enforced = d.enforced, policy_hash = loaded.short_hash(), why = %d.explanation, "policy decision");
        }
        hooks::Decision::from_policy(d, attrs, &ctx.impersonation)
    }
}

/// A condition's run-time error as logged: CEL's messages may quote values
/// of the body (`Unsupported binary operator '==': String(...)`), so only the
/// part before the first `": "` is kept (the operator, `No such key`...).
fn loggable(error: &str) -> &str {
    error.split(": ").next().unwrap_or(error)
}

impl DecideHook for PolicyDecider {
    fn bodies_needed(&self, ctx: &RequestContext) -> policy::BodyNeed {
        let Some(attrs) = &ctx.attrs else {
            return policy::BodyNeed::default();
        };
        match &ctx.end_user {
            None => self.body_needed(attrs),
            Some(user) => {
                let who = Identity {
                    end_user: Some((**user).clone()),
                    ..(*self.identity).clone()
                };
                self.store.current().policy.body_needed(attrs, &who)
            }
        }
    }

    fn decide<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, hooks::Decision> {
        let out = match &ctx.attrs {
            // The pipeline parses before deciding; never forward what was not judged.
            None => hooks::Decision::deny(None, "mcp-warden policy: the request was not parsed"),
            Some(attrs) => {
                let (loaded, d) = self.judge(ctx, attrs);
                self.apply(ctx, attrs, &loaded, &d)
            }
        };
        Box::pin(async move { out })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Re-reads on file events and every [`POLL_INTERVAL`]; runs until the task
/// is aborted.
async fn watch(store: Arc<PolicyStore>, path: PathBuf) {
    let mut changes = FileWatch::new(&[&path], "policy", POLL_INTERVAL, DEBOUNCE);
    loop {
        changes.changed().await;
        let s = store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || s.reload()).await {
            tracing::error!(error = %e, "policy reload task failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mcp_warden_shared::attrs::{Impersonation, parse_request};
    use mcp_warden_shared::identity::Identity;
    use mcp_warden_shared::policy::{Action, evaluate};
    use std::os::unix::fs::symlink;

    const HEAD: &str = "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\n";

    fn policy_allowing(verb: &str) -> String {
        format!(
            "{HEAD}rules:\n  - name: allow-{verb}\n    action: allow\n    verbs: [{verb}]\n    resources: [\"*\"]\n"
        )
    }

    /// Writes `content` the way the kubelet's AtomicWriter does: a fresh
    /// `..<timestamp>` directory, a `..data_tmp` symlink to it renamed over
    /// `..data`, then the old directory removed. `policy.yaml -> ..data/policy.yaml`
    /// is created once.
    struct KubeletVolume {
        dir: tempfile::TempDir,
        n: u32,
    }

    impl KubeletVolume {
        fn new() -> Self {
            KubeletVolume {
                dir: tempfile::tempdir().unwrap(),
                n: 0,
            }
        }

        fn file(&self) -> PathBuf {
            self.dir.path().join("policy.yaml")
        }

        fn write(&mut self, content: &str) {
            self.n += 1;
            let root = self.dir.path();
            let ts = format!(
                "..2026_11_21_23_{:02}_{:02}.{:09}",
                self.n / 60,
                self.n % 60,
                100_000 + self.n
            );
            std::fs::create_dir(root.join(&ts)).unwrap();
            std::fs::write(root.join(&ts).join("policy.yaml"), content).unwrap();
            let old = std::fs::read_link(root.join("..data")).ok();
            symlink(&ts, root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
            if !root.join("policy.yaml").exists() {
                symlink("..data/policy.yaml", root.join("policy.yaml")).unwrap();
            }
            if let Some(old) = old {
                std::fs::remove_dir_all(root.join(old)).unwrap();
            }
        }

        /// What the kubelet does when the key disappears from the ConfigMap.
        fn remove(&mut self) {
            let root = self.dir.path();
            std::fs::remove_file(root.join("policy.yaml")).unwrap();
        }
    }

    /// Wait (bounded) until `cond` holds; the bound only keeps a broken
    /// build from hanging, it is not a timing assertion.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn verdict(store: &PolicyStore, method: &str, path: &str) -> Action {
        let attrs = parse_request(method, path).unwrap();
        evaluate(
            &store.current().policy,
            &attrs,
            &Impersonation::default(),
            &Identity::service_account("a", "b"),
        )
        .action
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubelet_symlink_swaps_valid_and_invalid_alternating() {
        let mut vol = KubeletVolume::new();
        vol.write(&policy_allowing("create"));
        let (store, task) = PolicyStore::start(Some(vol.file())).unwrap();
        assert_eq!(store.current().source, PolicySource::File(vol.file()));
        assert_eq!(
            verdict(&store, "POST", "/api/v1/namespaces/x/pods"),
            Action::Allow
        );
        let first = store.current();

        let verbs = ["delete", "patch", "update", "get", "list"];
        for (i, verb) in verbs.iter().enumerate() {
            // A valid policy: swapped in.
            let ok_before = store.reloads_ok();
            vol.write(&policy_allowing(verb));
            let want =
                mcp_warden_shared::policy::Policy::parse("x", &policy_allowing(verb)).unwrap();
            eventually("valid policy swapped in", || {
                store.current().hash() == want.hash()
            })
            .await;
            assert_eq!(store.reloads_ok(), ok_before + 1);
            assert_eq!(store.last_error(), None);
            assert_eq!(store.current().generation, 2 + i as u64);

            // An invalid one: refused, counted once, reported; the valid one stays.
            let failed_before = store.reloads_failed();
            vol.write(&format!("{HEAD}rules:\n  - name: bad\n    action: allow\n    verbs: [fetch{i}]\n    resources: [\"*\"]\n"));
            eventually("invalid policy refused", || {
                store.reloads_failed() == failed_before + 1
            })
            .await;
            let err = store.last_error().unwrap();
            assert!(
                err.contains(":6:") && err.contains("rules[0].verbs[0]"),
                "{err}"
            );
            assert_eq!(store.current().hash(), want.hash());
            // Polling the same bad file again neither re-counts nor clears it.
            assert_eq!(store.reload(), ReloadOutcome::Unchanged);
            assert_eq!(store.reloads_failed(), failed_before + 1);
            assert!(store.last_error().is_some());
        }
        // The Arc taken before all swaps still holds the first policy.
        assert_eq!(first.generation, 1);
        assert_eq!(first.policy.rules[0].name, "allow-create");
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_file_means_embedded_default_and_is_picked_up_later() {
        let mut vol = KubeletVolume::new();
        let (store, task) = PolicyStore::start(Some(vol.file())).unwrap();
        assert_eq!(store.current().source, PolicySource::EmbeddedDefault);
        assert_eq!(store.current().hash(), Policy::embedded_default().hash());
        assert_eq!(
            verdict(&store, "DELETE", "/api/v1/namespaces/x/pods/p"),
            Action::Deny
        );

        vol.write(&policy_allowing("delete"));
        eventually("file picked up", || {
            store.current().source == PolicySource::File(vol.file())
        })
        .await;
        assert_eq!(
            verdict(&store, "DELETE", "/api/v1/namespaces/x/pods/p"),
            Action::Allow
        );

        vol.remove();
        eventually("back to the default", || {
            store.current().source == PolicySource::EmbeddedDefault
        })
        .await;
        assert_eq!(
            verdict(&store, "DELETE", "/api/v1/namespaces/x/pods/p"),
            Action::Deny
        );
        task.abort();
    }

    #[tokio::test]
    async fn no_path_is_the_embedded_default() {
        let (store, task) = PolicyStore::start(None).unwrap();
        assert_eq!(store.current().source, PolicySource::EmbeddedDefault);
        assert_eq!(store.reload(), ReloadOutcome::Unchanged);
        assert_eq!(
            verdict(&store, "GET", "/api/v1/namespaces/x/pods"),
            Action::Allow
        );
        task.await.unwrap();
    }

    #[tokio::test]
    async fn invalid_or_unreadable_file_at_start_is_an_error() {
        let mut vol = KubeletVolume::new();
        vol.write(&format!("{HEAD}mode: strict\n"));
        let err = PolicyStore::start(Some(vol.file()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MCP_WARDEN_POLICY_FILE") && err.contains(":3:") && err.contains("mode"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = PolicyStore::start(Some(dir.path().to_path_buf()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn embedded_default_masking_compiles() {
        assert!(Policy::embedded_default().masking.compile().is_ok());
        let l = embedded(1).unwrap();
        assert_eq!(l.short_hash().len(), 12);
    }

    #[test]
    fn oversized_file_is_refused_and_the_old_policy_stays() {
        let mut vol = KubeletVolume::new();
        vol.write(&policy_allowing("get"));
        let store = PolicyStore::load(Some(vol.file())).unwrap();
        let big = format!(
            "{}\n#{}\n",
            policy_allowing("get"),
            "x".repeat(MAX_POLICY_BYTES as usize)
        );
        vol.write(&big);
        assert_eq!(store.reload(), ReloadOutcome::Rejected);
        assert!(store.last_error().unwrap().contains("larger than"));
        assert_eq!(store.current().policy.rules[0].name, "allow-get");
        // Fixing the file clears the error.
        vol.write(&policy_allowing("list"));
        assert!(matches!(store.reload(), ReloadOutcome::Swapped { .. }));
        assert_eq!(store.last_error(), None);
        // Writing back the same content as the current policy is no swap.
        vol.write(&policy_allowing("list"));
        assert_eq!(store.reload(), ReloadOutcome::Unchanged);
    }

    #[test]
    fn metrics_and_readiness_follow_reloads() {
        let mut vol = KubeletVolume::new();
        vol.write(&policy_allowing("get"));
        let store = PolicyStore::load(Some(vol.file())).unwrap();
        let metrics = Metrics::new();
        let readiness = Arc::new(Readiness::new());
        store.register_metrics(&metrics);
        store.attach_readiness(readiness.clone());
        let first = store.current().short_hash().to_string();
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "mcp_warden_policy_info{{hash=\"{first}\",source=\"file\",mode=\"enforce\"}} 1"
            )),
            "{text}"
        );
        assert_eq!(readiness.report().1.get("policy"), Some(&Check::Ok));

        vol.write(&format!("{HEAD}mode: sometimes\n"));
        assert_eq!(store.reload(), ReloadOutcome::Rejected);
        let text = metrics.encode();
        assert!(
            text.contains("mcp_warden_policy_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcp_warden_policy_last_reload_failed 1"),
            "{text}"
        );
        match readiness.report().1.get("policy") {
            Some(Check::Warning(w)) => assert!(
                w.contains(&first) && w.contains(":3:") && w.contains("mode"),
                "{w}"
            ),
            other => panic!("{other:?}"),
        }
        // A warning does not make the sidecar unready.
        assert!(!matches!(
            readiness.report().1.get("policy"),
            Some(Check::Failing(_))
        ));

        vol.write(&policy_allowing("list"));
        assert!(matches!(store.reload(), ReloadOutcome::Swapped { .. }));
        let second = store.current().short_hash().to_string();
        let text = metrics.encode();
        assert!(
            text.contains("mcp_warden_policy_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcp_warden_policy_last_reload_failed 0"),
            "{text}"
        );
        assert!(
            text.contains(&format!("hash=\"{second}\""))
                && !text.contains(&format!("hash=\"{first}\"")),
            "{text}"
        );
        assert_eq!(readiness.report().1.get("policy"), Some(&Check::Ok));

        // Refused, then the file goes back to the policy in effect: the warning clears.
        vol.write("not: [valid\n");
        assert_eq!(store.reload(), ReloadOutcome::Rejected);
        vol.write(&policy_allowing("list"));
        assert_eq!(store.reload(), ReloadOutcome::Unchanged);
        assert_eq!(store.last_error(), None);
        assert_eq!(readiness.report().1.get("policy"), Some(&Check::Ok));
    }

    #[test]
    fn decider_maps_decisions_to_the_proxy() {
        let mut vol = KubeletVolume::new();
        vol.write(include_str!("../../tests/fixtures/policies/example.yaml"));
        let store = Arc::new(PolicyStore::load(Some(vol.file())).unwrap());
        let decider = PolicyDecider::new(store.clone(), Identity::service_account("agents", "mcp"));
        let none = Impersonation::default();

        let attrs = parse_request("GET", "/api/v1/namespaces/prod-eu/secrets/db").unwrap();
        let (loaded, d) = decider.evaluate(&attrs, &none);
        assert_eq!(loaded.hash(), store.current().hash());
        let hd = hooks::Decision::from_policy(&d, &attrs, &none);
        assert_eq!(hd.action, policy::Action::Deny);
        assert_eq!(hd.rule.as_deref(), Some("no-secrets-in-prod"));
        let st = hd.refusal.unwrap().status();
        assert_eq!(st.code(), 403);
        let v = st.to_value();
        assert_eq!(v["reason"], "Forbidden");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("no-secrets-in-prod") && msg.contains("off limits"),
            "{msg}"
        );

        let attrs = parse_request("DELETE", "/api/v1/namespaces/dev/pods/web-0").unwrap();
        let (_, d) = decider.evaluate(&attrs, &none);
        let hd = hooks::Decision::from_policy(&d, &attrs, &none);
        assert_eq!(hd.action, policy::Action::Approve);
        let v = hd.refusal.unwrap().status().to_value();
        assert!(v["message"].as_str().unwrap().contains("approval required"));

        let attrs = parse_request("GET", "/api/v1/namespaces/dev/pods").unwrap();
        let (_, d) = decider.evaluate(&attrs, &none);
        let hd = hooks::Decision::from_policy(&d, &attrs, &none);
        assert_eq!(
            (hd.action, hd.refusal.is_none(), hd.forward_impersonation),
            (policy::Action::Allow, true, false)
        );

        // Impersonation denied: refused, headers not forwarded.
        let imp = Impersonation {
            user: Some("jane".into()),
            ..Impersonation::default()
        };
        let (_, d) = decider.evaluate(&attrs, &imp);
        let hd = hooks::Decision::from_policy(&d, &attrs, &imp);
        assert!(hd.refusal.is_some() && !hd.forward_impersonation);

        // Audit mode: nothing refused, impersonation forwarded, decision kept.
        vol.write(
            &include_str!("../../tests/fixtures/policies/example.yaml")
                .replace("mode: enforce", "mode: audit"),
        );
        assert!(matches!(store.reload(), ReloadOutcome::Swapped { .. }));
        let (_, d) = decider.evaluate(&attrs, &imp);
        let hd = hooks::Decision::from_policy(&d, &attrs, &imp);
        assert_eq!(
            (
                hd.action,
                hd.enforced,
                hd.refusal.is_none(),
                hd.forward_impersonation
            ),
            (policy::Action::Deny, false, true, true)
        );
    }

    #[test]
    fn decider_reads_bodies_and_counts_condition_errors() {
        let mut vol = KubeletVolume::new();
        vol.write(&format!(
            "{HEAD}defaultAction: allow\nrules:\n  - name: no-zero\n    action: deny\n    verbs: [patch]\n    resources: [deployments]\n    when: object.spec.replicas == 0\n  - name: keep-protected\n    action: deny\n    verbs: [delete]\n    resources: [deployments]\n    when: has(oldObject.metadata.labels)\n"
        ));
        let store = Arc::new(PolicyStore::load(Some(vol.file())).unwrap());
        let metrics = Metrics::new();
        store.register_metrics(&metrics);
        let decider = PolicyDecider::new(store.clone(), Identity::service_account("agents", "mcp"));
        let ctx = |method: http::Method, path: &str, bodies: Option<hooks::DecisionBodies>| {
            RequestContext {
                request_id: uuid::Uuid::new_v4(),
                started: std::time::Instant::now(),
                received_at: SystemTime::now(),
                peer: "127.0.0.1:1".parse().unwrap(),
                method: method.clone(),
                path_and_query: path.into(),
                user_agent: None,
                attrs: Some(parse_request(method.as_str(), path).unwrap()),
                impersonation: Default::default(),
                end_user: None,
                bodies: bodies.map(Arc::new),
                decision: None,
                is_upgrade: false,
                is_stream: false,
            }
        };
        let path = "/apis/apps/v1/namespaces/p/deployments/web";

        // A GET needs nothing; a patch needs its body; a delete the live object.
        let get = ctx(http::Method::GET, path, None);
        assert_eq!(decider.bodies_needed(&get), policy::BodyNeed::default());
        let patch = ctx(
            http::Method::PATCH,
            path,
            Some(hooks::DecisionBodies {
                object: Some(serde_json::json!({"spec": {"replicas": 0}})),
                old_object: None,
                ..Default::default()
            }),
        );
        assert_eq!(
            decider.bodies_needed(&patch),
            policy::BodyNeed {
                object: true,
                old_object: false
            }
        );
        let d = futures::executor::block_on(decider.decide(&patch));
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (policy::Action::Deny, Some("no-zero"))
        );
        assert_eq!(store.condition_errors(), 0);

        // No body (not decodable): the deny rule's condition fails closed,
        // counted by rule.
        let patch = ctx(http::Method::PATCH, path, None);
        let d = futures::executor::block_on(decider.decide(&patch));
        assert_eq!(
            (d.action, d.rule.as_deref()),
            (policy::Action::Deny, Some("no-zero"))
        );
        let delete = ctx(http::Method::DELETE, path, None);
        assert_eq!(
            decider.bodies_needed(&delete),
            policy::BodyNeed {
                object: false,
                old_object: true
            }
        );
        let d = futures::executor::block_on(decider.decide(&delete));
        assert_eq!(d.rule.as_deref(), Some("keep-protected"));
        assert_eq!(store.condition_errors(), 2);
        let text = metrics.encode();
        for rule in ["no-zero", "keep-protected"] {
            assert!(
                text.contains(&format!(
                    "mcp_warden_policy_condition_errors_total{{rule=\"{rule}\"}} 1"
                )),
                "{text}"
            );
        }
        // The live object without the label: allowed by the default.
        let delete = ctx(
            http::Method::DELETE,
            path,
            Some(hooks::DecisionBodies {
                object: None,
                old_object: Some(serde_json::json!({"metadata": {"name": "web"}})),
                ..Default::default()
            }),
        );
        let d = futures::executor::block_on(decider.decide(&delete));
        assert_eq!(d.action, policy::Action::Allow);
        assert_eq!(store.condition_errors(), 2);
    }

    #[test]
    fn logged_condition_errors_carry_no_values() {
        assert_eq!(
            loggable("Unsupported binary operator '==': String(\"s3cret\"), Int(1)"),
            "Unsupported binary operator '=='"
        );
        assert_eq!(loggable("No such key: spec"), "No such key");
    }
}
