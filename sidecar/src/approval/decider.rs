//! [`ApprovalDecider`]: the [`DecideHook`] that holds a request while a
//! person decides (see the module docs of [`crate::approval`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use mcp_warden_shared::access_request::{AccessRequest, GROUP, Requester, State};
use mcp_warden_shared::attrs::RequestAttributes;
use mcp_warden_shared::identity::Identity;
use mcp_warden_shared::mask::Masker;
use mcp_warden_shared::policy;
use mcp_warden_shared::preview::Preview;
use mcp_warden_shared::status::{Reason, Status};
use time::OffsetDateTime;

use super::access_request::{
    Outcome, ToolCall, access_request, request_hash, reusable, reusable_method, summary,
    tool_call_access_request, touches_access_requests,
};
use super::client::AccessRequests;
use super::grants::Grants;
use super::notifier::Notifier;
use super::preview;
use super::{ApprovalError, BUILTIN_RULE};
use crate::config::{ApprovalConfig, Config};
use crate::error::Refusal;
use crate::hooks::{self, DecideHook, RequestContext};
use crate::policy_store::PolicyDecider;

/// `mcp-warden.io/preview` when the server's dry run refused the request.
pub const PREVIEW_REFUSED: &str = "refused";
/// `mcp-warden.io/preview` when an approval after a preview let it through.
pub const PREVIEW_SHOWN: &str = "shown";
/// `mcp-warden.io/preview` when the object changed after the preview.
pub const PREVIEW_CHANGED: &str = "changed";

/// How asking a person ended ([`ApprovalDecider::ask`]).
#[derive(Debug)]
pub(crate) enum Answer {
    /// Approved by `by`: `access_request` is `NAMESPACE/NAME`, `current`
    /// the object as approved (to mark Used or Expired).
    Approved {
        by: String,
        access_request: String,
        current: Box<AccessRequest>,
    },
    /// Not approved (denied, expired, deleted, timed out, or not asked):
    /// the refusal's message, naming the AccessRequest and the decider.
    Refused { message: String },
}

/// The policy decider with approvals (see the module docs).
pub struct ApprovalDecider {
    inner: PolicyDecider,
    api: AccessRequests,
    requester: String,
    pod: String,
    config: ApprovalConfig,
    notifier: Option<Arc<Notifier>>,
    grants: Grants,
}

impl std::fmt::Debug for ApprovalDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalDecider")
            .field("requester", &self.requester)
            .field("namespace", &self.api.namespace())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ApprovalDecider {
    /// Wraps `inner`. AccessRequests go to the sidecar's upstream, with its
    /// token, in `sidecar.namespace()`; `identity` is the pod's (the
    /// requester the webhook will not let approve).
    pub fn new(
        inner: PolicyDecider,
        sidecar: &Config,
        identity: &Identity,
        config: ApprovalConfig,
    ) -> Result<Self, ApprovalError> {
        let api = AccessRequests::new(sidecar)?;
        let notifier = config
            .approval_notify_url
            .clone()
            .map(Notifier::new)
            .transpose()?
            .map(Arc::new);
        let pod = sidecar
            .pod_name
            .clone()
            .or_else(|| identity.pod_name.clone())
            .unwrap_or_default();
        let grants = Grants::new(&identity.username, &pod);
        let decider = ApprovalDecider {
            inner,
            api,
            requester: identity.username.clone(),
            pod,
            config,
            notifier,
            grants,
        };
        // Watching grants from the start, so one approved before the first
        // request is known when it comes (outside a runtime: at that request).
        decider.start_grants();
        Ok(decider)
    }

    fn start_grants(&self) {
        self.grants.start(|| match self.api.api() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch AccessRequests for grants");
                None
            }
        });
    }

    /// A grant that lets this held request pass, if one does; grants the
    /// policy refuses are ended (marked Expired with the reason).
    async fn granted(
        &self,
        ctx: &RequestContext,
        policy: &policy::Policy,
        attrs: &RequestAttributes,
        d: &policy::Decision,
    ) -> Option<hooks::Decision> {
        let rule = d.rule.as_deref()?;
        let sel = self
            .grants
            .select(policy, rule, &attrs.namespace, OffsetDateTime::now_utc());
        for (ar, why) in sel.refused {
            tracing::warn!(request_id = %ctx.request_id, grant = %ar.name(), rule, reason = %why, "grant refused by the policy: ending it");
            self.grants.forget(ar.name());
            if let Err(e) = self.api.set_status(&ar, State::Expired, &why).await {
                tracing::warn!(grant = %ar.name(), error = %e, "could not mark the refused grant Expired");
            }
        }
        let g = sel.pass?;
        tracing::info!(request_id = %ctx.request_id, grant = %g.id, approved_by = %g.approved_by, rule, summary = %summary(attrs), "passed under a grant");
        Some(hooks::Decision::approved(
            d.rule.clone(),
            hooks::Approval {
                by: g.approved_by,
                access_request: g.id,
                grant: true,
            },
        ))
    }

    fn refuse(attrs: &RequestAttributes, rule: Option<String>, message: String) -> hooks::Decision {
        hooks::Decision::refused(
            hooks::Action::Approve,
            rule,
            Refusal::forbidden(attrs, message),
        )
    }

    /// Whether this create, update or patch may be held for approval (an
    /// enforced `approve` when conditions are not judged, which fail closed
    /// to matching): then its body is read, for the preview's dry run.
    fn may_hold_with_body(&self, ctx: &RequestContext, attrs: &RequestAttributes) -> bool {
        if !matches!(attrs.verb.as_str(), "create" | "update" | "patch") || !preview::applies(attrs)
        {
            return false;
        }
        let (_, d) = self.inner.evaluate(attrs, &ctx.impersonation);
        d.enforced && d.action == policy::Action::Approve
    }

    /// The dry run before asking anybody: `Err` is the decision answering
    /// the request at once (the server would refuse it); `Ok(None)` when
    /// no preview applies.
    async fn preview(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
        rule: Option<String>,
        masker: &Masker,
    ) -> Result<Option<Preview>, Box<hooks::Decision>> {
        if !preview::applies(attrs) {
            return Ok(None);
        }
        let client = match self.api.kube_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "no client for the dry run");
                return Ok(Some(Preview {
                    summary: "no preview".into(),
                    note: format!("the dry run could not be sent: {e}"),
                    ..Default::default()
                }));
            }
        };
        match preview::run(&client, ctx, attrs, masker).await {
            preview::Previewed::Ready(p) => Ok(Some(p)),
            preview::Previewed::Refused(status) => {
                tracing::info!(request_id = %ctx.request_id, summary = %summary(attrs), code = status.code(), reason = status.reason.as_str(), "the server would refuse the held request (dry run): answered at once, no AccessRequest");
                let mut d = hooks::Decision::refused(
                    hooks::Action::Approve,
                    rule,
                    Refusal::Status(Box::new(status)),
                );
                d.preview = Some(PREVIEW_REFUSED);
                Err(Box::new(d))
            }
        }
    }

    /// Holds the request until it is approved, denied or times out.
    async fn hold(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
        d: &policy::Decision,
        masker: &Masker,
    ) -> hooks::Decision {
        let hash = request_hash(ctx.method.as_str(), &ctx.path_and_query, b"");
        let rule = d.rule.clone();
        let granted = |by: String, access_request: String| {
            hooks::Decision::approved(
                rule.clone(),
                hooks::Approval {
                    by,
                    access_request,
                    grant: false,
                },
            )
        };
        let ns = self.api.namespace().to_string();
        // 1. An approval whose client went away? Only where the hash covers
        // what matters: the hash covers no body, so a create, update or
        // patch is only ever let through as the very request that was held.
        let reuse = if reusable_method(&ctx.method) {
            match self.try_reuse(ctx, attrs, &hash).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot look for reusable approvals");
                    None
                }
            }
        } else {
            None
        };
        if let Some((by, name)) = reuse {
            tracing::info!(request_id = %ctx.request_id, access_request = %name, approved_by = %by, "reusing an approval");
            return granted(by, format!("{ns}/{name}"));
        }
        // 2. Would the server even do it, and what would it change?
        let preview = match self.preview(ctx, attrs, rule.clone(), masker).await {
            Ok(p) => p,
            Err(refused) => return *refused,
        };
        // 3. Ask, and wait.
        let now = OffsetDateTime::now_utc();
        let body = access_request(
            attrs,
            &hash,
            &self.requester,
            &self.pod,
            rule.as_deref().unwrap_or(""),
            &d.message_or_explanation(),
            self.expires_at(now),
        );
        let request_id = ctx.request_id.to_string();
        let (by, ar, current) = match self
            .ask(&request_id, body, rule.as_deref(), preview.as_ref())
            .await
        {
            Answer::Approved {
                by,
                access_request,
                current,
            } => (by, access_request, current),
            Answer::Refused { message } => return Self::refuse(attrs, rule, message),
        };
        // Only what the approver saw: the object must still be at the
        // resourceVersion of the preview.
        if let Some(p) = &preview
            && let Err(status) = self.check_current(ctx, attrs, p, &ar).await
        {
            tracing::info!(request_id = %ctx.request_id, access_request = %ar, approved_by = %by, "approved, but the object changed since the preview: refused");
            self.expire(
                &current,
                "the object changed since the approver saw the preview",
            )
            .await;
            let mut d = hooks::Decision::refused(
                hooks::Action::Approve,
                rule,
                Refusal::Status(Box::new(status)),
            );
            d.preview = Some(PREVIEW_CHANGED);
            return d;
        }
        match self.consume(&request_id, &current, &by, &ar).await {
            Ok(()) => {
                let mut d = granted(by, ar);
                if preview.is_some() {
                    d.preview = Some(PREVIEW_SHOWN);
                }
                d
            }
            Err(message) => Self::refuse(attrs, rule, message),
        }
    }

    /// When an AccessRequest created at `now` expires (`--approval-timeout`).
    fn expires_at(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + time::Duration::try_from(self.config.approval_timeout)
            .unwrap_or(time::Duration::minutes(5))
    }

    /// Asks a person: creates `body`, marks it Pending (with `preview`),
    /// notifies, and waits for the decision up to `--approval-timeout` (then
    /// marks it Expired). What API requests and tool calls share; the
    /// approved AccessRequest is not yet Used ([`Self::consume`]).
    pub(crate) async fn ask(
        &self,
        request_id: &str,
        body: AccessRequest,
        rule: Option<&str>,
        preview: Option<&Preview>,
    ) -> Answer {
        let ns = self.api.namespace().to_string();
        let what = body.spec.summary.clone();
        let expires = body.spec.expires_at.clone();
        let created = match self.api.create(&body).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(request_id, error = %e, "cannot create the AccessRequest");
                return Answer::Refused {
                    message: format!(
                        "mcp-warden: approval required (rule {:?}) but the AccessRequest could not be created: {e}",
                        rule.unwrap_or("")
                    ),
                };
            }
        };
        let name = created.name().to_string();
        let ar = format!("{ns}/{name}");
        // Pending, so `kubectl get accessrequests` shows the state column,
        // with the preview (a status field: not writable on create).
        let mut created = created;
        if let Some(p) = preview {
            created.status.get_or_insert_with(Default::default).preview = Some(p.clone());
        }
        let current = match self.api.set_status(&created, State::Pending, "").await {
            Ok(v) => v,
            // The approver must decide on this sidecar's preview: without it
            // on the object (the admission refuses a second writer), nobody
            // is asked.
            Err(e) if preview.is_some() => {
                tracing::warn!(request_id, access_request = %ar, error = %e, "cannot write the preview: refusing the request");
                let mut stored = created.clone();
                if let Some(st) = stored.status.as_mut() {
                    st.preview = None;
                }
                self.expire(&stored, "the preview could not be recorded")
                    .await;
                return Answer::Refused {
                    message: format!(
                        "mcp-warden: approval required (rule {:?}) but the preview could not be recorded on AccessRequest {ar}: {e}",
                        rule.unwrap_or("")
                    ),
                };
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not mark the AccessRequest Pending");
                created
            }
        };
        tracing::info!(request_id, access_request = %ar, summary = %what, rule = rule.unwrap_or(""), timeout = ?self.config.approval_timeout, "holding request for approval");
        if let Some(n) = &self.notifier {
            let n = n.clone();
            let text = super::notifier::text(
                &self.requester,
                &what,
                rule.unwrap_or("-"),
                preview,
                &ar,
                &expires,
                &name,
                &ns,
            );
            tokio::spawn(async move { n.send(text).await });
        }
        let deadline = tokio::time::Instant::now() + self.config.approval_timeout;
        let (outcome, current) = self.api.wait(current, deadline).await;
        let message = match outcome {
            Outcome::Approved { by } => {
                return Answer::Approved {
                    by,
                    access_request: ar,
                    current: Box::new(current),
                };
            }
            Outcome::Denied { by, reason } => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                };
                format!("mcp-warden: accessrequests {name:?} in {ns} was denied by {by}{why}")
            }
            Outcome::Expired { .. } => {
                format!(
                    "mcp-warden: accessrequests {name:?} in {ns} expired before it was approved"
                )
            }
            Outcome::Deleted => format!(
                "mcp-warden: accessrequests {name:?} in {ns} was deleted or used before it was approved"
            ),
            Outcome::TimedOut => {
                let reason = format!("no decision within {:?}", self.config.approval_timeout);
                self.expire(&current, &reason).await;
                tracing::info!(request_id, access_request = %ar, "approval timed out");
                format!(
                    "mcp-warden: accessrequests {name:?} in {ns} was not approved within {:?} (now Expired)",
                    self.config.approval_timeout
                )
            }
        };
        Answer::Refused { message }
    }

    /// Marks an approved AccessRequest Used (single use: before the
    /// request is forwarded); `Err` is the refusal's message.
    pub(crate) async fn consume(
        &self,
        request_id: &str,
        current: &AccessRequest,
        by: &str,
        ar: &str,
    ) -> Result<(), String> {
        match self.api.set_status(current, State::Used, "").await {
            Ok(_) => {
                tracing::info!(request_id, access_request = %ar, approved_by = %by, "approved");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(request_id, access_request = %ar, error = %e, "approved, but could not mark it Used");
                Err(format!(
                    "mcp-warden: {ar} was approved by {by} but could not be marked Used: {e}"
                ))
            }
        }
    }

    /// Marks an AccessRequest Expired with `reason` (best effort).
    pub(crate) async fn expire(&self, current: &AccessRequest, reason: &str) {
        if let Err(e) = self.api.set_status(current, State::Expired, reason).await {
            tracing::warn!(access_request = %current.name(), error = %e, "could not mark the AccessRequest Expired");
        }
    }

    /// Holds an MCP tool call an enforced `approve` tool rule matched: its
    /// AccessRequest ([`tool_call_access_request`]) is asked like an API
    /// request's (no preview, no reuse, no grant). An approval is not yet
    /// Used ([`Self::consume`] when the call is forwarded).
    pub(crate) async fn hold_tool_call(
        &self,
        request_id: &str,
        call: &ToolCall<'_>,
        d: &policy::Decision,
    ) -> Answer {
        let rule = d.rule.as_deref();
        let body = tool_call_access_request(
            call,
            &Requester {
                service_account: self.requester.clone(),
                pod: self.pod.clone(),
            },
            rule.unwrap_or(""),
            &d.message_or_explanation(),
            self.expires_at(OffsetDateTime::now_utc()),
        );
        self.ask(request_id, body, rule, None).await
    }

    /// [`preview::still_current`] with the approvals' client.
    async fn check_current(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
        p: &Preview,
        ar: &str,
    ) -> Result<(), Status> {
        if p.resource_version.is_empty() {
            return Ok(());
        }
        let client = self.api.kube_client().map_err(|e| {
            Status::new(
                Reason::Conflict,
                format!("mcp-warden: whether the object changed since the preview of {ar} cannot be checked: {e}"),
            )
        })?;
        preview::still_current(&client, attrs, &ctx.path_and_query, p, ar).await
    }

    /// Consumes a reusable approval for `hash`, if there is one: the
    /// approver and the AccessRequest's name. An approval whose preview no
    /// longer holds (the object changed) is marked Expired instead.
    async fn try_reuse(
        &self,
        ctx: &RequestContext,
        attrs: &RequestAttributes,
        hash: &str,
    ) -> Result<Option<(String, String)>, ApprovalError> {
        let items = self.api.list().await?;
        let now = OffsetDateTime::now_utc();
        for item in items {
            if !reusable(
                &item,
                hash,
                &self.requester,
                now,
                self.config.approval_reuse_window,
            ) {
                continue;
            }
            if let Some(p) = item.status().preview
                && let Err(status) = self.check_current(ctx, attrs, &p, item.name()).await
            {
                tracing::info!(request_id = %ctx.request_id, access_request = %item.name(), why = %status.message, "not reusing an approval: the object changed since its preview");
                let reason = "the object changed since the approver saw the preview";
                if let Err(e) = self.api.set_status(&item, State::Expired, reason).await {
                    tracing::debug!(error = %e, "could not mark the stale approval Expired");
                }
                continue;
            }
            // The resourceVersion makes this a compare-and-swap: two
            // requests cannot both consume the same approval.
            match self.api.set_status(&item, State::Used, "").await {
                Ok(_) => {
                    return Ok(Some((item.status().decided_by, item.name().to_string())));
                }
                Err(ApprovalError::Api { code: 409, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

impl DecideHook for ApprovalDecider {
    fn bodies_needed(&self, ctx: &RequestContext) -> policy::BodyNeed {
        match &ctx.attrs {
            // Refused by the built-in rule whatever the bodies say.
            Some(attrs) if touches_access_requests(attrs) => policy::BodyNeed::default(),
            Some(attrs) => {
                let mut need = self.inner.bodies_needed(ctx);
                need.object |= self.may_hold_with_body(ctx, attrs);
                need
            }
            None => self.inner.bodies_needed(ctx),
        }
    }

    fn decide<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, hooks::Decision> {
        Box::pin(async move {
            let Some(attrs) = &ctx.attrs else {
                return hooks::Decision::deny(
                    None,
                    "mcp-warden policy: the request was not parsed",
                );
            };
            if touches_access_requests(attrs) {
                tracing::info!(request_id = %ctx.request_id, verb = %attrs.verb, "refused: the app may not touch accessrequests");
                let mut d = Self::refuse(
                    attrs,
                    Some(BUILTIN_RULE.into()),
                    format!(
                        "mcp-warden: rule {BUILTIN_RULE:?}: the app cannot read or change accessrequests.{GROUP} (approvals are decided by people)"
                    ),
                );
                d.action = hooks::Action::Deny;
                return d;
            }
            // With the bodies the pipeline read for `when:` conditions.
            let (loaded, d) = self.inner.judge(ctx, attrs);
            if d.action == policy::Action::Approve && d.enforced {
                self.start_grants();
                // Boxed: the approval flow's futures are large, and held
                // inline they made every request's decision future that
                // large, copied whole for each request (~14 KB).
                if let Some(pass) = Box::pin(self.granted(ctx, &loaded.policy, attrs, &d)).await {
                    return pass;
                }
                return Box::pin(self.hold(ctx, attrs, &d, &loaded.masker)).await;
            }
            // Everything else exactly as the policy decider does it.
            self.inner.apply(ctx, attrs, &loaded, &d)
        })
    }
}
