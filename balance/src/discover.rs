//! Which endpoints exist: a [`Discovery`] is a stream of [`Update`]s, inserts and removals of
//! endpoint keys, that a balancer reads whenever it picks an endpoint.
//!
//! - [`Discovery::fixed`]: a list, for good.
//! - [`set`]: a set the program changes itself through an [`Endpoints`] handle (as tonic's
//!   `balance_channel`).
//! - [`Discovery::from_stream`]: any stream of updates.
//! - `dns::watch` (feature `dns`): a DNS name re-resolved periodically.
//! - `etcd::watch` (feature `etcd`): the keys under a prefix of etcd v3.
//!
//! A key names an endpoint (a socket address, a URL, ...); the balancer turns each inserted key
//! into a channel with the function it was built with. Inserting a key that is already there
//! replaces its channel; removing one that is not there does nothing.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::mpsc;

/// A change of the set of endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update<K> {
    /// An endpoint to call.
    Insert(K),
    /// An endpoint gone.
    Remove(K),
}

/// A stream of [`Update`]s; see the [module docs](self).
pub struct Discovery<K> {
    updates: BoxStream<'static, Update<K>>,
}

impl<K: Send + 'static> Discovery<K> {
    /// These endpoints, for good.
    ///
    /// ```
    /// use rpc_balance::discover::{Discovery, Update};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut d = Discovery::fixed(["127.0.0.1:4000", "127.0.0.1:4001"]);
    /// assert_eq!(d.next().await, Some(Update::Insert("127.0.0.1:4000")));
    /// assert_eq!(d.next().await, Some(Update::Insert("127.0.0.1:4001")));
    /// # }
    /// ```
    pub fn fixed(keys: impl IntoIterator<Item = K>) -> Self {
        let inserts: Vec<_> = keys.into_iter().map(Update::Insert).collect();
        Self::from_stream(futures::stream::iter(inserts).chain(futures::stream::pending()))
    }

    /// Any stream of updates. A stream that ends leaves the set as it is.
    pub fn from_stream(updates: impl Stream<Item = Update<K>> + Send + 'static) -> Self {
        Self {
            updates: updates.boxed(),
        }
    }
}

impl<K> Stream for Discovery<K> {
    type Item = Update<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Update<K>>> {
        self.updates.poll_next_unpin(cx)
    }
}

impl<K> fmt::Debug for Discovery<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

/// A set of endpoints the program changes itself, and the discovery that follows it.
///
/// ```
/// use rpc_balance::discover::{self, Update};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (endpoints, mut discovery) = discover::set();
/// endpoints.insert("tcp://127.0.0.1:4000");
/// endpoints.remove("tcp://127.0.0.1:4000");
/// assert_eq!(discovery.next().await, Some(Update::Insert("tcp://127.0.0.1:4000")));
/// assert_eq!(discovery.next().await, Some(Update::Remove("tcp://127.0.0.1:4000")));
/// # }
/// ```
pub fn set<K: Send + 'static>() -> (Endpoints<K>, Discovery<K>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let updates = futures::stream::unfold(rx, |mut rx| async move {
        let update = rx.recv().await?;
        Some((update, rx))
    });
    (Endpoints { tx }, Discovery::from_stream(updates))
}

/// The handle of a [`set`]: cloning it gives another handle to the same set. Changes made after
/// the balancer is gone are dropped.
pub struct Endpoints<K> {
    tx: mpsc::UnboundedSender<Update<K>>,
}

impl<K> Endpoints<K> {
    /// Adds an endpoint (or replaces its channel, if it is there).
    pub fn insert(&self, key: K) {
        let _ = self.tx.send(Update::Insert(key));
    }

    /// Removes an endpoint: calls in flight on it finish; no new call goes there.
    pub fn remove(&self, key: K) {
        let _ = self.tx.send(Update::Remove(key));
    }

    /// Waits until the balancer reading the set is gone (for a task that feeds it).
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Whether the balancer reading the set is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<K> Clone for Endpoints<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K> fmt::Debug for Endpoints<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("closed", &self.is_closed())
            .finish()
    }
}
