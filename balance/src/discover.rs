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
//! into a channel with the function it was built with. An update inserting a key that is
//! already there replaces its channel; one removing a key that is not there does nothing.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::stream::{BoxStream, Stream, StreamExt};

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
            // The balancer polls it again after its end.
            updates: updates.fuse().boxed(),
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
/// The discovery sends what changed since it was last read, not every change: a key inserted
/// and removed between two reads is never seen, and the memory held is the set's, however
/// often it changes while no call reads it. Inserting a key that is in the set, or removing
/// one that is not, does nothing. Insertions are sent before removals, so that a set replaced
/// whole is never seen empty. The discovery ends when every handle is gone (the balancer keeps
/// the endpoints it has).
///
/// ```
/// use rpc_balance::discover::{self, Update};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (endpoints, mut discovery) = discover::set();
/// endpoints.insert("tcp://127.0.0.1:4000");
/// assert_eq!(discovery.next().await, Some(Update::Insert("tcp://127.0.0.1:4000")));
/// endpoints.insert("tcp://127.0.0.1:4001");
/// endpoints.remove("tcp://127.0.0.1:4000");
/// assert_eq!(discovery.next().await, Some(Update::Insert("tcp://127.0.0.1:4001")));
/// assert_eq!(discovery.next().await, Some(Update::Remove("tcp://127.0.0.1:4000")));
/// drop(endpoints);
/// assert_eq!(discovery.next().await, None);
/// # }
/// ```
pub fn set<K>() -> (Endpoints<K>, Discovery<K>)
where
    K: Clone + Eq + Hash + Send + 'static,
{
    let shared = Arc::new(SetShared {
        state: Mutex::new(SetState {
            wanted: HashSet::new(),
            version: 0,
            reader: None,
            handles: 1,
            reader_gone: false,
        }),
        gone: tokio::sync::Notify::new(),
    });
    let reader = SetReader {
        shared: shared.clone(),
        sent: HashSet::new(),
        seen: 0,
        queue: VecDeque::new(),
    };
    (Endpoints { shared }, Discovery::from_stream(reader))
}

/// What a set's handles and its reader share.
struct SetShared<K> {
    state: Mutex<SetState<K>>,
    /// Notified when the reader is dropped.
    gone: tokio::sync::Notify,
}

struct SetState<K> {
    wanted: HashSet<K>,
    /// Bumped by every change.
    version: u64,
    /// The reader's waker, while it waits for a change.
    reader: Option<Waker>,
    /// Handles alive.
    handles: usize,
    reader_gone: bool,
}

impl<K> SetShared<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, SetState<K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K> SetState<K> {
    fn changed(&mut self) {
        self.version += 1;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// The stream of a set's changes: the difference between the set and what it has sent.
struct SetReader<K> {
    shared: Arc<SetShared<K>>,
    sent: HashSet<K>,
    /// The version the queue was worked out from.
    seen: u64,
    queue: VecDeque<Update<K>>,
}

impl<K: Clone + Eq + Hash> Unpin for SetReader<K> {}

impl<K: Clone + Eq + Hash> Stream for SetReader<K> {
    type Item = Update<K>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Update<K>>> {
        let this = self.get_mut();
        if this.queue.is_empty() {
            let mut state = this.shared.lock();
            if state.version != this.seen {
                this.seen = state.version;
                let inserts = state
                    .wanted
                    .difference(&this.sent)
                    .cloned()
                    .map(Update::Insert);
                let removals = this
                    .sent
                    .difference(&state.wanted)
                    .cloned()
                    .map(Update::Remove);
                this.queue = inserts.chain(removals).collect();
            } else if state.handles == 0 {
                return Poll::Ready(None);
            } else {
                state.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        match this.queue.pop_front() {
            Some(update) => {
                match &update {
                    Update::Insert(k) => this.sent.insert(k.clone()),
                    Update::Remove(k) => this.sent.remove(k),
                };
                Poll::Ready(Some(update))
            }
            // The set came back to what was sent: nothing to send, look again.
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl<K> Drop for SetReader<K> {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.gone.notify_waiters();
    }
}

/// The handle of a [`set`]: cloning it gives another handle to the same set. Changes made after
/// the balancer is gone change nothing.
pub struct Endpoints<K> {
    shared: Arc<SetShared<K>>,
}

impl<K: Eq + Hash> Endpoints<K> {
    /// Adds an endpoint.
    pub fn insert(&self, key: K) {
        let mut state = self.shared.lock();
        if state.wanted.insert(key) {
            state.changed();
        }
    }

    /// Removes an endpoint: calls in flight on it finish; no new call goes there.
    pub fn remove(&self, key: K) {
        let mut state = self.shared.lock();
        if state.wanted.remove(&key) {
            state.changed();
        }
    }

    /// Makes the set exactly `keys`.
    pub fn replace(&self, keys: impl IntoIterator<Item = K>) {
        let keys: HashSet<K> = keys.into_iter().collect();
        let mut state = self.shared.lock();
        if state.wanted != keys {
            state.wanted = keys;
            state.changed();
        }
    }
}

impl<K> Endpoints<K> {
    /// Waits until the balancer reading the set is gone (for a task that feeds it).
    pub async fn closed(&self) {
        let gone = self.shared.gone.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if self.is_closed() {
            return;
        }
        gone.await;
    }

    /// Whether the balancer reading the set is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().reader_gone
    }
}

impl<K> Clone for Endpoints<K> {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K> Drop for Endpoints<K> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.handles -= 1;
        if state.handles == 0 {
            if let Some(w) = state.reader.take() {
                w.wake();
            }
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
