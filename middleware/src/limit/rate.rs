//! GCRA rate limiting (the governor crate), global or keyed.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use pin_project::pin_project;
use rpc_core::{ErrorCode, Request, ServerError, Service};
use tokio::time::Instant;
use tower::Layer;

use super::key::{ByPeer, Global, KeyFn};
use crate::Reject;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// A keyed limiter, or a direct one when there is a single key (cheaper: no map).
enum Limiter<K: Clone + Eq + std::hash::Hash> {
    Keyed(Keyed<K>),
    Direct(Direct),
}

impl<K: Clone + Eq + std::hash::Hash> Limiter<K> {
    fn len(&self) -> usize {
        match self {
            Limiter::Keyed(l) => l.len(),
            Limiter::Direct(_) => 1,
        }
    }

    fn evict_idle(&self) {
        if let Limiter::Keyed(l) = self {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        match self {
            Limiter::Keyed(l) => l
                .check_key(key)
                .map_err(|n| n.wait_time_from(l.clock().now())),
            Limiter::Direct(l) => l.check().map_err(|n| n.wait_time_from(l.clock().now())),
        }
    }
}

/// The default number of keys kept before idle ones are evicted.
const DEFAULT_MAX_KEYS: usize = 100_000;

/// Limits the rate of calls, with the GCRA algorithm: `n` calls per `period` on average, in
/// bursts of up to `burst` (default `n`).
///
/// Over the limit, a call is refused at once with [`ErrorCode::RATE_LIMITED`] and a
/// `{"retry_after_ms": N}` hint in the error's data (the default), or waits for its turn
/// ([`wait`](RateLimitLayer::wait)) as long as its deadline allows. Keys idle long enough to be
/// back at a full burst are evicted; past `max_keys` live keys (give or take 1/16: the keys are
/// counted every few calls, not on each), new keys are refused, so a flood of spoofed peers
/// cannot grow memory without bound (while full of busy keys, calls are refused). Keys are
/// hashed with SipHash: they come from the network, so the map must resist chosen collisions.
/// Cloning shares the limiter.
///
/// ```
/// use std::time::Duration;
/// use rpc_middleware::limit::RateLimitLayer;
///
/// // 100 calls a second per peer, refused over that.
/// let per_peer = RateLimitLayer::per_peer(100, Duration::from_secs(1));
/// // 10 000 a second in all, waiting for a turn over that.
/// let global = RateLimitLayer::global(10_000, Duration::from_secs(1)).wait();
/// # let _ = (per_peer, global);
/// ```
pub struct RateLimitLayer<K: KeyFn> {
    shared: Arc<Shared<K>>,
}

struct Shared<K: KeyFn> {
    limiter: Limiter<K::Key>,
    key: K,
    wait: bool,
    max_keys: usize,
    look_every: u64,
    checks: AtomicU64,
    /// Over `max_keys` at the last look.
    full: AtomicBool,
}

impl<K: KeyFn> Clone for RateLimitLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: KeyFn> std::fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("keys", &self.shared.limiter.len())
            .field("wait", &self.shared.wait)
            .finish()
    }
}

fn quota(n: u32, period: Duration) -> Quota {
    let n = NonZeroU32::new(n.max(1)).expect("at least one");
    let per_cell = period
        .checked_div(n.get())
        .unwrap_or_default()
        .max(Duration::from_nanos(1));
    Quota::with_period(per_cell)
        .expect("a non-zero period")
        .allow_burst(n)
}

impl RateLimitLayer<Global> {
    /// One limit for all calls: `n` per `period`.
    pub fn global(n: u32, period: Duration) -> Self {
        Self::new(
            Global,
            Limiter::Direct(RateLimiter::direct(quota(n, period))),
        )
    }
}

impl RateLimitLayer<ByPeer> {
    /// A limit per peer: `n` calls per `period` each.
    pub fn per_peer(n: u32, period: Duration) -> Self {
        Self::keyed(ByPeer, n, period)
    }
}

impl<K: KeyFn> RateLimitLayer<K> {
    /// A limit per key that `key` takes from each request: `n` calls per `period` each.
    pub fn keyed(key: K, n: u32, period: Duration) -> Self {
        Self::with_quota(key, quota(n, period))
    }

    /// A limit per key with a governor [`Quota`] (for bursts other than `n`).
    pub fn with_quota(key: K, quota: Quota) -> Self {
        Self::new(key, Limiter::Keyed(RateLimiter::dashmap(quota)))
    }

    fn new(key: K, limiter: Limiter<K::Key>) -> Self {
        Self {
            shared: Arc::new(Shared {
                limiter,
                key,
                wait: false,
                max_keys: DEFAULT_MAX_KEYS,
                look_every: look_every(DEFAULT_MAX_KEYS),
                checks: AtomicU64::new(0),
                full: AtomicBool::new(false),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared<K>)) -> Self {
        f(Arc::get_mut(&mut self.shared).expect("configured before it is cloned"));
        self
    }

    /// Over the limit, wait for a turn (within the call's deadline) instead of refusing.
    pub fn wait(self) -> Self {
        self.edit(|s| s.wait = true)
    }

    /// The most keys kept at once; default 100 000.
    pub fn max_keys(self, n: usize) -> Self {
        self.edit(|s| {
            s.max_keys = n.max(1);
            s.look_every = look_every(s.max_keys);
        })
    }

    /// The number of keys tracked now.
    pub fn keys(&self) -> usize {
        self.shared.limiter.len()
    }
}

impl<K: KeyFn, S> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Limits the rate of calls; see [`RateLimitLayer`].
pub struct RateLimit<S, K: KeyFn> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S: Clone, K: KeyFn> Clone for RateLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, K: KeyFn> std::fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

fn limited(wait: Duration) -> ServerError {
    ServerError::from_code(ErrorCode::RATE_LIMITED)
        .with_data(serde_json::json!({ "retry_after_ms": wait.as_millis().max(1) }))
}

/// Idle keys are evicted at least every this many calls.
const EVICT_EVERY: u64 = 1024;

/// How often (in calls) the number of keys is looked at: counting them visits every shard of
/// the map, too slow for every call. Between looks, at most this many new keys get in past
/// `max_keys`: 1/16 of it, at most 256.
fn look_every(max_keys: usize) -> u64 {
    (max_keys as u64 / 16).clamp(1, 256)
}

impl<K: KeyFn> Shared<K> {
    /// How long `key` must wait for its next call; `Ok` means go now (and the call is counted).
    fn check(&self, key: &K::Key) -> Result<(), Duration> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if n % self.look_every == self.look_every - 1 {
            let mut len = self.limiter.len();
            if n % EVICT_EVERY == EVICT_EVERY - 1 || len > self.max_keys {
                self.limiter.evict_idle();
                len = self.limiter.len();
            }
            self.full.store(len > self.max_keys, Ordering::Relaxed);
        }
        // Full of keys that are all still busy: refuse until some age out, rather than grow.
        if self.full.load(Ordering::Relaxed) {
            return Err(Duration::from_secs(1));
        }
        self.limiter.check(key)
    }
}

/// The future of a [`RateLimit`] call.
#[pin_project(project = RateLimitProj)]
pub enum RateLimitFuture<F, T, E> {
    /// Within the limit: the inner call.
    Called(#[pin] F),
    /// Refused at once.
    Refused(Option<Result<T, E>>),
    /// Waiting for a turn, then the inner call.
    Waiting(BoxFuture<'static, Result<T, E>>),
}

impl<F, T, E> std::fmt::Debug for RateLimitFuture<F, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self {
            RateLimitFuture::Called(_) => "Called",
            RateLimitFuture::Refused(_) => "Refused",
            RateLimitFuture::Waiting(_) => "Waiting",
        };
        f.debug_tuple("RateLimitFuture").field(&state).finish()
    }
}

impl<F, T, E> Future for RateLimitFuture<F, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitProj::Called(f) => f.poll(cx),
            RateLimitProj::Refused(r) => Poll::Ready(r.take().expect("polled after completion")),
            RateLimitProj::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

impl<S, K> Service<Request> for RateLimit<S, K>
where
    K: KeyFn,
    S: Service<Request> + Clone + Send + 'static,
    S::Response: Reject<S::Error> + Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let key = self.shared.key.key(&req);
        match self.shared.check(&key) {
            Ok(()) => RateLimitFuture::Called(self.inner.call(req)),
            Err(wait) if !self.shared.wait => {
                RateLimitFuture::Refused(Some(S::Response::reject(limited(wait))))
            }
            Err(_) => {
                // Take the inner service that was made ready, and wait for a turn.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                RateLimitFuture::Waiting(Box::pin(async move {
                    let deadline = req.context().deadline();
                    loop {
                        match shared.check(&key) {
                            Ok(()) => return inner.call(req).await,
                            Err(wait) => {
                                let at = Instant::now() + wait;
                                if deadline.is_some_and(|d| at > d) {
                                    return S::Response::reject(limited(wait));
                                }
                                tokio::time::sleep_until(at).await;
                            }
                        }
                    }
                }))
            }
        }
    }
}
