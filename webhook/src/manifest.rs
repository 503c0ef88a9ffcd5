//! `inject -f`: the admission patch applied offline to workload manifests.
//!
//! Multi-document YAML in, multi-document YAML out, like `linkerd inject`.
//! Pods and the pod templates of Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, Job and CronJob (and the items of a `List`) are injected;
//! every other document passes through unchanged. Asking for injection is
//! the opt-in here, so the namespace label is not required; a pod labelled
//! `mcp-warden.io/inject: "false"` or in an excluded namespace is still left
//! alone, and a pod the webhook would refuse is reported as refused.

use crate::config::{InjectConfig, SidecarForm};
use crate::patch::{PatchOutcome, Source, patch_with_source};
use serde_json::Value;
use std::collections::BTreeMap;

/// Errors of `inject -f`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The input is not valid YAML.
    #[error("input is not valid YAML: {0}")]
    Parse(String),
    /// The output could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocReport {
    /// `Kind/name` of the document (or of the List item).
    pub object: String,
    /// `injected`, `unchanged` (already injected), `skipped: ...`,
    /// `refused: ...`, or `passed through`.
    pub outcome: String,
}

impl DocReport {
    /// True for a pod the webhook would refuse.
    pub fn is_refused(&self) -> bool {
        self.outcome.starts_with("refused")
    }
}

/// Where a kind keeps its pod (as JSON pointer to an object with `metadata` and `spec`).
pub fn pod_template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every document of `input` with the sidecar in `form`; returns the
/// output YAML and a report per document.
pub fn inject_yaml(
    input: &str,
    config: &InjectConfig,
    form: SidecarForm,
) -> Result<(String, Vec<DocReport>), ManifestError> {
    let mut docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(input)
        .map_err(|e| ManifestError::Parse(e.to_string()))?;
    docs.retain(|d| !d.is_null());
    let mut reports = Vec::new();
    for doc in &mut docs {
        inject_document(doc, config, form, &mut reports);
    }
    let out =
        serde_saphyr::to_string_multiple(&docs).map_err(|e| ManifestError::Write(e.to_string()))?;
    Ok((out, reports))
}

/// Injects one parsed document in place, appending what happened to `reports`.
pub fn inject_document(
    doc: &mut Value,
    config: &InjectConfig,
    form: SidecarForm,
    reports: &mut Vec<DocReport>,
) {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let object = format!("{kind}/{name}");
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_document(item, config, form, reports);
            }
        }
        return;
    }
    let Some(ptr) = pod_template_pointer(&kind) else {
        reports.push(DocReport {
            object,
            outcome: "passed through".to_string(),
        });
        return;
    };
    // The template's pods are created in the workload's namespace.
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let Some(pod) = doc.pointer_mut(ptr) else {
        reports.push(DocReport {
            object,
            outcome: "refused: no pod template".to_string(),
        });
        return;
    };
    let outcome = match patch_with_source(
        pod,
        &BTreeMap::new(),
        &namespace,
        config,
        form,
        Source::Offline,
    ) {
        Err(r) => format!("refused: {r}"),
        Ok(PatchOutcome::Skip { reason }) => format!("skipped: {reason}"),
        Ok(PatchOutcome::Patch { patch, warnings }) => {
            if patch.0.is_empty() {
                "unchanged".to_string()
            } else {
                match json_patch::patch(pod, &patch.0) {
                    Ok(()) if warnings.is_empty() => "injected".to_string(),
                    Ok(()) => format!("injected ({})", warnings.join("; ")),
                    Err(e) => format!("refused: internal patch error: {e}"),
                }
            }
        }
    };
    reports.push(DocReport { object, outcome });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn other_kinds_pass_through_and_strings_stay_strings() {
        let input = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  flag: \"true\"\n  port: \"8080\"\n---\n";
        let (out, reports) =
            inject_yaml(input, &InjectConfig::default(), SidecarForm::Native).unwrap();
        assert_eq!(
            reports,
            vec![DocReport {
                object: "ConfigMap/c".into(),
                outcome: "passed through".into()
            }]
        );
        let back: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
        assert_eq!(back[0]["data"]["flag"], Value::String("true".into()));
        assert_eq!(back[0]["data"]["port"], Value::String("8080".into()));
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(
            inject_yaml(
                "a: [unclosed\n",
                &InjectConfig::default(),
                SidecarForm::Native
            )
            .is_err()
        );
    }
}
