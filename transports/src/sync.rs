//! The synchronisation the transports' concurrency cells ([`slots`](crate::slots),
//! [`life`](crate::life), the call table) are built of: std's atomics and tokio's `Notify`, or under
//! `--cfg rpc_loom` loom's atomics and a notifier loom can see, for the model checks.

#[cfg(not(rpc_loom))]
pub(crate) use std::sync::atomic;
#[cfg(not(rpc_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(rpc_loom))]
pub(crate) use tokio::sync::futures::Notified;
#[cfg(not(rpc_loom))]
pub(crate) use tokio::sync::Notify;

#[cfg(rpc_loom)]
pub(crate) use self::model::{Notified, Notify};

/// Runs a loom model with every interleaving of up to three preemptions (loom's advice: most
/// concurrency bugs show with two or three; unbounded, these models take hours).
#[cfg(all(test, rpc_loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
#[cfg(rpc_loom)]
pub(crate) use loom::sync::atomic;
#[cfg(rpc_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// `Notify::notify_waiters` and its `Notified` futures over loom's primitives: a count of
/// notifications, and the wakers of the futures that wait for the next one.
#[cfg(rpc_loom)]
mod model {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Mutex;

    #[derive(Debug, Default)]
    pub(crate) struct Notify {
        rounds: AtomicUsize,
        waiters: Mutex<Vec<Waker>>,
    }

    impl Notify {
        /// Wakes the futures registered for the current round, under the lock that
        /// registrations take, as tokio's does: one made after the new round began waits for
        /// the next.
        pub(crate) fn notify_waiters(&self) {
            let woken: Vec<Waker> = {
                let mut waiters = self.waiters.lock().unwrap();
                self.rounds.fetch_add(1, Ordering::AcqRel);
                waiters.drain(..).collect()
            };
            woken.into_iter().for_each(Waker::wake);
        }

        pub(crate) fn notified(&self) -> Notified<'_> {
            Notified {
                notify: self,
                round: None,
            }
        }
    }

    /// Resolves at the first notification after it was enabled (or first polled).
    pub(crate) struct Notified<'a> {
        notify: &'a Notify,
        round: Option<usize>,
    }

    impl Notified<'_> {
        pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
            let this = self.get_mut();
            if this.round.is_none() {
                this.round = Some(this.notify.rounds.load(Ordering::Acquire));
            }
            true
        }
    }

    impl Future for Notified<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            let round = *this
                .round
                .get_or_insert_with(|| this.notify.rounds.load(Ordering::Acquire));
            let mut waiters = this.notify.waiters.lock().unwrap();
            if this.notify.rounds.load(Ordering::Acquire) != round {
                return Poll::Ready(());
            }
            waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
