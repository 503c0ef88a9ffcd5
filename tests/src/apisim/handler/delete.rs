//! Deletes: one object (preconditions, propagation, cascading to what it
//! owns) and `deletecollection`.

use super::read::{list_item, selectors};
use super::{App, Ctx, bad, conflict, dry_run, not_found, render_one, store_err};
use crate::apisim::ResBody;
use crate::apisim::objects;
use crate::apisim::registry::ResourceInfo;
use crate::apisim::web;
use http::{Response, StatusCode};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};

fn delete_options(ctx: &Ctx, body: &[u8]) -> Result<Option<Value>, Status> {
    if body.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("error decoding DeleteOptions: {e}")))?;
    if let Some(p) = ctx
        .query
        .get("propagationPolicy")
        .or(v.get("propagationPolicy").and_then(Value::as_str))
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(bad(format!(
            "propagationPolicy: Unsupported value: \"{p}\""
        )));
    }
    Ok(Some(v))
}

pub(super) fn delete(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response<ResBody>, Status> {
    let opts = delete_options(ctx, body)?;
    let dry = dry_run(ctx, opts.as_ref())?;
    if let Some(p) = ctx.query.get("propagationPolicy")
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(bad(format!(
            "propagationPolicy: Unsupported value: \"{p}\""
        )));
    }
    let gr = ri.group_resource();
    let cur = app
        .store
        .get(&gr, ns, name)
        .ok_or_else(|| not_found(ri, name))?;
    if ri.resource == "namespaces"
        && ri.group.is_empty()
        && matches!(name, "default" | "kube-system" | "kube-public")
    {
        return Err(Status::new(
            Reason::Forbidden,
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        )
        .with_details("namespaces", "", name));
    }
    let pre_uid = opts
        .as_ref()
        .and_then(|o| o.pointer("/preconditions/uid"))
        .and_then(Value::as_str);
    if pre_uid.is_some_and(|u| Some(u) != cur["metadata"]["uid"].as_str()) {
        return Err(conflict(ri, name));
    }
    let pre_rv = opts
        .as_ref()
        .and_then(|o| o.pointer("/preconditions/resourceVersion"))
        .and_then(Value::as_str);
    let mut gone = if dry {
        if pre_rv.is_some_and(|r| Some(r) != cur["metadata"]["resourceVersion"].as_str()) {
            return Err(conflict(ri, name));
        }
        cur.clone()
    } else {
        cascade(app, ri, name);
        app.store
            .delete(&gr, ns, name, pre_rv)
            .map_err(|e| store_err(ri, name, e))?
    };
    let returns_object = ri.custom
        || (ri.group.is_empty() && matches!(ri.resource.as_str(), "pods" | "namespaces"))
        || ri.resource == "customresourcedefinitions";
    if returns_object {
        gone["metadata"]["deletionTimestamp"] = json!(objects::now_rfc3339());
        if ri.resource == "namespaces" {
            gone["status"]["phase"] = json!("Terminating");
        }
        if ri.resource == "pods" {
            gone["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        render_one(ri, ctx, &gone, StatusCode::OK)
    } else {
        let mut s = mcp_warden_shared::status::success(None);
        s["details"] = json!({"name": name, "group": ri.group, "kind": ri.resource, "uid": cur["metadata"]["uid"]});
        if ri.group.is_empty()
            && let Some(d) = s["details"].as_object_mut()
        {
            d.remove("group");
        }
        Ok(web::json(StatusCode::OK, &s, "application/json", ctx.gzip))
    }
}

/// What deleting a namespace or a CRD takes with it.
fn cascade(app: &App, ri: &ResourceInfo, name: &str) {
    if ri.resource == "namespaces" && ri.group.is_empty() {
        for t in app.registry.all().into_iter().filter(|t| t.namespaced) {
            if let Ok(page) = app.store.list(
                &t.group_resource(),
                Some(name),
                &|_| true,
                None,
                None,
                false,
            ) {
                for o in page.items {
                    let n = o["metadata"]["name"].as_str().unwrap_or("");
                    let _ = app.store.delete(&t.group_resource(), name, n, None);
                }
            }
        }
    }
    if ri.resource == "customresourcedefinitions"
        && let Some(crd) = app.store.get(&ri.group_resource(), "", name)
    {
        if let Ok(types) = crate::apisim::registry::from_crd(&crd)
            && let Some(t) = types.first()
            && let Ok(page) =
                app.store
                    .list(&t.group_resource(), None, &|_| true, None, None, false)
        {
            for o in page.items {
                let n = o["metadata"]["name"].as_str().unwrap_or("");
                let ons = o["metadata"]["namespace"].as_str().unwrap_or("");
                let _ = app.store.delete(&t.group_resource(), ons, n, None);
            }
        }
        app.registry.unregister_crd(&crd);
    }
}

pub(super) fn delete_collection(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: Option<&str>,
    body: &[u8],
) -> Result<Response<ResBody>, Status> {
    let opts = delete_options(ctx, body)?;
    let dry = dry_run(ctx, opts.as_ref())?;
    let (ls, fs) = selectors(ctx, ri)?;
    let filter = |o: &Value| ls.matches(o) && fs.matches(o);
    let gr = ri.group_resource();
    let page = app
        .store
        .list(&gr, ns, &filter, None, None, false)
        .map_err(|e| store_err(ri, "", e))?;
    let mut items = Vec::new();
    for o in page.items {
        let n = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ons = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if ri.resource == "namespaces"
            && matches!(n.as_str(), "default" | "kube-system" | "kube-public")
        {
            continue;
        }
        if dry {
            items.push(list_item(ri, o));
            continue;
        }
        cascade(app, ri, &n);
        if let Ok(d) = app.store.delete(&gr, &ons, &n, None) {
            items.push(list_item(ri, d));
        }
    }
    let v = json!({"kind": ri.list_kind, "apiVersion": ri.api_version(), "metadata": {"resourceVersion": app.store.current_rv().to_string()}, "items": items});
    Ok(web::json(StatusCode::OK, &v, "application/json", ctx.gzip))
}
