//! Watches: the initial events, then the store's changes as `WatchEvent`
//! frames, with bookmarks and timeouts as kube-apiserver sends them.

use super::read::selectors;
use super::{App, Ctx, bad, store_err};
use crate::apisim::ResBody;
use crate::apisim::registry::ResourceInfo;
use crate::apisim::store::{Event, StoreError};
use crate::apisim::table::{self, IncludeObject};
use crate::apisim::web::{self, Rendering};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use mcp_warden_shared::status::{Reason, Status};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

fn watch_frame(type_: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub(super) fn watch(
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
    let send_initial = ctx
        .query
        .get("sendInitialEvents")
        .map(mcp_warden_shared::attrs::parse_bool);
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
