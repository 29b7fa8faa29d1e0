//! One connection: a reader task that routes frames, a writer task that coalesces them.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::calls::{Delivery, InFlight};
use crate::serve::Serve;
use bytes::BytesMut;
use futures::FutureExt;
use rpc_core::codec::{Codec, IdSeed};
use rpc_core::context::deadline_after;
use rpc_core::context::Origin;
use rpc_core::{BoxChannel, Client, Context, Error, Payload, Peer, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::framing::{FrameDecoder, FrameError};
use super::reader::FrameReader;
use super::stream_io::{Io, TryWrite};
use super::Config;
use crate::budget::Budget;
use crate::dispatch::{self, CallResult, Link};
use crate::life::{Life, Phase};
use crate::slots::{PerIp, Slots};
use crate::stats::{Counters, Event};
use crate::CallFuture;

/// The most frames a connection's reader takes in a row before it yields to the other tasks.
///
/// The yield lets the writer send the answers (or requests) this burst produced while the reader
/// goes on with the rest: with 64 calls in flight on a single-threaded runtime, the two ends then
/// work at the same time instead of in turn (a whole window each), which measured 1.5x the calls
/// per second of bursts of 64 (`benches/e2e.rs`, 1x64; bursts of 16 and 48 were slower than 32).
const BURST: usize = 32;

/// Frames waiting to be written. Senders encode straight into `buf`; the writer takes everything
/// there in one write, so frames queued while a write is under way go out together.
///
/// Two writers skip the writer task when nothing else is being written, saving a task wake-up
/// per write: a call alone on its connection writes its own request, and the reader writes the
/// answers a burst of frames produced when the burst ends. Both write under the lock, so bytes
/// leave in the order they were queued; what the socket does not take is left to the writer task.
struct Outbox {
    state: Mutex<OutState>,
    /// Wakes the writer: something was queued, or the connection is closing.
    ready: Notify,
    /// Wakes senders waiting for room.
    drained: Notify,
}

/// Above this many queued bytes a sender waits for the writer (backpressure).
const HIGH_WATER: usize = 1 << 20;

struct OutState {
    buf: BytesMut,
    /// The writer task is writing bytes it took from `buf`; nobody else may write until it is
    /// done (it comes back for what was queued meanwhile).
    writing: bool,
    /// The reader is handling a burst of frames and writes their answers when it ends.
    deferred: bool,
    /// The socket, for direct writes; gone once the writer task has finished.
    direct: Option<Arc<dyn TryWrite>>,
}

impl OutState {
    /// Writes what the socket takes of `buf` now, if nobody else is writing. Whether the writer
    /// task must be woken for the rest.
    fn write_direct(&mut self) -> bool {
        if self.writing || self.buf.is_empty() {
            return false;
        }
        let Some(w) = &self.direct else {
            return true;
        };
        match w.try_write(&self.buf) {
            Ok(n) => {
                bytes::Buf::advance(&mut self.buf, n);
                if self.buf.is_empty() {
                    self.buf.clear();
                    return false;
                }
                true
            }
            // Would block, or failed: the writer task waits for room, or reports the error.
            Err(_) => true,
        }
    }
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Open; draining (no new requests read, those accepted answered); closing (nothing more
    /// queued, what is queued written); closed; or aborted (closed, what was queued dropped).
    /// Lost: it ended by failure (reset, bad frame), not by either side closing it cleanly.
    life: Life,
    serving: Arc<Slots>,
    counters: Arc<Counters>,
    /// Responses delivered during the reader's current burst.
    delivered: AtomicUsize,
    /// The reader's last burst delivered at most one response: calls here take turns, one in
    /// flight at a time, so a call writes its own request rather than wait for the writer task.
    solo: AtomicBool,
    /// Frames came since the idle watcher last looked.
    active: AtomicBool,
    /// The number of the next call's id.
    next_id: AtomicU64,
    /// Why reading failed, when it did (a bad frame, a TLS alert, a reset), and its kind.
    lost_because: std::sync::OnceLock<(io::ErrorKind, String)>,
    /// What requests from the peer's IP address may hold of those its server serves at once.
    share: Option<(Arc<PerIp>, IpAddr)>,
}

/// What a connection shares with the other connections of its server, or has alone outside
/// one.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) counters: Arc<Counters>,
    /// Frame memory ([`Builder::max_frame_memory`](crate::Builder::max_frame_memory)).
    pub(crate) budget: Option<Arc<Budget>>,
    /// Requests served at once, by IP address.
    pub(crate) requests_per_ip: Option<Arc<PerIp>>,
}

impl Pool {
    /// A connection's own counters, outside a server: no budget, no share.
    pub(crate) fn alone(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            budget: None,
            requests_per_ip: None,
        }
    }
}

impl<C: Codec> Conn<C> {
    /// Starts the connection's tasks.
    pub(crate) fn spawn(
        io: Io,
        codec: C,
        config: Arc<Config>,
        serve: Option<Serve>,
        pool: Pool,
    ) -> Arc<Self> {
        let Io {
            read,
            write,
            direct,
            peer,
        } = io;
        let Pool {
            counters,
            budget,
            requests_per_ip,
        } = pool;
        let ip = peer.socket_addr().map(|a| a.ip());
        let share = requests_per_ip.zip(ip);
        let conn = Arc::new_cyclic(|me| Conn {
            me: me.clone(),
            codec,
            out: Outbox {
                state: Mutex::new(OutState {
                    // Grown by the first frames: an idle connection holds no buffer.
                    buf: BytesMut::new(),
                    writing: false,
                    deferred: false,
                    direct,
                }),
                ready: Notify::new(),
                drained: Notify::new(),
            },
            calls: InFlight::with_sweep_every(crate::sweep_tick(config.timeout)),
            serve,
            peer,
            life: Life::default(),
            serving: Slots::new(config.max_concurrent_requests),
            counters,
            delivered: AtomicUsize::new(0),
            solo: AtomicBool::new(true),
            active: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            lost_because: std::sync::OnceLock::new(),
            share,
            config,
        });
        // Small to start with (memory per idle connection); grows with the frames.
        let frames = FrameReader::new(
            read,
            conn.config.framing.decoder(conn.config.max_frame),
            // A frame and its headers must fit.
            conn.config
                .max_frame
                .saturating_add(conn.config.framing.header_room()),
            budget.as_ref().map(Budget::account),
        );
        tokio::spawn(read_loop(conn.clone(), frames));
        tokio::spawn(write_loop(conn.clone(), write));
        conn
    }

    /// Whether the connection is finished.
    pub(crate) fn is_closed(&self) -> bool {
        self.life.phase() >= Phase::Closed
    }

    /// Whether new calls may use the connection: open, and the peer has not gone (a connection
    /// whose read side ended can still send answers, but no call would get one; one that drains
    /// reads no more answers).
    pub(crate) fn accepts_calls(&self) -> bool {
        self.life.phase() == Phase::Open && !self.life.is_lost()
    }

    /// Closes the connection now; queued frames are still written, calls in flight fail.
    pub(crate) fn close(&self) {
        self.end(Phase::Closed);
    }

    /// Closes the connection as lost, for `why`: calls in flight, and calls made before it is
    /// seen closed, fail with a transport error that says so (unless it failed already).
    pub(crate) fn lose(&self, kind: io::ErrorKind, why: String) {
        let _ = self.lost_because.set((kind, why));
        self.life.mark_lost();
        self.close();
    }

    /// Closes the connection and drops what is queued for it, rather than write it.
    pub(crate) fn abort(&self) {
        self.end(Phase::Aborted);
    }

    fn end(&self, phase: Phase) {
        self.life.advance(phase);
        // The writer writes what is queued (unless aborted) and goes.
        self.out.ready.notify_one();
        self.fail_calls();
    }

    /// Stops reading new requests, answers those accepted, then closes (graceful shutdown).
    pub(crate) fn drain(&self) {
        self.life.advance(Phase::Draining);
    }

    /// The next id of the connection's sequence: only its peer can answer, so ids need only
    /// tell its calls apart.
    fn new_id(&self) -> C::Id {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.codec.new_id(IdSeed::Sequence(n))
    }

    /// The format of the codec's values.
    pub(crate) fn codec_format(&self) -> &'static dyn rpc_core::Format {
        self.codec.format()
    }

    /// The peer at the other end.
    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// What the connection's owner counts.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Resolves when the connection is finished.
    pub(crate) async fn closed(&self) {
        self.life.reached(Phase::Closed).await
    }

    fn fail(&self, why: &dyn fmt::Display) {
        tracing::debug!(peer = %self.peer, %why, "connection lost");
        self.life.mark_lost();
        self.close();
    }

    fn finish_writing(&self) {
        self.life.advance(Phase::Closing);
        self.out.ready.notify_one();
    }

    /// Encodes one frame with `encode` straight into the outgoing buffer; `direct`: and writes it
    /// to the socket at once if nothing else is being written.
    async fn send_frame(
        &self,
        encode: impl Fn(&mut BytesMut) -> Result<bool, Error>,
        direct: bool,
    ) -> Result<(), Error> {
        loop {
            if let Some(done) = self.try_send_frame(&encode, direct) {
                return done;
            }
            // The outbox is full: wait for the writer to drain it. Register first, then look
            // again, so a drain between the two is not missed.
            let room = self.out.drained.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(done) = self.try_send_frame(&encode, direct) {
                return done;
            }
            tokio::select! {
                _ = room => {}
                _ = self.life.reached(Phase::Closed) => return Err(self.closed_error()),
            }
        }
    }

    /// Appends a frame if the outbox has room; `None` if it is full.
    fn try_send_frame(
        &self,
        encode: &impl Fn(&mut BytesMut) -> Result<bool, Error>,
        direct: bool,
    ) -> Option<Result<(), Error>> {
        if self.life.phase() >= Phase::Closing {
            return Some(Err(self.closed_error()));
        }
        let mut out = self.out.lock();
        if out.buf.len() >= HIGH_WATER {
            // Full: make sure the writer task is draining it (a burst's answers wait for none).
            drop(out);
            self.out.ready.notify_one();
            return None;
        }
        let buf = &mut out.buf;
        let mark = buf.len();
        let framing = self.config.framing;
        let start = framing.begin_frame(buf);
        let written = match encode(buf) {
            Ok(true) => framing.end_frame(buf, start, self.config.max_frame),
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
        let wake = if out.deferred {
            // The reader writes it at the end of its burst.
            false
        } else if direct {
            out.write_direct()
        } else {
            mark == 0
        };
        drop(out);
        if wake {
            self.out.ready.notify_one();
        }
        Some(Ok(()))
    }

    /// The reader starts handling a burst of frames: answers wait for its end.
    fn begin_burst(&self) {
        self.out.lock().deferred = true;
    }

    /// The burst is over: its answers are written now, or left to the writer task. Returns how
    /// many responses it delivered to callers.
    fn end_burst(&self) -> usize {
        let delivered = self.delivered.swap(0, Ordering::Relaxed);
        self.solo.store(delivered <= 1, Ordering::Relaxed);
        let mut out = self.out.lock();
        out.deferred = false;
        let wake = out.write_direct();
        drop(out);
        if wake {
            self.out.ready.notify_one();
        }
        delivered
    }

    /// Fails the calls waiting for answers: a transport error if the connection was lost,
    /// [`Error::Closed`] if it was closed.
    fn fail_calls(&self) {
        self.calls.fail_all(|| self.closed_error());
    }

    fn closed_error(&self) -> Error {
        if self.life.is_lost() {
            Error::Transport(match self.lost_because.get() {
                Some((kind, why)) => io::Error::new(*kind, format!("the connection failed: {why}")),
                None => io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the connection was closed by the peer or lost",
                ),
            })
        } else {
            Error::Closed
        }
    }

    /// A call over this connection. It is registered and queued (or written, when alone) here;
    /// the common one (room in the outbox) returns a future that only waits for the answer,
    /// which the call table fails at the call's deadline. One that finds the outbox full waits
    /// for room in a boxed future.
    pub(crate) fn call(self: &Arc<Self>, req: Request) -> CallFuture<C::Id, ()> {
        if !self.accepts_calls() {
            return CallFuture::ready(Err(self.closed_error()));
        }
        let format = self.codec.format();
        if req.is_notification() {
            let sent = self.try_send_frame(&self.encoder(&req, None, None), false);
            return match sent {
                Some(sent) => CallFuture::ready(sent.map(|()| Payload::empty(format))),
                None => {
                    let conn = self.clone();
                    CallFuture::boxed(async move {
                        conn.send_frame(conn.encoder(&req, None, None), false)
                            .await?;
                        Ok(Payload::empty(format))
                    })
                }
            };
        }
        let now = Instant::now();
        // The table fails the call at it.
        let deadline = crate::deadline_of(&req, now, self.config.timeout);
        let waiter = self.calls.register_call(|| self.new_id(), (), deadline);
        if !self.accepts_calls() {
            return CallFuture::ready(Err(self.closed_error()));
        }
        let timeout = crate::time_left(&self.codec, deadline, now);
        // A call alone on the connection writes its request itself; calls that overlap leave
        // theirs to the writer task, which sends them together. (Right after a burst of answers
        // the table may hold one call while the other callers are about to run: `solo` tells.)
        let alone = self.solo.load(Ordering::Relaxed) && self.calls.len() == 1;
        let sent = self.try_send_frame(&self.encoder(&req, Some(waiter.id()), timeout), alone);
        match sent {
            Some(Ok(())) => CallFuture::waiting(waiter, format),
            Some(Err(e)) => CallFuture::ready(Err(e)),
            None => {
                // The outbox is full: wait for room, then for the answer.
                let conn = self.clone();
                CallFuture::boxed(async move {
                    let encode = conn.encoder(&req, Some(waiter.id()), timeout);
                    conn.send_frame(encode, false).await?;
                    crate::answer(waiter.wait_expiring().await, format)
                })
            }
        }
    }

    /// Encodes `req` as a frame: a call with `id`, or a notification.
    fn encoder<'a>(
        &'a self,
        req: &'a Request,
        id: Option<&'a C::Id>,
        timeout: Option<std::time::Duration>,
    ) -> impl Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync + 'a {
        move |dst| {
            self.codec
                .encode_request_with_timeout(id, req.method(), req.args(), timeout, dst)
                .map(|()| true)
        }
    }

    /// Waits until every request being served has been answered, or the connection is aborted
    /// (then the reader lets go of its half of the stream at once: over a stream that is not a
    /// socket, the peer sees the end only once both halves are gone).
    async fn answered(&self) {
        tokio::select! {
            _ = self.serving.idle() => {}
            _ = self.life.reached(Phase::Aborted) => {}
        }
    }

    fn idle(&self) -> bool {
        self.calls.is_empty() && self.serving.in_use() == 0
    }
}

async fn read_loop<C: Codec, R: AsyncRead + Unpin>(
    conn: Arc<Conn<C>>,
    mut frames: FrameReader<R, FrameDecoder>,
) {
    // Idleness is watched by a task of its own, so the reader waits on its frames alone (a
    // timer polled beside them cost the reader ~5% of a call's instructions at one in flight).
    let _watch = conn
        .config
        .idle_timeout
        .map(|period| AbortOnDrop(tokio::spawn(watch_idle(conn.clone(), period))));
    // The connection's own instance of the service.
    let mut serve = conn.serve.as_ref().map(crate::serve::Serve::local);
    // Made once, not per frame: polled on every wake-up for a frame, it costs a load then.
    let mut stop = conn.life.reached(Phase::Draining);
    'frames: loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => {
                if conn.is_closed() {
                    return;
                }
                break;
            }
            r = frames.next() => r,
        };
        // Read before written: the flag's cache line is dirtied once per idle period, not per
        // burst.
        if !conn.active.load(Ordering::Relaxed) {
            conn.active.store(true, Ordering::Relaxed);
        }
        let mut next = next;
        // Frames already buffered are taken without going back through the select (whose
        // cancellation checks cost more than a small frame), up to a burst.
        // Answers to the burst's requests are written together when it ends.
        conn.begin_burst();
        let mut burst = 0;
        let end = loop {
            match next {
                None => break BurstEnd::Eof,
                Some(Ok(cut)) => {
                    dispatch::handle(&conn, serve.as_mut(), cut.frame, cut.held).await;
                }
                Some(Err(e)) => break BurstEnd::BadFrame(e),
            }
            burst += 1;
            if burst == BURST {
                break BurstEnd::Full;
            }
            // No whole frame buffered: the burst ends before the socket is read again, so that
            // its answers are sent first (as the callers its responses woke send their next
            // requests, below) and the read that usually finds nothing comes after.
            match frames.buffered() {
                Some(n) => next = Some(n),
                None => break BurstEnd::Drained,
            }
        };
        let delivered = conn.end_burst();
        match end {
            // Responses woke their callers: they run before this reader reads again.
            BurstEnd::Drained if delivered > 0 => crate::YieldOnce::default().await,
            BurstEnd::Drained => {}
            BurstEnd::Full => tokio::task::yield_now().await,
            BurstEnd::Eof => {
                // The peer closed its side: what we still send may arrive, calls we wait
                // for won't, so they fail now rather than when the requests being served
                // are done.
                conn.life.mark_lost();
                conn.fail_calls();
                break 'frames;
            }
            BurstEnd::BadFrame(e) => {
                conn.counters.record(if super::reader::is_over_budget(&e) {
                    Event::OverBudget
                } else {
                    Event::BadFrame
                });
                tracing::warn!(peer = %conn.peer, error = %e, "closing the connection");
                // Calls waiting, and calls made before the connection is seen closed, learn why
                // (a TLS peer's alert, say).
                let _ = conn.lost_because.set((e.kind(), e.to_string()));
                conn.life.mark_lost();
                conn.fail_calls();
                // The read buffer goes now, not once the requests are answered: a connection
                // closed to make room gives its memory back at once.
                drop(frames);
                conn.answered().await;
                conn.fail(&e);
                return;
            }
        }
    }
    // The peer finished sending, or we are draining: answer what was accepted, then close. The
    // read buffer is not needed for that.
    drop(frames);
    conn.answered().await;
    conn.finish_writing();
}

/// Closes `conn` once a whole `period` passed with no frame received and nothing in flight,
/// so an idle connection closes between one and two periods after its last frame. The reader
/// aborts it when it stops reading.
async fn watch_idle<C: Codec>(conn: Arc<Conn<C>>, period: std::time::Duration) {
    loop {
        tokio::time::sleep(period).await;
        if !conn.active.swap(false, Ordering::Relaxed) && conn.idle() {
            conn.counters.record(Event::IdleClosed);
            tracing::debug!(peer = %conn.peer, "closing an idle connection");
            conn.close();
            return;
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a reader's burst of frames ended.
enum BurstEnd {
    /// No more frames buffered.
    Drained,
    /// `BURST` frames: yield before the next.
    Full,
    /// The peer closed its side.
    Eof,
    BadFrame(io::Error),
}

async fn write_loop<C: Codec>(conn: Arc<Conn<C>>, mut w: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut spare = BytesMut::new();
    let mut closing = conn.life.reached(Phase::Closing);
    let mut aborted = conn.life.reached(Phase::Aborted);
    loop {
        {
            let mut out = conn.out.lock();
            // Done with the last batch: direct writers may go again, or this takes what they
            // queued meanwhile.
            std::mem::swap(&mut out.buf, &mut spare);
            out.writing = !spare.is_empty();
        }
        if spare.is_empty() {
            // Closing (or closed): nothing more will be queued, and what was is written.
            if conn.life.phase() >= Phase::Closing {
                break;
            }
            tokio::select! {
                _ = conn.out.ready.notified() => {}
                _ = &mut closing => continue,
            }
            // Woken by the first frame queued: the tasks woken with its sender (callers that
            // one read of answers woke, say) run first and queue theirs, so that one write
            // sends them all. Without this the writer, woken last, would run next on its worker
            // and write each frame alone.
            crate::YieldOnce::default().await;
            continue;
        }
        let written = tokio::select! {
            biased;
            r = write_all(&mut w, &spare, conn.config.write_timeout) => r,
            _ = &mut aborted => Err(io::Error::other("connection aborted")),
        };
        spare.clear();
        conn.out.drained.notify_waiters();
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::TimedOut {
                conn.counters.record(Event::WriteStalled);
                tracing::warn!(peer = %conn.peer, "closing a connection whose peer takes no bytes");
            }
            conn.fail(&e);
            break;
        }
    }
    // Direct writers are done; the stream is shut down for writing (a socket's, when its last
    // handle goes): in full after a clean end, only as far as it goes at once after a failed
    // write or an abort (a TLS stream would otherwise wait for its peer again).
    conn.out.lock().direct = None;
    if conn.life.phase() == Phase::Aborted || conn.life.is_lost() {
        let _ = w.shutdown().now_or_never();
    } else {
        let stall = deadline_after(Instant::now(), conn.config.write_timeout);
        let _ = tokio::time::timeout_at(stall, w.shutdown()).await;
    }
    drop(w);
    conn.close();
}

/// Writes all of `buf` and flushes, waiting for room as needed, but no longer than `stall` at a
/// time: `TimedOut` if the peer takes no bytes for that long.
async fn write_all(
    w: &mut Box<dyn AsyncWrite + Send + Unpin>,
    mut buf: &[u8],
    stall: std::time::Duration,
) -> io::Result<()> {
    let stalled = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer took no bytes for {stall:?}"),
        )
    };
    while !buf.is_empty() {
        // A write the stream takes at once needs no timer.
        let n = match w.write(buf).now_or_never() {
            Some(n) => n?,
            None => {
                let at = deadline_after(Instant::now(), stall);
                tokio::time::timeout_at(at, w.write(buf))
                    .await
                    .map_err(|_| stalled())??
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    match w.flush().now_or_never() {
        Some(r) => r,
        None => {
            let at = deadline_after(Instant::now(), stall);
            tokio::time::timeout_at(at, w.flush())
                .await
                .map_err(|_| stalled())?
        }
    }
}

impl<C: Codec> Drop for Conn<C> {
    fn drop(&mut self) {
        self.fail_calls();
    }
}

impl<C: Codec> Link<C> for Arc<Conn<C>> {
    fn codec(&self) -> &C {
        &self.codec
    }

    fn slots(&self) -> &Arc<Slots> {
        &self.serving
    }

    fn share(&self) -> Option<(&Arc<PerIp>, IpAddr)> {
        self.share.as_ref().map(|(per_ip, ip)| (per_ip, *ip))
    }

    fn min_bytes_per_value(&self) -> usize {
        self.config.min_bytes_per_value
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
        self.send_frame(encode, false).await
    }

    fn deliver(&self, id: C::Id, result: CallResult) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if self.calls.deliver(&id, &(), result) == Delivery::UnknownId {
            self.counters.record(Event::UnknownResponse);
            tracing::debug!(peer = %self.peer, ?id, "dropped a response to no call in flight");
        } else {
            self.counters.record(Event::ResponseReceived);
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn peer(&self) -> &dyn fmt::Display {
        &self.peer
    }
}

impl<C: Codec> Origin for Conn<C> {
    fn client(&self, _peer: &Peer) -> Option<Client<BoxChannel>> {
        let conn = self.me.upgrade()?;
        let format = self.codec.format();
        // Not a handle of the connection's own: a handler calling back does not keep it open.
        Some(Client::new(super::Connection::unguarded(conn), format).boxed())
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
