//! Observability: a tracing span per call, and counters to export.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use pin_project::pin_project;
use rpc_core::{ErrorCode, Request, Response, Service};
use tokio::time::Instant;
use tower::Layer;

/// Counters of the calls a [`TraceLayer`] saw. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    deadline_exceeded: AtomicU64,
    cancelled: AtomicU64,
    latency_us_total: AtomicU64,
    latency_us_max: AtomicU64,
}

/// A reading of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Calls started.
    pub started: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed (refused and timed-out ones included).
    pub failed: u64,
    /// Calls refused as overloaded or rate limited.
    pub refused: u64,
    /// Calls that ran out of time.
    pub deadline_exceeded: u64,
    /// Calls dropped before they finished (cancelled by their caller or an outer layer); they
    /// count as failed. (A call whose handler panicked counts as failed, not as cancelled.)
    pub cancelled: u64,
    /// Calls started and not finished.
    pub in_flight: u64,
    /// The sum of finished calls' latencies, in microseconds (divide by `ok + failed` for the mean).
    pub latency_us_total: u64,
    /// The longest latency seen, in microseconds.
    pub latency_us_max: u64,
}

impl Metrics {
    /// New counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.inner;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (started, ok, failed) = (g(&c.started), g(&c.ok), g(&c.failed));
        MetricsSnapshot {
            started,
            ok,
            failed,
            refused: g(&c.refused),
            deadline_exceeded: g(&c.deadline_exceeded),
            cancelled: g(&c.cancelled),
            in_flight: started.saturating_sub(ok + failed),
            latency_us_total: g(&c.latency_us_total),
            latency_us_max: g(&c.latency_us_max),
        }
    }

    /// Publishes a reading through the [`metrics`] facade (feature `metrics`), for
    /// whatever exporter the program installed: counters `rpc_calls_<name>_total` (`started`,
    /// `ok`, `failed`, `refused`, `deadline_exceeded`, `cancelled`) and
    /// `rpc_calls_latency_us_total`, gauges `rpc_calls_in_flight` and
    /// `rpc_calls_latency_us_max`, each with `labels`. Values are set to the reading's
    /// (`absolute`): publish readings now and then from one task.
    ///
    /// ```
    /// let metrics = rpc_middleware::trace::Metrics::new();
    /// metrics.publish(&[metrics::Label::new("service", "demo")]);
    /// ```
    #[cfg(feature = "metrics")]
    pub fn publish(&self, labels: &[::metrics::Label]) {
        let s = self.snapshot();
        let counters = [
            ("rpc_calls_started_total", "calls started", s.started),
            ("rpc_calls_ok_total", "calls that succeeded", s.ok),
            ("rpc_calls_failed_total", "calls that failed", s.failed),
            (
                "rpc_calls_refused_total",
                "calls refused as overloaded or rate limited",
                s.refused,
            ),
            (
                "rpc_calls_deadline_exceeded_total",
                "calls that ran out of time",
                s.deadline_exceeded,
            ),
            (
                "rpc_calls_cancelled_total",
                "calls dropped before they finished",
                s.cancelled,
            ),
            (
                "rpc_calls_latency_us_total",
                "the sum of finished calls' latencies, in microseconds",
                s.latency_us_total,
            ),
        ];
        for (name, help, value) in counters {
            ::metrics::describe_counter!(name, help);
            ::metrics::counter!(name, labels.iter()).absolute(value);
        }
        let gauges = [
            (
                "rpc_calls_in_flight",
                "calls started and not finished",
                s.in_flight,
            ),
            (
                "rpc_calls_latency_us_max",
                "the longest latency seen, in microseconds",
                s.latency_us_max,
            ),
        ];
        for (name, help, value) in gauges {
            ::metrics::describe_gauge!(name, help);
            ::metrics::gauge!(name, labels.iter()).set(value as f64);
        }
    }

    fn finish(&self, us: u64, code: Option<ErrorCode>) {
        let c = &self.inner;
        c.latency_us_total.fetch_add(us, Ordering::Relaxed);
        // Read first: a new maximum is rare, and a plain load is cheaper than a locked update.
        if us > c.latency_us_max.load(Ordering::Relaxed) {
            c.latency_us_max.fetch_max(us, Ordering::Relaxed);
        }
        match code {
            None => c.ok.fetch_add(1, Ordering::Relaxed),
            Some(code) => {
                match code {
                    ErrorCode::OVERLOADED | ErrorCode::RATE_LIMITED => {
                        c.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    ErrorCode::DEADLINE_EXCEEDED => {
                        c.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                c.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The outcome of a call, as the trace layer reads it from either side's result.
pub trait Outcome {
    /// `None` for success, else the error's code (`INTERNAL_ERROR` for failures without one).
    fn code(&self) -> Option<ErrorCode>;
}

impl<E> Outcome for Result<Response, E> {
    fn code(&self) -> Option<ErrorCode> {
        match self {
            Ok(r) => r.result().err().map(|e| e.code()),
            Err(_) => Some(ErrorCode::INTERNAL_ERROR),
        }
    }
}

impl Outcome for Result<rpc_core::Payload, rpc_core::Error> {
    fn code(&self) -> Option<ErrorCode> {
        match self {
            Ok(_) => None,
            Err(e) if e.is_timeout() => Some(ErrorCode::DEADLINE_EXCEEDED),
            Err(e) if e.is_overloaded() => Some(ErrorCode::OVERLOADED),
            Err(e) => Some(e.code().unwrap_or(ErrorCode::INTERNAL_ERROR)),
        }
    }
}

/// Records a call dropped before it finished: cancelled, or failed if it panicked.
struct Unfinished {
    metrics: Option<Metrics>,
    start: Instant,
    /// Set while the inner service's `call` or its future's `poll` runs: still set when dropped
    /// means that code panicked. (`std::thread::panicking` does not tell: a caller that catches
    /// the panic, as `Serve` does, drops the future after the unwinding has ended.)
    running: bool,
}

impl Unfinished {
    /// Counts the call as finished with `code`; returns its latency in microseconds.
    fn finish(&mut self, code: Option<ErrorCode>) -> u64 {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(m) = self.metrics.take() {
            m.finish(us, code);
        }
        us
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            if !self.running {
                m.inner.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            self.finish(Some(ErrorCode::INTERNAL_ERROR));
        }
    }
}

/// Wraps each call in a `tracing` span and counts it in [`Metrics`].
///
/// The span is `rpc` at info level, with `method`, `peer` (the context's, `None` for calls that
/// have none, as on a client), `id` (the call's number among those these metrics counted, from 0:
/// unique per [`Metrics`], to tell calls apart in logs; not the codec's request id, which the
/// transport keeps), and at the end `outcome` (`ok`, or the error code) and `latency_us`.
/// Where the span is disabled (a subscriber that records only warnings, say) the layer only counts.
///
/// ```
/// use rpc_middleware::trace::{Metrics, TraceLayer};
/// let metrics = Metrics::new();
/// let layer = TraceLayer::new(metrics.clone());
/// assert_eq!(metrics.snapshot().started, 0);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct TraceLayer {
    metrics: Metrics,
}

impl TraceLayer {
    /// A layer counting into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Traces and counts calls; see [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    metrics: Metrics,
}

/// The future of a [`Trace`] call: the inner call inside its span, counted when it ends.
#[pin_project]
pub struct TraceFuture<F> {
    #[pin]
    inner: F,
    /// The call's span; `None` where it is disabled, so a disabled span costs no entering and
    /// leaving at every poll.
    span: Option<tracing::Span>,
    /// The metrics while the call runs; counts it as cancelled if dropped before it ends.
    unfinished: Unfinished,
}

impl<F> std::fmt::Debug for TraceFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<T, E>>,
    Result<T, E>: Outcome,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(tracing::Span::enter);
        this.unfinished.running = true;
        let poll = this.inner.poll(cx);
        this.unfinished.running = false;
        let result = std::task::ready!(poll);
        let code = result.code();
        let latency_us = this.unfinished.finish(code);
        if let Some(span) = this.span.as_ref() {
            span.record("latency_us", latency_us);
            match code {
                None => span.record("outcome", "ok"),
                Some(c) => span.record("outcome", c.code()),
            };
        }
        Poll::Ready(result)
    }
}

impl<S> Service<Request> for Trace<S>
where
    S: Service<Request>,
    Result<S::Response, S::Error>: Outcome,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let id = self.metrics.inner.started.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "rpc",
            method = %req.method(),
            peer = tracing::field::debug(req.context().peer()),
            id,
            outcome = tracing::field::Empty,
            latency_us = tracing::field::Empty,
        );
        // Made before the inner call runs, so that a call panicking in it is counted too.
        let mut unfinished = Unfinished {
            metrics: Some(self.metrics.clone()),
            start: Instant::now(),
            running: true,
        };
        let span = (!span.is_disabled()).then_some(span);
        let inner = {
            let _entered = span.as_ref().map(tracing::Span::enter);
            self.inner.call(req)
        };
        unfinished.running = false;
        TraceFuture {
            inner,
            span,
            unfinished,
        }
    }
}
