//! What the full middleware stack costs: the same calls with no layers and with a client stack
//! (timeout as a deadline, retry, rate limit, concurrency limit) and a server stack (per-peer rate limit,
//! per-peer concurrency, load shedding, deadlines, tracing), over loopback TCP with 64 calls in
//! flight and over UDP with one, in alternating pairs; prints calls/s and the ratio.
//!
//! The servers run on one thread and the clients on another, each a single-threaded runtime.
//!
//! Run with `cargo bench -p rpc-benches --bench middleware`. Each run is bounded (7 pairs of
//! 1 s runs per shape, about 30 s in all). `RPC_BENCH_SKIP=trace,rate,conc,shed,deadline` leaves server layers out and
//! `RPC_BENCH_NO_CLIENT_STACK=1` the client stack, to see what each part costs;
//! `RPC_BENCH_SHAPE=tcp` or `udp` runs one shape only.

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

/// One measurement.
const RUN: Duration = Duration::from_secs(1);
/// Paired measurements (no layers, full stacks) per shape, in alternating order.
const ROUNDS: usize = 7;

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn server_stack() -> rpc_transports::stream::Builder<tcp::Tcp> {
    tcp::Builder::new()
}

/// The server stack, composed as an application would (static types, no box per layer);
/// `RPC_BENCH_SKIP=trace,rate,conc,shed,deadline` leaves layers out, to see what each costs.
fn layered_router() -> impl tower::Service<
    rpc_core::Request,
    Response = rpc_core::Response,
    Error = rpc_core::BoxError,
    Future: Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    let skip = |l: &str| std::env::var("RPC_BENCH_SKIP").is_ok_and(|v| v.contains(l));
    let on = |l: &str| !skip(l);
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

/// What a client sends through, with or without layers.
trait Channel:
    tower::Service<
        rpc_core::Request,
        Response = rpc_core::Payload,
        Error: Into<rpc_core::BoxError>,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Channel for S where
    S: tower::Service<
            rpc_core::Request,
            Response = rpc_core::Payload,
            Error: Into<rpc_core::BoxError>,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The client stack, composed statically as an application would; `RPC_BENCH_NO_CLIENT_STACK=1`
/// leaves it out.
fn client_stack<S>(
    client: Client<S>,
) -> Client<
    impl tower::Service<
            rpc_core::Request,
            Response = rpc_core::Payload,
            Error = rpc_core::BoxError,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static,
>
where
    S: Channel,
    S::Future: 'static,
{
    let on = std::env::var_os("RPC_BENCH_NO_CLIENT_STACK").is_none();
    client.layer(
        ServiceBuilder::new()
            // The timeout is the call's deadline, which the transport enforces with a timer in
            // the call's own future (tower's `TimeoutLayer` would add a second timer and future).
            .option_layer(on.then(|| SetDeadlineLayer::new(Duration::from_secs(5))))
            .option_layer(on.then(|| RetryLayer::new(RetryPolicy::new())))
            .option_layer(on.then(|| RateLimitLayer::global(10_000_000, Duration::from_secs(1))))
            .option_layer(on.then(|| tower::limit::ConcurrencyLimitLayer::new(100_000)))
            .map_err(Into::<rpc_core::BoxError>::into)
            .into_inner(),
    )
}

async fn load<S: Channel>(client: &Client<S>, in_flight: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < RUN {
                let r: i64 = c
                    .call("add", (w as i64, 1))
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

/// Runs `ROUNDS` pairs of measurements, swapping which goes first each round so that drifts in
/// the machine's speed fall on both alike, and prints the medians and the median ratio.
async fn compare<P: Channel, L: Channel>(
    shape: &str,
    plain: &Client<P>,
    layered: &Client<L>,
    in_flight: usize,
) {
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
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
        "{shape}: no layers {:.0} calls/s, full stacks {:.0} calls/s, ratio {:.2} (median of {ROUNDS} pairs; {lo:.2}..{hi:.2})",
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
    // The servers, each kind with and without layers, on a thread of their own.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::Builder::new().name("server".into());
    let _ = server.spawn(move || {
        runtime().block_on(async move {
            let tcp_plain = server_stack()
                .serve(Router::new().route("add", add))
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind");
            let tcp_layered = server_stack()
                .serve(layered_router())
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind");
            let udp_plain = udp::Builder::new()
                .serve(Router::new().route("add", add))
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind");
            let udp_layered = udp::Builder::new()
                .serve(layered_router())
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind");
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
    runtime().block_on(async {
        // TCP, 64 in flight on one connection.
        if shape.is_empty() || shape == "tcp" {
            let plain = tcp::Builder::new().connect(tcp_plain, RpcudpCodec::new());
            let layered =
                client_stack(tcp::Builder::new().connect(tcp_layered, RpcudpCodec::new()));
            compare("tcp, 64 in flight", &plain, &layered, 64).await;
        }
        // UDP, 1 in flight.
        if shape.is_empty() || shape == "udp" {
            let ep = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind");
            let plain = ep.client(udp_plain);
            let layered = client_stack(ep.client(udp_layered));
            compare("udp, 1 in flight", &plain, &layered, 1).await;
        }
    });
}
