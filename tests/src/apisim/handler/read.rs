//! Reads: `get` of one object and `list` of a collection (with label and
//! field selectors, chunking and Table/PartialObjectMetadata rendering).

use super::{App, Ctx, bad, not_found, render_one, store_err};
use crate::apisim::ResBody;
use crate::apisim::registry::ResourceInfo;
use crate::apisim::selector::{FieldSelector, LabelSelector, supported_fields};
use crate::apisim::table::{self, IncludeObject};
use crate::apisim::web::{self, Rendering};
use http::{Response, StatusCode};
use mcp_warden_shared::status::Status;
use serde_json::{Value, json};

pub(super) fn get(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<Response<ResBody>, Status> {
    let obj = app
        .store
        .get(&ri.group_resource(), ns, name)
        .ok_or_else(|| not_found(ri, name))?;
    render_one(ri, ctx, &obj, StatusCode::OK)
}

pub(super) fn selectors(
    ctx: &Ctx,
    ri: &ResourceInfo,
) -> Result<(LabelSelector, FieldSelector), Status> {
    let ls = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))
        .map_err(|e| bad(e.to_string()))?;
    let fs = FieldSelector::parse(
        ctx.query.get("fieldSelector").unwrap_or(""),
        supported_fields(&ri.group, &ri.resource, ri.custom),
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok((ls, fs))
}

/// Items of built-in lists carry no kind/apiVersion, as kube-apiserver's do.
pub(super) fn list_item(ri: &ResourceInfo, mut o: Value) -> Value {
    if !ri.custom
        && let Some(m) = o.as_object_mut()
    {
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

pub(super) fn list(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: Option<&str>,
) -> Result<Response<ResBody>, Status> {
    let (ls, fs) = selectors(ctx, ri)?;
    let limit = match ctx.query.get("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| bad(format!("limit: Invalid value: {l:?}")))?,
        ),
        _ => None,
    };
    let filter = |o: &Value| ls.matches(o) && fs.matches(o);
    let unfiltered = ls.is_empty() && fs.is_empty();
    let page = app
        .store
        .list(
            &ri.group_resource(),
            ns,
            &filter,
            limit,
            ctx.query.get("continue").filter(|c| !c.is_empty()),
            unfiltered,
        )
        .map_err(|e| store_err(ri, "", e))?;
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    match ctx.rendering {
        Rendering::Table => {
            let inc = IncludeObject::parse(ctx.query.get("includeObject")).map_err(bad)?;
            let t = table::table(
                ri,
                &page.items,
                meta,
                inc,
                true,
                time::OffsetDateTime::now_utc(),
            );
            Ok(web::json(
                StatusCode::OK,
                &t,
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                ctx.gzip,
            ))
        }
        Rendering::Partial => {
            let items: Vec<Value> = page.items.iter().map(table::partial).collect();
            let v = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
            Ok(web::json(
                StatusCode::OK,
                &v,
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
                ctx.gzip,
            ))
        }
        _ => {
            let items: Vec<Value> = page.items.into_iter().map(|o| list_item(ri, o)).collect();
            let v = json!({"kind": ri.list_kind, "apiVersion": ri.api_version(), "metadata": meta, "items": items});
            Ok(web::json(StatusCode::OK, &v, "application/json", ctx.gzip))
        }
    }
}
