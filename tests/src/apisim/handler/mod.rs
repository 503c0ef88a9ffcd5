//! Request handling: authentication, routing to the verbs on resources, and
//! the one place errors become `Status` responses. Each verb has a module:
//! `read` (get, list), `watch`, `create` (and the seed), `update`,
//! `patches`, `delete` (and deletecollection), `subresources` (scale,
//! token; status goes with get/update/patch, the streaming pod ones to
//! [`streams`]) and `reviews`. Shared here: the request context, the
//! `Status` builders, body decoding, dry-run and field-manager options, and
//! rendering of one object.

use super::ResBody;
use super::auth::{Authenticator, User};
use super::discovery;
use super::objects::Ips;
use super::openapi;
use super::patch::{self, PatchType};
use super::proto;
use super::registry::{Registry, ResourceInfo};
use super::router::{self, ResPath, Route};
use super::store::{Store, StoreError};
use super::streams;
use super::table::{self, IncludeObject};
use super::web::{self, Query, Rendering};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

mod create;
mod delete;
mod patches;
mod read;
mod reviews;
mod subresources;
mod update;
mod watch;

use create::create;
pub use create::load_objects;
use delete::{delete, delete_collection};
use patches::{apply_patch, patch_obj};
use read::{get, list};
use reviews::{access_review, self_subject_review, token_review};
use subresources::{scale_get, scale_of, scale_set, token_request};
use update::update;
use watch::watch;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared server state.
pub struct App {
    pub store: Store,
    pub registry: Registry,
    pub auth: Authenticator,
    /// `gitVersion` reported by `/version`.
    pub version: String,
    /// `host:port` reported in `/api`'s serverAddressByClientCIDRs.
    pub server_addr: String,
    pub ips: Ips,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// The CA certificate (PEM), published in every namespace's
    /// `kube-root-ca.crt` ConfigMap like kube-controller-manager does.
    pub ca_pem: String,
}

/// Per-request context after authentication.
struct Ctx {
    user: User,
    query: Query,
    rendering: Rendering,
    gzip: bool,
    content_type: String,
    user_agent: String,
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Handles one HTTP request; never panics on input, errors are Status objects.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<ResBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let hdr = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = hdr(header::ACCEPT);
    tracing::info!(
        method = %method,
        path = %path,
        query = req.uri().query().unwrap_or(""),
        accept = accept.as_deref().unwrap_or(""),
        content_type = hdr(header::CONTENT_TYPE).as_deref().unwrap_or(""),
        user_agent = hdr(header::USER_AGENT).as_deref().unwrap_or(""),
        "request"
    );
    let Some(user) = app
        .auth
        .authenticate(hdr(header::AUTHORIZATION).as_deref(), now_unix())
    else {
        tracing::info!(path = %path, "unauthorized");
        return web::status(&Status::new(Reason::Unauthorized, "Unauthorized"));
    };
    let route = router::parse(&path);
    let discovery_path = matches!(route, Route::Api | Route::Apis);
    let ctx = Ctx {
        user,
        query: Query::parse(req.uri().query()),
        rendering: web::negotiate(accept.as_deref(), discovery_path),
        gzip: web::accepts_gzip(hdr(header::ACCEPT_ENCODING).as_deref()),
        content_type: hdr(header::CONTENT_TYPE).unwrap_or_default(),
        user_agent: hdr(header::USER_AGENT).unwrap_or_default(),
    };
    // Streaming pod subresources take the raw request (upgrades).
    if let Route::Resource(rp) = &route
        && let Some(kind) = stream_kind(rp)
    {
        return match stream_pod(&app, rp) {
            Ok(pod) => streams::serve(kind, pod, req).await,
            Err(s) => web::status(&s),
        };
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let s = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Status::new(
                    Reason::RequestEntityTooLarge,
                    "Request entity too large: limit is 3145728",
                )
            } else {
                Status::new(
                    Reason::BadRequest,
                    format!("error reading request body: {e}"),
                )
            };
            return web::status(&s);
        }
    };
    let res = match route {
        Route::Version => Ok(web::json(
            StatusCode::OK,
            &discovery::version(&app.version),
            "application/json",
            false,
        )),
        Route::Health => Ok(web::bytes_response(
            StatusCode::OK,
            b"ok".to_vec(),
            "text/plain; charset=utf-8",
            false,
        )),
        Route::OpenApi => openapi_doc(&app, &ctx, &path),
        Route::Api | Route::Apis => Ok(discovery_root(&app, &ctx, matches!(route, Route::Api))),
        Route::ApiGroup(g) => discovery::api_group(&app.registry.all(), &g)
            .map(|v| web::json(StatusCode::OK, &v, "application/json", ctx.gzip))
            .ok_or_else(not_found_path),
        Route::ApiResources { group, version } => {
            discovery::resource_list(&app.registry.all(), &group, &version)
                .map(|v| web::json(StatusCode::OK, &v, "application/json", ctx.gzip))
                .ok_or_else(not_found_path)
        }
        Route::Resource(rp) => resource(&app, &ctx, &method, rp, body),
        Route::NotFound => Err(not_found_path()),
    };
    match res {
        Ok(r) => {
            tracing::info!(path = %path, code = r.status().as_u16(), "response");
            r
        }
        Err(s) => {
            tracing::info!(path = %path, code = s.code(), reason = s.reason.as_str(), message = %s.message, "error");
            web::status(&s)
        }
    }
}

fn openapi_doc(app: &App, ctx: &Ctx, path: &str) -> Result<Response<ResBody>, Status> {
    use sha2::Digest;
    let types = app.registry.all();
    let rest = path.trim_end_matches('/');
    if rest == "/openapi/v3" {
        let names: Vec<String> = types
            .iter()
            .map(|t| format!("{}/{}/{}", t.group, t.version, t.resource))
            .collect();
        let hash = hex::encode(sha2::Sha256::digest(names.join(",").as_bytes()));
        return Ok(web::json(
            StatusCode::OK,
            &openapi::root(&types, &hash[..16]),
            "application/json",
            ctx.gzip,
        ));
    }
    match rest.strip_prefix("/openapi/v3/") {
        Some(gv) => openapi::group_version(&types, gv, &app.version)
            .map(|d| web::json(StatusCode::OK, &d, "application/json", ctx.gzip))
            .ok_or_else(not_found_path),
        None => Err(not_found_path()),
    }
}

fn not_found_path() -> Status {
    Status::new(
        Reason::NotFound,
        "the server could not find the requested resource",
    )
}

fn stream_kind(rp: &ResPath) -> Option<streams::StreamKind> {
    if !rp.group.is_empty() || rp.resource != "pods" || rp.name.is_none() {
        return None;
    }
    match rp.subresource.as_deref() {
        Some("log") => Some(streams::StreamKind::Log),
        Some("exec") => Some(streams::StreamKind::Exec),
        Some("attach") => Some(streams::StreamKind::Attach),
        Some("portforward") => Some(streams::StreamKind::PortForward),
        _ => None,
    }
}

fn stream_pod(app: &App, rp: &ResPath) -> Result<streams::PodRef, Status> {
    let ns = rp.namespace.clone().unwrap_or_default();
    let name = rp.name.clone().unwrap_or_default();
    let ri = app
        .registry
        .find("", "v1", "pods")
        .ok_or_else(not_found_path)?;
    match app.store.get(&ri.group_resource(), &ns, &name) {
        Some(pod) => Ok(streams::PodRef {
            namespace: ns,
            name,
            pod,
        }),
        None => Err(not_found(&ri, &name)),
    }
}

fn discovery_root(app: &App, ctx: &Ctx, core: bool) -> Response<ResBody> {
    let types = app.registry.all();
    match ctx.rendering {
        Rendering::Aggregated(v) => {
            let api_version = format!("apidiscovery.k8s.io/{v}");
            let ct =
                format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
            web::json(
                StatusCode::OK,
                &discovery::aggregated(&types, core, &api_version),
                &ct,
                ctx.gzip,
            )
        }
        _ if core => web::json(
            StatusCode::OK,
            &discovery::api_versions(&app.server_addr),
            "application/json",
            ctx.gzip,
        ),
        _ => web::json(
            StatusCode::OK,
            &discovery::api_group_list(&types),
            "application/json",
            ctx.gzip,
        ),
    }
}

fn not_found(ri: &ResourceInfo, name: &str) -> Status {
    Status::new(
        Reason::NotFound,
        format!("{} \"{name}\" not found", ri.qualified()),
    )
    .with_details(&ri.resource, &ri.group, name)
}

fn already_exists(ri: &ResourceInfo, name: &str) -> Status {
    Status::new(
        Reason::AlreadyExists,
        format!("{} \"{name}\" already exists", ri.qualified()),
    )
    .with_details(&ri.resource, &ri.group, name)
}

fn conflict(ri: &ResourceInfo, name: &str) -> Status {
    Status::new(
        Reason::Conflict,
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            ri.qualified()
        ),
    )
    .with_details(&ri.resource, &ri.group, name)
}

fn bad(msg: impl Into<String>) -> Status {
    Status::new(Reason::BadRequest, msg)
}

fn store_err(ri: &ResourceInfo, name: &str, e: StoreError) -> Status {
    match e {
        StoreError::NotFound => not_found(ri, name),
        StoreError::AlreadyExists => already_exists(ri, name),
        StoreError::Conflict { .. } => conflict(ri, name),
        StoreError::Gone(rv) => {
            Status::new(Reason::Expired, format!("too old resource version: {rv}"))
        }
        StoreError::BadContinue => {
            bad("continue key is not valid: the continue token is not valid")
        }
    }
}

fn ns_not_found(ns: &str) -> Status {
    Status::new(Reason::NotFound, format!("namespaces \"{ns}\" not found")).with_details(
        "namespaces",
        "",
        ns,
    )
}

/// Decodes a JSON (or YAML) request body into an object.
fn decode_body(ctx: &Ctx, body: &[u8]) -> Result<Value, Status> {
    if body.is_empty() {
        return Err(bad("the body of the request was empty"));
    }
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let v: Value = if ct == "application/yaml" || ct == "application/apply-patch+yaml" {
        let text =
            std::str::from_utf8(body).map_err(|_| bad("error decoding YAML: body is not UTF-8"))?;
        match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => serde_saphyr::from_str(text)
                .map_err(|e| bad(format!("error decoding YAML: {e}")))?,
        }
    } else if ct.is_empty() || ct == "application/json" || ct.ends_with("+json") {
        serde_json::from_slice(body)
            .map_err(|e| bad(format!("couldn't get version/kind; json parse error: {e}")))?
    } else if ct == "application/vnd.kubernetes.protobuf" {
        match proto::decode(body) {
            Ok(v) => v,
            Err(e @ proto::ProtoError::Unsupported(_)) => {
                return Err(Status::new(Reason::UnsupportedMediaType, e.to_string()));
            }
            Err(e) => return Err(bad(e.to_string())),
        }
    } else {
        return Err(Status::new(
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
            ),
        ));
    };
    if !v.is_object() {
        return Err(bad(
            "Object 'Kind' is missing in request body: not a JSON object",
        ));
    }
    Ok(v)
}

fn dry_run(ctx: &Ctx, body_opts: Option<&Value>) -> Result<bool, Status> {
    let mut vals: Vec<String> = ctx
        .query
        .all("dryRun")
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(a) = body_opts
        .and_then(|o| o.get("dryRun"))
        .and_then(Value::as_array)
    {
        vals.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
    }
    for v in &vals {
        if v != "All" {
            return Err(Status::new(
                Reason::BadRequest,
                format!("dryRun: Unsupported value: \"{v}\": supported values: \"All\""),
            ));
        }
    }
    Ok(!vals.is_empty())
}

fn field_manager(ctx: &Ctx, default: &str) -> String {
    match ctx.query.get("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => {
            let ua = ctx.user_agent.split('/').next().unwrap_or("").trim();
            if ua.is_empty() {
                default.to_string()
            } else {
                ua.to_string()
            }
        }
    }
}

fn resource(
    app: &App,
    ctx: &Ctx,
    method: &Method,
    rp: ResPath,
    body: Bytes,
) -> Result<Response<ResBody>, Status> {
    // Reviews are create-only virtual resources.
    if rp.version == "v1" && rp.name.is_none() && rp.namespace.is_none() {
        match (rp.group.as_str(), rp.resource.as_str()) {
            ("authentication.k8s.io", "selfsubjectreviews") => {
                return self_subject_review(ctx, method);
            }
            ("authorization.k8s.io", "selfsubjectaccessreviews") => {
                return access_review(ctx, method, &body);
            }
            ("authentication.k8s.io", "tokenreviews") => {
                return token_review(app, ctx, method, &body);
            }
            _ => {}
        }
    }
    let Some(ri) = app.registry.find(&rp.group, &rp.version, &rp.resource) else {
        return Err(not_found_path());
    };
    if !ri.namespaced && rp.namespace.is_some() {
        return Err(not_found_path());
    }
    if let Some(sub) = &rp.subresource
        && !ri.has_subresource(sub)
    {
        return Err(not_found_path());
    }
    let ns = rp.namespace.clone().unwrap_or_default();
    let sub = rp.subresource.as_deref();
    match (method, rp.name.as_deref(), sub) {
        (&Method::GET, None, None) => {
            if rp.watch_prefix || ctx.query.flag("watch") {
                watch(app, ctx, &ri, rp.namespace.as_deref(), None)
            } else {
                list(app, ctx, &ri, rp.namespace.as_deref())
            }
        }
        (&Method::GET, Some(name), None) if rp.watch_prefix => {
            watch(app, ctx, &ri, rp.namespace.as_deref(), Some(name))
        }
        (&Method::GET, Some(name), None | Some("status")) => get(app, ctx, &ri, &ns, name),
        (&Method::GET, Some(name), Some("scale")) => scale_get(app, ctx, &ri, &ns, name),
        (&Method::POST, None, None) => {
            if ri.namespaced && rp.namespace.is_none() {
                return Err(Status::new(
                    Reason::MethodNotAllowed,
                    "the server does not allow this method on the requested resource".to_string(),
                ));
            }
            create(app, ctx, &ri, &ns, decode_body(ctx, &body)?)
        }
        (&Method::POST, Some(name), Some("token")) => {
            token_request(app, ctx, &ri, &ns, name, &body)
        }
        (&Method::PUT, Some(name), None | Some("status")) => {
            let obj = decode_body(ctx, &body)?;
            update(app, ctx, &ri, &ns, name, obj, sub, "Update")
        }
        (&Method::PUT, Some(name), Some("scale")) => {
            let obj = decode_body(ctx, &body)?;
            scale_set(
                app,
                ctx,
                &ri,
                &ns,
                name,
                obj.pointer("/spec/replicas").cloned(),
            )
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            patch_obj(app, ctx, &ri, &ns, name, sub, &body)
        }
        (&Method::PATCH, Some(name), Some("scale")) => {
            let cur_scale = scale_of(app, &ri, &ns, name)?;
            let pt = PatchType::from_content_type(&ctx.content_type).ok_or_else(|| {
                Status::new(
                    Reason::UnsupportedMediaType,
                    patch::PatchError::UnknownType.to_string(),
                )
            })?;
            let patched = apply_patch(ctx, pt, &cur_scale, &body, false)?;
            scale_set(
                app,
                ctx,
                &ri,
                &ns,
                name,
                patched.pointer("/spec/replicas").cloned(),
            )
        }
        (&Method::DELETE, Some(name), None) => delete(app, ctx, &ri, &ns, name, &body),
        (&Method::DELETE, None, None) => {
            delete_collection(app, ctx, &ri, rp.namespace.as_deref(), &body)
        }
        _ => Err(Status::new(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// Renders one object according to the negotiated representation.
fn render_one(
    ri: &ResourceInfo,
    ctx: &Ctx,
    obj: &Value,
    code: StatusCode,
) -> Result<Response<ResBody>, Status> {
    match ctx.rendering {
        Rendering::Table => {
            let inc = IncludeObject::parse(ctx.query.get("includeObject")).map_err(bad)?;
            let t = table::table(
                ri,
                std::slice::from_ref(obj),
                json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
                inc,
                true,
                time::OffsetDateTime::now_utc(),
            );
            Ok(web::json(
                code,
                &t,
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                ctx.gzip,
            ))
        }
        Rendering::Partial => Ok(web::json(
            code,
            &table::partial(obj),
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            ctx.gzip,
        )),
        _ => Ok(web::json(code, obj, "application/json", ctx.gzip)),
    }
}
