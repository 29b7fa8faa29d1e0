//! Failover: an endpoint whose calls fail leaves the ready set for a while, then comes back.
//!
//! Each endpoint's channel is wrapped in a [`Guarded`] service. A call that fails with a
//! transport error (the connection was refused, reset or lost) or that got no answer in time
//! *trips* the endpoint; the next time the balancer asks whether it is ready, it is ejected:
//! `poll_ready` stays pending for a backoff, 50 ms after the first failure, doubling with each
//! further failure in a row up to 1 s ([`Backoff`]); an error from the channel's own
//! `poll_ready` ejects it the same way. Then it is ready again, and the calls it is given show
//! whether it is back: over a stream the first opens a new connection (a refused one fails at
//! once, and the retry policy sends the call elsewhere: it provably did not run), over UDP they
//! are ordinary calls. A call answered resets the count. So an endpoint that comes back takes
//! calls again within the longest backoff, and one that stays down gets the calls the balancer
//! sends it between its return and its first failure (a refused connection fails fast: at most
//! a few) once per backoff.
//!
//! The last endpoint standing is not ejected by its calls' failures: with every other one out,
//! calls keep going to it, and fail fast if it is down too, rather than waiting for a backoff
//! to end. (An endpoint whose channel's `poll_ready` is pending counts as standing; the
//! transports' channels are always ready. When endpoints are removed while others are out, the
//! calls may wait for a backoff to end.)
//!
//! Answers with an error from the server (an unknown method, a handler's error, an overloaded
//! server's refusal) say the endpoint is up, and do not trip it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rpc_core::{Error, Payload, Request};
use tower::Service;

/// How long an ejected endpoint stays out: `min` after its first failure in a row, doubling with
/// each further one, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
}

impl Default for Backoff {
    /// 50 ms, doubling up to 1 s.
    fn default() -> Self {
        Self {
            min: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The time out after `failures` failures in a row (at least one).
    fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.min.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Whether an error says the endpoint may be down (rather than that it answered).
fn trips(error: &Error) -> bool {
    matches!(error, Error::Transport(_) | Error::Timeout)
}

/// What the endpoint's calls report, shared by the endpoint's service and its calls' futures.
#[derive(Debug, Default)]
struct Outcomes {
    /// Set by a failed call, taken by the next `poll_ready`.
    tripped: AtomicBool,
    /// Failures since the last answer.
    failures: AtomicU32,
}

impl Outcomes {
    fn record(&self, result: &Result<Payload, Error>) {
        match result {
            Err(e) if trips(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.tripped.store(true, Ordering::Release);
            }
            _ => self.failures.store(0, Ordering::Relaxed),
        }
    }
}

/// The endpoints of one balancer that are not ejected: the last one is never ejected.
#[derive(Debug, Default)]
pub(crate) struct Standing(AtomicUsize);

impl Standing {
    /// Takes one endpoint out, unless it is the last one standing.
    fn try_eject(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok()
    }

    fn join(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    fn leave(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An endpoint's state.
enum State {
    /// Takes calls.
    Up,
    /// Ejected until the sleep ends.
    Ejected(Pin<Box<tokio::time::Sleep>>),
}

/// An endpoint's channel with failover (see the [module docs](self)).
pub struct Guarded<S> {
    inner: S,
    state: State,
    outcomes: Arc<Outcomes>,
    standing: Arc<Standing>,
    backoff: Backoff,
}

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S, standing: Arc<Standing>, backoff: Backoff) -> Self {
        standing.join();
        Self {
            inner,
            state: State::Up,
            outcomes: Arc::default(),
            standing,
            backoff,
        }
    }

    /// Moves between up and ejected; pending while ejected.
    fn update(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Up => {
                    if !self.outcomes.tripped.swap(false, Ordering::AcqRel) {
                        return Poll::Ready(());
                    }
                    if !self.standing.try_eject() {
                        return Poll::Ready(());
                    }
                    self.eject();
                }
                State::Ejected(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    // Back: a failure of a call made before the ejection does not eject it
                    // again (it still lengthens the next backoff).
                    self.outcomes.tripped.store(false, Ordering::Release);
                    self.standing.join();
                    self.state = State::Up;
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<S> Guarded<S> {
    /// Out for the backoff its failures in a row call for (already counted out of `standing`).
    fn eject(&mut self) {
        let failures = self.outcomes.failures.load(Ordering::Relaxed).max(1);
        let wait = self.backoff.after(failures);
        tracing::debug!(?wait, failures, "endpoint ejected");
        self.state = State::Ejected(Box::pin(tokio::time::sleep(wait)));
    }
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        if matches!(self.state, State::Up) {
            self.standing.leave();
        }
    }
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Up => "up",
            State::Ejected(_) => "ejected",
        };
        f.debug_struct("Guarded").field("state", &state).finish()
    }
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Payload, Error = Error>,
{
    type Response = Payload;
    type Error = Error;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            ready!(self.update(cx));
            match self.inner.poll_ready(cx) {
                // tower's balancer would drop an endpoint whose readiness failed for good:
                // it is ejected instead, even the last one, and tried again after the backoff.
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "endpoint not ready");
                    self.outcomes.failures.fetch_add(1, Ordering::Relaxed);
                    self.standing.leave();
                    self.eject();
                }
                ready => return ready,
            }
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        GuardedFuture {
            inner: self.inner.call(req),
            outcomes: self.outcomes.clone(),
        }
    }
}

/// The future of a call on a [`Guarded`] endpoint: the call's, reporting how it ended.
#[pin_project::pin_project]
#[derive(Debug)]
pub struct GuardedFuture<F> {
    #[pin]
    inner: F,
    outcomes: Arc<Outcomes>,
}

impl<F> Future for GuardedFuture<F>
where
    F: Future<Output = Result<Payload, Error>>,
{
    type Output = Result<Payload, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.outcomes.record(&result);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let b = Backoff::default();
        assert_eq!(b.after(1), Duration::from_millis(50));
        assert_eq!(b.after(2), Duration::from_millis(100));
        assert_eq!(b.after(5), Duration::from_millis(800));
        assert_eq!(b.after(6), Duration::from_secs(1));
        assert_eq!(b.after(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn the_last_endpoint_standing_is_not_ejected() {
        let s = Standing::default();
        s.join();
        s.join();
        assert!(s.try_eject());
        assert!(!s.try_eject());
    }
}
