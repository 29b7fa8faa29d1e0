//! What the full middleware stack costs: the same calls with no layers and with a client stack
//! (timeout, retry, rate limit, concurrency limit) and a server stack (per-peer rate limit,
//! per-peer concurrency, load shedding, deadlines, tracing), over loopback TCP with 64 calls in
//! flight and over UDP with one, alternating three times; prints calls/s and the ratio.
//!
//! Run with `cargo bench -p rpc-benches --bench middleware`. Each run is bounded (3 × 2 s per
//! shape and stack). `RPC_BENCH_SKIP=trace,rate,conc,shed,deadline` leaves server layers out and
//! `RPC_BENCH_NO_CLIENT_STACK=1` the client stack, to see what each part costs.

use std::time::{Duration, Instant};

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{BoxChannel, Client, Router};
use rpc_middleware::deadline::DeadlineLayer;
use rpc_middleware::limit::{KeyedConcurrencyLimitLayer, RateLimitLayer};
use rpc_middleware::retry::RetryPolicy;
use rpc_middleware::trace::{Metrics, TraceLayer};
use rpc_transports::{tcp, udp};
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;

const RUN: Duration = Duration::from_secs(2);

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn server_stack() -> rpc_transports::stream::Builder<tcp::Tcp> {
    tcp::Builder::new()
}

type ServerStack =
    tower::util::BoxCloneSyncService<rpc_core::Request, rpc_core::Response, rpc_core::BoxError>;

/// The server stack; `RPC_BENCH_SKIP=trace,rate,conc,shed,deadline` leaves layers out, to see
/// what each costs.
fn layered_router() -> ServerStack {
    use tower::{Layer, ServiceExt};
    let skip = |l: &str| std::env::var("RPC_BENCH_SKIP").is_ok_and(|v| v.contains(l));
    let router = Router::new().route("add", add);
    let mut svc = ServerStack::new(
        router.map_err(|e: std::convert::Infallible| -> rpc_core::BoxError { match e {} }),
    );
    if !skip("deadline") {
        svc = ServerStack::new(
            DeadlineLayer::new()
                .default_timeout(Duration::from_secs(10))
                .layer(svc),
        );
    }
    if !skip("shed") {
        svc = ServerStack::new(
            ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(100_000)
                .service(svc),
        );
    }
    if !skip("conc") {
        svc = ServerStack::new(KeyedConcurrencyLimitLayer::per_peer(100_000).layer(svc));
    }
    if !skip("rate") {
        svc = ServerStack::new(
            RateLimitLayer::per_peer(10_000_000, Duration::from_secs(1)).layer(svc),
        );
    }
    if !skip("trace") {
        svc = ServerStack::new(TraceLayer::new(Metrics::new()).layer(svc));
    }
    svc
}

fn client_stack(client: Client<BoxChannel>) -> Client<BoxChannel> {
    if std::env::var_os("RPC_BENCH_NO_CLIENT_STACK").is_some() {
        return client;
    }
    client
        .layer(
            ServiceBuilder::new()
                .layer(RetryLayer::new(RetryPolicy::new()))
                .layer(TimeoutLayer::new(Duration::from_secs(5)))
                .layer(RateLimitLayer::global(10_000_000, Duration::from_secs(1)))
                .concurrency_limit(100_000)
                .into_inner(),
        )
        .boxed()
}

async fn load(client: &Client<BoxChannel>, in_flight: usize) -> f64 {
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // TCP, 64 in flight on one connection.
    let plain_srv = server_stack()
        .serve(Router::new().route("add", add))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    let layered_srv = server_stack()
        .serve(layered_router())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    let plain = tcp::Builder::new()
        .connect(plain_srv.local_addr(), RpcudpCodec::new())
        .boxed();
    let layered = client_stack(
        tcp::Builder::new()
            .connect(layered_srv.local_addr(), RpcudpCodec::new())
            .boxed(),
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(load(&plain, 64).await);
        b.push(load(&layered, 64).await);
    }
    let (a, b) = (median(a), median(b));
    println!(
        "tcp, 64 in flight: no layers {a:.0} calls/s, full stacks {b:.0} calls/s, ratio {:.2}",
        b / a
    );

    // UDP, 1 in flight.
    let plain_srv = udp::Builder::new()
        .serve(Router::new().route("add", add))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    let layered_srv = udp::Builder::new()
        .serve(layered_router())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    let ep = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .expect("bind");
    let plain = ep.client(plain_srv.local_addr()).boxed();
    let layered = client_stack(ep.client(layered_srv.local_addr()).boxed());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(load(&plain, 1).await);
        b.push(load(&layered, 1).await);
    }
    let (a, b) = (median(a), median(b));
    println!(
        "udp, 1 in flight:  no layers {a:.0} calls/s, full stacks {b:.0} calls/s, ratio {:.2}",
        b / a
    );
}
