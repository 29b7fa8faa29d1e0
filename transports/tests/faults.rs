//! UDP under faults: a proxy that loses, duplicates, delays (reorders) and corrupts datagrams at
//! set rates; calls end in the right result or a timeout, never a wrong one; with the at-most-once
//! cache and retransmission, calls survive loss without running twice. Bounded in count and time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Error, Router};
use rpc_transports::udp::{Builder, Endpoint};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Fault rates, each from 0 to 1.
#[derive(Clone, Copy, Default)]
struct Faults {
    loss: f64,
    duplicate: f64,
    delay: f64,
    corrupt: f64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// Forwards datagrams between one client and `server`, with `faults` in both directions.
/// Returns the address the client should call.
async fn fault_proxy(server: SocketAddr, faults: Faults, seed: u64) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let client = Arc::new(Mutex::new(None::<SocketAddr>));

    async fn forward(
        out: Arc<UdpSocket>,
        to: SocketAddr,
        mut d: Vec<u8>,
        f: Faults,
        rng: &mut Rng,
    ) {
        if rng.chance(f.loss) {
            return;
        }
        if rng.chance(f.corrupt) && !d.is_empty() {
            let i = (rng.next() as usize) % d.len();
            d[i] ^= 1 << (rng.next() % 8);
        }
        let copies = if rng.chance(f.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            if rng.chance(f.delay) {
                let wait = Duration::from_millis(rng.next() % 20);
                let (out, d) = (out.clone(), d.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = out.send_to(&d, to).await;
                });
            } else {
                let _ = out.send_to(&d, to).await;
            }
        }
    }

    {
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        tokio::spawn(async move {
            let mut rng = Rng(seed | 1);
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                forward(back.clone(), server, buf[..n].to_vec(), faults, &mut rng).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut rng = Rng(seed.rotate_left(17) | 1);
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                forward(front.clone(), to, buf[..n].to_vec(), faults, &mut rng).await;
            }
        }
    });
    addr
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// `calls` calls over `workers` tasks; returns (right, timed out); panics on any wrong result or
/// other error.
async fn run_calls(
    client: rpc_core::Client<rpc_core::BoxChannel>,
    calls: i64,
    workers: i64,
) -> (u64, u64) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut lost) = (0, 0);
            let mut i = w;
            while i < calls {
                match c.call::<i64>("add", (i, 1_000_000)).await {
                    Ok(r) => {
                        assert_eq!(r, i + 1_000_000, "a wrong or mismatched result");
                        ok += 1;
                    }
                    Err(Error::Timeout) => lost += 1,
                    Err(e) => panic!("call {i}: unexpected error {e}"),
                }
                i += workers;
            }
            (ok, lost)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (ok, lost) = t.await.unwrap();
        total.0 += ok;
        total.1 += lost;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_through_loss_and_duplication_are_right_or_time_out() {
    timeout(Duration::from_secs(60), async {
        let server = Builder::new()
            .serve(Router::new().route("add", add))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let faults = Faults {
            loss: 0.2,
            duplicate: 0.1,
            delay: 0.05,
            corrupt: 0.0,
        };
        let proxy = fault_proxy(server.local_addr(), faults, 0x5eed).await;
        let ep = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let client = ep
            .client(proxy)
            .with_timeout(Duration::from_millis(100))
            .boxed();
        let (ok, lost) = run_calls(client, 10_000, 200).await;
        assert_eq!(ok + lost, 10_000);
        // About 64% of calls get both datagrams through.
        assert!(ok > 5_000, "{ok} right, {lost} lost");
        assert_eq!(ep.calls_in_flight(), 0);
        // Duplicated and late answers were dropped as unknown, never delivered twice.
        assert!(ep.stats().unknown_responses > 0, "{:?}", ep.stats());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_does_not_stop_either_end() {
    timeout(Duration::from_secs(30), async {
        let server = Builder::new()
            .serve(Router::new().route("add", add))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let faults = Faults {
            corrupt: 0.3,
            delay: 0.1,
            ..Faults::default()
        };
        let proxy = fault_proxy(server.local_addr(), faults, 0xc0ffee).await;
        let ep = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let client = ep.client(proxy).with_timeout(Duration::from_millis(100));
        // A corrupted datagram may be dropped, answered with an error, or (rpcudp has no
        // checksum of its own; UDP's is below the proxy) decode to another value: any outcome
        // but a panic or a hang is fine here.
        for chunk in 0..10i64 {
            let calls = (0..100i64).map(|i| client.call::<i64>("add", (chunk * 100 + i, 1)));
            let _ = futures::future::join_all(calls).await;
        }
        // Both ends still work.
        let direct = ep.client(server.local_addr());
        assert_eq!(direct.call::<i64>("add", (2, 3)).await.unwrap(), 5);
        assert!(server.stats().malformed > 0, "{:?}", server.stats());
    })
    .await
    .unwrap();
}

async fn runs_per_call(at_most_once: bool) -> (HashMap<i64, u32>, u64) {
    let runs = Arc::new(Mutex::new(HashMap::<i64, u32>::new()));
    let seen = runs.clone();
    let router = Router::new().route("record", move |i: i64| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap().entry(i).or_default() += 1;
            i
        }
    });
    let mut builder = Builder::new().serve(router);
    if at_most_once {
        builder = builder.at_most_once(10_000, Duration::from_secs(60));
    }
    let server = builder
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let faults = Faults {
        loss: 0.3,
        duplicate: 0.1,
        delay: 0.05,
        corrupt: 0.0,
    };
    let proxy = fault_proxy(server.local_addr(), faults, 0xa770).await;
    let ep = Builder::new()
        .retransmit_every(Duration::from_millis(20))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let client = ep.client(proxy).with_timeout(Duration::from_secs(5));
    let calls = (0..500i64).map(|i| client.call::<i64>("record", (i,)));
    for (i, r) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.expect("retransmission recovers every call"), i as i64);
    }
    let duplicates = server.stats().duplicates;
    let runs = runs.lock().unwrap().clone();
    (runs, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_with_retransmission_runs_each_call_once_through_loss() {
    timeout(Duration::from_secs(60), async {
        let (runs, duplicates) = runs_per_call(true).await;
        assert_eq!(runs.len(), 500);
        let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "ran more than once: {twice:?}");
        assert!(duplicates > 0, "retransmissions reached the cache");

        // Without the cache the same retransmissions run calls again.
        let (runs, _) = runs_per_call(false).await;
        assert!(
            runs.values().any(|n| *n > 1),
            "expected re-runs without the cache"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_retransmitted_datagram_is_answered_from_the_cache() {
    let count = Arc::new(Mutex::new(0u32));
    let c = count.clone();
    let server = Builder::new()
        .at_most_once(2, Duration::from_secs(60))
        .serve(Router::new().route("bump", move || {
            let c = c.clone();
            async move {
                let mut n = c.lock().unwrap();
                *n += 1;
                *n
            }
        }))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = |id: u8| {
        let mut d = vec![0x00];
        d.extend([id; 20]);
        d.extend(b"\x92\xa4bump\x90");
        d
    };
    let mut answers = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        raw.send_to(&request(1), server.local_addr()).await.unwrap();
        let (n, _) = timeout(Duration::from_secs(2), raw.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(*count.lock().unwrap(), 1, "the handler ran once");
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "the same answer each time"
    );
    assert_eq!(server.stats().duplicates, 2);
    // Another id runs; past the capacity the oldest is forgotten and would run again.
    for id in [2, 3, 1] {
        raw.send_to(&request(id), server.local_addr())
            .await
            .unwrap();
        timeout(Duration::from_secs(2), raw.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(*count.lock().unwrap(), 4);
    assert!(server.remembered_requests() <= 2);
}

#[tokio::test]
async fn at_most_once_keeps_a_running_request_however_full_the_cache() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let server = Builder::new()
        .at_most_once(8, Duration::from_secs(60))
        .serve(
            Router::new()
                .route("once", move || {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(600)).await;
                        1u32
                    }
                })
                .route("add", |a: i64, b: i64| async move { a + b }),
        )
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    // A caller that sends its request again every 200 ms while it waits.
    let caller = Builder::new()
        .retransmit_every(Duration::from_millis(200))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let call = tokio::spawn({
        let client = caller.client(server.local_addr());
        async move { client.call::<u32>("once", ()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Meanwhile another peer's calls fill the cache past its capacity.
    let other = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let client = other.client(server.local_addr());
    for i in 0..16 {
        assert_eq!(client.call::<i64>("add", (i, 1)).await.unwrap(), i + 1);
    }
    assert_eq!(
        timeout(Duration::from_secs(10), call)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        1
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the call ran more than once"
    );
}

#[tokio::test]
async fn at_most_once_answers_a_copy_with_the_error_that_replaced_a_too_large_answer() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let server = Builder::new()
        .at_most_once(8, Duration::from_secs(60))
        .serve(Router::new().route("huge", move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "x".repeat(100_000)
            }
        }))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // rpcudp: a request byte, the id, then [method, args].
    let request = [&[0x00][..], &[0x42; 20], b"\x92\xa4huge\x90"].concat();
    let mut answers = Vec::new();
    for _ in 0..2 {
        peer.send_to(&request, server.local_addr()).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        let (n, _) = timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        answers.push(buf[..n].to_vec());
    }
    // The copy got the same "too large" answer, from the cache.
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].len() < 1000, "an error, not the value");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
