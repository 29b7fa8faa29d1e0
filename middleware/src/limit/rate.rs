//! GCRA rate limiting (the governor crate), global or keyed.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use pin_project::pin_project;
use rpc_core::context::deadline_after;
use rpc_core::{ErrorCode, Request, ServerError, Service};
use tokio::time::Instant;
use tower::Layer;

use super::cells::{self, Cells, Handle, Last};
use super::key::{ByIp, ByPeer, Global, KeyFn};
use crate::Reject;

type Keyed<K> = RateLimiter<Handle<K, Tat>, Store<K>, DefaultClock>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// A keyed limiter, or a direct one when there is a single key (cheaper: no map).
enum Limiter<K: Clone + Eq + std::hash::Hash> {
    Keyed {
        limiter: Keyed<K>,
        /// The limiter's store's cells, to look keys up in.
        cells: Arc<Cells<K, Tat>>,
    },
    Direct(Direct),
}

impl<K: Clone + Eq + std::hash::Hash> Limiter<K> {
    fn len(&self) -> usize {
        match self {
            Limiter::Keyed { cells, .. } => cells.len(),
            Limiter::Direct(_) => 1,
        }
    }

    fn evict_idle(&self) {
        if let Limiter::Keyed { limiter, .. } = self {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// A key's GCRA state, as governor's `InMemoryState` keeps it (the theoretical arrival time in
/// nanoseconds from the limiter's start, 0 before the first call), or [`RETIRED`].
#[derive(Default)]
struct Tat(AtomicU64);

const RETIRED: u64 = u64::MAX;

impl Tat {
    /// Runs governor's decision `f` on the state and stores its answer, unless another call
    /// changed the state meanwhile (then again); `None` if the cell is retired.
    fn measure_and_replace<T, F, E>(&self, f: &F) -> Option<Result<T, E>>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            if prev == RETIRED {
                return None;
            }
            let (result, next) = match f((prev != 0).then(|| Nanos::from(prev))) {
                Ok(decision) => decision,
                Err(e) => return Some(Err(e)),
            };
            match self.0.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Ok(result)),
                Err(seen) => prev = seen,
            }
        }
    }

    /// Retires the state if its key is back at a full burst (its theoretical arrival time is at
    /// or before `drop_below`).
    fn retire_if_older(&self, drop_below: Nanos) -> bool {
        let tat = self.0.load(Ordering::Acquire);
        tat != RETIRED
            && tat <= drop_below.as_u64()
            && self
                .0
                .compare_exchange(tat, RETIRED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

impl cells::Cell for Tat {
    fn is_retired(&self) -> bool {
        self.0.load(Ordering::Relaxed) == RETIRED
    }
}

/// governor's keyed state store, over [`Cells`]: a check goes straight to the cell of the
/// handle it is given, and to the map only if that cell has been retired.
struct Store<K>(Arc<Cells<K, Tat>>);

impl<K: Clone + Eq + std::hash::Hash> StateStore for Store<K> {
    type Key = Handle<K, Tat>;

    fn measure_and_replace<T, F, E>(&self, handle: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(r) = handle.cell.measure_and_replace(&f) {
            return r;
        }
        loop {
            if let Some(r) = self.0.lookup(&handle.key).measure_and_replace(&f) {
                return r;
            }
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash> ShrinkableKeyedStateStore<Handle<K, Tat>> for Store<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retire_where(|tat| tat.retire_if_older(drop_below));
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.len() == 0
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
/// back at a full burst are evicted; past `max_keys` live keys, calls from new keys are refused,
/// so a flood of spoofed peers cannot grow memory without bound. Keys are hashed with SipHash:
/// they come from the network, so the map must resist chosen collisions. Cloning shares the
/// limiter.
///
/// Each service instance keeps the state of the last key it saw, so a connection's instance
/// checks its peer's calls without a map lookup; the bookkeeping of keys (eviction, the count
/// against `max_keys`) happens on lookups, the only calls that can add keys.
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
    /// How often (in lookups) idle keys are evicted while over `max_keys`.
    look_every: u64,
    lookups: AtomicU64,
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

impl RateLimitLayer<super::ByIdentity> {
    /// A limit per identity: `n` calls per `period` for each client certificate or Unix uid,
    /// and for each IP address of callers that proved nothing ([`ByIdentity`](super::ByIdentity)).
    pub fn per_identity(n: u32, period: Duration) -> Self {
        Self::keyed(super::ByIdentity, n, period)
    }
}

impl RateLimitLayer<ByIp> {
    /// A limit per IP address: `n` calls per `period` each, however many connections or
    /// ports a host uses ([`ByIp`]).
    pub fn per_ip(n: u32, period: Duration) -> Self {
        Self::keyed(ByIp, n, period)
    }
}

impl<K: KeyFn> RateLimitLayer<K> {
    /// A limit per key that `key` takes from each request: `n` calls per `period` each.
    pub fn keyed(key: K, n: u32, period: Duration) -> Self {
        Self::with_quota(key, quota(n, period))
    }

    /// A limit per key with a governor [`Quota`] (for bursts other than `n`).
    pub fn with_quota(key: K, quota: Quota) -> Self {
        let cells = Arc::new(Cells::new());
        let limiter = RateLimiter::new(quota, Store(cells.clone()), DefaultClock::default());
        Self::new(key, Limiter::Keyed { limiter, cells })
    }

    fn new(key: K, limiter: Limiter<K::Key>) -> Self {
        Self {
            shared: Arc::new(Shared {
                limiter,
                key,
                wait: false,
                max_keys: DEFAULT_MAX_KEYS,
                look_every: look_every(DEFAULT_MAX_KEYS),
                lookups: AtomicU64::new(0),
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
            last: Last::default(),
        }
    }
}

/// Limits the rate of calls; see [`RateLimitLayer`].
pub struct RateLimit<S, K: KeyFn> {
    inner: S,
    shared: Arc<Shared<K>>,
    last: Last<K::Key, Tat>,
}

impl<S: Clone, K: KeyFn> Clone for RateLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            last: self.last.clone(),
        }
    }
}

impl<S, K: KeyFn> std::fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

fn limited(wait: Duration) -> ServerError {
    let code = ErrorCode::RATE_LIMITED;
    ServerError::new(code, code.default_message().unwrap_or("rate limited")).with_data(
        serde_json::json!({ "not_run": true, "retry_after_ms": wait.as_millis().max(1) }),
    )
}

/// Idle keys are evicted at least every this many lookups.
const EVICT_EVERY: u64 = 1024;

/// How often (in lookups) idle keys are evicted while there are more than `max_keys`: eviction
/// visits every key, too slow for every call from a new key when the map is full of busy ones.
fn look_every(max_keys: usize) -> u64 {
    (max_keys as u64 / 16).clamp(1, 256)
}

/// How long a call must wait before it can go; none, and counted, if it can go now.
type Verdict = Result<(), Duration>;

impl<K: KeyFn> Shared<K> {
    /// Checks `req` against its key's limit, through `last`, the caller's shortcut.
    fn check(&self, last: &mut Last<K::Key, Tat>, req: &Request) -> Verdict {
        match &self.limiter {
            Limiter::Direct(l) => l.check().map_err(|n| n.wait_time_from(l.clock().now())),
            Limiter::Keyed { limiter, cells } => {
                let key = self.key.key(req);
                let lookup = |key: &K::Key| {
                    if self.note_lookup() {
                        // Full of keys that are all still busy: no new ones until some age out.
                        cells.find(key)
                    } else {
                        Some(cells.lookup(key))
                    }
                };
                let Some(handle) = last.get(key, lookup) else {
                    return Err(Duration::from_secs(1));
                };
                limiter
                    .check_key(handle)
                    .map_err(|n| n.wait_time_from(limiter.clock().now()))
            }
        }
    }

    /// Counts a lookup, evicting idle keys when it is time; true when past `max_keys`.
    fn note_lookup(&self) -> bool {
        let n = self.lookups.fetch_add(1, Ordering::Relaxed) + 1;
        let over = |len| len > self.max_keys;
        if n % EVICT_EVERY == 0 || (over(self.limiter.len()) && n % self.look_every == 0) {
            self.limiter.evict_idle();
        }
        over(self.limiter.len())
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
        match self.shared.check(&mut self.last, &req) {
            Ok(()) => RateLimitFuture::Called(self.inner.call(req)),
            Err(wait) if !self.shared.wait => {
                RateLimitFuture::Refused(Some(S::Response::reject(limited(wait))))
            }
            Err(_) => {
                // Wait for a turn with a clone of the inner service, made ready only once the
                // turn comes. The instance made ready here is dropped, giving back what its
                // readiness reserved (a concurrency permit, say): held through the wait, or
                // until this service's next call, it would let one peer's wait starve others.
                let mut inner = self.inner.clone();
                self.inner = inner.clone();
                let shared = self.shared.clone();
                let mut last = self.last.clone();
                RateLimitFuture::Waiting(Box::pin(async move {
                    let deadline = req.context().deadline();
                    loop {
                        match shared.check(&mut last, &req) {
                            Ok(()) => {
                                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                                return inner.call(req).await;
                            }
                            Err(wait) => {
                                let at = deadline_after(Instant::now(), wait);
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
