//! Masking engine: replaces secret values in API responses, request bodies and
//! log lines. (being written — the config types below are the agreed interface
//! the policy parser embeds.)

use serde::{Deserialize, Serialize};

/// The `masking` section of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaskingConfig {
    /// Per-resource rules.
    #[serde(default)]
    pub rules: Vec<MaskRule>,
    /// Names of detectors applied to every string value and log line.
    #[serde(default)]
    pub detectors: Vec<String>,
}

/// One masking rule: which resources, and which values in them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaskRule {
    /// Resources (`secrets`, `configmaps`, `*`), optionally `group/resource`... see mask docs.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Field paths with `*` for any key or index, e.g. `data.*`.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Regex over map keys (ConfigMap `data`/`binaryData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// Regex over env entry names in any pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_names: Option<String>,
}
