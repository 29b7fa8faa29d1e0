//! The cost of dispatch, in process and without sockets: a request through `Serve` to a router
//! alone and under the full server middleware stack, and a call through a client stack to a
//! channel that answers at once. The difference is what the layers cost per call.
//!
//! Run with `cargo bench -p rpc-benches --bench dispatch`.

// criterion's macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use rpc_codecs::msgpack::MsgPack;
use rpc_core::{BoxError, Client, Context, Payload, Peer, Request, Router};
use rpc_middleware::deadline::{DeadlineLayer, SetDeadlineLayer};
use rpc_middleware::limit::{KeyedConcurrencyLimitLayer, RateLimitLayer};
use rpc_middleware::retry::RetryPolicy;
use rpc_middleware::trace::{Metrics, TraceLayer};
use rpc_transports::serve::Serve;
use tower::retry::RetryLayer;
use tower::ServiceBuilder;

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn router() -> Router {
    Router::new().route("add", add)
}

/// The same method declared as a service: its generated router and client against the
/// hand-written ones.
#[rpc_stack::service]
trait Adder {
    async fn add(&self, a: i64, b: i64) -> i64;
}

#[derive(Clone)]
struct Plain;

impl Adder for Plain {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn request() -> Request {
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("an address");
    let args = Payload::encode(&MsgPack, &(1i64, 2i64)).expect("encodes");
    Request::new("add", args).with_context(Context::from_peer(Peer::Socket(peer)))
}

/// The server stack of `benches/middleware.rs`, composed as an application would.
fn server_stack() -> Serve {
    Serve::new(
        ServiceBuilder::new()
            .layer(TraceLayer::new(Metrics::new()))
            .layer(RateLimitLayer::per_peer(
                1_000_000_000,
                Duration::from_secs(1),
            ))
            .layer(KeyedConcurrencyLimitLayer::per_peer(100_000))
            .load_shed()
            .concurrency_limit(100_000)
            .layer(DeadlineLayer::new().default_timeout(Duration::from_secs(10)))
            .map_err(Into::<BoxError>::into)
            .service(router()),
    )
}

/// Serves `n` requests one after another on a current-thread runtime, as a receive loop does
/// (one instance of the service); the time they took.
fn serve_n(rt: &tokio::runtime::Runtime, serve: &Serve, n: u64) -> Duration {
    let mut serve = serve.local();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let r = serve.call(request()).await;
            black_box(r.result().is_ok());
        }
        start.elapsed()
    })
}

/// Makes `n` calls one after another; the time they took.
fn call_n<S>(rt: &tokio::runtime::Runtime, client: &Client<S>, n: u64) -> Duration
where
    S: tower::Service<Request, Response = Payload> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let r: i64 = client.call("add", (1, 2)).await.expect("answered");
            black_box(r);
        }
        start.elapsed()
    })
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let mut g = c.benchmark_group("serve");
    let plain = Serve::new(router());
    g.bench_function("router", |b| b.iter_custom(|n| serve_n(&rt, &plain, n)));
    let generated = Serve::new(Plain.into_router());
    g.bench_function("generated_router", |b| {
        b.iter_custom(|n| serve_n(&rt, &generated, n))
    });
    let layered = server_stack();
    g.bench_function("full_stack", |b| {
        b.iter_custom(|n| serve_n(&rt, &layered, n))
    });
    g.finish();

    // Each layer alone over the router.
    let mut g = c.benchmark_group("layer");
    let one = |l| -> Serve {
        let b = ServiceBuilder::new();
        match l {
            "trace" => Serve::new(b.layer(TraceLayer::new(Metrics::new())).service(router())),
            "rate_per_peer" => Serve::new(
                b.layer(RateLimitLayer::per_peer(
                    1_000_000_000,
                    Duration::from_secs(1),
                ))
                .service(router()),
            ),
            "concurrency_per_peer" => Serve::new(
                b.layer(KeyedConcurrencyLimitLayer::per_peer(100_000))
                    .service(router()),
            ),
            "load_shed" => Serve::new(
                b.load_shed()
                    .concurrency_limit(100_000)
                    .map_err(Into::<BoxError>::into)
                    .service(router()),
            ),
            _ => Serve::new(
                b.layer(DeadlineLayer::new().default_timeout(Duration::from_secs(10)))
                    .service(router()),
            ),
        }
    };
    for name in [
        "trace",
        "rate_per_peer",
        "concurrency_per_peer",
        "load_shed",
        "deadline",
    ] {
        let serve = one(name);
        g.bench_function(name, |b| b.iter_custom(|n| serve_n(&rt, &serve, n)));
    }
    g.finish();

    // A channel that answers every call at once with the same payload.
    let answer = Payload::encode(&MsgPack, &3i64).expect("encodes");
    let channel = tower::service_fn(move |_: Request| {
        let answer = answer.clone();
        async move { Ok::<_, rpc_core::Error>(answer) }
    });
    let bare = Client::new(channel.clone(), &MsgPack);
    let stacked = Client::new(channel, &MsgPack).layer(
        ServiceBuilder::new()
            .layer(SetDeadlineLayer::new(Duration::from_secs(5)))
            .layer(RetryLayer::new(RetryPolicy::new()))
            .layer(RateLimitLayer::global(
                1_000_000_000,
                Duration::from_secs(1),
            ))
            .concurrency_limit(100_000)
            .into_inner(),
    );
    let mut g = c.benchmark_group("client");
    g.bench_function("bare", |b| b.iter_custom(|n| call_n(&rt, &bare, n)));
    let adder = AdderClient::new(bare.clone());
    g.bench_function("generated", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    black_box(adder.add(1, 2).await.expect("answered"));
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("full_stack", |b| {
        b.iter_custom(|n| call_n(&rt, &stacked, n))
    });
    g.finish();
}

criterion_group!(benches, dispatch);

/// `RPC_DISPATCH_COUNT=N RPC_DISPATCH_ONLY=NAME`: runs N calls of one variant (`router`,
/// `generated_router`, `client`, `generated_client`) and exits, for counting instructions per
/// call under callgrind (the difference between two counts over the difference of calls), where
/// wall-clock time on a shared machine cannot tell a few percent apart.
fn count_only(n: u64, only: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let answer = Payload::encode(&MsgPack, &3i64).expect("encodes");
    let channel = tower::service_fn(move |_: Request| {
        let answer = answer.clone();
        async move { Ok::<_, rpc_core::Error>(answer) }
    });
    let bare = Client::new(channel, &MsgPack);
    match only {
        "router" => black_box(serve_n(&rt, &Serve::new(router()), n)),
        "generated_router" => black_box(serve_n(&rt, &Serve::new(Plain.into_router()), n)),
        "client" => black_box(call_n(&rt, &bare, n)),
        _ => {
            let adder = AdderClient::new(bare);
            rt.block_on(async {
                for _ in 0..n {
                    black_box(adder.add(1, 2).await.expect("answered"));
                }
            });
            Duration::ZERO
        }
    };
}

fn main() {
    if let Ok(n) = std::env::var("RPC_DISPATCH_COUNT") {
        let only = std::env::var("RPC_DISPATCH_ONLY").unwrap_or_default();
        count_only(n.parse().expect("a count"), &only);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
