//! What every stream transport shares (TCP, Unix sockets, in-memory pipes, any byte stream):
//! framing, connections, servers and reconnecting clients.
//!
//! A connection is symmetric: both ends may serve and call over it. Each connection has a reader
//! task, which cuts frames ([`Framing`]), decodes them with the codec and either serves requests
//! (answering from the reader itself when the handler does not wait, else from a task) or hands
//! responses to the calls waiting for them; and a writer task, which writes everything queued in one
//! go, so frames sent while a write is under way are coalesced into the next write.
//!
//! Limits and defaults are [`Builder`]'s, shared with every transport.
//!
//! Queued outgoing bytes are bounded too: past 1 MiB, senders wait for the writer, and a
//! connection that stops reading its responses stops being read from.

mod conn;
mod connection;
mod framing;
mod reader;
mod stream_io;

pub use self::connection::Connection;
pub use self::framing::{FrameSplitter, Framing, MAX_HEADER_BLOCK};
pub(crate) use self::reader::{is_over_budget, Cut, FrameReader};
pub use self::stream_io::Io;

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::serve::Serve;
use rpc_core::codec::Codec;
use rpc_core::{Client, Error, Payload, Request, Service};

use self::conn::{Conn, Pool};
use crate::budget::Budget;
pub use crate::builder::Builder;
use crate::builder::{sealed, Connected, Connections};
use crate::life::{Life, Phase};
use crate::slots::{PerIp, Slots};
pub use crate::stats::Stats;
use crate::stats::{Counters, Event};
use crate::CallFuture;

/// Settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) framing: Framing,
    pub(crate) max_frame: usize,
    pub(crate) timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) write_timeout: Duration,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) min_bytes_per_value: usize,
}

/// A stream transport: how to reach an address (TCP, Unix).
pub trait Transport: Send + Sync + 'static {
    /// What a client connects to.
    type Addr: Clone + fmt::Debug + Send + Sync + 'static;
    /// What a server is bound at ([`Server::local_addr`]): a socket address for TCP, while
    /// clients may name a host.
    type Local: Clone + fmt::Debug + Send + Sync + 'static;
    /// Connects.
    fn connect(addr: &Self::Addr) -> impl Future<Output = io::Result<Io>> + Send;
}

/// A bound listener.
pub(crate) trait Accept: Send + 'static {
    /// Called once before the first `accept`, with the counters of the server it serves.
    fn attach(&mut self, counters: &Arc<Counters>) {
        let _ = counters;
    }
    fn accept(&mut self) -> impl Future<Output = io::Result<Io>> + Send;
}

/// The stream transports' own settings, beside [`Builder`]'s shared ones: how frames are
/// delimited, the connection settings, and the transport `K`'s own ([`Tcp`](crate::tcp::Tcp),
/// [`Unix`](crate::unix::Unix), [`Memory`](crate::memory::Memory), or `()` for streams the caller
/// opens).
#[derive(Debug, Clone, Default)]
pub struct Stream<K> {
    framing: Framing,
    connections: Connections,
    pub(crate) kind: K,
}

impl<K> sealed::Sealed for Stream<K> {}

impl<K> Connected for Stream<K> {
    fn connections(&mut self) -> &mut Connections {
        &mut self.connections
    }
}

/// A builder for connections over streams the caller opens ([`Builder::start`]), with the
/// defaults: the settings of every stream transport, without a transport of its own.
pub fn builder() -> Builder<Stream<()>> {
    Builder::default()
}

impl<K> Builder<Stream<K>> {
    /// How frames are delimited. Default [`Framing::LengthPrefixed`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.transport.framing = framing;
        self
    }

    /// The settings of each connection.
    fn config(&self) -> Arc<Config> {
        let c = &self.transport.connections;
        Arc::new(Config {
            framing: self.transport.framing,
            max_frame: c.max_frame,
            timeout: self.timeout,
            idle_timeout: c.idle_timeout,
            write_timeout: c.write_timeout,
            max_concurrent_requests: self.max_concurrent_requests,
            min_bytes_per_value: self.min_bytes_per_value,
        })
    }

    /// Starts a connection over a stream that is already open (an in-memory pipe, a TLS stream,
    /// a child process's stdio, an accepted socket): it serves this builder's service, if any, and
    /// calls the peer through the returned [`Connection`]. Must be called within a tokio runtime.
    ///
    /// Sockets keep their direct writes when given as `Io::from(socket)`; any other stream is
    /// written by the connection's writer task and flushed after each batch of frames.
    pub fn start<C: Codec>(self, io: Io, codec: C) -> Connection<C> {
        let conn = Conn::spawn(
            io,
            codec,
            self.config(),
            self.service,
            Pool::alone(Arc::new(Counters::default())),
        );
        Connection::guarded(conn)
    }

    pub(crate) fn start_server<C: Codec, A: Accept, U: Transport>(
        self,
        listener: A,
        codec: C,
        local_addr: U::Local,
    ) -> Server<U> {
        let config = self.config();
        let serve = self.service;
        let requests_per_ip = PerIp::new(self.max_concurrent_requests_per_ip);
        start_accepting(
            listener,
            local_addr,
            &self.transport.connections,
            move |stream, shared| {
                let conn = Conn::spawn(
                    stream,
                    codec.clone(),
                    config.clone(),
                    serve.clone(),
                    Pool {
                        counters: shared.counters.clone(),
                        budget: Some(shared.budget.clone()),
                        requests_per_ip: Some(requests_per_ip.clone()),
                    },
                );
                async move {
                    // Runs until the connection closes; the server's shutdown drains it, and
                    // at the end of the grace period aborts it.
                    tokio::select! {
                        _ = conn.closed() => return,
                        _ = shared.life.reached(Phase::Draining) => conn.drain(),
                    }
                    tokio::select! {
                        _ = conn.closed() => {}
                        _ = shared.life.reached(Phase::Aborted) => conn.abort(),
                    }
                }
            },
        )
    }
}

/// Starts an accept loop: each accepted connection is handed to `handle`, whose future runs until
/// the connection is done. Returns the server's handle.
pub(crate) fn start_accepting<A, F, Fut, T>(
    mut listener: A,
    local_addr: T::Local,
    limits: &Connections,
    handle: F,
) -> Server<T>
where
    T: Transport,
    A: Accept,
    F: Fn(Io, Arc<ServerShared>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shared = Arc::new(ServerShared {
        life: Life::default(),
        accepting: Slots::new(1),
        connections: Slots::new(limits.max_connections),
        per_ip: PerIp::new(limits.max_connections_per_ip),
        budget: limits.budget(),
        counters: Arc::new(Counters::default()),
    });
    let accepting = shared.accepting.take();
    listener.attach(&shared.counters);
    tokio::spawn(accept_loop(
        listener,
        limits.max_connections,
        shared.clone(),
        handle,
        accepting,
    ));
    Server {
        shared,
        local_addr,
        on_stop: Mutex::new(None),
    }
}

/// A running server of a stream transport ([`tcp::Server`](crate::tcp::Server),
/// [`unix::Server`](crate::unix::Server), [`memory::Server`](crate::memory::Server)).
///
/// [`shutdown`](Server::shutdown) stops accepting, lets every connection answer what it accepted
/// and closes them. Dropping the handle does the same without waiting (and removes a Unix socket
/// file): see [`Serving`](crate::Serving).
pub struct Server<T: Transport> {
    shared: Arc<ServerShared>,
    local_addr: T::Local,
    /// What to undo once the server stops accepting (a Unix socket file to remove).
    on_stop: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl<T: Transport> Server<T> {
    /// Runs `f` once the server stops accepting.
    pub(crate) fn on_stop(self, f: impl FnOnce() + Send + 'static) -> Self {
        *self.on_stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
        self
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> T::Local {
        self.local_addr.clone()
    }

    /// The number of open connections.
    pub fn connections(&self) -> usize {
        self.shared.connections()
    }

    /// What the server counted.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The bytes its connections hold now in frames still arriving (past each one's first
    /// 64 KiB) and in frames being served: what
    /// [`max_frame_memory`](Builder::max_frame_memory) bounds.
    pub fn frame_memory(&self) -> usize {
        self.shared.budget.used()
    }

    /// Stops accepting and drains the connections.
    fn stop_accepting(&self) {
        self.shared.life.advance(Phase::Draining);
        let undo = self
            .on_stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(undo) = undo {
            undo();
        }
    }

    /// Stops accepting, lets every connection answer the requests it accepted, closes them, and
    /// waits at most `grace`; what is still open then is closed. Returns whether all closed in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop_accepting();
        self.shared.shutdown(grace).await
    }
}

impl<T: Transport> Drop for Server<T> {
    /// Stops accepting and drains the connections (they stop reading, answer what they accepted
    /// and close), without waiting.
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

impl<T: Transport> crate::Serving for Server<T> {
    type Addr = T::Local;

    fn local_addr(&self) -> T::Local {
        Server::local_addr(self)
    }

    fn stats(&self) -> Stats {
        Server::stats(self)
    }

    fn shutdown(&self, grace: Duration) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(Server::shutdown(self, grace))
    }
}

impl<T: Transport> fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections())
            .finish()
    }
}

/// State a server's accept loop shares with its handle.
#[derive(Debug)]
pub(crate) struct ServerShared {
    /// Open (accepting); draining (not accepting; connections stop reading, answer what they
    /// accepted, and close); aborted (the grace period is over: what is left is closed).
    pub(crate) life: Life,
    /// Held by the accept loop until it has stopped: a connection it was taking when the
    /// shutdown began is then counted among `connections`.
    accepting: Arc<Slots>,
    /// The open connections: each holds a slot until it is done.
    connections: Arc<Slots>,
    /// The open connections by IP address.
    per_ip: Arc<PerIp>,
    /// The memory its connections hold in frames.
    pub(crate) budget: Arc<Budget>,
    pub(crate) counters: Arc<Counters>,
}

impl ServerShared {
    pub(crate) fn connections(&self) -> usize {
        self.connections.in_use()
    }

    /// Drains every connection and waits at most `grace`; then closes what is left.
    pub(crate) async fn shutdown(&self, grace: Duration) -> bool {
        self.life.advance(Phase::Draining);
        let drained = async {
            self.accepting.idle().await;
            self.connections.idle().await;
        };
        let clean = tokio::time::timeout(grace, drained).await.is_ok();
        self.life.advance(Phase::Aborted);
        clean
    }
}

async fn accept_loop<A, F, Fut>(
    mut listener: A,
    max_connections: usize,
    shared: Arc<ServerShared>,
    handle: F,
    _accepting: crate::slots::Slot,
) where
    A: Accept,
    F: Fn(Io, Arc<ServerShared>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stop = shared.life.reached(Phase::Draining);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.connections.is_full() {
            shared.counters.record(Event::ConnectionRefused);
            tracing::warn!(peer = %stream.peer(), max_connections, "connection limit reached; closing a new connection");
            drop(stream);
            continue;
        }
        let ip = stream.peer().socket_addr().map(|a| a.ip());
        let Some(from_ip) = shared.per_ip.take_if_room(ip) else {
            shared.counters.record(Event::ConnectionRefused);
            tracing::warn!(peer = %stream.peer(), "connection limit per IP address reached; closing a new connection");
            drop(stream);
            continue;
        };
        shared.counters.record(Event::Connection);
        let slot = shared.connections.take();
        let done = handle(stream, shared.clone());
        tokio::spawn(async move {
            done.await;
            drop((slot, from_ip));
        });
    }
}

/// A `tower::Service` of calls to one server, over a connection opened on first use and opened
/// again after it is lost. Calls in flight when a connection is lost fail with a transport error;
/// later calls use a new connection. Cloning is cheap; the connection closes when the last clone goes.
pub struct Channel<C: Codec, T: Transport> {
    shared: Arc<ClientShared<C, T>>,
}

struct ClientShared<C: Codec, T: Transport> {
    addr: T::Addr,
    codec: C,
    config: Arc<Config>,
    serve: Option<Serve>,
    current: Mutex<Option<Arc<Conn<C>>>>,
    connecting: tokio::sync::Mutex<()>,
    counters: Arc<Counters>,
    _transport: PhantomData<fn() -> T>,
}

impl<C: Codec, T: Transport> Drop for ClientShared<C, T> {
    fn drop(&mut self) {
        if let Some(c) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            c.close();
        }
    }
}

impl<C: Codec, T: Transport> ClientShared<C, T> {
    fn live(&self) -> Option<Arc<Conn<C>>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| c.accepts_calls())
            .cloned()
    }

    async fn conn(&self) -> Result<Arc<Conn<C>>, Error> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let stream = T::connect(&self.addr).await.map_err(Error::Transport)?;
        self.counters.record(Event::Connection);
        let conn = Conn::spawn(
            stream,
            self.codec.clone(),
            self.config.clone(),
            self.serve.clone(),
            Pool::alone(self.counters.clone()),
        );
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }
}

impl<C: Codec, T: Transport> Channel<C, T> {
    pub(crate) fn new<X>(builder: Builder<Stream<X>>, addr: T::Addr, codec: C) -> Self {
        Self {
            shared: Arc::new(ClientShared {
                addr,
                codec,
                config: builder.config(),
                serve: builder.service,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                counters: Arc::new(Counters::default()),
                _transport: PhantomData,
            }),
        }
    }

    /// A typed client over this channel.
    pub fn into_client(self) -> Client<Self> {
        let format = self.shared.codec.format();
        Client::new(self, format)
    }

    /// The address this channel connects to.
    pub fn addr(&self) -> &T::Addr {
        &self.shared.addr
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.shared.live().is_some()
    }

    /// Opens the connection now rather than on the first call; [`Error::Timeout`] if it is not
    /// open within the default call timeout.
    pub async fn connect(&self) -> Result<(), Error> {
        match tokio::time::timeout(self.shared.config.timeout, self.shared.conn()).await {
            Ok(conn) => conn.map(drop),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Closes the current connection, if any; the next call opens a new one.
    pub fn disconnect(&self) {
        if let Some(c) = self.shared.live() {
            c.close();
        }
    }

    /// What this channel counted.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

impl<C: Codec, T: Transport> Clone for Channel<C, T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Codec, T: Transport> fmt::Debug for Channel<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("addr", &self.shared.addr)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl<C: Codec, T: Transport> Service<Request> for Channel<C, T> {
    type Response = Payload;
    type Error = Error;
    type Future = CallFuture<C::Id, ()>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Connected: the call is sent here and its future only waits for the answer.
        if let Some(conn) = self.shared.live() {
            return conn.call(req);
        }
        // Connecting first, within the call's deadline (or the default timeout): a connection
        // attempt the peer never answers, or other callers' attempts queued before this one,
        // must not keep the call past it.
        let shared = self.shared.clone();
        let mut req = req;
        let deadline = crate::deadline_of(&req, tokio::time::Instant::now(), shared.config.timeout);
        req.context_mut().set_deadline(Some(deadline));
        CallFuture::boxed(async move {
            match tokio::time::timeout_at(deadline, shared.conn()).await {
                Ok(conn) => conn?.call(req).await,
                Err(_) => Err(Error::Timeout),
            }
        })
    }
}
