//! Time-bounded grants: an `AccessRequest` with `spec.grant`, approved by a
//! person, lets the requests of one pod or ServiceAccount that an `approve`
//! rule would hold pass without a new hold until its window ends.
//!
//! A grant is the same resource as a held request so that the CRD, the
//! admission webhook (who approved, never the grantee), RBAC and the plugin
//! serve both. Its window starts at the approval (`status.decidedAt`, which
//! the webhook stamps) and lasts `spec.grant.duration`; it ends early when
//! its state leaves Approved (`kubectl mcp-warden revoke` sets Expired) or
//! the object is deleted.
//!
//! What is pure lives here, with the time passed in: reading a duration,
//! checking a grant's shape and window against a cap, whether an approval
//! is a self-grant, and whether an active grant covers a request.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::access_request::{AccessRequest, GrantSpec, State};

/// The longest window when nothing else is configured (the policy's
/// `approval.maxGrant`, the webhook's `--max-grant`).
pub const DEFAULT_MAX_GRANT: Duration = Duration::from_secs(3600);

/// Why a grant is not valid, or not active.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("duration {value:?} is not a window such as 90s, 30m or 1h: {why}")]
    Duration { value: String, why: String },
    #[error("a grant of {duration} is longer than the allowed {max}")]
    TooLong { duration: String, max: String },
    #[error("the grant names no rule")]
    NoRule,
    #[error("a grant is for exactly one of a pod and a ServiceAccount")]
    Scope,
    #[error(
        "spec.requester.serviceAccount is {got:?}, but a grant for ServiceAccount {service_account:?} must name {want:?}"
    )]
    Requester {
        service_account: String,
        got: String,
        want: String,
    },
    #[error("status.decidedAt {value:?} is not an RFC 3339 time")]
    DecidedAt { value: String },
}

/// Reads `90s`, `30m`, `1h`, `1h30m` (units `h`, `m`, `s`, in that order,
/// each at most once); a window is whole seconds and at least one.
pub fn parse_duration(s: &str) -> Result<Duration, GrantError> {
    let bad = |why: &str| GrantError::Duration {
        value: s.to_string(),
        why: why.to_string(),
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total: u64 = 0;
    let mut allowed = "hms";
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("the number is too large"))?;
        let Some(unit) = rest[digits..].chars().next() else {
            return Err(bad("a number needs a unit (h, m or s)"));
        };
        let Some(pos) = allowed.find(unit) else {
            return Err(bad("units are h, m and s, largest first, each once"));
        };
        allowed = &allowed[pos + 1..];
        let secs = match unit {
            'h' => n.checked_mul(3600),
            'm' => n.checked_mul(60),
            _ => Some(n),
        };
        total = secs
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("the number is too large"))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    if total == 0 {
        return Err(bad("a window must be at least 1s"));
    }
    Ok(Duration::from_secs(total))
}

/// `1h30m`, `45s`, `2h`: the shortest form [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Checks a grant's shape and window: a rule, exactly one of pod and
/// ServiceAccount, a requester that is the ServiceAccount it names (in
/// `namespace`, the AccessRequest's), a duration of at most `max`. Returns
/// the window.
pub fn validate(
    namespace: &str,
    requester: &str,
    g: &GrantSpec,
    max: Duration,
) -> Result<Duration, GrantError> {
    if g.rule.trim().is_empty() {
        return Err(GrantError::NoRule);
    }
    if g.pod.is_empty() == g.service_account.is_empty() {
        return Err(GrantError::Scope);
    }
    if !g.service_account.is_empty() {
        let want = service_account_user(namespace, &g.service_account);
        if requester != want {
            return Err(GrantError::Requester {
                service_account: g.service_account.clone(),
                got: requester.to_string(),
                want,
            });
        }
    } else if requester.is_empty() {
        return Err(GrantError::Requester {
            service_account: String::new(),
            got: String::new(),
            want: "the pod's ServiceAccount".into(),
        });
    }
    let window = parse_duration(&g.duration)?;
    if window > max {
        return Err(GrantError::TooLong {
            duration: format_duration(window),
            max: format_duration(max),
        });
    }
    Ok(window)
}

/// Whether the user approving a grant is the identity it is for: the
/// requester's user name, or a token bound to the granted pod (`pod_names`:
/// the `authentication.kubernetes.io/pod-name` values of its `userInfo`).
pub fn is_self_grant(ar: &AccessRequest, username: &str, pod_names: &[String]) -> bool {
    let Some(g) = &ar.spec.grant else {
        return false;
    };
    if !ar.spec.requester.service_account.is_empty()
        && ar.spec.requester.service_account == username
    {
        return true;
    }
    if !g.service_account.is_empty()
        && username == service_account_user(ar.namespace(), &g.service_account)
    {
        return true;
    }
    !g.pod.is_empty()
        && username.starts_with("system:serviceaccount:")
        && pod_names.iter().any(|p| p == &g.pod)
}

/// An approved grant, as the sidecar keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    /// `NAMESPACE/NAME` of the AccessRequest.
    pub id: String,
    /// The rule whose requests pass.
    pub rule: String,
    /// Only requests in this namespace pass; empty: any.
    pub namespace: String,
    /// The pod it is for; empty when it is for a ServiceAccount.
    pub pod: String,
    /// The requester's user name (`system:serviceaccount:NS:NAME`).
    pub requester: String,
    /// Who approved it (stamped by the webhook).
    pub approved_by: String,
    /// When the window ends.
    pub ends_at: OffsetDateTime,
}

/// Who the sidecar is: what a grant must be for.
#[derive(Debug, Clone, Copy)]
pub struct Grantee<'a> {
    /// The pod's ServiceAccount user name.
    pub username: &'a str,
    /// The pod's name; empty when unknown (pod grants then never apply).
    pub pod: &'a str,
}

/// How an AccessRequest reads as a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Not a grant (a held request).
    NotAGrant,
    /// A grant that is not (or no longer) approved.
    Inactive,
    /// An approved grant with its window (which may have passed).
    Active(ActiveGrant),
    /// An approved grant that is not valid under `max`.
    Invalid(GrantError),
}

/// Reads `ar` as a grant, with windows capped at `max`.
pub fn read(ar: &AccessRequest, max: Duration) -> Reading {
    let Some(g) = &ar.spec.grant else {
        return Reading::NotAGrant;
    };
    if ar.state() != State::Approved {
        return Reading::Inactive;
    }
    let window = match validate(ar.namespace(), &ar.spec.requester.service_account, g, max) {
        Ok(w) => w,
        Err(e) => return Reading::Invalid(e),
    };
    let status = ar.status();
    let start = match OffsetDateTime::parse(&status.decided_at, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            return Reading::Invalid(GrantError::DecidedAt {
                value: status.decided_at,
            });
        }
    };
    let window = time::Duration::try_from(window).unwrap_or(time::Duration::ZERO);
    Reading::Active(ActiveGrant {
        id: format!("{}/{}", ar.namespace(), ar.name()),
        rule: g.rule.clone(),
        namespace: g.namespace.clone(),
        pod: g.pod.clone(),
        requester: ar.spec.requester.service_account.clone(),
        approved_by: status.decided_by,
        ends_at: start + window,
    })
}

impl ActiveGrant {
    /// Whether it is for `who` (a pod grant only for that pod, both only
    /// for that ServiceAccount).
    pub fn is_for(&self, who: Grantee<'_>) -> bool {
        self.requester == who.username && (self.pod.is_empty() || self.pod == who.pod)
    }

    /// Whether it lets a request of `who` held by `rule`, in
    /// `request_namespace`, pass at `now`.
    pub fn covers(
        &self,
        who: Grantee<'_>,
        rule: &str,
        request_namespace: &str,
        now: OffsetDateTime,
    ) -> bool {
        self.is_for(who)
            && self.rule == rule
            && (self.namespace.is_empty() || self.namespace == request_namespace)
            && now < self.ends_at
    }

    /// Time left at `now` (zero once ended).
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        Duration::try_from(self.ends_at - now).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const SA: &str = "system:serviceaccount:mcp:agent";

    fn grant(scope: serde_json::Value, state: &str) -> AccessRequest {
        let mut g = json!({"rule": "deletes", "duration": "30s"});
        for (k, v) in scope.as_object().unwrap() {
            g[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "grant-1", "namespace": "mcp"},
            "spec": {"requester": {"serviceAccount": SA}, "expiresAt": "2026-11-22T01:05:00Z", "grant": g},
            "status": {"state": state, "decidedBy": "alice", "decidedAt": "2026-11-22T01:00:00Z"},
        }))
        .unwrap()
    }

    #[test]
    fn durations_read_and_print() {
        for (s, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2h0m5s", 7205),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        for bad in [
            "",
            "0s",
            "30",
            "m",
            "5d",
            "1m1h",
            "1h1h",
            "-5s",
            "1.5h",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(3605)), "1h5s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_cap_and_the_shape_are_checked() {
        let g = |v: serde_json::Value| grant(v, "Approved").spec.grant.unwrap();
        let max = Duration::from_secs(3600);
        let ok = g(json!({"serviceAccount": "agent"}));
        assert_eq!(validate("mcp", SA, &ok, max), Ok(Duration::from_secs(30)));
        let long = g(json!({"serviceAccount": "agent", "duration": "2h"}));
        assert_eq!(
            validate("mcp", SA, &long, max),
            Err(GrantError::TooLong {
                duration: "2h".into(),
                max: "1h".into()
            })
        );
        assert!(validate("mcp", SA, &long, Duration::from_secs(7200)).is_ok());
        assert_eq!(
            validate("mcp", SA, &g(json!({})), max),
            Err(GrantError::Scope)
        );
        assert_eq!(
            validate(
                "mcp",
                SA,
                &g(json!({"pod": "p", "serviceAccount": "agent"})),
                max
            ),
            Err(GrantError::Scope)
        );
        assert!(matches!(
            validate("mcp", SA, &g(json!({"serviceAccount": "other"})), max),
            Err(GrantError::Requester { .. })
        ));
        assert!(matches!(
            validate("other-ns", SA, &ok, max),
            Err(GrantError::Requester { .. })
        ));
        assert_eq!(
            validate("mcp", SA, &g(json!({"pod": "p"})), max),
            Ok(Duration::from_secs(30))
        );
        assert!(matches!(
            validate("mcp", "", &g(json!({"pod": "p"})), max),
            Err(GrantError::Requester { .. })
        ));
        assert_eq!(
            validate("mcp", SA, &g(json!({"pod": "p", "rule": " "})), max),
            Err(GrantError::NoRule)
        );
    }

    #[test]
    fn self_grants_are_recognised() {
        let sa = grant(json!({"serviceAccount": "agent"}), "Pending");
        assert!(is_self_grant(&sa, SA, &[]));
        assert!(!is_self_grant(&sa, "alice", &[]));
        let pod = grant(json!({"pod": "web-0"}), "Pending");
        assert!(is_self_grant(&pod, SA, &[]));
        // Another ServiceAccount's token bound to the granted pod.
        assert!(is_self_grant(
            &pod,
            "system:serviceaccount:mcp:other",
            &["web-0".into()]
        ));
        assert!(!is_self_grant(
            &pod,
            "system:serviceaccount:mcp:other",
            &["web-1".into()]
        ));
        assert!(!is_self_grant(&pod, "alice", &["web-0".into()]));
        let mut held = sa.clone();
        held.spec.grant = None;
        assert!(!is_self_grant(&held, "alice", &[]));
    }

    #[test]
    fn an_active_grant_covers_its_rule_scope_and_window() {
        let max = Duration::from_secs(3600);
        let t0 = datetime!(2026-11-22 01:00:00 UTC);
        let me = Grantee {
            username: SA,
            pod: "web-0",
        };
        let Reading::Active(g) = read(&grant(json!({"serviceAccount": "agent"}), "Approved"), max)
        else {
            panic!()
        };
        assert_eq!(g.id, "mcp/grant-1");
        assert_eq!(g.approved_by, "alice");
        assert!(g.covers(me, "deletes", "any", t0));
        assert!(g.covers(me, "deletes", "any", t0 + time::Duration::seconds(29)));
        assert!(!g.covers(me, "deletes", "any", t0 + time::Duration::seconds(30)));
        assert!(!g.covers(me, "other-rule", "any", t0));
        let stranger = Grantee {
            username: "system:serviceaccount:mcp:other",
            pod: "web-0",
        };
        assert!(!g.covers(stranger, "deletes", "any", t0));
        assert_eq!(
            g.remaining(t0 + time::Duration::seconds(10)),
            Duration::from_secs(20)
        );
        assert_eq!(
            g.remaining(t0 + time::Duration::seconds(99)),
            Duration::ZERO
        );

        let Reading::Active(p) = read(
            &grant(json!({"pod": "web-0", "namespace": "prod"}), "Approved"),
            max,
        ) else {
            panic!()
        };
        assert!(p.covers(me, "deletes", "prod", t0));
        assert!(!p.covers(me, "deletes", "dev", t0));
        assert!(!p.covers(
            Grantee {
                username: SA,
                pod: "web-1"
            },
            "deletes",
            "prod",
            t0
        ));
        assert!(!p.covers(
            Grantee {
                username: SA,
                pod: ""
            },
            "deletes",
            "prod",
            t0
        ));

        for state in ["Pending", "Expired", "Used", "Denied"] {
            assert_eq!(
                read(&grant(json!({"serviceAccount": "agent"}), state), max),
                Reading::Inactive
            );
        }
        assert!(matches!(
            read(
                &grant(json!({"serviceAccount": "agent"}), "Approved"),
                Duration::from_secs(10)
            ),
            Reading::Invalid(GrantError::TooLong { .. })
        ));
        let mut held = grant(json!({"serviceAccount": "agent"}), "Approved");
        held.spec.grant = None;
        assert_eq!(read(&held, max), Reading::NotAGrant);
        let mut undated = grant(json!({"serviceAccount": "agent"}), "Approved");
        undated.status.as_mut().unwrap().decided_at = String::new();
        assert!(matches!(
            read(&undated, max),
            Reading::Invalid(GrantError::DecidedAt { .. })
        ));
    }
}
