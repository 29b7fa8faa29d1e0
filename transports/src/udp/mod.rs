//! RPC over UDP: one socket serves requests from, and sends calls to, any number of peers.
//!
//! An [`Endpoint`] owns a socket and a receive loop. It serves a router (or any service) if given
//! one, and hands out a [`Channel`] per peer: a `tower::Service` of requests to that peer, which
//! [`Endpoint::client`] wraps in a typed [`Client`]. Both directions share the socket, as rpcudp
//! and Kademlia need: a handler can call back the peer that called it
//! ([`Context::caller`](rpc_core::Context::caller)) or any other.
//!
//! # Guarantees and limits
//!
//! - One datagram carries one message. A message whose payload (the datagram less the codec's
//!   fixed header) exceeds [`Builder::max_payload`] (default 8192 bytes, as rpcudp) is refused
//!   before sending with [`Error::TooLarge`]; a larger incoming datagram is dropped and counted.
//! - A response is accepted only from the address its request was sent to, and only for an id in
//!   flight; anything else is dropped and counted ([`Stats`]). Ids are unguessable with every
//!   codec: the endpoint makes them from 128 bits of a cryptographically secure generator
//!   ([`rpc_core::IdSeed::Unguessable`]; rpcudp's are 20 random bytes,
//!   JSON-RPC's 32 hexadecimal digits), so a forged answer cannot match a call.
//! - A call waits until its deadline (the request's, else [`Builder::timeout`], default 10 s) and
//!   then fails with [`Error::Timeout`]. Requests are sent once unless
//!   [`Builder::retransmit_every`] asks for copies (safe only against servers that answer copies
//!   from an at-most-once cache, [`Builder::at_most_once`]); retrying after a failure is a
//!   policy (middleware), since only the caller knows whether a method may run twice.
//! - At most [`Builder::max_concurrent_requests`] requests are served at once; more are answered
//!   [`ErrorCode::OVERLOADED`](rpc_core::ErrorCode::OVERLOADED) at once (if the codec carries
//!   errors) instead of queueing without bound.
//! - A handler that completes without waiting is answered from the receive loop itself, with no
//!   task spawned; one that waits runs on its own task.
//!
//! # Example
//!
//! ```
//! use rpc_codecs::msgpack::RpcudpCodec;
//! use rpc_core::{Context, Router};
//! use rpc_transports::udp::{Builder, Endpoint};
//!
//! async fn sayhi(ctx: Context, name: String) -> String {
//!     let peer = ctx.peer_addr().unwrap();
//!     format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Builder::new()
//!     .serve(Router::new().route("sayhi", sayhi))
//!     .bind("127.0.0.1:0", RpcudpCodec::new())
//!     .await?;
//!
//! let caller = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
//! let client = caller.client(server.local_addr());
//! let answer: String = client.call("sayhi", ("Snake Plissken",)).await?;
//! assert_eq!(
//!     answer,
//!     format!("Hello Snake Plissken you live at 127.0.0.1:{}", caller.local_addr().port())
//! );
//! # Ok(())
//! # }
//! ```

mod dedup;
mod socket;

pub use crate::stats::Stats;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::calls::{Delivery, InFlight};
use crate::serve::Serve;
use bytes::{Bytes, BytesMut};
use rpc_core::codec::{Codec, IdSeed};
use rpc_core::context::deadline_after;
use rpc_core::context::Origin;
use rpc_core::{
    BoxChannel, BoxError, Client, Context, Error, Payload, Peer, Request, Response, Service,
};
use tokio::net::{ToSocketAddrs, UdpSocket};
use tokio::time::Instant;

use crate::dispatch::{self, CallResult, Link};
use crate::life::{Life, Phase};
use crate::slots::{PerIp, Slots};
use crate::stats::{Counters, Event};
use crate::CallFuture;

/// The default largest payload, as rpcudp: 8192 bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 8192;
/// The default bound on an error answer: three times the datagram it answers (QUIC's
/// anti-amplification factor).
pub const DEFAULT_MAX_ERROR_AMPLIFICATION: usize = 3;
/// The largest payload a UDP datagram can carry over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// Receive buffers are cut from arenas of this size, so a datagram costs no allocation of its own.
const RECV_ARENA: usize = 64 * 1024;

/// The UDP transport's own settings, beside [`Builder`]'s shared ones.
#[derive(Debug, Clone)]
pub struct Udp {
    max_payload: usize,
    max_error_amplification: usize,
    at_most_once: Option<(usize, Duration)>,
    retransmit: Option<Duration>,
}

impl Default for Udp {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_error_amplification: DEFAULT_MAX_ERROR_AMPLIFICATION,
            at_most_once: None,
            retransmit: None,
        }
    }
}

/// Configures an [`Endpoint`]: the settings every transport shares ([`crate::Builder`]) and
/// UDP's own below.
pub type Builder = crate::Builder<Udp>;

impl Builder {
    /// The largest payload sent or accepted, in bytes, not counting the codec's fixed header.
    /// Default 8192 (rpcudp's limit); at most what a UDP datagram can carry (65507 bytes) less
    /// that header.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.transport.max_payload = bytes;
        self
    }

    /// Error answers (to malformed datagrams, unknown methods, bad arguments, refusals, and a
    /// batch's error items together) are sent only if at most `factor` times the size of the
    /// datagram they answer; larger ones are withheld and counted (`Stats::withheld`). A source
    /// address over UDP can be forged: without the bound, anyone could have small datagrams
    /// answered with large ones aimed at a third party. Default 3, QUIC's factor; an empty
    /// datagram is never answered. Results of well-formed calls are not bounded (SECURITY.md).
    pub fn max_error_amplification(mut self, factor: usize) -> Self {
        self.transport.max_error_amplification = factor;
        self
    }

    /// Runs each request at most once: a retransmitted request (same sender, same id) is not run
    /// again but answered with the response already sent, from a cache of at most `capacity`
    /// requests kept for at most `max_age` (as ONC RPC servers' duplicate-request caches). A copy
    /// arriving while the first still runs is dropped. Off by default.
    pub fn at_most_once(mut self, capacity: usize, max_age: Duration) -> Self {
        self.transport.at_most_once = Some((capacity, max_age));
        self
    }

    /// Sends each call's request again, with the same id, every `interval` until it is answered
    /// or its deadline passes. Against a server with [`at_most_once`](Builder::at_most_once) the
    /// call then survives lost datagrams without running twice; against other servers a
    /// retransmitted request may run again, so use it for idempotent methods there. Off by default.
    pub fn retransmit_every(mut self, interval: Duration) -> Self {
        self.transport.retransmit = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Binds a socket and starts the endpoint. Must be called within a tokio runtime.
    pub async fn bind<C: Codec>(
        self,
        addr: impl ToSocketAddrs,
        codec: C,
    ) -> io::Result<Endpoint<C>> {
        let socket = UdpSocket::bind(addr).await?;
        self.from_socket(socket, codec)
    }

    /// Starts the endpoint on a bound socket. Must be called within a tokio runtime.
    pub fn from_socket<C: Codec>(self, socket: UdpSocket, codec: C) -> io::Result<Endpoint<C>> {
        let socket = socket::Socket::new(socket)?;
        let local_addr = socket.local_addr()?;
        let max_payload = self
            .transport
            .max_payload
            .min(MAX_UDP_PAYLOAD.saturating_sub(codec.overhead()));
        let life = Arc::new(Life::default());
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            socket,
            local_addr,
            max_datagram: max_payload + codec.overhead(),
            codec,
            max_payload,
            timeout: self.timeout,
            retransmit: self.transport.retransmit,
            max_error_amplification: self.transport.max_error_amplification,
            min_bytes_per_value: self.min_bytes_per_value,
            calls: InFlight::with_sweep_every(crate::sweep_tick(self.timeout)),
            service: self.service.map_or_else(OnceLock::new, OnceLock::from),
            dedup: self
                .transport
                .at_most_once
                .map(|(capacity, age)| dedup::Dedup::new(capacity, age)),
            slots: Slots::new(self.max_concurrent_requests),
            per_ip: PerIp::new(self.max_concurrent_requests_per_ip),
            counters: Counters::default(),
            life: life.clone(),
        });
        tokio::spawn(receive_loop(shared.clone()));
        Ok(Endpoint {
            shared,
            guard: Arc::new(CloseOnDrop(life)),
        })
    }
}

/// Closes the endpoint when the last user handle goes.
#[derive(Debug)]
struct CloseOnDrop(Arc<Life>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.advance(Phase::Draining);
    }
}

struct Shared<C: Codec> {
    me: Weak<Shared<C>>,
    socket: socket::Socket,
    local_addr: SocketAddr,
    codec: C,
    max_payload: usize,
    max_datagram: usize,
    timeout: Duration,
    retransmit: Option<Duration>,
    max_error_amplification: usize,
    min_bytes_per_value: usize,
    calls: Arc<InFlight<C::Id, SocketAddr, CallResult>>,
    service: OnceLock<Serve>,
    dedup: Option<dedup::Dedup<C::Id>>,
    slots: Arc<Slots>,
    /// What each source address may hold of `slots`.
    per_ip: Arc<PerIp>,
    counters: Counters,
    /// Open; draining once closed (no more datagrams received, calls fail, requests being
    /// served still answered); closed once the receive loop has ended.
    life: Arc<Life>,
}

/// A UDP socket that serves and calls. Cloning is cheap; the socket closes when the last clone,
/// [`Channel`] and [`Client`] made from it are gone, or on [`close`](Endpoint::close).
#[derive(Clone)]
pub struct Endpoint<C: Codec> {
    shared: Arc<Shared<C>>,
    guard: Arc<CloseOnDrop>,
}

impl<C: Codec> Endpoint<C> {
    /// Binds a calling-only endpoint with the defaults; [`serve`](Endpoint::serve) can add a service later.
    pub async fn bind(addr: impl ToSocketAddrs, codec: C) -> io::Result<Self> {
        Builder::new().bind(addr, codec).await
    }

    /// Starts serving `service` on an endpoint that had none, so handlers can hold the endpoint
    /// (to call other peers, as a Kademlia node does).
    ///
    /// Returns `false`, changing nothing, if the endpoint already serves a service.
    pub fn serve<S>(&self, service: S) -> bool
    where
        S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.shared.service.set(Serve::new(service)).is_ok()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A `tower::Service` of requests to `peer`.
    ///
    /// A peer is a socket address, not a name: answers are accepted only from the address their
    /// request went to, so a name is resolved once, by the caller (`tokio::net::lookup_host`),
    /// rather than at each datagram.
    pub fn channel(&self, peer: SocketAddr) -> Channel<C> {
        Channel {
            shared: self.shared.clone(),
            _guard: Some(self.guard.clone()),
            peer: canonical(peer),
        }
    }

    /// A typed client for `peer`.
    pub fn client(&self, peer: SocketAddr) -> Client<Channel<C>> {
        Client::new(self.channel(peer), self.shared.codec.format())
    }

    /// Counters of what the endpoint received, sent and dropped.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The number of requests the at-most-once cache remembers.
    pub fn remembered_requests(&self) -> usize {
        self.shared.dedup.as_ref().map_or(0, |d| d.len())
    }

    /// The number of calls waiting for a response (answers their callers have not taken yet
    /// included).
    pub fn calls_in_flight(&self) -> usize {
        self.shared.calls.len()
    }

    /// Stops the endpoint: the receive loop ends, calls in flight fail with [`Error::Closed`], and
    /// later calls fail at once. Requests being served are still answered.
    pub fn close(&self) {
        self.shared.life.advance(Phase::Draining);
    }

    /// Closes the endpoint and waits, at most `grace`, until every request it accepted has been
    /// answered. Returns whether all were answered in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.close();
        // The receive loop may be starting a request: once it has ended, every request that
        // started holds its slot.
        let answered = async {
            self.shared.life.reached(Phase::Closed).await;
            self.shared.slots.idle().await;
        };
        tokio::time::timeout(grace, answered).await.is_ok()
    }

    /// Whether the endpoint is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// A handle that does not keep the endpoint open: for handlers that call other peers
    /// through their own endpoint, as a Kademlia node does. (A handler holding an `Endpoint`
    /// would keep it open for ever: the endpoint holds its handlers.)
    pub fn downgrade(&self) -> WeakEndpoint<C> {
        WeakEndpoint {
            shared: Arc::downgrade(&self.shared),
            guard: Arc::downgrade(&self.guard),
        }
    }
}

impl<C: Codec> crate::Serving for Endpoint<C> {
    type Addr = SocketAddr;

    fn local_addr(&self) -> SocketAddr {
        Endpoint::local_addr(self)
    }

    fn stats(&self) -> Stats {
        Endpoint::stats(self)
    }

    fn shutdown(&self, grace: Duration) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(Endpoint::shutdown(self, grace))
    }
}

/// An [`Endpoint`] that does not keep it open; [`upgrade`](WeakEndpoint::upgrade) gives the
/// endpoint while some `Endpoint`, [`Channel`] or [`Client`] of it is left.
///
/// ```
/// use rpc_codecs::msgpack::RpcudpCodec;
/// use rpc_core::Router;
/// use rpc_transports::udp::Endpoint;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
/// let me = node.downgrade();
/// node.serve(Router::new().route("port", move || {
///     let me = me.clone();
///     async move { me.upgrade().map(|ep| ep.local_addr().port()) }
/// }));
/// let caller = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
/// let port: Option<u16> = caller.client(node.local_addr()).call("port", ()).await?;
/// assert_eq!(port, Some(node.local_addr().port()));
/// # Ok(())
/// # }
/// ```
pub struct WeakEndpoint<C: Codec> {
    shared: Weak<Shared<C>>,
    guard: Weak<CloseOnDrop>,
}

impl<C: Codec> WeakEndpoint<C> {
    /// The endpoint, unless every handle of it is gone.
    pub fn upgrade(&self) -> Option<Endpoint<C>> {
        Some(Endpoint {
            guard: self.guard.upgrade()?,
            shared: self.shared.upgrade()?,
        })
    }
}

impl<C: Codec> Clone for WeakEndpoint<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<C: Codec> fmt::Debug for WeakEndpoint<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakEndpoint")
            .field("open", &(self.guard.strong_count() > 0))
            .finish()
    }
}

impl<C: Codec> fmt::Debug for Endpoint<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.shared.local_addr)
            .field("serving", &self.shared.service.get().is_some())
            .field("calls_in_flight", &self.shared.calls.len())
            .finish()
    }
}

/// A `tower::Service` that sends requests to one peer through an [`Endpoint`]'s socket.
///
/// Always ready; every call is independent, so many can be in flight at once. Cloning is cheap.
#[derive(Clone)]
pub struct Channel<C: Codec> {
    shared: Arc<Shared<C>>,
    // `None` for channels handed to handlers: those must not keep the endpoint open.
    _guard: Option<Arc<CloseOnDrop>>,
    peer: SocketAddr,
}

impl<C: Codec> Channel<C> {
    /// The peer this channel calls.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl<C: Codec> fmt::Debug for Channel<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("local_addr", &self.shared.local_addr)
            .field("peer", &self.peer)
            .finish()
    }
}

impl<C: Codec> Service<Request> for Channel<C> {
    type Response = Payload;
    type Error = Error;
    type Future = CallFuture<C::Id, SocketAddr>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.shared.call(self.peer, req)
    }
}

impl<C: Codec> Origin for Shared<C> {
    fn client(&self, peer: &Peer) -> Option<Client<BoxChannel>> {
        let addr = peer.socket_addr()?;
        let channel = Channel {
            shared: self.me.upgrade()?,
            _guard: None,
            peer: canonical(addr),
        };
        Some(Client::new(channel, self.codec.format()).boxed())
    }
}

/// Maps IPv4-mapped IPv6 addresses to IPv4, so a dual-stack socket matches replies to requests.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

thread_local! {
    /// Outgoing datagrams are encoded here and sent straight from it.
    static SEND_BUF: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(RECV_ARENA));
}

/// What encoding a datagram came to.
enum Encoded {
    /// Sent at once.
    Sent,
    /// The socket was busy: send these bytes when it is writable.
    Later(Vec<u8>),
    /// The codec has nothing to send (an error it cannot carry).
    Nothing,
}

impl<C: Codec> Shared<C> {
    fn is_closed(&self) -> bool {
        self.life.phase() >= Phase::Draining
    }

    /// An id nobody can guess, whatever the codec: anyone can send a datagram from a forged
    /// address, and only the id tells a real answer from a forged one.
    fn new_id(&self) -> C::Id {
        self.codec.new_id(IdSeed::Unguessable(rand::random()))
    }

    /// Encodes a datagram with `encode` and sends it to `to`, without allocating when the socket
    /// accepts it at once.
    async fn send_with(
        &self,
        to: SocketAddr,
        encode: impl FnOnce(&mut BytesMut) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.send_keeping(to, encode, &mut None).await
    }

    /// As `send_with`, also putting a copy of the datagram in `keep` if it is `Some`.
    async fn send_keeping(
        &self,
        to: SocketAddr,
        encode: impl FnOnce(&mut BytesMut) -> Result<bool, Error>,
        keep: &mut Option<Bytes>,
    ) -> Result<(), Error> {
        let encoded = self.try_send(to, encode, keep)?;
        match encoded {
            Encoded::Sent | Encoded::Nothing => Ok(()),
            Encoded::Later(bytes) => self.send_later(to, bytes).await,
        }
    }

    /// Sends a datagram the socket had no room for.
    async fn send_later(&self, to: SocketAddr, bytes: Vec<u8>) -> Result<(), Error> {
        self.socket
            .send_to(&bytes, to)
            .await
            .map(drop)
            .map_err(Error::Transport)
    }

    /// Encodes a datagram and sends it if the socket has room now.
    fn try_send(
        &self,
        to: SocketAddr,
        encode: impl FnOnce(&mut BytesMut) -> Result<bool, Error>,
        keep: &mut Option<Bytes>,
    ) -> Result<Encoded, Error> {
        SEND_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            if !encode(&mut buf)? {
                return Ok(Encoded::Nothing);
            }
            if let Some(k) = keep.as_mut() {
                *k = Bytes::copy_from_slice(&buf);
            }
            if buf.len() > self.max_datagram {
                return Err(Error::TooLarge {
                    size: buf.len().saturating_sub(self.codec.overhead()),
                    limit: self.max_payload,
                });
            }
            match self.socket.try_send_to(&buf, to) {
                Ok(_) => Ok(Encoded::Sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Encoded::Later(buf.to_vec())),
                Err(e) => Err(Error::Transport(e)),
            }
        })
    }

    /// A call to `peer`. It is registered, encoded and sent here; the common one (not a
    /// notification, no retransmission, room in the socket) returns a future that only waits
    /// for the answer, which the call table fails at the call's deadline. The others finish in a
    /// boxed future: sending what the socket had no room for, retransmitting.
    fn call(self: &Arc<Self>, peer: SocketAddr, req: Request) -> CallFuture<C::Id, SocketAddr> {
        if self.is_closed() {
            return CallFuture::ready(Err(Error::Closed));
        }
        let format = self.codec.format();
        let (method, args) = (req.method(), req.args());
        if req.is_notification() {
            let encode = |dst: &mut BytesMut| {
                self.codec
                    .encode_request(None, method, args, dst)
                    .map(|()| true)
            };
            return match self.try_send(peer, encode, &mut None) {
                Ok(Encoded::Later(bytes)) => {
                    let shared = self.clone();
                    CallFuture::boxed(async move {
                        shared.send_later(peer, bytes).await?;
                        Ok(Payload::empty(format))
                    })
                }
                Ok(_) => CallFuture::ready(Ok(Payload::empty(format))),
                Err(e) => CallFuture::ready(Err(e)),
            };
        }
        let now = Instant::now();
        // The table fails the call at it.
        let deadline = crate::deadline_of(&req, now, self.timeout);
        let waiter = self.calls.register_call(|| self.new_id(), peer, deadline);
        // Closed between the first check and the registration: the loop will not deliver.
        if self.is_closed() {
            return CallFuture::ready(Err(Error::Closed));
        }
        let timeout = crate::time_left(&self.codec, deadline, now);
        let encode = |dst: &mut BytesMut| {
            self.codec
                .encode_request_with_timeout(Some(waiter.id()), method, args, timeout, dst)
                .map(|()| true)
        };
        // A retransmitting call keeps its datagram to send again.
        let mut copy = self.retransmit.map(|_| Bytes::new());
        let later = match self.try_send(peer, encode, &mut copy) {
            Ok(Encoded::Later(bytes)) => Some(bytes),
            Ok(_) if copy.is_none() => return CallFuture::waiting(waiter, format),
            Ok(_) => None,
            Err(e) => return CallFuture::ready(Err(e)),
        };
        let shared = self.clone();
        CallFuture::boxed(async move {
            if let Some(bytes) = later {
                shared.send_later(peer, bytes).await?;
            }
            let answer = waiter.wait_expiring();
            let (Some(every), Some(datagram)) = (shared.retransmit, copy) else {
                return crate::answer(answer.await, format);
            };
            // The same datagram, same id, again and again until answered: with the server's
            // at-most-once cache, lost requests and lost answers are both recovered.
            tokio::pin!(answer);
            let mut tick = tokio::time::interval_at(deadline_after(Instant::now(), every), every);
            let result = loop {
                tokio::select! {
                    r = &mut answer => break r,
                    _ = tick.tick() => {
                        let _ = shared.socket.send_to(&datagram, peer).await;
                    }
                }
            };
            crate::answer(result, format)
        })
    }
}

/// The peer a datagram came from, as the dispatcher answers it.
struct UdpLink<C: Codec> {
    shared: Arc<Shared<C>>,
    peer: SocketAddr,
    /// The size of the datagram being answered.
    received: usize,
}

impl<C: Codec> Clone for UdpLink<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            peer: self.peer,
            received: self.received,
        }
    }
}

impl<C: Codec> Link<C> for UdpLink<C> {
    fn codec(&self) -> &C {
        &self.shared.codec
    }

    fn slots(&self) -> &Arc<Slots> {
        &self.shared.slots
    }

    fn share(&self) -> Option<(&Arc<PerIp>, std::net::IpAddr)> {
        Some((&self.shared.per_ip, self.peer.ip()))
    }

    fn min_bytes_per_value(&self) -> usize {
        self.shared.min_bytes_per_value
    }

    fn context(&self) -> Context {
        let mut ctx = Context::from_peer(Peer::Socket(self.peer));
        ctx.set_origin(self.shared.clone());
        ctx
    }

    async fn send<F>(&self, encode: F) -> Result<(), Error>
    where
        F: Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync,
    {
        self.shared.send_with(self.peer, encode).await
    }

    fn deliver(&self, id: C::Id, result: CallResult) {
        let counters = &self.shared.counters;
        match self.shared.calls.deliver(&id, &self.peer, result) {
            Delivery::Delivered => counters.record(Event::ResponseReceived),
            Delivery::UnknownId => {
                counters.record(Event::UnknownResponse);
                tracing::debug!(from = %self.peer, ?id, "dropped a response to no call in flight");
            }
            Delivery::WrongPeer => {
                counters.record(Event::SpoofedResponse);
                tracing::warn!(from = %self.peer, ?id, "dropped a response from the wrong address");
            }
        }
    }

    async fn admit(&self, id: &C::Id) -> bool {
        let Some(dedup) = &self.shared.dedup else {
            return true;
        };
        match dedup.check(self.peer, id) {
            dedup::Seen::New => true,
            dedup::Seen::Running => {
                self.shared.counters.record(Event::Duplicate);
                false
            }
            dedup::Seen::Done(datagram) => {
                self.shared.counters.record(Event::Duplicate);
                if !datagram.is_empty() {
                    let _ = self.shared.socket.send_to(&datagram, self.peer).await;
                }
                false
            }
        }
    }

    async fn send_response<F>(&self, id: &C::Id, encode: F) -> Result<(), Error>
    where
        F: Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync,
    {
        let Some(dedup) = &self.shared.dedup else {
            return self.shared.send_with(self.peer, encode).await;
        };
        let mut keep = Some(Bytes::new());
        let sent = self.shared.send_keeping(self.peer, encode, &mut keep).await;
        if sent.is_ok() {
            dedup.done(self.peer, id, keep.unwrap_or_default());
        }
        sent
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn error_budget(&self) -> Option<usize> {
        Some(
            self.received
                .saturating_mul(self.shared.max_error_amplification),
        )
    }

    fn peer(&self) -> &dyn fmt::Display {
        &self.peer
    }
}

/// The most datagrams the receive loop takes in a row before it yields.
const BURST: usize = 32;

async fn receive_loop<C: Codec>(shared: Arc<Shared<C>>) {
    let limit = shared.max_datagram + 1;
    // Datagrams are received here (up to one byte over the limit, to tell an oversize one) and
    // copied into an arena that frames are split off, which costs a small copy per datagram
    // instead of zeroing room for the largest datagram each time.
    let mut scratch = vec![0u8; limit];
    let mut buf = BytesMut::with_capacity(RECV_ARENA.max(limit));
    // The loop's own instance of the service, once the endpoint has one.
    let mut serve = None;
    // Made once, not per datagram.
    let mut closed = shared.life.reached(Phase::Draining);
    let mut burst = 0;
    loop {
        // While datagrams keep coming, take them without going through the select (whose
        // cancellation check costs more than a small datagram), up to a burst; then yield, so
        // the answers' callers and the runtime's other tasks run before the next burst.
        let ready = if burst < BURST {
            match shared.socket.try_recv_from(&mut scratch) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                r => Some(r),
            }
        } else {
            burst = 0;
            tokio::task::yield_now().await;
            None
        };
        let received = match ready {
            Some(r) => {
                burst += 1;
                r
            }
            None => tokio::select! {
                biased;
                _ = &mut closed => break,
                r = shared.socket.recv_from(&mut scratch) => r,
            },
        };
        let (n, from) = match received {
            Ok(r) => r,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some platforms; keep serving.
                tracing::debug!(%error, "receive error");
                continue;
            }
        };
        if n > shared.max_datagram {
            shared.counters.record(Event::Oversize);
            tracing::debug!(%from, "dropped a datagram over the size limit");
            continue;
        }
        if buf.capacity() < n {
            buf.reserve(RECV_ARENA.max(n));
        }
        buf.extend_from_slice(&scratch[..n]);
        let frame = buf.split().freeze();
        let link = UdpLink {
            shared: shared.clone(),
            peer: canonical(from),
            received: n,
        };
        if serve.is_none() {
            serve = shared.service.get().map(Serve::local);
        }
        let response = dispatch::handle(&link, serve.as_mut(), frame, None).await;
        // The only call in flight was answered (its answer waits in the table for its caller):
        // the caller runs, and sends its next request, before this loop's next receive, which
        // then usually finds nothing. With more calls in flight their answers are likely
        // waiting, and the loop goes on taking them.
        if response && shared.calls.len() <= 1 {
            crate::YieldOnce::default().await;
        }
    }
    shared.calls.close_all();
    shared.life.advance(Phase::Closed);
}
