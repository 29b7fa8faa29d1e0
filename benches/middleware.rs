//! What the full middleware stack costs: the same calls with no layers and with a client stack
//! (timeout as a deadline, retry, rate limit, concurrency limit) and a server stack (per-peer rate limit,
//! per-peer concurrency, load shedding, deadlines, tracing), over loopback TCP with 64 calls in
//! flight and with one, and over UDP with one, in alternating pairs; prints calls/s and the ratio.
//!
//! With 64 calls in flight on one connection both threads are busy all the time and the
//! layers' own work is what the ratio shows; with one, each call waits for its round trip
//! through the kernel, as calls on a lightly loaded service do.
//!
//! The servers run on one thread and the clients on another, each a single-threaded runtime.
//!
//! Run with `cargo bench -p rpc-benches --bench middleware`. Each run is bounded (7 pairs of
//! 1 s runs per shape, about 45 s in all; `RPC_BENCH_ROUNDS` and `RPC_BENCH_SECS` change them).
//! `RPC_BENCH_SKIP=trace,rate,conc,shed,deadline` leaves server layers out and
//! `RPC_BENCH_NO_CLIENT_STACK=1` the client stack, to see what each part costs;
//! `RPC_BENCH_SHAPE=tcp64`, `tcp1` or `udp` runs one shape only (`tcp` both TCP shapes), and `RPC_BENCH_ONLY=plain` or `layered`
//! one side only (for a profiler).

use std::time::{Duration, Instant};

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Client, Router};
use rpc_middleware::deadline::{DeadlineLayer, SetDeadlineLayer};
use rpc_middleware::limit::{KeyedConcurrencyLimitLayer, RateLimitLayer};
use rpc_middleware::retry::RetryPolicy;
use rpc_middleware::trace::{Metrics, TraceLayer};
use rpc_transports::{tcp, udp};
use tower::retry::RetryLayer;
use tower::ServiceBuilder;

/// One measurement (`RPC_BENCH_SECS` to change).
fn run() -> Duration {
    Duration::from_secs_f64(env_or("RPC_BENCH_SECS", 1.0))
}

/// Paired measurements (no layers, full stacks) per shape, in alternating order
/// (`RPC_BENCH_ROUNDS` to change).
fn rounds() -> usize {
    env_or("RPC_BENCH_ROUNDS", 7.0) as usize
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| *v > 0.0)
        .unwrap_or(default)
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// A service stack of either side: a server's answers `Response`s, a client's `Payload`s.
trait Stack<T>:
    tower::Service<
        rpc_core::Request,
        Response = T,
        Error: Into<rpc_core::BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T, S> Stack<T> for S where
    S: tower::Service<
            rpc_core::Request,
            Response = T,
            Error: Into<rpc_core::BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// What the servers serve.
trait Served: Stack<rpc_core::Response> {}

impl<S: Stack<rpc_core::Response>> Served for S {}

/// What a client sends through, with or without layers.
trait Channel: Stack<rpc_core::Payload> {}

impl<S: Stack<rpc_core::Payload>> Channel for S {}

/// The server stack, composed statically as an application would (no box, no `Either`).
fn layered_router() -> impl Served {
    ServiceBuilder::new()
        .layer(TraceLayer::new(Metrics::new()))
        .layer(RateLimitLayer::per_peer(10_000_000, Duration::from_secs(1)))
        .layer(KeyedConcurrencyLimitLayer::per_peer(100_000))
        .load_shed()
        .concurrency_limit(100_000)
        .layer(DeadlineLayer::new().default_timeout(Duration::from_secs(10)))
        .service(Router::new().route("add", add))
}

/// The server stack without the layers named in `skip` (of trace, rate, conc, shed, deadline),
/// to see what each costs. Layers left in cost a little more than in [`layered_router`]: each
/// is wrapped in an `Either`.
fn ablated_router(skip: &str) -> impl Served {
    let on = |l: &str| !skip.contains(l);
    ServiceBuilder::new()
        .option_layer(on("trace").then(|| TraceLayer::new(Metrics::new())))
        .option_layer(
            on("rate").then(|| RateLimitLayer::per_peer(10_000_000, Duration::from_secs(1))),
        )
        .option_layer(on("conc").then(|| KeyedConcurrencyLimitLayer::per_peer(100_000)))
        .option_layer(on("shed").then(tower::load_shed::LoadShedLayer::new))
        .option_layer(on("shed").then(|| tower::limit::ConcurrencyLimitLayer::new(100_000)))
        .option_layer(
            on("deadline").then(|| DeadlineLayer::new().default_timeout(Duration::from_secs(10))),
        )
        .map_err(Into::<rpc_core::BoxError>::into)
        .service(Router::new().route("add", add))
}

/// Serves `service` over TCP and UDP on loopback.
async fn serve<S: Served>(service: S) -> (tcp::Server, udp::Endpoint<RpcudpCodec>) {
    let tcp = tcp::Builder::new()
        .serve(service.clone())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    let udp = udp::Builder::new()
        .serve(service)
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    (tcp, udp)
}

/// The client stack, composed statically as an application would.
fn client_stack<S>(
    client: Client<S>,
) -> Client<
    impl tower::Service<
            rpc_core::Request,
            Response = rpc_core::Payload,
            Error = rpc_core::Error,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static,
>
where
    S: Channel + tower::Service<rpc_core::Request, Error = rpc_core::Error>,
{
    // In the order of the `middleware_stack` example: the limits count calls (a call's retries
    // run within its place and its turn), and the deadline covers every attempt.
    client.layer(
        ServiceBuilder::new()
            .layer(RateLimitLayer::global(10_000_000, Duration::from_secs(1)))
            .concurrency_limit(100_000)
            // The timeout is the call's deadline, which the call table enforces (tower's
            // `TimeoutLayer` would add a timer and a future per call).
            .layer(SetDeadlineLayer::new(Duration::from_secs(5)))
            .layer(RetryLayer::new(RetryPolicy::new()))
            .into_inner(),
    )
}

async fn load<S: Channel>(client: &Client<S>, in_flight: usize) -> f64 {
    let start = Instant::now();
    let run = run();
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        // Each worker calls through its own instance of the stack, as a task making calls one
        // after another would.
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < run {
                let r: i64 = c
                    .call_mut("add", (w as i64, 1))
                    .await
                    .expect("the call succeeds");
                assert_eq!(r, w as i64 + 1);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("the worker ran");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs pairs of measurements, swapping which goes first each round so that drifts in the
/// machine's speed fall on both alike, and prints the medians and the median ratio.
/// `RPC_BENCH_ONLY=plain` or `layered` runs one side only (for a profiler's instruction counts).
async fn compare<P: Channel, L: Channel>(
    shape: &str,
    plain: &Client<P>,
    layered: &Client<L>,
    in_flight: usize,
) {
    let rounds = rounds();
    match std::env::var("RPC_BENCH_ONLY").as_deref() {
        Ok("plain") => {
            let rate = load(plain, in_flight).await;
            return println!("{shape}: no layers {rate:.0} calls/s");
        }
        Ok("layered") => {
            let rate = load(layered, in_flight).await;
            return println!("{shape}: full stacks {rate:.0} calls/s");
        }
        _ => {}
    }
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = load(plain, in_flight).await;
            (x, load(layered, in_flight).await)
        } else {
            let y = load(layered, in_flight).await;
            (load(plain, in_flight).await, y)
        };
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    println!(
        "{shape}: no layers {:.0} calls/s, full stacks {:.0} calls/s, ratio {:.2} (median of {rounds} pairs; {lo:.2}..{hi:.2})",
        median(a),
        median(b),
        median(ratios),
    );
}

/// A single-threaded runtime: each side of the benchmark gets one thread and one core, so runs
/// do not depend on where work stealing puts the tasks.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn main() {
    // A service's usual set-up: tracing installed, recording warnings and errors only (so the
    // trace layer's spans are disabled, as RPC spans at info level would be in production).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    // The servers, each kind with and without layers, on a thread of their own.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::Builder::new().name("server".into());
    let _ = server.spawn(move || {
        runtime().block_on(async move {
            let (tcp_plain, udp_plain) = serve(Router::new().route("add", add)).await;
            let (tcp_layered, udp_layered) = match std::env::var("RPC_BENCH_SKIP") {
                Ok(skip) => serve(ablated_router(&skip)).await,
                Err(_) => serve(layered_router()).await,
            };
            tx.send([
                tcp_plain.local_addr(),
                tcp_layered.local_addr(),
                udp_plain.local_addr(),
                udp_layered.local_addr(),
            ])
            .expect("the bench waits");
            // Served until the process exits.
            std::future::pending::<()>().await;
        })
    });
    let [tcp_plain, tcp_layered, udp_plain, udp_layered] = rx.recv().expect("servers bound");

    let shape = std::env::var("RPC_BENCH_SHAPE").unwrap_or_default();
    assert!(
        ["", "tcp", "tcp64", "tcp1", "udp"].contains(&shape.as_str()),
        "RPC_BENCH_SHAPE is tcp, tcp64, tcp1 or udp, not {shape:?}"
    );
    let no_client_stack = std::env::var_os("RPC_BENCH_NO_CLIENT_STACK").is_some();
    runtime().block_on(async {
        // TCP, 64 in flight and then 1, on one connection each.
        if shape.is_empty() || shape.starts_with("tcp") {
            let plain = tcp::Builder::new().client(tcp_plain, RpcudpCodec::new());
            let layered = tcp::Builder::new().client(tcp_layered, RpcudpCodec::new());
            let (many, one) = (shape != "tcp1", shape != "tcp64");
            if no_client_stack {
                if many {
                    compare("tcp, 64 in flight", &plain, &layered, 64).await;
                }
                if one {
                    compare("tcp, 1 in flight", &plain, &layered, 1).await;
                }
            } else {
                let layered = client_stack(layered);
                if many {
                    compare("tcp, 64 in flight", &plain, &layered, 64).await;
                }
                if one {
                    compare("tcp, 1 in flight", &plain, &layered, 1).await;
                }
            }
        }
        // UDP, 1 in flight.
        if shape.is_empty() || shape == "udp" {
            let ep = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind");
            let plain = ep.client(udp_plain);
            let layered = ep.client(udp_layered);
            if no_client_stack {
                compare("udp, 1 in flight", &plain, &layered, 1).await;
            } else {
                compare("udp, 1 in flight", &plain, &client_stack(layered), 1).await;
            }
        }
    });
}
