//! The table of calls in flight: matches responses to waiting callers by request id.
//!
//! Machinery of the transports only: it is not part of the public API.
//!
//! The UDP, TCP and Unix transports use it (basic-socket-rpc, one call at a time per connection,
//! needs none): a caller [`register`](InFlight::register)s an id with the peer it
//! sends to, awaits its [`Waiter`], and the transport's receive loop [`deliver`](InFlight::deliver)s
//! responses. A response is accepted only from the peer the request went to; one with an unknown
//! id or from another peer is refused and the caller keeps waiting. The answer waits in the
//! call's slot, beside the caller's waker, until the caller takes it: no channel and no
//! allocation per call.
//!
//! The table expires its calls ([`InFlight::register_expiring`]): one task per table fails them
//! with [`Error::Timeout`] at their deadline, without a timer per call (a timer costs about 8% of a
//! client's instructions per call at 64 calls in flight). Every `tick` the task looks at every
//! call with a deadline and keeps those due before the next look in a heap, earliest first; it
//! sleeps until the earliest of them (or the next look), so calls fail at their deadline, a
//! millisecond late at most (the resolution of tokio's timers). Between looks, a call whose
//! deadline comes before the next look goes into the heap as it is registered. The transports
//! expire every call this way.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError, Weak};

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Mutex, MutexGuard};
use std::time::Duration;

use std::task::{Context as TaskContext, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use rpc_core::Error;

/// foldhash's fast hash with a fixed seed, instead of SipHash: only this side inserts ids (a
/// peer can look them up but never insert one, so it cannot build the colliding set a seeded,
/// keyed hash guards against).
type FoldState = foldhash::fast::FixedState;

/// What became of a delivered response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
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
    /// When the table fails the call.
    expires: Instant,
    state: State<V>,
}

/// A call's state. The answer waits in the slot until its caller takes it: no channel, no
/// allocation per call.
enum State<V> {
    /// No answer yet; the caller's waker, once it has polled.
    Waiting(Option<Waker>),
    /// Answered (or failed); the caller takes it.
    Done(Result<V, Error>),
}

impl<P, V> Slot<P, V> {
    fn waiting(&self) -> bool {
        matches!(self.state, State::Waiting(_))
    }

    /// Answers the call if it still waits; the waker to wake, once the table is unlocked.
    fn finish(&mut self, outcome: Result<V, Error>) -> Option<Waker> {
        match &mut self.state {
            State::Waiting(waker) => {
                let waker = waker.take();
                self.state = State::Done(outcome);
                waker
            }
            State::Done(_) => None,
        }
    }
}

/// Wakes callers, after the table's lock is released.
fn wake_all(wakers: impl IntoIterator<Item = Option<Waker>>) {
    wakers.into_iter().flatten().for_each(Waker::wake);
}

/// The calls by id. The keys are ids this side chose (random or sequential); a peer can only
/// look ids up, never insert them, so it cannot build the colliding set a seeded hash guards
/// against. Each entry keeps its id's hash, and so does its [`Waiter`]: the caller's polls
/// and its giving up find the slot without hashing the id again (an id is hashed twice per
/// call: when registered and when its answer comes).
struct Slots<Id, P, V> {
    entries: hashbrown::HashTable<Entry<Id, P, V>>,
    hasher: FoldState,
}

struct Entry<Id, P, V> {
    id: Id,
    hash: u64,
    slot: Slot<P, V>,
}

impl<Id, P, V> Slots<Id, P, V> {
    fn new() -> Self {
        Self {
            entries: hashbrown::HashTable::new(),
            hasher: FoldState::default(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl<Id: Hash + Eq, P, V> Slots<Id, P, V> {
    fn hash(&self, id: &Id) -> u64 {
        self.hasher.hash_one(id)
    }

    fn get(&self, id: &Id) -> Option<&Slot<P, V>> {
        let hash = self.hash(id);
        self.entries.find(hash, |e| e.id == *id).map(|e| &e.slot)
    }

    fn get_mut(&mut self, id: &Id) -> Option<&mut Slot<P, V>> {
        let hash = self.hash(id);
        self.entries
            .find_mut(hash, |e| e.id == *id)
            .map(|e| &mut e.slot)
    }

    /// `id`'s entry, by the hash it was registered with.
    fn find(
        &mut self,
        hash: u64,
        id: &Id,
    ) -> Option<hashbrown::hash_table::OccupiedEntry<'_, Entry<Id, P, V>>> {
        self.entries.find_entry(hash, |e| e.id == *id).ok()
    }

    /// Adds `id` with `slot`, and gives its hash; `None` if `id` is already there.
    fn insert(&mut self, id: Id, slot: Slot<P, V>) -> Option<u64> {
        let hash = self.hash(&id);
        match self.entries.entry(hash, |e| e.id == id, |e| e.hash) {
            hashbrown::hash_table::Entry::Occupied(_) => None,
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(Entry { id, hash, slot });
                Some(hash)
            }
        }
    }
}

struct Table<Id, P, V> {
    slots: Slots<Id, P, V>,
    /// The sweeper task exists.
    sweeper: bool,
    /// The sweeper task, once spawned: a sweeper whose runtime has gone (the table outlived
    /// it) is replaced.
    task: Option<tokio::task::JoinHandle<()>>,
    /// The sweeper is ticking (calls that expire may be in flight); it stops when none are.
    sweeping: bool,
    /// The calls that expire before `horizon`, earliest first. Calls answered since are still
    /// here, and skipped when their turn comes.
    near: BinaryHeap<Reverse<Near<Id>>>,
    /// When the sweeper next looks at every call; `None` while it is not sweeping.
    horizon: Option<Instant>,
    /// When the sweeper wakes next.
    next_wake: Option<Instant>,
}

/// A call that expires before the sweeper's next look at every call.
struct Near<Id> {
    at: Instant,
    serial: u64,
    id: Id,
}

impl<Id> PartialEq for Near<Id> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.serial) == (other.at, other.serial)
    }
}

impl<Id> Eq for Near<Id> {}

impl<Id> PartialOrd for Near<Id> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<Id> Ord for Near<Id> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.serial).cmp(&(other.at, other.serial))
    }
}

/// Between a table and its sweeper task.
#[derive(Default)]
struct Signal {
    /// Wakes a parked sweeper: calls that expire were registered, or the table is gone.
    wake: Notify,
    /// The table is gone.
    gone: AtomicBool,
}

/// Calls in flight, keyed by id; `P` is the peer type and `V` the delivered value.
pub(crate) struct InFlight<Id, P, V> {
    table: Mutex<Table<Id, P, V>>,
    serial: AtomicU64,
    tick: Duration,
    signal: Arc<Signal>,
    /// The runtime the table was made in, if any: its sweeper runs there when calls are
    /// registered from outside any runtime.
    home: Option<tokio::runtime::Handle>,
}

impl<Id, P, V> Default for InFlight<Id, P, V> {
    fn default() -> Self {
        Self::with_tick(Duration::from_millis(100))
    }
}

impl<Id, P, V> InFlight<Id, P, V> {
    fn with_tick(tick: Duration) -> Self {
        Self {
            table: Mutex::new(Table {
                slots: Slots::new(),
                sweeper: false,
                task: None,
                sweeping: false,
                near: BinaryHeap::new(),
                horizon: None,
                next_wake: None,
            }),
            serial: AtomicU64::new(0),
            tick: tick.clamp(Duration::from_millis(1), Duration::from_secs(3600)),
            signal: Arc::default(),
            home: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Where a sweeper can run: the current runtime, else the table's own.
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.home.clone())
    }
}

impl<Id, P, V> Drop for InFlight<Id, P, V> {
    fn drop(&mut self) {
        self.signal.gone.store(true, Ordering::Release);
        self.signal.wake.notify_one();
    }
}

impl<Id: Hash + Eq + Clone, P: PartialEq, V> InFlight<Id, P, V> {
    /// An empty table whose sweeper looks at every call with a deadline every `tick` (at least
    /// 1 ms, at most an hour) while there are some; calls fail at their deadline whatever the tick (see the
    /// [module docs](self)), which only sets how often the sweeper visits the calls far from
    /// theirs.
    pub(crate) fn with_sweep_every(tick: Duration) -> Arc<Self> {
        Arc::new(Self::with_tick(tick))
    }

    fn lock(&self) -> MutexGuard<'_, Table<Id, P, V>> {
        // The map stays consistent across a panic in another holder: no invariant spans two calls.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a call that the table fails with [`Error::Timeout`] at `deadline` (a millisecond
    /// late at most); `None` if `id` is already in flight. Await it with
    /// [`Waiter::wait_expiring`].
    ///
    /// The sweeper is a task, started by the first such call on the current runtime or, from
    /// outside any, on the one the table was made in. A table made and used outside any runtime
    /// fails its calls only once a call registered within one has started the sweeper.
    pub(crate) fn register_expiring(
        self: &Arc<Self>,
        id: Id,
        peer: P,
        deadline: Instant,
    ) -> Option<Waiter<Id, P, V>>
    where
        Id: Send + 'static,
        P: Send + 'static,
        V: Send + 'static,
    {
        let (waiter, wake) = self.insert(id, peer, deadline)?;
        match wake {
            Wake::No => {}
            Wake::Sweeper => self.signal.wake.notify_one(),
            Wake::Spawn(rt) => {
                self.signal.wake.notify_one();
                let task = rt.spawn(sweep(Arc::downgrade(self), self.signal.clone()));
                self.lock().task = Some(task);
            }
        }
        Some(waiter)
    }

    /// Registers a call under the first id from `next_id` that is not in flight, expiring at
    /// `deadline` (see [`register_expiring`](Self::register_expiring)).
    pub(crate) fn register_call(
        self: &Arc<Self>,
        mut next_id: impl FnMut() -> Id,
        peer: P,
        deadline: Instant,
    ) -> Waiter<Id, P, V>
    where
        Id: Send + 'static,
        P: Clone + Send + 'static,
        V: Send + 'static,
    {
        loop {
            if let Some(w) = self.register_expiring(next_id(), peer.clone(), deadline) {
                return w;
            }
        }
    }

    fn insert(
        self: &Arc<Self>,
        id: Id,
        peer: P,
        expires: Instant,
    ) -> Option<(Waiter<Id, P, V>, Wake)> {
        let mut table = self.lock();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            peer,
            serial,
            expires,
            state: State::Waiting(None),
        };
        let hash = table.slots.insert(id.clone(), slot)?;
        let mut wake = Wake::No;
        let at = expires;
        if table.task.as_ref().is_some_and(|t| t.is_finished()) {
            // The sweeper's runtime shut down under it: start over with a new one.
            table.task = None;
            table.sweeper = false;
            table.sweeping = false;
            table.horizon = None;
            table.next_wake = None;
        }
        if !table.sweeping {
            if table.sweeper {
                table.sweeping = true;
                wake = Wake::Sweeper;
            } else if let Some(rt) = self.runtime() {
                // Decided under the lock: a registration racing this one finds the
                // sweeper started.
                table.sweeper = true;
                table.sweeping = true;
                wake = Wake::Spawn(rt);
            }
            // Else no runtime can run a sweeper: the call waits for a registration made
            // within one to start it.
        } else if table.horizon.is_some_and(|h| at < h) {
            // Due before the sweeper's next look: it must know now.
            table.near.push(Reverse(Near {
                at,
                serial,
                id: id.clone(),
            }));
            if table.next_wake.is_some_and(|w| at < w) {
                wake = Wake::Sweeper;
            }
        }
        drop(table);
        let waiter = Waiter {
            serial,
            hash,
            answered: false,
            table: self.clone(),
            id,
        };
        Some((waiter, wake))
    }

    /// Hands a response from `from` to the caller waiting on `id`.
    pub(crate) fn deliver(&self, id: &Id, from: &P, value: V) -> Delivery {
        let mut table = self.lock();
        let waker = match table.slots.get_mut(id) {
            // Answered already (a duplicate), or never asked.
            None => return Delivery::UnknownId,
            Some(slot) if !slot.waiting() => return Delivery::UnknownId,
            // Spoofed: the call keeps waiting for its peer.
            Some(slot) if slot.peer != *from => return Delivery::WrongPeer,
            Some(slot) => slot.finish(Ok(value)),
        };
        drop(table);
        wake_all([waker]);
        Delivery::Delivered
    }

    /// Fails the calls that expire by `now`, and gives when the sweeper must wake next: `None`
    /// when no call that expires is left (the sweep stops).
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut guard = self.lock();
        let table = &mut *guard;
        let mut due = Vec::new();
        let horizon = match table.horizon {
            Some(h) if now < h => h,
            _ => {
                // Time to look at every call: fail the due ones, keep the near ones in order.
                let horizon = now + self.tick;
                table.near.clear();
                let mut later = false;
                let waiting = table.slots.entries.iter().filter(|e| e.slot.waiting());
                for Entry { id, slot, .. } in waiting {
                    let at = slot.expires;
                    if at <= now {
                        due.push(id.clone());
                    } else {
                        later = true;
                        if at < horizon {
                            table.near.push(Reverse(Near {
                                at,
                                serial: slot.serial,
                                id: id.clone(),
                            }));
                        }
                    }
                }
                table.horizon = later.then_some(horizon);
                horizon
            }
        };
        while let Some(Reverse(near)) = table.near.peek() {
            if near.at > now {
                break;
            }
            let Some(Reverse(near)) = table.near.pop() else {
                break;
            };
            if table
                .slots
                .get(&near.id)
                .is_some_and(|s| s.serial == near.serial && s.waiting())
            {
                due.push(near.id);
            }
        }
        let next = table.horizon.map(|h| match table.near.peek() {
            Some(Reverse(near)) => near.at.min(h),
            None => horizon,
        });
        table.next_wake = next;
        if next.is_none() {
            table.sweeping = false;
        }
        let wakers: Vec<_> = due
            .iter()
            .filter_map(|id| {
                let slot = table.slots.get_mut(id)?;
                slot.finish(Err(Error::Timeout))
            })
            .collect();
        drop(guard);
        wakers.into_iter().for_each(Waker::wake);
        next
    }

    /// Fails every call in flight with [`Error::Closed`] (the connection is gone). Answers that
    /// arrived before are still taken by their callers.
    pub(crate) fn close_all(&self) {
        self.fail_all(|| Error::Closed);
    }

    /// Fails every call in flight with the error `error` makes (say, why the connection ended).
    pub(crate) fn fail_all(&self, error: impl Fn() -> Error) {
        let mut table = self.lock();
        let wakers: Vec<_> = table
            .slots
            .entries
            .iter_mut()
            .map(|e| e.slot.finish(Err(error())))
            .collect();
        drop(table);
        wake_all(wakers);
    }

    /// The number of calls in flight: registered, and not yet taken by their callers (an answer
    /// counts until its caller takes it, or gives up).
    pub(crate) fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no call is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What registering a call that expires asks of the sweeper.
enum Wake {
    No,
    Sweeper,
    /// Start the sweeper on this runtime.
    Spawn(tokio::runtime::Handle),
}

/// A table's sweeper: parked while no call that expires is in flight, otherwise failing them
/// at their deadlines. Ends when the table is dropped.
async fn sweep<Id, P, V>(table: Weak<InFlight<Id, P, V>>, signal: Arc<Signal>)
where
    Id: Hash + Eq + Clone,
    P: PartialEq,
{
    loop {
        signal.wake.notified().await;
        loop {
            if signal.gone.load(Ordering::Acquire) {
                return;
            }
            let Some(table) = table.upgrade() else {
                return;
            };
            let Some(next) = table.expire(Instant::now()) else {
                break;
            };
            drop(table);
            // Woken early when a call due sooner is registered.
            let _ = tokio::time::timeout_at(next, signal.wake.notified()).await;
        }
    }
}

impl<Id, P, V> fmt::Debug for InFlight<Id, P, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.table.lock().map(|t| t.slots.len()).unwrap_or(0);
        f.debug_struct("InFlight").field("calls", &n).finish()
    }
}

/// One registered call. Dropping it (the caller gave up) frees the id.
pub(crate) struct Waiter<Id: Hash + Eq + Clone, P: PartialEq, V> {
    serial: u64,
    /// The id's hash, as the table keeps it.
    hash: u64,
    /// Answered: the table no longer holds the slot.
    answered: bool,
    table: Arc<InFlight<Id, P, V>>,
    id: Id,
}

impl<Id: Hash + Eq + Clone, P: PartialEq, V> Waiter<Id, P, V> {
    /// The call's id.
    pub(crate) fn id(&self) -> &Id {
        &self.id
    }

    /// Waits for the response to a call registered with
    /// [`register_expiring`](InFlight::register_expiring): the table fails it with
    /// [`Error::Timeout`] when it expires, [`Error::Closed`] if it is closed.
    pub(crate) async fn wait_expiring(mut self) -> Result<V, Error> {
        std::future::poll_fn(|cx| self.poll_expiring(cx)).await
    }

    /// Polls for the response to a call registered with
    /// [`register_expiring`](InFlight::register_expiring), as
    /// [`wait_expiring`](Self::wait_expiring) waits for it: for futures that hold the waiter.
    pub(crate) fn poll_expiring(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<V, Error>> {
        if self.answered {
            return Poll::Ready(Err(Error::Other("polled after its answer".into())));
        }
        let mut table = self.table.lock();
        // One lookup, whether the call waits on or is answered.
        let Some(mut slot) = table.slots.find(self.hash, &self.id) else {
            // Closed: the table dropped the slot.
            self.answered = true;
            return Poll::Ready(Err(Error::Closed));
        };
        if slot.get().slot.serial != self.serial {
            // Closed, and the id taken by another call since.
            self.answered = true;
            return Poll::Ready(Err(Error::Closed));
        }
        if let State::Waiting(waker) = &mut slot.get_mut().slot.state {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let (entry, _) = slot.remove();
        drop(table);
        self.answered = true;
        match entry.slot.state {
            State::Done(outcome) => Poll::Ready(outcome),
            State::Waiting(_) => Poll::Ready(Err(Error::Closed)),
        }
    }
}

impl<Id: Hash + Eq + Clone, P: PartialEq, V> Drop for Waiter<Id, P, V> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // Only remove our own slot: once its caller is gone, the id may be in use again.
        let mut table = self.table.lock();
        if let Some(entry) = table.slots.find(self.hash, &self.id) {
            if entry.get().slot.serial == self.serial {
                entry.remove();
            }
        }
    }
}

impl<Id: Hash + Eq + Clone + fmt::Debug, P: PartialEq, V> fmt::Debug for Waiter<Id, P, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

#[cfg(all(test, rpc_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// An answer and a failure of every call race a waiting caller: it gets exactly one of them,
    /// and the table is left empty.
    #[test]
    fn a_caller_gets_its_answer_or_the_failure_never_neither() {
        model(|| {
            let t = InFlight::<u32, &'static str, i32>::with_sweep_every(Duration::from_secs(1));
            let w = t.register_expiring(1, "a", far()).unwrap();
            let answer = {
                let t = t.clone();
                loom::thread::spawn(move || t.deliver(&1, &"a", 7))
            };
            let failure = {
                let t = t.clone();
                loom::thread::spawn(move || t.fail_all(|| Error::Closed))
            };
            let got = loom::future::block_on(w.wait_expiring());
            let delivered = answer.join().unwrap();
            failure.join().unwrap();
            match got {
                Ok(7) => assert_eq!(delivered, Delivery::Delivered),
                Err(Error::Closed) => assert_eq!(delivered, Delivery::UnknownId),
                other => panic!("{other:?}"),
            }
            assert!(t.is_empty());
        });
    }

    /// A caller that gives up while its answer arrives leaves no slot behind.
    #[test]
    fn giving_up_while_the_answer_arrives_leaves_the_table_empty() {
        model(|| {
            let t = InFlight::<u32, &'static str, i32>::with_sweep_every(Duration::from_secs(1));
            let w = t.register_expiring(1, "a", far()).unwrap();
            let answer = {
                let t = t.clone();
                loom::thread::spawn(move || t.deliver(&1, &"a", 7))
            };
            drop(w);
            answer.join().unwrap();
            assert!(t.is_empty());
        });
    }
}

#[cfg(all(test, not(rpc_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn delivers_only_from_the_right_peer() {
        let t = InFlight::<u32, &str, i32>::with_sweep_every(Duration::from_millis(100));
        let w = t.register_expiring(1, "a", far()).unwrap();
        assert!(
            t.register_expiring(1, "a", far()).is_none(),
            "ids in flight are unique"
        );
        assert_eq!(t.deliver(&1, &"b", 9), Delivery::WrongPeer);
        assert_eq!(t.deliver(&2, &"a", 9), Delivery::UnknownId);
        assert_eq!(t.deliver(&1, &"a", 7), Delivery::Delivered);
        assert_eq!(w.wait_expiring().await.unwrap(), 7);
        assert!(t.is_empty());
    }

    /// Waits for `w` to time out; how long after `start` it did.
    async fn timed_out(w: Waiter<u32, (), ()>, start: Instant) -> Duration {
        let err = w.wait_expiring().await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        start.elapsed()
    }

    #[tokio::test]
    async fn expiring_calls_time_out_at_their_deadlines_whatever_the_tick() {
        // The sweeper looks at every call only every 10 s, yet each call fails at its deadline.
        let t = InFlight::<u32, (), ()>::with_sweep_every(Duration::from_secs(10));
        let start = Instant::now();
        let ms = Duration::from_millis;
        let waiters: Vec<_> = [60, 20, 40]
            .into_iter()
            .enumerate()
            .map(|(id, at)| {
                let w = t.register_expiring(id as u32, (), start + ms(at)).unwrap();
                (w, ms(at))
            })
            .collect();
        for (w, at) in waiters {
            let took = timed_out(w, start).await;
            // Never early; late only by a scheduling margin.
            assert!(took >= at, "{took:?} < {at:?}");
            assert!(took < at + ms(200), "{took:?} for {at:?}");
        }
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_call_due_sooner_wakes_the_sleeping_sweeper() {
        let t = InFlight::<u32, (), ()>::with_sweep_every(Duration::from_secs(10));
        let far = t
            .register_expiring(1, (), Instant::now() + Duration::from_secs(60))
            .unwrap();
        // The sweeper has looked, and sleeps until its next look in 10 s.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        let soon = t
            .register_expiring(2, (), start + Duration::from_millis(30))
            .unwrap();
        let took = timed_out(soon, start).await;
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_millis(230), "{took:?}");
        assert_eq!(t.len(), 1, "the far call still waits");
        drop(far);
    }

    #[tokio::test]
    async fn answered_expiring_calls_get_their_answer() {
        let t = InFlight::<u32, &str, i32>::with_sweep_every(Duration::from_millis(5));
        let deadline = Instant::now() + Duration::from_millis(30);
        let w = t.register_expiring(1, "a", deadline).unwrap();
        assert_eq!(t.deliver(&1, &"b", 9), Delivery::WrongPeer);
        assert_eq!(t.deliver(&1, &"a", 7), Delivery::Delivered);
        assert_eq!(w.wait_expiring().await.unwrap(), 7);
        // Past the first call's deadline a new one is swept as well: the sweeper parked
        // and woke again.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let w = t.register_expiring(2, "a", Instant::now()).unwrap();
        assert!(w.wait_expiring().await.unwrap_err().is_timeout());
        let w = t.register_expiring(4, "a", far()).unwrap();
        t.close_all();
        assert!(w.wait_expiring().await.unwrap_err().is_closed());
    }

    #[test]
    fn the_sweeper_ends_with_its_table() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = InFlight::<u32, (), ()>::with_sweep_every(Duration::from_millis(5));
            let w = t.register_expiring(1, (), Instant::now() + Duration::from_secs(60));
            let alive = || {
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
            };
            tokio::task::yield_now().await;
            assert_eq!(alive(), 1, "one sweeper");
            drop(w);
            drop(t);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(alive(), 0, "the sweeper outlived its table");
        });
    }

    #[tokio::test]
    async fn an_answer_that_came_before_a_close_is_still_taken() {
        let t = InFlight::<u32, &str, i32>::with_sweep_every(Duration::from_millis(100));
        let answered = t.register_expiring(1, "a", far()).unwrap();
        let waiting = t.register_expiring(2, "a", far()).unwrap();
        assert_eq!(t.deliver(&1, &"a", 7), Delivery::Delivered);
        assert_eq!(t.deliver(&1, &"a", 8), Delivery::UnknownId, "a duplicate");
        t.close_all();
        assert_eq!(answered.wait_expiring().await.unwrap(), 7);
        assert!(waiting.wait_expiring().await.unwrap_err().is_closed());
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_caller_is_woken_by_its_answer() {
        let t = InFlight::<u32, &str, i32>::with_sweep_every(Duration::from_millis(100));
        let w = t.register_expiring(1, "a", far()).unwrap();
        let answer = tokio::spawn(w.wait_expiring());
        // The caller polls first and waits; the answer comes from elsewhere.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(t.deliver(&1, &"a", 7), Delivery::Delivered);
        assert_eq!(answer.await.unwrap().unwrap(), 7);
        assert!(t.is_empty());
    }

    #[test]
    fn a_table_that_outlives_its_sweepers_runtime_gets_a_new_sweeper() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        // Whether the first runtime polled its sweeper before it shut down, or never did.
        for polled in [true, false] {
            let t = InFlight::<u32, (), ()>::with_sweep_every(Duration::from_millis(5));
            let far = runtime().block_on(async {
                let w = t.register_expiring(1, (), Instant::now() + Duration::from_secs(60));
                if polled {
                    tokio::task::yield_now().await;
                }
                w
            });
            // That runtime is gone, and its sweeper with it.
            runtime().block_on(async {
                let start = Instant::now();
                let w = t
                    .register_expiring(2, (), start + Duration::from_millis(20))
                    .unwrap();
                let err = tokio::time::timeout(Duration::from_secs(5), w.wait_expiring())
                    .await
                    .expect("a new sweeper expired the call")
                    .unwrap_err();
                assert!(err.is_timeout(), "{err:?}");
            });
            drop(far);
        }
    }

    #[test]
    fn a_call_registered_outside_any_runtime_expires_on_the_tables_own() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let t = {
            let _in = rt.enter();
            InFlight::<u32, (), ()>::with_sweep_every(Duration::from_millis(5))
        };
        // This thread has no runtime.
        let w = t
            .register_expiring(1, (), Instant::now() + Duration::from_millis(20))
            .unwrap();
        let outcome = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), w.wait_expiring()).await
            })
            .expect("the table's runtime expired the call");
        assert!(outcome.unwrap_err().is_timeout());
    }

    #[test]
    fn a_call_registered_where_no_runtime_is_expires_once_a_sweeper_starts() {
        // Made and used outside any runtime: no sweeper can start, and registering must not
        // panic.
        let t = InFlight::<u32, (), ()>::with_sweep_every(Duration::from_millis(5));
        let early = t
            .register_expiring(1, (), Instant::now() + Duration::from_millis(10))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let _later = t.register_expiring(2, (), Instant::now() + Duration::from_secs(60));
            let err = tokio::time::timeout(Duration::from_secs(5), early.wait_expiring())
                .await
                .expect("the sweeper expired the early call")
                .unwrap_err();
            assert!(err.is_timeout(), "{err:?}");
        });
    }

    #[tokio::test]
    async fn giving_up_frees_the_slot() {
        let t = InFlight::<u32, (), ()>::with_sweep_every(Duration::from_millis(100));
        let w = t.register_expiring(1, (), Instant::now()).unwrap();
        let err = w.wait_expiring().await.unwrap_err();
        assert!(err.is_timeout());
        assert!(t.is_empty());
        let w = t.register_expiring(2, (), far()).unwrap();
        t.close_all();
        assert!(w.wait_expiring().await.unwrap_err().is_closed());
        let w = t.register_expiring(3, (), far()).unwrap();
        t.fail_all(|| Error::Overloaded);
        assert!(matches!(w.wait_expiring().await, Err(Error::Overloaded)));
        // A caller that gives up frees its slot.
        drop(t.register_expiring(4, (), far()).unwrap());
        assert!(t.is_empty());
    }
}
