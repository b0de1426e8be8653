//! The HTTP side: `/metrics` and `/healthz` on hyper (HTTP/1.1), on its own thread and
//! runtime so that scrapes, slow or aborted, never run on the thread that ingests events.
//!
//! A scrape locks the state only while its families are built; the body is then written
//! without any lock. Connections are limited in number and in time, so a client that
//! opens connections and never reads cannot exhaust memory or stall shutdown; and the
//! listener is always accepting, so clients that hold connections with half a request
//! (slowloris) cannot keep a scraper out: at the limit, the oldest connection that never
//! completed a request in its first second is closed to make room, else the oldest idle
//! keep-alive one; a connection serving a request is never closed (`connections_shed`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Notify};

use super::{encode, ExportOptions, Exported};

/// Connections kept open at once; at the limit a new one takes the place of an old one.
/// Each costs a socket and a few KiB of buffers.
const MAX_CONNECTIONS: usize = 256;
/// A connection's whole life, including keep-alive (Prometheus reconnects as needed).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for scrapes in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What the server reads from its owner besides the state.
pub struct ServerContext {
    pub shared: Arc<Exported>,
    pub opts: ExportOptions,
    /// False when ingestion failed: `/healthz` then answers 503.
    pub healthy: Arc<AtomicBool>,
    /// Scrapes served (`/metrics` responses).
    pub scrapes: AtomicU64,
    /// Connections closed to make room for new ones (`MAX_CONNECTIONS` reached).
    pub connections_shed: AtomicU64,
}

impl ServerContext {
    pub fn new(shared: Arc<Exported>, opts: ExportOptions, healthy: Arc<AtomicBool>) -> Self {
        ServerContext {
            shared,
            opts,
            healthy,
            scrapes: AtomicU64::new(0),
            connections_shed: AtomicU64::new(0),
        }
    }
}

/// A bound listener, not yet serving: binding first lets `serve` report a busy address
/// before it starts tracing.
pub struct Server {
    listener: std::net::TcpListener,
}

/// A running server; [`ServerHandle::shutdown`] stops it.
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Server {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Server { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves on a thread of its own until [`ServerHandle::shutdown`].
    pub fn spawn(self, ctx: Arc<ServerContext>) -> std::io::Result<ServerHandle> {
        let addr = self.listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("iommu-trace-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(self.listener) {
                        Ok(l) => accept_loop(l, ctx, stopped).await,
                        Err(e) => log::error!("the metrics listener failed: {e}"),
                    }
                })
            })?;
        Ok(ServerHandle {
            stop,
            thread: Some(thread),
            addr,
        })
    }
}

impl ServerHandle {
    /// Stops accepting, lets scrapes in flight finish (up to a few seconds), and joins.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection that has sent no request this long after it opened is stalled (a scraper
/// sends its request at once); younger ones go only after the idle.
const SHED_GRACE: Duration = Duration::from_secs(1);
/// A request is taken to be in flight for this long after it arrived (the response is a
/// few hundred KiB at most, written at once).
const SERVING: Duration = Duration::from_secs(5);

/// What the accept loop knows of one open connection.
struct Connection {
    opened: Instant,
    /// Milliseconds after `opened` (+1) when its last request arrived; 0 before any.
    last_request: AtomicU64,
    /// Set when the connection's task ends.
    closed: AtomicBool,
    /// Told when the connection must go to make room.
    shed: Notify,
}

impl Connection {
    fn new() -> Connection {
        Connection {
            opened: Instant::now(),
            last_request: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            shed: Notify::new(),
        }
    }

    fn request_arrived(&self) {
        let ms = self.opened.elapsed().as_millis() as u64 + 1;
        self.last_request.store(ms, Ordering::Relaxed);
    }

    /// Never completed a request, and had the time to: a stalled client.
    fn stalled(&self) -> bool {
        self.last_request.load(Ordering::Relaxed) == 0 && self.opened.elapsed() > SHED_GRACE
    }

    /// Answered a request a while ago and waits for the next (keep-alive): a client can
    /// reconnect at no cost.
    fn idle(&self) -> bool {
        let last = self.last_request.load(Ordering::Relaxed);
        last != 0 && self.opened.elapsed() > Duration::from_millis(last - 1) + SERVING
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Connections(VecDeque<Arc<Connection>>);

impl Connections {
    /// Makes room for one more: forgets the closed, then, at the limit, sheds the oldest
    /// stalled connection, else the oldest idle one, else the oldest that has sent no
    /// request yet (a burst of new connections: the newest, perhaps a scraper's, stays).
    /// A connection serving a request is never shed; when all are, the new one is refused.
    fn make_room(&mut self) -> Room {
        self.0.retain(|c| !c.closed.load(Ordering::Relaxed));
        if self.0.len() < MAX_CONNECTIONS {
            return Room::Free;
        }
        let first = |f: fn(&Connection) -> bool| self.0.iter().position(|c| f(c));
        let victim = first(Connection::stalled)
            .or_else(|| first(Connection::idle))
            .or_else(|| first(|c| c.last_request.load(Ordering::Relaxed) == 0));
        match victim.and_then(|i| self.0.remove(i)) {
            Some(c) => {
                c.shed.notify_one();
                Room::Shed
            }
            None => Room::Full,
        }
    }
}

enum Room {
    Free,
    /// An old connection was closed to make room.
    Shed,
    /// Every connection is serving a request.
    Full,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    ctx: Arc<ServerContext>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut open = Connections::default();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    log::warn!("accepting a metrics connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        match open.make_room() {
            Room::Free => {}
            Room::Shed => {
                ctx.connections_shed.fetch_add(1, Ordering::Relaxed);
            }
            Room::Full => {
                // Closing it is the only answer that costs nothing.
                ctx.connections_shed.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let this = Arc::new(Connection::new());
        open.0.push_back(this.clone());
        let ctx = ctx.clone();
        let mut stop = stopped.clone();
        conns.spawn(async move {
            let svc = {
                let this = this.clone();
                hyper::service::service_fn(move |req| {
                    this.request_arrived();
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(respond(&ctx, req)) }
                })
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let deadline = tokio::time::sleep(CONNECTION_TIMEOUT);
            tokio::pin!(deadline);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = stop.changed(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = this.shed.notified() => break,
                    _ = &mut deadline => break,
                }
            }
            this.closed.store(true, Ordering::Relaxed);
        });
        // Reap finished connections so the set stays small.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn respond(ctx: &ServerContext, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let body = scrape(ctx);
            ctx.scrapes.fetch_add(1, Ordering::Relaxed);
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            );
            r
        }
        "/healthz" => {
            if ctx.healthy.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "event ingestion stopped with an error; see the exporter's log\n",
                )
            }
        }
        "/" => text(
            StatusCode::OK,
            "iommu-trace exporter: /metrics (Prometheus), /healthz\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
}

/// Builds one scrape's text. Each lock is held only while the families are built; a
/// poisoned lock (a panic elsewhere) still serves what it holds.
pub fn scrape(ctx: &ServerContext) -> String {
    let meta = ctx
        .shared
        .meta
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let state = ctx.shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut fams = super::families(&state, &meta, &ctx.opts);
    drop(state);
    fams.extend(super::metrics::server_families(
        ctx.connections_shed.load(Ordering::Relaxed),
    ));
    encode(fams, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_serving_a_request_is_never_shed() {
        let mut open = Connections::default();
        for _ in 0..MAX_CONNECTIONS {
            let c = Arc::new(Connection::new());
            c.request_arrived();
            open.0.push_back(c);
        }
        assert!(matches!(open.make_room(), Room::Full));
        // One that has sent nothing yet goes before the new one is refused.
        let quiet = Arc::new(Connection::new());
        open.0[5] = quiet.clone();
        assert!(matches!(open.make_room(), Room::Shed));
        assert!(!open.0.iter().any(|c| Arc::ptr_eq(c, &quiet)));
        // Closed ones are forgotten first.
        open.0[0].closed.store(true, Ordering::Relaxed);
        assert!(matches!(open.make_room(), Room::Free));
    }
}
