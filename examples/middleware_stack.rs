//! A client stack and a server stack of middleware, over UDP, then the same stacks over TCP.
//!
//! Run with `cargo run --example middleware_stack`.
//!
//! - The server stack: tracing and metrics, a rate limit per peer, a concurrency limit per peer,
//!   load shedding over a global concurrency limit, and deadlines (300 ms unless the call has one).
//! - The client stack: a rate limit of its own, a concurrency limit, retries (of calls that
//!   provably did not run, and of `add`, which is idempotent), and a timeout per try.
//!
//! It makes a few calls, has a noisy peer refused by the server's rate limit while this client is
//! served, has a slow call cut off by the server's deadline, has a burst refused by the client's
//! own rate limit before anything is sent, and prints the server's metrics. Moving to TCP changes
//! the line that binds and the one that connects. It exits with an error unless all of that
//! happened as expected.

use std::error::Error as StdError;
use std::time::Duration;

use futures::future::join_all;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{BoxError, Client, Error, ErrorCode, Payload, Request, Response, Router, Service};
use rpc_middleware::deadline::DeadlineLayer;
use rpc_middleware::limit::{Global, KeyedConcurrencyLimitLayer, RateLimit, RateLimitLayer};
use rpc_middleware::retry::RetryPolicy;
use rpc_middleware::trace::{Metrics, TraceLayer};
use rpc_transports::{tcp, udp};
use tokio::time::Instant;
use tower::limit::ConcurrencyLimit;
use tower::retry::{Retry, RetryLayer};
use tower::timeout::Timeout;
use tower::ServiceBuilder;

type Result<T, E = Box<dyn StdError>> = std::result::Result<T, E>;

const ADDR: &str = "127.0.0.1:0";
/// Calls a second per peer, at the server.
const SERVER_RATE: u32 = 10;
/// Calls a second from this client, all servers together.
const CLIENT_RATE: u32 = 6;
/// The time a call gets at the server unless it brings a deadline.
const SERVER_DEADLINE: Duration = Duration::from_millis(300);

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The server stack, outermost first, around the router.
fn server_stack(
    metrics: &Metrics,
) -> impl Service<Request, Response = Response, Error = BoxError, Future: Send + 'static>
       + Clone
       + Send
       + Sync
       + 'static {
    ServiceBuilder::new()
        // Counts every call, refusals included, and traces it.
        .layer(TraceLayer::new(metrics.clone()))
        // A noisy peer is refused, the others are not.
        .layer(RateLimitLayer::per_peer(
            SERVER_RATE,
            Duration::from_secs(1),
        ))
        .layer(KeyedConcurrencyLimitLayer::per_peer(8))
        // Past 64 calls at once, refuse rather than queue.
        .load_shed()
        .concurrency_limit(64)
        .layer(DeadlineLayer::new().default_timeout(SERVER_DEADLINE))
        .service(Router::new().route("add", add).route("slow", slow))
}

/// The client stack, outermost first, around a transport's channel.
type ClientStack<S> = RateLimit<ConcurrencyLimit<Retry<RetryPolicy, Timeout<S>>>, Global>;

fn client_stack<S>(client: Client<S>) -> Client<ClientStack<S>> {
    client.layer(
        ServiceBuilder::new()
            .layer(RateLimitLayer::global(CLIENT_RATE, Duration::from_secs(1)))
            .concurrency_limit(8)
            .layer(RetryLayer::new(
                RetryPolicy::new().idempotent(["add"]).max_attempts(3),
            ))
            .timeout(Duration::from_secs(1)),
    )
}

/// Checks an expectation, failing the example with `what` if it does not hold.
fn expect(ok: bool, what: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// The calls, over any transport: `client` has the client stack, `noisy` is another peer without it.
async fn demo<S, N>(
    name: &str,
    client: Client<S>,
    noisy: Client<N>,
    metrics: &Metrics,
) -> Result<()>
where
    S: Service<Request, Response = Payload> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    N: Service<Request, Response = Payload> + Clone + Send + 'static,
    N::Error: Into<BoxError>,
    N::Future: Send,
{
    let client = client.with_timeout(Duration::from_secs(5));
    let noisy = noisy.with_timeout(Duration::from_secs(5));

    // A call.
    let sum: i64 = client.call("add", (2, 40)).await?;
    println!("{name}: add(2, 40) -> {sum}");
    expect(sum == 42, format!("{name}: add(2, 40) gave {sum}"))?;

    // A noisy peer sends 15 calls at once and is refused past its quota, while this client is
    // served at the same moment.
    let flood = join_all((0..15i64).map(|i| noisy.call::<i64>("add", (i, i))));
    let ours = join_all((0..3i64).map(|i| client.call::<i64>("add", (i, 1))));
    let (flood, ours) = tokio::join!(flood, ours);
    let mut refused = 0;
    let mut retry_after = None;
    for r in &flood {
        if let Err(e) = r {
            expect(
                e.code() == Some(ErrorCode::RATE_LIMITED),
                format!("{name}: the noisy peer failed otherwise: {e}"),
            )?;
            refused += 1;
            retry_after = e
                .server_error()
                .and_then(|s| s.data()?["retry_after_ms"].as_u64());
        }
    }
    let ours_right = ours
        .iter()
        .enumerate()
        .filter(|(i, r)| r.as_ref().ok() == Some(&(*i as i64 + 1)))
        .count();
    println!(
        "{name}: a noisy peer's 15 calls at once: {} served, {refused} refused (rate limited, retry after {} ms); meanwhile ours: {ours_right} of 3 right",
        15 - refused,
        retry_after.unwrap_or_default(),
    );
    expect(
        refused >= 1,
        format!("{name}: the noisy peer was never refused"),
    )?;
    expect(
        ours_right == 3,
        format!("{name}: our calls failed: {ours:?}"),
    )?;

    // A slow call, cut off by the server's deadline long before the client's 5 s.
    let start = Instant::now();
    let slow = client.call::<u64>("slow", (2000,)).await;
    let took = start.elapsed();
    match &slow {
        Err(e) if e.is_timeout() => {
            println!("{name}: slow(2000) -> {e}, after {} ms", took.as_millis())
        }
        other => return Err(format!("{name}: slow(2000) gave {other:?}").into()),
    }
    expect(
        took < Duration::from_secs(2),
        format!("{name}: the deadline took {took:?}"),
    )?;

    // A burst over the client's own rate limit: the excess is refused here, never sent.
    let burst = join_all((0..CLIENT_RATE as i64).map(|i| client.call::<i64>("add", (i, i)))).await;
    let mut sent = 0;
    let mut rejected = 0;
    for r in &burst {
        match r {
            Ok(_) => sent += 1,
            Err(Error::Rejected(e)) if e.code() == ErrorCode::RATE_LIMITED => rejected += 1,
            Err(e) => return Err(format!("{name}: a burst call failed otherwise: {e}").into()),
        }
    }
    println!(
        "{name}: {} calls at once over the client's own limit: {sent} sent, {rejected} rejected locally (rate limited)",
        burst.len()
    );
    expect(
        rejected >= 1,
        format!("{name}: the client's limit never refused"),
    )?;

    let m = metrics.snapshot();
    println!(
        "{name}: server metrics: started {}, ok {}, failed {}, refused {}, deadline exceeded {}, in flight {}, max latency {} ms",
        m.started,
        m.ok,
        m.failed,
        m.refused,
        m.deadline_exceeded,
        m.in_flight,
        m.latency_us_max / 1000
    );
    expect(
        m.refused == refused as u64,
        format!("{name}: the server counted {} refusals", m.refused),
    )?;
    expect(
        m.deadline_exceeded == 1,
        format!(
            "{name}: the server counted {} deadlines",
            m.deadline_exceeded
        ),
    )?;
    expect(
        m.in_flight == 0,
        format!("{name}: {} calls in flight", m.in_flight),
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // Over UDP.
    let metrics = Metrics::new();
    let server = udp::Builder::new()
        .serve(server_stack(&metrics))
        .bind(ADDR, RpcudpCodec::new())
        .await?;
    println!("serving on udp://{}", server.local_addr());
    let (ours, theirs) = (
        udp::Endpoint::bind(ADDR, RpcudpCodec::new()).await?,
        udp::Endpoint::bind(ADDR, RpcudpCodec::new()).await?,
    );
    let connect = |endpoint: &udp::Endpoint<RpcudpCodec>| endpoint.client(server.local_addr());
    demo(
        "udp",
        client_stack(connect(&ours)),
        connect(&theirs),
        &metrics,
    )
    .await?;
    server.shutdown(Duration::from_secs(1)).await;

    // The same stacks over TCP: only the lines that bind and connect differ.
    let metrics = Metrics::new();
    let server = tcp::Builder::new()
        .serve(server_stack(&metrics))
        .bind(ADDR, RpcudpCodec::new())
        .await?;
    println!("serving on tcp://{}", server.local_addr());
    let connect = || tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
    demo("tcp", client_stack(connect()), connect(), &metrics).await?;
    server.shutdown(Duration::from_secs(1)).await;

    println!("all outcomes as expected");
    Ok(())
}
