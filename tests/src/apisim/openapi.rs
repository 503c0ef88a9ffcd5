//! A minimal OpenAPI v3 surface: the `/openapi/v3` root listing one document
//! per group/version, and per-group-version documents whose operations carry
//! `x-kubernetes-group-version-kind` and the `fieldValidation`/`dryRun`
//! parameters. That is what kubectl reads to decide that the server validates
//! fields itself (so `--validate=strict`, the default, works without a
//! client-side schema). Component schemas are left empty: kubectl then
//! computes client-side apply patches from its compiled-in types, as it does
//! with any server whose spec lacks a type.

use super::registry::ResourceInfo;
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` root document.
pub fn root(types: &[ResourceInfo], hash: &str) -> Value {
    let mut paths = Map::new();
    for t in types {
        let p = gv_path(&t.group, &t.version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "description": name, "schema": {"type": "string", "uniqueItems": true}})
}

/// The document of one group/version (`api/v1`, `apis/apps/v1`), None if unknown.
pub fn group_version(types: &[ResourceInfo], path: &str, version_string: &str) -> Option<Value> {
    let mut paths = Map::new();
    for t in types
        .iter()
        .filter(|t| gv_path(&t.group, &t.version) == path)
    {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let write_params = vec![
            param("dryRun"),
            param("fieldManager"),
            param("fieldValidation"),
        ];
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", t.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let base = if t.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}", t.resource)
        } else {
            format!("/{path}/{}", t.resource)
        };
        paths.insert(
            base.clone(),
            json!({"get": op("list", vec![]), "post": op("post", write_params.clone()), "delete": op("deletecollection", vec![param("dryRun")])}),
        );
        let mut patch_params = write_params.clone();
        patch_params.push(param("force"));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get", vec![]), "put": op("put", write_params.clone()), "patch": op("patch", patch_params), "delete": op("delete", vec![param("dryRun")])}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": version_string},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apisim::registry::builtins;

    #[test]
    fn patch_ops_declare_field_validation() {
        let types = builtins();
        let r = root(&types, "h");
        assert!(
            r["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1")
        );
        let d = group_version(&types, "api/v1", "v1.32.3").unwrap();
        let p = &d["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert!(
            p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "fieldValidation")
        );
        assert!(group_version(&types, "apis/nope/v1", "v").is_none());
    }
}
