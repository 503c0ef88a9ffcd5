//! The response body of an MCP request, passed on chunk by chunk while the
//! JSON-RPC responses in it are read: an `application/json` body is kept up
//! to a bound and read at its end; a `text/event-stream` is parsed event by
//! event as it passes. Each response that answers a tool call in flight ends
//! that call (recorded by the front). Nothing is held back from the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use mcp_warden_shared::mcp::{self, CallEnd, Message, RpcId, SseParser};
use tokio::sync::mpsc;

use super::McpFront;
use crate::hooks::{BoxError, ProxyBody};

/// How the body is read.
pub(super) enum Mode {
    /// One JSON-RPC body: kept up to the bound, read at the end.
    Json { buf: Vec<u8>, over: bool },
    /// A stream of events.
    Sse(SseParser),
}

/// Which calls the body may answer.
pub(super) enum Scope {
    /// The calls forwarded in this request (streamable HTTP POST): keys in
    /// the registry by JSON-RPC id. `leave_pending`: the answer comes on
    /// another stream (a `202 Accepted`), so the end of this body ends none.
    Owned {
        calls: Vec<(RpcId, u64)>,
        leave_pending: bool,
    },
    /// Any call of a session (a GET stream); the SSE transport's session is
    /// learned from its `endpoint` event, and when its stream ends the
    /// session's calls still in flight end without a response.
    Session { session: String, legacy: bool },
}

/// The tapped body.
pub(super) struct Tap {
    inner: ProxyBody,
    front: Arc<McpFront>,
    mode: Mode,
    scope: Scope,
    done: bool,
    /// The SSE transport's stream: events of the sidecar's own (answers to
    /// refused calls), put in between the server's events.
    inject: Option<(String, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>)>,
}

impl Tap {
    pub(super) fn new(inner: ProxyBody, front: Arc<McpFront>, mode: Mode, scope: Scope) -> Self {
        Tap {
            inner,
            front,
            mode,
            scope,
            done: false,
            inject: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        let limit = self.front.max_body;
        match &mut self.mode {
            Mode::Json { buf, over } => {
                if !*over && buf.len() + chunk.len() <= limit {
                    buf.extend_from_slice(chunk);
                } else {
                    *over = true;
                    buf.clear();
                }
            }
            Mode::Sse(p) => {
                for ev in p.feed(chunk) {
                    if ev.overflow {
                        continue;
                    }
                    match ev.kind() {
                        "endpoint" => self.learn_session(&ev.data),
                        "message" => {
                            if let Ok(batch) = mcp::parse_body(ev.data.as_bytes()) {
                                self.answer(&batch.messages);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The SSE transport names its session in the `endpoint` event's URL.
    fn learn_session(&mut self, data: &str) {
        if let Scope::Session { session, legacy } = &mut self.scope
            && let Some(s) = super::session_from_query(data.split_once('?').map(|(_, q)| q))
        {
            let (tx, rx) = mpsc::channel(super::INJECT_QUEUE);
            self.front.register_sse_stream(&s, tx.clone());
            self.inject = Some((s.clone(), tx, rx));
            *session = s;
            *legacy = true;
        }
    }

    fn answer(&mut self, messages: &[Message]) {
        for m in messages {
            let Message::Response {
                id: Some(id),
                outcome,
            } = m
            else {
                continue;
            };
            let pending = match &mut self.scope {
                Scope::Owned { calls, .. } => calls
                    .iter()
                    .position(|(rid, _)| rid == id)
                    .map(|i| calls.swap_remove(i))
                    .and_then(|(_, key)| self.front.calls.take(key)),
                Scope::Session { session, .. } => self.front.calls.take_answer(session, id),
            };
            if let Some(p) = pending {
                self.front.record(p, CallEnd::Answered(outcome.clone()));
            }
        }
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some((session, tx, _)) = self.inject.take() {
            self.front.unregister_sse_stream(&session, &tx);
        }
        let mut unreadable = false;
        if let Mode::Json { buf, over } = &mut self.mode {
            let buf = std::mem::take(buf);
            match (*over, mcp::parse_body(&buf)) {
                (false, Ok(batch)) => self.answer(&batch.messages),
                _ => unreadable = !buf.is_empty() || *over,
            }
        }
        match &mut self.scope {
            Scope::Owned {
                calls,
                leave_pending,
            } => {
                if *leave_pending {
                    let keys = calls.drain(..).map(|(_, k)| k).collect();
                    self.front.clone().expire_later(keys);
                    return;
                }
                for (_, key) in calls.drain(..) {
                    if let Some(p) = self.front.calls.take(key) {
                        let end = if unreadable {
                            CallEnd::Unreadable
                        } else {
                            CallEnd::NoResponse
                        };
                        self.front.record(p, end);
                    }
                }
            }
            Scope::Session { session, legacy } => {
                if *legacy && !session.is_empty() {
                    for p in self.front.calls.take_session(session) {
                        self.front.record(p, CallEnd::NoResponse);
                    }
                }
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for Tap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let between_events = matches!(&this.mode, Mode::Sse(p) if p.at_boundary());
        if between_events
            && let Some((_, _, rx)) = &mut this.inject
            && let Poll::Ready(Some(event)) = rx.poll_recv(cx)
        {
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.inject.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
