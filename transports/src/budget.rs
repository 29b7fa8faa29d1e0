//! The memory a server's connections hold in frames: bytes read that are not yet a whole frame,
//! and frames cut from the stream whose requests are still being decoded and served. One
//! [`Budget`] per server, shared by its connections, so the total is bounded whatever their
//! number.
//!
//! - A connection reads into its first [`FREE`] bytes of buffer without asking: small frames, the
//!   common case, never take the budget's lock.
//! - Its buffer grows past that only with a grant ([`Account::hold`]). When the budget cannot
//!   grant it:
//!   - if the bytes held in unfinished frames would pass the budget with the grant, the
//!     connection holding the most of them is closed (it may be the one asking) and the ask is
//!     tried again: a peer that sends most of a large frame and stops is what this stops;
//!   - otherwise the budget is held by frames being served, which end by themselves: the
//!     connection stops being read until they do.
//! - Every frame a connection cuts counts, at its length, until the request it carries has been
//!   answered ([`Budget::serving`]).
//!
//! So frame memory stays under the budget plus [`FREE`] per connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The bytes of read buffer each connection has without asking the budget.
pub(crate) const FREE: usize = 64 * 1024;

/// A server's frame memory.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    /// Frames being decoded and served.
    serving: AtomicUsize,
    /// What each connection holds in unfinished frames past its first [`FREE`] bytes.
    buffered: Mutex<Holders>,
    /// Readers waiting for bytes to be given back.
    waiting: AtomicUsize,
    freed: Notify,
}

#[derive(Debug, Default)]
struct Holders {
    total: usize,
    next_key: u64,
    by_key: HashMap<u64, Holder>,
}

#[derive(Debug)]
struct Holder {
    held: usize,
    evicted: Arc<Evicted>,
}

/// Set when the budget closed a connection to make room.
#[derive(Debug, Default)]
struct Evicted {
    flag: AtomicBool,
    notify: Notify,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            serving: AtomicUsize::new(0),
            buffered: Mutex::default(),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Holders> {
        self.buffered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection's account, holding nothing yet.
    pub(crate) fn account(self: &Arc<Self>) -> Account {
        let mut h = self.lock();
        let key = h.next_key;
        h.next_key += 1;
        Account {
            budget: self.clone(),
            key,
            held: 0,
            evicted: Arc::default(),
        }
    }

    /// Counts a frame of `bytes` until the returned guard goes.
    pub(crate) fn serving(self: &Arc<Self>, bytes: usize) -> Serving {
        self.serving.fetch_add(bytes, Ordering::Relaxed);
        Serving {
            budget: self.clone(),
            bytes,
        }
    }

    /// The bytes held now, in unfinished frames and in frames being served.
    pub(crate) fn used(&self) -> usize {
        self.lock().total + self.serving.load(Ordering::Relaxed)
    }

    fn wake_waiters(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// What [`Account::hold`] found.
enum Ask {
    Granted,
    Evicted,
    Wait,
}

/// A connection's share of its server's [`Budget`]: what its read buffer holds past [`FREE`].
#[derive(Debug)]
pub(crate) struct Account {
    budget: Arc<Budget>,
    key: u64,
    held: usize,
    evicted: Arc<Evicted>,
}

/// The connection was closed to keep its server's frame memory within the budget.
#[derive(Debug)]
pub(crate) struct OverBudget;

impl Account {
    /// The bytes held past [`FREE`].
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The budget this account draws on.
    pub(crate) fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Resolves when the budget has closed this connection to make room.
    pub(crate) async fn evicted(&self) {
        loop {
            let notified = self.evicted.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.evicted.flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until this connection may hold `bytes` past [`FREE`]; `Err` if it is closed to make
    /// room instead (see the module's documentation).
    pub(crate) async fn hold(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes <= self.held {
            return Ok(());
        }
        loop {
            let budget = self.budget.clone();
            let freed = budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.ask(bytes) {
                Ask::Granted => return Ok(()),
                Ask::Evicted => return Err(OverBudget),
                Ask::Wait => {}
            }
            budget.waiting.fetch_add(1, Ordering::AcqRel);
            // Looked at again once registered as waiting: bytes given back before are seen.
            let ask = self.ask(bytes);
            if !matches!(ask, Ask::Wait) {
                budget.waiting.fetch_sub(1, Ordering::AcqRel);
                return match ask {
                    Ask::Granted => Ok(()),
                    _ => Err(OverBudget),
                };
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = self.evicted() => {}
            }
            budget.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn ask(&mut self, bytes: usize) -> Ask {
        let budget = &self.budget;
        let mut h = budget.lock();
        if self.evicted.flag.load(Ordering::Acquire) {
            self.held = 0;
            return Ask::Evicted;
        }
        let extra = bytes - self.held;
        while h.total + extra > budget.max {
            // Unfinished frames alone would pass the budget: the connection holding the most
            // goes (this one, if no other holds as much as it asks for).
            let victim = h
                .by_key
                .iter()
                .filter(|(k, _)| **k != self.key)
                .max_by_key(|(_, holder)| holder.held)
                .filter(|(_, holder)| holder.held >= bytes)
                .map(|(k, _)| *k)
                .unwrap_or(self.key);
            let Some(gone) = h.by_key.remove(&victim) else {
                // This one holds nothing yet and alone asks for more than the budget.
                self.evicted.flag.store(true, Ordering::Release);
                return Ask::Evicted;
            };
            h.total -= gone.held;
            gone.evicted.flag.store(true, Ordering::Release);
            gone.evicted.notify.notify_waiters();
            if victim == self.key {
                self.held = 0;
                drop(h);
                budget.wake_waiters();
                return Ask::Evicted;
            }
        }
        if h.total + extra + budget.serving.load(Ordering::Relaxed) > budget.max {
            return Ask::Wait;
        }
        h.total += extra;
        h.by_key
            .entry(self.key)
            .or_insert_with(|| Holder {
                held: 0,
                evicted: self.evicted.clone(),
            })
            .held = bytes;
        self.held = bytes;
        Ask::Granted
    }

    /// Gives back what is held past `bytes`.
    pub(crate) fn release_to(&mut self, bytes: usize) {
        if bytes >= self.held {
            return;
        }
        let mut h = self.budget.lock();
        // Gone from the map if evicted: its bytes were given back then.
        if let Some(holder) = h.by_key.get_mut(&self.key) {
            let freed = holder.held - bytes;
            holder.held = bytes;
            if bytes == 0 {
                h.by_key.remove(&self.key);
            }
            h.total -= freed;
        }
        drop(h);
        self.held = bytes;
        self.budget.wake_waiters();
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

/// A frame being decoded and served, counted against its server's budget until dropped.
#[derive(Debug)]
pub(crate) struct Serving {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.budget.serving.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.wake_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_largest_unfinished_frame_goes_when_the_budget_is_full() {
        let budget = Budget::new(100);
        let mut a = budget.account();
        let mut b = budget.account();
        a.hold(60).await.unwrap();
        b.hold(30).await.unwrap();
        assert_eq!(budget.used(), 90);
        // b asks for 50: together 110, over; a holds the most and goes.
        b.hold(50).await.unwrap();
        assert_eq!(a.hold(61).await.err().map(|_| ()), Some(()));
        tokio::time::timeout(Duration::from_secs(1), a.evicted())
            .await
            .expect("a was told");
        assert_eq!(budget.used(), 50);
        drop(a);
        assert_eq!(budget.used(), 50);
        // c asks for more than anyone holds: it goes itself.
        let mut c = budget.account();
        assert!(c.hold(60).await.is_err());
        assert_eq!(budget.used(), 50);
        b.release_to(0);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn frames_being_served_make_readers_wait_not_close() {
        let budget = Budget::new(100);
        let served = budget.serving(80);
        let mut a = budget.account();
        let waiting = tokio::spawn(async move { a.hold(40).await.map(|()| a.held()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "granted over the budget");
        drop(served);
        let held = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken when the frame was served")
            .unwrap()
            .expect("granted");
        assert_eq!(held, 40);
    }
}
