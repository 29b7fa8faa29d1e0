//! Memory used by rpc-stack's TCP transport, measured as the process's resident set size (VmRSS,
//! read from `/proc/self/status`; Linux only). Three phases, one line each (human-readable, then
//! the raw numbers as `key=value`):
//!
//! 1. **Bytes per idle connection, server side.** N plain TCP connections (no RPC traffic) to an
//!    rpc-stack TCP server (msgpack `RpcudpCodec`, a `Router` with "echo"), then the same to a raw
//!    tokio accept loop that only holds each accepted `TcpStream` (the baseline: what a socket costs
//!    in tokio and in the client's own streams). rpc-stack's extra bytes per connection is the
//!    difference. A first, unmeasured baseline round warms the allocator and the runtime up.
//! 2. **Bytes per call in flight**, client and server together: M calls at once on one connection
//!    to a handler that sleeps 10 s; measured once the server has started them all; then abandoned.
//! 3. **RSS under sustained load**: 64 calls in flight on one connection calling "echo" with a
//!    32-byte string for T seconds, RSS sampled every 5 s.
//!
//! Each server runs on its own thread in a current-thread tokio runtime; the clients run on the
//! main thread's runtime. RSS is per process, so every figure includes both ends; the phases run
//! one after the other. Freed memory the allocator keeps (it is not given back to the kernel) is
//! reused by later phases, so the figures are estimates, good to a few hundred bytes per connection.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p rpc-benches --bench memory
//! ```
//!
//! Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RPC_BENCH_SOAK_SECS` | 60 | T, the length of phase 3 in seconds (5..=3600) |
//! | `RPC_BENCH_IDLE_CONNS` | 2000 | N, the idle connections of phase 1 (1..=20000), capped to (the soft open-files limit − 200) / 2 |
//! | `RPC_BENCH_CALLS_IN_FLIGHT` | 10000 | M, the calls in flight of phase 2 (1..=100000) |
//!
//! Every phase is bounded in count and in time: every loop has a fixed maximum number of rounds,
//! every wait has a deadline, and a watchdog ends the process if the whole run takes longer than
//! T + 30 s. Only loopback addresses (127.0.0.1) are used.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::Router;
use rpc_transports::tcp;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

/// Default N: idle connections in phase 1.
const DEFAULT_IDLE_CONNS: u64 = 2000;
/// Default M: calls in flight in phase 2.
const DEFAULT_CALLS_IN_FLIGHT: u64 = 10_000;
/// Default T: seconds of phase 3.
const DEFAULT_SOAK_SECS: u64 = 60;
/// File descriptors left for everything but the phase-1 connections.
const SPARE_FDS: u64 = 200;
/// The longest any "wait until" takes.
const SETTLE_BOUND: Duration = Duration::from_secs(10);
/// How often the "wait until"s look.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Time for freshly spawned tasks to run their first poll before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);
/// How long phase 2's handler sleeps.
const WAIT_HANDLER: Duration = Duration::from_secs(10);
/// Calls in flight during phase 3.
const SOAK_CONCURRENCY: usize = 64;
/// RSS sampling period of phase 3, and its warm-up.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Phase 3's argument: 32 bytes.
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef";
/// A phase-3 worker stops after this many calls, whatever the time.
const MAX_CALLS_PER_WORKER: u64 = 100_000_000;
/// The whole run's budget beyond T.
const BUDGET_BEYOND_SOAK: Duration = Duration::from_secs(30);

// ---- measuring ---------------------------------------------------------------------------------

/// The process's resident set size (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("reading /proc/self/status (this benchmark needs Linux)");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a VmRSS line in kB in /proc/self/status");
    kib * 1024
}

/// The soft limit of open files, from `/proc/self/limits`; `None` if unlimited or unreadable.
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A numeric environment variable, clamped to `min..=max`.
fn env_u64(name: &str, default: u64, min: u64, max: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
            .clamp(min, max),
        Err(_) => default,
    }
}

fn human(bytes: i64) -> String {
    let b = bytes as f64;
    if bytes.unsigned_abs() >= 1 << 20 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if bytes.unsigned_abs() >= 1 << 10 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn delta(before: u64, after: u64) -> i64 {
    after as i64 - before as i64
}

/// Waits until `done()` holds, looking every `POLL_EVERY`, at most `SETTLE_BOUND`; returns whether
/// it held.
async fn wait_until(done: impl Fn() -> bool) -> bool {
    let rounds = SETTLE_BOUND.as_millis() / POLL_EVERY.as_millis();
    for _ in 0..rounds {
        if done() {
            return true;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    done()
}

// ---- servers on their own threads --------------------------------------------------------------

/// How many connections a server holds now.
type Live = Arc<dyn Fn() -> usize + Send + Sync>;

/// A server on its own thread, in its own current-thread runtime, until [`ServerThread::stop`].
struct ServerThread {
    addr: SocketAddr,
    live: Live,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl ServerThread {
    /// Runs `body` on a new thread; it reports its address and connection count on `ready`, then
    /// serves until `stop` fires, then returns (which drops its runtime and every task in it).
    fn start<F, Fut>(name: &str, body: F) -> Self
    where
        F: FnOnce(std::sync::mpsc::Sender<(SocketAddr, Live)>, oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: Future<Output = ()>,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                rt.block_on(body(ready_tx, stop_rx));
            })
            .expect("spawning a server thread");
        let (addr, live) = ready_rx
            .recv_timeout(SETTLE_BOUND)
            .unwrap_or_else(|_| panic!("the {name} server did not start"));
        Self {
            addr,
            live,
            stop: stop_tx,
            thread,
        }
    }

    fn connections(&self) -> usize {
        (self.live)()
    }

    /// Stops the server and waits for its thread (its shutdown is bounded, see the bodies).
    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("a server thread panicked");
    }
}

async fn echo(s: String) -> String {
    s
}

/// An rpc-stack TCP server on 127.0.0.1 serving `router`, configured by `builder`.
fn rpc_server(name: &str, builder: tcp::Builder, router: Router) -> ServerThread {
    ServerThread::start(name, move |ready, stop| async move {
        let server = builder
            .serve(router)
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .expect("binding the rpc-stack server on 127.0.0.1");
        let server = Arc::new(server);
        let live: Live = {
            let server = server.clone();
            Arc::new(move || server.connections())
        };
        let _ = ready.send((server.local_addr(), live));
        let _ = stop.await;
        // Bounded: whatever is still being served after the grace period is closed.
        server.shutdown(Duration::from_millis(500)).await;
    })
}

/// A raw tokio accept loop on 127.0.0.1 that holds every accepted stream (the baseline).
fn raw_server(name: &str) -> ServerThread {
    ServerThread::start(name, move |ready, stop| async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the raw server on 127.0.0.1");
        let addr = listener.local_addr().expect("a local address");
        let count = Arc::new(AtomicUsize::new(0));
        let live: Live = {
            let count = count.clone();
            Arc::new(move || count.load(Ordering::Acquire))
        };
        let _ = ready.send((addr, live));
        let mut held: Vec<TcpStream> = Vec::new();
        let accepting = async {
            // Ends only when `stop` fires (the select below); each round holds one connection.
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        // As rpc-stack's listener does.
                        let _ = s.set_nodelay(true);
                        held.push(s);
                        count.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = accepting => {}
        }
        drop(held);
    })
}

// ---- phase 1: idle connections -----------------------------------------------------------------

/// Opens `n` plain connections to `addr`, one after the other, each within 5 s.
async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connection {i} to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connection {i} to {addr} failed: {e}"));
        conns.push(s);
    }
    conns
}

/// Opens `n` idle connections to `server`, waits until it holds them all, and returns the RSS
/// growth; then closes them and waits until the server has dropped them (`drops_on_close`).
fn idle_round(rt: &Runtime, server: &ServerThread, n: usize, drops_on_close: bool) -> i64 {
    rt.block_on(async {
        let before = rss_bytes();
        let conns = open_idle(server.addr, n).await;
        assert!(
            wait_until(|| server.connections() >= n).await,
            "the server accepted {} of {n} connections within {SETTLE_BOUND:?}",
            server.connections()
        );
        // Let the connections' tasks run their first poll (and allocate their buffers).
        tokio::time::sleep(SETTLE).await;
        let after = rss_bytes();
        drop(conns);
        if drops_on_close {
            assert!(
                wait_until(|| server.connections() == 0).await,
                "the server still held {} connections {SETTLE_BOUND:?} after they were closed",
                server.connections()
            );
        }
        delta(before, after)
    })
}

fn phase_idle_connections(rt: &Runtime) {
    let wanted = env_u64("RPC_BENCH_IDLE_CONNS", DEFAULT_IDLE_CONNS, 1, 20_000);
    let limit = open_files_soft_limit();
    // Each connection takes two descriptors: the client's and the server's.
    let cap = limit.map(|l| (l.saturating_sub(SPARE_FDS) / 2).max(1));
    let n = cap.map_or(wanted, |c| wanted.min(c)) as usize;
    println!(
        "[idle connections] N={n} (asked {wanted}; open-files soft limit {})",
        limit.map_or("unlimited".to_owned(), |l| l.to_string())
    );

    // Warm-up: the client runtime, the allocator's arenas and the kernel's sockets.
    let warm = raw_server("raw-warm-up");
    let _ = idle_round(rt, &warm, n, false);
    warm.stop();

    let raw = raw_server("raw-server");
    let raw_delta = idle_round(rt, &raw, n, false);
    raw.stop();

    let rpc = rpc_server(
        "rpc-idle-server",
        tcp::Builder::new().max_connections(n + 16),
        Router::new().route("echo", echo),
    );
    let rpc_delta = idle_round(rt, &rpc, n, true);
    rpc.stop();

    let per = |d: i64| d / n as i64;
    println!(
        "[idle connections] rpc-stack {} per connection, raw tokio {} per connection \
         (both ends' tokio streams): rpc-stack's extra {} per idle connection \
         | n={n} rss_delta_rpc={rpc_delta} rss_delta_raw={raw_delta} per_conn_rpc={} \
         per_conn_raw={} per_conn_extra={}",
        human(per(rpc_delta)),
        human(per(raw_delta)),
        human(per(rpc_delta - raw_delta)),
        per(rpc_delta),
        per(raw_delta),
        per(rpc_delta - raw_delta),
    );
}

// ---- phase 2: calls in flight ------------------------------------------------------------------

fn phase_calls_in_flight(rt: &Runtime) {
    let m = env_u64(
        "RPC_BENCH_CALLS_IN_FLIGHT",
        DEFAULT_CALLS_IN_FLIGHT,
        1,
        100_000,
    ) as usize;
    let started = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route("echo", echo).route("wait", {
        let started = started.clone();
        move || {
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(WAIT_HANDLER).await;
            }
        }
    });
    let server = rpc_server(
        "rpc-wait-server",
        tcp::Builder::new().max_concurrent_requests(m + 16),
        router,
    );
    let client = tcp::Builder::new()
        .timeout(Duration::from_secs(30))
        .client(server.addr, RpcudpCodec::new())
        .with_timeout(Duration::from_secs(30));

    let (before, after, reached) = rt.block_on(async {
        // Connect and warm up with one call, so the connection is not part of the figure.
        let r: String = timeout(SETTLE_BOUND, client.call("echo", (PAYLOAD,)))
            .await
            .expect("the warm-up call timed out")
            .expect("the warm-up call failed");
        assert_eq!(r, PAYLOAD, "echo answered something else");
        let mut tasks = Vec::with_capacity(m);
        let before = rss_bytes();
        for _ in 0..m {
            let c = client.clone();
            tasks.push(tokio::spawn(async move { c.call::<()>("wait", ()).await }));
        }
        let reached = wait_until(|| started.load(Ordering::Acquire) >= m).await;
        let after = rss_bytes();
        // Abandon the calls: no need to wait out the handlers' sleep.
        for t in &tasks {
            t.abort();
        }
        let _ = timeout(Duration::from_secs(5), futures::future::join_all(tasks)).await;
        (before, after, reached)
    });
    let in_flight = started.load(Ordering::Acquire);
    assert!(
        reached,
        "only {in_flight} of {m} calls reached the handler within {SETTLE_BOUND:?}"
    );
    drop(client);
    server.stop();

    let d = delta(before, after);
    println!(
        "[calls in flight] M={m}: RSS grew {} = {} per call in flight (client + server) \
         | m={m} in_flight={in_flight} rss_before={before} rss_after={after} rss_delta={d} \
         per_call={}",
        human(d),
        human(d / m as i64),
        d / m as i64,
    );
}

// ---- phase 3: sustained load -------------------------------------------------------------------

fn phase_soak(rt: &Runtime, soak: Duration) {
    let server = rpc_server(
        "rpc-soak-server",
        tcp::Builder::new(),
        Router::new().route("echo", echo),
    );
    let client = tcp::Builder::new()
        .client(server.addr, RpcudpCodec::new())
        .with_timeout(Duration::from_secs(5));
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));

    let samples = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + soak;
        let workers: Vec<_> = (0..SOAK_CONCURRENCY)
            .map(|w| {
                let (client, calls, stop, failure) =
                    (client.clone(), calls.clone(), stop.clone(), failure.clone());
                tokio::spawn(async move {
                    for i in 0..MAX_CALLS_PER_WORKER {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            return;
                        }
                        let why = match client.call::<String>("echo", (PAYLOAD,)).await {
                            Ok(r) if r == PAYLOAD => {
                                calls.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(r) => format!("worker {w}, call {i}: echo answered {r:?}"),
                            Err(e) => format!("worker {w}, call {i}: echo failed: {e}"),
                        };
                        failure
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(why);
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                })
            })
            .collect();

        let mut samples = vec![(Duration::ZERO, rss_bytes())];
        let rounds = soak.as_secs().div_ceil(SAMPLE_EVERY.as_secs());
        for k in 1..=rounds {
            let at = (SAMPLE_EVERY * k as u32).min(soak);
            tokio::time::sleep_until(start + at).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            samples.push((at, rss_bytes()));
        }
        stop.store(true, Ordering::Relaxed);
        // Each worker has at most one call in flight, which times out after 5 s.
        let joined = timeout(Duration::from_secs(10), futures::future::join_all(workers))
            .await
            .expect("the soak workers did not stop");
        for j in joined {
            j.expect("a soak worker panicked");
        }
        samples
    });
    if let Some(why) = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        panic!("a call failed under sustained load: {why}");
    }
    drop(client);
    server.stop();

    let calls = calls.load(Ordering::Relaxed);
    let series: Vec<String> = samples
        .iter()
        .map(|(t, b)| format!("{}s={}", t.as_secs(), human(*b as i64)))
        .collect();
    println!("[sustained load] RSS series: {}", series.join(", "));
    let after_warm_up: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= SAMPLE_EVERY)
        .map(|(_, b)| *b)
        .collect();
    let first = *after_warm_up.first().expect("a sample after the warm-up");
    let last = *after_warm_up.last().expect("a sample after the warm-up");
    let max = *after_warm_up.iter().max().expect("samples");
    let min = *after_warm_up.iter().min().expect("samples");
    println!(
        "[sustained load] {SOAK_CONCURRENCY} calls in flight for {} s: {calls} calls ({:.0}/s); \
         after the {} s warm-up RSS went {} -> {} (max - min {}) \
         | secs={} concurrency={SOAK_CONCURRENCY} calls={calls} rss_first={first} rss_last={last} \
         rss_max={max} rss_min={min} rss_spread={} samples=[{}]",
        soak.as_secs(),
        calls as f64 / soak.as_secs_f64(),
        SAMPLE_EVERY.as_secs(),
        human(first as i64),
        human(last as i64),
        human(max as i64 - min as i64),
        soak.as_secs(),
        max - min,
        samples
            .iter()
            .map(|(t, b)| format!("{}:{b}", t.as_secs()))
            .collect::<Vec<_>>()
            .join(","),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments.
    let soak = Duration::from_secs(env_u64("RPC_BENCH_SOAK_SECS", DEFAULT_SOAK_SECS, 5, 3600));
    let budget = soak + BUDGET_BEYOND_SOAK;
    std::thread::Builder::new()
        .name("watchdog".to_owned())
        .spawn(move || {
            std::thread::sleep(budget);
            eprintln!("memory bench: still running after {budget:?}; giving up");
            std::process::exit(2);
        })
        .expect("spawning the watchdog");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread runtime");
    println!("[start] RSS {}", human(rss_bytes() as i64));
    phase_idle_connections(&rt);
    phase_calls_in_flight(&rt);
    phase_soak(&rt, soak);
    rt.shutdown_timeout(Duration::from_secs(1));
}
