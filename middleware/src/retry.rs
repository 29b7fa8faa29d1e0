//! Retries that fit RPC: only what provably did not run, unless the method is idempotent; under a
//! budget, so a server that is down does not get a retry storm; with exponential backoff and jitter.
//!
//! [`RetryPolicy`] is a `tower::retry::Policy`; wrap a client with
//! `tower::retry::RetryLayer::new(policy)` (or `ServiceBuilder::retry`). Requests are cloned as
//! encoded bytes, so a retry costs no serialization.
//!
//! A failure is retried when it proves the call did not run:
//! - the connection could not be made (refused, unreachable), or
//! - the call was refused before running: [`Error::Overloaded`], [`Error::Rejected`], or the
//!   peer's refusal ([`ServerError::refused`](rpc_core::ServerError::refused): rpc-stack's
//!   overloaded and rate-limited answers carry `{"not_run": true}` in their data; a peer's
//!   -32000 without it may be any error of a call that ran, and is not retried);
//!
//! and, for methods marked [`idempotent`](RetryPolicy::idempotent), also when it may have run:
//! no response in time (a lost datagram), or a connection lost mid-call. Never past the call's
//! deadline, never beyond the budget.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rpc_core::{Error, Method, Payload, Request};
use tokio::time::Instant;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;
use tower::util::rng::HasherRng;

/// Whether `error` proves the call did not run.
pub fn not_processed(error: &Error) -> bool {
    match error {
        Error::Overloaded | Error::Rejected(_) => true,
        // Only a refusal that says so: a peer's -32000 may be any error of a call that ran.
        Error::Server(e) => e.was_refused(),
        Error::Transport(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::NotConnected
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NotFound
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
        ),
        _ => false,
    }
}

/// Whether `error` says the call may have been lost, so that an idempotent method may be retried.
fn maybe_lost(error: &Error) -> bool {
    match error {
        Error::Timeout => true,
        Error::Transport(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// The retry policy; see the [module docs](self). Cloning shares the budget.
///
/// tower's `Retry` clones the policy for every call, so the policy is small: its settings sit
/// behind one `Arc`, and a call's backoff is made at its first retry.
#[derive(Clone)]
pub struct RetryPolicy {
    settings: Arc<Settings>,
    /// The backoff of one call, made at its first retry with its own random numbers.
    backoff: Option<Box<ExponentialBackoff<HasherRng>>>,
    attempts: u32,
}

/// What the clones of a policy share.
#[derive(Clone)]
struct Settings {
    budget: Arc<TpsBudget>,
    /// Backoff: least and most wait, and jitter as a fraction of the wait.
    backoff: (Duration, Duration, f64),
    idempotent: HashSet<Method>,
    max_attempts: u32,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("idempotent", &self.settings.idempotent)
            .field("max_attempts", &self.settings.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// A policy with a budget of 20% retries over 10 s (and at least 10 retries a second),
    /// backoff from 10 ms to 1 s with 50% jitter, and at most 5 attempts a call.
    pub fn new() -> Self {
        Self::with_budget(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
    }

    /// A policy drawing on `budget` (share one budget among all of a client's calls).
    pub fn with_budget(budget: TpsBudget) -> Self {
        Self {
            settings: Arc::new(Settings {
                budget: Arc::new(budget),
                backoff: (Duration::from_millis(10), Duration::from_secs(1), 0.5),
                idempotent: HashSet::new(),
                max_attempts: 5,
            }),
            backoff: None,
            attempts: 1,
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// Backoff between attempts: from `min`, doubling, up to `max`, each lengthened by a random
    /// part of up to `jitter` (0 to 1) of itself. Default 10 ms to 1 s, jitter 0.5.
    ///
    /// # Panics
    ///
    /// If `min > max`, `max` is zero, or `jitter` is outside 0..=1.
    pub fn backoff(self, min: Duration, max: Duration, jitter: f64) -> Self {
        assert!((0.0..=1.0).contains(&jitter), "jitter must be within 0..=1");
        // Checked now rather than at the first retry.
        let _ = ExponentialBackoffMaker::new(min, max, jitter, HasherRng::default())
            .expect("valid backoff settings");
        self.edit(|s| s.backoff = (min, max, jitter))
    }

    /// The wait before the next attempt of this call.
    fn next_wait(&mut self) -> tokio::time::Sleep {
        let (min, max, jitter) = self.settings.backoff;
        self.backoff
            .get_or_insert_with(|| {
                // A fresh generator per call, so calls that fail together do not retry together.
                Box::new(
                    ExponentialBackoffMaker::new(min, max, jitter, HasherRng::default())
                        .expect("checked when set")
                        .make_backoff(),
                )
            })
            .next_backoff()
    }

    /// At most this many attempts per call, the first included. Default 5.
    pub fn max_attempts(self, n: u32) -> Self {
        self.edit(|s| s.max_attempts = n.max(1))
    }

    /// Marks methods safe to run more than once: they are also retried when the call may have
    /// been lost (no response in time, connection lost mid-call).
    pub fn idempotent<M: Into<Method>>(self, methods: impl IntoIterator<Item = M>) -> Self {
        self.edit(|s| s.idempotent.extend(methods.into_iter().map(Into::into)))
    }

    fn should_retry(&self, req: &Request, error: &Error) -> bool {
        (not_processed(error)
            || (maybe_lost(error) && self.settings.idempotent.contains(req.method())))
            && self.attempts < self.settings.max_attempts
            && req.context().deadline().is_none_or(|d| d > Instant::now())
    }
}

impl<E> Policy<Request, Payload, E> for RetryPolicy
where
    E: RetryableError,
{
    type Future = BoxFuture<'static, ()>;

    fn retry(
        &mut self,
        req: &mut Request,
        result: &mut Result<Payload, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.settings.budget.deposit();
                None
            }
            Err(e) => {
                let retry = e.with_error(|e| self.should_retry(req, e));
                if !retry {
                    return None;
                }
                let wait = self.next_wait();
                // An attempt at or after the deadline would be wasted (and, over UDP, sent anyway).
                if req
                    .context()
                    .deadline()
                    .is_some_and(|d| wait.deadline() >= d)
                {
                    return None;
                }
                if !self.settings.budget.withdraw() {
                    tracing::debug!(method = %req.method(), "retry budget exhausted");
                    return None;
                }
                self.attempts += 1;
                tracing::debug!(method = %req.method(), attempt = self.attempts, "retrying");
                Some(Box::pin(wait))
            }
        }
    }

    fn clone_request(&mut self, req: &Request) -> Option<Request> {
        Some(req.clone())
    }
}

/// The error types a [`RetryPolicy`] can judge: [`Error`], and the `BoxError` of stacks with
/// tower layers inside.
pub trait RetryableError {
    /// Runs `f` on the error, seen as an [`Error`].
    fn with_error(&self, f: impl FnOnce(&Error) -> bool) -> bool;
}

impl RetryableError for Error {
    fn with_error(&self, f: impl FnOnce(&Error) -> bool) -> bool {
        f(self)
    }
}

impl RetryableError for rpc_core::BoxError {
    fn with_error(&self, f: impl FnOnce(&Error) -> bool) -> bool {
        if let Some(e) = self.downcast_ref::<Error>() {
            return f(e);
        }
        Error::of_tower(&**self).is_some_and(|e| f(&e))
    }
}
