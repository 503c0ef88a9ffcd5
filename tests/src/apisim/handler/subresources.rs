//! Subresources besides status: `scale` (get, update, patch) and
//! ServiceAccount `token` (TokenRequest).

use super::update::store_update;
use super::{App, Ctx, decode_body, dry_run, field_manager, not_found, now_unix};
use crate::apisim::ResBody;
use crate::apisim::auth::User;
use crate::apisim::objects;
use crate::apisim::registry::ResourceInfo;
use crate::apisim::web;
use base64::Engine;
use http::{Response, StatusCode};
use mcp_warden_shared::status::{Reason, Status};
use rand::RngCore;
use serde_json::{Value, json};

pub(super) fn scale_of(
    app: &App,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<Value, Status> {
    let cur = app
        .store
        .get(&ri.group_resource(), ns, name)
        .ok_or_else(|| not_found(ri, name))?;
    let sel = cur
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": ns, "uid": cur["metadata"]["uid"], "resourceVersion": cur["metadata"]["resourceVersion"], "creationTimestamp": cur["metadata"]["creationTimestamp"]},
        // `replicas` is omitempty in autoscaling/v1 ScaleSpec: absent at 0.
        "spec": match cur.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) {
            0 => json!({}),
            n => json!({"replicas": n}),
        },
        "status": {"replicas": cur.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": sel},
    }))
}

pub(super) fn scale_get(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<Response<ResBody>, Status> {
    let s = scale_of(app, ri, ns, name)?;
    Ok(web::json(StatusCode::OK, &s, "application/json", ctx.gzip))
}

pub(super) fn scale_set(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    replicas: Option<Value>,
) -> Result<Response<ResBody>, Status> {
    let dry = dry_run(ctx, None)?;
    let replicas = replicas.and_then(|r| r.as_i64()).filter(|r| *r >= 0).ok_or_else(|| {
        Status::new(Reason::Invalid, format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: must be a non-negative integer"))
    })?;
    let cur = app
        .store
        .get(&ri.group_resource(), ns, name)
        .ok_or_else(|| not_found(ri, name))?;
    let mut new = cur.clone();
    new["spec"]["replicas"] = json!(replicas);
    let manager = field_manager(ctx, "unknown");
    store_update(
        app, &ctx.user, ri, ns, name, new, None, &manager, "Update", dry, None,
    )?;
    let s = if dry {
        let mut s = scale_of(app, ri, ns, name)?;
        // As stored: `replicas` is omitempty, so a dry run to 0 has none.
        s["spec"] = match replicas {
            0 => json!({}),
            n => json!({"replicas": n}),
        };
        s
    } else {
        scale_of(app, ri, ns, name)?
    };
    Ok(web::json(StatusCode::OK, &s, "application/json", ctx.gzip))
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(super) fn token_request(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response<ResBody>, Status> {
    let req = if body.is_empty() {
        json!({})
    } else {
        decode_body(ctx, body)?
    };
    let sa = app
        .store
        .get(&ri.group_resource(), ns, name)
        .ok_or_else(|| not_found(ri, name))?;
    let exp_secs = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if exp_secs < 600 {
        return Err(Status::new(
            Reason::Invalid,
            format!(
                "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {exp_secs}: may not specify a duration less than 10 minutes"
            ),
        ));
    }
    let audiences: Vec<Value> = match req.pointer("/spec/audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.clone(),
        _ => vec![json!("https://kubernetes.default.svc.cluster.local")],
    };
    let now = now_unix();
    let exp = now + exp_secs;
    let sa_uid = sa["metadata"]["uid"].clone();
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}});
    if let Some(b) = req.pointer("/spec/boundObjectRef") {
        if b["kind"] == "Pod" {
            k8s["pod"] = json!({"name": b["name"], "uid": b["uid"]});
        } else if b["kind"] == "Secret" {
            k8s["secret"] = json!({"name": b["name"], "uid": b["uid"]});
        }
    }
    let claims = json!({
        "aud": audiences,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let header = json!({"alg": "RS256", "kid": "kube-apisim"});
    let mut sig = [0u8; 256];
    rand::rng().fill_bytes(&mut sig);
    let token = format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(&sig)
    );
    let exp_ts = time::OffsetDateTime::from_unix_timestamp(exp)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    app.auth.remember(
        token.clone(),
        User {
            username: format!("system:serviceaccount:{ns}:{name}"),
            uid: sa_uid.as_str().unwrap_or("").to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        },
        exp,
    );
    let mut spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(exp_secs);
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": objects::now_rfc3339()},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": exp_ts},
    });
    Ok(web::json(
        StatusCode::CREATED,
        &out,
        "application/json",
        false,
    ))
}
