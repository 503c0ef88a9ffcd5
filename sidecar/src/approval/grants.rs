//! The time-bounded grants this sidecar honours: a kube watcher on the
//! AccessRequests of the pod's namespace keeps, in memory, the approved
//! grants (`spec.grant`, see [`mcp_warden_shared::grant`]) that are for this
//! pod or its ServiceAccount. A revocation (the state leaves Approved) or a
//! deletion arrives as a watch event and removes the grant at once; the
//! window's end is checked against the clock on every match and a timer
//! drops the entry when it passes, so nothing polls.
//!
//! Whether a grant lets a request pass is decided per request with the
//! policy in effect ([`select`], pure): the request's `approve` rule must be
//! the grant's, allow grants (`grant: false` forbids them) and the window
//! must be at most the policy's `approval.maxGrant`. A grant the policy
//! refuses is reported, and the decider marks it Expired with the reason
//! (any sidecar in its scope whose policy refuses it ends it: fail closed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use mcp_warden_shared::access_request::AccessRequest;
use mcp_warden_shared::grant::{self, ActiveGrant, GrantError, Grantee, Reading};
use mcp_warden_shared::policy::Policy;
use time::OffsetDateTime;

use super::client::Retry;

/// What [`select`] found for one held request.
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    /// The grant that lets it pass, if any.
    pub pass: Option<ActiveGrant>,
    /// Grants for its rule that the policy refuses, with why.
    pub refused: Vec<(AccessRequest, String)>,
}

/// Which of `grants` lets a request of `who`, held by `rule`, in
/// `request_namespace`, pass under `policy` at `now`; and which grants for
/// that rule the policy refuses (pure).
pub fn select(
    grants: &[AccessRequest],
    policy: &Policy,
    who: Grantee<'_>,
    rule: &str,
    request_namespace: &str,
    now: OffsetDateTime,
) -> Selection {
    let mut out = Selection::default();
    let allowed = policy.rule(rule).is_some_and(|r| r.grant);
    for ar in grants {
        let Some(spec) = &ar.spec.grant else {
            continue;
        };
        if spec.rule != rule {
            continue;
        }
        match grant::read(ar, policy.approval.max_grant) {
            Reading::Active(g) if g.is_for(who) => {
                if !allowed {
                    out.refused.push((
                        ar.clone(),
                        format!("the policy's rule {rule:?} does not allow grants (grant: false)"),
                    ));
                } else if g.covers(who, rule, request_namespace, now)
                    && out.pass.as_ref().is_none_or(|p| p.ends_at < g.ends_at)
                {
                    out.pass = Some(g);
                }
            }
            Reading::Invalid(e @ GrantError::TooLong { .. }) => out
                .refused
                .push((ar.clone(), format!("{e} by the policy's approval.maxGrant"))),
            _ => {}
        }
    }
    out
}

/// The grants for this sidecar, kept up to date by a watcher.
pub struct Grants {
    username: String,
    pod: String,
    /// Approved grants for this pod or its ServiceAccount, by name.
    store: Arc<Mutex<BTreeMap<String, AccessRequest>>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("username", &self.username)
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

/// Whether `ar` is an approved grant for `who` (whatever its window).
fn is_ours(ar: &AccessRequest, who: Grantee<'_>) -> bool {
    matches!(grant::read(ar, Duration::MAX), Reading::Active(g) if g.is_for(who))
}

impl Grants {
    /// For the pod `pod` running as `username`.
    pub fn new(username: &str, pod: &str) -> Self {
        Grants {
            username: username.to_string(),
            pod: pod.to_string(),
            store: Arc::default(),
            started: AtomicBool::new(false),
        }
    }

    fn who(&self) -> Grantee<'_> {
        Grantee {
            username: &self.username,
            pod: &self.pod,
        }
    }

    /// Starts the watcher once, on the current async runtime; false when
    /// there is none yet (the caller tries again later).
    pub fn start(&self, api: impl FnOnce() -> Option<Api<AccessRequest>>) -> bool {
        if self.started.load(Ordering::Acquire) {
            return true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return true;
        }
        let Some(api) = api() else {
            self.started.store(false, Ordering::Release);
            return false;
        };
        let store = self.store.clone();
        let (username, pod) = (self.username.clone(), self.pod.clone());
        rt.spawn(async move { watch(api, store, username, pod).await });
        true
    }

    /// What [`select`] says about the grants held now.
    pub fn select(
        &self,
        policy: &Policy,
        rule: &str,
        request_namespace: &str,
        now: OffsetDateTime,
    ) -> Selection {
        let grants: Vec<AccessRequest> = self
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        select(&grants, policy, self.who(), rule, request_namespace, now)
    }

    /// Forgets a grant (after the decider ended it).
    pub fn forget(&self, name: &str) {
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// Keeps `store` equal to the approved grants for this sidecar.
async fn watch(
    api: Api<AccessRequest>,
    store: Arc<Mutex<BTreeMap<String, AccessRequest>>>,
    username: String,
    pod: String,
) {
    let who = Grantee {
        username: &username,
        pod: &pod,
    };
    // Backing off here, not with `WatchStreamExt::backoff`: the watcher
    // yields `Init` before every relist, which resets a stream backoff, so a
    // list that keeps failing (no RBAC, no CRD) would be retried every 200 ms
    // for ever. The consumer's pause delays the next poll, hence the relist;
    // only a completed list or a watch event resets it.
    let events = watcher::watcher(api, watcher::Config::default());
    let mut events = std::pin::pin!(events);
    let mut retry = Retry::default();
    let mut listing: Option<BTreeMap<String, AccessRequest>> = None;
    // The first failure in a row is a warning (no CRD, no list/watch in the
    // Role: grants are not honoured meanwhile); its retries are not.
    let mut failing = false;
    while let Some(event) = events.next().await {
        if matches!(
            event,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))
        ) {
            failing = false;
            retry.reset();
        }
        if event.is_err() {
            let pause = retry.next().unwrap_or(Retry::MAX);
            match &event {
                Err(e) if !failing => {
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot watch AccessRequests: grants are not honoured until it works (retrying)");
                }
                Err(e) => {
                    tracing::debug!(error = %e, retry_in = ?pause, "watching AccessRequests for grants")
                }
                Ok(_) => {}
            }
            failing = true;
            tokio::time::sleep(pause).await;
            continue;
        }
        match event {
            Err(_) => {}
            Ok(Event::Init) => listing = Some(BTreeMap::new()),
            Ok(Event::InitApply(ar)) => {
                if let Some(l) = listing.as_mut()
                    && is_ours(&ar, who)
                {
                    l.insert(ar.name().to_string(), ar);
                }
            }
            Ok(Event::InitDone) => {
                let fresh = listing.take().unwrap_or_default();
                let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
                for name in s.keys().filter(|n| !fresh.contains_key(*n)) {
                    tracing::info!(grant = %name, "grant ended");
                }
                for ar in fresh.values().filter(|a| !s.contains_key(a.name())) {
                    in_effect(ar, &store);
                }
                *s = fresh;
            }
            Ok(Event::Apply(ar)) => {
                let name = ar.name().to_string();
                let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
                if is_ours(&ar, who) {
                    if !s.contains_key(&name) {
                        in_effect(&ar, &store);
                    }
                    s.insert(name, ar);
                } else if s.remove(&name).is_some() {
                    tracing::info!(grant = %name, state = %ar.state(), reason = %ar.status().reason, "grant ended");
                }
            }
            Ok(Event::Delete(ar)) => {
                let name = ar.name().to_string();
                let removed = store
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&name);
                if removed.is_some() {
                    tracing::info!(grant = %name, "grant ended (deleted)");
                }
            }
        }
    }
}

/// Logs a grant coming into effect and drops it from `store` when its
/// window ends (the same version only: a later change replaces it).
fn in_effect(ar: &AccessRequest, store: &Arc<Mutex<BTreeMap<String, AccessRequest>>>) {
    let Reading::Active(g) = grant::read(ar, Duration::MAX) else {
        return;
    };
    let left = g.remaining(OffsetDateTime::now_utc());
    tracing::info!(grant = %g.id, rule = %g.rule, approved_by = %g.approved_by, left = ?left, "grant in effect");
    let (store, name, version) = (
        store.clone(),
        ar.name().to_string(),
        ar.resource_version().to_string(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(left).await;
        let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
        if s.get(&name)
            .is_some_and(|a| a.resource_version() == version)
        {
            s.remove(&name);
            tracing::info!(grant = %name, "grant window ended");
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const SA: &str = "system:serviceaccount:mcp:agent";
    const T0: OffsetDateTime = datetime!(2026-11-22 01:00:00 UTC);

    fn policy(extra: &str) -> Policy {
        Policy::parse(
            "p.yaml",
            &format!(
                r#"apiVersion: mcp-warden.io/v1alpha1
kind: Policy
{extra}
rules:
  - name: deletes
    action: approve
    verbs: [delete]
    resources: [configmaps]
  - name: secrets
    action: approve
    verbs: [delete]
    resources: [secrets]
    grant: false
"#
            ),
        )
        .unwrap()
    }

    fn grant(name: &str, rule: &str, duration: &str, scope: serde_json::Value) -> AccessRequest {
        let mut g = json!({"rule": rule, "duration": duration});
        for (k, v) in scope.as_object().unwrap() {
            g[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "mcp", "resourceVersion": "1"},
            "spec": {"requester": {"serviceAccount": SA}, "expiresAt": "2026-11-22T02:00:00Z", "grant": g},
            "status": {"state": "Approved", "decidedBy": "alice", "decidedAt": "2026-11-22T01:00:00Z"},
        }))
        .unwrap()
    }

    fn me() -> Grantee<'static> {
        Grantee {
            username: SA,
            pod: "web-0",
        }
    }

    #[test]
    fn a_grant_passes_its_rule_within_its_window() {
        let p = policy("");
        let gs = vec![
            grant(
                "short",
                "deletes",
                "10s",
                json!({"serviceAccount": "agent"}),
            ),
            grant("long", "deletes", "30s", json!({"pod": "web-0"})),
            grant("elsewhere", "deletes", "50s", json!({"pod": "web-1"})),
        ];
        let s = select(&gs, &p, me(), "deletes", "default", T0);
        assert_eq!(s.pass.unwrap().id, "mcp/long", "the longest-lasting one");
        assert!(s.refused.is_empty());
        let later = T0 + time::Duration::seconds(20);
        assert!(
            select(&gs[..1], &p, me(), "deletes", "default", later)
                .pass
                .is_none()
        );
        assert!(select(&gs, &p, me(), "other", "default", T0).pass.is_none());
        let after = T0 + time::Duration::seconds(30);
        assert!(
            select(&gs, &p, me(), "deletes", "default", after)
                .pass
                .is_none()
        );
    }

    #[test]
    fn the_policy_refuses_grants_on_a_grant_false_rule_and_over_its_cap() {
        let p = policy("");
        let gs = vec![grant(
            "s",
            "secrets",
            "10s",
            json!({"serviceAccount": "agent"}),
        )];
        let s = select(&gs, &p, me(), "secrets", "default", T0);
        assert!(s.pass.is_none());
        assert_eq!(s.refused.len(), 1);
        assert!(s.refused[0].1.contains("grant: false"), "{:?}", s.refused);

        let capped = policy("approval:\n  maxGrant: 1m");
        let gs = vec![grant(
            "l",
            "deletes",
            "2m",
            json!({"serviceAccount": "agent"}),
        )];
        let s = select(&gs, &capped, me(), "deletes", "default", T0);
        assert!(s.pass.is_none());
        assert!(
            s.refused[0].1.contains("longer than the allowed 1m"),
            "{:?}",
            s.refused
        );
        assert!(
            select(&gs, &p, me(), "deletes", "default", T0)
                .pass
                .is_some()
        );
        // Another pod's grant is not this sidecar's to refuse.
        let theirs = vec![grant("t", "secrets", "10s", json!({"pod": "web-1"}))];
        assert_eq!(
            select(&theirs, &p, me(), "secrets", "default", T0),
            Selection::default()
        );
    }

    #[test]
    fn the_store_keeps_only_our_approved_grants() {
        let ours = grant("g", "deletes", "10s", json!({"serviceAccount": "agent"}));
        assert!(is_ours(&ours, me()));
        let theirs = grant("g", "deletes", "10s", json!({"pod": "web-1"}));
        assert!(!is_ours(&theirs, me()));
        let revoked = ours.with_state(mcp_warden_shared::access_request::State::Expired, "revoked");
        assert!(!is_ours(&revoked, me()));
        let g = Grants::new(SA, "web-0");
        g.store.lock().unwrap().insert("g".into(), ours);
        assert!(g.select(&policy(""), "deletes", "x", T0).pass.is_some());
        g.forget("g");
        assert!(g.select(&policy(""), "deletes", "x", T0).pass.is_none());
    }
}
