//! Deadlines: a call's time budget, set by the caller and enforced by the server.
//!
//! A request's deadline lives in its [`Context`](rpc_core::Context). On the client side,
//! [`SetDeadlineLayer`] (or `Client::with_timeout`) sets it, and transports stop waiting at it, so
//! the caller sees [`Error::Timeout`](rpc_core::Error::Timeout). On the server side,
//! [`DeadlineLayer`] answers a request whose deadline has already passed with
//! [`ErrorCode::DEADLINE_EXCEEDED`] without running it, and drops (cancels) a handler still running
//! at the deadline, answering the same.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use pin_project::pin_project;
use rpc_core::context::deadline_after;
use rpc_core::{ErrorCode, Request, Response, ServerError, Service};
use tokio::time::Instant;
use tower::Layer;

/// Sets every request's deadline to `timeout` from when it is sent, unless it has an earlier one.
///
/// ```
/// use std::time::Duration;
/// use rpc_middleware::deadline::SetDeadlineLayer;
/// let layer = SetDeadlineLayer::new(Duration::from_millis(500));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SetDeadlineLayer {
    timeout: Duration,
}

impl SetDeadlineLayer {
    /// A layer giving calls `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for SetDeadlineLayer {
    type Service = SetDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Sets request deadlines; see [`SetDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct SetDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S: Service<Request>> Service<Request> for SetDeadline<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        req.context_mut().set_timeout(self.timeout);
        self.inner.call(req)
    }
}

/// Enforces request deadlines on a server.
///
/// ```
/// use std::time::Duration;
/// use rpc_middleware::deadline::DeadlineLayer;
/// // Requests without a deadline get 30 s; none may ask for more than 60 s.
/// let layer = DeadlineLayer::new()
///     .default_timeout(Duration::from_secs(30))
///     .max_timeout(Duration::from_secs(60));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer {
    default: Option<Duration>,
    max: Option<Duration>,
}

impl DeadlineLayer {
    /// Enforces the deadlines requests carry; requests without one run unbounded.
    pub const fn new() -> Self {
        Self {
            default: None,
            max: None,
        }
    }

    /// Gives requests without a deadline this one.
    pub const fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default = Some(timeout);
        self
    }

    /// Caps every request's deadline at this long from its arrival.
    pub const fn max_timeout(mut self, timeout: Duration) -> Self {
        self.max = Some(timeout);
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            config: *self,
        }
    }
}

/// Enforces deadlines; see [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    config: DeadlineLayer,
}

fn exceeded() -> Response {
    Response::error(ServerError::from_code(ErrorCode::DEADLINE_EXCEEDED))
}

/// The future of a [`Deadline`] call: the inner call, bounded by the deadline if there is one.
///
/// The timer is set only once the inner call has to wait: a call that finishes when first
/// polled (most handlers) costs no timer, and carries none (boxed, it adds a pointer to every
/// future of the stack above rather than a whole timer).
#[pin_project]
#[derive(Debug)]
pub struct DeadlineFuture<F> {
    /// `None` once refused: the deadline had already passed.
    #[pin]
    inner: Option<F>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Ok(exceeded()));
        };
        if let Poll::Ready(r) = inner.poll(cx) {
            return Poll::Ready(r);
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| Ok(exceeded()))
    }
}

impl<S> Service<Request> for Deadline<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let now = Instant::now();
        let asked = req.context().deadline();
        let mut deadline = asked.or_else(|| self.config.default.map(|d| deadline_after(now, d)));
        if let Some(max) = self.config.max {
            let cap = deadline_after(now, max);
            deadline = Some(deadline.map_or(cap, |d| d.min(cap)));
        }
        // Written only when changed: a request shared with a clone is copied on write.
        if deadline != asked {
            req.context_mut().set_deadline(deadline);
        }
        if deadline.is_some_and(|d| d <= now) {
            tracing::debug!(method = %req.method(), "refusing a call whose deadline has passed");
            return DeadlineFuture {
                inner: None,
                deadline,
                timer: None,
            };
        }
        DeadlineFuture {
            inner: Some(self.inner.call(req)),
            deadline,
            timer: None,
        }
    }
}
