//! Balancing, failover and keyed routing against real servers on loopback: TCP, Unix sockets and
//! UDP, with rpcudp's msgpack, JSON-RPC and MessagePack-RPC codecs.
//!
//! Every load is bounded in calls and in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_balance::discover::{self, Discovery};
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::{MsgpackRpcCodec, RpcudpCodec};
use rpc_core::{Client, Codec, Error, Payload, Request, Router};
use rpc_middleware::retry::RetryPolicy;
use rpc_transports::{stream::Framing, tcp, udp, unix};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service;

/// The most any test's load may take.
const BOUND: Duration = Duration::from_secs(60);

/// How many times each call token ran, over every server of a test.
type Runs = Arc<Mutex<HashMap<u64, u32>>>;

/// A server's router: `whoami` answers the server's index; `get` (idempotent) and `put` (not)
/// record the token they are given and answer the index; every call counts in `calls`, after
/// `delay`.
fn router(index: usize, calls: Arc<AtomicUsize>, runs: Runs, delay: Duration) -> Router {
    let whoami = {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                calls.fetch_add(1, Ordering::Relaxed);
                index
            }
        }
    };
    let record = move |calls: Arc<AtomicUsize>, runs: Runs| {
        move |token: u64| {
            let (calls, runs) = (calls.clone(), runs.clone());
            async move {
                *runs.lock().unwrap().entry(token).or_default() += 1;
                // Long enough for calls to be in flight when a server dies.
                tokio::time::sleep(Duration::from_micros(200)).await;
                calls.fetch_add(1, Ordering::Relaxed);
                index
            }
        }
    };
    Router::new()
        .route("whoami", whoami)
        .route("shard", move |_key: String| async move { index })
        .route("get", record(calls.clone(), runs.clone()))
        .route("put", record(calls, runs))
}

/// Runs `total` calls of `method` from `tasks` tasks, each call given a fresh token from
/// `first` on; returns how many succeeded.
async fn load<S>(
    client: Client<S>,
    method: &'static str,
    tasks: usize,
    first: u64,
    total: usize,
) -> usize
where
    S: Service<Request, Response = Payload, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (client, next) = (client.clone(), next.clone());
        set.spawn(async move {
            let mut ok = 0;
            loop {
                let token = next.fetch_add(1, Ordering::Relaxed);
                if token >= total {
                    return ok;
                }
                let args = if method == "whoami" {
                    client.call::<usize>(method, ()).await
                } else {
                    client.call::<usize>(method, (first + token as u64,)).await
                };
                ok += usize::from(args.is_ok());
            }
        });
    }
    tokio::time::timeout(BOUND, async {
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            ok += r.unwrap();
        }
        ok
    })
    .await
    .expect("the load finished in time")
}

fn shares(calls: &[Arc<AtomicUsize>]) -> Vec<f64> {
    let counts: Vec<usize> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total: usize = counts.iter().sum();
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

fn counters(n: usize) -> Vec<Arc<AtomicUsize>> {
    (0..n).map(|_| Arc::new(AtomicUsize::new(0))).collect()
}

async fn tcp_servers<C: Codec>(
    codec: C,
    delays: &[Duration],
    calls: &[Arc<AtomicUsize>],
) -> (Vec<tcp::Server>, Vec<SocketAddr>) {
    let mut servers = Vec::new();
    for (i, delay) in delays.iter().enumerate() {
        let r = router(i, calls[i].clone(), Runs::default(), *delay);
        servers.push(
            tcp::Builder::new()
                .serve(r)
                .bind("127.0.0.1:0", codec.clone())
                .await
                .unwrap(),
        );
    }
    let addrs = servers.iter().map(|s| s.local_addr()).collect();
    (servers, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// By calls in flight; peak EWMA, which keeps a latency peak for seconds, takes the Unix and UDP
/// servers of the next test.
async fn three_equal_tcp_servers_take_a_third_each() {
    let calls = counters(3);
    let (_servers, addrs) = tcp_servers(RpcudpCodec::new(), &[Duration::ZERO; 3], &calls).await;
    let balanced =
        rpc_balance::builder(|a: &SocketAddr| tcp::Builder::new().channel(*a, RpcudpCodec::new()))
            .pending_requests()
            .build(Discovery::fixed(addrs));
    let client = Client::new(balanced, &rpc_core::msgpack::MsgPack);
    assert_eq!(load(client, "whoami", 16, 0, 30_000).await, 30_000);
    let shares = shares(&calls);
    eprintln!("shares {shares:?}");
    for s in &shares {
        assert!((0.28..=0.38).contains(s), "shares {shares:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_and_udp_servers_with_other_codecs_share_the_calls() {
    // Unix sockets, MessagePack-RPC.
    let dir = tempdir();
    let calls = counters(3);
    let mut servers = Vec::new();
    let mut paths = Vec::new();
    for (i, calls) in calls.iter().enumerate() {
        let path = dir.join(format!("s{i}.sock"));
        let r = router(i, calls.clone(), Runs::default(), Duration::ZERO);
        servers.push(
            unix::Builder::new()
                .framing(Framing::MsgPack)
                .serve(r)
                .bind(&path, MsgpackRpcCodec::new())
                .await
                .unwrap(),
        );
        paths.push(path.display().to_string());
    }
    let balanced = rpc_balance::builder(|p: &String| {
        unix::Builder::new()
            .framing(Framing::MsgPack)
            .channel(p, MsgpackRpcCodec::new())
    })
    .build(Discovery::fixed(paths));
    let client = Client::new(balanced, &rpc_core::msgpack::MsgPack);
    assert_eq!(load(client, "whoami", 16, 0, 6_000).await, 6_000);
    let s = shares(&calls);
    // Peak EWMA keeps a latency peak for seconds: shares of equal servers wander, but none is
    // left out.
    assert!(s.iter().all(|s| (0.15..=0.55).contains(s)), "unix {s:?}");

    // UDP, JSON-RPC: one client socket calls every peer.
    let calls = counters(3);
    let mut peers = Vec::new();
    let mut endpoints = Vec::new();
    for (i, calls) in calls.iter().enumerate() {
        let r = router(i, calls.clone(), Runs::default(), Duration::ZERO);
        let ep = udp::Builder::new()
            .serve(r)
            .bind("127.0.0.1:0", JsonRpcCodec::new())
            .await
            .unwrap();
        peers.push(ep.local_addr());
        endpoints.push(ep);
    }
    let socket = udp::Builder::new()
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let balanced = rpc_balance::builder(move |peer: &SocketAddr| socket.channel(*peer))
        .build(Discovery::fixed(peers));
    let client = Client::new(balanced, &rpc_codecs::jsonrpc::Json);
    assert_eq!(load(client, "whoami", 16, 0, 6_000).await, 6_000);
    let s = shares(&calls);
    assert!(s.iter().all(|s| (0.15..=0.55).contains(s)), "udp {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_five_ms_slower_takes_under_a_tenth_with_peak_ewma() {
    let calls = counters(3);
    let delays = [Duration::ZERO, Duration::ZERO, Duration::from_millis(5)];
    let (_servers, addrs) = tcp_servers(RpcudpCodec::new(), &delays, &calls).await;
    let balanced =
        rpc_balance::builder(|a: &SocketAddr| tcp::Builder::new().channel(*a, RpcudpCodec::new()))
            .build(Discovery::fixed(addrs));
    let client = Client::new(balanced, &rpc_core::msgpack::MsgPack);
    assert_eq!(load(client, "whoami", 8, 0, 20_000).await, 20_000);
    let s = shares(&calls);
    eprintln!("shares {s:?}");
    assert!(s[2] < 0.10, "the slow server took {s:?}");
}

/// A TCP server on a runtime of its own, so that it can be killed: its runtime is shut down
/// and every task and socket of it dropped at once, mid-call, as when its process dies.
struct Host {
    runtime: Option<tokio::runtime::Runtime>,
    _server: Option<tcp::Server>,
}

impl Host {
    fn start(addr: SocketAddr, router: Router) -> Host {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let server = runtime
                .block_on(
                    tcp::Builder::new()
                        .serve(router)
                        .bind(addr, RpcudpCodec::new()),
                )
                .unwrap();
            Host {
                runtime: Some(runtime),
                _server: Some(server),
            }
        })
        .join()
        .unwrap()
    }

    fn kill(mut self) {
        self.runtime.take().unwrap().shutdown_background();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The first token of the calls that are not idempotent.
const PUTS: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_loses_no_idempotent_call_and_runs_none_twice() {
    let calls = counters(3);
    let runs = Runs::default();
    let mut hosts = Vec::new();
    let mut addrs = Vec::new();
    for (i, calls) in calls.iter().enumerate() {
        let r = router(i, calls.clone(), runs.clone(), Duration::ZERO);
        let host = Host::start("127.0.0.1:0".parse().unwrap(), r);
        addrs.push(host._server.as_ref().unwrap().local_addr());
        hosts.push(host);
    }
    let balanced =
        rpc_balance::builder(|a: &SocketAddr| tcp::Builder::new().channel(*a, RpcudpCodec::new()))
            .build(Discovery::fixed(addrs.clone()));
    let retried = tower::ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(
            RetryPolicy::new().idempotent(["get"]),
        ))
        .service(balanced);
    let client = Client::new(retried, &rpc_core::msgpack::MsgPack);

    // Idempotent calls: the kill lands while they run; every one succeeds.
    let gets = tokio::spawn(load(client.clone(), "get", 32, 0, 40_000));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = calls[1].load(Ordering::Relaxed);
    assert!(before > 0, "the doomed server took calls before it died");
    hosts.remove(1).kill();
    assert_eq!(gets.await.unwrap(), 40_000, "an idempotent call failed");

    // Calls that are not idempotent, across the kill of another server: some may fail (their
    // connection was lost mid-call), none runs twice.
    let puts = tokio::spawn(load(client.clone(), "put", 32, PUTS, 20_000));
    tokio::time::sleep(Duration::from_millis(100)).await;
    hosts.remove(0).kill();
    let ok = puts.await.unwrap();
    eprintln!("{ok} of 20 000 calls that are not idempotent succeeded");
    assert!(ok > 15_000, "{ok} of 20 000 calls succeeded");
    let twice: Vec<(u64, u32)> = runs
        .lock()
        .unwrap()
        .iter()
        .filter(|(token, n)| **token >= PUTS && **n > 1)
        .map(|(t, n)| (*t, *n))
        .collect();
    assert!(
        twice.is_empty(),
        "calls that are not idempotent ran twice: {twice:?}"
    );

    // The first server killed comes back on its port and takes calls again within 2 s.
    let back = Arc::new(AtomicUsize::new(0));
    let _host = Host::start(
        addrs[1],
        router(1, back.clone(), Runs::default(), Duration::ZERO),
    );
    let restarted = Instant::now();
    let lively = load(client.clone(), "whoami", 8, 0, usize::MAX);
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        while back.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::select! {
        r = waited => r.expect("the restarted server took calls within 2 s"),
        _ = lively => unreachable!("the load is unbounded"),
    }
    assert!(restarted.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_on_their_server_across_changes_of_the_set() {
    let calls = counters(4);
    let (_servers, addrs) = tcp_servers(RpcudpCodec::new(), &[Duration::ZERO; 4], &calls).await;
    let names: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let (endpoints, discovery) = discover::set();
    for n in &names[..3] {
        endpoints.insert(n.clone());
    }
    let keyed = rpc_balance::builder(|a: &String| {
        tcp::Builder::new().channel(a.as_str(), RpcudpCodec::new())
    })
    .keyed(discovery, |req| {
        req.args()
            .decode::<(String,)>()
            .ok()
            .map(|(k,)| k.into_bytes())
    });
    let client = Client::new(keyed.clone(), &rpc_core::msgpack::MsgPack);
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let where_is = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .map(|k| keyed.endpoint_for(k.as_bytes()).expect("an endpoint"))
            .collect()
    };
    let first = where_is(&keys);
    let used: std::collections::HashSet<_> = first.iter().collect();
    assert_eq!(used.len(), 3, "300 keys spread over the three servers");

    // Calls follow the routing: every key's calls reach its server.
    let check_calls = |routes: Vec<String>| {
        let (client, keys, names) = (client.clone(), keys.clone(), names.clone());
        async move {
            for (k, at) in keys.iter().zip(&routes) {
                let shard = client.call::<usize>("shard", (k.as_str(),)).await.unwrap();
                assert_eq!(&names[shard], at, "key {k}");
            }
        }
    };
    check_calls(first.clone()).await;

    // One leaves: only its keys move.
    endpoints.remove(names[1].clone());
    let second = where_is(&keys);
    for (a, b) in first.iter().zip(&second) {
        if *a != names[1] {
            assert_eq!(a, b, "a key of a server that stayed moved");
        } else {
            assert_ne!(b, &names[1]);
        }
    }
    check_calls(second.clone()).await;
    // One joins: keys either stay or move to it.
    endpoints.insert(names[3].clone());
    let third = where_is(&keys);
    let moved = second
        .iter()
        .zip(&third)
        .filter(|(a, b)| a != b)
        .inspect(|(_, b)| assert_eq!(**b, names[3], "a key moved to a server that was there"))
        .count();
    assert!(
        (30..=170).contains(&moved),
        "{moved} of 300 keys moved to the new server"
    );
    check_calls(third).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_server_dies_goes_to_its_next_server_and_comes_back() {
    let calls = counters(3);
    let mut hosts = Vec::new();
    let mut names = Vec::new();
    for (i, calls) in calls.iter().enumerate() {
        let r = router(i, calls.clone(), Runs::default(), Duration::ZERO);
        let host = Host::start("127.0.0.1:0".parse().unwrap(), r);
        names.push(host._server.as_ref().unwrap().local_addr().to_string());
        hosts.push(Some(host));
    }
    let keyed = rpc_balance::builder(|a: &String| {
        tcp::Builder::new().channel(a.as_str(), RpcudpCodec::new())
    })
    .keyed(Discovery::fixed(names.clone()), |req| {
        req.args()
            .decode::<(String,)>()
            .ok()
            .map(|(k,)| k.into_bytes())
    });
    // `shard` only reads: a call whose connection was lost may be sent again.
    let client = Client::new(keyed.clone(), &rpc_core::msgpack::MsgPack).layer(
        tower::retry::RetryLayer::new(RetryPolicy::new().idempotent(["shard"])),
    );
    let key = "user-7";
    let home = keyed.endpoint_for(key.as_bytes()).unwrap();
    let home_index = names.iter().position(|n| *n == home).unwrap();
    assert_eq!(
        client.call::<usize>("shard", (key,)).await.unwrap(),
        home_index
    );

    // Its server dies: the call fails there (the connection is lost, or refused), the endpoint
    // is ejected and the retry goes to the key's next server, which keeps it while the first is
    // out.
    hosts[home_index].take().unwrap().kill();
    let moved = client.call::<usize>("shard", (key,)).await.unwrap();
    assert_ne!(moved, home_index);
    for _ in 0..20 {
        assert_eq!(client.call::<usize>("shard", (key,)).await.unwrap(), moved);
    }

    // Back on its port, it gets its key again once its ejection ends.
    let back = Arc::new(AtomicUsize::new(0));
    hosts[home_index] = Some(Host::start(
        home.parse().unwrap(),
        router(home_index, back.clone(), Runs::default(), Duration::ZERO),
    ));
    let start = Instant::now();
    while client.call::<usize>("shard", (key,)).await.unwrap() != home_index {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the key did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_on_an_empty_set_all_go_once_an_endpoint_comes() {
    let calls = counters(1);
    let (_servers, addrs) = tcp_servers(RpcudpCodec::new(), &[Duration::ZERO], &calls).await;
    let (endpoints, discovery) = discover::set();
    let balanced =
        rpc_balance::builder(|a: &SocketAddr| tcp::Builder::new().channel(*a, RpcudpCodec::new()))
            .timeout(Duration::from_secs(20))
            .build(discovery);
    let client = Client::new(balanced.clone(), &rpc_core::msgpack::MsgPack);
    // Twenty calls wait, each with a waker of its own.
    let mut waiting = JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        waiting.spawn(async move { client.call::<usize>("whoami", ()).await });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A look from outside in the meantime takes no waiter's wake-up.
    assert!(balanced.is_empty());
    let inserted = Instant::now();
    endpoints.insert(addrs[0]);
    // The handle goes: the set stays as it was, and the balancer keeps serving.
    drop(endpoints);
    while let Some(r) = waiting.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 0);
    }
    assert!(
        inserted.elapsed() < Duration::from_secs(5),
        "the waiting calls took {:?}",
        inserted.elapsed()
    );
    assert_eq!(client.call::<usize>("whoami", ()).await.unwrap(), 0);
    assert_eq!(balanced.len(), 1);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rpc-balance-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
