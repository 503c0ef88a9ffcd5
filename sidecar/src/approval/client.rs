//! The AccessRequest API as the decider uses it: kube's typed
//! `Api<AccessRequest>` in the pod's namespace, reached with the sidecar's
//! upstream URL, CA file and real token (the token file is re-read, so a
//! kubelet rotation is followed). Every call is bounded by [`CALL_TIMEOUT`];
//! waiting for a decision is a kube watcher on the one object.
//!
//! Status updates send the object as last read, `metadata.resourceVersion`
//! included, so the server applies them only to that version (a
//! compare-and-swap: two requests cannot both consume one approval).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use http::{HeaderValue, header};
use kube::Resource;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::watch_object;
use mcp_warden_shared::access_request::{AccessRequest, State};

use super::access_request::{Outcome, outcome_of};
use super::{ApprovalError, CALL_TIMEOUT};
use crate::config::Config;

/// The AccessRequests of the pod's namespace.
pub struct AccessRequests {
    config: kube::Config,
    namespace: String,
    /// `/apis/mcp-warden.io/v1alpha1/namespaces/NS/accessrequests`, for errors.
    collection: String,
    /// Built on first use: a kube client starts its request buffer on the
    /// async runtime, which the constructor may be called outside of.
    api: Mutex<Option<Api<AccessRequest>>>,
}

impl std::fmt::Debug for AccessRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequests")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn setup_error(e: kube::Error) -> ApprovalError {
    match e {
        kube::Error::Auth(e) => ApprovalError::Token(e.to_string()),
        e => ApprovalError::Setup(e.to_string()),
    }
}

impl AccessRequests {
    /// The client for `sidecar`'s upstream, in `sidecar.namespace()`.
    pub fn new(sidecar: &Config) -> Result<Self, ApprovalError> {
        let namespace = sidecar.namespace();
        let mut config = kube::Config::new(sidecar.upstream.clone());
        config.default_namespace = namespace.clone();
        config.root_cert = Some(
            crate::forward::load_certs(&sidecar.upstream_ca_file)
                .map_err(|e| ApprovalError::Setup(e.to_string()))?
                .into_iter()
                .map(|c| c.to_vec())
                .collect(),
        );
        config.connect_timeout = Some(sidecar.upstream_connect_timeout);
        // kube re-reads the file at least once a minute and keeps the last
        // token when a read fails; the kubelet's old token stays valid well
        // past its rotation.
        config.auth_info.token_file = Some(
            sidecar
                .upstream_token_file
                .to_str()
                .ok_or_else(|| {
                    ApprovalError::Token(format!(
                        "{}: the path is not UTF-8",
                        sidecar.upstream_token_file.display()
                    ))
                })?
                .to_string(),
        );
        // No retries inside a call: each is bounded by CALL_TIMEOUT and a
        // failure fails closed (the app's request is refused).
        config.default_retry = false;
        config.headers.push((
            header::USER_AGENT,
            HeaderValue::from_static("mcp-warden-sidecar/approvals"),
        ));
        // A bad CA shows here, at start. The token file is read at first
        // use, as the forwarder reads it: a missing token fails requests,
        // not the start.
        let mut probe = config.clone();
        probe.auth_info = Default::default();
        kube::client::ClientBuilder::try_from(probe).map_err(setup_error)?;
        Ok(AccessRequests {
            collection: AccessRequest::url_path(&(), Some(&namespace)),
            config,
            namespace,
            api: Mutex::new(None),
        })
    }

    /// The typed API (built on first use).
    pub(super) fn api(&self) -> Result<Api<AccessRequest>, ApprovalError> {
        let mut api = self.api.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = api.as_ref() {
            return Ok(a.clone());
        }
        let client = kube::Client::try_from(self.config.clone()).map_err(setup_error)?;
        let a = Api::namespaced(client, &self.namespace);
        *api = Some(a.clone());
        Ok(a)
    }

    /// The kube client behind the API (upstream URL, CA, the sidecar's
    /// token), for the preview's raw calls.
    pub fn kube_client(&self) -> Result<kube::Client, ApprovalError> {
        Ok(self.api()?.into_client())
    }

    /// The namespace the AccessRequests live in (the pod's).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn path(&self, name: &str, sub: &str) -> String {
        let mut p = self.collection.clone();
        for part in [name, sub] {
            if !part.is_empty() {
                p.push('/');
                p.push_str(part);
            }
        }
        p
    }

    /// Runs one call, bounded by [`CALL_TIMEOUT`].
    async fn call<T, F>(
        &self,
        method: &'static str,
        path: String,
        call: impl FnOnce(Api<AccessRequest>) -> F,
    ) -> Result<T, ApprovalError>
    where
        F: Future<Output = Result<T, kube::Error>>,
    {
        let api = self.api()?;
        match tokio::time::timeout(CALL_TIMEOUT, call(api)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(s))) => Err(ApprovalError::Api {
                method,
                path,
                code: s.code,
                message: s.message,
            }),
            Ok(Err(e)) => Err(ApprovalError::Call {
                method,
                path,
                message: e.to_string(),
            }),
            Err(_) => Err(ApprovalError::Call {
                method,
                path,
                message: format!("no answer within {CALL_TIMEOUT:?}"),
            }),
        }
    }

    /// Creates `obj` (named by the server from its `generateName`).
    pub async fn create(&self, obj: &AccessRequest) -> Result<AccessRequest, ApprovalError> {
        self.call("POST", self.path("", ""), |api| async move {
            api.create(&PostParams::default(), obj).await
        })
        .await
    }

    /// Sets `status.state` (and a non-empty `reason`) on `obj` as last read:
    /// refused with 409 when it changed since.
    pub async fn set_status(
        &self,
        obj: &AccessRequest,
        state: State,
        reason: &str,
    ) -> Result<AccessRequest, ApprovalError> {
        let name = obj.name();
        let new = obj.with_state(state, reason);
        self.call("PUT", self.path(name, "status"), |api| async move {
            api.replace_status(name, &PostParams::default(), &new).await
        })
        .await
    }

    /// Every AccessRequest of the namespace.
    pub async fn list(&self) -> Result<Vec<AccessRequest>, ApprovalError> {
        self.call("GET", self.path("", ""), |api| async move {
            api.list(&ListParams::default()).await
        })
        .await
        .map(|l| l.items)
    }

    /// Waits until `current` is decided, deleted or used, or `deadline`
    /// passes; returns how it ended and the object as last seen. While the
    /// API is unreachable the watch is retried (see [`Retry`]).
    pub async fn wait(
        &self,
        mut current: AccessRequest,
        deadline: tokio::time::Instant,
    ) -> (Outcome, AccessRequest) {
        if let Some(o) = outcome_of(&current) {
            return (o, current);
        }
        let name = current.name().to_string();
        let api = match self.api() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(access_request = %name, error = %e, "cannot watch the AccessRequest");
                tokio::time::sleep_until(deadline).await;
                return (Outcome::TimedOut, current);
            }
        };
        let events = watch_object(api, &name).backoff(Retry::default());
        let mut events = std::pin::pin!(events);
        loop {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => return (Outcome::TimedOut, current),
                // A watcher does not end; should it, the deadline decides.
                Ok(None) => {
                    tokio::time::sleep_until(deadline).await;
                    return (Outcome::TimedOut, current);
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(access_request = %name, error = %e, "watching the AccessRequest")
                }
                Ok(Some(Ok(None))) => return (Outcome::Deleted, current),
                Ok(Some(Ok(Some(obj)))) => {
                    current = obj;
                    if let Some(o) = outcome_of(&current) {
                        return (o, current);
                    }
                }
            }
        }
    }
}

/// Pause before re-establishing a failed watch: 200 ms, doubling up to 5 s,
/// so a decision is seen soon after the API is back.
#[derive(Debug, Clone)]
pub(super) struct Retry {
    next: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(200);
    pub(super) const MAX: Duration = Duration::from_secs(5);
}

impl Default for Retry {
    fn default() -> Self {
        Retry { next: Self::FIRST }
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        Some(d)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sidecar(dir: &std::path::Path) -> Config {
        let (ca, token) = (dir.join("ca.crt"), dir.join("token"));
        crate::config::Cli::try_parse_from([
            "mcp-warden-sidecar",
            "--upstream",
            "https://127.0.0.1:1",
            "--upstream-ca-file",
            ca.to_str().unwrap(),
            "--upstream-token-file",
            token.to_str().unwrap(),
            "--pod-namespace",
            "agents",
        ])
        .unwrap()
        .serve
        .validate()
        .unwrap()
    }

    #[tokio::test]
    async fn a_bad_ca_fails_the_start_a_missing_token_only_the_calls() {
        let d = tempfile::tempdir().unwrap();
        let config = sidecar(d.path());
        std::fs::write(&config.upstream_ca_file, "no certificates here").unwrap();
        assert!(matches!(
            AccessRequests::new(&config),
            Err(ApprovalError::Setup(_))
        ));
        let ca = mcp_warden_io::pki::LocalCa::generate(&mcp_warden_io::pki::CaProfile::new(
            "test upstream CA",
        ))
        .unwrap();
        std::fs::write(&config.upstream_ca_file, &ca.cert_pem).unwrap();
        let api = AccessRequests::new(&config).unwrap();
        assert_eq!(api.namespace(), "agents");
        assert_eq!(
            api.path("x", "status"),
            "/apis/mcp-warden.io/v1alpha1/namespaces/agents/accessrequests/x/status"
        );
        let e = api.list().await.unwrap_err();
        assert!(matches!(e, ApprovalError::Token(_)), "{e}");
    }

    #[test]
    fn retries_back_off_and_reset() {
        let mut r = Retry::default();
        let first: Vec<Duration> = r.by_ref().take(7).collect();
        assert_eq!(first[0], Duration::from_millis(200));
        assert_eq!(first[1], Duration::from_millis(400));
        assert_eq!(first[6], Duration::from_secs(5));
        r.reset();
        assert_eq!(r.next(), Some(Duration::from_millis(200)));
    }
}
