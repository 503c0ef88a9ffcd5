//! Caps on requests in flight past the policy decision, which bound the
//! sidecar's concurrent upstream connections: one cap for ordinary requests
//! (`--max-inflight-requests`) and one for long-running ones
//! (`--max-long-running-requests`: watches, followed logs, exec/attach/
//! port-forward tunnels — each holds an upstream connection of its own).
//!
//! Past a cap the request is answered the way kube-apiserver answers past
//! `--max-requests-inflight`: `429` with a `Status` of reason
//! `TooManyRequests`, `details.retryAfterSeconds` and a `Retry-After` header
//! (client-go waits and retries by itself). The permit is held until the
//! response body ends, or for a tunnel until its connection closes (through
//! [`crate::listener::HoldUntilClosed`]).

use std::sync::Arc;

use http::{Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Refusal;
use crate::hooks::{ProxyBody, RequestContext, boxed};
use crate::listener::{HoldUntilClosed, Holding};
use crate::metrics::{InflightLabels, Metrics};

/// One kind's cap.
#[derive(Debug, Clone)]
struct Cap {
    kind: &'static str,
    flag: &'static str,
    max: usize,
    slots: Arc<Semaphore>,
    gauge: Gauge,
    refused: Counter,
}

impl Cap {
    fn new(kind: &'static str, flag: &'static str, max: usize, metrics: &Metrics) -> Self {
        let labels = InflightLabels {
            kind: kind.to_string(),
        };
        Cap {
            kind,
            flag,
            max,
            slots: Arc::new(Semaphore::new(max)),
            gauge: metrics.inflight.get_or_create(&labels).clone(),
            refused: metrics.inflight_refused.get_or_create(&labels).clone(),
        }
    }
}

/// The two caps; cheap to clone.
#[derive(Debug, Clone)]
pub struct Inflight {
    ordinary: Cap,
    long_running: Cap,
}

/// A request's place under its cap, released when dropped.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// An admitted request: attach it to the response with [`Admitted::hold`].
#[derive(Debug)]
pub struct Admitted(Arc<Permit>);

impl Inflight {
    /// Caps of `max_requests` ordinary and `max_long_running` long-running
    /// requests, with their metrics in `metrics`.
    pub fn new(max_requests: usize, max_long_running: usize, metrics: &Metrics) -> Self {
        Inflight {
            ordinary: Cap::new("ordinary", "--max-inflight-requests", max_requests, metrics),
            long_running: Cap::new(
                "long_running",
                "--max-long-running-requests",
                max_long_running,
                metrics,
            ),
        }
    }

    /// Takes a place for the request of `ctx` (long-running when it is a
    /// stream or an upgrade), or refuses it with 429.
    pub fn admit(&self, ctx: &RequestContext) -> Result<Admitted, Refusal> {
        let cap = if ctx.is_stream || ctx.is_upgrade {
            &self.long_running
        } else {
            &self.ordinary
        };
        match cap.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                cap.gauge.inc();
                Ok(Admitted(Arc::new(Permit {
                    _slot: slot,
                    gauge: cap.gauge.clone(),
                })))
            }
            Err(_) => {
                cap.refused.inc();
                Err(Refusal::TooManyInFlight {
                    long_running: cap.kind == "long_running",
                    max: cap.max,
                    flag: cap.flag,
                })
            }
        }
    }
}

impl Admitted {
    /// Keeps the place until `resp`'s body ends, or, for a `101`, until the
    /// upgraded connection closes.
    pub fn hold(self, mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            resp.extensions_mut()
                .insert(HoldUntilClosed(self.0.clone()));
        }
        resp.map(|b| boxed(Holding::new(b, self.0)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::{Instant, SystemTime};

    fn ctx(stream: bool) -> RequestContext {
        RequestContext {
            request_id: uuid::Uuid::new_v4(),
            started: Instant::now(),
            received_at: SystemTime::now(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            method: http::Method::GET,
            path_and_query: "/api/v1/pods".into(),
            user_agent: None,
            attrs: None,
            impersonation: Default::default(),
            end_user: None,
            bodies: None,
            decision: None,
            is_upgrade: false,
            is_stream: stream,
        }
    }

    fn status_of(r: Response<ProxyBody>) -> Response<ProxyBody> {
        assert_eq!(r.status(), StatusCode::OK);
        r
    }

    #[tokio::test]
    async fn past_the_cap_is_a_429_until_a_place_frees() {
        let m = Metrics::new();
        let caps = Inflight::new(5, 2, &m);
        let w1 = caps.admit(&ctx(true)).unwrap();
        let w2 = caps.admit(&ctx(true)).unwrap();
        let Err(refusal) = caps.admit(&ctx(true)) else {
            panic!("third watch admitted")
        };
        let s = refusal.status();
        assert_eq!(s.code(), 429);
        assert_eq!(s.reason.as_str(), "TooManyRequests");
        assert!(
            s.message.contains("--max-long-running-requests"),
            "{}",
            s.message
        );
        // Ordinary requests have their own cap.
        let o = caps.admit(&ctx(false)).unwrap();
        drop(o);
        // A watch's place is held by its response body.
        let resp = w1.hold(Response::new(crate::hooks::full("x")));
        drop(w2);
        let w3 = caps.admit(&ctx(true)).unwrap();
        assert!(
            caps.admit(&ctx(true)).is_err(),
            "the held place is still taken"
        );
        let resp = status_of(resp);
        drop(w3);
        let text = m.encode();
        assert!(
            text.contains(r#"mcp_warden_inflight_refused_total{kind="long_running"} 2"#),
            "{text}"
        );
        drop(resp);
        let text = m.encode();
        let resp = refusal.response();
        assert_eq!(resp.headers()["retry-after"], "1");
        assert!(
            text.contains(r#"mcp_warden_inflight_requests{kind="long_running"} 0"#),
            "{text}"
        );
    }
}
