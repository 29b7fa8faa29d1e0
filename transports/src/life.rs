//! Where a connection, endpoint or server is in its life: one state that only moves forward, and
//! the one way its tasks wait for it to move.
//!
//! Every phase change wakes every waiter ([`Notify::notify_waiters`]); a waiter
//! ([`Life::reached`]) re-registers only when the state it last saw has changed, so a task that
//! polls it on every wake-up (a receive loop's select) pays an atomic load per poll, not the
//! notifier's lock.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sync::atomic::{AtomicU8, Ordering};
use crate::sync::{Notified, Notify};

/// The phases, in order. A state never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Working: reading, writing, calling.
    Open = 0,
    /// Graceful shutdown: no new requests are read; those accepted are answered.
    Draining = 1,
    /// Nothing more is queued; what is queued is written, then it closes.
    Closing = 2,
    /// Finished: calls fail, tasks end.
    Closed = 3,
    /// Finished without writing what was queued (a forced shutdown).
    Aborted = 4,
}

impl Phase {
    fn of(state: u8) -> Self {
        match state & PHASE {
            0 => Phase::Open,
            1 => Phase::Draining,
            2 => Phase::Closing,
            3 => Phase::Closed,
            _ => Phase::Aborted,
        }
    }
}

const PHASE: u8 = 0x0f;
/// It ended by failure (the peer went, a bad frame), not by either side closing it cleanly.
const LOST: u8 = 0x80;

/// A state machine of [`Phase`]s with a lost flag, and its waiters.
#[derive(Debug, Default)]
pub(crate) struct Life {
    state: AtomicU8,
    changed: Notify,
}

impl Life {
    pub(crate) fn phase(&self) -> Phase {
        Phase::of(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.state.load(Ordering::Acquire) & LOST != 0
    }

    /// Moves to `to` unless it is there or past it already; whether it moved.
    pub(crate) fn advance(&self, to: Phase) -> bool {
        let moved = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (Phase::of(s) < to).then_some((s & !PHASE) | to as u8)
            })
            .is_ok();
        if moved {
            self.changed.notify_waiters();
        }
        moved
    }

    /// Marks it as ended by failure (no phase changes).
    pub(crate) fn mark_lost(&self) {
        self.state.fetch_or(LOST, Ordering::AcqRel);
    }

    /// Resolves once the phase is `phase` or later. Polled from one task (its registration
    /// holds that task's waker until the state changes).
    pub(crate) fn reached(&self, phase: Phase) -> Reached<'_> {
        Reached {
            life: self,
            target: phase,
            seen: None,
            notified: Box::pin(self.changed.notified()),
        }
    }
}

/// See [`Life::reached`].
pub(crate) struct Reached<'a> {
    life: &'a Life,
    target: Phase,
    /// The state when the registration was made; a wake-up with the same state needs no new one.
    seen: Option<u8>,
    notified: Pin<Box<Notified<'a>>>,
}

impl Future for Reached<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let state = this.life.state.load(Ordering::Acquire);
            if Phase::of(state) >= this.target {
                return Poll::Ready(());
            }
            if this.seen == Some(state) {
                // Registered for this state, with this task's waker: a change wakes it.
                return Poll::Pending;
            }
            // Register first, then look again: a change in between is seen either way.
            this.notified.set(this.life.changed.notified());
            this.notified.as_mut().enable();
            if this.life.state.load(Ordering::Acquire) != state {
                continue;
            }
            if this.notified.as_mut().poll(cx).is_ready() {
                continue;
            }
            this.seen = Some(state);
            return Poll::Pending;
        }
    }
}

impl std::fmt::Debug for Reached<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reached")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, rpc_loom))]
mod loom_tests {
    use super::*;

    /// A waiter polled while other threads move the state on is always woken, whatever the
    /// interleaving, and the phase never goes back.
    #[test]
    fn a_waiter_is_woken_by_any_interleaving_of_changes() {
        loom::model(|| {
            let life = loom::sync::Arc::new(Life::default());
            let a = life.clone();
            let drain = loom::thread::spawn(move || {
                a.advance(Phase::Draining);
            });
            let b = life.clone();
            let close = loom::thread::spawn(move || {
                b.mark_lost();
                b.advance(Phase::Closed);
            });
            loom::future::block_on(life.reached(Phase::Closed));
            assert_eq!(life.phase(), Phase::Closed);
            assert!(!life.advance(Phase::Draining), "went back");
            drain.join().unwrap();
            close.join().unwrap();
            assert!(life.is_lost());
            assert_eq!(life.phase(), Phase::Closed);
        });
    }
}

#[cfg(all(test, not(rpc_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_wake_their_waiters() {
        let life = Arc::new(Life::default());
        assert_eq!(life.phase(), Phase::Open);
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.reached(Phase::Closing).await }
        });
        assert!(life.advance(Phase::Draining));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "woken before its phase");
        assert!(life.advance(Phase::Closed));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken at a later phase")
            .unwrap();
        assert!(!life.advance(Phase::Closing), "went back");
        assert!(life.advance(Phase::Aborted));
        assert!(!life.is_lost());
        life.mark_lost();
        assert!(life.is_lost());
        assert_eq!(life.phase(), Phase::Aborted);
    }
}
