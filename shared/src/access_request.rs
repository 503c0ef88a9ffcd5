//! The `AccessRequest` custom resource (`accessrequests.mcp-warden.io`,
//! `v1alpha1`, namespaced): a request an mcp-warden sidecar holds until a
//! person approves or denies it.
//!
//! One type for everyone who reads or writes it: the sidecar creates it and
//! marks it Pending, Used or Expired, the admission webhook judges status
//! updates, and the `kubectl mcp-warden` plugin decides. The schema the
//! server checks is `manifests/crds/accessrequests.yaml` (the chart's copy is
//! the same file); the serialized form here matches it:
//! - optional strings are `String`s, omitted when empty and read back as
//!   empty when absent or `null`. Never sending `""` matters: kube-apiserver
//!   1.20 built with Go >= 1.18 reads `""` as `null` in its CRD schema
//!   validation and refuses it for a string field;
//! - reading is lenient below `metadata` and `spec` (every field of spec and
//!   status has a default), so an object missing what the schema requires
//!   still parses and is judged by what it holds;
//! - `status.state` keeps a value outside the five states as
//!   [`State::Other`], so it can be refused by name (an admission webhook
//!   runs before the schema is checked and may see one).

use std::fmt;

use kube::CustomResource;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// API group of the AccessRequest (the `#[kube]` attribute below needs a
/// literal; a test checks that it agrees).
pub use crate::contract::API_GROUP as GROUP;
/// API version of the AccessRequest.
pub const VERSION: &str = "v1alpha1";
/// Resource (plural) name of the AccessRequest.
pub const RESOURCE: &str = "accessrequests";

/// What was asked, by whom, and under which rule (`spec`). Written once, by
/// the sidecar.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[kube(
    group = "mcp-warden.io",
    version = "v1alpha1",
    kind = "AccessRequest",
    plural = "accessrequests",
    shortname = "ar",
    category = "mcp-warden",
    namespaced,
    status = "AccessRequestStatus",
    // The schema is the CRD manifest's, written by hand (nullable optional
    // strings, the state enum); this type only has to read and write it.
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessRequestSpec {
    /// Verb of the held request (`delete`, `get`, ...); a grant has none
    /// (omitted: the rule decides what passes).
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub verb: String,
    /// API group; empty for the core group.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub group: String,
    /// Resource (plural); a grant has none (omitted).
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub resource: String,
    /// Subresource (`exec`, `status`, ...); empty if none.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub subresource: String,
    /// Namespace of the held request; empty for cluster-scoped requests.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub namespace: String,
    /// Object name; empty for lists and creates.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub name: String,
    /// sha256 (hex) of the request's method, path with query, and body; a
    /// grant has none (omitted).
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub request_hash: String,
    /// Short human summary, e.g. `delete deployments.apps prod/web`.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub summary: String,
    /// Who asks.
    pub requester: Requester,
    /// Name of the policy rule that asked for approval.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub rule: String,
    /// The rule's message to the approver.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub message: String,
    /// RFC 3339 time after which nobody can approve or deny it.
    pub expires_at: String,
    /// Present on a time-bounded grant (see [`crate::grant`]): which rule,
    /// for whom and for how long requests pass without a new hold. A held
    /// request has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantSpec>,
}

/// `spec.grant`: the scope and window of a time-bounded grant. Exactly one
/// of `pod` and `serviceAccount` names whom it is for, in the
/// AccessRequest's namespace; `spec.requester.serviceAccount` is that
/// identity's user name (the sidecar honours a grant only for itself, and
/// the admission webhook refuses its approval by that identity).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct GrantSpec {
    /// Name of the `approve` rule whose requests pass.
    pub rule: String,
    /// Only requests in this namespace pass; empty: any namespace.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub namespace: String,
    /// The pod it is for (by name).
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub pod: String,
    /// The ServiceAccount it is for (by name): every pod running as it.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub service_account: String,
    /// How long it lasts from its approval: `90s`, `30m`, `1h`.
    pub duration: String,
}

/// `spec.requester`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Requester {
    /// The sidecar's user name, `system:serviceaccount:NS:NAME`.
    pub service_account: String,
    /// The pod's name; empty when unknown.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub pod: String,
}

/// The decision (`status`). `decidedBy` and `decidedAt` are stamped by the
/// admission webhook from the authenticated user, never typed by a client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessRequestStatus {
    /// The state; absent on a new object, which is Pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Who approved, denied or expired it.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub decided_by: String,
    /// RFC 3339 time of the decision.
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub decided_at: String,
    /// Why (the approver's words, or the sidecar's on expiry).
    #[serde(skip_serializing_if = "str::is_empty", deserialize_with = "or_empty")]
    pub reason: String,
    /// What the request would do, from the server's dry run (written by the
    /// sidecar with Pending; absent when no dry run applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<crate::preview::Preview>,
}

/// `status.state`. Moves only Pending→Approved|Denied|Expired and
/// Approved→Used|Expired (the admission webhook enforces it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// Waiting for a person.
    #[default]
    Pending,
    /// A person said yes; the sidecar has not used it yet.
    Approved,
    /// A person said no.
    Denied,
    /// Nobody decided in time, or an approval was not used in time.
    Expired,
    /// The approval let one request through.
    Used,
    /// A value outside the schema's enum, as it came.
    Other(String),
}

impl State {
    /// The five states the schema allows, as stored.
    pub const NAMES: [&'static str; 5] = ["Pending", "Approved", "Denied", "Expired", "Used"];

    /// Reads a stored value; empty means Pending (a new object).
    pub fn parse(s: &str) -> State {
        match s {
            "" | "Pending" => State::Pending,
            "Approved" => State::Approved,
            "Denied" => State::Denied,
            "Expired" => State::Expired,
            "Used" => State::Used,
            other => State::Other(other.to_string()),
        }
    }

    /// The value as stored.
    pub fn as_str(&self) -> &str {
        match self {
            State::Pending => "Pending",
            State::Approved => "Approved",
            State::Denied => "Denied",
            State::Expired => "Expired",
            State::Used => "Used",
            State::Other(s) => s,
        }
    }

    /// Approved or Denied: a decision only a person other than the requester
    /// may make.
    pub fn is_human_decision(&self) -> bool {
        matches!(self, State::Approved | State::Denied)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(State::parse(&String::deserialize(d)?))
    }
}

impl AccessRequest {
    /// The state; Pending when there is no status yet.
    pub fn state(&self) -> State {
        self.status
            .as_ref()
            .and_then(|s| s.state.clone())
            .unwrap_or_default()
    }

    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, or empty.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    /// `metadata.resourceVersion`, or empty.
    pub fn resource_version(&self) -> &str {
        self.metadata.resource_version.as_deref().unwrap_or("")
    }

    /// The status, or an empty one.
    pub fn status(&self) -> AccessRequestStatus {
        self.status.clone().unwrap_or_default()
    }

    /// The same object with `status.state` (and a non-empty `reason`) set,
    /// the rest of the status kept: what a status update sends.
    pub fn with_state(&self, state: State, reason: &str) -> AccessRequest {
        let mut o = self.clone();
        let status = o.status.get_or_insert_with(Default::default);
        status.state = Some(state);
        if !reason.is_empty() {
            status.reason = reason.to_string();
        }
        o
    }
}

/// An optional string: absent or `null` reads as empty.
fn or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kube::core::Resource;
    use serde_json::{Value, json};

    #[test]
    fn names_match_the_crd() {
        assert_eq!(AccessRequest::group(&()), GROUP);
        assert_eq!(AccessRequest::version(&()), VERSION);
        assert_eq!(AccessRequest::plural(&()), RESOURCE);
        assert_eq!(AccessRequest::kind(&()), "AccessRequest");
        assert_eq!(AccessRequest::api_version(&()), "mcp-warden.io/v1alpha1");
        let crd = include_str!("../../manifests/crds/accessrequests.yaml");
        for needle in [
            "name: accessrequests.mcp-warden.io",
            "group: mcp-warden.io",
            "plural: accessrequests",
            "kind: AccessRequest",
            "- name: v1alpha1",
            "scope: Namespaced",
            "enum: [Pending, Approved, Denied, Expired, Used]",
        ] {
            assert!(crd.contains(needle), "{needle}");
        }
    }

    #[test]
    fn empty_optional_fields_are_omitted() {
        let mut ar = AccessRequest::new(
            "x",
            AccessRequestSpec {
                verb: "delete".into(),
                resource: "configmaps".into(),
                request_hash: "h".into(),
                requester: Requester {
                    service_account: "sa".into(),
                    pod: String::new(),
                },
                expires_at: "2026-11-22T01:05:00Z".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            serde_json::to_value(&ar).unwrap(),
            json!({"apiVersion": "mcp-warden.io/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": "x"},
                "spec": {"verb": "delete", "resource": "configmaps", "requestHash": "h",
                         "requester": {"serviceAccount": "sa"}, "expiresAt": "2026-11-22T01:05:00Z"}})
        );
        assert!(
            serde_json::to_value(&ar).unwrap()["spec"]
                .get("grant")
                .is_none()
        );
        ar = ar.with_state(State::Expired, "");
        let v = serde_json::to_value(&ar).unwrap();
        assert_eq!(v["status"], json!({"state": "Expired"}));
    }

    #[test]
    fn reads_leniently_and_round_trips() {
        let v = json!({"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"verb": "get", "group": null, "name": "", "requester": {"serviceAccount": "sa", "pod": "p"}},
            "status": {"state": "Approved", "decidedBy": "alice", "decidedAt": null}});
        let ar: AccessRequest = serde_json::from_value(v).unwrap();
        assert_eq!(ar.name(), "a");
        assert_eq!(ar.namespace(), "ns");
        assert_eq!(ar.resource_version(), "7");
        assert_eq!(ar.spec.group, "");
        assert_eq!(ar.spec.requester.pod, "p");
        assert_eq!(ar.state(), State::Approved);
        assert_eq!(ar.status().decided_by, "alice");
        let back = serde_json::to_value(&ar).unwrap();
        assert!(back["spec"].get("group").is_none());
        assert!(back["spec"].get("name").is_none());
        assert!(back["status"].get("decidedAt").is_none());

        let new: AccessRequest =
            serde_json::from_value(json!({"metadata": {}, "spec": {}})).unwrap();
        assert_eq!(new.state(), State::Pending);
        let odd: AccessRequest = serde_json::from_value(
            json!({"metadata": {}, "spec": {}, "status": {"state": "Maybe"}}),
        )
        .unwrap();
        assert_eq!(odd.state(), State::Other("Maybe".into()));
        assert_eq!(
            serde_json::to_value(&odd).unwrap()["status"]["state"],
            "Maybe"
        );
        let empty: AccessRequest =
            serde_json::from_value(json!({"metadata": {}, "spec": {}, "status": {"state": ""}}))
                .unwrap();
        assert_eq!(empty.state(), State::Pending);
    }

    #[test]
    fn a_grant_spec_round_trips_without_empty_fields() {
        let v = json!({"metadata": {"name": "g", "namespace": "mcp"},
            "spec": {"requester": {"serviceAccount": "system:serviceaccount:mcp:agent"},
                     "expiresAt": "2026-11-22T01:05:00Z",
                     "grant": {"rule": "deletes", "serviceAccount": "agent", "pod": null, "duration": "30m"}}});
        let ar: AccessRequest = serde_json::from_value(v).unwrap();
        let g = ar.spec.grant.clone().unwrap();
        assert_eq!(g.rule, "deletes");
        assert_eq!(g.service_account, "agent");
        assert_eq!(g.pod, "");
        let back = serde_json::to_value(&ar).unwrap();
        assert_eq!(
            back["spec"]["grant"],
            json!({"rule": "deletes", "serviceAccount": "agent", "duration": "30m"})
        );
        assert!(back["spec"].get("verb").is_none());
    }

    #[test]
    fn states_read_and_write_their_names() {
        for name in State::NAMES {
            let s = State::parse(name);
            assert!(!matches!(s, State::Other(_)));
            assert_eq!(s.as_str(), name);
            assert_eq!(serde_json::to_value(&s).unwrap(), Value::from(name));
        }
        assert!(State::Approved.is_human_decision());
        assert!(State::Denied.is_human_decision());
        assert!(!State::Expired.is_human_decision());
    }
}
