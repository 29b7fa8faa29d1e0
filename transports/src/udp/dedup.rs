//! At-most-once execution over UDP: a duplicate-request cache, as ONC RPC servers keep.
//!
//! A request is known by its sender and id. The first copy runs; a copy that arrives while it
//! runs is dropped (the answer is on its way); a copy that arrives after it is answered with the
//! same response datagram, from the cache, without running the handler again. Answered entries
//! leave the cache after `max_age` or when more than `capacity` are kept (oldest first), so memory
//! is bounded by `capacity` times the largest datagram; entries still running stay until they are
//! answered (or, never answered, for `max_age`), as forgetting one would let a copy run it again.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

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

type Key<Id> = (SocketAddr, Id);

struct State<Id> {
    /// Requests being served, with when they came. Not bounded by `capacity`: evicting one
    /// would let a copy run it again; their number is bounded by the requests served at once
    /// (and those never answered leave after `max_age`).
    running: HashMap<Key<Id>, Instant>,
    /// Requests answered, with the datagram they were answered with (empty: the codec sent
    /// nothing); `order` holds them oldest answered first.
    done: HashMap<Key<Id>, Bytes>,
    order: VecDeque<(Key<Id>, Instant)>,
}

impl<Id: Clone + Eq + Hash> Dedup<Id> {
    pub(super) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            state: Mutex::new(State {
                running: HashMap::new(),
                done: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Forgets answered requests past `max_age` or beyond `capacity`, oldest first.
    fn evict(&self, s: &mut State<Id>, now: Instant) {
        while let Some((_, at)) = s.order.front() {
            if s.order.len() <= self.capacity && now.duration_since(*at) < self.max_age {
                break;
            }
            if let Some((key, _)) = s.order.pop_front() {
                s.done.remove(&key);
            }
        }
    }

    /// Looks a request up, registering it as running if it is new.
    pub(super) fn check(&self, peer: SocketAddr, id: &Id) -> Seen {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        self.evict(&mut s, now);
        if s.running.len() > self.capacity {
            // Requests that were never answered (their answer could not be sent) leave once old.
            let max_age = self.max_age;
            s.running.retain(|_, at| now.duration_since(*at) < max_age);
        }
        let key = (peer, id.clone());
        if s.running.contains_key(&key) {
            return Seen::Running;
        }
        if let Some(b) = s.done.get(&key) {
            return Seen::Done(b.clone());
        }
        s.running.insert(key, now);
        Seen::New
    }

    /// Records the datagram a request was answered with.
    pub(super) fn done(&self, peer: SocketAddr, id: &Id, datagram: Bytes) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (peer, id.clone());
        if s.running.remove(&key).is_some() {
            let now = Instant::now();
            s.done.insert(key.clone(), datagram);
            s.order.push_back((key, now));
            self.evict(&mut s, now);
        }
    }

    /// The number of requests remembered.
    pub(super) fn len(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.running.len() + s.done.len()
    }
}
