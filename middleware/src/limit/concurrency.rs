//! At most N calls at once per key.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use pin_project::pin_project;
use rpc_core::{ErrorCode, Request, ServerError, Service};
use tower::Layer;

use super::key::{ByPeer, KeyFn};
use crate::Reject;

/// Allows at most `n` calls at once per key (per peer by default); more are refused at once
/// with [`ErrorCode::OVERLOADED`]. A key's state (a count) is dropped once it has nothing in
/// flight (up to 32 idle keys are kept, so that a steady peer does not cost a map insertion per
/// call), so memory follows the calls in flight, not the peers ever seen. Cloning shares the
/// limits.
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
    /// Calls in flight per key; a key is here only while it has some.
    in_flight: Mutex<HashMap<K::Key, usize>>,
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

impl<K: KeyFn> KeyedConcurrencyLimitLayer<K> {
    /// At most `n` calls at once per key that `key` takes from each request.
    pub fn keyed(key: K, n: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                key,
                n: n.max(1),
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The number of keys with state now.
    pub fn keys(&self) -> usize {
        self.shared.lock().len()
    }
}

impl<K: KeyFn> Shared<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K::Key, usize>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place under `key`'s limit, if there is one left.
    fn acquire(self: &Arc<Self>, key: K::Key) -> Option<Slot<K>> {
        let mut in_flight = self.lock();
        match in_flight.get_mut(&key) {
            Some(n) if *n >= self.n => return None,
            Some(n) => *n += 1,
            None => {
                in_flight.insert(key.clone(), 1);
            }
        }
        drop(in_flight);
        Some(Slot {
            key,
            shared: self.clone(),
        })
    }
}

/// One call's place under its key's limit; dropping it frees the place, and the key's state
/// once nothing else is in flight for it.
struct Slot<K: KeyFn> {
    key: K::Key,
    shared: Arc<Shared<K>>,
}

/// Below this many keys, a key's count stays in the map at zero when idle: a peer calling one
/// call at a time would otherwise cost an insertion and a removal per call.
const KEEP_IDLE: usize = 32;

impl<K: KeyFn> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut in_flight = self.shared.lock();
        let len = in_flight.len();
        if let Some(n) = in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            // Idle keys are kept only while the map is small, so there are never more than
            // `KEEP_IDLE` of them.
            if *n == 0 && len > KEEP_IDLE {
                in_flight.remove(&self.key);
            }
        }
    }
}

impl<K: KeyFn, S> Layer<S> for KeyedConcurrencyLimitLayer<K> {
    type Service = KeyedConcurrencyLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedConcurrencyLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Limits calls in flight per key; see [`KeyedConcurrencyLimitLayer`].
pub struct KeyedConcurrencyLimit<S, K: KeyFn> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S: Clone, K: KeyFn> Clone for KeyedConcurrencyLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
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
    inner: Option<F>,
    refused: Option<Result<T, E>>,
    slot: Option<Slot<K>>,
}

impl<F, T, E, K: KeyFn> std::fmt::Debug for KeyedConcurrencyFuture<F, T, E, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyFuture")
            .field("refused", &self.inner.is_none())
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
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(f) => {
                let r = std::task::ready!(f.poll(cx));
                drop(this.slot.take());
                Poll::Ready(r)
            }
            None => Poll::Ready(this.refused.take().expect("polled after completion")),
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
        let key = self.shared.key.key(&req);
        match self.shared.acquire(key) {
            Some(slot) => KeyedConcurrencyFuture {
                inner: Some(self.inner.call(req)),
                refused: None,
                slot: Some(slot),
            },
            None => KeyedConcurrencyFuture {
                inner: None,
                refused: Some(S::Response::reject(ServerError::new(
                    ErrorCode::OVERLOADED,
                    format!("more than {} calls at once from this peer", self.shared.n),
                ))),
                slot: None,
            },
        }
    }
}
