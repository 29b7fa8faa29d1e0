//! Hostile peers: what they do to a server, and what it must survive. Garbage datagrams, 4 GiB
//! length prefixes, connections that stall half-way through a frame, peers that open connections
//! without end, peers that never read their answers, giant and deeply nested JSON-RPC, frames of
//! the largest size that never end, frames built to expand in decoding, one host that takes every
//! connection or request it can. Several 127.x.y.z source addresses stand for several hosts. In
//! each, a separate well-behaved client keeps calling during the attack, and must keep
//! getting right answers, each within `GOOD_LATENCY`; the process's resident memory (RSS) must not
//! grow by more than `RSS_BOUND`.
//!
//! Everything is on loopback; every loop is bounded in count and in time, and every test runs under
//! a timeout. The tests run one at a time (`serial`): RSS is per process, so a test's measurement
//! would otherwise include its neighbours' buffers. Each test prints what it measured (run with
//! `--nocapture` to see it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::{MessageId, RpcudpCodec};
use rpc_core::{Codec, Router};
use rpc_transports::{tcp, udp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// Each test's time limit (they take 1-3 s each; the whole file about 10 s).
const LIMIT: Duration = Duration::from_secs(20);
/// How long each attack lasts.
const ATTACK: Duration = Duration::from_secs(2);
/// The slowest a well-behaved client's call may be during an attack.
const GOOD_LATENCY: Duration = Duration::from_secs(1);
/// The same during a UDP flood, where the kernel drops the good client's datagrams along with the
/// garbage (both cores are busy flooding) and only retransmission gets them through, and while
/// both cores decode frames of the largest size.
const SATURATED_LATENCY: Duration = Duration::from_secs(3);
/// How much the process's RSS may grow during one attack.
const RSS_BOUND: u64 = 64 << 20;
/// A good client stops after this many calls, whatever the time.
const MAX_GOOD_CALLS: i64 = 20_000;

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn blob(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![1u8; n])
}

fn router() -> Router {
    Router::new().route("add", add).route("blob", blob)
}

/// Runs one test: alone (see the module's comment), on a 2-worker runtime, within `LIMIT`.
fn serial<F: Future<Output = ()>>(test: F) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        timeout(LIMIT, test)
            .await
            .expect("the test did not finish in time")
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

// ---- memory ------------------------------------------------------------------------------------

/// The process's resident set size (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Samples the RSS every few milliseconds from `start` to `finish`, to see the peak, not just the
/// end.
struct RssProbe {
    before: u64,
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl RssProbe {
    fn start() -> Self {
        let before = rss_bytes();
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, task) = watch_most(&stop, Duration::from_millis(5), || rss_bytes() as usize);
        Self {
            before,
            peak,
            stop,
            task,
        }
    }

    /// Stops sampling; returns the growth from the start to the peak (or the end, if higher),
    /// and prints it.
    async fn finish(self, what: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let after = rss_bytes();
        let peak = (self.peak.load(Ordering::Relaxed) as u64)
            .max(after)
            .max(self.before);
        let growth = peak.saturating_sub(self.before);
        println!(
            "[{what}] RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB: growth {:.1} MiB",
            mib(self.before),
            mib(peak),
            mib(after),
            mib(growth)
        );
        growth
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

// ---- the well-behaved client -------------------------------------------------------------------

/// What a well-behaved client saw.
#[derive(Debug, Default)]
struct Served {
    ok: u64,
    failed: u64,
    max_latency: Duration,
    first_error: Option<String>,
}

impl Served {
    /// The client was served throughout: every call right, none slow, and at least `min` of them.
    fn assert_served(&self, what: &str, min: u64) {
        self.assert_served_within(what, min, GOOD_LATENCY)
    }

    /// As `assert_served`, with another bound on latency.
    fn assert_served_within(&self, what: &str, min: u64, latency: Duration) {
        println!(
            "[{what}] good client: {} calls ok, {} failed, max latency {:?}",
            self.ok, self.failed, self.max_latency
        );
        assert_eq!(
            self.failed, 0,
            "[{what}] good client calls failed: first {:?}",
            self.first_error
        );
        assert!(
            self.ok >= min,
            "[{what}] only {} good calls in the attack",
            self.ok
        );
        assert!(
            self.max_latency < latency,
            "[{what}] a good call took {:?}",
            self.max_latency
        );
    }
}

/// Calls `call(i)` (which must answer `i + 1000`) again and again, a few milliseconds apart, until
/// `stop` is set (and at most `MAX_GOOD_CALLS` times); counts right answers and the slowest one.
/// A call that takes over 3 s is given up and counted as failed.
fn good_client<F, Fut>(mut call: F, stop: Arc<AtomicBool>) -> JoinHandle<Served>
where
    F: FnMut(i64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<i64, rpc_core::Error>> + Send,
{
    tokio::spawn(async move {
        let mut s = Served::default();
        for i in 0..MAX_GOOD_CALLS {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let t = Instant::now();
            let r = timeout(Duration::from_secs(3), call(i)).await;
            s.max_latency = s.max_latency.max(t.elapsed());
            match r {
                Ok(Ok(n)) if n == i + 1000 => s.ok += 1,
                other => {
                    s.failed += 1;
                    s.first_error
                        .get_or_insert_with(|| format!("call {i}: {other:?}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s
    })
}

/// A good client calling `add` through `client` (see [`good_client`]).
fn good_adder<S>(client: rpc_core::Client<S>, stop: Arc<AtomicBool>) -> JoinHandle<Served>
where
    S: tower::Service<rpc_core::Request, Response = rpc_core::Payload>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<rpc_core::BoxError>,
    S::Future: Send,
{
    good_client(
        move |i| {
            let c = client.clone();
            async move { c.call::<i64>("add", (i, 1000)).await }
        },
        stop,
    )
}

/// A good TCP client of `addr` (rpcudp codec), started at once.
/// Connected (by a first call) before it returns: the attacks are on a server with a client
/// already being served, and a connect that meets a flood of others can wait a second for the
/// kernel to retransmit its SYN.
async fn good_tcp_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<Served> {
    let client = tcp::Builder::new().client(addr, RpcudpCodec::new());
    let first: i64 = client.call("add", (0, 1000)).await.unwrap();
    assert_eq!(first, 1000);
    good_adder(client, stop)
}

/// The most `read` gave, sampled `every` so often until `stop` is set (for at most `LIMIT`, a
/// test's whole time).
fn watch_most(
    stop: &Arc<AtomicBool>,
    every: Duration,
    read: impl Fn() -> usize + Send + 'static,
) -> (Arc<AtomicUsize>, JoinHandle<()>) {
    let most = Arc::new(AtomicUsize::new(0));
    let task = {
        let (most, stop) = (most.clone(), stop.clone());
        let samples = LIMIT.as_millis() / every.as_millis().max(1);
        tokio::spawn(async move {
            for _ in 0..samples {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                most.fetch_max(read(), Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
        })
    };
    (most, task)
}

/// Stops a good client and returns what it saw.
async fn stop_good(stop: &AtomicBool, good: JoinHandle<Served>) -> Served {
    stop.store(true, Ordering::Relaxed);
    good.await.unwrap()
}

// ---- wire helpers ------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, b: &mut [u8]) {
        for chunk in b.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// A length-prefixed frame.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Reads one length-prefixed frame.
async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await?;
    Ok(body)
}

/// An rpcudp request frame (length-prefixed) for `method(args)`.
fn rpcudp_request(method: &'static str, args: impl rpc_core::format::Args) -> Vec<u8> {
    let codec = RpcudpCodec::new();
    let c = tcp::Builder::new()
        .channel("127.0.0.1:9", codec)
        .into_client();
    let req = c.request(method, &args).unwrap();
    let mut body = bytes::BytesMut::new();
    codec
        .encode_request(
            Some(&MessageId([9; 20])),
            req.method(),
            req.args(),
            &mut body,
        )
        .unwrap();
    frame(&body)
}

/// Waits for the peer to close `s`: `Ok(elapsed)` on end of stream or a reset, `Err` if it is
/// still open after `within` (bytes that arrive meanwhile are read and ignored).
async fn closed_within(s: &mut TcpStream, within: Duration) -> Result<Duration, Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let end = t + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return Err(t.elapsed()),
        }
    }
}

/// The process's soft limit on open files.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

// ---- 1. UDP garbage ----------------------------------------------------------------------------

/// One garbage datagram of a random kind into `buf`; returns its length.
fn garbage(rng: &mut Rng, buf: &mut [u8]) -> usize {
    let n = match rng.below(8) {
        // Shorter than the 21-byte header.
        0 => rng.below(22),
        // Over the 8192-byte payload limit, up to the largest datagram.
        1 => 8214 + rng.below(65_507 - 8214),
        // Just over the limit.
        2 => 8214 + rng.below(16),
        // A request header, then a body that is not [name, args].
        3 => {
            let n = 22 + rng.below(200);
            rng.fill(&mut buf[..n]);
            buf[0] = 0x00;
            buf[21] = 0xc1;
            return n;
        }
        // A response header with a deeply nested body (never matches a call).
        4 => {
            let n = 22 + rng.below(8000);
            rng.fill(&mut buf[..21]);
            buf[0] = 0x01;
            buf[21..n].fill(0x91);
            return n;
        }
        // Anything up to the limit.
        _ => rng.below(8214),
    };
    rng.fill(&mut buf[..n]);
    n
}

#[test]
fn udp_garbage_flood_is_dropped_and_counted() {
    serial(async {
        let server = udp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        // The garbage is made beforehand (so its own memory is not counted, and sending it costs
        // the attackers little): 128 datagrams for each attacker, sent in a shuffled cycle.
        let pools: Vec<Vec<Vec<u8>>> = (0..2u64)
            .map(|f| {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (f + 1));
                let mut buf = vec![0u8; 65_507];
                (0..128)
                    .map(|_| {
                        let n = garbage(&mut rng, &mut buf);
                        buf[..n].to_vec()
                    })
                    .collect()
            })
            .collect();
        let rss = RssProbe::start();

        let stop = Arc::new(AtomicBool::new(false));
        // Past what the server drains, the kernel drops datagrams from everyone alike (the socket's
        // receive buffer is full): a UDP client sees its request or the answer lost, and must send
        // it again. Every 25 ms; `add` may run twice.
        let caller = udp::Builder::new()
            .timeout(Duration::from_secs(2))
            .retransmit_every(Duration::from_millis(25))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let client = caller.client(addr);
        let good = good_adder(client, stop.clone());

        // The attackers run on threads of their own, as another process would, rather than
        // taking turns with the server on the runtime's two workers.
        let sent = Arc::new(AtomicU64::new(0));
        let floods: Vec<_> = pools
            .into_iter()
            .enumerate()
            .map(|(f, pool)| {
                let sent = sent.clone();
                std::thread::spawn(move || {
                    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (f as u64 + 1));
                    let end = std::time::Instant::now() + ATTACK;
                    // At most a million datagrams per thread.
                    for i in 0..1_000_000u32 {
                        if i % 64 == 0 && std::time::Instant::now() >= end {
                            break;
                        }
                        let d = &pool[rng.below(pool.len())];
                        if sock.send_to(d, addr).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        while !floods.iter().all(|f| f.is_finished()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for f in floods {
            f.join().unwrap();
        }
        let served = stop_good(&stop, good).await;
        let growth = rss.finish("udp garbage").await;

        let stats = server.stats();
        println!(
            "[udp garbage] {} datagrams sent; server stats {stats:?}",
            sent.load(Ordering::Relaxed)
        );
        // Once the flood fills the socket's receive buffer the kernel drops datagrams from
        // everyone alike, so how many of the good client's (retransmitted) requests get in is a
        // lottery the server does not run: 11 to 56 calls in 2 s over 20 runs on a 2-core
        // machine. The floor checks that it is served throughout, not how fairly the kernel drops.
        served.assert_served_within("udp garbage", 5, SATURATED_LATENCY);
        assert!(stats.malformed > 0, "{stats:?}");
        assert!(stats.oversize > 0, "{stats:?}");
        // Still answering, to a new peer too.
        let fresh = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        assert_eq!(
            fresh
                .client(addr)
                .call::<i64>("add", (20, 22))
                .await
                .unwrap(),
            42
        );
        assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
    });
}

// ---- 2. TCP: 4 GiB length prefixes -------------------------------------------------------------

#[test]
fn tcp_four_gib_length_prefixes_are_refused_at_once() {
    const PEERS: usize = 200;
    serial(async {
        // Every peer here comes from 127.0.0.1: no cap per IP address (tested in stream.rs).
        let server = tcp::Builder::new()
            .max_connections_per_ip(usize::MAX)
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        let good = good_tcp_client(addr, stop.clone()).await;

        let peers = (0..PEERS).map(|_| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"\xff\xff\xff\xffhello").await.unwrap();
            closed_within(&mut s, Duration::from_secs(2)).await
        });
        let closed = futures::future::join_all(peers).await;
        let slowest = closed
            .iter()
            .map(|r| *r.as_ref().unwrap_or_else(|e| e))
            .max()
            .unwrap();
        let still_open = closed.iter().filter(|r| r.is_err()).count();
        // Let the good client run a little longer than the attack itself.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let served = stop_good(&stop, good).await;
        let growth = rss.finish("tcp 4 GiB prefixes").await;

        let stats = server.stats();
        println!("[tcp 4 GiB prefixes] slowest close {slowest:?}; server stats {stats:?}");
        assert_eq!(still_open, 0, "connections still open after 2 s");
        assert_eq!(stats.bad_frames, PEERS as u64, "{stats:?}");
        served.assert_served("tcp 4 GiB prefixes", 10);
        assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
    });
}

// ---- 3. TCP: connections stalled inside a frame ------------------------------------------------

#[test]
fn tcp_stalled_half_frames_are_closed_when_idle() {
    serial(async {
        // Each stalled connection costs two descriptors (ours and the server's); keep 200 spare.
        // With a soft limit under ~2200, fewer connections are opened than the 1000 wanted.
        let fits = (open_files_limit().saturating_sub(200) / 2) as usize;
        let stalled = 1000.min(fits);
        if stalled < 1000 {
            println!(
                "[tcp stalled] open files limit {}: only {stalled} connections",
                open_files_limit()
            );
        }
        // Every peer here comes from 127.0.0.1: no cap per IP address (tested in stream.rs).
        let server = tcp::Builder::new()
            .idle_timeout(Some(Duration::from_millis(500)))
            .max_connections(2000)
            .max_connections_per_ip(usize::MAX)
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        let good = good_tcp_client(addr, stop.clone()).await;

        // A length prefix of 100, then 10 of those bytes, and never more.
        let mut half = 100u32.to_be_bytes().to_vec();
        half.extend_from_slice(&[0u8; 10]);
        let opened = Instant::now();
        let mut peers = Vec::with_capacity(stalled);
        for _ in 0..stalled {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&half).await.unwrap();
            peers.push(s);
        }
        let open_for = opened.elapsed();
        let peak_connections = server.connections();
        println!(
            "[tcp stalled] {stalled} connections opened in {open_for:?}; server has {peak_connections}"
        );

        // The server closes each 0.5 to 1 s after its last byte (one idle period, checked once
        // a period): all within 2 s.
        let closes = peers
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(2)));
        let closed = futures::future::join_all(closes).await;
        let since_open = opened.elapsed();
        let still_open = closed.iter().filter(|r| r.is_err()).count();
        let served = stop_good(&stop, good).await;
        // The accept loop's count follows the close promptly.
        let t = Instant::now();
        while server.connections() > 2 && t.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let growth = rss.finish("tcp stalled").await;
        let stats = server.stats();
        println!(
            "[tcp stalled] all closed {since_open:?} after the first opened; {} left; stats {stats:?}",
            server.connections()
        );
        drop(peers);

        assert!(
            peak_connections > stalled / 2,
            "the stalled connections were open together ({peak_connections})"
        );
        assert_eq!(still_open, 0, "stalled connections not closed within 2 s");
        // Only the good client's connection (and at most one it is reopening) remains.
        assert!(server.connections() <= 2, "{}", server.connections());
        assert!(stats.idle_closed >= stalled as u64, "{stats:?}");
        served.assert_served("tcp stalled", 20);
        assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
    });
}

// ---- 4. TCP: connections without end -----------------------------------------------------------

#[test]
fn tcp_connection_flood_is_capped_and_existing_clients_served() {
    const MAX: usize = 100;
    serial(async {
        let server = Arc::new(
            tcp::Builder::new()
                .max_connections(MAX)
                .serve(router())
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .unwrap(),
        );
        let addr = server.local_addr();
        // The good client's connection exists before the flood.
        let client = tcp::Builder::new().client(addr, RpcudpCodec::new());
        assert_eq!(client.call::<i64>("add", (1, 1)).await.unwrap(), 2);
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        let good = good_adder(client, stop.clone());

        // Watches the server's count of connections.
        let (most, watch) = {
            let server = server.clone();
            watch_most(&stop, Duration::from_millis(1), move || {
                server.connections()
            })
        };

        // At most 5000 connections, for at most 2 s, all held until the end.
        let mut held = Vec::new();
        let mut failed_connects = 0;
        let began = Instant::now();
        let end = began + ATTACK;
        while held.len() < 5000 && Instant::now() < end {
            match tokio::time::timeout_at(end, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(_)) => failed_connects += 1,
                Err(_) => break,
            }
        }
        let opened = held.len();
        let flood_took = began.elapsed();
        let served = stop_good(&stop, good).await;
        watch.await.unwrap();
        drop(held);
        let growth = rss.finish("tcp connection flood").await;

        let stats = server.stats();
        let most = most.load(Ordering::Relaxed);
        println!(
            "[tcp connection flood] {opened} connections opened in {flood_took:?} ({failed_connects} \
             connects failed), \
             at most {most} on the server; stats {stats:?}"
        );
        assert!(most <= MAX + 2, "the server held {most} connections");
        assert!(stats.connections_refused > 0, "{stats:?}");
        served.assert_served("tcp connection flood", 20);
        assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
        // Room again once the flood is gone.
        let t = Instant::now();
        while server.connections() > 1 && t.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let late = tcp::Builder::new().client(addr, RpcudpCodec::new());
        assert_eq!(late.call::<i64>("add", (2, 3)).await.unwrap(), 5);
    });
}

// ---- 5. TCP: peers that never read -------------------------------------------------------------

#[test]
fn tcp_peers_that_never_read_keep_memory_bounded() {
    const HOGS: usize = 4;
    /// Requests per write.
    const CHUNK: usize = 1000;
    const MAX_REQUESTS: usize = 1_000_000;
    serial(async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        // Each hog asks for 64 KiB answers as fast as it can write for 2 s (at most a million
        // requests, 37 MB of them, asking for 64 GiB of answers), and never reads one.
        let chunk = Arc::new(rpcudp_request("blob", (65_536usize,)).repeat(CHUNK));
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        let good = good_tcp_client(addr, stop.clone()).await;

        let end = Instant::now() + ATTACK;
        let hogs: Vec<_> = (0..HOGS)
            .map(|_| {
                let chunk = chunk.clone();
                tokio::spawn(async move {
                    let mut hog = TcpStream::connect(addr).await.unwrap();
                    let mut sent = 0;
                    let mut blocked = false;
                    while sent < MAX_REQUESTS {
                        match tokio::time::timeout_at(end, hog.write_all(&chunk)).await {
                            Ok(Ok(())) => sent += CHUNK,
                            Ok(Err(e)) => panic!("the server dropped a hog: {e}"),
                            Err(_) => {
                                blocked = true;
                                break;
                            }
                        }
                    }
                    // Holds the connection, unread, to the end of the attack.
                    tokio::time::sleep_until(end).await;
                    (hog, sent, blocked)
                })
            })
            .collect();
        let mut held = Vec::new();
        let mut requests = 0;
        let mut blocked = 0;
        for h in hogs {
            let (hog, sent, b) = h.await.unwrap();
            requests += sent;
            blocked += usize::from(b);
            held.push(hog);
        }
        let served = stop_good(&stop, good).await;
        let growth = rss.finish("tcp never read").await;
        let stats = server.stats();
        println!(
            "[tcp never read] {HOGS} hogs wrote {requests} requests ({blocked} of them blocked \
             writing); the server read {} and answered {}; stats {stats:?}",
            stats.requests, stats.responses_sent
        );
        drop(held);

        served.assert_served("tcp never read", 20);
        assert!(requests > 10_000, "the hogs sent only {requests} requests");
        // The server stopped reading the hogs when their answers piled up: it read a small part.
        assert!(
            stats.requests < (requests / 10) as u64,
            "the server read {} of {requests} requests",
            stats.requests
        );
        assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
    });
}

// ---- 6. JSON-RPC: giant batches, deep nesting --------------------------------------------------

/// A batch of `n` add requests.
fn giant_batch(n: usize) -> Vec<u8> {
    let mut b = b"[".to_vec();
    for i in 0..n {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(
            format!(r#"{{"jsonrpc":"2.0","method":"add","params":[{i},1],"id":{i}}}"#).as_bytes(),
        );
    }
    b.push(b']');
    b
}

/// The error code of a JSON-RPC error response (the first one, in a batch's answer).
fn error_code(answer: &str) -> Option<i64> {
    let at = answer.find(r#""code":"#)? + r#""code":"#.len();
    let rest = &answer[at..];
    let end = rest.find(|c: char| c != '-' && !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[test]
fn jsonrpc_giant_batches_and_deep_nesting_are_refused() {
    const DEEP: usize = 100_000;
    const ROUNDS: usize = 10;
    serial(async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", JsonRpcCodec::new().max_batch(100))
            .await
            .unwrap();
        let addr = server.local_addr();
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        let client = tcp::Builder::new().client(addr, JsonRpcCodec::new());
        let good = good_adder(client, stop.clone());

        // (what, frame, whether the answer is a batch's array, the expected error code)
        let attacks: Vec<(&str, Vec<u8>, bool, i64)> = vec![
            // Over max_batch: one Invalid Request error, not 10 000 answers.
            ("a batch of 10 000", giant_batch(10_000), false, -32600),
            // Unterminated nesting: not JSON at all.
            (
                "100 000 unclosed [",
                "[".repeat(DEEP).into_bytes(),
                false,
                -32700,
            ),
            (
                "100 000 unclosed {\"a\":",
                r#"{"a":"#.repeat(DEEP).into_bytes(),
                false,
                -32700,
            ),
            // Well-formed but 100 000 deep: valid JSON, so not a parse error but an invalid
            // message (the codec skips nested values without recursing or building them).
            (
                "a batch nested 100 000 deep",
                format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP)).into_bytes(),
                true,
                -32600,
            ),
            (
                "an object nested 100 000 deep",
                format!("{}1{}", r#"{"a":"#.repeat(DEEP), "}".repeat(DEEP)).into_bytes(),
                false,
                -32600,
            ),
            // Params 100 000 deep: a value per two bytes, refused as too dense to decode before
            // the handler's decoding would refuse them for their depth.
            (
                "params nested 100 000 deep",
                format!(
                    r#"{{"jsonrpc":"2.0","method":"add","params":{}{},"id":7}}"#,
                    "[".repeat(DEEP),
                    "]".repeat(DEEP)
                )
                .into_bytes(),
                false,
                -32003,
            ),
        ];

        let t = Instant::now();
        let mut slowest = Duration::ZERO;
        let mut conns = Vec::new();
        for _ in 0..2 {
            conns.push(TcpStream::connect(addr).await.unwrap());
        }
        for round in 0..ROUNDS {
            let s = &mut conns[round % 2];
            for (what, body, batch, code) in &attacks {
                let sent = Instant::now();
                s.write_all(&frame(body)).await.unwrap();
                let answer = timeout(Duration::from_secs(2), read_frame(s))
                    .await
                    .unwrap_or_else(|_| panic!("no answer to {what} within 2 s"))
                    .unwrap_or_else(|e| panic!("connection lost after {what}: {e}"));
                slowest = slowest.max(sent.elapsed());
                let answer = String::from_utf8(answer).unwrap();
                assert!(
                    answer.len() < 1000,
                    "{what}: a long answer: {}...",
                    &answer[..1000]
                );
                assert_eq!(answer.starts_with('['), *batch, "{what}: answered {answer}");
                assert_eq!(
                    error_code(&answer),
                    Some(*code),
                    "{what}: answered {answer}"
                );
            }
            // The same connection still serves a proper request.
            let ok = frame(br#"{"jsonrpc":"2.0","method":"add","params":[40,2],"id":"x"}"#);
            s.write_all(&ok).await.unwrap();
            let answer = timeout(Duration::from_secs(2), read_frame(s))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, br#"{"jsonrpc":"2.0","result":42,"id":"x"}"#);
        }
        let took = t.elapsed();
        let served = stop_good(&stop, good).await;
        let growth = rss.finish("jsonrpc floods").await;
        let stats = server.stats();
        println!(
            "[jsonrpc floods] {} attacks in {took:?}, slowest answer {slowest:?}; stats {stats:?}",
            ROUNDS * attacks.len()
        );
        served.assert_served("jsonrpc floods", 5);
        assert_eq!(stats.bad_frames, 0, "{stats:?}");
        assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
    });
}

// ---- 7. Memory: frames that never end, frames built to expand ----------------------------------

/// A TCP connection from the address `from` (a 127.x.y.z standing for a host of its own).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(format!("{from}:0").parse().expect("an address"))?;
    s.connect(to).await
}

/// How much a server's frame memory and the process can hold while 128 connections from one host
/// each claim a frame of the largest size (8 MiB) and send all of it but the last byte: the issue
/// this answers saw +1 GB of RSS with them.
const PARTIAL_FRAMES_RSS_BOUND: u64 = 300 << 20;

#[test]
fn tcp_partial_frames_of_the_largest_size_keep_memory_within_the_budget() {
    const PEERS: usize = 128;
    const FRAME: usize = rpc_transports::DEFAULT_MAX_FRAME_LENGTH;
    serial(async {
        let server = Arc::new(
            tcp::Builder::new()
                .serve(router())
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .unwrap(),
        );
        let addr = server.local_addr();
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        // The most the server's connections held in frames.
        let (most, watch) = {
            let server = server.clone();
            watch_most(&stop, Duration::from_millis(1), move || {
                server.frame_memory()
            })
        };
        // The good client comes from another host than the attackers, who have all the
        // connections one address may hold.
        let good = {
            let client = tcp::Builder::new().client(addr, RpcudpCodec::new());
            assert_eq!(client.call::<i64>("add", (0, 1000)).await.unwrap(), 1000);
            good_adder(client, stop.clone())
        };
        // One buffer for every attacker's bytes: the attack costs this process nothing per peer.
        let body: Arc<[u8]> = vec![0x90u8; 64 * 1024].into();
        let began = Instant::now();
        let attackers: Vec<JoinHandle<usize>> = (0..PEERS)
            .map(|_| {
                let body = body.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = connect_from("127.0.0.2", addr).await else {
                        return 0;
                    };
                    let mut sent = 0usize;
                    if s.write_all(&(FRAME as u32).to_be_bytes()).await.is_err() {
                        return 0;
                    }
                    // All but the last byte, for at most the attack's time; then held open.
                    let end = Instant::now() + ATTACK * 2;
                    while sent < FRAME - 1 && Instant::now() < end {
                        let n = body.len().min(FRAME - 1 - sent);
                        match tokio::time::timeout_at(end, s.write_all(&body[..n])).await {
                            Ok(Ok(())) => sent += n,
                            _ => break,
                        }
                    }
                    // Held until the server closes it (or the attack is over).
                    let _ = closed_within(&mut s, Duration::from_millis(500)).await;
                    sent
                })
            })
            .collect();
        let mut sent = 0;
        for a in attackers {
            sent += a.await.unwrap();
        }
        let took = began.elapsed();
        let served = stop_good(&stop, good).await;
        watch.await.unwrap();
        let growth = rss.finish("tcp partial frames").await;
        let stats = server.stats();
        let most = most.load(Ordering::Relaxed);
        println!(
            "[tcp partial frames] {PEERS} peers sent {:.0} MiB of unfinished frames in {took:?}; \
             the server held at most {:.1} MiB of frames; stats {stats:?}",
            mib(sent as u64),
            mib(most as u64)
        );
        let bound = rpc_transports::DEFAULT_MAX_FRAME_MEMORY + (PEERS + 1) * 64 * 1024;
        assert!(most <= bound, "{most} bytes held in frames");
        assert!(stats.over_budget > 0, "no connection was closed: {stats:?}");
        assert!(
            sent as u64 > 2 * PARTIAL_FRAMES_RSS_BOUND,
            "the attack sent only {:.0} MiB",
            mib(sent as u64)
        );
        served.assert_served("tcp partial frames", 20);
        assert!(
            growth < PARTIAL_FRAMES_RSS_BOUND,
            "RSS grew by {:.1} MiB",
            mib(growth)
        );
    });
}

/// A JSON-RPC request whose params, `[[0,0,...]]`, hold a value per two bytes over `len` bytes.
fn dense_request(len: usize) -> Vec<u8> {
    let mut params = b"[[0".to_vec();
    while params.len() < len {
        params.extend_from_slice(b",0");
    }
    params.extend_from_slice(b"]]");
    let mut body = br#"{"jsonrpc":"2.0","method":"count","params":"#.to_vec();
    body.extend_from_slice(&params);
    body.extend_from_slice(br#","id":1}"#);
    body
}

#[test]
fn jsonrpc_frames_built_to_expand_in_decoding_are_refused_before_decoding() {
    const PEERS: usize = 8;
    // Just under the largest frame: 4 million values of 32 bytes each once decoded (128 MiB).
    const LEN: usize = rpc_transports::DEFAULT_MAX_FRAME_LENGTH - 100;
    async fn count(values: Vec<serde_json::Value>) -> usize {
        values.len()
    }
    serial(async {
        let server = tcp::Builder::new()
            .serve(Router::new().route("count", count).route("add", add))
            .bind("127.0.0.1:0", JsonRpcCodec::new())
            .await
            .unwrap();
        let lenient = tcp::Builder::new()
            .min_bytes_per_value(0)
            .serve(Router::new().route("count", count))
            .bind("127.0.0.1:0", JsonRpcCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let request: Arc<[u8]> = frame(&dense_request(LEN)).into();
        let rss = RssProbe::start();
        let stop = Arc::new(AtomicBool::new(false));
        let client = tcp::Builder::new().client(addr, JsonRpcCodec::new());
        let good = good_adder(client, stop.clone());
        let attacks: Vec<JoinHandle<String>> = (0..PEERS)
            .map(|_| {
                let request = request.clone();
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    s.write_all(&request).await.unwrap();
                    let answer = timeout(Duration::from_secs(10), read_frame(&mut s))
                        .await
                        .expect("an answer within 10 s")
                        .expect("an answer");
                    String::from_utf8(answer).unwrap()
                })
            })
            .collect();
        for a in attacks {
            let answer = a.await.unwrap();
            assert_eq!(error_code(&answer), Some(-32003), "{answer}");
            assert!(answer.contains("values"), "{answer}");
        }
        let served = stop_good(&stop, good).await;
        let growth = rss.finish("jsonrpc dense frames").await;
        let stats = server.stats();
        println!("[jsonrpc dense frames] {PEERS} frames of {LEN} bytes; stats {stats:?}");
        assert_eq!(stats.too_dense, PEERS as u64, "{stats:?}");
        // Each frame is read, parsed as a message and counted on one of the two workers (in a
        // debug build, about half a second each), so a good call can wait for one.
        served.assert_served_within("jsonrpc dense frames", 5, SATURATED_LATENCY);
        // Eight such frames decoded at once took 752 MB; refused, the frames alone (64 MiB) and
        // their buffers remain.
        assert!(growth < 2 * RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
        // The check is what refused them: without it, a small one is decoded.
        let mut s = TcpStream::connect(lenient.local_addr()).await.unwrap();
        s.write_all(&frame(&dense_request(64 * 1024)))
            .await
            .unwrap();
        let answer = String::from_utf8(read_frame(&mut s).await.unwrap()).unwrap();
        assert!(answer.contains(r#""result":"#), "{answer}");
    });
}

// ---- 8. Fairness: one host cannot take what all hosts share ------------------------------------

#[test]
fn tcp_one_host_with_1100_idle_connections_leaves_another_served_at_once() {
    serial(async {
        // Each connection costs two descriptors (ours and the server's); keep 300 spare.
        let fits = (open_files_limit().saturating_sub(300) / 2) as usize;
        let greedy = 1100.min(fits);
        assert!(
            greedy > rpc_transports::DEFAULT_MAX_CONNECTIONS_PER_IP * 2,
            "an open files limit of {} leaves room for only {greedy} connections",
            open_files_limit()
        );
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let mut held = Vec::with_capacity(greedy);
        for _ in 0..greedy {
            if let Ok(s) = connect_from("127.0.0.2", addr).await {
                held.push(s);
            }
        }
        // Every connection past the host's share is closed as soon as it is accepted.
        let t = Instant::now();
        while server.stats().connections_refused < (greedy - 128) as u64
            && t.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = server.stats();
        println!(
            "[tcp idle host] {} connections from one host; stats {stats:?}",
            held.len()
        );
        assert_eq!(server.connections(), 128, "{stats:?}");
        // Another host connects and is answered at once.
        let s = connect_from("127.0.0.3", addr).await.unwrap();
        let other = rpc_transports::stream::builder()
            .start(s.into(), RpcudpCodec::new())
            .client();
        let t = Instant::now();
        let got = timeout(Duration::from_secs(1), other.call::<i64>("add", (1, 2)))
            .await
            .expect("answered within 1 s");
        println!(
            "[tcp idle host] the other host was answered in {:?}",
            t.elapsed()
        );
        assert_eq!(got.unwrap(), 3);
        drop(held);
    });
}

#[test]
fn tcp_one_host_with_1100_sleeping_calls_leaves_another_served_at_once() {
    const CONNECTIONS: usize = 11;
    const CALLS: usize = 100;
    serial(async {
        let server = tcp::Builder::new()
            .serve(router().route("sleep", |ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        // One host keeps 1100 calls running over 11 connections: more than its share (512).
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let s = connect_from("127.0.0.4", addr).await.unwrap();
            let c = rpc_transports::stream::builder()
                .start(s.into(), RpcudpCodec::new())
                .client()
                .with_timeout(Duration::from_secs(8));
            for _ in 0..CALLS {
                let c = c.clone();
                calls.spawn(async move { c.call::<u64>("sleep", (5000u64,)).await });
            }
        }
        // A request is refused, or not, as it is received: once all are, the count is final.
        let t = Instant::now();
        while server.stats().requests < (CONNECTIONS * CALLS) as u64
            && t.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = server.stats();
        println!("[tcp sleeping host] 1100 calls from one host; stats {stats:?}");
        // The host's share, 512, is checked by each connection's reader before it starts a
        // request: readers on the two workers that start one at the same moment may pass it by
        // one each.
        let refused = stats.overloaded as usize;
        let most = CONNECTIONS * CALLS - 512;
        assert!((most - CONNECTIONS..=most).contains(&refused), "{stats:?}");
        // Another host's call runs at once.
        let s = connect_from("127.0.0.5", addr).await.unwrap();
        let other = rpc_transports::stream::builder()
            .start(s.into(), RpcudpCodec::new())
            .client();
        let got = timeout(Duration::from_secs(1), other.call::<u64>("sleep", (1u64,)))
            .await
            .expect("answered within 1 s");
        assert_eq!(got.unwrap(), 1);
        calls.abort_all();
    });
}

/// Sends `bytes` to a new connection from 127.0.0.6 and keeps it open (for at most `LIMIT`).
/// The bytes are shared: the attackers cost this process nothing per peer.
async fn send_and_hold(addr: SocketAddr, bytes: Arc<[u8]>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut s) = connect_from("127.0.0.6", addr).await else {
            return;
        };
        if s.write_all(&bytes).await.is_ok() {
            let _ = closed_within(&mut s, LIMIT).await;
        }
    })
}

/// Waits until the server's frame memory is at most `bound`, for at most 5 s; what it was then.
async fn frame_memory_falls_to(server: &tcp::Server, bound: usize) -> usize {
    let t = Instant::now();
    while server.frame_memory() > bound && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.frame_memory()
}

#[test]
fn tcp_large_frames_leave_no_large_buffer_behind() {
    const PEERS: usize = 40;
    serial(async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let rss = RssProbe::start();
        // A frame of almost the largest size (not a valid message: answered at once, if at all),
        // then one byte of the next frame's length, and nothing more: the large buffer must not
        // stay behind with that byte.
        let mut wire = frame(&vec![0xc1; rpc_transports::DEFAULT_MAX_FRAME_LENGTH - 104]);
        wire.push(0);
        let wire: Arc<[u8]> = wire.into();
        let mut peers = Vec::new();
        for _ in 0..PEERS {
            peers.push(send_and_hold(addr, wire.clone()).await);
        }
        let small = PEERS * 2 * 64 * 1024;
        let held = frame_memory_falls_to(&server, small).await;
        let growth = rss.finish("tcp large frames").await;
        println!(
            "[tcp large frames] {PEERS} peers; frames hold {held} bytes; {:?}",
            server.stats()
        );
        assert!(held <= small, "{held} bytes still held in frames");
        // Had each kept its 8 MiB buffer: 320 MiB.
        assert!(growth < 3 * RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
        for p in peers {
            p.abort();
        }
    });
}

#[test]
fn tcp_a_connection_closed_to_make_room_gives_its_memory_back_at_once() {
    const PEERS: usize = 30;
    const BUDGET: usize = 16 << 20;
    serial(async {
        let server = tcp::Builder::new()
            .max_frame_memory(BUDGET)
            .serve(router().route("sleep", |ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let rss = RssProbe::start();
        // Each sends a call that takes 5 s, then 7 MiB of an 8 MiB frame: those closed to make
        // room must let go of their buffers while their call still runs.
        let mut wire = rpcudp_request("sleep", (5000u64,));
        wire.extend_from_slice(&(8u32 << 20).to_be_bytes());
        wire.extend_from_slice(&vec![0u8; 7 << 20]);
        let wire: Arc<[u8]> = wire.into();
        let mut peers = Vec::new();
        for _ in 0..PEERS {
            peers.push(send_and_hold(addr, wire.clone()).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held = server.frame_memory();
        let growth = rss.finish("tcp closed to make room").await;
        let stats = server.stats();
        println!("[tcp closed to make room] frames hold {held} bytes; stats {stats:?}");
        assert!(stats.over_budget > 0, "{stats:?}");
        assert!(
            held <= BUDGET + PEERS * 64 * 1024,
            "{held} bytes held in frames"
        );
        // Had each kept its buffer: 30 × 8 MiB.
        assert!(growth < 2 * RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
        for p in peers {
            p.abort();
        }
    });
}
