//! The TCP front of `bonopay serve`: HTTP/1.1 connections with limits that
//! a client without an API key cannot exhaust.
//!
//! `axum::serve` has no header timeout and no connection cap: a client that
//! sends half a request line and stops holds a socket forever, and enough
//! of them use up the process's file descriptors, so real seals time out.
//! Here every connection is in one of four phases, watched by its own task:
//!
//! | phase | the server is… | deadline |
//! |---|---|---|
//! | `Idle` | waiting for the first byte of a request (new or keep-alive) | `idle_timeout` |
//! | `Head` | reading a request's headers | `header_timeout` |
//! | `Body` | reading a request's body | the request timeout (408, in the router) |
//! | `Handling` | working on the request or writing the answer | none |
//!
//! and the number of open connections is capped. When the cap is reached,
//! a new connection does not wait: the connection that has waited longest
//! on its own client (in `Idle`, `Head` or `Body`) is closed to make room.
//! A flood of slow clients thus only ever evicts itself, and `/healthz` or
//! a legitimate seal still gets through. Only when every open connection is
//! being worked on for the server's own reasons is a new one refused (it is
//! closed at once, so the client sees the refusal instead of a hang).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Connection limits of the listener. Every one has a default a public
/// deployment can use as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once. Below the process's file-descriptor
    /// limit, so the ledger, the key store and outgoing calls keep theirs.
    pub max_connections: usize,
    /// Longest time from a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// Longest a connection may stay open without a request: before the
    /// first one, and between requests on a kept-alive connection.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for requests in progress to finish.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    /// 512 connections, 10 s for headers, 60 s idle, 30 s shutdown grace.
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What one listener has done, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    open: AtomicU64,
}

impl ConnectionStats {
    /// Connections accepted.
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed to make room for a new one at the cap.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
    /// New connections closed at once because every open one was busy.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Connections closed by the header or idle timeout.
    #[must_use]
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
    /// Connections open now.
    #[must_use]
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Body,
    Handling,
}

/// One connection as the listener and its task see it.
#[derive(Debug)]
struct Conn {
    /// The phase and since when; a plain mutex, held for a few instructions.
    phase: Mutex<(Phase, Instant)>,
    /// Told once when the listener evicts this connection.
    kill: Notify,
}

impl Conn {
    fn new() -> Self {
        Self {
            phase: Mutex::new((Phase::Idle, Instant::now())),
            kill: Notify::new(),
        }
    }

    fn get(&self) -> (Phase, Instant) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = (phase, Instant::now());
    }

    /// Moves to `to` only from `from` (so a pipelined byte read while a
    /// request is handled does not restart the header clock).
    fn advance(&self, from: Phase, to: Phase) {
        let mut p = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if p.0 == from {
            *p = (to, Instant::now());
        }
    }

    /// When the connection must be closed if it is still in this phase.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let (phase, since) = self.get();
        match phase {
            Phase::Idle => Some(since + limits.idle_timeout),
            Phase::Head => Some(since + limits.header_timeout),
            Phase::Body | Phase::Handling => None,
        }
    }
}

/// The open connections, by id.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in progress finish (up to `limits.shutdown_grace`).
///
/// # Errors
/// Never in practice: accept errors (such as running out of file
/// descriptors) are logged and retried after a short pause, as a server
/// must not exit because a client misbehaved.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let all_done = Arc::new(Notify::new());
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors (per process or system-wide):
                    // the connection waiting longest on its client gives
                    // its descriptor back, so a slow-client flood cannot
                    // keep the next real client waiting in the backlog.
                    if matches!(e.raw_os_error(), Some(23 | 24))
                        && make_room(&registry, 0, &stats)
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if !make_room(&registry, limits.max_connections, &stats) {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        // Small JSON answers: send them without Nagle's delay.
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn::new());
        registry.lock().insert(id, Arc::clone(&conn));
        stats.open.fetch_add(1, Ordering::Relaxed);
        let task = ConnTask {
            id,
            conn,
            registry: Arc::clone(&registry),
            stats: Arc::clone(&stats),
            limits,
            stop: stop_rx.clone(),
            all_done: Arc::clone(&all_done),
        };
        tokio::spawn(task.run(stream, router.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let wait_all = async {
        loop {
            let notified = all_done.notified();
            if registry.lock().is_empty() {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(limits.shutdown_grace, wait_all).await;
    Ok(())
}

/// Below the cap `max`, or made so by evicting the connection that has
/// waited longest on its client (with `max` 0: evict one in any case).
/// `false`: every connection is busy.
fn make_room(registry: &Registry, max: usize, stats: &ConnectionStats) -> bool {
    let conns = registry.lock();
    if conns.len() < max {
        return true;
    }
    let victim = conns
        .iter()
        .filter_map(|(id, c)| {
            let (phase, since) = c.get();
            (phase != Phase::Handling).then_some((since, *id, c))
        })
        .min_by_key(|(since, id, _)| (*since, *id));
    match victim {
        Some((_, id, c)) => {
            c.kill.notify_one();
            // Its task removes it too; taken out now so that a burst of new
            // connections evicts distinct victims.
            drop(conns);
            registry.lock().remove(&id);
            stats.evicted.fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

struct ConnTask {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    stats: Arc<ConnectionStats>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
    all_done: Arc<Notify>,
}

impl ConnTask {
    async fn run(mut self, stream: TcpStream, router: Router) {
        let io = TokioIo::new(Watched {
            inner: stream,
            conn: Arc::clone(&self.conn),
        });
        let conn_for_svc = Arc::clone(&self.conn);
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let conn = Arc::clone(&conn_for_svc);
            let router = router.clone();
            async move {
                let body_done = req.body().is_end_stream();
                conn.set(if body_done {
                    Phase::Handling
                } else {
                    Phase::Body
                });
                let req = req.map(|inner| WatchedRequestBody {
                    inner,
                    conn: Arc::clone(&conn),
                });
                let response = match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                conn.set(Phase::Handling);
                Ok::<_, std::convert::Infallible>(response.map(|inner| WatchedResponseBody {
                    inner,
                    conn: Some(conn),
                }))
            }
        });
        let http = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, svc);
        tokio::pin!(http);
        let mut stopping = *self.stop.borrow();
        if stopping {
            http.as_mut().graceful_shutdown();
        }
        loop {
            let deadline = self
                .conn
                .deadline(&self.limits)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = http.as_mut() => break,
                () = self.conn.kill.notified() => break,
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        http.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    // The phase may have moved on while we slept.
                    if self.conn.deadline(&self.limits).is_some_and(|d| d <= Instant::now()) {
                        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.all_done.notify_waiters();
    }
}

/// The socket, noting the first byte of each request.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.advance(Phase::Idle, Phase::Head);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that moves its connection from `Body` to `Handling` once
/// the client has sent all of it.
struct WatchedRequestBody {
    inner: Incoming,
    conn: Arc<Conn>,
}

impl HttpBody for WatchedRequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.conn.advance(Phase::Body, Phase::Handling);
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

/// A response body that puts its connection back to `Idle` once written
/// (or dropped), so a long download is never taken for an idle client.
struct WatchedResponseBody {
    inner: axum::body::Body,
    conn: Option<Arc<Conn>>,
}

impl HttpBody for WatchedResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedResponseBody {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.set(Phase::Idle);
        }
    }
}
