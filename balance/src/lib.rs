//! Calls spread over many servers: a client that is a `tower::Service` like a single channel,
//! over a set of endpoints that discovery keeps up to date, routing around the ones that fail.
//!
//! - **Balancing** is tower's power of two choices ([`tower::balance::p2c`]): each call goes to
//!   the less loaded of two endpoints picked at random, the load being the peak EWMA of each
//!   endpoint's latency times its calls in flight ([`Builder::peak_ewma`], the default: a slow
//!   server gets few calls) or its calls in flight alone ([`Builder::pending_requests`]).
//! - **Discovery** ([`discover`]) tells which endpoints exist: a fixed list, a set the program
//!   changes, a DNS name re-resolved periodically ([`dns`]), or the keys under an etcd prefix,
//!   where servers register themselves with a lease ([`etcd`]).
//! - **Failover** ([`health`]): an endpoint whose connection fails leaves the ready set and
//!   comes back after a backoff. Retrying a failed call elsewhere is the retry layer's job, put
//!   on top of the balanced client: `rpc_middleware::retry::RetryPolicy` retries the calls that
//!   provably did not run, and calls of methods marked idempotent; the retry goes through the
//!   balancer again, which no longer offers the endpoint that failed.
//! - **Keyed routing** ([`Keyed`]): for sharded services, a key taken from each request picks
//!   its endpoint by rendezvous hashing, so a key stays on its endpoint while others come and go.
//!
//! The balanced client's endpoints are any channels: a function given to [`builder`] makes one
//! from each key discovery inserts (a TCP or Unix channel, a UDP endpoint's channel to a peer,
//! with any codec), so typed clients and layers sit on it unchanged.
//!
//! ```
//! use rpc_balance::discover::Discovery;
//! use rpc_codecs::msgpack::RpcudpCodec;
//! use rpc_core::Router;
//! use rpc_transports::tcp;
//! use std::net::SocketAddr;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut servers = Vec::new();
//! for _ in 0..3 {
//!     let router = Router::new().route("add", |a: i64, b: i64| async move { a + b });
//!     servers.push(tcp::Builder::new().serve(router).bind("127.0.0.1:0", RpcudpCodec::new()).await?);
//! }
//! let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
//!
//! let balanced = rpc_balance::builder(|addr: &SocketAddr| tcp::Builder::new().channel(*addr, RpcudpCodec::new()))
//!     .build(Discovery::fixed(addrs));
//! let client = rpc_core::Client::new(balanced, &rpc_core::msgpack::MsgPack);
//! for _ in 0..10 {
//!     assert_eq!(client.call::<i64>("add", (2, 40)).await?, 42);
//! }
//! # Ok(()) }
//! ```
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

pub mod discover;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod health;
mod keyed;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use rpc_core::{BoxError, Error, Payload, Request};
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::Service;

use self::discover::{Discovery, Update};
use self::health::{Backoff, Guarded, Standing};
pub use self::keyed::{Keyed, KeyedFuture};

/// How long a call waits for an endpoint when none is ready and the request has no deadline of
/// its own: 10 s, the transports' default call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The latency peak EWMA assumes of an endpoint it has not measured yet: 1 ms.
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// How fast peak EWMA forgets a latency: an estimate decays toward newer measurements (and,
/// while an endpoint gets no calls, toward zero) with this time constant, 2 s: a latency spike
/// is forgotten within seconds.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(2);

/// A balanced client's settings: the function that makes a channel for each endpoint, the load
/// measure, the failover backoff and how long a call waits for an endpoint.
pub struct Builder<K, S> {
    connect: Connect<K, S>,
    load: LoadMeasure,
    backoff: Backoff,
    timeout: Duration,
}

type Connect<K, S> = Arc<dyn Fn(&K) -> S + Send + Sync>;

#[derive(Debug, Clone, Copy)]
enum LoadMeasure {
    PeakEwma {
        default_rtt: Duration,
        decay: Duration,
    },
    PendingRequests,
}

/// A balanced client whose channels `connect` makes, one per endpoint key (see the [crate
/// docs](crate)).
pub fn builder<K, S>(connect: impl Fn(&K) -> S + Send + Sync + 'static) -> Builder<K, S> {
    Builder {
        connect: Arc::new(connect),
        load: LoadMeasure::PeakEwma {
            default_rtt: DEFAULT_RTT,
            decay: DEFAULT_DECAY,
        },
        backoff: Backoff::default(),
        timeout: DEFAULT_TIMEOUT,
    }
}

impl<K, S> Builder<K, S> {
    /// Weighs endpoints by the peak EWMA of their latency times their calls in flight (the
    /// default, with [`DEFAULT_RTT`] and [`DEFAULT_DECAY`]).
    pub fn peak_ewma(mut self, default_rtt: Duration, decay: Duration) -> Self {
        self.load = LoadMeasure::PeakEwma { default_rtt, decay };
        self
    }

    /// Weighs endpoints by their calls in flight alone.
    pub fn pending_requests(mut self) -> Self {
        self.load = LoadMeasure::PendingRequests;
        self
    }

    /// How long an endpoint that failed stays out ([`Backoff::default`]: 50 ms doubling to 1 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a call without a deadline waits for an endpoint when none is ready
    /// ([`DEFAULT_TIMEOUT`]); it then fails with [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<K, S> Builder<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    /// The balanced client over the endpoints `discovery` gives.
    pub fn build(self, discovery: Discovery<K>) -> Balanced<K, S> {
        let discover = Connecting {
            discovery,
            connect: self.connect,
            standing: Arc::default(),
            backoff: self.backoff,
        };
        let p2c = match self.load {
            LoadMeasure::PeakEwma { default_rtt, decay } => P2c::PeakEwma(Balance::new(
                PeakEwmaDiscover::new(discover, default_rtt, decay, CompleteOnResponse::default()),
            )),
            LoadMeasure::PendingRequests => P2c::Pending(Balance::new(
                PendingRequestsDiscover::new(discover, CompleteOnResponse::default()),
            )),
        };
        Balanced {
            shared: Arc::new(Polled::new(p2c)),
            timeout: self.timeout,
        }
    }
}

impl<K, S> fmt::Debug for Builder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("load", &self.load)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Discovery's keys turned into guarded channels: the `Discover` tower's balancer reads.
struct Connecting<K, S> {
    discovery: Discovery<K>,
    connect: Connect<K, S>,
    standing: Arc<Standing>,
    backoff: Backoff,
}

impl<K, S> Stream for Connecting<K, S> {
    type Item = Result<Change<K, Guarded<S>>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let update = std::task::ready!(Pin::new(&mut this.discovery).poll_next(cx));
        Poll::Ready(update.map(|u| {
            Ok(match u {
                Update::Insert(key) => {
                    tracing::debug!("endpoint inserted");
                    let channel = (this.connect)(&key);
                    Change::Insert(
                        key,
                        Guarded::new(channel, this.standing.clone(), this.backoff),
                    )
                }
                Update::Remove(key) => {
                    tracing::debug!("endpoint removed");
                    Change::Remove(key)
                }
            })
        }))
    }
}

/// tower's balancer over the guarded channels, with the load measure chosen.
enum P2c<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    PeakEwma(Balance<PeakEwmaDiscover<Connecting<K, S>>, Request>),
    Pending(Balance<PendingRequestsDiscover<Connecting<K, S>>, Request>),
}

type PeakEwmaFuture<K, S> =
    <Balance<PeakEwmaDiscover<Connecting<K, S>>, Request> as Service<Request>>::Future;
type PendingFuture<K, S> =
    <Balance<PendingRequestsDiscover<Connecting<K, S>>, Request> as Service<Request>>::Future;

impl<K, S> P2c<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let ready = match self {
            P2c::PeakEwma(b) => b.poll_ready(cx),
            P2c::Pending(b) => b.poll_ready(cx),
        };
        ready.map_err(Error::from_boxed)
    }

    /// Calls the endpoint `poll_ready` picked.
    fn call(&mut self, req: Request) -> Picked<K, S> {
        match self {
            P2c::PeakEwma(b) => Picked::PeakEwma(b.call(req)),
            P2c::Pending(b) => Picked::Pending(b.call(req)),
        }
    }

    fn len(&self) -> usize {
        match self {
            P2c::PeakEwma(b) => b.len(),
            P2c::Pending(b) => b.len(),
        }
    }
}

/// A call given to an endpoint.
#[pin_project::pin_project(project = PickedProj)]
enum Picked<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    PeakEwma(#[pin] PeakEwmaFuture<K, S>),
    Pending(#[pin] PendingFuture<K, S>),
}

impl<K, S> Future for Picked<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    type Output = Result<Payload, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r: Result<Payload, BoxError> = match self.project() {
            PickedProj::PeakEwma(f) => std::task::ready!(f.poll(cx)),
            PickedProj::Pending(f) => std::task::ready!(f.poll(cx)),
        };
        Poll::Ready(r.map_err(Error::from_boxed))
    }
}

/// A client over many endpoints (see the [crate docs](crate)): a `tower::Service<Request,
/// Response = Payload, Error = rpc_core::Error>`, so [`rpc_core::Client`] and any layer sit on
/// it as on a single channel.
///
/// Cloning is cheap: every clone shares one balancer (tower's p2c over every endpoint, with one
/// load estimate per endpoint), behind a lock held only to pick an endpoint and start the call
/// on it (tower's `Buffer` would instead add a hop to a task of its own and two channel
/// operations per call). `poll_ready` is always ready, as a transport's channel is: a call that
/// finds no ready endpoint waits for one until its deadline, or the builder's
/// [`timeout`](Builder::timeout), and then fails with [`Error::Timeout`].
pub struct Balanced<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    shared: Arc<Polled<P2c<K, S>>>,
    timeout: Duration,
}

impl<K, S> Balanced<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    /// The endpoints known now (ready, ejected or connecting), after taking in what discovery
    /// has sent.
    pub fn len(&self) -> usize {
        self.shared.with(|p2c, cx| {
            let _ = p2c.poll_ready(cx);
            p2c.len()
        })
    }

    /// Whether no endpoint is known now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, S> Clone for Balanced<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            timeout: self.timeout,
        }
    }
}

impl<K, S> fmt::Debug for Balanced<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<K, S> Service<Request> for Balanced<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Payload;
    type Error = Error;
    type Future = BalancedFuture<K, S>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let mut req = Some(req);
        let start = |p2c: &mut P2c<K, S>, cx: &mut Context<'_>, req: &mut Option<Request>| {
            std::task::ready!(p2c.poll_ready(cx))?;
            Poll::Ready(Ok(p2c.call(req.take().ok_or_else(polled_twice)?)))
        };
        match self.shared.with(|p2c, cx| start(p2c, cx, &mut req)) {
            Poll::Ready(Ok(call)) => return BalancedFuture::picked(call),
            Poll::Ready(Err(e)) => return BalancedFuture::waiting(async { Err(e) }),
            Poll::Pending => {}
        }
        // No endpoint is ready: wait for one (discovery's next insert, an ejection's end).
        let deadline = wait_deadline(req.as_ref().expect("not taken"), self.timeout);
        let shared = self.shared.clone();
        BalancedFuture::waiting(when_ready(deadline, move |cx| {
            shared.waiting(cx, |p2c, cx| start(p2c, cx, &mut req))
        }))
    }
}

/// How long a call that finds no ready endpoint waits for one: until its deadline, or
/// `timeout` from now (a year, for a timeout past what the clock can add).
fn wait_deadline(req: &Request, timeout: Duration) -> tokio::time::Instant {
    req.context().deadline().unwrap_or_else(|| {
        let now = tokio::time::Instant::now();
        now.checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
    })
}

/// A balancer's state behind its lock, always polled with one waker, which wakes every call
/// waiting for an endpoint. The parts of the state (tower's ready cache, discovery, an ejected
/// endpoint's timer) each keep only the last waker they were polled with: polled with each
/// caller's own, all but the last of the calls waiting would never be woken.
pub(crate) struct Polled<T> {
    state: Mutex<T>,
    waiters: Arc<Waiters>,
    waker: std::task::Waker,
}

/// The wakers of the calls waiting for an endpoint; waking it wakes them all.
#[derive(Default)]
struct Waiters(Mutex<Vec<std::task::Waker>>);

impl std::task::Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiting = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiting {
            w.wake();
        }
    }
}

impl<T> Polled<T> {
    pub(crate) fn new(state: T) -> Self {
        let waiters = Arc::new(Waiters::default());
        Self {
            state: Mutex::new(state),
            waker: std::task::Waker::from(waiters.clone()),
            waiters,
        }
    }

    /// Runs `f` on the state, with the shared waker.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T, &mut Context<'_>) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state, &mut Context::from_waker(&self.waker))
    }

    /// Runs `f` for a call that waits: `cx`'s waker is woken when anything the state waits on
    /// is (registered first, so that no wake-up between the two is missed).
    pub(crate) fn waiting<R>(
        &self,
        cx: &Context<'_>,
        f: impl FnOnce(&mut T, &mut Context<'_>) -> R,
    ) -> R {
        {
            let mut waiting = self
                .waiters
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
        }
        self.with(f)
    }
}

/// Waits until `start`, polled with the call's own waker, has started the call on an endpoint,
/// then for the call's answer; [`Error::Timeout`] if no endpoint is ready by `deadline`.
async fn when_ready<F>(
    deadline: tokio::time::Instant,
    mut start: impl FnMut(&mut Context<'_>) -> Poll<Result<F, Error>>,
) -> Result<Payload, Error>
where
    F: Future<Output = Result<Payload, Error>>,
{
    match tokio::time::timeout_at(deadline, futures::future::poll_fn(|cx| start(cx))).await {
        Ok(Ok(call)) => call.await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Timeout),
    }
}

/// A waiting call's start, polled again after it started.
fn polled_twice() -> Error {
    Error::Other("polled after completion".into())
}

/// The future of a call on a [`Balanced`] client.
#[pin_project::pin_project]
pub struct BalancedFuture<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    #[pin]
    state: CallState<K, S>,
}

#[pin_project::pin_project(project = CallStateProj)]
enum CallState<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    /// Given to an endpoint at once.
    Picked(#[pin] Picked<K, S>),
    /// Waiting for an endpoint first.
    Waiting(BoxFuture<'static, Result<Payload, Error>>),
}

impl<K, S> BalancedFuture<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    fn picked(call: Picked<K, S>) -> Self {
        Self {
            state: CallState::Picked(call),
        }
    }

    fn waiting(f: impl Future<Output = Result<Payload, Error>> + Send + 'static) -> Self {
        Self {
            state: CallState::Waiting(Box::pin(f)),
        }
    }
}

impl<K, S> Future for BalancedFuture<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    type Output = Result<Payload, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            CallStateProj::Picked(f) => f.poll(cx),
            CallStateProj::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

impl<K, S> fmt::Debug for BalancedFuture<K, S>
where
    K: Clone + Eq + Hash + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            CallState::Picked(_) => "picked",
            CallState::Waiting(_) => "waiting",
        };
        f.debug_struct("BalancedFuture")
            .field("state", &state)
            .finish()
    }
}
