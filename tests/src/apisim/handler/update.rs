//! Updates (`PUT`, of the object or its status): what an update may change,
//! optimistic concurrency on resourceVersion, and the one store write that
//! updates and patches share.

use super::create::{after_create, check_identity, custom_schema, has_generation};
use super::{App, Ctx, bad, conflict, dry_run, field_manager, not_found, render_one, store_err};
use crate::apisim::ResBody;
use crate::apisim::auth::User;
use crate::apisim::objects;
use crate::apisim::registry::ResourceInfo;
use http::{Response, StatusCode};
use mcp_warden_shared::status::Status;
use serde_json::{Value, json};

/// Merges a new version of an object with the stored one: system metadata is
/// kept, status or spec is kept depending on the subresource.
fn merge_update(ri: &ResourceInfo, cur: &Value, mut new: Value, sub: Option<&str>) -> Value {
    let keep_status_separately = !ri.custom || ri.has_subresource("status");
    match sub {
        Some("status") => {
            let mut out = cur.clone();
            out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if let Some(rv) = new.pointer("/metadata/resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            return out;
        }
        _ => {
            if keep_status_separately && ri.has_subresource("status") {
                match cur.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
    }
    for k in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        match cur["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if has_generation(ri)
        && (new.get("spec") != cur.get("spec")
            || (ri.custom && !ri.has_subresource("status") && new != *cur))
    {
        let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    new
}

#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    mut obj: Value,
    sub: Option<&str>,
    operation: &str,
) -> Result<Response<ResBody>, Status> {
    let dry = dry_run(ctx, None)?;
    check_identity(ri, ns, &mut obj)?;
    match obj["metadata"]["name"].as_str() {
        Some(n) if n == name => {}
        None | Some("") => obj["metadata"]["name"] = json!(name),
        Some(n) => {
            return Err(bad(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let manager = field_manager(ctx, "unknown");
    let (out, code) = store_update(
        app, &ctx.user, ri, ns, name, obj, sub, &manager, operation, dry, None,
    )?;
    render_one(ri, ctx, &out, code)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn store_update(
    app: &App,
    user: &User,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    obj: Value,
    sub: Option<&str>,
    manager: &str,
    operation: &str,
    dry: bool,
    applied: Option<&Value>,
) -> Result<(Value, StatusCode), Status> {
    let gr = ri.group_resource();
    let cur = app
        .store
        .get(&gr, ns, name)
        .ok_or_else(|| not_found(ri, name))?;
    let expected = obj["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let mut new = merge_update(ri, &cur, obj, sub);
    new = crate::apisim::admission::admit_update(
        &app.store, user, ri, ns, name, sub, &cur, new, dry,
    )?;
    if ri.resource == "secrets" && !ri.custom {
        objects::fold_string_data(&mut new);
    }
    if ri.resource == "deployments" && ri.group == "apps" && !ri.custom && sub.is_none() {
        objects::deployment_defaults(&mut new);
        objects::deployment_status(&mut new);
    }
    if sub.is_none() {
        objects::validate_builtin(ri, name, &new)?;
    }
    if ri.resource == "customresourcedefinitions" {
        crate::apisim::registry::from_crd(&new)
            .map_err(|e| objects::invalid(ri, name, "spec", "", &e.to_string()))?;
    }
    custom_schema(ri, name, &mut new)?;
    if let Some(m) = new["metadata"].as_object_mut()
        && !m.get("managedFields").is_some_and(Value::is_array)
    {
        m.remove("managedFields");
    }
    // Managed fields keep the stored history plus this writer.
    if new["metadata"].get("managedFields").is_none()
        && let Some(mf) = cur["metadata"].get("managedFields")
    {
        new["metadata"]["managedFields"] = mf.clone();
    }
    if new != cur || applied.is_some() {
        match applied {
            Some(a) => {
                objects::track_manager_for(&mut new, manager, operation, &ri.api_version(), sub, a)
            }
            None => objects::track_manager(&mut new, manager, operation, &ri.api_version(), sub),
        }
    }
    if dry {
        if let Some(e) = expected.filter(|e| !e.is_empty())
            && cur["metadata"]["resourceVersion"].as_str() != Some(e.as_str())
        {
            return Err(conflict(ri, name));
        }
        return Ok((new, StatusCode::OK));
    }
    // An update that changes nothing but managedFields' time is a no-op.
    let stored = if strip_time(&new) == strip_time(&cur) {
        if let Some(e) = expected.filter(|e| !e.is_empty())
            && cur["metadata"]["resourceVersion"].as_str() != Some(e.as_str())
        {
            return Err(conflict(ri, name));
        }
        cur
    } else {
        app.store
            .update(&gr, ns, name, new, expected.as_deref())
            .map_err(|e| store_err(ri, name, e))?
    };
    if ri.resource == "customresourcedefinitions" {
        after_create(app, ri, &stored);
    }
    Ok((stored, StatusCode::OK))
}

fn strip_time(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Array(a)) = v.pointer_mut("/metadata/managedFields") {
        for e in a {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    v
}
