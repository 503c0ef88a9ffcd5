//! Patches (`PATCH`): JSON, merge, strategic merge and server-side apply
//! bodies, the types of the patched object, apply's create-on-patch.

use super::create::{after_create, check_identity, prepare_create};
use super::update::store_update;
use super::{App, Ctx, bad, decode_body, dry_run, field_manager, not_found, render_one, store_err};
use crate::apisim::ResBody;
use crate::apisim::objects;
use crate::apisim::patch::{self, PatchType};
use crate::apisim::registry::ResourceInfo;
use http::{Response, StatusCode};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};

pub(super) fn apply_patch(
    ctx: &Ctx,
    pt: PatchType,
    cur: &Value,
    body: &[u8],
    custom: bool,
) -> Result<Value, Status> {
    let _ = ctx;
    let to_status = |e: patch::PatchError| match e {
        patch::PatchError::Apply(m) => Status::new(Reason::Invalid, m),
        other => bad(other.to_string()),
    };
    match pt {
        PatchType::Json => patch::json_patch(cur, body).map_err(to_status),
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| bad(format!("error decoding patch: {e}")))?;
            Ok(patch::merge_patch(cur, &p))
        }
        PatchType::Strategic => {
            if custom {
                return Err(Status::new(
                    Reason::UnsupportedMediaType,
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| bad(format!("error decoding patch: {e}")))?;
            patch::strategic_merge(cur, &p).map_err(to_status)
        }
        PatchType::Apply => Err(bad("apply patches are handled separately")),
    }
}

/// A patch result kube-apiserver could not decode into the built-in type
/// (a ConfigMap's or Secret's `data` that is no map of strings) is 422
/// Invalid on `patch:`, as there (its message also embeds the patched object).
fn patched_types(ri: &ResourceInfo, patched: &Value) -> Result<(), Status> {
    if ri.custom
        || !ri.group.is_empty()
        || !matches!(ri.resource.as_str(), "configmaps" | "secrets")
    {
        return Ok(());
    }
    for field in ["data", "binaryData", "stringData"] {
        let Some(v) = patched.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let ok = v
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !ok {
            let what = match v {
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                Value::Array(_) => "array",
                _ => "object",
            };
            return Err(Status::new(
                Reason::Invalid,
                format!(
                    "{} \"{}\" is invalid: patch: Invalid value: \"...\": json: cannot unmarshal {what} into Go struct field {}.{field} of type map[string]{}",
                    ri.kind,
                    patched["metadata"]["name"].as_str().unwrap_or(""),
                    ri.kind,
                    if ri.resource == "secrets" && field != "stringData" {
                        "[]uint8"
                    } else {
                        "string"
                    },
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn patch_obj(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    body: &[u8],
) -> Result<Response<ResBody>, Status> {
    let dry = dry_run(ctx, None)?;
    let pt = PatchType::from_content_type(&ctx.content_type).ok_or_else(|| {
        Status::new(
            Reason::UnsupportedMediaType,
            patch::PatchError::UnknownType.to_string(),
        )
    })?;
    if body.is_empty() {
        return Err(bad("the body of the request was empty"));
    }
    let gr = ri.group_resource();
    let cur = app.store.get(&gr, ns, name);
    if pt == PatchType::Apply {
        let manager = match ctx.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => {
                return Err(Status::new(
                    Reason::BadRequest,
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
        };
        let mut applied = decode_body(ctx, body)?;
        check_identity(ri, ns, &mut applied)?;
        match applied["metadata"]["name"].as_str() {
            Some(n) if n == name => {}
            None | Some("") => applied["metadata"]["name"] = json!(name),
            Some(n) => {
                return Err(bad(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        return match cur {
            None => {
                let obj = prepare_create(app, ctx, ri, ns, applied, &manager, "Apply")?;
                let stored = if dry {
                    obj
                } else {
                    let s = app
                        .store
                        .create(&gr, ns, name, obj)
                        .map_err(|e| store_err(ri, name, e))?;
                    after_create(app, ri, &s);
                    s
                };
                render_one(ri, ctx, &stored, StatusCode::CREATED)
            }
            Some(cur) => {
                let mut merged = patch::apply_merge(&cur, &applied, ri.custom)
                    .map_err(|e| bad(e.to_string()))?;
                if let Some(prev) = objects::manager_fields(&cur, &manager, "Apply") {
                    objects::prune_unapplied(&mut merged, &prev, &applied);
                }
                let (out, code) = store_update(
                    app,
                    &ctx.user,
                    ri,
                    ns,
                    name,
                    merged,
                    sub,
                    &manager,
                    "Apply",
                    dry,
                    Some(&applied),
                )?;
                render_one(ri, ctx, &out, code)
            }
        };
    }
    let cur = cur.ok_or_else(|| not_found(ri, name))?;
    let mut patched = apply_patch(ctx, pt, &cur, body, ri.custom)?;
    // A resourceVersion in the patch is a precondition; otherwise last write wins.
    let precondition = patched["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    if precondition.as_deref() == cur["metadata"]["resourceVersion"].as_str()
        && let Some(m) = patched["metadata"].as_object_mut()
    {
        m.remove("resourceVersion");
    }
    if !patched.is_object() {
        return Err(bad("patched object is not a JSON object"));
    }
    for k in ["apiVersion", "kind"] {
        if patched.get(k) != cur.get(k) {
            return Err(bad(format!("{k} cannot be changed by a patch")));
        }
    }
    if patched["metadata"]["name"].as_str() != Some(name) {
        return Err(objects::invalid(
            ri,
            name,
            "metadata.name",
            patched["metadata"]["name"].as_str().unwrap_or(""),
            "field is immutable",
        ));
    }
    patched_types(ri, &patched)?;
    let manager = field_manager(ctx, "unknown");
    let (out, code) = store_update(
        app, &ctx.user, ri, ns, name, patched, sub, &manager, "Update", dry, None,
    )?;
    render_one(ri, ctx, &out, code)
}
