//! The memory a server's connections hold in frames. One [`Budget`] per server, shared by its
//! connections, so the total is bounded whatever their number.
//!
//! What is counted is what is allocated: every read buffer's allocation is a [`Charge`], alive
//! while the buffer is in it and while any frame cut from it is being served (frames share their
//! buffer's allocation, so a small frame can keep a large one alive: it is the allocation that
//! counts, not the frame's length).
//!
//! - A connection allocates its first [`FREE`] bytes (all its live allocations together) without
//!   asking: small frames, the common case, never take the budget's lock.
//! - Past that it asks ([`Account::allocate`]). When the budget cannot grant it:
//!   - if the buffers of frames still arriving would pass the budget with the grant, the
//!     connection whose buffer is the largest is closed (it may be the one asking), and the ask
//!     waits for that buffer to go: a peer that sends most of a large frame and stops is what
//!     this stops;
//!   - otherwise the budget is held by frames being served, which end as their requests are
//!     answered: the connection is not read until they do, for at most [`MAX_WAIT`], after
//!     which it is closed (a handler that calls its own peer back over the same connection could
//!     otherwise wait for memory its own frame holds).
//!
//! So frame memory stays under the budget plus [`FREE`] per connection.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The bytes of read buffer each connection has without asking the budget.
pub(crate) const FREE: usize = 64 * 1024;

/// The longest a connection waits for frames being served to give memory back before it is
/// closed.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

/// A server's frame memory.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    /// Every live allocation of every connection's read buffer.
    used: AtomicUsize,
    /// Those of `used` the budget granted: all but the connections' own first [`FREE`] bytes.
    granted: AtomicUsize,
    holders: Mutex<Holders>,
    next_key: AtomicU64,
    /// Readers waiting for memory to be given back.
    waiting: AtomicUsize,
    freed: Notify,
}

/// The connections whose read buffer is past [`FREE`]: those with a large frame still arriving,
/// the ones a full budget closes.
#[derive(Debug, Default)]
struct Holders {
    by_key: HashMap<u64, Holder>,
    /// The sum of `by_key`'s buffers.
    total: usize,
    /// Buffers of connections closed to make room, not gone yet.
    leaving: usize,
}

#[derive(Debug)]
struct Holder {
    buffer: usize,
    evicted: Arc<Evicted>,
}

/// Set when the budget closed a connection to make room; what its buffer held then, counted as
/// leaving until its account goes.
#[derive(Debug, Default)]
struct Evicted {
    flag: AtomicBool,
    leaving: AtomicUsize,
    notify: Notify,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
            granted: AtomicUsize::new(0),
            holders: Mutex::default(),
            next_key: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Holders> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection's account, holding nothing yet.
    pub(crate) fn account(self: &Arc<Self>) -> Account {
        Account {
            budget: self.clone(),
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
            own: Arc::default(),
            evicted: Arc::default(),
        }
    }

    /// The bytes allocated now for frames, arriving or being served.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Wakes the readers waiting for memory. `SeqCst` here and in [`Account::allocate`]: a
    /// release that reads no waiter is ordered before a waiter that reads the old `granted`.
    fn wake_waiters(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// What [`Account::ask`] found.
enum Ask {
    Granted(Arc<Charge>),
    Closed,
    Wait,
}

/// A connection's share of its server's [`Budget`].
#[derive(Debug)]
pub(crate) struct Account {
    budget: Arc<Budget>,
    key: u64,
    /// What this connection's live allocations hold, those frames still keep alive included.
    own: Arc<AtomicUsize>,
    evicted: Arc<Evicted>,
}

/// Closed to keep the server's frame memory within its budget.
#[derive(Debug)]
pub(crate) struct OverBudget;

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("closed to keep the server's memory for frames within its budget")
    }
}

impl std::error::Error for OverBudget {}

/// Counts down the waiting readers when a wait ends, however it ends (a cancelled read too).
struct Waiting<'a>(&'a Budget);

impl<'a> Waiting<'a> {
    fn new(budget: &'a Budget) -> Self {
        budget.waiting.fetch_add(1, Ordering::SeqCst);
        Self(budget)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Account {
    /// Whether the budget closed this connection to make room.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.flag.load(Ordering::Acquire)
    }

    /// Resolves when the budget closes this connection to make room.
    pub(crate) async fn evicted(&self) {
        loop {
            let notified = self.evicted.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }

    /// The charge of a new allocation of `bytes` for the read buffer, to replace the one it is
    /// in now (`current`, which goes once this is granted unless frames cut from it are still
    /// served), granted when the budget has room (see the module's documentation); `Err` if the
    /// connection is closed instead. Cancel-safe.
    pub(crate) async fn allocate(
        &self,
        bytes: usize,
        current: Option<&Arc<Charge>>,
    ) -> Result<Arc<Charge>, OverBudget> {
        if self.is_evicted() {
            return Err(OverBudget);
        }
        // What goes when the new allocation comes: counted until then, but not against it.
        let replaced = current.filter(|c| Arc::strong_count(c) == 1);
        let own_replaced = replaced.map_or(0, |c| c.bytes);
        if self.own.load(Ordering::Relaxed) - own_replaced + bytes <= FREE {
            self.small_buffer();
            return Ok(self.charge(bytes, false));
        }
        let granted_replaced = replaced.filter(|c| c.granted).map_or(0, |c| c.bytes);
        match tokio::time::timeout(MAX_WAIT, self.wait_for(bytes, granted_replaced)).await {
            Ok(granted) => granted,
            Err(_) => {
                tracing::debug!(bytes, "no memory for frames within {MAX_WAIT:?}");
                self.close();
                Err(OverBudget)
            }
        }
    }

    /// The charge of a small buffer a connection must have to go on at all (the one it starts
    /// anew in after a large frame, while the frame is still served), granted without asking.
    pub(crate) fn allocate_small(&self, bytes: usize) -> Arc<Charge> {
        self.small_buffer();
        self.charge(bytes, false)
    }

    async fn wait_for(&self, bytes: usize, replaced: usize) -> Result<Arc<Charge>, OverBudget> {
        loop {
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let _waiting = Waiting::new(&self.budget);
            match self.ask(bytes, replaced) {
                Ask::Granted(charge) => return Ok(charge),
                Ask::Closed => return Err(OverBudget),
                Ask::Wait => {}
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = self.evicted() => return Err(OverBudget),
            }
        }
    }

    /// Grants `bytes`, of which `replaced` will be given back as soon as they are granted.
    fn ask(&self, bytes: usize, replaced: usize) -> Ask {
        let budget = &self.budget;
        let mut h = budget.lock();
        if self.is_evicted() {
            return Ask::Closed;
        }
        if budget.granted.load(Ordering::SeqCst) - replaced + bytes <= budget.max {
            let charge = self.charge(bytes, true);
            if bytes > FREE {
                Self::register(&mut h, self.key, &self.evicted, bytes);
            } else if let Some(gone) = h.by_key.remove(&self.key) {
                h.total -= gone.buffer;
            }
            return Ask::Granted(charge);
        }
        let mine = h.by_key.get(&self.key).map_or(0, |holder| holder.buffer);
        if h.total - mine + bytes <= budget.max {
            // Frames being served hold the rest: they give it back as they are answered.
            return Ask::Wait;
        }
        if h.leaving > 0 {
            // A connection closed to make room is on its way out.
            return Ask::Wait;
        }
        // Frames still arriving would pass the budget: the largest buffer goes, this one if no
        // other is as large as what it asks for.
        let victim = h
            .by_key
            .iter()
            .filter(|(k, holder)| **k != self.key && holder.buffer > FREE)
            .max_by_key(|(_, holder)| holder.buffer)
            .filter(|(_, holder)| holder.buffer >= bytes)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                Self::evict(&mut h, k);
                Ask::Wait
            }
            None => {
                drop(h);
                self.close();
                Ask::Closed
            }
        }
    }

    /// Closes connection `key` to make room: its buffer counts as leaving until it is gone.
    fn evict(h: &mut Holders, key: u64) {
        let Some(gone) = h.by_key.remove(&key) else {
            return;
        };
        h.total -= gone.buffer;
        h.leaving += gone.buffer;
        gone.evicted.leaving.store(gone.buffer, Ordering::Relaxed);
        gone.evicted.flag.store(true, Ordering::Release);
        gone.evicted.notify.notify_waiters();
    }

    /// Closes this connection to make room.
    fn close(&self) {
        let mut h = self.budget.lock();
        if h.by_key.contains_key(&self.key) {
            Self::evict(&mut h, self.key);
        } else {
            self.evicted.flag.store(true, Ordering::Release);
            self.evicted.notify.notify_waiters();
        }
    }

    fn register(h: &mut Holders, key: u64, evicted: &Arc<Evicted>, buffer: usize) {
        let holder = h.by_key.entry(key).or_insert_with(|| Holder {
            buffer: 0,
            evicted: evicted.clone(),
        });
        let before = std::mem::replace(&mut holder.buffer, buffer);
        h.total = h.total - before + buffer;
    }

    /// The read buffer is small again: it no longer holds a large frame still arriving.
    fn small_buffer(&self) {
        // Looked at without the lock first: a connection of small frames is never registered
        // (registered, it holds more than FREE).
        if self.own.load(Ordering::Relaxed) <= FREE {
            return;
        }
        let mut h = self.budget.lock();
        if let Some(gone) = h.by_key.remove(&self.key) {
            h.total -= gone.buffer;
        }
        drop(h);
        self.budget.wake_waiters();
    }

    /// Counts an allocation of `bytes`: `granted` by the budget, or of the connection's own.
    fn charge(&self, bytes: usize, granted: bool) -> Arc<Charge> {
        self.budget.used.fetch_add(bytes, Ordering::SeqCst);
        if granted {
            self.budget.granted.fetch_add(bytes, Ordering::SeqCst);
        }
        self.own.fetch_add(bytes, Ordering::Relaxed);
        Arc::new(Charge {
            budget: self.budget.clone(),
            own: self.own.clone(),
            bytes,
            granted,
        })
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let mut h = self.budget.lock();
        if let Some(gone) = h.by_key.remove(&self.key) {
            h.total -= gone.buffer;
        }
        h.leaving -= self.evicted.leaving.swap(0, Ordering::Relaxed);
        drop(h);
        self.budget.wake_waiters();
    }
}

/// One allocation of a read buffer, counted against its server's budget until it and every frame
/// cut from it are gone.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    own: Arc<AtomicUsize>,
    bytes: usize,
    granted: bool,
}

impl Charge {
    /// The bytes of the allocation.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
        if self.granted {
            self.budget.granted.fetch_sub(self.bytes, Ordering::SeqCst);
        }
        self.own.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.wake_waiters();
    }
}

/// What keeps a frame's memory counted while its requests are served: the charge of the
/// allocation it was cut from (none outside a server).
pub(crate) type Held = Option<Arc<Charge>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_buffers_need_no_grant_and_every_allocation_counts_until_it_goes() {
        let budget = Budget::new(1 << 20);
        let a = budget.account();
        let small = a.allocate(4096, None).await.unwrap();
        // A frame cut from it keeps it counted after the buffer moved on.
        let frame = small.clone();
        drop(small);
        assert_eq!(budget.used(), 4096);
        drop(frame);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_largest_unfinished_buffer_goes_when_the_budget_is_full() {
        let budget = Budget::new(300 * 1024);
        let a = budget.account();
        let b = budget.account();
        let a_buf = a.allocate(200 * 1024, None).await.unwrap();
        let b_buf = b.allocate(64 * 1024, None).await.unwrap();
        assert_eq!(budget.used(), 264 * 1024);
        // B asks for 128 KiB: over; A's buffer is the largest and goes, and B waits for it.
        let grow = tokio::spawn(async move { b.allocate(128 * 1024, None).await.map(|c| (b, c)) });
        tokio::time::timeout(Duration::from_secs(1), a.evicted())
            .await
            .expect("A was closed");
        assert!(!grow.is_finished(), "granted before A's buffer went");
        drop((a_buf, a));
        let (b, c) = grow.await.unwrap().expect("granted once A's buffer went");
        assert_eq!(budget.used(), 192 * 1024);
        drop((c, b_buf, b));
        assert_eq!(budget.used(), 0);
        // One that asks for more than anyone's buffer, and than the budget: it goes itself.
        let huge = budget.account();
        assert!(huge.allocate(400 * 1024, None).await.is_err());
        assert!(huge.is_evicted());
    }

    #[tokio::test(start_paused = true)]
    async fn frames_being_served_make_readers_wait_then_close_them() {
        let budget = Budget::new(300 * 1024);
        // Two large frames being served: their connections read on in small buffers.
        let a = budget.account();
        let served = a.allocate(100 * 1024, None).await.unwrap();
        let _small_a = a.allocate_small(4096);
        let b = budget.account();
        let served2 = b.allocate(150 * 1024, None).await.unwrap();
        let _small_b = b.allocate_small(4096);
        // A reader that needs 100 KiB waits for them, rather than close anyone.
        let c = budget.account();
        let waiting = tokio::spawn(async move { c.allocate(100 * 1024, None).await.map(|_| c) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "granted over the budget");
        assert!(!a.is_evicted() && !b.is_evicted());
        drop(served2);
        let c = waiting
            .await
            .unwrap()
            .expect("granted once the frame was served");
        // A frame that is never given back: the reader is closed after MAX_WAIT.
        let t = tokio::time::Instant::now();
        assert!(c.allocate(250 * 1024, None).await.is_err());
        assert!(t.elapsed() >= MAX_WAIT, "{:?}", t.elapsed());
        assert!(c.is_evicted());
        drop(served);
    }
}
