//! Assembly: builds the policy, masking and recording hooks from the
//! validated [`Config`] and runs the proxy with them. This is what the binary
//! runs; tests that want the bare proxy call [`crate::run`] instead.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use mcp_warden_shared::identity::{self, Identity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{CollectorFormat, Config, RecordingFailureMode};
use crate::hooks::{Hooks, RecordHook, RequestContext, TunnelIo, TunnelTap};
use crate::mask_body::{MaskTransform, MaskerSource, TokenScrub};
use crate::policy_store::{PolicyDecider, PolicyStore};
use crate::recording::asciicast::SessionTap;
use crate::recording::hook::{LevelSource, PolicyHashSource, RecordingHook};
use crate::recording::{self, OnFailure, Recorder, RecordingConfig};
use crate::{Extensions, Metrics, Readiness, RunError};

/// Runs the sidecar as deployed: the policy from `--policy-file` (hot
/// reloaded; the embedded default when the file is missing), masking from
/// that policy, and recording to `--collector-url` through `--spool-dir`.
pub async fn run_configured(
    listener: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new());
    // The recorder's sender stops when shutdown begins; events of requests
    // that finish during the grace period stay in the spool, and the next
    // start sends them (delivery is at least once, never lost).
    let stop = CancellationToken::new();

    let (store, _policy_task) = PolicyStore::start(Some(config.policy_file.clone()))?;
    store.register_metrics(&metrics);
    store.attach_readiness(readiness.clone());

    let identity = pod_identity(&config);
    let recorder_cfg = recording_config(&config);
    let (recorder, _recording_task) =
        Recorder::start(recorder_cfg, stop.clone().cancelled_owned())?;
    metrics.with_registry(|r| recorder.register_metrics_with_prefix(r, "recording"));
    {
        let recorder = recorder.clone();
        readiness.set_live("recording", Arc::new(move || recorder.readiness_check()));
    }

    let masker: MaskerSource = {
        let store = store.clone();
        Arc::new(move || store.current().masker.clone())
    };
    let level: LevelSource = {
        let store = store.clone();
        Arc::new(move || store.current().policy.recording.level)
    };
    let policy_hash: PolicyHashSource = {
        let store = store.clone();
        Arc::new(move || store.current().short_hash().to_string())
    };
    let record = RecordingHook::new(
        recorder.clone(),
        identity.user_info(),
        masker.clone(),
        level,
        policy_hash,
    );

    // Approvals wrap the policy: `approve` decisions wait for a person.
    let decide = crate::approval::ApprovalDecider::new(
        PolicyDecider::new(store.clone(), identity.clone()),
        &config,
        &identity,
        config.approval.clone(),
    )
    .map_err(crate::config::ConfigError::from)?;
    // The masking reads the real token (its own source of the same file, so
    // it follows rotations) to scrub it from every response it passes on.
    let tokens: TokenScrub = {
        let source = Arc::new(crate::token::TokenSource::new(&config.upstream_token_file));
        Arc::new(move || source.scrub_set())
    };
    let hooks = Hooks {
        decide: Arc::new(decide),
        transform: Arc::new(MaskTransform::new(masker).with_token_scrub(tokens)),
        record: Arc::new(SessionRecording {
            hook: record,
            recorder,
        }),
    };
    let ext = Extensions {
        hooks,
        metrics,
        readiness,
    };
    let stopper = stop.clone();
    let result = crate::run_with(listener, admin, config, ext, async move {
        shutdown.await;
        stopper.cancel();
    })
    .await;
    stop.cancel();
    result
}

/// The pod's identity from the claims of its own (kubelet-issued) token.
/// Outside a pod the upstream token may not be a service-account JWT (an
/// admin token, kube-apisim's token): then the identity is named after the
/// pod settings so records still say who acted.
fn pod_identity(config: &Config) -> Identity {
    let raw = std::fs::read_to_string(&config.upstream_token_file).unwrap_or_default();
    match identity::from_service_account_jwt(raw.trim()) {
        Ok(id) => id,
        Err(e) => {
            let ns = config.namespace();
            let name = config
                .pod_name
                .clone()
                .unwrap_or_else(|| "unknown".to_string());
            tracing::warn!(error = %e, namespace = %ns, pod = %name,
                "the upstream token is not a service-account token; recording the pod as the user");
            Identity::user(&format!("mcp-warden:pod:{ns}/{name}"))
        }
    }
}

fn recording_config(config: &Config) -> RecordingConfig {
    let mut rc = RecordingConfig::new(config.spool_dir.clone());
    rc.spool_max_bytes = config.spool_max_bytes;
    rc.spool_sync = config.spool_sync;
    rc.on_failure = match config.on_recording_failure {
        RecordingFailureMode::FailClosed => OnFailure::FailClosed,
        RecordingFailureMode::Continue => OnFailure::Continue,
    };
    rc.collector_url = config.collector_url.clone();
    rc.format = match config.collector_format {
        CollectorFormat::Eventlist => recording::sender::CollectorFormat::EventList,
        CollectorFormat::Ndjson => recording::sender::CollectorFormat::Ndjson,
    };
    rc.ca_file = config.collector_ca_file.clone();
    rc.token_file = config.collector_token_file.clone();
    rc.client_cert_file = config.collector_client_cert_file.clone();
    rc.client_key_file = config.collector_client_key_file.clone();
    rc.cluster_name = config.cluster_name.clone();
    rc.pod = format!(
        "{}/{}",
        config.namespace(),
        config.pod_name.as_deref().unwrap_or("unknown")
    );
    rc
}

/// The recording hook plus exec/attach session casts.
struct SessionRecording {
    hook: RecordingHook,
    recorder: Recorder,
}

impl RecordHook for SessionRecording {
    fn request<'a>(
        &'a self,
        ctx: &'a RequestContext,
        parts: &'a http::request::Parts,
        body: crate::hooks::ProxyBody,
    ) -> BoxFuture<'a, Result<crate::hooks::ProxyBody, mcp_warden_shared::status::Status>> {
        self.hook.request(ctx, parts, body)
    }

    fn response(
        &self,
        ctx: &RequestContext,
        response: http::Response<crate::hooks::ProxyBody>,
    ) -> http::Response<crate::hooks::ProxyBody> {
        self.hook.response(ctx, response)
    }

    fn refused(&self, ctx: &RequestContext, status: &mcp_warden_shared::status::Status) {
        self.hook.refused(ctx, status)
    }

    fn tunnel_tap(
        &self,
        ctx: &RequestContext,
        upgrade_response_headers: &http::HeaderMap,
    ) -> Option<Box<dyn TunnelTap>> {
        let tap = self.hook.session_tap(ctx, upgrade_response_headers)?;
        Some(Box::new(CastTap {
            tap,
            recorder: self.recorder.clone(),
        }))
    }
}

/// Records the bytes of an exec/attach tunnel as an asciicast.
struct CastTap {
    tap: SessionTap,
    recorder: Recorder,
}

impl TunnelTap for CastTap {
    fn wrap(&self, app_side: Box<dyn TunnelIo>) -> Box<dyn TunnelIo> {
        Box::new(self.tap.wrap(app_side))
    }

    fn finished(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let cast = self.tap.finish();
            let audit_id = self.tap.audit_id();
            if let Err(e) = self.recorder.record_session(&audit_id, &cast).await {
                tracing::error!(audit_id = %audit_id, error = %e, "session recording not durable");
            }
        })
    }
}
