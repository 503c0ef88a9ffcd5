//! Bounded listeners: the accept loop and per-connection serving shared by
//! the app-facing TLS listener(s) and the plain-HTTP admin listener.
//!
//! What a connection may cost is bounded:
//! - **a cap per listener** ([`ListenerConfig::max_connections`]): past it a
//!   new connection is accepted and closed at once (so the backlog never
//!   fills and the kernel keeps answering), and counted in
//!   `mcp_warden_connections_refused_total{listener}`; the slot is held by
//!   the socket itself, so an upgraded connection (exec, attach,
//!   port-forward) keeps it until the tunnel closes;
//! - **TLS handshake** within `handshake_timeout`;
//! - **first byte** of the first request within `first_byte_timeout` after
//!   the handshake (or the accept, without TLS);
//! - **request head** (HTTP/1.1) within `header_read_timeout` of its first
//!   byte;
//! - **idle**: a connection with no request in progress is closed after
//!   `idle_timeout` — for HTTP/1.1 that is the keep-alive gap between two
//!   requests, for HTTP/2 a connection without open streams. A request "in
//!   progress" lasts from its head until its response body ends, so a watch
//!   with no events, a followed log or a held approval is never idle, however
//!   quiet the socket;
//! - **HTTP/2 keep-alive pings** every `http2_keepalive_interval`; a peer that
//!   does not answer within `http2_keepalive_timeout` is dropped;
//! - **request body**: a body that stalls (the sidecar is waiting for the
//!   client's next bytes) longer than `body_read_timeout` fails with an error,
//!   which cuts the request and closes the connection.
//!
//! hyper's own HTTP/1 `header_read_timeout` is not used: its timer starts as
//! soon as a keep-alive connection goes idle, so it would close idle
//! connections after the header timeout rather than the idle timeout. The
//! per-connection watchdog here does both, separately.
//!
//! Shutdown: [`Served::shutdown`] stops accepting, asks every connection to
//! finish gracefully (HTTP/1.1: close when the current request is done;
//! HTTP/2: GOAWAY), waits up to a grace period for them, and drops the rest.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mcp_warden_io::accept::{self, HandshakeError, tls_handshake};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::hooks::{BoxError, ProxyBody, boxed};
use crate::metrics::Metrics;

/// `AsyncWrite` for a wrapper `$ty<T>` whose field `inner: T` takes every
/// write as it is: the wrappers here only watch or replay the read side.
macro_rules! write_through {
    ($ty:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $ty<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

mod first_of;
mod h1;

/// After a connection was asked to close (idle GOAWAY, header timeout), how
/// long it may take before it is dropped, unless a request is in progress.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Limits of one listener. Defaults: see `config.rs`, which builds these
/// from the flags.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name of the listener in metrics and logs (`app`, `admin`, ...).
    pub name: String,
    /// Most connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Longest TLS handshake (TLS listeners only).
    pub handshake_timeout: Duration,
    /// Longest wait for the first byte after the handshake (or the accept).
    pub first_byte_timeout: Duration,
    /// Longest time from the first byte of an HTTP/1.1 request head to its end.
    pub header_read_timeout: Duration,
    /// Longest time a connection stays open with no request in progress.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings (`None`: no pings).
    pub http2_keepalive_interval: Option<Duration>,
    /// How long an HTTP/2 ping may go unanswered before the connection is dropped.
    pub http2_keepalive_timeout: Duration,
    /// Longest stall while reading a request body.
    pub body_read_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to the client.
    pub http2_max_concurrent_streams: u32,
}

impl ListenerConfig {
    /// The same limits under another name (e.g. a second app listener).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// The function that answers requests on a listener. Request bodies are
/// already wrapped in the body-read timeout.
pub type Handler = Arc<
    dyn Fn(Request<ProxyBody>, SocketAddr) -> BoxFuture<'static, Response<ProxyBody>> + Send + Sync,
>;

/// Put into a response's extensions to keep a value alive until the
/// connection closes rather than until the response ends: used for upgraded
/// connections (a `101` ends its response at once, the tunnel lives on).
#[derive(Clone)]
pub struct HoldUntilClosed(pub Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for HoldUntilClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HoldUntilClosed")
    }
}

/// Errors of a served connection (logged at debug level, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A request body stalled longer than the body-read timeout.
    #[error("request body stalled for more than {0:?}")]
    BodyTimeout(Duration),
}

/// Why a connection was closed by the sidecar (label `phase` of
/// `mcp_warden_connections_timed_out_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TLS handshake did not finish in time.
    Handshake,
    /// No byte arrived after the handshake.
    FirstByte,
    /// An HTTP/1.1 request head did not complete.
    Header,
    /// No request was in progress for the idle timeout.
    Idle,
}

impl Phase {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FirstByte => "first_byte",
            Phase::Header => "header",
            Phase::Idle => "idle",
        }
    }
}

/// A running listener; [`Served::shutdown`] stops it (dropping it does not:
/// the accept loop runs on its own task).
#[derive(Debug)]
pub struct Served {
    name: String,
    stop_accepting: CancellationToken,
    graceful: CancellationToken,
    force: CancellationToken,
    slots: Arc<Semaphore>,
    max: u32,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Connections currently open on this listener.
    pub fn open_connections(&self) -> usize {
        (self.max as usize).saturating_sub(self.slots.available_permits())
    }

    /// Stops accepting, asks every connection to finish, waits up to `grace`
    /// for them to close and then drops the rest. Returns true when all
    /// closed within the grace period.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.stop_accepting.cancel();
        let _ = self.accept_task.await;
        self.graceful.cancel();
        let all_closed = tokio::time::timeout(grace, self.slots.acquire_many(self.max))
            .await
            .is_ok_and(|r| r.is_ok());
        if !all_closed {
            let open = (self.max as usize).saturating_sub(self.slots.available_permits());
            tracing::warn!(listener = %self.name, open, "grace period over, dropping remaining connections");
        }
        self.force.cancel();
        all_closed
    }
}

/// Starts serving `listener`: TLS when `tls` is given, HTTP/1.1 and HTTP/2
/// either way, each request answered by `handler`, with the limits of `cfg`.
///
/// A second listener serving the same service is one more call with its own
/// name (its cap and metrics are its own), e.g.
/// `serve(l443, limits.app.clone().named("app-443"), Some(acceptor.clone()),
/// proxy_handler(state.clone()), metrics.clone())`.
pub fn serve(
    listener: TcpListener,
    cfg: ListenerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Handler,
    metrics: Arc<Metrics>,
) -> Served {
    let max = u32::try_from(cfg.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let stop_accepting = CancellationToken::new();
    let graceful = CancellationToken::new();
    let force = CancellationToken::new();
    let name = cfg.name.clone();
    let shared = Arc::new(Shared {
        builder: builder(&cfg),
        http1: http1_builder(),
        cfg,
        tls,
        handler,
        metrics,
        graceful: graceful.clone(),
        force: force.clone(),
    });
    let accept_task = tokio::spawn(accept_loop(
        listener,
        shared,
        slots.clone(),
        stop_accepting.clone(),
    ));
    Served {
        name,
        stop_accepting,
        graceful,
        force,
        slots,
        max,
        accept_task,
    }
}

fn builder(cfg: &ListenerConfig) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).keep_alive(true);
    // The watchdog below enforces header and idle timeouts; see the module docs.
    b.http1().header_read_timeout(None);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        .keep_alive_interval(cfg.http2_keepalive_interval)
        .keep_alive_timeout(cfg.http2_keepalive_timeout);
    b
}

/// The HTTP/1.1 settings of [`builder`], for connections whose TLS handshake
/// already chose HTTP/1.1 (ALPN `http/1.1`).
///
/// Serving those without the automatic version detection saves memory on
/// every such connection for its whole life: the detection reads the first
/// bytes on its own and hands them to hyper as a prefix, so hyper's first
/// read returns only those few bytes and its read buffer, reserved at 8 KiB,
/// is grown to 16 KiB by the second read. A watch or a followed log holds
/// its connection (and that buffer) for as long as it lasts.
fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None);
    b
}

/// ALPN protocol id of HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

struct Shared {
    cfg: ListenerConfig,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Handler,
    metrics: Arc<Metrics>,
    graceful: CancellationToken,
    force: CancellationToken,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let name = shared.cfg.name.as_str();
    let refused = shared.metrics.connections_refused(name);
    accept::accept_loop(&listener, name, stop.cancelled(), |tcp, peer| {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.inc();
            tracing::debug!(listener = name, %peer, "connection cap reached, closing the new connection");
            drop(tcp);
            return;
        };
        tokio::spawn(connection(tcp, peer, permit, shared.clone()));
    })
    .await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) {
    let cfg = &shared.cfg;
    let open = shared.metrics.connections_open(&cfg.name);
    let state = Arc::new(ConnState::new(permit, open));
    match &shared.tls {
        Some(acceptor) => {
            let handshake = boxed_handshake(acceptor, tcp, cfg.handshake_timeout, &cfg.name, peer);
            let tls = tokio::select! {
                r = handshake => r,
                _ = shared.force.cancelled() => return,
            };
            match tls {
                Ok(tls) => {
                    state.reset_clock();
                    let http1 = tls.get_ref().1.alpn_protocol() == Some(ALPN_HTTP1);
                    serve_io(tls, peer, state, &shared, http1).await
                }
                Err(HandshakeError::Failed(_)) => {}
                Err(HandshakeError::TimedOut(_)) => {
                    shared
                        .metrics
                        .connection_timed_out(&cfg.name, Phase::Handshake.as_str());
                }
            }
        }
        None => serve_io(tcp, peer, state, &shared, false).await,
    }
}

/// [`tls_handshake`] with its state and its result on the heap.
///
/// A connection's task is allocated once, at the size of its largest state,
/// and kept as long as the connection: a watch's, for hours. Inline, the
/// session mid-handshake and the stream it resolves to (whose slot stays in
/// the task while the connection is served, though the stream was moved
/// out) made the task 3.3 KB (heaptrack); boxed, the future is 728 bytes
/// (release build), the task 0.9 KB, and the stream lives once, behind
/// hyper's connection. With 1,000 HTTP/1.1 watches open, 2.3 MiB less RSS.
async fn boxed_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    name: &str,
    peer: SocketAddr,
) -> Result<Box<tokio_rustls::server::TlsStream<TcpStream>>, HandshakeError> {
    Box::pin(tls_handshake(acceptor, tcp, timeout, name, peer))
        .await
        .map(Box::new)
}

/// Serves one connection: HTTP/1.1 alone when `http1` (the TLS handshake
/// chose it; watches first through [`h1`]), otherwise HTTP/1.1 or HTTP/2 by
/// the client's first bytes.
///
/// Not an `async fn`, and the served connection is boxed: an async function
/// keeps each argument it was called with for its whole life besides the
/// place the argument is moved to, and an idle watch would pay for the TLS
/// stream and hyper's connection state twice.
fn serve_io<T>(
    io: T,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: &Shared,
    http1: bool,
) -> impl Future<Output = ()> + '_
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.cfg;
    let io = Tracked {
        inner: io,
        state: state.clone(),
    };
    let handler = shared.handler.clone();
    let body_timeout = cfg.body_read_timeout;
    let svc_state = state.clone();
    let respond = move |req: Request<ProxyBody>| {
        let guard = RequestGuard::begin(svc_state.clone());
        let fut = handler(req, peer);
        async move {
            let mut resp = fut.await;
            if let Some(hold) = resp.extensions_mut().remove::<HoldUntilClosed>() {
                guard.state.hold(hold);
            }
            resp.map(|b| boxed(Holding::new(b, guard)))
        }
    };
    let hyper_respond = respond.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let fut = hyper_respond(req.map(|b| boxed(BodyTimeout::new(b, body_timeout))));
        async move { Ok::<_, Infallible>(fut.await) }
    });
    if http1 {
        let close = CancellationToken::new();
        let own = Box::pin(h1::serve(io, respond, close.clone()));
        let conn = Box::pin(H1Conn {
            phase: H1Phase::Own(own),
            close,
            http1: &shared.http1,
            svc: Some(svc),
        });
        Either::Left(drive(conn, peer, state, shared))
    } else {
        let conn = Box::pin(
            shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(io), svc),
        );
        Either::Right(drive(conn, peer, state, shared))
    }
}

/// An HTTP/1.1 connection (ALPN `http/1.1`): [`h1::serve`] answers its
/// watches; the first request that is not one hands the connection to
/// hyper for the rest of its life.
struct H1Conn<'a, T, S: hyper::service::HttpService<Incoming>> {
    /// Who serves the connection now.
    phase: H1Phase<T, S>,
    /// Asks [`h1::serve`] to finish (graceful shutdown, watchdog).
    close: CancellationToken,
    /// The listener's HTTP/1.1 settings, for the hand-over.
    http1: &'a hyper::server::conn::http1::Builder,
    /// The service hyper gets at the hand-over.
    svc: Option<S>,
}

/// Who serves an HTTP/1.1 connection now; the order is one way.
enum H1Phase<T, S: hyper::service::HttpService<Incoming>> {
    /// The watch loop, boxed: a quiet watch keeps only this.
    Own(BoxFuture<'static, h1::Outcome<T>>),
    /// hyper, from the first request the loop does not serve.
    Hyper(Pin<Box<hyper::server::conn::http1::UpgradeableConnection<TokioIo<h1::Rewind<T>>, S>>>),
    /// Closed.
    Done,
}

impl<T, S, B> Future for H1Conn<'_, T, S>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                H1Phase::Own(own) => match own.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(h1::Outcome::Closed) => {
                        this.phase = H1Phase::Done;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(h1::Outcome::Handoff(io, prefix)) => {
                        let Some(svc) = this.svc.take() else {
                            this.phase = H1Phase::Done;
                            return Poll::Ready(Ok(()));
                        };
                        let io = TokioIo::new(h1::Rewind::new(io, prefix));
                        let mut conn =
                            Box::pin(this.http1.serve_connection(io, svc).with_upgrades());
                        if this.close.is_cancelled() {
                            conn.as_mut().graceful_shutdown();
                        }
                        this.phase = H1Phase::Hyper(conn);
                    }
                },
                H1Phase::Hyper(conn) => return conn.as_mut().poll(cx),
                H1Phase::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<T, S, B> Graceful for H1Conn<'_, T, S>
where
    Self: Future,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    T: AsyncRead + AsyncWrite + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        match &mut this.phase {
            H1Phase::Hyper(conn) => conn.as_mut().graceful_shutdown(),
            H1Phase::Own(_) | H1Phase::Done => this.close.cancel(),
        }
    }
}

/// A served connection that can be asked to finish gracefully.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: Future,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, B> Graceful
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    Self: Future,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(self)
    }
}

/// Runs a served connection under the watchdog and the listener's shutdown.
async fn drive<C, E>(
    mut conn: Pin<Box<C>>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: &Shared,
) where
    C: Graceful<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let cfg = &shared.cfg;
    let mut asked_to_close = false;
    loop {
        let closing = asked_to_close;
        // Polled only when one of its own futures woke it (`first_of`), not
        // on every read and write of the connection.
        let ending = async {
            tokio::select! {
                _ = shared.graceful.cancelled(), if !closing => Ending::Graceful,
                _ = shared.force.cancelled() => Ending::Force,
                phase = state.expired(cfg) => Ending::Expired(phase),
            }
        };
        tokio::pin!(ending);
        let out = first_of::first_of(conn.as_mut(), ending.as_mut()).await;
        match out {
            Either::Left(r) => {
                if let Err(e) = r {
                    tracing::debug!(listener = %cfg.name, %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            Either::Right(Ending::Graceful) => {
                asked_to_close = true;
                state.closing();
                conn.as_mut().graceful_shutdown();
            }
            Either::Right(Ending::Force) => return,
            Either::Right(Ending::Expired(Some(phase))) => {
                shared
                    .metrics
                    .connection_timed_out(&cfg.name, phase.as_str());
                tracing::debug!(listener = %cfg.name, %peer, phase = phase.as_str(), "closing the connection");
                asked_to_close = true;
                state.closing();
                conn.as_mut().graceful_shutdown();
            }
            // Asked to close and still quiet after the grace: drop it.
            Either::Right(Ending::Expired(None)) => return,
        }
    }
}

/// What ends or closes a connection besides the connection itself.
enum Ending {
    /// The listener shuts down: finish gracefully.
    Graceful,
    /// The grace is over: drop the connection.
    Force,
    /// A watchdog deadline passed (`None`: the close grace did).
    Expired(Option<Phase>),
}

/// What the watchdog knows about one connection.
struct Activity {
    /// When the connection started (after the TLS handshake).
    started: Instant,
    /// Requests whose response has not ended.
    active: usize,
    /// When `active` last dropped to 0 (or the start).
    idle_since: Instant,
    /// Whether any byte was read.
    first_byte: bool,
    /// The client speaks HTTP/2 (its first bytes were the preface).
    h2: bool,
    /// HTTP/1.1: when the first byte of the next request head arrived.
    head_started: Option<Instant>,
    /// When the connection was asked to close.
    closing_since: Option<Instant>,
    /// The watchdog saw a request in progress and waits, with no timer,
    /// for the change that ends it.
    watchdog_waiting: bool,
    /// A request began while an HTTP/1.1 head's deadline may be the
    /// watchdog's timer: its end must wake the watchdog, as the idle
    /// deadline may come before the header one (both are flags).
    header_timer_armed: bool,
}

struct ConnState {
    activity: Mutex<Activity>,
    changed: Notify,
    held: Mutex<Vec<HoldUntilClosed>>,
    _slot: OwnedSemaphorePermit,
    _open: OpenGuard,
}

struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

impl ConnState {
    fn new(slot: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        let now = Instant::now();
        ConnState {
            activity: Mutex::new(Activity {
                started: now,
                active: 0,
                idle_since: now,
                first_byte: false,
                h2: false,
                head_started: None,
                closing_since: None,
                watchdog_waiting: false,
                header_timer_armed: false,
            }),
            changed: Notify::new(),
            held: Mutex::new(Vec::new()),
            _slot: slot,
            _open: OpenGuard(open),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        match self.activity.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The first-byte clock starts after the handshake.
    fn reset_clock(&self) {
        let mut a = self.lock();
        let now = Instant::now();
        a.started = now;
        a.idle_since = now;
    }

    // The watchdog is told of a change only when it may have to wake
    // sooner than it planned: a deadline that can only have moved later (a
    // request began) is found when its timer fires and the watchdog looks
    // again. Telling it of every read and of every request's start and end
    // woke it two or three times a request.

    /// Bytes were read: the first of them, or the first of an HTTP/1.1
    /// head, set a new deadline.
    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut a = self.lock();
        let mut moved = false;
        if !a.first_byte {
            a.first_byte = true;
            let n = bytes.len().min(H2_PREFACE_START.len());
            a.h2 = bytes[..n] == H2_PREFACE_START[..n];
            moved = true;
        }
        if !a.h2 && a.active == 0 && a.head_started.is_none() {
            // The request-head deadline may come before the idle one.
            a.head_started = Some(Instant::now());
            moved = true;
        }
        drop(a);
        if moved {
            self.changed.notify_one();
        }
    }

    /// A request began: no deadline while it is in progress, so nothing
    /// the watchdog waits for comes sooner (it finds out when its timer
    /// fires).
    fn begin(&self) {
        let mut a = self.lock();
        a.active += 1;
        if a.head_started.take().is_some() {
            a.header_timer_armed = true;
        }
    }

    /// A request ended. The watchdog is woken when the idle deadline may
    /// come before the timer it has: it has none (it saw a request in
    /// progress), or its timer may be an HTTP/1.1 head's deadline. Any
    /// other timer it has (an earlier idle deadline, the close grace) is
    /// no later than what this end sets, and it looks again when it fires.
    fn end(&self) {
        let mut a = self.lock();
        a.active = a.active.saturating_sub(1);
        let mut wake = false;
        if a.active == 0 {
            a.idle_since = Instant::now();
            wake =
                std::mem::take(&mut a.watchdog_waiting) | std::mem::take(&mut a.header_timer_armed);
        }
        drop(a);
        if wake {
            self.changed.notify_one();
        }
    }

    /// The connection was asked to close: the close grace starts.
    fn closing(&self) {
        let mut a = self.lock();
        a.closing_since.get_or_insert_with(Instant::now);
        drop(a);
        self.changed.notify_one();
    }

    fn hold(&self, h: HoldUntilClosed) {
        match self.held.lock() {
            Ok(mut g) => g.push(h),
            Err(p) => p.into_inner().push(h),
        }
    }

    /// The next deadline and what it stands for; `None` while a request is
    /// in progress. After the connection was asked to close, the deadline
    /// is the end of the close grace (phase `None`).
    fn deadline(&self, cfg: &ListenerConfig) -> Option<(Instant, Option<Phase>)> {
        deadline_of(&self.lock(), cfg)
    }

    /// [`ConnState::deadline`], noting under the same lock whether the
    /// watchdog will wait with no timer (a request in progress), so that
    /// the request's end wakes it.
    fn next_deadline(&self, cfg: &ListenerConfig) -> Option<(Instant, Option<Phase>)> {
        let mut a = self.lock();
        let d = deadline_of(&a, cfg);
        a.watchdog_waiting = d.is_none();
        d
    }

    /// Resolves when a deadline passes with no request in progress.
    ///
    /// A change notified while nobody waited leaves a permit, which the
    /// next `enable` takes: one pass more round the loop, never one less.
    async fn expired(&self, cfg: &ListenerConfig) -> Option<Phase> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.next_deadline(cfg) {
                None => changed.await,
                Some((at, phase)) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {
                            // Re-check: a request may have begun meanwhile.
                            if let Some((now_at, now_phase)) = self.deadline(cfg)
                                && now_at <= Instant::now()
                                && now_phase == phase
                            {
                                return phase;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The next deadline of a connection in state `a` (see
/// [`ConnState::deadline`]).
fn deadline_of(a: &Activity, cfg: &ListenerConfig) -> Option<(Instant, Option<Phase>)> {
    if a.active > 0 {
        return None;
    }
    if let Some(t) = a.closing_since {
        return Some((t.max(a.idle_since) + CLOSE_GRACE, None));
    }
    Some(if !a.first_byte {
        (a.started + cfg.first_byte_timeout, Some(Phase::FirstByte))
    } else if let Some(t) = a.head_started {
        (t + cfg.header_read_timeout, Some(Phase::Header))
    } else {
        (a.idle_since + cfg.idle_timeout, Some(Phase::Idle))
    })
}

/// The connection's socket (after TLS), noting reads for the watchdog. It
/// holds the connection's slot, so the slot is free when the socket closes.
struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.state.on_read(&buf.filled()[before..]);
        }
        r
    }
}

write_through!(Tracked);

/// A request in progress on a connection, from its head to the end (or
/// drop) of its response body.
struct RequestGuard {
    state: Arc<ConnState>,
}

impl RequestGuard {
    fn begin(state: Arc<ConnState>) -> Self {
        state.begin();
        RequestGuard { state }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.state.end();
    }
}

/// A body that keeps `held` alive until it ends or is dropped.
pub struct Holding<G> {
    inner: ProxyBody,
    held: Option<G>,
}

impl<G> Holding<G> {
    /// Wraps `inner`, keeping `held` until the body is done.
    pub fn new(inner: ProxyBody, held: G) -> Self {
        Holding {
            inner,
            held: Some(held),
        }
    }
}

impl<G: Unpin> Body for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = r {
            self.held = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when the client stalls: the timer runs only
/// while the body is polled and the client has sent nothing new, so a slow
/// consumer (a busy upstream) never counts against the client.
pub struct BodyTimeout<B> {
    inner: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    waiting: bool,
}

impl<B> BodyTimeout<B> {
    /// Wraps `inner` with a stall timeout.
    pub fn new(inner: B, timeout: Duration) -> Self {
        BodyTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
        }
    }
}

impl<B> Body for BodyTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.waiting = false;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let at = Instant::now() + this.timeout;
                    this.sleep.as_mut().reset(at);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(
                        ListenerError::BodyTimeout(this.timeout),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Limits for the watchdog tests: the given idle and request-head
    /// timeouts, everything else long.
    fn watchdog_cfg(idle: Duration, header: Duration) -> ListenerConfig {
        ListenerConfig {
            name: "test".into(),
            max_connections: 1,
            handshake_timeout: Duration::from_secs(60),
            first_byte_timeout: Duration::from_secs(60),
            header_read_timeout: header,
            idle_timeout: idle,
            http2_keepalive_interval: None,
            http2_keepalive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 100,
        }
    }

    /// A connection's state, as a served connection has it.
    async fn conn_state() -> ConnState {
        let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        ConnState::new(slot, Gauge::default())
    }

    /// Counts the wakes of the task it stands for.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Requests that begin and end on an HTTP/2 connection whose watchdog
    /// waits for its idle deadline do not wake it; a request it saw in
    /// progress wakes it when it ends.
    #[tokio::test]
    async fn the_watchdog_is_woken_only_when_it_must_look_again() {
        use std::sync::atomic::Ordering::SeqCst;
        let cfg = watchdog_cfg(Duration::from_secs(60), Duration::from_secs(60));
        let state = conn_state().await;
        state.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        {
            let wakes = Arc::new(Wakes::default());
            let waker = std::task::Waker::from(wakes.clone());
            let mut cx = Context::from_waker(&waker);
            let watch = state.expired(&cfg);
            tokio::pin!(watch);
            assert!(watch.as_mut().poll(&mut cx).is_pending());
            for _ in 0..100 {
                state.on_read(b"frame");
                state.begin();
                state.end();
            }
            assert_eq!(wakes.0.load(SeqCst), 0, "requests woke the watchdog");
            assert!(watch.as_mut().poll(&mut cx).is_pending());
        }

        // A request in progress when the watchdog looks: it waits with no
        // timer, and only the last request's end wakes it.
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        state.begin();
        let watch = state.expired(&cfg);
        tokio::pin!(watch);
        assert!(watch.as_mut().poll(&mut cx).is_pending());
        assert!(state.lock().watchdog_waiting);
        state.begin();
        state.end();
        assert_eq!(wakes.0.load(SeqCst), 0, "still a request in progress");
        state.end();
        assert_eq!(wakes.0.load(SeqCst), 1, "the last request's end wakes it");
        assert!(watch.as_mut().poll(&mut cx).is_pending());
        // Woken, it armed the idle deadline's timer.
        assert!(!state.lock().watchdog_waiting);
    }

    /// After requests that did not wake it, and after one that outlasted
    /// its timer, the watchdog still closes the connection once it has been
    /// idle for the idle timeout.
    #[tokio::test]
    async fn the_idle_deadline_still_passes_after_quiet_requests() {
        let cfg = watchdog_cfg(Duration::from_millis(200), Duration::from_secs(60));
        let state = conn_state().await;
        state.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let watch = state.expired(&cfg);
        tokio::pin!(watch);
        let requests = async {
            for _ in 0..5 {
                state.begin();
                tokio::time::sleep(Duration::from_millis(20)).await;
                state.end();
            }
            // One that lasts past the timer: the watchdog finds it in
            // progress and waits for its end.
            state.begin();
            tokio::time::sleep(Duration::from_millis(600)).await;
            state.end();
        };
        tokio::select! {
            phase = &mut watch => panic!("expired during the requests: {phase:?}"),
            () = requests => {}
        }
        let phase = tokio::time::timeout(Duration::from_secs(30), watch)
            .await
            .expect("the idle deadline passes");
        assert_eq!(phase, Some(Phase::Idle));
    }

    /// HTTP/1.1 with an idle timeout shorter than the request-head timeout:
    /// after a request whose head armed the head's deadline, the idle
    /// deadline passes at its own time, not the head's.
    #[tokio::test]
    async fn an_idle_timeout_shorter_than_the_head_timeout_is_kept() {
        let cfg = watchdog_cfg(Duration::from_millis(200), Duration::from_secs(120));
        let state = conn_state().await;
        let watch = state.expired(&cfg);
        tokio::pin!(watch);
        let request = async {
            // Let the watchdog arm the first-byte timer, then the head's.
            tokio::task::yield_now().await;
            state.on_read(b"GET /api HTTP/1.1\r\n");
            tokio::task::yield_now().await;
            state.begin();
            tokio::time::sleep(Duration::from_millis(20)).await;
            state.end();
        };
        tokio::select! {
            phase = &mut watch => panic!("expired during the request: {phase:?}"),
            () = request => {}
        }
        // Well before the head's 120 s: the idle deadline's 200 ms.
        let phase = tokio::time::timeout(Duration::from_secs(60), watch)
            .await
            .expect("the idle deadline passes before the head's");
        assert_eq!(phase, Some(Phase::Idle));
    }

    #[tokio::test]
    async fn a_stalled_body_fails_and_a_flowing_one_does_not() {
        use futures::SinkExt;
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let body = http_body_util::StreamBody::new(rx);
        let mut b = BodyTimeout::new(body, Duration::from_millis(100));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let f = b.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "a");
        // Nothing more: the next frame is an error, within a generous bound.
        let r = tokio::time::timeout(Duration::from_secs(10), b.frame())
            .await
            .unwrap();
        assert!(r.unwrap().is_err());
        drop(tx);
    }
}
