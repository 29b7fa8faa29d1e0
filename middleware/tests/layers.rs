//! Each layer's semantics, against `tower_test` mocks (or a counting `service_fn` where only the
//! number of calls matters), with tokio's paused clock wherever a layer waits on tokio time.
//!
//! Server-side stacks answer `rpc_core::Response`s (a refusal is an answer); client-side stacks
//! fail with `rpc_core::Error` (a refusal is `Error::Rejected`). The mock's own error type is a
//! `BoxError`; client-side stacks put `map_err(Error::from_boxed)` under the layer under test, as a
//! transport's channel would fail with an `Error`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rpc_codecs::msgpack::MsgPack;
use rpc_core::{
    BoxError, Context, Error, ErrorCode, Payload, Peer, Request, Response, Router, ServerError,
};
use rpc_middleware::deadline::{DeadlineLayer, SetDeadlineLayer};
use rpc_middleware::limit::{KeyedConcurrencyLimitLayer, RateLimitLayer};
use rpc_middleware::retry::RetryPolicy;
use rpc_middleware::trace::{Metrics, MetricsSnapshot, TraceLayer};
use rpc_transports::serve::Serve;
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::retry::RetryLayer;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

// --- helpers -------------------------------------------------------------------------------------

/// A router whose `div` handler checks its argument before it makes its future: `div` of 0
/// panics inside the service's `call` (which [`Serve`] catches, answering an internal error).
fn dividing_router() -> Router {
    Router::new().route("div", |n: i64| {
        let q = 100 / n;
        async move { q }
    })
}

/// A call to `div` of `n` from 127.0.0.1:`port`.
fn div_from(n: i64, port: u16) -> Request {
    Request::new("div", Payload::encode(&MSGPACK, &(n,)).unwrap()).with_context(Context::from_peer(
        Peer::Socket(SocketAddr::from(([127, 0, 0, 1], port))),
    ))
}

static MSGPACK: MsgPack = MsgPack;

/// An encoded empty argument list.
fn args() -> Payload {
    Payload::new(Bytes::from_static(b"\x90"), &MSGPACK)
}

/// A call to `method` without a peer or a deadline.
fn req(method: &'static str) -> Request {
    Request::new(method, args())
}

/// A call to `method` from 127.0.0.1:`port`.
fn req_from(method: &'static str, port: u16) -> Request {
    req(method).with_context(Context::from_peer(Peer::Socket(SocketAddr::from((
        [127, 0, 0, 1],
        port,
    )))))
}

/// A call to `method` due `timeout` from now.
fn req_within(method: &'static str, timeout: Duration) -> Request {
    let mut r = req(method);
    r.context_mut().set_timeout(timeout);
    r
}

/// An encoded `nil`.
fn nil() -> Payload {
    Payload::new(Bytes::from_static(b"\xc0"), &MSGPACK)
}

fn ok() -> Response {
    Response::ok(nil())
}

fn fail(code: ErrorCode) -> Response {
    Response::error(ServerError::from_code(code))
}

/// The error code of an answer, `None` for success.
fn code_of(r: &Response) -> Option<ErrorCode> {
    r.result().err().map(ServerError::code)
}

/// Whether `service` is ready now (the mocks are, unless told otherwise).
fn ready<S: Service<Request>>(service: &mut mock::Spawn<S>) -> bool
where
    S::Error: std::fmt::Debug,
{
    matches!(
        service.poll_ready::<Request>(),
        std::task::Poll::Ready(Ok(()))
    )
}

/// Calls a spawned service after checking it is ready.
fn call<S: Service<Request>>(service: &mut mock::Spawn<S>, r: Request) -> S::Future
where
    S::Error: std::fmt::Debug,
{
    assert!(ready(service), "the service is ready");
    service.call(r)
}

/// Whether the mock has received nothing more.
fn nothing_more<T, U>(handle: &mut mock::Handle<T, U>) -> bool {
    handle.poll_request().is_pending()
}

/// Polls a future once, without waiting.
fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    futures::FutureExt::now_or_never(f)
}

// --- DeadlineLayer -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn deadline_refuses_an_expired_call_without_running_it() {
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(DeadlineLayer::new());
    let mut r = req("m");
    r.context_mut().set_deadline(Some(Instant::now()));
    let answer = now_or_never(call(&mut service, r))
        .expect("answered at once")
        .unwrap();
    assert_eq!(code_of(&answer), Some(ErrorCode::DEADLINE_EXCEEDED));
    assert!(nothing_more(&mut handle), "the inner service never saw it");

    // One with time left goes through.
    let fut = call(&mut service, req_within("m", Duration::from_secs(1)));
    let (_, send) = handle.next_request().await.expect("passed on");
    send.send_response(ok());
    assert_eq!(code_of(&fut.await.unwrap()), None);
}

#[tokio::test(start_paused = true)]
async fn deadline_drops_a_handler_still_running_and_answers_exceeded() {
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(DeadlineLayer::new());
    let start = Instant::now();
    let fut = call(&mut service, req_within("m", Duration::from_millis(100)));
    let (seen, _never_answered) = handle.next_request().await.expect("passed on");
    assert_eq!(
        seen.context().deadline(),
        Some(start + Duration::from_millis(100))
    );
    let answer = fut.await.unwrap();
    assert_eq!(code_of(&answer), Some(ErrorCode::DEADLINE_EXCEEDED));
    assert_eq!(start.elapsed(), Duration::from_millis(100));

    // The handler's future is dropped at the deadline, not left running.
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let handler = {
        let (dropped, finished) = (dropped.clone(), finished.clone());
        service_fn(move |_: Request| {
            let guard = Flag(dropped.clone());
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                finished.store(true, Ordering::SeqCst);
                drop(guard);
                Ok::<_, Infallible>(ok())
            }
        })
    };
    let start = Instant::now();
    let answer = DeadlineLayer::new()
        .layer(handler)
        .oneshot(req_within("m", Duration::from_millis(250)))
        .await
        .unwrap();
    assert_eq!(code_of(&answer), Some(ErrorCode::DEADLINE_EXCEEDED));
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert!(dropped.load(Ordering::SeqCst), "the handler was cancelled");
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn deadline_default_applies_only_to_calls_without_one() {
    let layer = DeadlineLayer::new().default_timeout(Duration::from_secs(1));
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer);
    let now = Instant::now();

    // No deadline: it gets the default.
    let fut = call(&mut service, req("m"));
    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(
        seen.context().deadline(),
        Some(now + Duration::from_secs(1))
    );
    send.send_response(ok());
    fut.await.unwrap();

    // A later deadline is kept (the default does not shorten it), and so is an earlier one.
    for timeout in [Duration::from_secs(5), Duration::from_millis(100)] {
        let fut = call(&mut service, req_within("m", timeout));
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.context().deadline(), Some(now + timeout));
        send.send_response(ok());
        fut.await.unwrap();
    }

    // Without a default, a call without a deadline runs unbounded.
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(DeadlineLayer::new());
    let fut = call(&mut service, req("m"));
    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(seen.context().deadline(), None);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    send.send_response(ok());
    assert_eq!(code_of(&fut.await.unwrap()), None);
}

#[tokio::test(start_paused = true)]
async fn deadline_max_caps_every_call() {
    let layer = DeadlineLayer::new().max_timeout(Duration::from_secs(1));
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer);
    let now = Instant::now();
    for (r, expected) in [
        (
            req_within("m", Duration::from_secs(5)),
            Duration::from_secs(1),
        ),
        (req("m"), Duration::from_secs(1)),
        (
            req_within("m", Duration::from_millis(100)),
            Duration::from_millis(100),
        ),
    ] {
        let fut = call(&mut service, r);
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.context().deadline(), Some(now + expected));
        send.send_response(ok());
        fut.await.unwrap();
    }

    // And enforces the cap: a call asking for 5 s is cut at 1 s.
    let fut = call(&mut service, req_within("m", Duration::from_secs(5)));
    let (_, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(
        code_of(&fut.await.unwrap()),
        Some(ErrorCode::DEADLINE_EXCEEDED)
    );
    assert_eq!(now.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn set_deadline_sets_one_but_never_extends_an_earlier_one() {
    let layer = SetDeadlineLayer::new(Duration::from_secs(1));
    let (mut service, mut handle) = mock::spawn_layer::<Request, Payload, _>(layer);
    let now = Instant::now();
    for (r, expected) in [
        (req("m"), Duration::from_secs(1)),
        (
            req_within("m", Duration::from_millis(100)),
            Duration::from_millis(100),
        ),
        (
            req_within("m", Duration::from_secs(5)),
            Duration::from_secs(1),
        ),
    ] {
        let fut = call(&mut service, r);
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.context().deadline(), Some(now + expected));
        send.send_response(nil());
        fut.await.unwrap();
    }
}

// --- RetryPolicy ---------------------------------------------------------------------------------

/// A fast policy: backoff of 1 to 2 ms without jitter.
fn fast() -> RetryPolicy {
    RetryPolicy::new().backoff(Duration::from_millis(1), Duration::from_millis(2), 0.0)
}

/// Sends `r` through `policy` to a mock whose `n`th attempt (from 0) fails with `script(n)`, or
/// succeeds where that is `None`. Returns the attempts made and the outcome.
async fn attempts(
    policy: RetryPolicy,
    r: Request,
    script: impl Fn(usize) -> Option<Error>,
) -> (usize, Result<Payload, Error>) {
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Payload, _>(RetryLayer::new(policy));
    let fut = call(&mut service, r);
    tokio::pin!(fut);
    let mut n = 0;
    loop {
        tokio::select! {
            result = &mut fut => {
                // Nothing is sent once the call is over.
                tokio::task::yield_now().await;
                assert!(nothing_more(&mut handle), "an attempt after the call ended");
                return (n, result.map_err(Error::from_boxed));
            }
            Some((_, send)) = handle.next_request() => {
                match script(n) {
                    Some(e) => send.send_error(e),
                    None => send.send_response(nil()),
                }
                n += 1;
            }
        }
    }
}

fn rejected(code: ErrorCode) -> Error {
    Error::Rejected(ServerError::from_code(code))
}

fn server(code: ErrorCode) -> Error {
    Error::Server(ServerError::from_code(code))
}

/// A peer's refusal, as rpc-stack servers answer one (the call did not run).
fn refused(code: ErrorCode) -> Error {
    Error::Server(ServerError::refused(code, "refused"))
}

fn io_error(kind: io::ErrorKind) -> Error {
    Error::Transport(io::Error::from(kind))
}

#[tokio::test(start_paused = true)]
async fn retry_retries_what_provably_did_not_run() {
    let cases: [(&str, fn() -> Error); 6] = [
        ("rejected", || rejected(ErrorCode::RATE_LIMITED)),
        ("overloaded", || Error::Overloaded),
        ("server overloaded", || refused(ErrorCode::OVERLOADED)),
        ("server rate limited", || refused(ErrorCode::RATE_LIMITED)),
        ("connection refused", || {
            io_error(io::ErrorKind::ConnectionRefused)
        }),
        ("tower load shed", || {
            Error::from_boxed(Box::new(tower::load_shed::error::Overloaded::new()))
        }),
    ];
    for (name, error) in cases {
        let (n, result) = attempts(fast(), req("m"), |n| (n == 0).then(error)).await;
        assert_eq!(n, 2, "{name}: retried once");
        assert!(result.is_ok(), "{name}: {result:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_leaves_what_may_have_run_alone_unless_idempotent() {
    let cases: [(&str, fn() -> Error); 5] = [
        ("timeout", || Error::Timeout),
        ("reset", || io_error(io::ErrorKind::ConnectionReset)),
        ("invalid params", || server(ErrorCode::INVALID_PARAMS)),
        ("deadline exceeded", || server(ErrorCode::DEADLINE_EXCEEDED)),
        // Another server's -32000, its first server-defined code, without the refusal's mark:
        // any error of a call that may have run.
        ("-32000 without the mark", || server(ErrorCode::OVERLOADED)),
    ];
    for (name, error) in cases {
        let (n, result) = attempts(fast(), req("m"), |n| (n == 0).then(error)).await;
        assert_eq!(n, 1, "{name}: not retried");
        assert!(result.is_err(), "{name}");
    }

    // Marked idempotent, a call that may have been lost is retried; an answer is still final.
    let idempotent = || fast().idempotent(["m"]);
    let (n, result) = attempts(idempotent(), req("m"), |n| (n == 0).then(|| Error::Timeout)).await;
    assert_eq!((n, result.is_ok()), (2, true), "timeout, idempotent");
    let (n, result) = attempts(idempotent(), req("m"), |n| {
        (n == 0).then(|| io_error(io::ErrorKind::ConnectionReset))
    })
    .await;
    assert_eq!((n, result.is_ok()), (2, true), "reset, idempotent");
    let (n, result) = attempts(idempotent(), req("m"), |n| {
        (n == 0).then(|| server(ErrorCode::INVALID_PARAMS))
    })
    .await;
    assert_eq!(n, 1, "invalid params is an answer, idempotent or not");
    assert!(result.unwrap_err().is_invalid_params());
    // Only the marked method.
    let (n, _) = attempts(idempotent(), req("other"), |n| {
        (n == 0).then(|| Error::Timeout)
    })
    .await;
    assert_eq!(n, 1, "another method is not idempotent");

    // A per-try `tower::timeout` under the retry counts as a timeout.
    let (n, result) = attempts(idempotent(), req("m"), |n| {
        (n == 0).then(|| Error::from_boxed(Box::new(tower::timeout::error::Elapsed::new())))
    })
    .await;
    assert_eq!((n, result.is_ok()), (2, true), "elapsed, idempotent");
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_max_attempts() {
    for max in [1, 3, 7] {
        let (n, result) = attempts(fast().max_attempts(max), req("m"), |_| {
            Some(Error::Overloaded)
        })
        .await;
        assert_eq!(n, max as usize);
        assert!(result.unwrap_err().is_overloaded());
    }
    // The default is 5.
    let (n, _) = attempts(fast(), req("m"), |_| Some(Error::Overloaded)).await;
    assert_eq!(n, 5);
}

/// A per-try deadline set inside the retries: each attempt gets its own, later deadline, and the
/// copy the retry layer keeps (and resends) stays without one.
#[tokio::test(start_paused = true)]
async fn a_per_try_deadline_inside_the_retries_is_each_attempts_own() {
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(fast().idempotent(["m"])))
        .layer(SetDeadlineLayer::new(Duration::from_millis(200)))
        .into_inner();
    let (mut service, mut handle) = mock::spawn_layer::<Request, Payload, _>(stack);
    let start = Instant::now();
    let fut = call(&mut service, req("m"));
    tokio::pin!(fut);
    let mut deadlines = Vec::new();
    loop {
        tokio::select! {
            result = &mut fut => {
                result.unwrap();
                break;
            }
            Some((seen, send)) = handle.next_request() => {
                deadlines.push(seen.context().deadline().expect("a per-try deadline"));
                if deadlines.len() < 3 {
                    send.send_error(Error::Timeout);
                } else {
                    send.send_response(nil());
                }
                // The retry layer's backoff sleeps in tokio time: let it pass.
                tokio::time::advance(Duration::from_millis(5)).await;
            }
        }
    }
    assert_eq!(deadlines.len(), 3);
    assert_eq!(deadlines[0], start + Duration::from_millis(200));
    assert!(
        deadlines[0] < deadlines[1] && deadlines[1] < deadlines[2],
        "each attempt's deadline is set from its own start: {deadlines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_does_not_retry_past_the_deadline() {
    // Each attempt fails after 8 ms; the call has 20 ms: attempts start at about 0, 9 and 18 ms,
    // and none after the deadline, far below max_attempts.
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Payload, _>(RetryLayer::new(fast().max_attempts(100)));
    let start = Instant::now();
    let deadline = start + Duration::from_millis(20);
    let fut = call(&mut service, req_within("m", Duration::from_millis(20)));
    tokio::pin!(fut);
    let mut starts = Vec::new();
    let result = loop {
        tokio::select! {
            r = &mut fut => break r,
            Some((_, send)) = handle.next_request() => {
                starts.push(start.elapsed());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(8)).await;
                    send.send_error(Error::Overloaded);
                });
            }
        }
    };
    assert!(result.is_err());
    assert!(
        (2..=3).contains(&starts.len()),
        "attempts started at {starts:?}"
    );
    assert!(
        starts.iter().all(|t| start + *t < deadline),
        "an attempt started at or after the deadline: {starts:?}"
    );
    assert!(Instant::now() <= deadline + Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn retry_makes_no_attempt_once_the_backoff_reaches_the_deadline() {
    // Backoff of 50 ms, deadline in 10 ms: the first failure must be final.
    let policy =
        RetryPolicy::new().backoff(Duration::from_millis(50), Duration::from_millis(50), 0.0);
    let (n, result) = attempts(policy, req_within("m", Duration::from_millis(10)), |_| {
        Some(Error::Overloaded)
    })
    .await;
    assert!(result.is_err());
    assert_eq!(n, 1, "an attempt was made at the deadline");
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially() {
    let policy = RetryPolicy::new()
        .backoff(Duration::from_millis(10), Duration::from_millis(50), 0.0)
        .max_attempts(6);
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Payload, _>(RetryLayer::new(policy));
    let start = Instant::now();
    let fut = call(&mut service, req("m"));
    tokio::pin!(fut);
    let mut starts = Vec::new();
    loop {
        tokio::select! {
            r = &mut fut => { assert!(r.is_err()); break; }
            Some((_, send)) = handle.next_request() => {
                starts.push(start.elapsed().as_millis());
                send.send_error(Error::Overloaded);
            }
        }
    }
    // Waits of 10, 20, 40, then capped at 50.
    assert_eq!(starts, [0, 10, 30, 70, 120, 170]);
}

#[tokio::test(start_paused = true)]
async fn retry_backoff_jitter_is_a_fraction_of_the_wait() {
    // Documented: each wait is jittered by up to `jitter` (here 50%) of itself, so the first wait
    // of 10 ms is between 10 and 15 ms.
    for _ in 0..20 {
        let policy = RetryPolicy::new()
            .backoff(Duration::from_millis(10), Duration::from_secs(10), 0.5)
            .max_attempts(2);
        let (mut service, mut handle) =
            mock::spawn_layer::<Request, Payload, _>(RetryLayer::new(policy));
        let start = Instant::now();
        let fut = tokio::spawn(call(&mut service, req("m")));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(Error::Overloaded);
        let (_, send) = handle.next_request().await.unwrap();
        let waited = start.elapsed();
        send.send_response(nil());
        fut.await.unwrap().unwrap();
        assert!(
            waited >= Duration::from_millis(10) && waited <= Duration::from_millis(15),
            "waited {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_jitter_differs_between_calls() {
    // The default policy jitters each wait by up to 50%: eight calls failing at the same moment
    // should not all retry at the same moment (tokio's timer has 1 ms steps: waits of 10 to 15 ms
    // fall in about 6 of them).
    const CALLS: usize = 8;
    let (service, mut handle) = mock::pair::<Request, Payload>();
    let mut service = RetryLayer::new(RetryPolicy::new().max_attempts(2)).layer(service);
    let start = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        calls.push(tokio::spawn(service.ready().await.unwrap().call(req("m"))));
    }
    for _ in 0..CALLS {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(Error::Overloaded);
    }
    let mut retried_at = Vec::new();
    for _ in 0..CALLS {
        let (_, send) = handle.next_request().await.unwrap();
        retried_at.push(start.elapsed());
        send.send_response(nil());
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert!(
        retried_at.iter().any(|t| *t != retried_at[0]),
        "all retried at {retried_at:?}"
    );
}

/// Sends `n` calls, one after another, through `retry` to a service that fails every call with
/// `error` (or succeeds, for `None`); returns how many calls the service saw.
async fn through_budget(policy: &RetryPolicy, n: usize, error: Option<fn() -> Error>) -> usize {
    let seen = Arc::new(AtomicUsize::new(0));
    let inner = {
        let seen = seen.clone();
        service_fn(move |_: Request| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                match error {
                    Some(e) => Err(e()),
                    None => Ok(nil()),
                }
            }
        })
    };
    let mut service = RetryLayer::new(policy.clone()).layer(inner);
    for _ in 0..n {
        let result = service.ready().await.unwrap().call(req("m")).await;
        assert_eq!(result.is_ok(), error.is_none());
    }
    seen.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn retry_budget_caps_retries_under_total_failure() {
    // 10% of successes, at least 1 a second over 10 s: a reserve of 10 retries, and nothing
    // earned since nothing succeeds.
    let policy = RetryPolicy::with_budget(TpsBudget::new(Duration::from_secs(10), 1, 0.1))
        .backoff(Duration::from_millis(1), Duration::from_millis(2), 0.0)
        .max_attempts(5);
    let seen = through_budget(&policy, 100, Some(|| Error::Overloaded)).await;
    let retries = seen - 100;
    assert!(
        (5..=20).contains(&retries),
        "{retries} retries for 100 failing calls (without a budget: 400)"
    );
    // The budget is shared by every clone of the policy: it is spent now.
    let seen = through_budget(&policy, 100, Some(|| Error::Overloaded)).await;
    assert!(seen - 100 <= 2, "{} more retries", seen - 100);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_earns_its_ratio_from_successes() {
    let policy = RetryPolicy::with_budget(TpsBudget::new(Duration::from_secs(10), 1, 0.1))
        .backoff(Duration::from_millis(1), Duration::from_millis(2), 0.0)
        .max_attempts(5);
    assert_eq!(through_budget(&policy, 200, None).await, 200);
    // 200 successes earn 20 retries, on top of the reserve of 10.
    let seen = through_budget(&policy, 100, Some(|| Error::Overloaded)).await;
    let retries = seen - 100;
    assert!(
        (25..=35).contains(&retries),
        "{retries} retries after 200 successes"
    );
}

// --- RateLimitLayer ------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_per_peer_refuses_one_peer_and_serves_another_server_side() {
    let layer = RateLimitLayer::per_peer(3, Duration::from_secs(60));
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer.clone());
    let (a, b) = (1000, 2000);

    for _ in 0..3 {
        let fut = call(&mut service, req_from("m", a));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(ok());
        assert_eq!(code_of(&fut.await.unwrap()), None);
    }
    // A is over its quota: answered RATE_LIMITED with a hint, never passed on.
    let refused = now_or_never(call(&mut service, req_from("m", a)))
        .expect("refused at once")
        .unwrap();
    let e = refused.result().unwrap_err();
    assert_eq!(e.code(), ErrorCode::RATE_LIMITED);
    let hint = e.data().and_then(|d| d["retry_after_ms"].as_u64());
    assert!(
        hint.is_some_and(|ms| ms > 0 && ms <= 20_000),
        "retry_after_ms: {:?}",
        e.data()
    );
    assert!(nothing_more(&mut handle));

    // B is served at the same moment.
    let fut = call(&mut service, req_from("m", b));
    let (seen, send) = handle.next_request().await.expect("B passed on");
    assert_eq!(seen.context().peer_addr().unwrap().port(), b);
    send.send_response(ok());
    assert_eq!(code_of(&fut.await.unwrap()), None);
    assert_eq!(layer.keys(), 2);
}

/// A call to `method` from `ip`:`port`.
fn req_from_ip(method: &'static str, ip: [u8; 4], port: u16) -> Request {
    req(method).with_context(Context::from_peer(Peer::Socket(SocketAddr::from((
        ip, port,
    )))))
}

#[tokio::test]
async fn rate_limit_per_ip_counts_a_hosts_ports_together() {
    let layer = RateLimitLayer::per_ip(2, Duration::from_secs(60));
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer.clone());
    // Two connections of one host, then a third: its budget is spent.
    for port in [1000, 1001] {
        let fut = call(&mut service, req_from_ip("m", [127, 0, 0, 1], port));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(ok());
        assert_eq!(code_of(&fut.await.unwrap()), None);
    }
    let refused = now_or_never(call(&mut service, req_from_ip("m", [127, 0, 0, 1], 1002)))
        .expect("refused at once")
        .unwrap();
    assert_eq!(code_of(&refused), Some(ErrorCode::RATE_LIMITED));
    assert!(nothing_more(&mut handle));
    // Another host is served.
    let fut = call(&mut service, req_from_ip("m", [127, 0, 0, 2], 1000));
    let (_, send) = handle.next_request().await.expect("passed on");
    send.send_response(ok());
    assert_eq!(code_of(&fut.await.unwrap()), None);
    assert_eq!(layer.keys(), 2);
}

#[tokio::test]
async fn rate_limit_refuses_client_side_as_rejected() {
    let (mut service, mut handle) = mock::spawn_layer::<Request, Payload, _>(
        ServiceBuilder::new()
            .layer(RateLimitLayer::per_peer(2, Duration::from_secs(60)))
            .map_err(Error::from_boxed),
    );
    for _ in 0..2 {
        let fut = call(&mut service, req_from("m", 1000));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(nil());
        fut.await.unwrap();
    }
    let e = now_or_never(call(&mut service, req_from("m", 1000)))
        .expect("refused at once")
        .unwrap_err();
    assert!(e.is_overloaded(), "{e:?}");
    match &e {
        Error::Rejected(s) => {
            assert_eq!(s.code(), ErrorCode::RATE_LIMITED);
            assert!(s
                .data()
                .is_some_and(|d| d["retry_after_ms"].as_u64() > Some(0)));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(nothing_more(&mut handle), "a refused call is never sent");
    // Another peer has its own quota.
    let fut = call(&mut service, req_from("m", 2000));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(nil());
    fut.await.unwrap();

    // And with a BoxError stack (tower layers inside), the refusal is still an `Error::Rejected`.
    let (mut service, _handle) = mock::spawn_layer::<Request, Payload, _>(RateLimitLayer::global(
        1,
        Duration::from_secs(60),
    ));
    let _first = call(&mut service, req("m"));
    let e: BoxError = now_or_never(call(&mut service, req("m")))
        .expect("refused at once")
        .unwrap_err();
    let e = Error::from_boxed(e);
    assert!(
        matches!(e, Error::Rejected(_)) && e.is_overloaded(),
        "{e:?}"
    );
}

#[tokio::test]
async fn rate_limit_global_counts_every_peer() {
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(
        RateLimitLayer::global(3, Duration::from_secs(60)),
    );
    for port in [1, 2, 3] {
        let fut = call(&mut service, req_from("m", port));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(ok());
        fut.await.unwrap();
    }
    for port in [1, 4] {
        let refused = now_or_never(call(&mut service, req_from("m", port)))
            .unwrap()
            .unwrap();
        assert_eq!(code_of(&refused), Some(ErrorCode::RATE_LIMITED));
    }
}

// The rate limiter reads governor's clock (real time), so waiting is tested in real time, with
// short periods: tokio's paused clock would race ahead of it.
#[tokio::test]
async fn rate_limit_wait_mode_waits_for_a_turn_within_the_deadline() {
    // One call per 100 ms.
    let layer = RateLimitLayer::global(1, Duration::from_millis(100)).wait();
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer);
    let answer_all = tokio::spawn(async move {
        let mut n = 0;
        while let Some((_, send)) = handle.next_request().await {
            send.send_response(ok());
            n += 1;
        }
        n
    });

    let start = std::time::Instant::now();
    call(&mut service, req("m")).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(50));

    // The next waits for its turn, then runs.
    let start = std::time::Instant::now();
    let answer = call(&mut service, req("m")).await.unwrap();
    assert_eq!(code_of(&answer), None);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(60) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );

    // One whose deadline comes before its turn is refused at once, not after waiting.
    let start = std::time::Instant::now();
    let answer = call(&mut service, req_within("m", Duration::from_millis(20)))
        .await
        .unwrap();
    assert_eq!(code_of(&answer), Some(ErrorCode::RATE_LIMITED));
    assert!(start.elapsed() < Duration::from_millis(50));

    // One whose deadline allows the wait runs.
    let answer = call(&mut service, req_within("m", Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(code_of(&answer), None);

    drop(service);
    assert_eq!(answer_all.await.unwrap(), 3, "the refused call never ran");
}

/// A server-side service that answers at once.
fn instant(
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    service_fn(|_: Request| async { Ok::<_, Infallible>(ok()) })
}

#[tokio::test]
async fn rate_limit_wait_mode_holds_nothing_of_the_inner_service_while_it_waits() {
    // One place in all below the per-peer rate limit: a call waiting for its peer's turn must
    // not hold it.
    let stack = ServiceBuilder::new()
        .layer(RateLimitLayer::per_peer(1, Duration::from_secs(10)).wait())
        .load_shed()
        .concurrency_limit(1)
        .service(service_fn(|_: Request| async { Ok::<_, Infallible>(ok()) }));
    let (mut a, mut b) = (stack.clone(), stack);
    let r = a
        .ready()
        .await
        .unwrap()
        .call(req_from("m", 1))
        .await
        .unwrap();
    assert_eq!(code_of(&r), None);
    // Peer 1's second call waits about 10 s for its turn.
    let waiting = tokio::spawn(a.ready().await.unwrap().call(req_from("m", 1)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    // Peer 2 has a turn, and the place is free.
    let r = b
        .ready()
        .await
        .unwrap()
        .call(req_from("m", 2))
        .await
        .unwrap();
    assert_eq!(code_of(&r), None);
    waiting.abort();
}

#[tokio::test]
async fn rate_limit_evicts_idle_keys() {
    // 10 per 100 ms each: a key that made one call is back at a full burst after 10 ms.
    let layer = RateLimitLayer::per_peer(10, Duration::from_millis(100)).max_keys(4);
    let mut service = layer.layer(instant());
    for port in 1..=5 {
        let answer = service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", port))
            .await
            .unwrap();
        assert_eq!(code_of(&answer), None);
    }
    assert_eq!(layer.keys(), 5);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Past max_keys, the next check sweeps the idle ones.
    let answer = service
        .ready()
        .await
        .unwrap()
        .call(req_from("m", 6))
        .await
        .unwrap();
    assert_eq!(code_of(&answer), None);
    assert_eq!(layer.keys(), 1, "only the newest key is left");

    let layer = RateLimitLayer::per_peer(10, Duration::from_millis(100));
    let mut service = layer.layer(instant());
    for port in 1..=100 {
        service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", port))
            .await
            .unwrap();
    }
    assert_eq!(layer.keys(), 100);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Without max_keys, idle keys go within 1024 lookups: calls whose key is not the one the
    // instance saw last (only those can add keys).
    for i in 0..1024 {
        service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", 7777 + i % 2))
            .await
            .unwrap();
    }
    assert!(layer.keys() <= 2, "{} keys left", layer.keys());
}

/// Calls `service` once with a request from `port` and gives the answer's error code.
async fn code_from<S>(service: &mut S, port: u16) -> Option<ErrorCode>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let answer = service.ready().await.unwrap();
    code_of(&answer.call(req_from("m", port)).await.unwrap())
}

#[tokio::test]
async fn rate_limit_instances_share_a_key_after_its_state_was_evicted() {
    // 2 per 200 ms: a key that made one call is evicted 200 ms later.
    let layer = RateLimitLayer::per_peer(2, Duration::from_millis(200));
    let mut a = layer.layer(instant());
    assert_eq!(code_from(&mut a, 1).await, None);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Another instance's 1024 lookups (alternating keys) evict the idle key 1, which `a` still
    // holds as its last.
    let mut other = layer.layer(instant());
    for i in 0..1024 {
        code_from(&mut other, 2 + i % 2).await;
    }
    assert_eq!(layer.keys(), 2, "key 1 was evicted");
    // A third instance spends key 1's fresh burst; `a` sees the same state, not its old one.
    let mut b = layer.layer(instant());
    assert_eq!(code_from(&mut b, 1).await, None);
    assert_eq!(code_from(&mut b, 1).await, None);
    assert_eq!(code_from(&mut a, 1).await, Some(ErrorCode::RATE_LIMITED));
}

#[tokio::test]
async fn rate_limit_full_of_busy_keys_refuses_new_ones() {
    let layer = RateLimitLayer::per_peer(1, Duration::from_secs(60)).max_keys(2);
    let mut service = layer.layer(instant());
    let mut codes = Vec::new();
    for port in 1..=5 {
        let answer = service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", port))
            .await
            .unwrap();
        codes.push(code_of(&answer));
    }
    // The check comes before the key is added, so one key past the limit gets in.
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            Some(ErrorCode::RATE_LIMITED),
            Some(ErrorCode::RATE_LIMITED)
        ]
    );
    assert!(layer.keys() <= 3);
}

// --- KeyedConcurrencyLimitLayer ------------------------------------------------------------------

#[tokio::test]
async fn keyed_concurrency_refuses_the_extra_call_of_one_peer_and_serves_another() {
    let layer = KeyedConcurrencyLimitLayer::per_peer(2);
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer.clone());
    let (a, b) = (1000, 2000);

    let a1 = call(&mut service, req_from("m", a));
    let (_, send_a1) = handle.next_request().await.unwrap();
    let a2 = call(&mut service, req_from("m", a));
    let (_, send_a2) = handle.next_request().await.unwrap();

    // The third at once from A is refused, and never passed on.
    let refused = now_or_never(call(&mut service, req_from("m", a)))
        .expect("refused at once")
        .unwrap();
    let e = refused.result().unwrap_err();
    assert_eq!(e.code(), ErrorCode::OVERLOADED);
    assert!(nothing_more(&mut handle));

    // B is served meanwhile.
    let b1 = call(&mut service, req_from("m", b));
    let (seen, send_b1) = handle.next_request().await.expect("B passed on");
    assert_eq!(seen.context().peer_addr().unwrap().port(), b);
    assert_eq!(layer.keys(), 2);

    // A finished call frees a slot.
    send_a1.send_response(ok());
    assert_eq!(code_of(&a1.await.unwrap()), None);
    let a3 = call(&mut service, req_from("m", a));
    let (_, send_a3) = handle.next_request().await.expect("a slot was free");

    for send in [send_a2, send_a3, send_b1] {
        send.send_response(ok());
    }
    for fut in [a2, a3, b1] {
        assert_eq!(code_of(&fut.await.unwrap()), None);
    }
}

#[tokio::test]
async fn keyed_concurrency_per_ip_counts_a_hosts_ports_together() {
    let layer = KeyedConcurrencyLimitLayer::per_ip(1);
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(layer);
    let first = call(&mut service, req_from_ip("m", [127, 0, 0, 1], 1000));
    let (_, send) = handle.next_request().await.unwrap();
    // The same host on another port is refused at once.
    let refused = now_or_never(call(&mut service, req_from_ip("m", [127, 0, 0, 1], 1001)))
        .expect("refused at once")
        .unwrap();
    assert_eq!(code_of(&refused), Some(ErrorCode::OVERLOADED));
    let message = refused.result().unwrap_err().message();
    assert_eq!(message, "more than 1 call at once from this IP address");
    // Another host is served meanwhile.
    let other = call(&mut service, req_from_ip("m", [127, 0, 0, 2], 1000));
    let (_, send_other) = handle.next_request().await.expect("passed on");
    send_other.send_response(ok());
    assert_eq!(code_of(&other.await.unwrap()), None);
    send.send_response(ok());
    assert_eq!(code_of(&first.await.unwrap()), None);
}

#[tokio::test]
async fn keyed_concurrency_frees_the_place_of_a_call_that_panicked() {
    let layer = KeyedConcurrencyLimitLayer::per_peer(2);
    let serve = Serve::new(
        ServiceBuilder::new()
            .layer(layer)
            .service(dividing_router()),
    );
    let mut local = serve.local();
    // More panicking calls than the peer has places.
    for _ in 0..3 {
        let r = local.call(div_from(0, 1)).await;
        assert_eq!(code_of(&r), Some(ErrorCode::INTERNAL_ERROR));
    }
    let r = local.call(div_from(5, 1)).await;
    assert_eq!(code_of(&r), None, "{:?}", r.result().err());
}

#[tokio::test]
async fn keyed_concurrency_frees_the_slot_of_a_dropped_call() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Response, _>(KeyedConcurrencyLimitLayer::per_peer(1));
    let first = call(&mut service, req_from("m", 1));
    let _ = handle.next_request().await.unwrap();
    let refused = now_or_never(call(&mut service, req_from("m", 1)))
        .unwrap()
        .unwrap();
    assert_eq!(code_of(&refused), Some(ErrorCode::OVERLOADED));
    drop(first);
    let _second = call(&mut service, req_from("m", 1));
    assert!(handle.next_request().await.is_some(), "the slot came back");
}

#[tokio::test]
async fn keyed_concurrency_refuses_client_side_as_rejected() {
    let (mut service, mut handle) = mock::spawn_layer::<Request, Payload, _>(
        ServiceBuilder::new()
            .layer(KeyedConcurrencyLimitLayer::per_peer(1))
            .map_err(Error::from_boxed),
    );
    let _first = call(&mut service, req("m"));
    let _ = handle.next_request().await.unwrap();
    let e = now_or_never(call(&mut service, req("m")))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Rejected(s) if s.code() == ErrorCode::OVERLOADED),
        "{e:?}"
    );
    assert!(e.is_overloaded());
}

#[tokio::test]
async fn keyed_concurrency_sweeps_idle_keys() {
    let layer = KeyedConcurrencyLimitLayer::per_peer(1);
    let mut service = layer.layer(instant());
    for port in 1..=300 {
        service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", port))
            .await
            .unwrap();
    }
    // Idle keys are swept every 256 calls: what is left are the keys seen since the last sweep.
    assert!(layer.keys() <= 256 - 255 + 44, "{} keys", layer.keys());
    // A key with a call in flight is never swept.
    let (mut held, mut handle) = mock::spawn_layer::<Request, Response, _>(layer.clone());
    let _in_flight = call(&mut held, req_from("m", 9999));
    let _ = handle.next_request().await.unwrap();
    for port in 1..=600 {
        service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", port))
            .await
            .unwrap();
    }
    let refused = now_or_never(call(&mut held, req_from("m", 9999)))
        .unwrap()
        .unwrap();
    assert_eq!(
        code_of(&refused),
        Some(ErrorCode::OVERLOADED),
        "the busy key kept its count"
    );
}

#[tokio::test]
async fn keyed_concurrency_instances_share_a_key_after_its_count_was_dropped() {
    let layer = KeyedConcurrencyLimitLayer::per_peer(1);
    // 40 calls in flight from 40 peers: past 32 keys, an idle key's count is dropped at once.
    let (mut held, mut handle) = mock::spawn_layer::<Request, Response, _>(layer.clone());
    let mut in_flight = Vec::new();
    for port in 100..140 {
        in_flight.push(call(&mut held, req_from("m", port)));
        let _ = handle.next_request().await.unwrap();
    }
    // `a` calls from peer 1 and finishes: the count is dropped, though `a` keeps it as its last.
    let mut a = layer.layer(instant());
    assert_eq!(code_from(&mut a, 1).await, None);
    assert_eq!(layer.keys(), 40);
    // A call from peer 1 through another instance is in flight; `a` must see it.
    let _b = call(&mut held, req_from("m", 1));
    let _ = handle.next_request().await.unwrap();
    assert_eq!(code_from(&mut a, 1).await, Some(ErrorCode::OVERLOADED));
}

#[tokio::test]
async fn keyed_concurrency_drops_a_key_with_nothing_in_flight() {
    let layer = KeyedConcurrencyLimitLayer::per_peer(2);
    let mut service = layer.layer(instant());
    for port in 1..=1000 {
        service
            .ready()
            .await
            .unwrap()
            .call(req_from("m", port))
            .await
            .unwrap();
    }
    // Up to 32 idle keys stay (a steady peer costs no map insertion per call); no more.
    assert!(layer.keys() <= 33, "{} keys", layer.keys());
}

// --- TraceLayer and Metrics ----------------------------------------------------------------------

fn counts(m: &Metrics) -> (u64, u64, u64, u64, u64, u64) {
    let MetricsSnapshot {
        started,
        ok,
        failed,
        refused,
        deadline_exceeded,
        in_flight,
        ..
    } = m.snapshot();
    (started, ok, failed, refused, deadline_exceeded, in_flight)
}

#[tokio::test(start_paused = true)]
async fn trace_counts_server_outcomes() {
    let metrics = Metrics::new();
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Response, _>(TraceLayer::new(metrics.clone()));
    assert_eq!(counts(&metrics), (0, 0, 0, 0, 0, 0));

    let fut = call(&mut service, req("m"));
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(counts(&metrics), (1, 0, 0, 0, 0, 1), "one in flight");
    tokio::time::sleep(Duration::from_millis(7)).await;
    send.send_response(ok());
    fut.await.unwrap();
    assert_eq!(counts(&metrics), (1, 1, 0, 0, 0, 0));
    assert_eq!(metrics.snapshot().latency_us_max, 7000);

    for answer in [
        fail(ErrorCode::INVALID_PARAMS),
        fail(ErrorCode::OVERLOADED),
        fail(ErrorCode::RATE_LIMITED),
        fail(ErrorCode::DEADLINE_EXCEEDED),
    ] {
        let fut = call(&mut service, req("m"));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(answer);
        fut.await.unwrap();
    }
    // A service error counts as a failure.
    let fut = call(&mut service, req("m"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert!(fut.await.is_err());
    assert_eq!(counts(&metrics), (6, 1, 5, 2, 1, 0));
    let s = metrics.snapshot();
    assert_eq!(s.latency_us_total, 7000);
    #[cfg(feature = "metrics")]
    {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let labels = [metrics::Label::new("service", "test")];
        metrics::with_local_recorder(&recorder, || metrics.publish(&labels));
        let published: Vec<(String, String)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
                assert_eq!(labels, ["test"]);
                let value = match value {
                    DebugValue::Counter(n) => n.to_string(),
                    DebugValue::Gauge(g) => g.to_string(),
                    DebugValue::Histogram(_) => panic!("no histograms"),
                };
                (key.key().name().to_owned(), value)
            })
            .collect();
        for (name, value) in [
            ("rpc_calls_started_total", "6"),
            ("rpc_calls_ok_total", "1"),
            ("rpc_calls_failed_total", "5"),
            ("rpc_calls_refused_total", "2"),
            ("rpc_calls_deadline_exceeded_total", "1"),
            ("rpc_calls_latency_us_total", "7000"),
            ("rpc_calls_in_flight", "0"),
            ("rpc_calls_latency_us_max", "7000"),
        ] {
            assert!(
                published.contains(&(name.to_owned(), value.to_owned())),
                "{name} {value} not in {published:?}"
            );
        }
    }
}

/// The fields of each closed span, as a subscriber records them.
#[derive(Clone, Default)]
struct SpanFields {
    open: Arc<std::sync::Mutex<std::collections::HashMap<u64, Fields>>>,
    closed: Arc<std::sync::Mutex<Vec<Fields>>>,
}

type Fields = std::collections::BTreeMap<&'static str, String>;

struct Visitor<'a>(&'a mut Fields);

impl tracing::field::Visit for Visitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanFields {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::new();
        fields.insert("name", attrs.metadata().name().to_owned());
        attrs.record(&mut Visitor(&mut fields));
        self.open.lock().unwrap().insert(id.into_u64(), fields);
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(fields) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }
    fn on_close(&self, id: tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(fields) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(fields);
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn trace_spans_carry_method_peer_id_outcome_and_latency() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = SpanFields::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Response, _>(TraceLayer::new(Metrics::new()));
    let fut = call(&mut service, req_from("add", 4000));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    send.send_response(ok());
    fut.await.unwrap();
    let fut = call(&mut service, req("div"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(fail(ErrorCode::INVALID_PARAMS));
    fut.await.unwrap();

    let closed = spans.closed.lock().unwrap().clone();
    assert_eq!(closed.len(), 2, "one span per call: {closed:?}");
    let field = |i: usize, name: &str| closed[i].get(name).cloned().unwrap_or_default();
    assert_eq!(field(0, "name"), "rpc");
    assert_eq!(field(0, "method"), "add");
    assert_eq!(field(0, "peer"), "Some(Socket(127.0.0.1:4000))");
    assert_eq!(field(0, "id"), "0");
    assert_eq!(field(0, "outcome"), "ok");
    assert_eq!(field(0, "latency_us"), "3000");
    assert_eq!(field(1, "method"), "div");
    assert_eq!(field(1, "peer"), "None");
    assert_eq!(field(1, "id"), "1");
    assert_eq!(
        field(1, "outcome"),
        ErrorCode::INVALID_PARAMS.code().to_string()
    );
}

#[tokio::test(start_paused = true)]
async fn trace_outside_the_limits_counts_their_refusals_and_deadlines() {
    let metrics = Metrics::new();
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new(metrics.clone()))
        .layer(KeyedConcurrencyLimitLayer::per_peer(1))
        .layer(DeadlineLayer::new());
    let (mut service, mut handle) = mock::spawn_layer::<Request, Response, _>(stack);
    let slow = call(&mut service, req_from("m", 1));
    let _held = handle.next_request().await.unwrap();
    let refused = call(&mut service, req_from("m", 1)).await.unwrap();
    assert_eq!(code_of(&refused), Some(ErrorCode::OVERLOADED));
    let late = call(&mut service, {
        let mut r = req_from("m", 2);
        r.context_mut().set_deadline(Some(Instant::now()));
        r
    })
    .await
    .unwrap();
    assert_eq!(code_of(&late), Some(ErrorCode::DEADLINE_EXCEEDED));
    assert_eq!(counts(&metrics), (3, 0, 2, 1, 1, 1));
    drop(slow);
}

#[tokio::test]
async fn trace_counts_client_outcomes() {
    let metrics = Metrics::new();
    let (mut service, mut handle) = mock::spawn_layer::<Request, Payload, _>(
        ServiceBuilder::new()
            .layer(TraceLayer::new(metrics.clone()))
            .map_err(Error::from_boxed),
    );
    let outcomes: [Option<fn() -> Error>; 6] = [
        None,
        Some(|| Error::Timeout),
        Some(|| Error::Overloaded),
        Some(|| rejected(ErrorCode::RATE_LIMITED)),
        Some(|| server(ErrorCode::DEADLINE_EXCEEDED)),
        Some(|| server(ErrorCode::INVALID_PARAMS)),
    ];
    for outcome in outcomes {
        let fut = call(&mut service, req("m"));
        let (_, send) = handle.next_request().await.unwrap();
        match outcome {
            None => send.send_response(nil()),
            Some(e) => send.send_error(e()),
        }
        let _ = fut.await;
    }
    assert_eq!(counts(&metrics), (6, 1, 5, 2, 2, 0));
}

#[tokio::test]
async fn trace_counts_a_call_that_panicked_as_failed() {
    let metrics = Metrics::new();
    let serve = Serve::new(
        ServiceBuilder::new()
            .layer(TraceLayer::new(metrics.clone()))
            .service(dividing_router()),
    );
    let mut local = serve.local();
    let r = local.call(div_from(0, 1)).await;
    assert_eq!(code_of(&r), Some(ErrorCode::INTERNAL_ERROR));
    let m = metrics.snapshot();
    assert_eq!(
        (m.started, m.failed, m.cancelled, m.in_flight),
        (1, 1, 0, 0),
        "{m:?}"
    );
}

/// A service whose future panics when polled after waiting once (a layer under the trace, not
/// the router, which catches its handlers' panics itself): `Serve` catches the panic and drops the
/// future once unwinding is over, and the call still counts as failed, not cancelled.
#[tokio::test]
async fn trace_counts_a_future_that_panicked_while_polled_as_failed() {
    let metrics = Metrics::new();
    let panicking = service_fn(|_: Request| async {
        tokio::task::yield_now().await;
        panic!("the handler's future failed");
        #[allow(unreachable_code)]
        Ok::<Response, Infallible>(ok())
    });
    let serve = Serve::new(TraceLayer::new(metrics.clone()).layer(panicking));
    let r = serve.local().call(req("m")).await;
    assert_eq!(code_of(&r), Some(ErrorCode::INTERNAL_ERROR));
    let m = metrics.snapshot();
    assert_eq!(
        (m.started, m.ok, m.failed, m.cancelled, m.in_flight),
        (1, 0, 1, 0, 0),
        "{m:?}"
    );
}

#[tokio::test]
async fn trace_does_not_leak_in_flight_for_a_dropped_call() {
    let metrics = Metrics::new();
    let (mut service, mut handle) =
        mock::spawn_layer::<Request, Response, _>(TraceLayer::new(metrics.clone()));
    let fut = call(&mut service, req("m"));
    let _ = handle.next_request().await.unwrap();
    assert_eq!(metrics.snapshot().in_flight, 1);
    drop(fut);
    assert_eq!(metrics.snapshot().in_flight, 0, "{:?}", metrics.snapshot());
}
