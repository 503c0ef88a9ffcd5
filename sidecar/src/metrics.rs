//! Prometheus metrics of the sidecar, served on the admin port's `/metrics`.
//!
//! [`Metrics`] owns the registry; the proxy's own metrics are fields, and
//! other parts (policy reloads, recording) add theirs with
//! [`Metrics::register`] before or while the server runs.

use std::collections::HashSet;
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
    /// `(verb, resource)` pairs seen, to bound the label cardinality: the
    /// resource comes from the request path, which the app chooses.
    seen_labels: Mutex<HashSet<(String, String)>>,
}

/// At most this many distinct `(verb, resource)` pairs get their own series;
/// later ones are counted under `resource="_other"`.
pub const MAX_REQUEST_SERIES: usize = 512;

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
        Metrics {
            registry: Mutex::new(registry),
            requests,
            upstream_latency,
            open_streams,
            upstream_errors,
            seen_labels: Mutex::new(HashSet::new()),
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
        let resource = {
            let mut seen = match self.seen_labels.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let key = (verb.to_string(), resource.to_string());
            if seen.contains(&key) || seen.len() < MAX_REQUEST_SERIES {
                seen.insert(key);
                resource.to_string()
            } else {
                "_other".to_string()
            }
        };
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource,
                code,
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
        for i in 0..(MAX_REQUEST_SERIES + 10) {
            m.count_request("get", &format!("r{i}"), 200);
        }
        m.count_request("get", "r0", 200);
        let text = m.encode();
        assert!(
            text.contains(r#"resource="_other",code="200"} 10"#),
            "{text}"
        );
        assert!(text.contains(r#"resource="r0",code="200"} 2"#));
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
