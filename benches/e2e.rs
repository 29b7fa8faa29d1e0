//! End to end over real sockets, in one run and under the same conditions: raw tokio echo
//! servers and clients per transport (no RPC: the baseline), rpc-stack for each transport and
//! codec, and tarpc over TCP (bincode and JSON), in three shapes: one connection with one call
//! in flight, one connection with 64, and 16 connections with 8 each. Every call sends a
//! 32-byte string and gets it back.
//!
//! The servers run on one thread and the clients on another, each a single-threaded tokio
//! runtime, so a figure depends on the code, not on where work stealing puts tasks. Systems are
//! measured in turn, round after round, and the median round is reported, so a drift in the
//! machine's speed falls on all alike. Ratios compare rpc-stack with the raw baseline of the
//! same transport and with tarpc (bincode) measured in the same run.
//!
//! Run with `cargo bench -p rpc-benches --bench e2e`. Bounded: 3 rounds × 1 s per system and
//! shape (about 2 minutes). Knobs: `RPC_BENCH_SECS` (seconds per run), `RPC_BENCH_ROUNDS`,
//! `RPC_BENCH_ONLY=msgpack,raw` (systems whose name contains one of these),
//! `RPC_BENCH_SHAPES=1x64` (shapes by name).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Client, Route, Router};
use rpc_transports::{raw, tcp, udp, unix};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use tokio::sync::{oneshot, Notify};

/// The payload of every call: 32 bytes.
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef";

// --- the servers ------------------------------------------------------------------------------

async fn echo(s: String) -> String {
    s
}

fn router() -> Router {
    Router::new().add_route(Route::new(echo).name("echo").command(0))
}

#[tarpc::service]
trait Echo {
    async fn echo(s: String) -> String;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, s: String) -> String {
        s
    }
}

/// Where each server listens.
struct Addrs {
    raw_tcp: SocketAddr,
    raw_udp: SocketAddr,
    raw_unix: PathBuf,
    msgpack_tcp: SocketAddr,
    msgpack_udp: SocketAddr,
    msgpack_unix: PathBuf,
    jsonrpc_tcp: SocketAddr,
    bsr_tcp: SocketAddr,
    tarpc_bincode: SocketAddr,
    tarpc_json: SocketAddr,
}

/// A length-prefixed echo: frames are read from a buffer and written to another, flushed when
/// no more input is buffered (one write for many frames under load).
async fn raw_stream_echo<S: AsyncRead + AsyncWrite>(io: S) {
    let (r, w) = tokio::io::split(io);
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let mut frame = vec![0u8; 1024];
    loop {
        let Ok(len) = r.read_u32().await else { return };
        let len = len as usize;
        if len > frame.len() {
            return;
        }
        if r.read_exact(&mut frame[..len]).await.is_err() {
            return;
        }
        if w.write_u32(len as u32).await.is_err() || w.write_all(&frame[..len]).await.is_err() {
            return;
        }
        if r.buffer().is_empty() && w.flush().await.is_err() {
            return;
        }
    }
}

async fn start_servers(dir: &std::path::Path) -> (Addrs, Vec<Box<dyn std::any::Any>>) {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let local: SocketAddr = "127.0.0.1:0".parse().expect("an address");

    let listener = TcpListener::bind(local).await.expect("bind");
    let raw_tcp = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(raw_stream_echo(s));
        }
    });
    let raw_unix = dir.join("raw.sock");
    let listener = UnixListener::bind(&raw_unix).expect("bind");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(raw_stream_echo(s));
        }
    });
    let socket = UdpSocket::bind(local).await.expect("bind");
    let raw_udp = socket.local_addr().expect("an address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });

    let s = tcp::Builder::new()
        .serve(router())
        .bind(local, RpcudpCodec::new())
        .await
        .expect("bind");
    let msgpack_tcp = s.local_addr();
    keep.push(Box::new(s));
    let s = udp::Builder::new()
        .serve(router())
        .bind(local, RpcudpCodec::new())
        .await
        .expect("bind");
    let msgpack_udp = s.local_addr();
    keep.push(Box::new(s));
    let msgpack_unix = dir.join("msgpack.sock");
    let s = unix::Builder::new()
        .serve(router())
        .bind(&msgpack_unix, RpcudpCodec::new())
        .await
        .expect("bind");
    keep.push(Box::new(s));
    let s = tcp::Builder::new()
        .serve(router())
        .bind(local, JsonRpcCodec::new())
        .await
        .expect("bind");
    let jsonrpc_tcp = s.local_addr();
    keep.push(Box::new(s));
    let s = raw::Builder::new()
        .serve(router())
        .bind_tcp(local)
        .await
        .expect("bind");
    let bsr_tcp = s.local_addr();
    keep.push(Box::new(s));

    let tarpc_bincode = tarpc_server(tarpc::tokio_serde::formats::Bincode::default).await;
    let tarpc_json = tarpc_server(tarpc::tokio_serde::formats::Json::default).await;

    let addrs = Addrs {
        raw_tcp,
        raw_udp,
        raw_unix,
        msgpack_tcp,
        msgpack_udp,
        msgpack_unix,
        jsonrpc_tcp,
        bsr_tcp,
        tarpc_bincode,
        tarpc_json,
    };
    (addrs, keep)
}

type TarpcRequest = tarpc::ClientMessage<EchoRequest>;
type TarpcResponse = tarpc::Response<EchoResponse>;

async fn tarpc_server<Codec, MakeCodec>(codec: MakeCodec) -> SocketAddr
where
    MakeCodec: Fn() -> Codec + Send + 'static,
    Codec: tarpc::tokio_serde::Serializer<TarpcResponse>
        + tarpc::tokio_serde::Deserializer<TarpcRequest>
        + Send
        + 'static,
    std::io::Error: From<<Codec as tarpc::tokio_serde::Serializer<TarpcResponse>>::Error>
        + From<<Codec as tarpc::tokio_serde::Deserializer<TarpcRequest>>::Error>,
{
    use tarpc::server::{BaseChannel, Channel};
    let incoming = tarpc::serde_transport::tcp::listen("127.0.0.1:0", codec)
        .await
        .expect("bind");
    let addr = incoming.local_addr();
    tokio::spawn(
        incoming
            .filter_map(|r| async { r.ok() })
            .for_each(|t| async {
                let channel = BaseChannel::with_defaults(t);
                tokio::spawn(
                    channel
                        .execute(EchoServer.serve())
                        .for_each(|response| async {
                            tokio::spawn(response);
                        }),
                );
            }),
    );
    addr
}

// --- the clients ------------------------------------------------------------------------------

/// Makes one call and checks its answer.
/// Makes one echo call. Each worker calls through its own clone.
trait Caller: Clone + Send + Sync + 'static {
    fn call(&mut self) -> impl Future<Output = ()> + Send;
}

impl<S> Caller for Client<S>
where
    S: tower::Service<rpc_core::Request, Response = rpc_core::Payload>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<rpc_core::BoxError>,
    S::Future: Send,
{
    async fn call(&mut self) {
        // Through the worker's own instance of the channel: no clone per call.
        let r: String = Client::call_mut(self, "echo", (PAYLOAD,))
            .await
            .expect("the call succeeds");
        assert_eq!(r, PAYLOAD);
    }
}

/// basic-socket-rpc calls by command id.
#[derive(Clone)]
struct Bsr(Client<raw::Channel<tcp::Tcp>>);

impl Caller for Bsr {
    async fn call(&mut self) {
        let r: String = self
            .0
            .call_mut(0u16, (PAYLOAD,))
            .await
            .expect("the call succeeds");
        assert_eq!(r, PAYLOAD);
    }
}

impl Caller for EchoClient {
    async fn call(&mut self) {
        let r = self
            .echo(tarpc::context::current(), PAYLOAD.to_owned())
            .await
            .expect("the call succeeds");
        assert_eq!(r, PAYLOAD);
    }
}

/// A raw client: with one call in flight, a plain write then read on the socket; with more,
/// a writer that batches frames and a reader that hands each echo to its caller by the slot
/// number it carries.
#[derive(Clone)]
enum RawConn {
    Stream(Arc<tokio::sync::Mutex<Box<dyn DuplexStream>>>),
    Datagram(Arc<UdpSocket>),
    Mux(Arc<Mux>),
}

trait DuplexStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> DuplexStream for T {}

/// The shared state of a multiplexed raw connection.
struct Mux {
    /// Frames waiting for the writer.
    outbox: Mutex<Vec<u8>>,
    wake_writer: Notify,
    /// The caller waiting in each slot.
    waiting: Mutex<Vec<Option<oneshot::Sender<()>>>>,
    /// Free slots.
    free: Mutex<Vec<u32>>,
    datagram: Option<Arc<UdpSocket>>,
}

fn frame(slot: u32) -> [u8; 32] {
    let mut f = [0u8; 32];
    f.copy_from_slice(PAYLOAD.as_bytes());
    f[..4].copy_from_slice(&slot.to_be_bytes());
    f
}

impl Mux {
    fn new(slots: usize, datagram: Option<Arc<UdpSocket>>) -> Arc<Self> {
        Arc::new(Self {
            outbox: Mutex::new(Vec::new()),
            wake_writer: Notify::new(),
            waiting: Mutex::new((0..slots).map(|_| None).collect()),
            free: Mutex::new((0..slots as u32).collect()),
            datagram,
        })
    }

    fn answer(&self, payload: &[u8]) {
        let slot = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(
            &payload[4..],
            &PAYLOAD.as_bytes()[4..],
            "the echo is intact"
        );
        if let Some(tx) = self.waiting.lock().expect("not poisoned")[slot].take() {
            let _ = tx.send(());
        }
    }

    async fn call(&self) {
        let slot = self
            .free
            .lock()
            .expect("not poisoned")
            .pop()
            .expect("a free slot");
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("not poisoned")[slot as usize] = Some(tx);
        let f = frame(slot);
        match &self.datagram {
            Some(socket) => {
                socket.send(&f).await.expect("sent");
            }
            None => {
                let mut out = self.outbox.lock().expect("not poisoned");
                out.extend_from_slice(&32u32.to_be_bytes());
                out.extend_from_slice(&f);
                drop(out);
                self.wake_writer.notify_one();
            }
        }
        rx.await.expect("answered");
        self.free.lock().expect("not poisoned").push(slot);
    }
}

fn mux_stream<S: DuplexStream + 'static>(io: S, slots: usize) -> RawConn {
    let mux = Mux::new(slots, None);
    let (mut r, mut w) = tokio::io::split(io);
    let writer = mux.clone();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            writer.wake_writer.notified().await;
            std::mem::swap(
                &mut batch,
                &mut *writer.outbox.lock().expect("not poisoned"),
            );
            if !batch.is_empty() && w.write_all(&batch).await.is_err() {
                return;
            }
            batch.clear();
        }
    });
    let reader = mux.clone();
    tokio::spawn(async move {
        let mut r = BufReader::with_capacity(64 * 1024, &mut r);
        let mut payload = [0u8; 32];
        loop {
            let Ok(len) = r.read_u32().await else { return };
            assert_eq!(len, 32, "an echo of the right size");
            if r.read_exact(&mut payload).await.is_err() {
                return;
            }
            reader.answer(&payload);
        }
    });
    RawConn::Mux(mux)
}

fn mux_datagram(socket: UdpSocket, slots: usize) -> RawConn {
    let socket = Arc::new(socket);
    let mux = Mux::new(slots, Some(socket.clone()));
    let reader = mux.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf).await {
            reader.answer(&buf[..n]);
        }
    });
    RawConn::Mux(mux)
}

impl Caller for RawConn {
    async fn call(&mut self) {
        match self {
            RawConn::Stream(io) => {
                let mut io = io.lock().await;
                let f = frame(0);
                let mut out = [0u8; 36];
                out[..4].copy_from_slice(&32u32.to_be_bytes());
                out[4..].copy_from_slice(&f);
                io.write_all(&out).await.expect("sent");
                let mut back = [0u8; 36];
                io.read_exact(&mut back).await.expect("echoed");
                assert_eq!(back, out);
            }
            RawConn::Datagram(socket) => {
                let f = frame(0);
                socket.send(&f).await.expect("sent");
                let mut back = [0u8; 64];
                let n = socket.recv(&mut back).await.expect("echoed");
                assert_eq!(&back[..n], &f);
            }
            RawConn::Mux(mux) => mux.call().await,
        }
    }
}

// --- the load ----------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    conns: usize,
    in_flight: usize,
}

const SHAPES: [Shape; 3] = [
    Shape {
        name: "1x1",
        conns: 1,
        in_flight: 1,
    },
    Shape {
        name: "1x64",
        conns: 1,
        in_flight: 64,
    },
    Shape {
        name: "16x8",
        conns: 16,
        in_flight: 8,
    },
];

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    calls_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Calls through `conns`, `in_flight` at a time on each, for `secs`.
async fn load<C: Caller>(conns: &[C], in_flight: usize, secs: Duration) -> Run {
    // Warm up: connect, fill caches.
    for c in conns {
        c.clone().call().await;
    }
    let start = Instant::now();
    // Callers stop when this is set, rather than each reading the clock once more per call.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(secs).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let mut tasks = Vec::new();
    for c in conns {
        for _ in 0..in_flight {
            let mut c = c.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2)
                    .expect("histogram bounds");
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    c.call().await;
                    h.saturating_record(t.elapsed().as_nanos() as u64);
                    n += 1;
                }
                (n, h)
            }));
        }
    }
    timer.await.expect("the timer ran");
    let mut total = 0;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).expect("bounds");
    for t in tasks {
        let (n, h) = t.await.expect("the caller ran");
        total += n;
        all.add(h).expect("same bounds");
    }
    Run {
        calls_per_sec: total as f64 / start.elapsed().as_secs_f64(),
        p50_us: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: all.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// A system under test: its name, the transport whose raw baseline it is compared with, and how
/// to open `n` connections to it with `slots` calls in flight on each.
struct System {
    name: &'static str,
    baseline: &'static str,
    run: Box<dyn Fn(Shape, Duration) -> futures::future::LocalBoxFuture<'static, Run>>,
}

fn system<C, F, Fut>(name: &'static str, baseline: &'static str, connect: F) -> System
where
    C: Caller,
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: Future<Output = C> + 'static,
{
    System {
        name,
        baseline,
        run: Box::new(move |shape, secs| {
            let connect = connect.clone();
            Box::pin(async move {
                let mut conns = Vec::new();
                for _ in 0..shape.conns {
                    conns.push(connect(shape.in_flight).await);
                }
                load(&conns, shape.in_flight, secs).await
            })
        }),
    }
}

fn systems(a: &Addrs) -> Vec<System> {
    let (raw_tcp, raw_udp, raw_unix) = (a.raw_tcp, a.raw_udp, a.raw_unix.clone());
    let (msgpack_tcp, msgpack_udp, msgpack_unix) =
        (a.msgpack_tcp, a.msgpack_udp, a.msgpack_unix.clone());
    let (jsonrpc_tcp, bsr_tcp) = (a.jsonrpc_tcp, a.bsr_tcp);
    let (tarpc_bincode, tarpc_json) = (a.tarpc_bincode, a.tarpc_json);
    vec![
        system("raw tcp", "raw tcp", move |slots| async move {
            let s = TcpStream::connect(raw_tcp).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            if slots == 1 {
                RawConn::Stream(Arc::new(tokio::sync::Mutex::new(Box::new(s))))
            } else {
                mux_stream(s, slots)
            }
        }),
        system("raw udp", "raw udp", move |slots| async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            s.connect(raw_udp).await.expect("connect");
            if slots == 1 {
                RawConn::Datagram(Arc::new(s))
            } else {
                mux_datagram(s, slots)
            }
        }),
        system("raw unix", "raw unix", move |slots| {
            let path = raw_unix.clone();
            async move {
                let s = UnixStream::connect(path).await.expect("connect");
                if slots == 1 {
                    RawConn::Stream(Arc::new(tokio::sync::Mutex::new(Box::new(s))))
                } else {
                    mux_stream(s, slots)
                }
            }
        }),
        system("rpc-stack msgpack tcp", "raw tcp", move |_| async move {
            tcp::Builder::new().client(msgpack_tcp, RpcudpCodec::new())
        }),
        system("rpc-stack msgpack udp", "raw udp", move |_| async move {
            udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind")
                .client(msgpack_udp)
        }),
        system("rpc-stack msgpack unix", "raw unix", move |_| {
            let path = msgpack_unix.clone();
            async move { unix::Builder::new().client(path, RpcudpCodec::new()) }
        }),
        system("rpc-stack jsonrpc tcp", "raw tcp", move |_| async move {
            tcp::Builder::new().client(jsonrpc_tcp, JsonRpcCodec::new())
        }),
        system("rpc-stack bsr tcp", "raw tcp", move |_| async move {
            Bsr(raw::Builder::new().client_tcp(bsr_tcp))
        }),
        system("tarpc bincode tcp", "raw tcp", move |_| async move {
            let t = tarpc::serde_transport::tcp::connect(
                tarpc_bincode,
                tarpc::tokio_serde::formats::Bincode::default,
            )
            .await
            .expect("connect");
            EchoClient::new(tarpc::client::Config::default(), t).spawn()
        }),
        system("tarpc json tcp", "raw tcp", move |_| async move {
            let t = tarpc::serde_transport::tcp::connect(
                tarpc_json,
                tarpc::tokio_serde::formats::Json::default,
            )
            .await
            .expect("connect");
            EchoClient::new(tarpc::client::Config::default(), t).spawn()
        }),
    ]
}

// --- the report --------------------------------------------------------------------------------

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
}

fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec));
    runs[runs.len() / 2]
}

/// The targets: (system, shape, baseline, least ratio).
const TARGETS: [(&str, &str, &str, f64); 8] = [
    ("rpc-stack msgpack tcp", "1x1", "raw tcp", 0.75),
    ("rpc-stack msgpack tcp", "1x64", "raw tcp", 0.5),
    ("rpc-stack msgpack tcp", "16x8", "raw tcp", 0.5),
    ("rpc-stack msgpack udp", "1x1", "raw udp", 0.75),
    ("rpc-stack msgpack udp", "1x64", "raw udp", 0.75),
    ("rpc-stack msgpack unix", "1x64", "raw unix", 0.5),
    ("rpc-stack jsonrpc tcp", "1x64", "raw tcp", 0.35),
    ("rpc-stack msgpack tcp", "1x64", "tarpc bincode tcp", 3.0),
];

fn main() {
    let secs = Duration::from_secs_f64(
        std::env::var("RPC_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0),
    );
    let rounds: usize = std::env::var("RPC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let only = env_list("RPC_BENCH_ONLY");
    let shapes: Vec<Shape> = match env_list("RPC_BENCH_SHAPES") {
        Some(names) => SHAPES
            .into_iter()
            .filter(|s| names.iter().any(|n| n == s.name))
            .collect(),
        None => SHAPES.to_vec(),
    };

    let dir = std::env::temp_dir().join(format!("rpc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (tx, rx) = std::sync::mpsc::channel();
    let server_dir = dir.clone();
    let server = std::thread::Builder::new().name("server".into());
    let _ = server.spawn(move || {
        runtime().block_on(async move {
            let (addrs, _keep) = start_servers(&server_dir).await;
            tx.send(addrs).expect("the bench waits");
            // Served until the process exits.
            std::future::pending::<()>().await;
        })
    });
    let addrs = rx.recv().expect("servers started");
    let systems: Vec<System> = systems(&addrs)
        .into_iter()
        .filter(|s| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|w| s.name.contains(w.as_str())))
        })
        .collect();

    let rt = runtime();
    println!(
        "{} systems × {} shapes × {rounds} rounds of {:.1} s; servers on one thread, clients on another",
        systems.len(),
        shapes.len(),
        secs.as_secs_f64()
    );
    let mut results: Vec<(&str, &str, Run)> = Vec::new();
    for shape in &shapes {
        let mut runs: Vec<Vec<Run>> = systems.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, s) in systems.iter().enumerate() {
                runs[i].push(rt.block_on((s.run)(*shape, secs)));
            }
        }
        for (s, r) in systems.iter().zip(runs) {
            results.push((shape.name, s.name, median_run(r)));
        }
    }
    let find = |shape: &str, name: &str| {
        results
            .iter()
            .find(|(sh, n, _)| *sh == shape && *n == name)
            .map(|(_, _, r)| *r)
    };

    println!();
    println!("| shape | system | calls/s | p50 µs | p99 µs | × raw | × tarpc |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (shape, name, r) in &results {
        let base = systems
            .iter()
            .find(|s| s.name == *name)
            .map(|s| s.baseline)
            .unwrap_or("");
        let ratio = |other: &str| match find(shape, other) {
            Some(o) if other != *name => format!("{:.2}", r.calls_per_sec / o.calls_per_sec),
            _ => "–".to_owned(),
        };
        let tarpc = if name.contains("tcp") {
            ratio("tarpc bincode tcp")
        } else {
            "–".to_owned()
        };
        println!(
            "| {shape} | {name} | {:.0} | {:.1} | {:.1} | {} | {tarpc} |",
            r.calls_per_sec,
            r.p50_us,
            r.p99_us,
            ratio(base),
        );
    }
    println!();
    for (name, shape, base, least) in TARGETS {
        if let (Some(r), Some(b)) = (find(shape, name), find(shape, base)) {
            let ratio = r.calls_per_sec / b.calls_per_sec;
            println!(
                "target {name} {shape} ≥ {least:.2}× {base}: {ratio:.2} {}",
                if ratio >= least { "met" } else { "MISSED" }
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A single-threaded runtime.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
