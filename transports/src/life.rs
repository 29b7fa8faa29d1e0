//! Where a connection, endpoint or server is in its life: one state that only moves forward, and
//! the one way its tasks wait for it to move.
//!
//! Each phase has a notifier of its own, which wakes its waiters ([`Life::reached`]) when the
//! state reaches it (phases it skips are notified too). A waiter is woken only once its phase is
//! reached, so it registers once and then needs no more than an atomic load per poll: a task
//! that polls it on every wake-up (a receive loop's select) never takes the notifier's lock
//! again. (One notifier for every change would wake a waiter for a phase it does not wait for,
//! and it would have to register again, under the lock, after every such wake-up.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

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
    /// The waiters of each phase after `Open`, by `phase - 1`.
    reached: [Notify; 4],
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
        let Ok(before) = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (Phase::of(s) < to).then_some((s & !PHASE) | to as u8)
            })
        else {
            return false;
        };
        // Every phase passed on the way is reached too.
        for phase in (Phase::of(before) as usize + 1)..=(to as usize) {
            self.reached[phase - 1].notify_waiters();
        }
        true
    }

    /// Marks it as ended by failure (no phase changes).
    pub(crate) fn mark_lost(&self) {
        self.state.fetch_or(LOST, Ordering::AcqRel);
    }

    /// Resolves once the phase is `phase` or later.
    pub(crate) fn reached(&self, phase: Phase) -> Reached<'_> {
        let waiters = &self.reached[(phase as usize).max(1) - 1];
        Reached {
            life: self,
            target: phase,
            armed: None,
            notified: Box::pin(waiters.notified()),
        }
    }
}

/// See [`Life::reached`].
pub(crate) struct Reached<'a> {
    life: &'a Life,
    target: Phase,
    /// The waker registered with the phase's notifier, which wakes it once the phase is
    /// reached.
    armed: Option<Waker>,
    notified: Pin<Box<Notified<'a>>>,
}

impl Future for Reached<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.life.phase() >= this.target {
            return Poll::Ready(());
        }
        if this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Registered with this waker: the phase's notifier wakes it after the change.
            return Poll::Pending;
        }
        // Register first, then look again: a change in between is seen either way. (Polled
        // with another waker, the registration takes the new one.)
        this.notified.as_mut().enable();
        if this.life.phase() >= this.target || this.notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.armed = Some(cx.waker().clone());
        Poll::Pending
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
    use crate::sync::model;

    #[test]
    fn a_waiter_is_woken_past_a_phase_it_does_not_wait_for() {
        model(|| {
            let life = loom::sync::Arc::new(Life::default());
            let a = life.clone();
            let drain = loom::thread::spawn(move || {
                a.advance(Phase::Draining);
            });
            let b = life.clone();
            let close = loom::thread::spawn(move || {
                b.advance(Phase::Closed);
            });
            loom::future::block_on(life.reached(Phase::Closed));
            close.join().unwrap();
            drain.join().unwrap();
        });
    }

    /// A waiter polled while other threads move the state on is always woken, whatever the
    /// interleaving, and the phase never goes back.
    #[test]
    fn a_waiter_is_woken_by_any_interleaving_of_changes() {
        model(|| {
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

    #[tokio::test]
    async fn a_waiter_polled_once_with_another_waker_is_woken_with_the_one_it_waits_with() {
        use futures::FutureExt;
        let life = Life::default();
        let mut closed = life.reached(Phase::Closed);
        // Polled with a waker that is never woken, then awaited with this task's.
        assert!((&mut closed).now_or_never().is_none());
        let close = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            life.advance(Phase::Closed);
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(closed, close)
        })
        .await
        .expect("woken with the waker it waits with now");
    }
}
