//! End to end over real sockets, in one run and under the same conditions: raw tokio echo
//! servers and clients per transport (no RPC: the baseline), rpc-stack for each transport and
//! codec (MessagePack-RPC over a Unix socket beside rpcudp's envelope over the same kind of
//! socket), and tarpc over TCP (bincode and JSON), in three shapes: one connection with one call
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
//! `RPC_BENCH_SHAPES=1x64` (shapes by name), `RPC_BENCH_CALLERS=one-task` (a connection's calls
//! in flight made by one task rather than a task each), `RPC_BENCH_PROCESSES=1` (each server and
//! client a process of its own, on default multi-thread runtimes).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::{MsgpackRpcCodec, RpcudpCodec};
use rpc_core::{Client, Route, Router};
use rpc_transports::stream::Framing;
use rpc_transports::{raw, tcp, tls, udp, unix};
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
#[derive(Clone)]
struct Addrs {
    raw_tcp: SocketAddr,
    raw_udp: SocketAddr,
    raw_unix: PathBuf,
    msgpack_tcp: SocketAddr,
    msgpack_udp: SocketAddr,
    msgpack_unix: PathBuf,
    msgpack_rpc_unix: PathBuf,
    jsonrpc_tcp: SocketAddr,
    bsr_tcp: SocketAddr,
    tarpc_bincode: SocketAddr,
    tarpc_json: SocketAddr,
    msgpack_tls: SocketAddr,
    /// The CA that signed the TLS server's certificate (for `localhost`), as a PEM file.
    tls_ca: PathBuf,
}

/// A TLS server configuration for `localhost`, with a CA of its own written to `ca_file`.
fn tls_server_config(ca_file: &std::path::Path) -> Arc<tls::rustls::ServerConfig> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("a key"))
        .expect("a CA");
    std::fs::write(ca_file, ca.pem()).expect("the CA written");
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("signed");
    let identity = tls::Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .expect("an identity");
    tls::server_config(identity, None).expect("a config")
}

/// The client configuration that trusts the CA in `ca_file`.
fn tls_client_config(ca_file: &std::path::Path) -> Arc<tls::rustls::ClientConfig> {
    let roots = tls::Roots::from_pem_file(ca_file).expect("the CA");
    tls::client_config(&roots, None).expect("a config")
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
    let msgpack_rpc_unix = dir.join("msgpack-rpc.sock");
    let s = unix::Builder::new()
        .framing(Framing::MsgPack)
        .serve(router())
        .bind(&msgpack_rpc_unix, MsgpackRpcCodec::new())
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

    let tls_ca = dir.join("ca.pem");
    let s = tls::Builder::new()
        .serve(router())
        .bind(local, tls_server_config(&tls_ca), RpcudpCodec::new())
        .await
        .expect("bind");
    let msgpack_tls = s.local_addr();
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
        msgpack_rpc_unix,
        jsonrpc_tcp,
        bsr_tcp,
        tarpc_bincode,
        tarpc_json,
        msgpack_tls,
        tls_ca,
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
            // The callers woken with the one that woke the writer queue theirs first: one
            // write for them all.
            tokio::task::yield_now().await;
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

/// How the calls in flight on a connection are made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Callers {
    /// A task of its own per caller (as request handlers that each make a call): every answer
    /// wakes a task. The default.
    TaskPerCaller,
    /// One task drives all of a connection's callers (as `buffer_unordered` or `rpc bench`
    /// do): the answers one read brings wake it once. `RPC_BENCH_CALLERS=one-task`.
    OneTaskPerConnection,
}

fn callers() -> Callers {
    match std::env::var("RPC_BENCH_CALLERS").as_deref() {
        Ok("one-task") => Callers::OneTaskPerConnection,
        _ => Callers::TaskPerCaller,
    }
}

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
    let one_task = callers() == Callers::OneTaskPerConnection;
    let mut tasks = Vec::new();
    for c in conns {
        let mut group = Vec::new();
        for _ in 0..in_flight {
            let mut c = c.clone();
            let stop = stop.clone();
            let caller = async move {
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
            };
            if one_task {
                group.push(caller);
            } else {
                tasks.push(tokio::spawn(async move { vec![caller.await] }));
            }
        }
        if one_task {
            tasks.push(tokio::spawn(futures::future::join_all(group)));
        }
    }
    timer.await.expect("the timer ran");
    let mut total = 0;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).expect("bounds");
    for t in tasks {
        for (n, h) in t.await.expect("the callers ran") {
            total += n;
            all.add(h).expect("same bounds");
        }
    }
    Run {
        calls_per_sec: total as f64 / start.elapsed().as_secs_f64(),
        p50_us: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: all.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// A system under test: its name, and how to open `n` connections to it with `slots` calls in
/// flight on each.
struct System {
    name: &'static str,
    run: Box<dyn Fn(Shape, Duration) -> futures::future::LocalBoxFuture<'static, Run>>,
}

fn system<C, F, Fut>(name: &'static str, connect: F) -> System
where
    C: Caller,
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: Future<Output = C> + 'static,
{
    System {
        name,
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
    let (msgpack_tls, tls_ca) = (a.msgpack_tls, a.tls_ca.clone());
    let msgpack_rpc_unix = a.msgpack_rpc_unix.clone();
    vec![
        system("raw tcp", move |slots| async move {
            let s = TcpStream::connect(raw_tcp).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            if slots == 1 {
                RawConn::Stream(Arc::new(tokio::sync::Mutex::new(Box::new(s))))
            } else {
                mux_stream(s, slots)
            }
        }),
        system("raw udp", move |slots| async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            s.connect(raw_udp).await.expect("connect");
            if slots == 1 {
                RawConn::Datagram(Arc::new(s))
            } else {
                mux_datagram(s, slots)
            }
        }),
        system("raw unix", move |slots| {
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
        system("rpc-stack msgpack tcp", move |_| async move {
            tcp::Builder::new().client(msgpack_tcp, RpcudpCodec::new())
        }),
        system("rpc-stack msgpack udp", move |_| async move {
            udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bind")
                .client(msgpack_udp)
        }),
        system("rpc-stack msgpack unix", move |_| {
            let path = msgpack_unix.clone();
            async move { unix::Builder::new().client(path, RpcudpCodec::new()) }
        }),
        system("rpc-stack msgpack-rpc unix", move |_| {
            let path = msgpack_rpc_unix.clone();
            async move {
                unix::Builder::new()
                    .framing(Framing::MsgPack)
                    .client(path, MsgpackRpcCodec::new())
            }
        }),
        system("rpc-stack msgpack tls", move |_| {
            let config = tls_client_config(&tls_ca);
            async move {
                let to = tls::Address::new(msgpack_tls, "localhost", config).expect("an address");
                tls::Builder::new().client(to, RpcudpCodec::new())
            }
        }),
        system("rpc-stack jsonrpc tcp", move |_| async move {
            tcp::Builder::new().client(jsonrpc_tcp, JsonRpcCodec::new())
        }),
        system("rpc-stack bsr tcp", move |_| async move {
            Bsr(raw::Builder::new().client_tcp(bsr_tcp))
        }),
        system("tarpc bincode tcp", move |_| async move {
            let t = tarpc::serde_transport::tcp::connect(
                tarpc_bincode,
                tarpc::tokio_serde::formats::Bincode::default,
            )
            .await
            .expect("connect");
            EchoClient::new(tarpc::client::Config::default(), t).spawn()
        }),
        system("tarpc json tcp", move |_| async move {
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

/// The median of `runs`, by calls per second.
fn median<T: Copy>(mut runs: Vec<T>, rate: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    runs[runs.len() / 2]
}

/// The targets: (system, shape, baseline, least ratio).
const TARGETS: [(&str, &str, &str, f64); 11] = [
    ("rpc-stack msgpack tcp", "1x1", "raw tcp", 0.75),
    ("rpc-stack msgpack tcp", "1x64", "raw tcp", 0.5),
    ("rpc-stack msgpack tcp", "16x8", "raw tcp", 0.5),
    ("rpc-stack msgpack udp", "1x1", "raw udp", 0.75),
    ("rpc-stack msgpack udp", "1x64", "raw udp", 0.75),
    ("rpc-stack msgpack unix", "1x64", "raw unix", 0.5),
    // MessagePack-RPC measures each frame as it arrives; rpcudp's envelope is length-prefixed.
    (
        "rpc-stack msgpack-rpc unix",
        "1x64",
        "rpc-stack msgpack unix",
        0.85,
    ),
    ("rpc-stack jsonrpc tcp", "1x64", "raw tcp", 0.35),
    ("rpc-stack msgpack tcp", "1x64", "tarpc bincode tcp", 3.0),
    (
        "rpc-stack msgpack tls",
        "1x64",
        "rpc-stack msgpack tcp",
        0.6,
    ),
    (
        "rpc-stack msgpack tls",
        "16x8",
        "rpc-stack msgpack tcp",
        0.6,
    ),
];

// --- the cross-process mode -----------------------------------------------------------------

impl Addrs {
    /// One line, for the environment of a client process.
    fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} {}",
            self.raw_tcp,
            self.raw_udp,
            self.raw_unix.display(),
            self.msgpack_tcp,
            self.msgpack_udp,
            self.msgpack_unix.display(),
            self.msgpack_rpc_unix.display(),
            self.jsonrpc_tcp,
            self.bsr_tcp,
            self.tarpc_bincode,
            self.tarpc_json,
            self.msgpack_tls,
            self.tls_ca.display()
        )
    }

    fn from_line(line: &str) -> Self {
        let f: Vec<&str> = line.split(' ').collect();
        let sock = |i: usize| f[i].parse().expect("a socket address");
        Addrs {
            raw_tcp: sock(0),
            raw_udp: sock(1),
            raw_unix: f[2].into(),
            msgpack_tcp: sock(3),
            msgpack_udp: sock(4),
            msgpack_unix: f[5].into(),
            msgpack_rpc_unix: f[6].into(),
            jsonrpc_tcp: sock(7),
            bsr_tcp: sock(8),
            tarpc_bincode: sock(9),
            tarpc_json: sock(10),
            msgpack_tls: sock(11),
            tls_ca: f[12].into(),
        }
    }
}

/// The CPU time a process has used (user and system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The kernel counts in USER_HZ, 100 a second on Linux.
    Duration::from_millis((ticks(14) + ticks(15)) * 10)
}

/// The server process's role: every server, on a default multi-thread runtime, as a user's
/// `#[tokio::main]` program; their addresses on the first line; served until stdin closes.
fn serve_process() {
    let dir = std::env::temp_dir().join(format!("rpc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async move {
            let (addrs, _keep) = start_servers(&dir).await;
            println!("{}", addrs.to_line());
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await;
        });
}

/// A client process's role: one system and shape, on a default multi-thread runtime; prints
/// calls/s, p50 and p99 µs, and its own CPU seconds over the run.
fn client_process(system: &str, shape: &str, secs: Duration) {
    let addrs = Addrs::from_line(&std::env::var("RPC_BENCH_ADDRS").expect("the addresses"));
    let shape = SHAPES
        .into_iter()
        .find(|s| s.name == shape)
        .expect("a shape");
    let systems = systems(&addrs);
    let s = systems.iter().find(|s| s.name == system).expect("a system");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let me = std::process::id();
    let before = cpu_time(me);
    let r = rt.block_on((s.run)(shape, secs));
    let cpu = cpu_time(me) - before;
    println!(
        "{} {} {} {}",
        r.calls_per_sec,
        r.p50_us,
        r.p99_us,
        cpu.as_secs_f64()
    );
}

/// The system calls a process makes while it is watched, counted by `perf stat` (the
/// `raw_syscalls:sys_enter` tracepoint), where perf is installed and may attach.
struct Syscalls {
    perf: std::process::Child,
    out: PathBuf,
}

impl Syscalls {
    /// Starts counting the system calls of `pid` (and of the threads it starts); `None` without
    /// perf.
    fn watch(pid: u32) -> Option<Self> {
        let out = std::env::temp_dir().join(format!("rpc-bench-perf-{}-{pid}", std::process::id()));
        let perf = std::process::Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // perf reads the process's threads before it counts: a short wait, so the run is not
        // started before it is watched.
        std::thread::sleep(Duration::from_millis(100));
        Some(Self { perf, out })
    }

    /// Stops counting: how many system calls were made.
    fn stop(mut self) -> Option<u64> {
        let signalled = std::process::Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status()
            .ok()?;
        if !signalled.success() {
            let _ = self.perf.kill();
        }
        self.perf.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok()?;
        let _ = std::fs::remove_file(&self.out);
        text.lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))
            .and_then(|l| l.split(',').next()?.parse().ok())
    }
}

/// One cross-process run: its figures, and the CPU time and system calls per call of the server
/// and the client.
#[derive(Clone, Copy, Debug)]
struct ProcRun {
    run: Run,
    server_us: f64,
    client_us: f64,
    /// System calls per call of the server and the client, where perf could count them.
    syscalls: Option<(f64, f64)>,
}

/// System calls per call, from the counts of the server and the client.
fn per_call(server: Option<u64>, client: Option<u64>, calls: f64) -> Option<(f64, f64)> {
    Some((server? as f64 / calls, client? as f64 / calls))
}

/// Runs `client` to the end and measures `server_pid`'s CPU time and system calls meanwhile.
fn measure(mut client: std::process::Command, server_pid: u32, secs: Duration) -> ProcRun {
    let before = cpu_time(server_pid);
    let server_calls = Syscalls::watch(server_pid);
    let child = client
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the client runs");
    let client_calls = Syscalls::watch(child.id());
    let out = child.wait_with_output().expect("the client runs");
    let server = cpu_time(server_pid) - before;
    let server_calls = server_calls.and_then(Syscalls::stop);
    let client_calls = client_calls.and_then(Syscalls::stop);
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        out.status.success() && f.len() == 4,
        "a client failed: {line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = f[0] * secs.as_secs_f64();
    ProcRun {
        run: Run {
            calls_per_sec: f[0],
            p50_us: f[1],
            p99_us: f[2],
        },
        server_us: server.as_secs_f64() * 1e6 / calls,
        client_us: f[3] * 1e6 / calls,
        syscalls: per_call(server_calls, client_calls, calls),
    }
}

/// `rpc serve` and `rpc bench` (msgpack over TCP), if the `rpc` binary is built in the same
/// profile: the pair as a user runs it.
fn rpc_tool_run(shape: Shape, secs: Duration) -> Option<ProcRun> {
    let exe = std::env::current_exe().ok()?;
    let rpc = exe.parent()?.parent()?.join("rpc");
    if !rpc.exists() {
        return None;
    }
    let mut server = std::process::Command::new(&rpc)
        .args(["serve", "--listen", "tcp://127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take()?),
        &mut first,
    )
    .ok()?;
    let url = first.trim().strip_prefix("listening on ")?.to_owned();
    let mut client = std::process::Command::new(&rpc);
    client.args([
        "bench",
        &url,
        "echo",
        &format!("\"{PAYLOAD}\""),
        "--connections",
        &shape.conns.to_string(),
        "--concurrency",
        &(shape.conns * shape.in_flight).to_string(),
        "--duration",
        &format!("{}ms", secs.as_millis()),
        "--json",
    ]);
    let before = cpu_time(server.id());
    let server_calls = Syscalls::watch(server.id());
    let child = client.stdout(std::process::Stdio::piped()).spawn().ok()?;
    let client_calls = Syscalls::watch(child.id());
    let out = child.wait_with_output().ok()?;
    let server_cpu = cpu_time(server.id()) - before;
    let server_calls = server_calls.and_then(Syscalls::stop);
    let client_calls = client_calls.and_then(Syscalls::stop);
    let out = String::from_utf8_lossy(&out.stdout);
    let _ = server.kill();
    let _ = server.wait();
    let report: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    let rps = report["rps"].as_f64()?;
    let calls = report["requests"].as_f64()?;
    Some(ProcRun {
        run: Run {
            calls_per_sec: rps,
            p50_us: report["p50_us"].as_f64()?,
            p99_us: report["p99_us"].as_f64()?,
        },
        server_us: server_cpu.as_secs_f64() * 1e6 / calls,
        // rpc bench's own figure.
        client_us: report["cpu_us_per_call"].as_f64()?,
        syscalls: per_call(server_calls, client_calls, calls),
    })
}

/// The cross-process mode (`RPC_BENCH_PROCESSES=1`): each system's servers in one process,
/// each client run a process of its own, both on default multi-thread runtimes.
fn cross_process(systems: &[&'static str], shapes: &[Shape], rounds: usize, secs: Duration) {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut server = std::process::Command::new(&exe)
        .env("RPC_BENCH_ROLE", "server")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the server process starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
        &mut line,
    )
    .expect("the server's addresses");
    let addrs = line.trim().to_owned();
    println!(
        "{} systems × {} shapes × {rounds} rounds of {:.1} s; each server and client a process \
         of its own on a default multi-thread runtime",
        systems.len() + 1,
        shapes.len(),
        secs.as_secs_f64()
    );
    let mut results: Vec<(&str, &str, ProcRun)> = Vec::new();
    for shape in shapes {
        let mut runs: Vec<Vec<ProcRun>> = systems.iter().map(|_| Vec::new()).collect();
        let mut tool = Vec::new();
        for _ in 0..rounds {
            for (i, name) in systems.iter().enumerate() {
                let mut client = std::process::Command::new(&exe);
                client
                    .env("RPC_BENCH_ROLE", "client")
                    .env("RPC_BENCH_ADDRS", &addrs)
                    .env("RPC_BENCH_SYSTEM", name)
                    .env("RPC_BENCH_SHAPE", shape.name)
                    .env("RPC_BENCH_SECS", secs.as_secs_f64().to_string());
                runs[i].push(measure(client, server.id(), secs));
            }
            tool.extend(rpc_tool_run(*shape, secs));
        }
        for (name, r) in systems.iter().zip(runs) {
            results.push((shape.name, name, median(r, |p| p.run.calls_per_sec)));
        }
        if !tool.is_empty() {
            results.push((
                shape.name,
                "rpc serve + rpc bench, msgpack tcp",
                median(tool, |p| p.run.calls_per_sec),
            ));
        }
    }
    drop(server.stdin.take());
    let _ = server.wait();
    let cells: Vec<Cell> = results
        .into_iter()
        .map(|(shape, system, r)| Cell {
            shape,
            system,
            run: r.run,
            cpu: Some((r.server_us, r.client_us)),
            syscalls: r.syscalls,
        })
        .collect();
    report(&cells, &CROSS_PROCESS_TARGETS);
}

/// One cell of the report: a shape, a system, its figures, and (across processes) the CPU time
/// per call of its server and of its client, in µs.
struct Cell {
    shape: &'static str,
    system: &'static str,
    run: Run,
    cpu: Option<(f64, f64)>,
    /// Across processes, where perf counts them: system calls per call of the server and the
    /// client.
    syscalls: Option<(f64, f64)>,
}

/// The raw echo a system is compared with: of its transport.
fn baseline(system: &str) -> &'static str {
    if system.contains("udp") {
        "raw udp"
    } else if system.contains("unix") {
        "raw unix"
    } else {
        "raw tcp"
    }
}

/// Prints the table of `cells`, with ratios to the raw baseline and to tarpc in the same run,
/// and whether each of `targets` was met.
fn report(cells: &[Cell], targets: &[(&str, &str, &str, f64)]) {
    let find = |shape: &str, system: &str| {
        cells
            .iter()
            .find(|c| c.shape == shape && c.system == system)
            .map(|c| c.run)
    };
    let cpu = cells.iter().any(|c| c.cpu.is_some());
    let syscalls = cells.iter().any(|c| c.syscalls.is_some());
    let mut header = "| shape | system | calls/s | p50 µs | p99 µs | × raw | × tarpc |".to_owned();
    let mut rule = "|---|---|---:|---:|---:|---:|---:|".to_owned();
    if cpu {
        header += " server CPU µs/call | client CPU µs/call |";
        rule += "---:|---:|";
    }
    if syscalls {
        header += " server syscalls/call | client syscalls/call |";
        rule += "---:|---:|";
    }
    println!();
    println!("{header}");
    println!("{rule}");
    for c in cells {
        let ratio = |other: &str| match find(c.shape, other) {
            Some(o) if other != c.system => {
                format!("{:.2}", c.run.calls_per_sec / o.calls_per_sec)
            }
            _ => "–".to_owned(),
        };
        let tarpc = if c.system.contains("tcp") {
            ratio("tarpc bincode tcp")
        } else {
            "–".to_owned()
        };
        let pair = |v: Option<(f64, f64)>, shown: bool| match v {
            Some((s, cl)) => format!(" {s:.2} | {cl:.2} |"),
            None if shown => " – | – |".to_owned(),
            None => String::new(),
        };
        let cpu = pair(c.cpu, cpu);
        let calls = pair(c.syscalls, syscalls);
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {tarpc} |{cpu}{calls}",
            c.shape,
            c.system,
            c.run.calls_per_sec,
            c.run.p50_us,
            c.run.p99_us,
            ratio(baseline(c.system)),
        );
    }
    println!();
    for (name, shape, base, least) in targets {
        if let (Some(r), Some(b)) = (find(shape, name), find(shape, base)) {
            let ratio = r.calls_per_sec / b.calls_per_sec;
            println!(
                "target {name} {shape} ≥ {least:.2}× {base}: {ratio:.2} {}",
                if ratio >= *least { "met" } else { "MISSED" }
            );
        }
    }
}

/// The cross-process targets: (system, shape, baseline, least ratio).
const CROSS_PROCESS_TARGETS: [(&str, &str, &str, f64); 12] = [
    ("rpc-stack msgpack tcp", "1x64", "raw tcp", 0.6),
    ("rpc-stack msgpack tcp", "16x8", "raw tcp", 0.6),
    ("rpc-stack msgpack tcp", "1x64", "tarpc bincode tcp", 3.0),
    ("rpc-stack msgpack tcp", "16x8", "tarpc bincode tcp", 3.0),
    ("rpc-stack msgpack udp", "1x64", "raw udp", 0.85),
    ("rpc-stack msgpack udp", "16x8", "raw udp", 0.85),
    ("rpc-stack msgpack unix", "1x64", "raw unix", 0.6),
    ("rpc-stack jsonrpc tcp", "1x64", "raw tcp", 0.4),
    (
        "rpc-stack msgpack tls",
        "1x64",
        "rpc-stack msgpack tcp",
        0.6,
    ),
    (
        "rpc-stack msgpack tls",
        "16x8",
        "rpc-stack msgpack tcp",
        0.6,
    ),
    (
        "rpc serve + rpc bench, msgpack tcp",
        "1x64",
        "rpc-stack msgpack tcp",
        0.9,
    ),
    (
        "rpc serve + rpc bench, msgpack tcp",
        "16x8",
        "rpc-stack msgpack tcp",
        0.9,
    ),
];

fn main() {
    match std::env::var("RPC_BENCH_ROLE").as_deref() {
        Ok("server") => return serve_process(),
        Ok("client") => {
            let var = |n: &str| std::env::var(n).expect("set by the bench");
            let secs = Duration::from_secs_f64(var("RPC_BENCH_SECS").parse().expect("seconds"));
            return client_process(&var("RPC_BENCH_SYSTEM"), &var("RPC_BENCH_SHAPE"), secs);
        }
        _ => {}
    }
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

    if std::env::var("RPC_BENCH_PROCESSES").is_ok_and(|v| v == "1") {
        // The systems' names, without their servers: the server process has them.
        let names: Vec<&'static str> = systems(&Addrs::from_line(
            "127.0.0.1:9 127.0.0.1:9 /x 127.0.0.1:9 127.0.0.1:9 /x /x 127.0.0.1:9 127.0.0.1:9 127.0.0.1:9 127.0.0.1:9 127.0.0.1:9 /x",
        ))
        .iter()
        .map(|s| s.name)
        .filter(|n| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|w| n.contains(w.as_str())))
        })
        .collect();
        return cross_process(&names, &shapes, rounds, secs);
    }

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
            results.push((shape.name, s.name, median(r, |r| r.calls_per_sec)));
        }
    }
    let cells: Vec<Cell> = results
        .into_iter()
        .map(|(shape, system, run)| Cell {
            shape,
            system,
            run,
            cpu: None,
            syscalls: None,
        })
        .collect();
    report(&cells, &TARGETS);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A single-threaded runtime.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
