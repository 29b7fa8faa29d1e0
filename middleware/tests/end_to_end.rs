//! The layers end to end, over real sockets on 127.0.0.1 with the rpcudp (msgpack) codec: rate
//! limits per peer, deadlines on both sides, retries through datagram loss, and the retry budget
//! under total failure. Every test is bounded in time by [`BOUND`] (or less where it says).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Client, ErrorCode, Request, Router, Service};
use rpc_middleware::deadline::DeadlineLayer;
use rpc_middleware::limit::RateLimitLayer;
use rpc_middleware::retry::RetryPolicy;
use rpc_transports::{tcp, udp};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;

/// The most any test may take.
const BOUND: Duration = Duration::from_secs(20);
const LOCALHOST: &str = "127.0.0.1:0";

/// Runs a test's body, failing it if it takes longer than `bound`.
async fn bounded<F: Future>(bound: Duration, body: F) -> F::Output {
    tokio::time::timeout(bound, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {bound:?}"))
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

// --- rate limits ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_peer_is_refused_while_another_is_served() {
    bounded(BOUND, async {
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::per_peer(5, Duration::from_secs(1)))
            .service(Router::new().route("add", add));
        let server = udp::Builder::new()
            .serve(service)
            .bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        // Two sockets, two source ports: two peers.
        let a = udp::Endpoint::bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        let b = udp::Endpoint::bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        let (a, b) = (
            a.client(server.local_addr())
                .with_timeout(Duration::from_secs(5)),
            b.client(server.local_addr())
                .with_timeout(Duration::from_secs(5)),
        );

        // A floods with 20 calls at once while B makes 5, its whole quota, in the same moment.
        let start = Instant::now();
        let flood = join_all((0..20i64).map(|i| a.call::<i64>("add", (i, 1))));
        let polite = join_all((0..5i64).map(|i| b.call::<i64>("add", (i, 100))));
        let (flood, polite) = tokio::join!(flood, polite);
        let took = start.elapsed();

        for (i, r) in polite.into_iter().enumerate() {
            assert_eq!(r.unwrap(), i as i64 + 100, "B's call {i}");
        }
        let mut served = 0;
        let mut refused = 0;
        for (i, r) in flood.into_iter().enumerate() {
            match r {
                Ok(sum) => {
                    assert_eq!(sum, i as i64 + 1);
                    served += 1;
                }
                Err(e) => {
                    assert!(e.is_overloaded(), "{e:?}");
                    assert_eq!(e.code(), Some(ErrorCode::RATE_LIMITED), "{e:?}");
                    let hint = e
                        .server_error()
                        .and_then(|s| s.data()?["retry_after_ms"].as_u64());
                    assert!(hint.is_some_and(|ms| ms > 0), "{e:?}");
                    refused += 1;
                }
            }
        }
        // A burst of 5, plus one more per 200 ms the flood took.
        let allowed = 5 + (took.as_millis() / 200) as usize;
        assert!(
            served >= 5 && served <= allowed,
            "A was served {served} times in {took:?}"
        );
        assert_eq!(served + refused, 20);
        assert!(refused >= 10, "A was refused only {refused} times");
        server.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

// --- deadlines -----------------------------------------------------------------------------------

/// The transports the deadline tests run over.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Udp,
    Tcp,
}

/// A running server of either transport.
enum Server {
    Udp(udp::Endpoint<RpcudpCodec>),
    Tcp(tcp::Server),
}

impl Server {
    async fn start<S>(kind: Kind, service: S) -> Server
    where
        S: Service<Request, Response = rpc_core::Response> + Clone + Send + Sync + 'static,
        S::Error: Into<rpc_core::BoxError>,
        S::Future: Send + 'static,
    {
        let codec = RpcudpCodec::new();
        match kind {
            Kind::Udp => Server::Udp(
                udp::Builder::new()
                    .serve(service)
                    .bind(LOCALHOST, codec)
                    .await
                    .unwrap(),
            ),
            Kind::Tcp => Server::Tcp(
                tcp::Builder::new()
                    .serve(service)
                    .bind(LOCALHOST, codec)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// A client of the server, boxed to one type.
    async fn client(&self) -> Client<rpc_core::BoxChannel> {
        let codec = RpcudpCodec::new();
        match self {
            Server::Udp(s) => udp::Endpoint::bind(LOCALHOST, codec)
                .await
                .unwrap()
                .client(s.local_addr())
                .boxed(),
            Server::Tcp(s) => tcp::Builder::new().client(s.local_addr(), codec).boxed(),
        }
    }

    async fn shutdown(&self) {
        // Handlers cut short at the client's side may still be sleeping: do not wait for them.
        match self {
            Server::Udp(s) => s.shutdown(Duration::from_millis(100)).await,
            Server::Tcp(s) => s.shutdown(Duration::from_millis(100)).await,
        };
    }
}

/// What a slow handler got to: cancelled (its future dropped) or finished.
#[derive(Debug, Default)]
struct Fate {
    started: AtomicBool,
    dropped: AtomicBool,
    finished: AtomicBool,
}

struct DropFlag(Arc<Fate>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped.store(true, Ordering::SeqCst);
    }
}

impl Fate {
    fn reset(&self) {
        for flag in [&self.started, &self.dropped, &self.finished] {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

/// A router whose `slow(ms)` sleeps `ms` milliseconds, recording its fate.
fn slow_router(fate: Arc<Fate>) -> Router {
    Router::new().route("slow", move |ms: u64| {
        let fate = fate.clone();
        async move {
            fate.started.store(true, Ordering::SeqCst);
            let guard = DropFlag(fate.clone());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            fate.finished.store(true, Ordering::SeqCst);
            drop(guard);
            ms
        }
    })
}

async fn a_slow_handler_times_out_within_the_client_deadline(kind: Kind) {
    let fate = Arc::new(Fate::default());
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer::new())
        .service(slow_router(fate.clone()));
    let server = Server::start(kind, service).await;
    let client = server
        .client()
        .await
        .with_timeout(Duration::from_millis(200));
    // A first call opens the connection (TCP), so the timed call measures only itself.
    assert_eq!(client.call::<u64>("slow", (0,)).await.unwrap(), 0);
    fate.reset();

    let start = Instant::now();
    let e = client.call::<u64>("slow", (2000,)).await.unwrap_err();
    let took = start.elapsed();
    assert!(e.is_timeout(), "{kind:?}: {e:?}");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(600),
        "{kind:?}: the timeout came after {took:?}"
    );
    assert!(fate.started.load(Ordering::SeqCst));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_handler_times_out_within_the_client_deadline_udp() {
    bounded(
        BOUND,
        a_slow_handler_times_out_within_the_client_deadline(Kind::Udp),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_handler_times_out_within_the_client_deadline_tcp() {
    bounded(
        BOUND,
        a_slow_handler_times_out_within_the_client_deadline(Kind::Tcp),
    )
    .await;
}

async fn the_server_deadline_cancels_a_slow_handler(kind: Kind) {
    let fate = Arc::new(Fate::default());
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer::new().default_timeout(Duration::from_millis(300)))
        .service(slow_router(fate.clone()));
    let server = Server::start(kind, service).await;
    let client = server.client().await.with_timeout(Duration::from_secs(5));
    assert_eq!(client.call::<u64>("slow", (0,)).await.unwrap(), 0);
    fate.reset();

    let start = Instant::now();
    let e = client.call::<u64>("slow", (3000,)).await.unwrap_err();
    let took = start.elapsed();
    // The server answered: its deadline, not the client's, ended the call.
    assert_eq!(
        e.code(),
        Some(ErrorCode::DEADLINE_EXCEEDED),
        "{kind:?}: {e:?}"
    );
    assert!(e.is_timeout());
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "{kind:?}: answered after {took:?}"
    );
    // The handler was cancelled before it could finish, not left running.
    assert!(fate.started.load(Ordering::SeqCst));
    assert!(fate.dropped.load(Ordering::SeqCst), "{kind:?}: {fate:?}");
    assert!(!fate.finished.load(Ordering::SeqCst), "{kind:?}: {fate:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_deadline_cancels_a_slow_handler_tcp() {
    bounded(BOUND, the_server_deadline_cancels_a_slow_handler(Kind::Tcp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_deadline_cancels_a_slow_handler_udp() {
    bounded(BOUND, the_server_deadline_cancels_a_slow_handler(Kind::Udp)).await;
}

// --- retries through loss ------------------------------------------------------------------------

/// xorshift64: a small deterministic generator, so a lossy link drops the same datagrams each run.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    /// Whether to drop the next datagram, with probability `percent` / 100.
    fn drops(&mut self, percent: u64) -> bool {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % 100 < percent
    }
}

/// What a lossy proxy did.
#[derive(Debug, Default)]
struct LinkStats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A UDP proxy for one client: datagrams to its address go on to `server`, replies come back to
/// the client, and `percent`% of them are dropped in each direction (decided by two generators
/// seeded from `seed`). Runs until the returned task is aborted.
async fn lossy_proxy(
    server: SocketAddr,
    seed: u64,
    percent: u64,
    stats: Arc<LinkStats>,
) -> (SocketAddr, JoinHandle<()>) {
    let front = UdpSocket::bind(LOCALHOST).await.unwrap();
    let back = UdpSocket::bind(LOCALHOST).await.unwrap();
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut up = XorShift::new(seed);
        let mut down = XorShift::new(seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15);
        let mut client = None;
        let (mut from_client, mut from_server) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        loop {
            tokio::select! {
                r = front.recv_from(&mut from_client) => {
                    let Ok((n, from)) = r else { continue };
                    client = Some(from);
                    if up.drops(percent) {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        let _ = back.send(&from_client[..n]).await;
                    }
                }
                r = back.recv(&mut from_server) => {
                    let (Ok(n), Some(to)) = (r, client) else { continue };
                    if down.drops(percent) {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        let _ = front.send_to(&from_server[..n], to).await;
                    }
                }
            }
        }
    });
    (addr, task)
}

/// Lanes of sequential calls, each through its own lossy proxy (so each lane's losses are the
/// same every run, whatever the scheduling), lanes running at once.
const LANES: u64 = 10;
const CALLS_PER_LANE: i64 = 20;
const LOSS_PERCENT: u64 = 30;
/// The time one attempt may take.
const PER_TRY: Duration = Duration::from_millis(100);

/// Makes `LANES * CALLS_PER_LANE` calls of `add` through lossy proxies, with `retry` (or none)
/// and a per-try timeout inside it; returns the failures (panicking on a wrong sum), and what the
/// links did.
async fn calls_through_loss(
    server: SocketAddr,
    seed: u64,
    retry: Option<RetryPolicy>,
) -> (usize, Arc<LinkStats>) {
    let stats = Arc::new(LinkStats::default());
    let lanes = (0..LANES).map(|lane| {
        let stats = stats.clone();
        let retry = retry.clone();
        async move {
            let (proxy, task) = lossy_proxy(server, seed + lane * 7919, LOSS_PERCENT, stats).await;
            let endpoint = udp::Endpoint::bind(LOCALHOST, RpcudpCodec::new())
                .await
                .unwrap();
            let client = endpoint.client(proxy);
            let mut failures = 0;
            match retry {
                Some(policy) => {
                    let client = client.layer(
                        ServiceBuilder::new()
                            .layer(RetryLayer::new(policy))
                            .layer(TimeoutLayer::new(PER_TRY))
                            .into_inner(),
                    );
                    for i in 0..CALLS_PER_LANE {
                        match client.call::<i64>("add", (i, lane as i64 * 1000)).await {
                            Ok(sum) => assert_eq!(sum, i + lane as i64 * 1000),
                            Err(e) => {
                                assert!(e.is_timeout(), "{e:?}");
                                failures += 1;
                            }
                        }
                    }
                }
                None => {
                    let client = client.layer(TimeoutLayer::new(PER_TRY));
                    for i in 0..CALLS_PER_LANE {
                        match client.call::<i64>("add", (i, lane as i64 * 1000)).await {
                            Ok(sum) => assert_eq!(sum, i + lane as i64 * 1000),
                            Err(e) => {
                                assert!(e.is_timeout(), "{e:?}");
                                failures += 1;
                            }
                        }
                    }
                }
            }
            task.abort();
            failures
        }
    });
    let failures = join_all(lanes).await.into_iter().sum();
    (failures, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_recover_calls_through_30_percent_datagram_loss() {
    let start = Instant::now();
    bounded(BOUND, async {
        let server = udp::Builder::new()
            .serve(Router::new().route("add", add))
            .bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        let total = (LANES as usize) * (CALLS_PER_LANE as usize);

        // Without retries, a call fails when its request or its reply is lost: about half.
        let (failures, links) = calls_through_loss(server.local_addr(), 1, None).await;
        let dropped = links.dropped.load(Ordering::Relaxed);
        let forwarded = links.forwarded.load(Ordering::Relaxed);
        assert!(
            failures * 100 >= total * 30,
            "without retries only {failures} of {total} calls failed"
        );
        println!("without retries: {failures} of {total} calls failed ({dropped} datagrams dropped, {forwarded} forwarded)");

        // With retries, every call succeeds. At 30% loss each way an attempt fails about half the
        // time (0.7 * 0.7 = 0.49 succeed), so:
        // - calls need about one retry each on average: more than the default budget (20% of
        //   successes, plus 10 a second) allows, which is the budget doing its job; this test
        //   gives retries a budget of one per success, plus 10 a second;
        // - 8 attempts would leave 0.51^8 = 0.5% of calls failing (1 of 200): 16 leave 0.002%.
        let policy = RetryPolicy::with_budget(TpsBudget::new(Duration::from_secs(10), 10, 1.0))
            .idempotent(["add"])
            .max_attempts(16)
            .backoff(Duration::from_millis(5), Duration::from_millis(50), 0.0);
        let retries_start = Instant::now();
        let (failures, links) = calls_through_loss(server.local_addr(), 1, Some(policy)).await;
        let dropped = links.dropped.load(Ordering::Relaxed);
        let forwarded = links.forwarded.load(Ordering::Relaxed);
        let loss = dropped as f64 / (dropped + forwarded) as f64;
        println!(
            "with retries: {failures} of {total} calls failed ({dropped} datagrams dropped, {forwarded} forwarded, {:.0}% loss) in {:?}",
            loss * 100.0,
            retries_start.elapsed()
        );
        assert_eq!(failures, 0, "calls failed despite retries");
        assert!(
            (0.2..0.4).contains(&loss),
            "the links lost {:.0}% of datagrams",
            loss * 100.0
        );
        server.shutdown(Duration::from_secs(1)).await;
    })
    .await;
    assert!(start.elapsed() < BOUND);
}

// --- the retry budget ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_total_failure_the_budget_caps_retries() {
    bounded(BOUND, async {
        // A "server" that never answers, counting what it receives.
        let black_hole = UdpSocket::bind(LOCALHOST).await.unwrap();
        let addr = black_hole.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counter = {
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while black_hole.recv_from(&mut buf).await.is_ok() {
                    received.fetch_add(1, Ordering::SeqCst);
                }
            })
        };

        // 10% of successes, at least 1 a second over 10 s: with no success, a reserve of 10.
        const CALLS: u64 = 100;
        const MAX_ATTEMPTS: u32 = 5;
        let policy = RetryPolicy::with_budget(TpsBudget::new(Duration::from_secs(10), 1, 0.1))
            .idempotent(["add"])
            .max_attempts(MAX_ATTEMPTS)
            .backoff(Duration::from_millis(1), Duration::from_millis(5), 0.0);
        let endpoint = udp::Endpoint::bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        let client = endpoint.client(addr).layer(
            ServiceBuilder::new()
                .layer(RetryLayer::new(policy))
                .layer(TimeoutLayer::new(Duration::from_millis(50)))
                .into_inner(),
        );
        let results = join_all((0..CALLS as i64).map(|i| client.call::<i64>("add", (i, 1)))).await;
        for r in results {
            let e = r.unwrap_err();
            assert!(e.is_timeout(), "{e:?}");
        }
        // Let datagrams still on their way arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let received = received.load(Ordering::SeqCst);
        counter.abort();
        println!(
            "{received} datagrams for {CALLS} calls (without a budget: {})",
            CALLS * MAX_ATTEMPTS as u64
        );
        assert!(received > CALLS, "no retry at all: {received}");
        // The calls, the reserve (10) and at most 10% more.
        assert!(
            received <= CALLS + 10 + CALLS / 10,
            "{received} datagrams: the budget did not hold"
        );
    })
    .await;
}
