//! basic-socket-rpc 0.6.1's protocol: binary frames, 16-bit command ids, one call at a time per
//! connection, an INIT handshake, and optional exclusive access. Over TCP or Unix sockets.
//!
//! Commands are a [`Router`](rpc_core::Router)'s routes registered by id
//! ([`Router::command`](rpc_core::Router::command), or a [`Route`](rpc_core::Route) with both a
//! name and an id). Arguments and results are in the little-endian format of
//! [`rpc_core::le`] (`u32`-prefixed strings, fixed-width integers, ...), so typed handlers work
//! unchanged; a [`raw`](rpc_core::handler::raw) handler sees the argument bytes as they came.
//!
//! ```
//! use rpc_core::Router;
//! use rpc_transports::raw;
//!
//! async fn hello(name: String) -> String {
//!     format!("hello {name}")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = raw::Builder::new()
//!     .serve(Router::new().command(0, hello))
//!     .bind_tcp("127.0.0.1:0")
//!     .await?;
//! let client = raw::Builder::new().client_tcp(server.local_addr());
//! let greeting: String = client.call(0u16, ("Robert",)).await?;
//! assert_eq!(greeting, "hello Robert");
//! # Ok(())
//! # }
//! ```
//!
//! # How it behaves
//!
//! - A connection must start with INIT. The server grants a session (`01`) unless
//!   [`Builder::max_sessions`] are taken; then it answers `00` and the client sends INIT again
//!   later. Waiting clients get the session in the order they first asked (FIFO).
//!   [`Builder::exclusive`] is one session at a time, as basic-socket-rpc's exclusive server.
//! - Protocol errors (RPC before INIT, a second INIT, an unknown type or command, a short command
//!   id, a size field under 5, arguments that do not decode, trailing bytes) are answered with an
//!   exception frame and the connection stays usable. A size field over the maximum frame length
//!   (default 8 MiB) gets an exception frame and the connection is closed; the claimed size is
//!   never allocated.
//! - Exception frames carry a name (`ProtocolError` or `ServerRpcError`) and the error's message,
//!   never a traceback; [`Builder::detailed_errors`] adds the code and data.
//! - The client sends one call at a time per connection, connects and sends INIT on first use,
//!   retries INIT every 4.5 s while the server is busy (up to the call's deadline), and reconnects
//!   after a failure.

mod frame;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::serve::Serve;
use crate::stream::{Cut, FrameReader};
use bytes::BytesMut;
use futures::future::BoxFuture;
use rpc_core::context::deadline_after;
use rpc_core::le::LE;
use rpc_core::{
    Client, Context, Error, ErrorCode, Method, Payload, Request, Response, ServerError, Service,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::time::Instant;

use self::frame::{put_exception, put_frame, Frame, FrameDecoder, EXCEPTION, INIT, RPC, VERSION};
use crate::builder::{sealed, Connected, Connections};
use crate::life::Phase;
use crate::stats::Event;
use crate::stream::{self, Accept, Io, ServerShared};
use crate::{tcp, unix};

/// A frame decoder with a limit, for the fuzz targets.
#[cfg(fuzzing)]
pub(crate) fn frame_decoder(max: usize) -> FrameDecoder {
    FrameDecoder { max }
}

/// How long a client waits before sending INIT again to a busy server: 4.5 s, as basic-socket-rpc.
pub const INIT_RETRY_INTERVAL: Duration = Duration::from_millis(4500);

/// basic-socket-rpc's own settings, beside [`Builder`]'s shared ones and the connection
/// settings.
#[derive(Debug, Clone)]
pub struct Raw {
    connections: Connections,
    max_sessions: usize,
    init_retry: Duration,
    detailed_errors: bool,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            connections: Connections::default(),
            max_sessions: usize::MAX,
            init_retry: INIT_RETRY_INTERVAL,
            detailed_errors: false,
        }
    }
}

impl sealed::Sealed for Raw {}

impl Connected for Raw {
    fn connections(&mut self) -> &mut Connections {
        &mut self.connections
    }
}

/// Configures basic-socket-rpc servers and clients: the settings every transport shares
/// ([`crate::Builder`]), those of connections, and the protocol's own below.
pub type Builder = crate::Builder<Raw>;

impl Builder {
    /// How many clients may hold a session at once; the others are answered "busy" at INIT and
    /// served in the order they asked. Default: no limit.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.transport.max_sessions = n.max(1);
        self
    }

    /// One client at a time, as basic-socket-rpc's exclusive-access server.
    pub fn exclusive(self) -> Self {
        self.max_sessions(1)
    }

    /// How long a client waits before sending INIT again to a busy server. Default 4.5 s.
    pub fn init_retry_interval(mut self, interval: Duration) -> Self {
        self.transport.init_retry = interval;
        self
    }

    /// Exception frames also carry the error's code and data. Off by default: an exception says
    /// what went wrong, not how the server is built.
    pub fn detailed_errors(mut self, on: bool) -> Self {
        self.transport.detailed_errors = on;
        self
    }

    /// The largest frame, never under the header's size.
    fn max_frame(&self) -> usize {
        self.transport.connections.max_frame.max(frame::HEADER)
    }

    fn start_server<A: Accept, T: stream::Transport>(
        self,
        listener: A,
        local_addr: T::Local,
    ) -> stream::Server<T> {
        let limits = self.transport.connections.clone();
        let server = Arc::new(ServerState {
            gate: Gate::new(self.transport.max_sessions),
            next_conn: AtomicU64::new(0),
            config: self,
        });
        stream::start_accepting(listener, local_addr, &limits, move |io, shared| {
            let server = server.clone();
            async move {
                // A forced shutdown drops the connection wherever it waits (its socket and its
                // seat at the gate go with it).
                let forced = shared.clone();
                tokio::select! {
                    _ = serve_connection(server, io, shared) => {}
                    _ = forced.life.reached(Phase::Aborted) => {}
                }
            }
        })
    }

    /// Serves on a TCP address.
    pub async fn bind_tcp(self, addr: impl ToSocketAddrs) -> io::Result<tcp::Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start_server(listener, local_addr))
    }

    /// Serves on a Unix socket file (see [`unix`] for how the file is handled).
    pub async fn bind_unix(self, path: impl AsRef<Path>) -> io::Result<unix::Server> {
        let path = path.as_ref().to_path_buf();
        let listener = unix::listen(&path, None).await?;
        let file = listener.file.clone();
        Ok(self
            .start_server(listener, path)
            .on_stop(move || file.remove()))
    }

    /// Serves TLS connections on a TCP address (feature `tls`; see [`tls`](crate::tls)), with
    /// the TLS transport's default handshake bounds.
    #[cfg(feature = "tls")]
    pub async fn bind_tls(
        self,
        addr: impl ToSocketAddrs,
        config: Arc<crate::tls::rustls::ServerConfig>,
    ) -> io::Result<crate::tls::Server> {
        let (listener, local_addr) =
            crate::tls::listen(addr, config, crate::tls::Tls::default()).await?;
        Ok(self.start_server(listener, local_addr))
    }

    /// A typed client of the TLS server at `addr` (feature `tls`); it connects on its first call.
    #[cfg(feature = "tls")]
    pub fn client_tls(self, addr: crate::tls::Address) -> Client<Channel<crate::tls::Tls>> {
        Client::new(self.channel::<crate::tls::Tls>(addr), &LE)
    }

    /// A typed client of the server at `addr`; it connects on its first call.
    pub fn client_tcp(self, addr: impl Into<tcp::Address>) -> Client<Channel<tcp::Tcp>> {
        Client::new(self.channel::<tcp::Tcp>(addr.into()), &LE)
    }

    /// A typed client of the server at the socket file `path`; it connects on its first call.
    pub fn client_unix(self, path: impl AsRef<Path>) -> Client<Channel<unix::Unix>> {
        Client::new(self.channel::<unix::Unix>(path.as_ref().to_path_buf()), &LE)
    }

    /// A channel (a `tower::Service`) to the server at `addr`, over transport `T`.
    pub fn channel<T: stream::Transport>(self, addr: T::Addr) -> Channel<T> {
        Channel {
            shared: Arc::new(ClientShared {
                addr,
                conn: tokio::sync::Mutex::new(None),
                config: self,
            }),
        }
    }
}

// ===== sessions =====

/// Who holds a session and who waits for one, in order.
struct Gate {
    max: usize,
    state: Mutex<GateState>,
}

struct GateState {
    active: usize,
    waiting: VecDeque<u64>,
}

impl Gate {
    fn new(max: usize) -> Self {
        Self {
            max,
            state: Mutex::new(GateState {
                active: 0,
                waiting: VecDeque::new(),
            }),
        }
    }

    /// Grants connection `id` a session if one is free and no one asked before it.
    fn try_enter(&self, id: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let first = s.waiting.front().is_none_or(|w| *w == id);
        if s.active < self.max && first {
            if s.waiting.front() == Some(&id) {
                s.waiting.pop_front();
            }
            s.active += 1;
            true
        } else {
            if !s.waiting.contains(&id) {
                s.waiting.push_back(id);
            }
            false
        }
    }

    fn leave(&self, id: u64, had_session: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if had_session {
            s.active -= 1;
        }
        s.waiting.retain(|w| *w != id);
    }
}

/// A connection's place at the gate: a session, or a turn in the queue for one. Left when
/// dropped, however the connection ends.
struct Seat<'a> {
    gate: &'a Gate,
    id: u64,
    session: bool,
}

impl Seat<'_> {
    fn try_enter(&mut self) -> bool {
        self.session = self.gate.try_enter(self.id);
        self.session
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.gate.leave(self.id, self.session);
    }
}

// ===== server =====

struct ServerState {
    config: Builder,
    gate: Gate,
    next_conn: AtomicU64,
}

/// Writes `buf` out and flushes, taking no longer than `limit`.
async fn send<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    buf: &mut BytesMut,
    limit: Duration,
) -> io::Result<()> {
    let at = deadline_after(tokio::time::Instant::now(), limit);
    let written = async {
        w.write_all(buf).await?;
        w.flush().await
    };
    let r = match tokio::time::timeout_at(at, written).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer took no answer for {limit:?}"),
        )),
    };
    buf.clear();
    r
}

fn protocol_error(why: impl Into<std::borrow::Cow<'static, str>>) -> ServerError {
    ServerError::new(ErrorCode::INVALID_REQUEST, why)
}

async fn serve_connection(server: Arc<ServerState>, io: Io, shared: Arc<ServerShared>) {
    let id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let config = &server.config;
    let Io {
        read,
        write: mut w,
        peer,
        ..
    } = io;
    let mut frames = FrameReader::new(
        read,
        FrameDecoder {
            max: config.max_frame(),
        },
        config.max_frame(),
        Some(shared.budget.account()),
    );
    let mut out = BytesMut::with_capacity(1024);
    let mut seat = Seat {
        gate: &server.gate,
        id,
        session: false,
    };
    // The connection's own instance of the service.
    let mut serve = config.service.as_ref().map(Serve::local);
    let mut drain = shared.life.reached(Phase::Draining);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut drain => break,
            r = async {
                match config.transport.connections.idle_timeout {
                    Some(t) => tokio::time::timeout(t, frames.next()).await.ok(),
                    None => Some(frames.next().await),
                }
            } => r,
        };
        let frame = match next {
            None => {
                shared.counters.record(Event::IdleClosed);
                break;
            }
            Some(None) => break,
            Some(Some(Ok(cut))) => cut,
            Some(Some(Err(e))) => {
                shared
                    .counters
                    .record(if crate::stream::is_over_budget(&e) {
                        Event::OverBudget
                    } else {
                        Event::BadFrame
                    });
                tracing::warn!(%peer, error = %e, "closing the connection");
                put_exception(&mut out, &protocol_error(e.to_string()), false);
                let _ = send(&mut w, &mut out, config.transport.connections.write_timeout).await;
                break;
            }
        };
        // Its allocation stays counted against the server's frame memory until it is answered.
        let Cut { frame, held: _held } = frame;
        // A call that was made and failed (its handler's error, an answer too large) is not a
        // malformed frame.
        let mut call_failed = false;
        let error = match frame {
            Frame::TooSmall(size) => Some(protocol_error(format!(
                "reported message size too small: {size}"
            ))),
            Frame::Msg {
                kind: INIT,
                payload,
            } => {
                if seat.session {
                    Some(protocol_error("initialization already occurred"))
                } else if payload.len() < 3 || payload[0] != VERSION[0] {
                    Some(protocol_error(format!(
                        "incorrect protocol version {:?}; expected major {}",
                        &payload[..payload.len().min(3)],
                        VERSION[0]
                    )))
                } else {
                    let session = seat.try_enter();
                    let _ = put_frame(&mut out, INIT, usize::MAX, |b| {
                        b.extend_from_slice(&[u8::from(session)])
                    });
                    None
                }
            }
            Frame::Msg { kind: RPC, payload } if !seat.session => {
                let _ = payload;
                Some(protocol_error("need to initialize the connection first"))
            }
            Frame::Msg { kind: RPC, payload } if payload.len() < 2 => {
                let _ = payload;
                Some(protocol_error("insufficient bytes in command"))
            }
            Frame::Msg { kind: RPC, payload } => {
                shared.counters.record(Event::Request);
                let cmd = u16::from_le_bytes([payload[0], payload[1]]);
                let args = Payload::new(payload.slice(2..), &LE);
                let response = match &mut serve {
                    Some(service) => {
                        // The protocol carries no deadline: a request has none unless a layer
                        // (`DeadlineLayer::default_timeout`) gives it one.
                        let ctx = Context::from_peer(peer.clone());
                        service
                            .call(Request::from_parts(Method::Id(cmd), args, ctx))
                            .await
                    }
                    None => Response::error(ServerError::method_not_found(Method::Id(cmd))),
                };
                call_failed = response.result().is_err();
                match response.result() {
                    Ok(p) => match put_frame(&mut out, RPC, config.max_frame(), |b| {
                        b.extend_from_slice(p.bytes())
                    }) {
                        Ok(()) => None,
                        Err((size, limit)) => {
                            call_failed = true;
                            Some(ServerError::new(
                                ErrorCode::MESSAGE_TOO_LARGE,
                                format!(
                                    "the response of {size} bytes exceeds the limit of {limit} bytes"
                                ),
                            ))
                        }
                    },
                    Err(e) => Some(e.clone()),
                }
            }
            Frame::Msg { kind, .. } => {
                Some(protocol_error(format!("unexpected message type {kind}")))
            }
        };
        if let Some(e) = &error {
            if !call_failed {
                shared.counters.record(Event::Malformed);
            }
            put_exception(&mut out, e, config.transport.detailed_errors);
        }
        if let Err(e) = send(&mut w, &mut out, config.transport.connections.write_timeout).await {
            if e.kind() == io::ErrorKind::TimedOut {
                shared.counters.record(Event::WriteStalled);
                tracing::warn!(%peer, "closing a connection whose peer takes no answers");
            }
            break;
        }
        shared.counters.answered(&peer, error.as_ref());
    }
    drop(seat);
    let _ = w.shutdown().await;
}

// ===== client =====

/// A `tower::Service` of calls to one basic-socket-rpc server, one at a time over one connection,
/// opened (with its INIT handshake) on first use and again after a failure.
pub struct Channel<T: stream::Transport> {
    shared: Arc<ClientShared<T>>,
}

struct ClientShared<T: stream::Transport> {
    addr: T::Addr,
    conn: tokio::sync::Mutex<Option<ClientConn>>,
    config: Builder,
}

struct ClientConn {
    frames: FrameReader<Box<dyn AsyncRead + Send + Unpin>, FrameDecoder>,
    w: Box<dyn AsyncWrite + Send + Unpin>,
    out: BytesMut,
}

impl ClientConn {
    async fn exchange(&mut self) -> Result<Frame, Error> {
        // Bounded by the call's own timeout, which covers the whole exchange.
        send(&mut self.w, &mut self.out, Duration::MAX).await?;
        match self.frames.next().await {
            Some(Ok(cut)) => Ok(cut.frame),
            Some(Err(e)) => Err(Error::Transport(e)),
            None => Err(Error::Transport(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
        }
    }
}

fn unexpected(f: &Frame) -> Error {
    Error::Transport(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected frame from the server: {f:?}"),
    ))
}

impl<T: stream::Transport> ClientShared<T> {
    async fn connect(&self) -> Result<ClientConn, Error> {
        let Io { read, write: w, .. } = T::connect(&self.addr).await?;
        let mut conn = ClientConn {
            frames: FrameReader::new(
                read,
                FrameDecoder {
                    max: self.config.max_frame(),
                },
                self.config.max_frame(),
                None,
            ),
            w,
            out: BytesMut::with_capacity(1024),
        };
        loop {
            let _ = put_frame(&mut conn.out, INIT, usize::MAX, |b| {
                b.extend_from_slice(&VERSION)
            });
            match conn.exchange().await? {
                Frame::Msg {
                    kind: INIT,
                    payload,
                } if payload.first() == Some(&1) => return Ok(conn),
                Frame::Msg { kind: INIT, .. } => {
                    tracing::debug!(addr = ?self.addr, "the server is busy; asking again");
                    tokio::time::sleep(self.config.transport.init_retry).await;
                }
                Frame::Msg {
                    kind: EXCEPTION,
                    payload,
                } => return Err(Error::Server(frame::parse_exception(payload))),
                other => return Err(unexpected(&other)),
            }
        }
    }

    async fn call(&self, req: Request) -> Result<Payload, Error> {
        let Method::Id(cmd) = *req.method() else {
            return Err(Error::Codec(
                "basic-socket-rpc calls commands by numeric id, not by name".into(),
            ));
        };
        req.args().in_format(&LE)?;
        let deadline = crate::deadline_of(&req, Instant::now(), self.config.timeout);
        let attempt = async {
            let mut held = Held {
                slot: self.conn.lock().await,
                clean: true,
            };
            if held.slot.is_none() {
                *held.slot = Some(self.connect().await?);
            }
            let conn = held.slot.as_mut().expect("connected above");
            let args = req.args().bytes();
            if let Err((size, limit)) =
                put_frame(&mut conn.out, RPC, self.config.max_frame(), |b| {
                    b.extend_from_slice(&cmd.to_le_bytes());
                    b.extend_from_slice(args);
                })
            {
                return Err(Error::TooLarge { size, limit });
            }
            // From here until its answer is read, the connection is only good for this call.
            held.clean = false;
            let reply = conn.exchange().await?;
            match reply {
                Frame::Msg { kind: RPC, payload } => {
                    held.clean = true;
                    Ok(Payload::new(payload, &LE))
                }
                Frame::Msg {
                    kind: EXCEPTION,
                    payload,
                } => {
                    held.clean = true;
                    Err(Error::Server(frame::parse_exception(payload)))
                }
                other => Err(unexpected(&other)),
            }
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(Error::Timeout))
    }
}

/// The channel's connection while one call uses it. Dropped before the call's answer was read
/// (a failure, a timeout, the caller giving up), it drops the connection under the lock, so no
/// later call reads that answer as its own.
struct Held<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<ClientConn>>,
    clean: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.clean {
            *self.slot = None;
        }
    }
}

impl<T: stream::Transport> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T: stream::Transport> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl<T: stream::Transport> Service<Request> for Channel<T> {
    type Response = Payload;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Payload, Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.call(req).await })
    }
}
