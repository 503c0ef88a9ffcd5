//! Assembly: builds the policy, masking and recording hooks from the
//! validated [`Config`] and runs the proxy with them. This is what the binary
//! runs; tests that want the bare proxy call [`crate::run`] instead.

use std::future::Future;
use std::sync::Arc;

use mcp_warden_shared::identity::{self, Identity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::enduser::VerifyBearer;
use crate::hooks::Hooks;
use crate::mask_body::{MaskTransform, MaskerSource, TokenScrub};
use crate::mcp::{McpFront, PolicySource, ToolCalls};
use crate::policy_store::{PolicyDecider, PolicyStore};
use crate::recording::Recorder;
use crate::recording::hook::{AnnotationSource, LevelSource, PolicyHashSource, RecordingHook};
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
    let verifier = crate::enduser::from_config(&config)?;
    run_configured_with(listener, admin, config, verifier, shutdown).await
}

/// [`run_configured`] with the end users' bearer tokens verified by
/// `verifier` on the MCP front (`None`: MCP requests carry no user); the
/// binary passes the `--oidc-*` verifier, tests may pass their own.
pub async fn run_configured_with(
    listener: TcpListener,
    admin: TcpListener,
    config: Config,
    verifier: Option<Arc<dyn VerifyBearer>>,
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
    let (recorder, _recording_task) =
        Recorder::start(config.recording.clone(), stop.clone().cancelled_owned())?;
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
    // The tool calls in flight on the MCP front, named on the API requests
    // made meanwhile.
    let tool_calls = Arc::new(ToolCalls::new());
    let links: AnnotationSource = {
        let calls = tool_calls.clone();
        Arc::new(move || calls.link_annotations())
    };
    let record = RecordingHook::new(
        recorder.clone(),
        identity.user_info(),
        masker.clone(),
        level,
        policy_hash,
    )
    .with_links(links);
    // Approvals wrap the policy: `approve` decisions wait for a person, for
    // API requests and for tool calls on the MCP front alike.
    let decide = Arc::new(
        crate::approval::ApprovalDecider::new(
            PolicyDecider::new(store.clone(), identity.clone()),
            &config,
            &identity,
            config.approval.clone(),
        )
        .map_err(crate::config::ConfigError::from)?,
    );
    let mcp_front = match &config.mcp {
        None => None,
        Some(mcp) => {
            let l =
                TcpListener::bind(mcp.listen)
                    .await
                    .map_err(|e| crate::config::ConfigError {
                        flag: "mcp-listen",
                        env: mcp_warden_shared::contract::env::MCP_LISTEN,
                        message: format!("cannot bind {}: {e}", mcp.listen),
                    })?;
            let policy: PolicySource = {
                let store = store.clone();
                Arc::new(move || store.current())
            };
            let front = Arc::new(
                McpFront::new(
                    mcp.upstream,
                    policy,
                    identity.clone(),
                    recorder.clone(),
                    tool_calls.clone(),
                    verifier,
                )
                .with_approvals(decide.clone()),
            );
            tracing::info!(listen = %mcp.listen, upstream = %mcp.upstream, "MCP front serving");
            Some(front.serve(l, config.limits.app.clone().named("mcp"), metrics.clone()))
        }
    };

    // The masking reads the real token (its own source of the same file, so
    // it follows rotations) to scrub it from every response it passes on.
    let tokens: TokenScrub = {
        let source = Arc::new(crate::token::TokenSource::new(&config.upstream_token_file));
        Arc::new(move || source.scrub_set())
    };
    let hooks = Hooks {
        decide,
        transform: Arc::new(MaskTransform::new(masker).with_token_scrub(tokens)),
        record: Arc::new(record),
    };
    let ext = Extensions {
        hooks,
        metrics,
        readiness,
    };
    let stopper = stop.clone();
    let grace = config.shutdown_grace;
    let (mcp_stop_tx, mcp_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mcp_task = mcp_front.map(|served| {
        tokio::spawn(async move {
            let _ = mcp_stop_rx.await;
            served.shutdown(grace).await;
        })
    });
    let result = crate::run_with(listener, admin, config, ext, async move {
        shutdown.await;
        let _ = mcp_stop_tx.send(());
        stopper.cancel();
    })
    .await;
    if let Some(t) = mcp_task {
        let _ = t.await;
    }
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
