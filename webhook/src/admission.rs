//! AdmissionReview in, AdmissionReview out: the pure half of `POST /mutate`.
//!
//! The body is read as plain JSON rather than a typed struct, so that every
//! malformed review gets an answer that says what is wrong: a review with a
//! readable `request.uid` gets an `AdmissionReview` whose response denies with
//! the reason; anything else gets a 400 with a Kubernetes `Status` body.
//!
//! Namespace selection: the API server evaluates the webhook's
//! `namespaceSelector` before calling us, and the webhook has (by design) no
//! RBAC to read namespaces. A review therefore means "the namespace is
//! selected", and the core is told so; the pod opt-in webhook entry sends
//! pods labelled `mcp-warden.io/inject: "true"` from other namespaces, which
//! the core accepts by their label. Excluded namespaces are checked again here.

use crate::config::{InjectConfig, SidecarForm};
use crate::patch::{PatchOutcome, RefuseReason, patch};
use base64::Engine;
use mcp_warden_shared::contract::{
    NAMESPACE_INJECTION_ENABLED, NAMESPACE_INJECTION_LABEL, STATUS_ANNOTATION, STATUS_INJECTED,
};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The admission API version served.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// What `/mutate` answers: HTTP status, JSON body, and an outcome label for
/// metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub http_status: u16,
    pub body: Value,
    pub outcome: &'static str,
    /// Number of patch operations returned (0 when none).
    pub patch_ops: usize,
}

fn bad_request(msg: String) -> Answer {
    let status = Status::new(Reason::BadRequest, msg);
    Answer {
        http_status: status.code(),
        body: status.to_value(),
        outcome: "invalid",
        patch_ops: 0,
    }
}

fn review(api_version: &str, response: Value) -> Value {
    json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response })
}

/// Answers one AdmissionReview body, injecting the sidecar in `form`.
pub fn answer(body: &[u8], config: &InjectConfig, form: SidecarForm) -> Answer {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the body is not a JSON AdmissionReview: {e}")),
    };
    if v.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return bad_request(
            "the body is not an AdmissionReview (kind must be AdmissionReview)".into(),
        );
    }
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != ADMISSION_API_VERSION {
        return bad_request(format!(
            "unsupported AdmissionReview apiVersion {api_version:?}: only {ADMISSION_API_VERSION} is served"
        ));
    }
    let Some(req) = v.get("request").filter(|r| r.is_object()) else {
        return bad_request("the AdmissionReview has no request".into());
    };
    let Some(uid) = req
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return bad_request("the AdmissionReview request has no uid".into());
    };
    let deny = |reason: Reason, msg: String, outcome: &'static str| {
        let status = Status::new(reason, msg);
        Answer {
            http_status: 200,
            body: review(
                api_version,
                json!({ "uid": uid, "allowed": false, "status": status.to_value() }),
            ),
            outcome,
            patch_ops: 0,
        }
    };
    let allow = |outcome: &'static str, warnings: Vec<String>| {
        let mut r = json!({ "uid": uid, "allowed": true });
        if !warnings.is_empty() {
            r["warnings"] = json!(warnings);
        }
        Answer {
            http_status: 200,
            body: review(api_version, r),
            outcome,
            patch_ops: 0,
        }
    };

    let kind = req
        .pointer("/kind/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = req
        .pointer("/kind/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "Pod" || !group.is_empty() {
        return allow("ignored", Vec::new());
    }
    let operation = req.get("operation").and_then(Value::as_str).unwrap_or("");
    let sub = req.get("subResource").and_then(Value::as_str).unwrap_or("");
    let Some(pod) = req.get("object").filter(|o| o.is_object()) else {
        return deny(
            Reason::BadRequest,
            "the AdmissionReview request has no object".into(),
            "invalid",
        );
    };
    let injected = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .and_then(Value::as_str)
        == Some(STATUS_INJECTED);
    match (operation, sub) {
        ("CREATE", "") => {}
        // New ephemeral containers of an injected pod get the same rewiring.
        ("UPDATE", "ephemeralcontainers") if injected => {}
        _ => return allow("ignored", Vec::new()),
    }
    let namespace = req
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("");
    let ns_labels = BTreeMap::from([(
        NAMESPACE_INJECTION_LABEL.to_string(),
        NAMESPACE_INJECTION_ENABLED.to_string(),
    )]);
    match patch(pod, &ns_labels, namespace, config, form) {
        Err(RefuseReason::InvalidPod(m)) => deny(
            Reason::BadRequest,
            format!("mcp-warden cannot read the pod: {m}"),
            "invalid",
        ),
        Err(r) => deny(Reason::Forbidden, r.to_string(), "refused"),
        Ok(PatchOutcome::Skip { reason }) => {
            allow(reason.as_str(), reason.warning().into_iter().collect())
        }
        Ok(PatchOutcome::Patch {
            mut patch,
            warnings,
        }) => {
            if sub == "ephemeralcontainers" {
                // The subresource changes nothing else: a pod injected by an
                // earlier version keeps its other fields until it is recreated.
                patch.0.retain(|op| {
                    op.path()
                        .to_string()
                        .starts_with("/spec/ephemeralContainers")
                });
            }
            if patch.0.is_empty() {
                return allow("already-injected", warnings);
            }
            let bytes = match serde_json::to_vec(&patch) {
                Ok(b) => b,
                Err(e) => {
                    return deny(
                        Reason::InternalError,
                        format!("mcp-warden could not encode the patch: {e}"),
                        "error",
                    );
                }
            };
            let mut a = allow("injected", warnings);
            a.body["response"]["patchType"] = json!("JSONPatch");
            a.body["response"]["patch"] =
                json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            a.patch_ops = patch.0.len();
            a
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gets_a_status() {
        let a = answer(b"{not json", &InjectConfig::default(), SidecarForm::Native);
        assert_eq!(a.http_status, 400);
        assert_eq!(a.body["kind"], "Status");
        assert_eq!(a.body["reason"], "BadRequest");
        let a = answer(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u"}}"#, &InjectConfig::default(), SidecarForm::Native);
        assert_eq!(a.http_status, 400);
        assert!(a.body["message"].as_str().unwrap().contains("v1beta1"));
    }

    #[test]
    fn missing_object_is_denied_with_uid() {
        let a = answer(
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#,
            &InjectConfig::default(),
            SidecarForm::Native,
        );
        assert_eq!(a.http_status, 200);
        assert_eq!(a.body["response"]["uid"], "u1");
        assert_eq!(a.body["response"]["allowed"], false);
        assert!(
            a.body["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("no object")
        );
    }

    fn review_of(operation: &str, sub: &str, pod: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
            "request": { "uid": "u3", "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "operation": operation, "subResource": sub, "namespace": "mcp", "object": pod }
        }))
        .unwrap()
    }

    #[test]
    fn ephemeral_containers_of_injected_pods_are_rewired() {
        let cfg = InjectConfig::default();
        let pod = json!({ "metadata": { "name": "p", "namespace": "mcp" }, "spec": {
            "containers": [ { "name": "app", "image": "x" } ],
            "volumes": [ { "name": "kube-api-access-1", "projected": { "sources": [ { "serviceAccountToken": { "path": "token" } } ] } } ] } });
        let a = answer(
            &review_of("CREATE", "", pod.clone()),
            &cfg,
            SidecarForm::Native,
        );
        let b64 = a.body["response"]["patch"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut injected = pod.clone();
        json_patch::patch(&mut injected, &patch.0).unwrap();

        // kubectl debug adds an ephemeral container through the subresource.
        injected["spec"]["ephemeralContainers"] =
            json!([ { "name": "debugger", "image": "busybox" } ]);
        let a = answer(
            &review_of("UPDATE", "ephemeralcontainers", injected.clone()),
            &cfg,
            SidecarForm::Native,
        );
        assert_eq!(a.outcome, "injected");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.body["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for op in ops.as_array().unwrap() {
            assert!(
                op["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/spec/ephemeralContainers/0/"),
                "{op}"
            );
        }
        // Not injected: an update is left alone; other updates always are.
        assert_eq!(
            answer(
                &review_of("UPDATE", "ephemeralcontainers", pod.clone()),
                &cfg,
                SidecarForm::Native
            )
            .outcome,
            "ignored"
        );
        assert_eq!(
            answer(
                &review_of("UPDATE", "", injected),
                &cfg,
                SidecarForm::Native
            )
            .outcome,
            "ignored"
        );
    }

    #[test]
    fn other_kinds_are_allowed_unchanged() {
        let a = answer(
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u2","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{}}}"#,
            &InjectConfig::default(),
            SidecarForm::Native,
        );
        assert_eq!(a.body["response"]["allowed"], true);
        assert!(a.body["response"].get("patch").is_none());
    }
}
