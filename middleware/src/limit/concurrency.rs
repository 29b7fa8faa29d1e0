//! At most N calls at once per key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use rpc_core::{ErrorCode, Request, ServerError, Service};
use tokio::sync::Semaphore;
use tower::Layer;

use super::key::{ByPeer, KeyFn};
use crate::Reject;

/// Allows at most `n` calls at once per key (per peer by default); more are refused at once
/// with [`ErrorCode::OVERLOADED`]. A key's state is dropped once it has nothing in flight.
/// Cloning shares the limits.
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
    slots: Mutex<HashMap<K::Key, Arc<Semaphore>>>,
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
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The number of keys with state now.
    pub fn keys(&self) -> usize {
        self.shared.lock().len()
    }
}

impl<K: KeyFn> Shared<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K::Key, Arc<Semaphore>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(self: &Arc<Self>, key: K::Key) -> Option<Slot<K>> {
        let mut slots = self.lock();
        let sem = slots
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.n)))
            .clone();
        let permit = sem.clone().try_acquire_owned().ok();
        match permit {
            Some(permit) => Some(Slot {
                permit: Some(permit),
                sem,
                key: Some(key),
                shared: self.clone(),
            }),
            None => {
                drop(slots);
                None
            }
        }
    }

    /// Drops `key`'s state if nothing is in flight for it.
    fn release(&self, key: &K::Key) {
        let mut slots = self.lock();
        // Our slot still holds one reference while this runs.
        if slots
            .get(key)
            .is_some_and(|s| Arc::strong_count(s) <= 2 && s.available_permits() == self.n)
        {
            slots.remove(key);
        }
    }
}

/// One call's place under its key's limit; leaving it frees the place, and the key's state once
/// nothing else is in flight for it.
struct Slot<K: KeyFn> {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    sem: Arc<Semaphore>,
    key: Option<K::Key>,
    shared: Arc<Shared<K>>,
}

impl<K: KeyFn> Drop for Slot<K> {
    fn drop(&mut self) {
        drop(self.permit.take());
        // Only the last call of a key looks at the map: held by the map, this slot and its
        // permit's semaphore handle (now dropped), with every permit back.
        let last =
            Arc::strong_count(&self.sem) <= 2 && self.sem.available_permits() == self.shared.n;
        if let (true, Some(key)) = (last, self.key.take()) {
            self.shared.release(&key);
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

impl<S, K> Service<Request> for KeyedConcurrencyLimit<S, K>
where
    K: KeyFn,
    S: Service<Request>,
    S::Response: Reject<S::Error> + Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let key = self.shared.key.key(&req);
        match self.shared.acquire(key) {
            Some(slot) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let r = fut.await;
                    drop(slot);
                    r
                })
            }
            None => Box::pin(futures::future::ready(S::Response::reject(
                ServerError::new(
                    ErrorCode::OVERLOADED,
                    format!("more than {} calls at once from this peer", self.shared.n),
                ),
            ))),
        }
    }
}
