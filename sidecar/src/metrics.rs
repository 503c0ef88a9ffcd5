//! Prometheus metrics of the sidecar, served on the admin port's `/metrics`.
//!
//! [`Metrics`] owns the registry; the proxy's own metrics are fields, and
//! other parts (policy reloads, recording) add theirs with
//! [`Metrics::register`] before or while the server runs.
//!
//! Label cardinality is bounded: the `resource` label of
//! `mcp_warden_requests_total` comes from the request path, which the app
//! chooses, so each verb gets its own budget of resource series, and part of
//! that budget is reserved for resources the sidecar answered successfully
//! (code below 400). Junk names (which the API server answers 404, or the
//! policy denies) fill only the rest, so they cannot push real resources into
//! `resource="_other"`, nor those of another verb.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Labels of `mcp_warden_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kubernetes verb (or `unknown` when the request was refused before parsing).
    pub verb: String,
    /// `resource` or `resource/subresource`; empty for non-resource URLs.
    pub resource: String,
    /// HTTP status code returned to the app.
    pub code: u16,
}

/// Labels of the per-listener connection metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name (`app`, `admin`, ...).
    pub listener: String,
}

/// Labels of `mcp_warden_connections_timed_out_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// Listener name.
    pub listener: String,
    /// `handshake`, `first_byte`, `header` or `idle`.
    pub phase: String,
}

/// Labels of the in-flight request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InflightLabels {
    /// `ordinary` or `long_running` (watch, follow, exec/attach/port-forward).
    pub kind: String,
}

/// Labels of the upstream latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// Kubernetes verb.
    pub verb: String,
}

fn latency_histogram() -> Histogram {
    // 1ms .. ~16s: an API call is milliseconds, a held approval is seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The sidecar's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests answered, by verb, resource and code.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from sending a request upstream to receiving its response headers.
    pub upstream_latency: Family<VerbLabels, Histogram, fn() -> Histogram>,
    /// Streams currently open: watches, followed logs, upgraded connections.
    pub open_streams: Gauge,
    /// Upstream requests that failed before a response (connect, TLS, reset).
    pub upstream_errors: Counter,
    /// Connections open, by listener.
    pub connections_open: Family<ListenerLabels, Gauge>,
    /// Connections closed at once because the listener's cap was reached.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// Connections closed by a timeout, by listener and phase.
    pub connections_timed_out: Family<TimeoutLabels, Counter>,
    /// Requests in flight (past the policy decision), by kind.
    pub inflight: Family<InflightLabels, Gauge>,
    /// Requests refused with 429 because their kind's cap was reached.
    pub inflight_refused: Family<InflightLabels, Counter>,
    /// Resources with their own series, per verb (see the module docs).
    seen_labels: Mutex<HashMap<String, VerbSeries>>,
}

/// Resources of one verb that have their own series.
#[derive(Debug, Default)]
struct VerbSeries {
    /// Resources first counted with a success (code < 400).
    answered: HashSet<String>,
    /// Resources first counted with an error (404 for junk names, 403, ...).
    unanswered: HashSet<String>,
}

/// Each verb gets at most this many resource series; later ones are counted
/// under `resource="_other"`.
pub const MAX_SERIES_PER_VERB: usize = 128;

/// Of [`MAX_SERIES_PER_VERB`], at most this many go to resources first seen
/// with an error: the rest is the reserve for resources that were answered.
pub const MAX_UNANSWERED_SERIES_PER_VERB: usize = 32;

/// At most this many verbs get their own series (parsing yields a closed
/// set, so this is only a backstop); others are counted as `verb="_other"`.
pub const MAX_VERBS: usize = 32;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the proxy's metrics under the `mcp_warden` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_warden");
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_latency =
            Family::<VerbLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let open_streams = Gauge::default();
        let upstream_errors = Counter::default();
        registry.register(
            "requests",
            "Requests answered by the sidecar, by verb, resource and code",
            requests.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding a request to receiving the upstream's response headers",
            upstream_latency.clone(),
        );
        registry.register(
            "open_streams",
            "Open long-running streams (watch, follow, upgraded)",
            open_streams.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream requests that failed without a response",
            upstream_errors.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        let connections_timed_out = Family::<TimeoutLabels, Counter>::default();
        let inflight = Family::<InflightLabels, Gauge>::default();
        let inflight_refused = Family::<InflightLabels, Counter>::default();
        registry.register(
            "connections_open",
            "Connections open, by listener",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener's connection cap was reached",
            connections_refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by a timeout (handshake, first_byte, header, idle), by listener",
            connections_timed_out.clone(),
        );
        registry.register(
            "inflight_requests",
            "Requests in flight past the policy decision, by kind (ordinary, long_running)",
            inflight.clone(),
        );
        registry.register(
            "inflight_refused",
            "Requests refused with 429 because the cap of their kind was reached",
            inflight_refused.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            upstream_latency,
            open_streams,
            upstream_errors,
            connections_open,
            connections_refused,
            connections_timed_out,
            inflight,
            inflight_refused,
            seen_labels: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a metric (prefixed `mcp_warden_`). Metrics are cheap handles:
    /// keep a clone and update it; the registry reads the same value.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let mut g = match self.registry.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.register(name, help, metric);
    }

    /// Runs `f` on the underlying registry (prefix `mcp_warden`), for
    /// subsystems that register a group of metrics at once.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut g = match self.registry.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// Counts one answered request.
    pub fn count_request(&self, verb: &str, resource: &str, code: u16) {
        let (verb, resource) = self.series_labels(verb, resource, code);
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                resource,
                code,
            })
            .inc();
    }

    /// The `(verb, resource)` labels a request is counted under: its own,
    /// or `_other` when its verb's budget (see the module docs) is spent.
    fn series_labels(&self, verb: &str, resource: &str, code: u16) -> (String, String) {
        const OTHER: &str = "_other";
        let mut seen = match self.seen_labels.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !seen.contains_key(verb) && seen.len() >= MAX_VERBS {
            return (OTHER.to_string(), OTHER.to_string());
        }
        // Looked up before `entry`, which would copy the verb for every
        // request: nearly every request's labels are known already.
        if seen
            .get(verb)
            .is_some_and(|s| s.answered.contains(resource) || s.unanswered.contains(resource))
        {
            return (verb.to_string(), resource.to_string());
        }
        let series = seen.entry(verb.to_string()).or_default();
        let used = series.answered.len() + series.unanswered.len();
        let admitted = if code < 400 {
            used < MAX_SERIES_PER_VERB && series.answered.insert(resource.to_string())
        } else {
            // Errors may use only their share, never the answered reserve.
            series.unanswered.len() < MAX_UNANSWERED_SERIES_PER_VERB
                && used < MAX_SERIES_PER_VERB
                && series.unanswered.insert(resource.to_string())
        };
        if admitted {
            (verb.to_string(), resource.to_string())
        } else {
            (verb.to_string(), OTHER.to_string())
        }
    }

    /// The open-connections gauge of `listener`.
    pub fn connections_open(&self, listener: &str) -> Gauge {
        self.connections_open
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .clone()
    }

    /// The refused-connections counter of `listener`.
    pub fn connections_refused(&self, listener: &str) -> Counter {
        self.connections_refused
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .clone()
    }

    /// Counts a connection of `listener` closed by the timeout of `phase`.
    pub fn connection_timed_out(&self, listener: &str, phase: &str) {
        self.connections_timed_out
            .get_or_create(&TimeoutLabels {
                listener: listener.to_string(),
                phase: phase.to_string(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics text, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let g = match self.registry.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &g).is_err() {
            out.clear();
        }
        out
    }
}

/// Increments [`Metrics::open_streams`] while alive.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl StreamGuard {
    /// Counts a stream as open until the guard is dropped.
    pub fn new(m: &Metrics) -> Self {
        m.open_streams.inc();
        StreamGuard(m.open_streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_series_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_SERIES_PER_VERB + 10) {
            m.count_request("get", &format!("r{i}"), 200);
        }
        m.count_request("get", "r0", 200);
        let text = m.encode();
        assert!(
            text.contains(r#"resource="_other",code="200"} 10"#),
            "{text}"
        );
        assert!(text.contains(r#"resource="r0",code="200"} 2"#));
        for i in 0..(MAX_VERBS + 5) {
            m.count_request(&format!("v{i}"), "pods", 200);
        }
        let text = m.encode();
        assert!(
            text.contains(r#"verb="_other",resource="_other",code="200"} 6"#),
            "{text}"
        );
    }

    #[test]
    fn junk_names_cannot_push_real_resources_into_other() {
        let m = Metrics::new();
        // An app floods every verb with made-up resource names, which the
        // API server answers 404 (or the policy denies).
        for verb in ["get", "list", "watch", "create", "delete"] {
            for i in 0..2000 {
                m.count_request(verb, &format!("junk{i}"), 404);
                m.count_request(verb, &format!("junk-denied{i}"), 403);
            }
        }
        // Real resources, answered successfully, still get their own series.
        for (verb, resource) in [
            ("get", "pods"),
            ("list", "pods"),
            ("watch", "configmaps"),
            ("create", "deployments"),
            ("delete", "pods"),
            ("get", "pods/log"),
        ] {
            m.count_request(verb, resource, 200);
            // Later errors on a real resource stay in its series too.
            m.count_request(verb, resource, 404);
            let text = m.encode();
            for code in [200, 404] {
                let want = format!(
                    r#"mcp_warden_requests_total{{verb="{verb}",resource="{resource}",code="{code}"}} 1"#
                );
                assert!(text.contains(&want), "{want} missing");
            }
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("mcp_warden_requests_total{"))
            .count();
        assert!(
            series <= 5 * (MAX_SERIES_PER_VERB + 2) + 1,
            "{series} series"
        );
    }

    #[test]
    fn encodes_requests_and_custom_metrics() {
        let m = Metrics::new();
        m.count_request("get", "pods", 200);
        m.upstream_latency
            .get_or_create(&VerbLabels { verb: "get".into() })
            .observe(0.002);
        let c = Counter::<u64>::default();
        m.register("policy_reload_errors", "Invalid policies seen", c.clone());
        c.inc();
        {
            let _g = StreamGuard::new(&m);
            assert!(m.encode().contains("mcp_warden_open_streams 1"));
        }
        let text = m.encode();
        assert!(
            text.contains(r#"mcp_warden_requests_total{verb="get",resource="pods",code="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("mcp_warden_policy_reload_errors_total 1"));
        assert!(text.contains("mcp_warden_open_streams 0"));
        assert!(text.contains("mcp_warden_upstream_latency_seconds_bucket"));
    }
}
