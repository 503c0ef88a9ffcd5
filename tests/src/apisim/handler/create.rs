//! Creates: identity and namespace checks, defaults and validation, the
//! namespace's own contents (default ServiceAccount, `kube-root-ca.crt`)
//! and what follows a create; the seed goes through the same path.

use super::{
    App, Ctx, already_exists, bad, dry_run, field_manager, ns_not_found, render_one, store_err,
};
use crate::apisim::ResBody;
use crate::apisim::objects;
use crate::apisim::registry::ResourceInfo;
use crate::apisim::web::{Query, Rendering};
use http::{Response, StatusCode};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};

fn namespace_ok(app: &App, ri: &ResourceInfo, ns: &str) -> Result<(), Status> {
    if !ri.namespaced {
        return Ok(());
    }
    match app.store.get("/namespaces", "", ns) {
        None => Err(ns_not_found(ns)),
        Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => {
            Err(Status::new(
                Reason::Forbidden,
                format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    ri.qualified()
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

/// Checks apiVersion/kind/namespace of a body against the URL and fills them in.
pub(super) fn check_identity(ri: &ResourceInfo, ns: &str, obj: &mut Value) -> Result<(), Status> {
    let av = ri.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(av),
        Some(a) if a == av => {}
        Some(a) => {
            return Err(bad(format!(
                "the API version in the data ({a}) does not match the expected API version ({av})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(ri.kind),
        Some(k) if k == ri.kind => {}
        Some(k) => {
            return Err(bad(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                ri.kind
            )));
        }
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if ri.namespaced {
        match obj["metadata"].get("namespace").and_then(Value::as_str) {
            None | Some("") => obj["metadata"]["namespace"] = json!(ns),
            Some(n) if n == ns => {}
            Some(_) => {
                return Err(bad(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

/// Types whose registry strategy maintains metadata.generation.
pub(super) fn has_generation(ri: &ResourceInfo) -> bool {
    ri.custom
        || ri.resource == "customresourcedefinitions"
        || (ri.group == "apps" && ri.resource == "deployments")
}

pub(super) fn prepare_create(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    mut obj: Value,
    manager: &str,
    operation: &str,
) -> Result<Value, Status> {
    let source = obj.clone();
    check_identity(ri, ns, &mut obj)?;
    let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty()
        && let Some(g) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
    {
        name = format!("{g}{}", objects::name_suffix());
        obj["metadata"]["name"] = json!(name);
    }
    objects::validate_name(ri, &name)?;
    namespace_ok(app, ri, ns)?;
    let md = &mut obj["metadata"];
    if let Some(m) = md.as_object_mut() {
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    md["uid"] = json!(uuid::Uuid::new_v4().to_string());
    md["creationTimestamp"] = json!(objects::now_rfc3339());
    if has_generation(ri) {
        md["generation"] = json!(1);
    } else if let Some(m) = md.as_object_mut() {
        m.remove("generation");
    }
    if ri.custom
        && obj.get("status").is_some()
        && ri.has_subresource("status")
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if ri.resource == "customresourcedefinitions" {
        crate::apisim::registry::from_crd(&obj)
            .map_err(|e| objects::invalid(ri, &name, "spec", "", &e.to_string()))?;
        objects::crd_status(&mut obj);
    }
    objects::apply_defaults(ri, &mut obj, &app.ips);
    objects::validate_builtin(ri, &name, &obj)?;
    custom_schema(ri, &name, &mut obj)?;
    if obj["metadata"]
        .get("managedFields")
        .is_some_and(|m| !m.is_array())
    {
        return Err(bad("metadata.managedFields must be a list"));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    if operation == "Apply" {
        objects::track_manager_for(
            &mut obj,
            manager,
            operation,
            &ri.api_version(),
            None,
            &source,
        );
    } else {
        objects::track_manager(&mut obj, manager, operation, &ri.api_version(), None);
    }
    let _ = ctx;
    Ok(obj)
}

/// A custom resource pruned, defaulted and validated against its version's
/// schema (see [`super::schema`]); built-in types pass unchanged.
pub(super) fn custom_schema(ri: &ResourceInfo, name: &str, obj: &mut Value) -> Result<(), Status> {
    let Some(schema) = ri.schema.as_ref().filter(|_| ri.custom) else {
        return Ok(());
    };
    let errors = crate::apisim::schema::admit(schema, obj);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::apisim::schema::invalid(
            &ri.kind, &ri.group, name, &errors,
        ))
    }
}

pub(super) fn create(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    obj: Value,
) -> Result<Response<ResBody>, Status> {
    let dry = dry_run(ctx, None)?;
    let manager = field_manager(ctx, "unknown");
    let obj = prepare_create(app, ctx, ri, ns, obj, &manager, "Update")?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let stored = if dry {
        if app.store.get(&ri.group_resource(), ns, &name).is_some() {
            return Err(already_exists(ri, &name));
        }
        obj
    } else {
        let stored = app
            .store
            .create(&ri.group_resource(), ns, &name, obj)
            .map_err(|e| store_err(ri, &name, e))?;
        after_create(app, ri, &stored);
        stored
    };
    render_one(ri, ctx, &stored, StatusCode::CREATED)
}

/// What the controllers of a real cluster add to every new namespace: the
/// `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap.
fn namespace_contents(app: &App, ns: &str) {
    let objs = [
        (
            "serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
        ),
        (
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}}, "data": {"ca.crt": app.ca_pem}}),
        ),
    ];
    for (resource, obj) in objs {
        let Some(ri) = app.registry.find("", "v1", resource) else {
            continue;
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let manager = "kube-controller-manager";
        let ctx = system_ctx();
        match prepare_create(app, &ctx, &ri, ns, obj, manager, "Update") {
            Ok(o) => {
                // Already there (e.g. from the seed) is fine.
                let _ = app.store.create(&ri.group_resource(), ns, &name, o);
            }
            Err(s) => {
                tracing::warn!(namespace = ns, message = %s.message, "namespace defaults not created")
            }
        }
    }
}

fn system_ctx() -> Ctx {
    Ctx {
        user: crate::apisim::auth::admin_user(),
        query: Query::default(),
        rendering: Rendering::Object,
        gzip: false,
        content_type: "application/json".into(),
        user_agent: "kube-apisim".into(),
    }
}

pub(super) fn after_create(app: &App, ri: &ResourceInfo, obj: &Value) {
    if ri.resource == "namespaces"
        && ri.group.is_empty()
        && let Some(ns) = obj["metadata"]["name"].as_str()
    {
        namespace_contents(app, ns);
    }
    if ri.resource == "customresourcedefinitions"
        && ri.group == "apiextensions.k8s.io"
        && let Err(e) = app.registry.register_crd(obj)
    {
        tracing::warn!(error = %e, "CRD stored but not servable");
    }
}

/// Loads seed objects (and the always-present namespaces) into the store.
pub fn load_objects(app: &App, objs: Vec<Value>) -> Result<(), Status> {
    let ctx = system_ctx();
    let mut objs = objs;
    // Namespaces and CRDs first, so namespaced objects and custom resources
    // find what they need.
    objs.sort_by_key(|o| match o["kind"].as_str() {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    });
    for o in objs {
        let av = o["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = o["kind"].as_str().unwrap_or("").to_string();
        let (group, version) = match av.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), av.clone()),
        };
        let ri = app
            .registry
            .all()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .ok_or_else(|| {
                bad(format!(
                    "seed: no resource for apiVersion {av:?} kind {kind:?}"
                ))
            })?;
        let ns = if ri.namespaced {
            o["metadata"]["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        if ri.resource == "namespaces" && app.store.get("/namespaces", "", &name).is_some() {
            continue;
        }
        let obj = prepare_create(app, &ctx, &ri, &ns, o, "kube-apisim-seed", "Update")?;
        // Seeded status (e.g. a Widget's) is kept as given.
        let stored = app
            .store
            .create(&ri.group_resource(), &ns, &name, obj)
            .map_err(|e| store_err(&ri, &name, e))?;
        after_create(app, &ri, &stored);
    }
    Ok(())
}
