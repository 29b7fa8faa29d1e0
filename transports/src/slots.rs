//! The bound on requests served at once, and the wait for them to finish that a graceful
//! shutdown makes.
//!
//! A request takes a [`Slot`] when its handler is still running after the receive loop first
//! polled it, and gives it back when it has been answered; a request that is done at once never
//! takes one (no atomic write at all). A receive loop checks [`Slots::is_full`] before it starts a
//! request and takes the slot after, so a request that has started always has its slot (a limit
//! shared by several loops could be passed by the requests they started at the same moment; the
//! transports give each receive loop its own). A graceful shutdown stops the receive loop first,
//! then waits for [`Slots::idle`], so it waits for every request that started.

use std::sync::{Arc, Mutex, PoisonError};

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Notify;

/// Requests being served, and who waits for none to be.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    taken: AtomicUsize,
    idle: Notify,
}

/// A request's place among those being served; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            taken: AtomicUsize::new(0),
            idle: Notify::default(),
        })
    }

    /// Whether a new request must be refused.
    pub(crate) fn is_full(&self) -> bool {
        self.taken.load(Ordering::Relaxed) >= self.max
    }

    /// Takes a slot for a request that has started.
    pub(crate) fn take(self: &Arc<Self>) -> Slot {
        self.taken.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone())
    }

    /// The requests being served.
    pub(crate) fn in_use(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// Resolves once no slot is taken.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before looking: a release between the look and the wait wakes it.
            notified.as_mut().enable();
            if self.in_use() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.taken.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What each IP address holds of a shared bound (a server's connections, an endpoint's requests
/// being served), each address at most `max`.
#[derive(Debug)]
pub(crate) struct PerIp {
    max: usize,
    /// Held by every address: while fewer than `max` are, none can have it all, and the map
    /// need not be looked at.
    total: AtomicUsize,
    /// SipHash: the keys come from the network.
    open: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// A place among those of an IP address; given back on drop.
#[derive(Debug)]
pub(crate) struct IpSlot(Option<(Arc<PerIp>, std::net::IpAddr)>);

impl PerIp {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            total: AtomicUsize::new(0),
            open: Mutex::default(),
        })
    }

    /// A place for `ip` (any for a peer without an IP address), or `None` if its address has
    /// all it may have.
    pub(crate) fn take_if_room(self: &Arc<Self>, ip: Option<std::net::IpAddr>) -> Option<IpSlot> {
        let Some(ip) = ip else {
            return Some(IpSlot(None));
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(IpSlot(Some((self.clone(), ip))))
    }

    /// Whether `ip` has all it may have: while fewer than an address's share are taken by all,
    /// none can have it all, and the map is not looked at (no lock on the way of a request,
    /// most of the time).
    pub(crate) fn is_full(&self, ip: std::net::IpAddr) -> bool {
        if self.total.load(Ordering::Relaxed) < self.max {
            return false;
        }
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip).is_some_and(|n| *n >= self.max)
    }

    /// A place for `ip` for a request that has started (as [`Slots::take`]: it may pass the
    /// bound by what started since the check).
    pub(crate) fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> IpSlot {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open.entry(ip).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        IpSlot(Some((self.clone(), ip)))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some((per_ip, ip)) = self.0.take() else {
            return;
        };
        let mut open = per_ip.open.lock().unwrap_or_else(PoisonError::into_inner);
        per_ip.total.fetch_sub(1, Ordering::Relaxed);
        if let std::collections::hash_map::Entry::Occupied(mut e) = open.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(all(test, rpc_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;

    /// Two requests finish on other threads while a shutdown waits: it never returns while a
    /// slot is taken, and it always returns (no lost wake-up).
    #[test]
    fn idle_waits_for_every_slot_and_is_woken() {
        model(|| {
            let slots = Slots::new(1);
            let a = slots.take();
            // Past the limit: taken anyway, as a request that had already started.
            let b = slots.take();
            let t1 = loom::thread::spawn(move || drop(a));
            let t2 = loom::thread::spawn(move || drop(b));
            loom::future::block_on(slots.idle());
            assert_eq!(slots.in_use(), 0);
            t1.join().unwrap();
            t2.join().unwrap();
        });
    }
}

#[cfg(all(test, not(rpc_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_started_request_keeps_its_slot_past_the_limit_and_idle_waits_for_it() {
        let slots = Slots::new(1);
        assert!(!slots.is_full());
        let a = slots.take();
        assert!(slots.is_full());
        let b = slots.take();
        assert_eq!(slots.in_use(), 2);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "idle with a slot taken");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when the last slot went")
            .unwrap();
        assert!(!slots.is_full());
    }
}
