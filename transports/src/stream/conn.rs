//! One connection: a reader task that routes frames, a writer task that coalesces them.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context as TaskContext, Poll};

use bytes::BytesMut;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use rpc_core::calls::{Delivery, InFlight};
use rpc_core::codec::Codec;
use rpc_core::context::Origin;
use rpc_core::{BoxChannel, Client, Context, Error, Payload, Peer, Request, Serve, Service};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::framing::FrameError;
use super::{Config, Counters};
use crate::dispatch::{self, CallResult, Event, Link};
use crate::Armed;

/// The most frames a connection's reader takes in a row before it yields to the other tasks.
///
/// The yield lets the writer send the answers (or requests) this burst produced while the reader
/// goes on with the rest: with 64 calls in flight on a single-threaded runtime, the two ends then
/// work at the same time instead of in turn (a whole window each), which measured 1.5x the calls
/// per second of bursts of 64 (`benches/e2e.rs`, 1x64; bursts of 16 and 48 were slower than 32).
const BURST: usize = 32;

/// The read buffer a connection starts with.
const READ_BUFFER: usize = 4 * 1024;

/// A byte stream that splits into halves the two tasks own.
pub trait Split: Send + 'static {
    /// The read half.
    type Read: AsyncRead + Send + Unpin + 'static;
    /// The write half.
    type Write: AsyncWrite + Send + Unpin + 'static;
    /// Splits the stream.
    fn split(self) -> (Self::Read, Self::Write);
}

/// Frames waiting to be written. Senders encode straight into `buf`; the writer takes everything
/// there in one write, so frames queued while a write is under way go out together.
struct Outbox {
    buf: Mutex<BytesMut>,
    /// Wakes the writer: something was queued, or the connection is closing.
    ready: Notify,
    /// Wakes senders waiting for room.
    drained: Notify,
    /// No more frames will be queued; the writer flushes and closes.
    closing: AtomicBool,
}

/// Above this many queued bytes a sender waits for the writer (backpressure).
const HIGH_WATER: usize = 1 << 20;

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, BytesMut> {
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One live connection, shared by its tasks and by the channels that call through it.
pub(crate) struct Conn<C: Codec> {
    me: Weak<Conn<C>>,
    codec: C,
    config: Arc<Config>,
    out: Outbox,
    calls: Arc<InFlight<C::Id, (), CallResult>>,
    serve: Option<Serve>,
    peer: Peer,
    /// The connection is finished; calls fail.
    closed: CancellationToken,
    /// Mirrors `closed` for the hot path (reading a token takes a lock).
    done: AtomicBool,
    /// Stop reading new requests, answer those being served, then close (graceful shutdown).
    drain: CancellationToken,
    /// It ended by failure (reset, bad frame), not by either side closing it cleanly.
    lost: AtomicBool,
    serving: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl<C: Codec> Conn<C> {
    /// Starts the connection's tasks. `drain` is the owner's graceful-shutdown signal.
    pub(crate) fn spawn<S: Split>(
        io: S,
        peer: Peer,
        codec: C,
        config: Arc<Config>,
        serve: Option<Serve>,
        counters: Arc<Counters>,
        drain: CancellationToken,
    ) -> Arc<Self> {
        let (read, write) = io.split();
        let conn = Arc::new_cyclic(|me| Conn {
            me: me.clone(),
            codec,
            out: Outbox {
                // Grown by the first frames: an idle connection holds no buffer.
                buf: Mutex::new(BytesMut::new()),
                ready: Notify::new(),
                drained: Notify::new(),
                closing: AtomicBool::new(false),
            },
            calls: InFlight::with_sweep_every(crate::sweep_tick(config.timeout)),
            serve,
            peer,
            closed: CancellationToken::new(),
            done: AtomicBool::new(false),
            drain,
            lost: AtomicBool::new(false),
            serving: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            counters,
            config,
        });
        // Small to start with (memory per idle connection); grows with the frames.
        let frames = FramedRead::with_capacity(
            read,
            conn.config.framing.decoder(conn.config.max_frame),
            READ_BUFFER,
        );
        tokio::spawn(read_loop(conn.clone(), frames));
        tokio::spawn(write_loop(conn.clone(), write));
        conn
    }

    /// Whether the connection is finished.
    pub(crate) fn is_closed(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Whether new calls may use the connection: not finished, not closing, and the peer has not
    /// gone (a connection whose read side ended can still send answers, but no call would get one).
    pub(crate) fn accepts_calls(&self) -> bool {
        !self.is_closed()
            && !self.lost.load(Ordering::Relaxed)
            && !self.out.closing.load(Ordering::Acquire)
    }

    /// Closes the connection now; queued frames are still written, calls in flight fail.
    pub(crate) fn close(&self) {
        self.finish_writing();
        self.done.store(true, Ordering::Release);
        self.closed.cancel();
        self.calls.close_all();
    }

    /// Resolves when the connection is finished.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    fn fail(&self, why: &dyn fmt::Display) {
        tracing::debug!(peer = %self.peer, %why, "connection lost");
        self.lost.store(true, Ordering::Relaxed);
        self.close();
    }

    fn finish_writing(&self) {
        self.out.closing.store(true, Ordering::Release);
        self.out.ready.notify_one();
    }

    /// Encodes one frame with `encode` straight into the outgoing buffer.
    async fn send_frame(
        &self,
        encode: impl Fn(&mut BytesMut) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        loop {
            if let Some(done) = self.try_send_frame(&encode) {
                return done;
            }
            // The outbox is full: wait for the writer to drain it. Register first, then look
            // again, so a drain between the two is not missed.
            let room = self.out.drained.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(done) = self.try_send_frame(&encode) {
                return done;
            }
            tokio::select! {
                _ = room => {}
                _ = self.closed.cancelled() => return Err(self.closed_error()),
            }
        }
    }

    /// Appends a frame if the outbox has room; `None` if it is full.
    fn try_send_frame(
        &self,
        encode: &impl Fn(&mut BytesMut) -> Result<bool, Error>,
    ) -> Option<Result<(), Error>> {
        if self.out.closing.load(Ordering::Acquire) || self.is_closed() {
            return Some(Err(self.closed_error()));
        }
        let mut buf = self.out.lock();
        if buf.len() >= HIGH_WATER {
            return None;
        }
        let mark = buf.len();
        let framing = self.config.framing;
        let start = framing.begin_frame(&mut buf);
        let written = match encode(&mut buf) {
            Ok(true) => framing.end_frame(&mut buf, start, self.config.max_frame),
            Ok(false) => {
                buf.truncate(mark);
                return Some(Ok(()));
            }
            Err(e) => {
                buf.truncate(mark);
                return Some(Err(e));
            }
        };
        if let Err(e) = written {
            buf.truncate(mark);
            return Some(Err(match e {
                FrameError::TooLarge { size, limit } => Error::TooLarge { size, limit },
                FrameError::ContainsDelimiter => {
                    Error::Codec("the encoded message contains the framing's delimiter".into())
                }
            }));
        }
        let first = mark == 0;
        drop(buf);
        if first {
            self.out.ready.notify_one();
        }
        Some(Ok(()))
    }

    fn closed_error(&self) -> Error {
        if self.lost.load(Ordering::Relaxed) {
            Error::Transport(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the connection was closed by the peer or lost",
            ))
        } else {
            Error::Closed
        }
    }

    /// Sends a call and waits for its response.
    pub(crate) async fn call(&self, req: Request) -> Result<Payload, Error> {
        if !self.accepts_calls() {
            return Err(self.closed_error());
        }
        let format = self.codec.format();
        let notification = req.is_notification();
        let (method, args, ctx) = req.into_parts();
        if notification {
            self.send_frame(|dst| {
                self.codec
                    .encode_request(None, &method, &args, dst)
                    .map(|()| true)
            })
            .await?;
            return Ok(Payload::empty(format));
        }
        let now = Instant::now();
        // A deadline the caller set gets a timer of its own (exact); the default timeout is
        // the table's to enforce, a tick late at most.
        let own = ctx.deadline();
        let deadline = own.unwrap_or(now + self.config.timeout);
        let waiter = loop {
            let id = self.codec.next_id();
            let w = match own {
                Some(_) => self.calls.register(id, ()),
                None => self.calls.register_expiring(id, (), deadline),
            };
            if let Some(w) = w {
                break w;
            }
        };
        if !self.accepts_calls() {
            return Err(self.closed_error());
        }
        let timeout = Some(deadline.saturating_duration_since(now));
        self.send_frame(|dst| {
            self.codec
                .encode_request_with_timeout(Some(waiter.id()), &method, &args, timeout, dst)
                .map(|()| true)
        })
        .await?;
        let answer = match own {
            Some(_) => waiter.wait(deadline).await,
            None => waiter.wait_expiring().await,
        };
        match answer {
            Ok(Ok(bytes)) => Ok(Payload::new(bytes, format)),
            Ok(Err(e)) => Err(Error::Server(e)),
            Err(Error::Closed) => Err(self.closed_error()),
            Err(e) => Err(e),
        }
    }

    /// Waits until every request being served has been answered.
    async fn answered(&self) {
        let all = u32::try_from(self.config.max_concurrent_requests).unwrap_or(u32::MAX);
        if let Ok(p) = self.serving.acquire_many(all).await {
            drop(p);
        }
    }

    fn idle(&self) -> bool {
        self.calls.is_empty()
            && self.serving.available_permits() == self.config.max_concurrent_requests
    }
}

async fn read_loop<C: Codec, R: AsyncRead + Unpin>(
    conn: Arc<Conn<C>>,
    mut frames: FramedRead<R, super::framing::FrameDecoder>,
) {
    let idle = conn.config.idle_timeout;
    // The connection's own instance of the service.
    let mut serve = conn.serve.as_ref().map(rpc_core::Serve::local);
    // Made once, not per frame; polled in full only until they hold this task's waker.
    let closed = conn.closed.cancelled();
    let drain = conn.drain.cancelled();
    // One timer for idleness, re-armed when it fires rather than on every frame: a connection
    // is closed between one and two idle timeouts after its last frame.
    let timer = tokio::time::sleep(idle.unwrap_or(std::time::Duration::MAX / 4));
    tokio::pin!(closed, drain, timer);
    let mut closed = Armed::new(closed, || conn.is_closed());
    let mut drain = Armed::new(drain, || conn.drain.is_cancelled());
    let mut active = false;
    'frames: loop {
        let next = tokio::select! {
            biased;
            _ = &mut closed => return,
            _ = &mut drain => break,
            r = frames.next() => r,
            _ = &mut timer, if idle.is_some() => {
                let t = idle.unwrap_or_default();
                timer.as_mut().reset(tokio::time::Instant::now() + t);
                // Idle: nothing received for a whole period, and nothing in flight.
                if !std::mem::take(&mut active) && conn.idle() {
                    Counters::add(&conn.counters.idle_closed);
                    tracing::debug!(peer = %conn.peer, "closing an idle connection");
                    conn.close();
                    return;
                }
                continue;
            }
        };
        active = true;
        let mut next = next;
        // Frames already buffered are taken without going back through the select (whose
        // cancellation checks cost more than a small frame), up to a burst.
        let mut burst = 0;
        loop {
            match next {
                None => {
                    // The peer closed its side: what we still send may arrive, calls we wait
                    // for won't, so they fail now rather than when the requests being served
                    // are done.
                    conn.lost.store(true, Ordering::Relaxed);
                    conn.calls.close_all();
                    break 'frames;
                }
                Some(Ok(frame)) => dispatch::handle(&conn, serve.as_mut(), frame).await,
                Some(Err(e)) => {
                    Counters::add(&conn.counters.bad_frames);
                    tracing::warn!(peer = %conn.peer, error = %e, "closing the connection");
                    conn.lost.store(true, Ordering::Relaxed);
                    conn.calls.close_all();
                    conn.answered().await;
                    conn.fail(&e);
                    return;
                }
            }
            burst += 1;
            if burst == BURST {
                tokio::task::yield_now().await;
                break;
            }
            // Polled with a no-op waker: if nothing is buffered, the select above polls it
            // again with this task's waker before waiting.
            match frames.next().now_or_never() {
                Some(n) => next = n,
                None => break,
            }
        }
    }
    // The peer finished sending, or we are draining: answer what was accepted, then close.
    conn.answered().await;
    conn.finish_writing();
}

async fn write_loop<C: Codec, W: AsyncWrite + Unpin>(conn: Arc<Conn<C>>, mut w: W) {
    let mut spare = BytesMut::new();
    let closed = conn.closed.cancelled();
    tokio::pin!(closed);
    let mut closed = Armed::new(closed, || conn.is_closed());
    loop {
        {
            let mut buf = conn.out.lock();
            std::mem::swap(&mut *buf, &mut spare);
        }
        if spare.is_empty() {
            if conn.out.closing.load(Ordering::Acquire) {
                break;
            }
            tokio::select! {
                _ = conn.out.ready.notified() => {}
                _ = &mut closed => {
                    // Write what is still queued before going.
                    conn.out.closing.store(true, Ordering::Release);
                }
            }
            continue;
        }
        let written = w.write_all(&spare).await;
        spare.clear();
        conn.out.drained.notify_waiters();
        if let Err(e) = written {
            conn.fail(&e);
            return;
        }
    }
    let _ = w.shutdown().await;
    conn.close();
}

impl<C: Codec> Drop for Conn<C> {
    fn drop(&mut self) {
        self.calls.close_all();
    }
}

impl<C: Codec> Link<C> for Arc<Conn<C>> {
    fn codec(&self) -> &C {
        &self.codec
    }

    fn permits(&self) -> &Arc<Semaphore> {
        &self.serving
    }

    fn context(&self) -> Context {
        let mut ctx = Context::from_peer(self.peer.clone());
        ctx.set_origin(self.clone());
        ctx
    }

    async fn send<F>(&self, encode: F) -> Result<(), Error>
    where
        F: Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync,
    {
        self.send_frame(encode).await
    }

    fn deliver(&self, id: C::Id, result: CallResult) {
        if self.calls.deliver(&id, &(), result) == Delivery::UnknownId {
            Counters::add(&self.counters.unknown_responses);
            tracing::debug!(peer = %self.peer, ?id, "dropped a response to no call in flight");
        }
    }

    fn count(&self, event: Event) {
        let c = &self.counters;
        match event {
            Event::Request => Counters::add(&c.requests),
            Event::Malformed => Counters::add(&c.malformed),
            Event::Overloaded => Counters::add(&c.overloaded),
            Event::ResponseSent => Counters::add(&c.responses_sent),
            // The connection is closing; its reader reports why.
            Event::SendError => {}
        }
    }
}

impl<C: Codec> Origin for Conn<C> {
    fn client(&self, _peer: &Peer) -> Option<Client<BoxChannel>> {
        let conn = self.me.upgrade()?;
        let format = self.codec.format();
        Some(Client::new(ConnChannel { conn }, format).boxed())
    }
}

/// A `tower::Service` of calls over one existing connection (a handler calling its caller back).
pub(crate) struct ConnChannel<C: Codec> {
    conn: Arc<Conn<C>>,
}

impl<C: Codec> Clone for ConnChannel<C> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
        }
    }
}

impl<C: Codec> Service<Request> for ConnChannel<C> {
    type Response = Payload;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Payload, Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let conn = self.conn.clone();
        Box::pin(async move { conn.call(req).await })
    }
}

impl<C: Codec> fmt::Debug for Conn<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}
