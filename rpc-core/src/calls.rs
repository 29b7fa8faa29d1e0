//! The table of calls in flight: matches responses to waiting callers by request id.
//!
//! Every transport uses it: a caller [`register`](InFlight::register)s an id with the peer it
//! sends to, awaits its [`Waiter`], and the transport's receive loop [`deliver`](InFlight::deliver)s
//! responses. A response is accepted only from the peer the request went to; one with an unknown
//! id or from another peer is refused and the caller keeps waiting.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::hash::FoldState;

/// What became of a delivered response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A caller was waiting for it and got it.
    Delivered,
    /// No call with that id is in flight (late, duplicated, or forged).
    UnknownId,
    /// A call with that id is in flight, but to another peer: refused as spoofed.
    WrongPeer,
}

struct Slot<P, V> {
    peer: P,
    serial: u64,
    tx: oneshot::Sender<V>,
}

/// The table's keys are ids this side chose (random or sequential); a peer can only look ids
/// up, never insert them, so it cannot build the colliding set a seeded hash guards against.
type Slots<Id, P, V> = HashMap<Id, Slot<P, V>, FoldState>;

/// Calls in flight, keyed by id; `P` is the peer type and `V` the delivered value.
pub struct InFlight<Id, P, V> {
    slots: Mutex<Slots<Id, P, V>>,
    serial: AtomicU64,
}

impl<Id, P, V> Default for InFlight<Id, P, V> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::default()),
            serial: AtomicU64::new(0),
        }
    }
}

impl<Id: Hash + Eq + Clone, P: PartialEq, V> InFlight<Id, P, V> {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Slots<Id, P, V>> {
        // The map stays consistent across a panic in another holder: no invariant spans two calls.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a call; `None` if `id` is already in flight.
    pub fn register(self: &Arc<Self>, id: Id, peer: P) -> Option<Waiter<Id, P, V>> {
        let (tx, rx) = oneshot::channel();
        let mut slots = self.lock();
        let std::collections::hash_map::Entry::Vacant(free) = slots.entry(id.clone()) else {
            return None;
        };
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        free.insert(Slot { peer, serial, tx });
        Some(Waiter {
            rx,
            serial,
            answered: false,
            table: self.clone(),
            id,
        })
    }

    /// Hands a response from `from` to the caller waiting on `id`.
    pub fn deliver(&self, id: &Id, from: &P, value: V) -> Delivery {
        let mut slots = self.lock();
        match slots.remove_entry(id) {
            None => Delivery::UnknownId,
            Some((id, slot)) if slot.peer != *from => {
                // Spoofed: the call keeps waiting for its peer.
                slots.insert(id, slot);
                Delivery::WrongPeer
            }
            Some((_, slot)) => {
                drop(slots);
                // The caller may have given up between the lookup and now; nothing to do then.
                let _ = slot.tx.send(value);
                Delivery::Delivered
            }
        }
    }

    /// Fails every call in flight with [`Error::Closed`] (the connection is gone).
    pub fn close_all(&self) {
        self.lock().clear();
    }

    /// Fails the calls in flight to `peer` with [`Error::Closed`].
    pub fn close_peer(&self, peer: &P) {
        self.lock().retain(|_, slot| slot.peer != *peer);
    }

    /// The number of calls in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<Id, P, V> fmt::Debug for InFlight<Id, P, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("InFlight").field("calls", &n).finish()
    }
}

/// One registered call. Dropping it (the caller gave up) frees the id.
pub struct Waiter<Id: Hash + Eq + Clone, P: PartialEq, V> {
    rx: oneshot::Receiver<V>,
    serial: u64,
    /// Answered: the table no longer holds the slot.
    answered: bool,
    table: Arc<InFlight<Id, P, V>>,
    id: Id,
}

impl<Id: Hash + Eq + Clone, P: PartialEq, V> Waiter<Id, P, V> {
    /// The call's id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// Waits for the response until `deadline`.
    ///
    /// [`Error::Timeout`] once the deadline passes, [`Error::Closed`] if the call was failed by
    /// [`InFlight::close_all`].
    pub async fn wait(mut self, deadline: Instant) -> Result<V, Error> {
        match tokio::time::timeout_at(deadline, &mut self.rx).await {
            Ok(Ok(v)) => {
                self.answered = true;
                Ok(v)
            }
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }
}

impl<Id: Hash + Eq + Clone, P: PartialEq, V> Drop for Waiter<Id, P, V> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // Only remove our own slot: after delivery the id is free and may be in use again.
        let mut slots = self.table.lock();
        if slots.get(&self.id).is_some_and(|s| s.serial == self.serial) {
            slots.remove(&self.id);
        }
    }
}

impl<Id: Hash + Eq + Clone + fmt::Debug, P: PartialEq, V> fmt::Debug for Waiter<Id, P, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn delivers_only_from_the_right_peer() {
        let t = InFlight::<u32, &str, i32>::new();
        let w = t.register(1, "a").unwrap();
        assert!(t.register(1, "a").is_none(), "ids in flight are unique");
        assert_eq!(t.deliver(&1, &"b", 9), Delivery::WrongPeer);
        assert_eq!(t.deliver(&2, &"a", 9), Delivery::UnknownId);
        assert_eq!(t.deliver(&1, &"a", 7), Delivery::Delivered);
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(w.wait(deadline).await.unwrap(), 7);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn giving_up_frees_the_slot() {
        let t = InFlight::<u32, (), ()>::new();
        let w = t.register(1, ()).unwrap();
        let err = w.wait(Instant::now()).await.unwrap_err();
        assert!(err.is_timeout());
        assert!(t.is_empty());
        let w = t.register(2, ()).unwrap();
        t.close_all();
        assert!(w
            .wait(Instant::now() + Duration::from_secs(1))
            .await
            .unwrap_err()
            .is_closed());
    }
}
