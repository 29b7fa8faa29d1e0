//! At most N calls at once per key.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use pin_project::pin_project;
use rpc_core::{ErrorCode, Request, ServerError, Service};
use tower::Layer;

use super::cells::{self, Cells, Handle, Last};
use super::key::{ByIp, ByPeer, KeyFn};
use crate::Reject;

/// Allows at most `n` calls at once per key (per peer by default); more are refused at once
/// with [`ErrorCode::OVERLOADED`]. A key's state (a count) is dropped once it has nothing in
/// flight (up to 32 idle keys are kept, so that a steady peer does not cost a map insertion per
/// call), so memory follows the calls in flight, not the peers ever seen. Cloning shares the
/// limits.
///
/// Each service instance keeps the state of the last key it saw, so a connection's instance
/// counts its peer's calls without a map lookup.
///
/// ```
/// use rpc_middleware::limit::KeyedConcurrencyLimitLayer;
/// let layer = KeyedConcurrencyLimitLayer::per_peer(4);
/// # let _ = layer;
/// ```
pub struct KeyedConcurrencyLimitLayer<K: KeyFn> {
    shared: Arc<Shared<K>>,
}

struct Shared<K: KeyFn> {
    key: K,
    n: usize,
    /// Calls in flight per key; a key is here only while it has some (or while few keys are).
    in_flight: Cells<K::Key, Count>,
}

/// A key's calls in flight, with [`RETIRED`] set once the count has left the map.
#[derive(Default)]
struct Count(AtomicUsize);

const RETIRED: usize = 1 << (usize::BITS - 1);

/// Why a count refused a call.
enum Refusal {
    /// The key has its `n` calls in flight.
    Full,
    /// The count has left the map: look the key up again.
    Retired,
}

impl Count {
    fn try_acquire(&self, n: usize) -> Result<(), Refusal> {
        let mut now = self.0.load(Ordering::Relaxed);
        loop {
            if now & RETIRED != 0 {
                return Err(Refusal::Retired);
            }
            if now >= n {
                return Err(Refusal::Full);
            }
            match self
                .0
                .compare_exchange_weak(now, now + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => now = seen,
            }
        }
    }

    /// Frees a place; true when nothing is left in flight.
    fn release(&self) -> bool {
        self.0.fetch_sub(1, Ordering::Release) == 1
    }

    /// Retires the count if nothing is in flight.
    fn retire_if_idle(&self) -> bool {
        self.0
            .compare_exchange(0, RETIRED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

impl cells::Cell for Count {
    fn is_retired(&self) -> bool {
        self.0.load(Ordering::Relaxed) & RETIRED != 0
    }
}

impl<K: KeyFn> Clone for KeyedConcurrencyLimitLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: KeyFn> std::fmt::Debug for KeyedConcurrencyLimitLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitLayer")
            .field("limit", &self.shared.n)
            .finish_non_exhaustive()
    }
}

impl KeyedConcurrencyLimitLayer<ByPeer> {
    /// At most `n` calls at once per peer.
    pub fn per_peer(n: usize) -> Self {
        Self::keyed(ByPeer, n)
    }
}

impl KeyedConcurrencyLimitLayer<super::ByIdentity> {
    /// At most `n` calls at once per identity: each client certificate or Unix uid, and each
    /// IP address of callers that proved nothing ([`ByIdentity`](super::ByIdentity)).
    pub fn per_identity(n: usize) -> Self {
        Self::keyed(super::ByIdentity, n)
    }
}

impl KeyedConcurrencyLimitLayer<ByIp> {
    /// At most `n` calls at once per IP address, however many connections or ports a host
    /// uses ([`ByIp`]).
    pub fn per_ip(n: usize) -> Self {
        Self::keyed(ByIp, n)
    }
}

impl<K: KeyFn> KeyedConcurrencyLimitLayer<K> {
    /// At most `n` calls at once per key that `key` takes from each request.
    pub fn keyed(key: K, n: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                key,
                n: n.clamp(1, RETIRED - 1),
                in_flight: Cells::new(),
            }),
        }
    }

    /// The number of keys with state now.
    pub fn keys(&self) -> usize {
        self.shared.in_flight.len()
    }
}

/// One call's place under its key's limit; dropping it frees the place, and the key's state
/// once nothing else is in flight for it.
struct Slot<K: KeyFn> {
    held: Handle<K::Key, Count>,
    shared: Arc<Shared<K>>,
}

/// Below this many keys, a key's count stays in the map at zero when idle: a peer calling one
/// call at a time would otherwise cost an insertion and a removal per call.
const KEEP_IDLE: usize = 32;

impl<K: KeyFn> Drop for Slot<K> {
    fn drop(&mut self) {
        // Idle keys are kept only while the map is small, so there are never more than
        // `KEEP_IDLE` of them.
        if self.held.cell.release() && self.shared.in_flight.len() > KEEP_IDLE {
            self.shared
                .in_flight
                .remove_if(&self.held.key, &self.held.cell, Count::retire_if_idle);
        }
    }
}

impl<K: KeyFn, S> Layer<S> for KeyedConcurrencyLimitLayer<K> {
    type Service = KeyedConcurrencyLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedConcurrencyLimit {
            inner,
            shared: self.shared.clone(),
            last: Last::default(),
        }
    }
}

/// Limits calls in flight per key; see [`KeyedConcurrencyLimitLayer`].
pub struct KeyedConcurrencyLimit<S, K: KeyFn> {
    inner: S,
    shared: Arc<Shared<K>>,
    last: Last<K::Key, Count>,
}

impl<S: Clone, K: KeyFn> Clone for KeyedConcurrencyLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            last: self.last.clone(),
        }
    }
}

impl<S, K: KeyFn> std::fmt::Debug for KeyedConcurrencyLimit<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyLimit")
            .finish_non_exhaustive()
    }
}

/// The future of a [`KeyedConcurrencyLimit`] call: holds the call's place until it finishes
/// or is dropped.
#[pin_project]
pub struct KeyedConcurrencyFuture<F, T, E, K: KeyFn> {
    #[pin]
    state: State<F, T, E, K>,
}

#[pin_project(project = StateProj)]
enum State<F, T, E, K: KeyFn> {
    /// Within the limit: the inner call, with its place (freed when the call ends).
    Called {
        #[pin]
        inner: F,
        slot: Option<Slot<K>>,
    },
    /// Refused at once.
    Refused(Option<Result<T, E>>),
}

impl<F, T, E, K: KeyFn> std::fmt::Debug for KeyedConcurrencyFuture<F, T, E, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyFuture")
            .field("refused", &matches!(self.state, State::Refused(_)))
            .finish_non_exhaustive()
    }
}

impl<F, T, E, K> Future for KeyedConcurrencyFuture<F, T, E, K>
where
    F: Future<Output = Result<T, E>>,
    K: KeyFn,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { inner, slot } => {
                let r = std::task::ready!(inner.poll(cx));
                drop(slot.take());
                Poll::Ready(r)
            }
            StateProj::Refused(r) => Poll::Ready(r.take().expect("polled after completion")),
        }
    }
}

impl<S, K> Service<Request> for KeyedConcurrencyLimit<S, K>
where
    K: KeyFn,
    S: Service<Request>,
    S::Response: Reject<S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = KeyedConcurrencyFuture<S::Future, S::Response, S::Error, K>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let mut key = self.shared.key.key(&req);
        let acquired = loop {
            let held = self
                .last
                .get(key, |k| Some(self.shared.in_flight.lookup(k)))
                .expect("looked up");
            match held.cell.try_acquire(self.shared.n) {
                Ok(()) => break Some(held.clone()),
                Err(Refusal::Full) => break None,
                // Retired since it was looked up: look again (the map now has a live count).
                Err(Refusal::Retired) => key = held.key.clone(),
            }
        };
        let state = match acquired {
            Some(held) => {
                // The place is held by its slot before the inner call runs: if that call
                // panics (a handler failing before it makes its future), unwinding frees it.
                let slot = Slot {
                    held,
                    shared: self.shared.clone(),
                };
                State::Called {
                    inner: self.inner.call(req),
                    slot: Some(slot),
                }
            }
            None => State::Refused(Some(S::Response::reject(ServerError::refused(
                ErrorCode::OVERLOADED,
                format!(
                    "more than {} {} at once {}",
                    self.shared.n,
                    if self.shared.n == 1 { "call" } else { "calls" },
                    self.shared.key.scope()
                ),
            )))),
        };
        KeyedConcurrencyFuture { state }
    }
}
