//! Which JSON Patch operations would read a masked value.
//!
//! Masking hides values in what the server answers, but an RFC 6902 patch
//! can make the server itself read them: `copy`/`move` put a Secret's value
//! into a field nothing masks (an annotation, `generateName`), and `test` is
//! an oracle (200 for a right guess, 422 for a wrong one). The sidecar
//! refuses such a patch before forwarding it; this module is the pure
//! judgement, over the same compiled rules that mask responses.
//!
//! A pointer "reads a masked value" when it is a masked location, lies
//! inside one, or is an ancestor of one (copying `/data` copies every
//! value in it). Judged conservatively:
//! - field rules (`data.*`): the pointer and the field path agree on every
//!   segment they share;
//! - key rules: the keyed map itself (`/data`, `/binaryData`,
//!   `/stringData`) or an entry whose key matches;
//! - env-name rules: anything at or under an `env` list, and the ancestors
//!   of container lists (`/spec`, `/spec/template`, `/spec/containers/0`...),
//!   since the entry's name is not known without the live object;
//! - always: the root, and the `last-applied-configuration` annotation with
//!   its ancestors (it repeats the object's values in clear).
//!
//! Detector-masked values (a JWT in any string) are not judged here:
//! copying one moves it to another string that the detectors mask too, and
//! guessing one with `test` is not practical.

use serde_json::Value;

use super::{LAST_APPLIED_ANNOTATION, MaskContext, Masker, Seg};

/// Why a JSON Patch was refused: its first operation that reads a masked value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "JSON patch operation {index} ({op}) reads {pointer:?}, which holds or contains masked values; \
     copy, move and test may not read masked fields"
)]
pub struct PatchReadsMasked {
    /// Index of the operation in the patch array.
    pub index: usize,
    /// `copy`, `move` or `test`.
    pub op: String,
    /// The JSON pointer it reads (`from`, or `path` for `test`).
    pub pointer: String,
}

/// Keys of the maps whose entries key rules mask.
const KEYED_MAPS: [&str; 3] = ["data", "binaryData", "stringData"];
/// Keys on the way from an object down to a container's `env`.
const TOWARDS_ENV: [&str; 6] = [
    "spec",
    "template",
    "jobTemplate",
    "containers",
    "initContainers",
    "ephemeralContainers",
];

impl Masker {
    /// Checks an RFC 6902 patch (already parsed) sent to the resource of
    /// `ctx`. Anything that is not an array of operations is left to the
    /// API server to refuse.
    pub fn check_json_patch(
        &self,
        ctx: &MaskContext,
        patch: &Value,
    ) -> Result<(), PatchReadsMasked> {
        let Value::Array(ops) = patch else {
            return Ok(());
        };
        for (index, op) in ops.iter().enumerate() {
            let name = op.get("op").and_then(Value::as_str).unwrap_or("");
            let field = match name {
                "copy" | "move" => "from",
                "test" => "path",
                _ => continue,
            };
            let Some(pointer) = op.get(field).and_then(Value::as_str) else {
                continue;
            };
            if self.pointer_reads_masked(ctx, pointer) {
                return Err(PatchReadsMasked {
                    index,
                    op: name.to_string(),
                    pointer: pointer.to_string(),
                });
            }
        }
        Ok(())
    }

    /// True when the JSON pointer reads, contains or lies inside a masked value.
    pub fn pointer_reads_masked(&self, ctx: &MaskContext, pointer: &str) -> bool {
        let Some(segs) = pointer_segments(pointer) else {
            // Not a pointer the server would accept either; judge it unsafe.
            return true;
        };
        if segs.is_empty() || reads_last_applied(&segs) {
            return true;
        }
        // A patch of `status` changes the same object as the main resource.
        let sub = if ctx.subresource == "status" {
            ""
        } else {
            ctx.subresource.as_str()
        };
        self.rules
            .iter()
            .filter(|r| r.applies_to(&ctx.resource, sub))
            .any(|rule| {
                rule.fields.iter().any(|f| overlaps(&segs, f))
                    || rule.keys.as_ref().is_some_and(|re| {
                        KEYED_MAPS.contains(&segs[0].as_str())
                            && segs.get(1).is_none_or(|k| re.is_match(k))
                    })
                    || (rule.env_names.is_some() && may_reach_env(&segs))
            })
    }
}

/// RFC 6901 segments (`~1` is `/`, `~0` is `~`); `None` for a pointer that
/// does not start with `/` (other than the root `""`).
fn pointer_segments(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// The pointer and the field path agree on every segment both have: one is
/// inside the other.
fn overlaps(segs: &[String], field: &[Seg]) -> bool {
    segs.iter().zip(field).all(|(s, f)| match f {
        Seg::Any => true,
        Seg::Key(k) => k == s,
    })
}

fn reads_last_applied(segs: &[String]) -> bool {
    let path = ["metadata", "annotations", LAST_APPLIED_ANNOTATION];
    segs[0] == "metadata" && segs.iter().zip(path).all(|(s, p)| s == p)
}

/// At or under an `env` list, or on the way down to a container list.
fn may_reach_env(segs: &[String]) -> bool {
    if segs.iter().any(|s| s == "env") {
        return true;
    }
    let is_index = |s: &str| s == "-" || s.bytes().all(|b| b.is_ascii_digit());
    segs.iter()
        .all(|s| TOWARDS_ENV.contains(&s.as_str()) || is_index(s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mask::MaskingConfig;
    use serde_json::json;

    fn masker() -> Masker {
        MaskingConfig::embedded_default().compile().unwrap()
    }

    fn reads(resource: &str, pointer: &str) -> bool {
        masker().pointer_reads_masked(&MaskContext::for_resource(resource), pointer)
    }

    #[test]
    fn copy_move_and_test_of_secret_values_are_refused() {
        let m = masker();
        let ctx = MaskContext::for_resource("secrets");
        for patch in [
            json!([{"op": "copy", "from": "/data/password", "path": "/metadata/annotations/leak"}]),
            json!([{"op": "move", "from": "/data/password", "path": "/metadata/generateName"}]),
            json!([{"op": "test", "path": "/data/password", "value": "aHVudGVyMg=="}]),
            json!([{"op": "copy", "from": "/data", "path": "/metadata/labels"}]),
            json!([{"op": "copy", "from": "/stringData/x", "path": "/metadata/labels/x"}]),
            json!([{"op": "copy", "from": "", "path": "/metadata/annotations/all"}]),
            json!([
                {"op": "add", "path": "/metadata/labels/a", "value": "b"},
                {"op": "copy", "from": "/data/password", "path": "/metadata/labels/c"}
            ]),
        ] {
            assert!(m.check_json_patch(&ctx, &patch).is_err(), "{patch}");
        }
        let err = m
            .check_json_patch(
                &ctx,
                &json!([
                    {"op": "add", "path": "/metadata/labels/a", "value": "b"},
                    {"op": "test", "path": "/data/token", "value": "x"}
                ]),
            )
            .unwrap_err();
        assert_eq!((err.index, err.op.as_str()), (1, "test"));
        assert_eq!(err.pointer, "/data/token");
    }

    #[test]
    fn patches_that_read_nothing_masked_pass() {
        let m = masker();
        let ctx = MaskContext::for_resource("secrets");
        for patch in [
            json!([{"op": "add", "path": "/metadata/labels/team", "value": "a"}]),
            json!([{"op": "replace", "path": "/data/password", "value": "bmV3"}]),
            json!([{"op": "remove", "path": "/data/password"}]),
            json!([{"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/b"}]),
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "7"}]),
            json!({"metadata": {"labels": {"a": "b"}}}),
        ] {
            assert!(m.check_json_patch(&ctx, &patch).is_ok(), "{patch}");
        }
    }

    #[test]
    fn configmap_keys_env_and_last_applied() {
        assert!(reads("configmaps", "/data/db-password"));
        assert!(reads("configmaps", "/binaryData/api-token"));
        assert!(reads("configmaps", "/data"));
        assert!(!reads("configmaps", "/data/colour"));
        assert!(reads("pods", "/spec/containers/0/env/1/value"));
        assert!(reads("pods", "/spec/containers/0"));
        assert!(reads("pods", "/spec"));
        assert!(reads("deployments", "/spec/template/spec/containers"));
        assert!(!reads("pods", "/spec/containers/0/image"));
        assert!(!reads("deployments", "/spec/replicas"));
        for r in ["configmaps", "deployments", "widgets"] {
            assert!(reads(r, "/metadata/annotations"));
            assert!(reads(
                r,
                "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"
            ));
            assert!(!reads(r, "/metadata/annotations/team"));
            assert!(reads(r, ""));
            assert!(reads(r, "no-leading-slash"));
        }
        // The status subresource patches the same object.
        let m = masker();
        let ctx = MaskContext {
            resource: "secrets".into(),
            subresource: "status".into(),
            ..MaskContext::default()
        };
        assert!(m.pointer_reads_masked(&ctx, "/data/password"));
    }
}
