//! At-most-once execution over UDP: a duplicate-request cache, as ONC RPC servers keep.
//!
//! A request is known by its sender and id. The first copy runs; a copy that arrives while it
//! runs is dropped (the answer is on its way); a copy that arrives after it is answered with the
//! same response datagram, from the cache, without running the handler again. Entries leave the
//! cache after `max_age` or when more than `capacity` are kept (oldest first), so memory is bounded
//! by `capacity` times the largest datagram.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

enum Entry {
    /// Being served.
    Running,
    /// Answered with this datagram (empty: the codec sent nothing).
    Done(Bytes),
}

/// What to do with a request.
pub(super) enum Seen {
    /// First time: serve it.
    New,
    /// A copy of one being served: drop it.
    Running,
    /// A copy of one answered: send this again (nothing if empty).
    Done(Bytes),
}

pub(super) struct Dedup<Id> {
    capacity: usize,
    max_age: Duration,
    state: Mutex<State<Id>>,
}

struct State<Id> {
    entries: HashMap<(SocketAddr, Id), Entry>,
    order: VecDeque<((SocketAddr, Id), Instant)>,
}

impl<Id: Clone + Eq + Hash> Dedup<Id> {
    pub(super) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Looks a request up, registering it as running if it is new.
    pub(super) fn check(&self, peer: SocketAddr, id: &Id) -> Seen {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some((_, at)) = s.order.front() {
            if s.order.len() < self.capacity && now.duration_since(*at) < self.max_age {
                break;
            }
            if let Some((key, _)) = s.order.pop_front() {
                s.entries.remove(&key);
            }
        }
        let key = (peer, id.clone());
        match s.entries.get(&key) {
            Some(Entry::Running) => Seen::Running,
            Some(Entry::Done(b)) => Seen::Done(b.clone()),
            None => {
                s.entries.insert(key.clone(), Entry::Running);
                s.order.push_back((key, now));
                Seen::New
            }
        }
    }

    /// Records the datagram a request was answered with.
    pub(super) fn done(&self, peer: SocketAddr, id: &Id, datagram: Bytes) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = s.entries.get_mut(&(peer, id.clone())) {
            *e = Entry::Done(datagram);
        }
    }

    /// The number of requests remembered.
    pub(super) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}
