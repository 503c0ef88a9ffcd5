//! The create-only review resources: SelfSubjectReview,
//! SelfSubjectAccessReview (everything allowed) and TokenReview.

use super::{App, Ctx, decode_body, now_unix};
use crate::apisim::ResBody;
use crate::apisim::auth::User;
use crate::apisim::objects;
use crate::apisim::web;
use http::{Method, Response, StatusCode};
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};

fn user_info(u: &User) -> Value {
    json!({"username": u.username, "uid": u.uid, "groups": u.groups})
}

pub(super) fn self_subject_review(ctx: &Ctx, method: &Method) -> Result<Response<ResBody>, Status> {
    if method != Method::POST {
        return Err(Status::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        ));
    }
    let v = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": objects::now_rfc3339()},
        "status": {"userInfo": user_info(&ctx.user)},
    });
    Ok(web::json(
        StatusCode::CREATED,
        &v,
        "application/json",
        false,
    ))
}

pub(super) fn access_review(
    ctx: &Ctx,
    method: &Method,
    body: &[u8],
) -> Result<Response<ResBody>, Status> {
    if method != Method::POST {
        return Err(Status::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        ));
    }
    let mut v = decode_body(ctx, body)?;
    // kube-apisim authorizes every authenticated user for everything.
    v["status"] = json!({"allowed": true, "reason": "kube-apisim allows every authenticated user"});
    v["metadata"]["creationTimestamp"] = json!(objects::now_rfc3339());
    Ok(web::json(
        StatusCode::CREATED,
        &v,
        "application/json",
        false,
    ))
}

pub(super) fn token_review(
    app: &App,
    ctx: &Ctx,
    method: &Method,
    body: &[u8],
) -> Result<Response<ResBody>, Status> {
    if method != Method::POST {
        return Err(Status::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        ));
    }
    let mut v = decode_body(ctx, body)?;
    let token = v
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    v["status"] = match app
        .auth
        .authenticate(Some(&format!("Bearer {token}")), now_unix())
    {
        Some(u) => {
            json!({"authenticated": true, "user": user_info(&u), "audiences": v.pointer("/spec/audiences").cloned().unwrap_or(json!([]))})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Ok(web::json(
        StatusCode::CREATED,
        &v,
        "application/json",
        false,
    ))
}
