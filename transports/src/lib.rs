//! Transports for rpc-stack: they move a [`Codec`](rpc_core::Codec)'s frames between peers and
//! drive a server's [`Service`](rpc_core::Service) and a client's calls.
//!
//! | module | medium | framing | peers per socket |
//! |---|---|---|---|
//! | [`udp`] | UDP datagrams | one datagram, one message | any: one socket serves and calls everyone |
//! | [`tcp`] | TCP | [`Framing`](stream::Framing): length-prefixed by default | one per connection, both ways |
//! | [`unix`] | Unix stream sockets | as TCP | as TCP, with peer credentials |
//! | [`memory`] | in-process pipes | as TCP | as TCP |
//! | [`process`] | a child's stdin and stdout, or one's own | as TCP | one, both ways |
//! | [`stream`] | any byte stream ([`stream::Io`]: TLS, a pipe, ...) | as TCP | one, both ways |
//! | [`raw`] | TCP or Unix | basic-socket-rpc's frames | one call at a time per connection, with sessions |
//!
//! Every transport gives the same two things: a way to serve a router (or any
//! `Service<Request, Response = Response>`), and per peer a client `Service<Request,
//! Response = Payload>` that [`rpc_core::Client`] puts typed calls on. Swapping transports changes
//! the line that binds, not the handlers nor the calls.
//!
//! # Feature flags
//!
//! | name | what | default |
//! |---|---|---|
//! | `udp` | the UDP transport | yes |
//! | `tcp` | the TCP transport | yes |
//! | `unix` | the Unix socket transport (Unix platforms) | yes |
//! | `memory` | the in-memory transport | yes |
//! | `process` | child processes and one's own stdio | yes |
//! | `raw` | basic-socket-rpc's protocol over TCP and Unix sockets | yes |
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

mod budget;
mod builder;
mod calls;
mod dispatch;
mod life;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "process")]
pub mod process;
#[cfg(all(unix, feature = "raw"))]
pub mod raw;
pub mod serve;
mod serving;
mod slots;
mod stats;
#[cfg(any(
    feature = "tcp",
    feature = "unix",
    feature = "memory",
    feature = "process"
))]
pub mod stream;
mod sync;
#[cfg(feature = "tcp")]
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "udp")]
pub mod udp;
#[cfg(all(unix, feature = "unix"))]
pub mod unix;

pub use self::builder::{
    Builder, Connected, Connections, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_CONCURRENT_REQUESTS_PER_IP, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_FRAME_LENGTH, DEFAULT_MAX_FRAME_MEMORY,
    DEFAULT_MIN_BYTES_PER_VALUE, DEFAULT_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
pub use self::serving::Serving;
pub use self::stats::{ErrorCounts, Stats};

/// Entry points for the fuzz targets in `fuzz/` (built only under `cargo fuzz`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// Cuts `data` into frames with framing `kind` (0 length-prefixed, 1 newline, 2 EOT,
    /// 3 Content-Length headers, 4 msgpack values) and a 4 KiB limit, fed in pieces of `chunk`
    /// bytes; stops at the first error, as a connection does.
    pub fn framing(kind: u8, chunk: usize, data: &[u8]) {
        let framing = match kind % 5 {
            0 => crate::stream::Framing::LengthPrefixed,
            1 => crate::stream::Framing::Newline,
            2 => crate::stream::Framing::Eot,
            3 => crate::stream::Framing::ContentLength,
            _ => crate::stream::Framing::MsgPack,
        };
        let mut decoder = framing.decoder(4096);
        let mut buf = BytesMut::new();
        for piece in data.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => assert!(frame.len() <= 4096),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            assert!(buf.capacity() <= 64 * 1024, "the claimed size was reserved");
        }
        let _ = decoder.decode_eof(&mut buf);
    }

    /// Cuts `data` into basic-socket-rpc frames with a 4 KiB limit.
    #[cfg(all(unix, feature = "raw"))]
    pub fn raw_frames(data: &[u8]) {
        let mut decoder = crate::raw::frame_decoder(4096);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
        assert!(buf.capacity() <= 64 * 1024, "the claimed size was reserved");
    }
}

/// How often a call table looks at every call with a deadline: a sixteenth of the default
/// timeout, between 1 ms and 1 s. Calls fail at their deadlines whatever the tick (see
/// `calls`); it only sets how often the calls far from theirs are visited.
fn sweep_tick(timeout: std::time::Duration) -> std::time::Duration {
    (timeout / 16).clamp(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_secs(1),
    )
}

/// When a call must be answered by: its request's deadline, or `timeout` from `now`.
fn deadline_of(
    req: &rpc_core::Request,
    now: tokio::time::Instant,
    timeout: std::time::Duration,
) -> tokio::time::Instant {
    req.context()
        .deadline()
        .unwrap_or_else(|| rpc_core::context::deadline_after(now, timeout))
}

/// The time a request has left, for codecs that send it (`None` for the others, which need
/// not have it worked out per call).
fn time_left<C: rpc_core::Codec>(
    codec: &C,
    deadline: tokio::time::Instant,
    now: tokio::time::Instant,
) -> Option<std::time::Duration> {
    codec
        .carries_timeout()
        .then(|| deadline.saturating_duration_since(now))
}

/// Pending once, waking its task at once: the task goes behind the tasks it woke in its
/// runtime's queue. (`tokio::task::yield_now` may instead hold the task until the runtime has
/// polled its drivers, a system call on the way to the next answer.)
#[derive(Default)]
pub(crate) struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// The future of a call on a [`udp::Channel`] or a [`stream::Channel`].
///
/// A call that needs nothing but its answer (the channel is connected and the request went out
/// at once) registers, encodes and sends in [`Service::call`](tower::Service::call) itself, and
/// this future only waits for the answer, which the call table fails at the call's deadline: no
/// boxed state machine and no timer per call. Other calls (connecting first, waiting for room, retransmission) run as a boxed future.
#[pin_project::pin_project]
pub struct CallFuture<Id: std::hash::Hash + Eq + Clone, P: PartialEq> {
    #[pin]
    state: CallState<Id, P>,
}

#[pin_project::pin_project(project = CallStateProj)]
enum CallState<Id: std::hash::Hash + Eq + Clone, P: PartialEq> {
    /// Sent: waiting for the answer, or for the call table to time it out.
    Waiting {
        waiter: crate::calls::Waiter<Id, P, dispatch::CallResult>,
        format: &'static dyn rpc_core::Format,
    },
    /// Finished before it had to wait.
    Ready(Option<Result<rpc_core::Payload, rpc_core::Error>>),
    /// The general path.
    Boxed(futures::future::BoxFuture<'static, Result<rpc_core::Payload, rpc_core::Error>>),
}

impl<Id: std::hash::Hash + Eq + Clone, P: PartialEq> CallFuture<Id, P> {
    /// Waits for `waiter`'s answer, or for the call table to expire it (it was registered with
    /// `register_call`).
    fn waiting(
        waiter: crate::calls::Waiter<Id, P, dispatch::CallResult>,
        format: &'static dyn rpc_core::Format,
    ) -> Self {
        Self {
            state: CallState::Waiting { waiter, format },
        }
    }

    fn ready(result: Result<rpc_core::Payload, rpc_core::Error>) -> Self {
        Self {
            state: CallState::Ready(Some(result)),
        }
    }

    fn boxed(
        fut: impl std::future::Future<Output = Result<rpc_core::Payload, rpc_core::Error>>
            + Send
            + 'static,
    ) -> Self {
        Self {
            state: CallState::Boxed(Box::pin(fut)),
        }
    }
}

/// An answer as the caller sees it.
fn answer(
    r: Result<dispatch::CallResult, rpc_core::Error>,
    format: &'static dyn rpc_core::Format,
) -> Result<rpc_core::Payload, rpc_core::Error> {
    match r? {
        Ok(bytes) => Ok(rpc_core::Payload::new(bytes, format)),
        Err(e) => Err(rpc_core::Error::Server(e)),
    }
}

impl<Id: std::hash::Hash + Eq + Clone, P: PartialEq> std::future::Future for CallFuture<Id, P> {
    type Output = Result<rpc_core::Payload, rpc_core::Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project().state.project() {
            CallStateProj::Waiting { waiter, format } => {
                waiter.poll_expiring(cx).map(|r| answer(r, *format))
            }
            CallStateProj::Ready(r) => {
                std::task::Poll::Ready(r.take().unwrap_or_else(|| {
                    Err(rpc_core::Error::Other("polled after completion".into()))
                }))
            }
            CallStateProj::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

impl<Id: std::hash::Hash + Eq + Clone, P: PartialEq> std::fmt::Debug for CallFuture<Id, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            CallState::Waiting { .. } => "waiting",
            CallState::Ready(_) => "ready",
            CallState::Boxed(_) => "running",
        };
        f.debug_struct("CallFuture").field("state", &state).finish()
    }
}
