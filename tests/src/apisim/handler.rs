//! Request handling: authentication, routing, the verbs on resources
//! (get, list, watch, create, update, patch, delete, deletecollection),
//! subresources (status, scale, token, the streaming pod ones), reviews, and
//! the one place errors become `Status` responses.

use super::ResBody;
use super::auth::{Authenticator, User};
use super::discovery;
use super::objects::{self, Ips};
use super::openapi;
use super::patch::{self, PatchType};
use super::proto;
use super::registry::{Registry, ResourceInfo};
use super::router::{self, ResPath, Route};
use super::selector::{FieldSelector, LabelSelector, supported_fields};
use super::store::{Event, Store, StoreError};
use super::streams;
use super::table::{self, IncludeObject};
use super::web::{self, Query, Rendering};
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use mcp_warden_shared::status::{Reason, Status};
use rand::RngCore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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

fn get(
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

fn selectors(ctx: &Ctx, ri: &ResourceInfo) -> Result<(LabelSelector, FieldSelector), Status> {
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
fn list_item(ri: &ResourceInfo, mut o: Value) -> Value {
    if !ri.custom
        && let Some(m) = o.as_object_mut()
    {
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

fn list(
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

fn watch_frame(type_: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<Response<ResBody>, Status> {
    let (ls, mut fs) = selectors(ctx, ri)?;
    if let Some(n) = name {
        fs.0.push(("metadata.name".into(), n.to_string(), false));
    }
    let rv_param = ctx.query.get("resourceVersion").unwrap_or("");
    let send_initial = ctx.query.get("sendInitialEvents").map(|v| v == "true");
    let from_rv = match (rv_param, send_initial) {
        (_, Some(true)) => None,
        ("" | "0", _) => None,
        (v, _) => Some(
            v.parse::<u64>()
                .map_err(|_| bad(format!("resourceVersion: Invalid value: {v:?}")))?,
        ),
    };
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1800);
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let inc = IncludeObject::parse(ctx.query.get("includeObject")).map_err(bad)?;
    let rendering = ctx.rendering;
    let ri2 = ri.clone();
    let gr = ri.group_resource();
    let ns_owned = ns.map(str::to_string);
    let (initial, start_rv, mut rx) = match app.store.watch(&gr, ns, from_rv) {
        Ok(x) => x,
        Err(StoreError::Gone(rv)) => {
            // A watch from a compacted version gets a 200 stream with one
            // ERROR event, like kube-apiserver.
            let st = Status::new(
                Reason::Expired,
                format!(
                    "too old resource version: {rv} ({})",
                    app.store.current_rv()
                ),
            )
            .to_value();
            let mut st = st;
            st["code"] = json!(410);
            return Ok(web::bytes_response(
                StatusCode::OK,
                watch_frame("ERROR", &st).to_vec(),
                "application/json",
                false,
            ));
        }
        Err(e) => return Err(store_err(ri, "", e)),
    };
    let interval = app.bookmark_interval;
    let (tx, rx_body) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let filter = move |o: &Value| ls.matches(o) && fs.matches(o);
    let render = move |o: &Value, first: bool| -> Value {
        match rendering {
            Rendering::Table => table::table(
                &ri2,
                std::slice::from_ref(o),
                json!({"resourceVersion": o["metadata"]["resourceVersion"]}),
                inc,
                first,
                time::OffsetDateTime::now_utc(),
            ),
            Rendering::Partial => table::partial(o),
            _ => o.clone(),
        }
    };
    let bookmark_kind = (ri.kind.clone(), ri.api_version());
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut first = true;
        let mut last_rv = start_rv;
        // Like the watch cache: a change that moves an object into or out of
        // the selection is seen as ADDED or DELETED.
        let effective = |ev: &Event| -> Option<&'static str> {
            let now = filter(&ev.object);
            let before = ev.old.as_ref().map(|o| filter(o));
            match (ev.type_, before, now) {
                ("MODIFIED", Some(false), true) => Some("ADDED"),
                ("MODIFIED", Some(true), false) => Some("DELETED"),
                (t, _, true) => Some(t),
                _ => None,
            }
        };
        let send =
            |type_: &str, ev: &Event, first: bool| watch_frame(type_, &render(&ev.object, first));
        for ev in &initial {
            if let Some(type_) = effective(ev) {
                if tx
                    .send(Ok(Frame::data(send(type_, ev, first))))
                    .await
                    .is_err()
                {
                    return;
                }
                first = false;
            }
        }
        let bookmark = |rv: u64, initial_end: bool| {
            let mut md = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
            if initial_end {
                md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            watch_frame(
                "BOOKMARK",
                &json!({"kind": bookmark_kind.0, "apiVersion": bookmark_kind.1, "metadata": md}),
            )
        };
        if send_initial == Some(true)
            && bookmarks
            && tx
                .send(Ok(Frame::data(bookmark(start_rv, true))))
                .await
                .is_err()
        {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(Frame::data(bookmark(last_rv, false)))).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        // Fell behind or server shutting down: end the watch,
                        // clients re-list as they do after any watch ends.
                        Err(_) => return,
                    };
                    if ev.rv <= start_rv || ev.group_resource != gr || ns_owned.as_deref().is_some_and(|n| n != ev.namespace) {
                        continue;
                    }
                    last_rv = ev.rv;
                    let Some(type_) = effective(&ev) else {
                        continue;
                    };
                    if tx.send(Ok(Frame::data(send(type_, &ev, first)))).await.is_err() {
                        return;
                    }
                    first = false;
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(
            rx_body,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        );
    let body: ResBody = BodyExt::boxed(StreamBody::new(stream));
    let ct = match rendering {
        Rendering::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .header("Cache-Control", "no-cache, private")
        .body(body)
        .map_err(|e| Status::new(Reason::InternalError, e.to_string()))
}

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
fn check_identity(ri: &ResourceInfo, ns: &str, obj: &mut Value) -> Result<(), Status> {
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
fn has_generation(ri: &ResourceInfo) -> bool {
    ri.custom
        || ri.resource == "customresourcedefinitions"
        || (ri.group == "apps" && ri.resource == "deployments")
}

fn prepare_create(
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
        super::registry::from_crd(&obj)
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
fn custom_schema(ri: &ResourceInfo, name: &str, obj: &mut Value) -> Result<(), Status> {
    let Some(schema) = ri.schema.as_ref().filter(|_| ri.custom) else {
        return Ok(());
    };
    let errors = super::schema::admit(schema, obj);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(super::schema::invalid(&ri.kind, &ri.group, name, &errors))
    }
}

fn create(
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
        user: super::auth::admin_user(),
        query: Query::default(),
        rendering: Rendering::Object,
        gzip: false,
        content_type: "application/json".into(),
        user_agent: "kube-apisim".into(),
    }
}

fn after_create(app: &App, ri: &ResourceInfo, obj: &Value) {
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
fn update(
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
fn store_update(
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
    new = super::admission::admit_update(&app.store, user, ri, ns, name, sub, &cur, new, dry)?;
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
        super::registry::from_crd(&new)
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

fn apply_patch(
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

fn patch_obj(
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

fn delete(
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
        if let Ok(types) = super::registry::from_crd(&crd)
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

fn delete_collection(
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

fn scale_of(app: &App, ri: &ResourceInfo, ns: &str, name: &str) -> Result<Value, Status> {
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

fn scale_get(
    app: &App,
    ctx: &Ctx,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<Response<ResBody>, Status> {
    let s = scale_of(app, ri, ns, name)?;
    Ok(web::json(StatusCode::OK, &s, "application/json", ctx.gzip))
}

fn scale_set(
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
        s["spec"]["replicas"] = json!(replicas);
        s
    } else {
        scale_of(app, ri, ns, name)?
    };
    Ok(web::json(StatusCode::OK, &s, "application/json", ctx.gzip))
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn token_request(
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

fn user_info(u: &User) -> Value {
    json!({"username": u.username, "uid": u.uid, "groups": u.groups})
}

fn self_subject_review(ctx: &Ctx, method: &Method) -> Result<Response<ResBody>, Status> {
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

fn access_review(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response<ResBody>, Status> {
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

fn token_review(
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
