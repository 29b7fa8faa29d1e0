//! Conformance: the same cases against every transport (UDP, TCP, Unix sockets), all with the
//! rpcudp (msgpack) codec, so a behaviour one transport promises the others keep too.
//!
//! Each case is a generic `async fn case(kind: Kind)`; [`for_kinds!`] turns it into one
//! `#[tokio::test]` per transport, named `case::udp`, `case::tcp`, `case::unix`, so a failure names
//! its transport. Only loopback addresses; Unix sockets live in a fresh temporary directory that is
//! removed afterwards. Every case is bounded in time (a whole case by [`CASE_BOUND`], any single
//! step that could hang by [`BOUND`]) and in count.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{BoxChannel, Client, Context, Error, Peer, Router, ServerError};
use rpc_transports::{stream, tcp, udp, unix};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The most any single step of a case may take.
const BOUND: Duration = Duration::from_secs(10);
/// The most a whole case may take.
const CASE_BOUND: Duration = Duration::from_secs(20);
/// The timeout of a client's calls unless a case says otherwise.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How quickly a server must close a connection it refuses.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

// --- harness -------------------------------------------------------------------------------------

/// A transport under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Udp,
    Tcp,
    Unix,
}

impl Kind {
    /// The kind a generated test is named after.
    fn named(name: &str) -> Kind {
        match name {
            "udp" => Kind::Udp,
            "tcp" => Kind::Tcp,
            "unix" => Kind::Unix,
            other => panic!("no transport named {other}"),
        }
    }

    /// Whether the transport has connections (TCP, Unix) rather than datagrams (UDP).
    fn is_stream(self) -> bool {
        self != Kind::Udp
    }
}

/// Runs one case for one transport, bounded by [`CASE_BOUND`].
async fn run<F: Future<Output = ()>>(kind: Kind, case: impl FnOnce(Kind) -> F) {
    match tokio::time::timeout(CASE_BOUND, case(kind)).await {
        Ok(()) => {}
        Err(_) => panic!("{kind:?}: the case did not finish within {CASE_BOUND:?}"),
    }
}

/// One `#[tokio::test]` per listed transport, in a module named after the case. Attributes before
/// a transport (such as `#[ignore = "..."]`) apply to its test only.
macro_rules! for_kinds {
    ($case:ident: $($(#[$attr:meta])* $kind:ident),+ $(,)?) => {
        mod $case {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $kind() {
                    super::run(super::Kind::named(stringify!($kind)), super::$case).await;
                }
            )+
        }
    };
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Addr {
    Ip(SocketAddr),
    Path(PathBuf),
}

/// The limits a server or client is built with; `None` keeps the transport's default.
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    /// Stream: `max_frame_length`; UDP: `max_payload`.
    max_frame: Option<usize>,
    max_concurrent_requests: Option<usize>,
}

/// A running server of any transport.
#[derive(Debug)]
enum Server {
    Udp(udp::Endpoint<RpcudpCodec>),
    Tcp(tcp::Server),
    Unix(unix::Server),
}

impl Server {
    fn addr(&self) -> Addr {
        match self {
            Server::Udp(s) => Addr::Ip(s.local_addr()),
            Server::Tcp(s) => Addr::Ip(s.local_addr()),
            Server::Unix(s) => Addr::Path(s.path()),
        }
    }

    /// Stops the server, waiting at most `grace` for the requests it accepted to be answered.
    async fn shutdown(&self, grace: Duration) -> bool {
        match self {
            Server::Udp(s) => s.shutdown(grace).await,
            Server::Tcp(s) => s.shutdown(grace).await,
            Server::Unix(s) => s.shutdown(grace).await,
        }
    }

    /// Requests received.
    fn requests(&self) -> u64 {
        match self {
            Server::Udp(s) => s.stats().requests,
            Server::Tcp(s) => s.stats().requests,
            Server::Unix(s) => s.stats().requests,
        }
    }

    /// Input refused below the message level: streams count connections closed for a bad frame;
    /// UDP counts datagrams dropped as malformed or over the size limit.
    fn bad_frames(&self) -> u64 {
        match self {
            Server::Udp(s) => s.stats().malformed + s.stats().oversize,
            Server::Tcp(s) => s.stats().bad_frames,
            Server::Unix(s) => s.stats().bad_frames,
        }
    }

    /// Open connections (streams only).
    fn connections(&self) -> usize {
        match self {
            Server::Udp(_) => panic!("UDP has no connections"),
            Server::Tcp(s) => s.connections(),
            Server::Unix(s) => s.connections(),
        }
    }

    /// Connections accepted since the server started (streams only).
    fn accepted(&self) -> u64 {
        match self {
            Server::Udp(_) => panic!("UDP has no connections"),
            Server::Tcp(s) => s.stats().connections,
            Server::Unix(s) => s.stats().connections,
        }
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rpc-conf-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("creates a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts servers and makes clients of one transport.
#[derive(Debug)]
struct Harness {
    kind: Kind,
    scratch: Option<Scratch>,
    sockets: AtomicUsize,
}

impl Harness {
    fn new(kind: Kind) -> Self {
        Harness {
            kind,
            scratch: (kind == Kind::Unix).then(Scratch::new),
            sockets: AtomicUsize::new(0),
        }
    }

    /// An address no server uses yet: an ephemeral loopback port, or a new socket path.
    fn fresh(&self) -> Addr {
        match &self.scratch {
            None => Addr::Ip(SocketAddr::from(([127, 0, 0, 1], 0))),
            Some(dir) => {
                let n = self.sockets.fetch_add(1, Ordering::Relaxed);
                Addr::Path(dir.0.join(format!("s{n}.sock")))
            }
        }
    }

    /// Starts a server of `router` on a fresh address.
    async fn serve(&self, router: Router) -> Server {
        self.serve_with(Limits::default(), router).await
    }

    async fn serve_with(&self, limits: Limits, router: Router) -> Server {
        self.bind(&self.fresh(), limits, router)
            .await
            .expect("binds")
    }

    /// Starts a server of `router` at `addr`.
    async fn bind(&self, addr: &Addr, limits: Limits, router: Router) -> io::Result<Server> {
        let codec = RpcudpCodec::new();
        Ok(match (self.kind, addr) {
            (Kind::Udp, Addr::Ip(a)) => {
                Server::Udp(udp_builder(limits).serve(router).bind(*a, codec).await?)
            }
            (Kind::Tcp, Addr::Ip(a)) => Server::Tcp(
                stream_builder::<tcp::Tcp>(limits)
                    .serve(router)
                    .bind(*a, codec)
                    .await?,
            ),
            (Kind::Unix, Addr::Path(p)) => Server::Unix(
                stream_builder::<unix::Unix>(limits)
                    .serve(router)
                    .bind(p, codec)
                    .await?,
            ),
            (kind, addr) => panic!("{kind:?} cannot listen at {addr:?}"),
        })
    }

    /// Starts a server again at the address a stopped one used. The old socket may take a moment
    /// to be released after shutdown (its tasks end asynchronously): retries while it is in use.
    async fn restart(&self, addr: &Addr, router: Router) -> Server {
        let deadline = Instant::now() + BOUND;
        loop {
            match self.bind(addr, Limits::default(), router.clone()).await {
                Ok(s) => {
                    assert_eq!(&s.addr(), addr, "restarted on the same address");
                    return s;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot bind {addr:?} again: {e}"),
            }
        }
    }

    /// A typed client of the server at `addr`, with the default limits and [`CALL_TIMEOUT`].
    async fn client(&self, addr: &Addr) -> Client<BoxChannel> {
        self.client_with(addr, Limits::default(), None).await
    }

    /// A typed client of the server at `addr`, serving `serve` to the server if given (UDP: on
    /// the client's endpoint; streams: on its connection).
    async fn client_with(
        &self,
        addr: &Addr,
        limits: Limits,
        serve: Option<Router>,
    ) -> Client<BoxChannel> {
        let codec = RpcudpCodec::new();
        let client = match (self.kind, addr) {
            (Kind::Udp, Addr::Ip(a)) => {
                let mut b = udp_builder(limits);
                if let Some(r) = serve {
                    b = b.serve(r);
                }
                // The client's channel keeps its endpoint open.
                let endpoint = b.bind("127.0.0.1:0", codec).await.expect("binds a client");
                endpoint.client(*a).boxed()
            }
            (Kind::Tcp, Addr::Ip(a)) => {
                let mut b = stream_builder::<tcp::Tcp>(limits);
                if let Some(r) = serve {
                    b = b.serve(r);
                }
                b.client(*a, codec).boxed()
            }
            (Kind::Unix, Addr::Path(p)) => {
                let mut b = stream_builder::<unix::Unix>(limits);
                if let Some(r) = serve {
                    b = b.serve(r);
                }
                b.client(p, codec).boxed()
            }
            (kind, addr) => panic!("{kind:?} cannot connect to {addr:?}"),
        };
        client.with_timeout(CALL_TIMEOUT)
    }

    /// A client of the server at `addr` (defaults, no service), and a probe telling whether it
    /// has a connection open now (streams; always `false` for UDP).
    async fn client_and_probe(
        &self,
        addr: &Addr,
    ) -> (Client<BoxChannel>, Box<dyn Fn() -> bool + Send + Sync>) {
        let codec = RpcudpCodec::new();
        let (client, probe): (_, Box<dyn Fn() -> bool + Send + Sync>) = match addr {
            Addr::Ip(_) if self.kind == Kind::Udp => (self.client(addr).await, Box::new(|| false)),
            Addr::Ip(a) => {
                let channel = tcp::Builder::new().channel(*a, codec);
                let probe = channel.clone();
                (
                    channel.into_client().boxed(),
                    Box::new(move || probe.is_connected()),
                )
            }
            Addr::Path(p) => {
                let channel = unix::Builder::new().channel(p, codec);
                let probe = channel.clone();
                (
                    channel.into_client().boxed(),
                    Box::new(move || probe.is_connected()),
                )
            }
        };
        (client.with_timeout(CALL_TIMEOUT), probe)
    }
}

fn udp_builder(limits: Limits) -> udp::Builder {
    let mut b = udp::Builder::new();
    if let Some(n) = limits.max_frame {
        b = b.max_payload(n);
    }
    if let Some(n) = limits.max_concurrent_requests {
        // The tests' calls come from one address: it may have them all.
        b = b
            .max_concurrent_requests(n)
            .max_concurrent_requests_per_ip(n);
    }
    b
}

fn stream_builder<K: Default>(limits: Limits) -> stream::Builder<stream::Stream<K>> {
    let mut b = stream::Builder::<stream::Stream<K>>::new();
    if let Some(n) = limits.max_frame {
        b = b.max_frame_length(n);
    }
    if let Some(n) = limits.max_concurrent_requests {
        // The tests' calls come from one address: it may have them all.
        b = b
            .max_concurrent_requests(n)
            .max_concurrent_requests_per_ip(n);
    }
    b
}

/// Runs `f`, failing the case if it takes longer than [`BOUND`].
#[track_caller]
fn within<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let caller = std::panic::Location::caller();
    async move {
        match tokio::time::timeout(BOUND, f).await {
            Ok(v) => v,
            Err(_) => panic!("timed out after {BOUND:?} at {caller}"),
        }
    }
}

/// Polls `cond` until it holds, failing the case after `bound`.
#[track_caller]
fn eventually(
    what: &'static str,
    bound: Duration,
    cond: impl Fn() -> bool,
) -> impl Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + bound;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "never happened within {bound:?}: {what} (at {caller})"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

// --- raw peers -----------------------------------------------------------------------------------

/// A raw stream connection, TCP or Unix.
trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}

async fn raw_connect(addr: &Addr) -> Box<dyn RawIo> {
    match addr {
        Addr::Ip(a) => Box::new(within(TcpStream::connect(a)).await.expect("connects")),
        Addr::Path(p) => Box::new(within(UnixStream::connect(p)).await.expect("connects")),
    }
}

/// Whether the peer closes the connection (a read returns end of file or an error, such as a
/// reset) within [`CLOSE_BOUND`]. Anything the peer sends first is read and ignored.
async fn closed_by_peer(io: &mut dyn RawIo) -> bool {
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CLOSE_BOUND, closed).await.is_ok()
}

async fn raw_udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("binds")
}

fn udp_target(addr: &Addr) -> SocketAddr {
    match addr {
        Addr::Ip(a) => *a,
        Addr::Path(p) => panic!("not a UDP address: {}", p.display()),
    }
}

// --- handlers ------------------------------------------------------------------------------------

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn greet(name: String) -> String {
    format!("Hello {name}")
}

async fn len(bytes: ByteBuf) -> usize {
    bytes.len()
}

async fn echo_bytes(bytes: ByteBuf) -> ByteBuf {
    bytes
}

async fn whoami(ctx: Context) -> String {
    ctx.peer().map(|p| p.to_string()).unwrap_or_default()
}

async fn sleep_echo(ms: u64, x: i64) -> i64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    x
}

/// Calls its caller back over the same socket or connection.
async fn relay(ctx: Context, x: i64) -> Result<i64, ServerError> {
    let back = ctx
        .caller()
        .ok_or_else(|| ServerError::internal("no way to call back"))?;
    let doubled: i64 = back
        .call("double", (x,))
        .await
        .map_err(|e| ServerError::internal(format!("the call back failed: {e}")))?;
    Ok(doubled + 1)
}

async fn double(x: i64) -> i64 {
    x * 2
}

/// The caller's uid, for Unix sockets.
async fn uid(ctx: Context) -> Result<u32, ServerError> {
    match ctx.peer() {
        Some(Peer::Unix {
            credentials: Some(c),
        }) => Ok(c.uid),
        other => Err(ServerError::internal(format!(
            "no Unix credentials: {other:?}"
        ))),
    }
}

fn router() -> Router {
    Router::new()
        .route("add", add)
        .route("greet", greet)
        .route("len", len)
        .route("echo_bytes", echo_bytes)
        .route("whoami", whoami)
        .route("sleep_echo", sleep_echo)
        .route("relay", relay)
        .route("uid", uid)
}

/// Checks a server still answers a fresh client.
async fn still_serves(h: &Harness, server: &Server) {
    let client = h.client(&server.addr()).await;
    let sum: i64 = within(client.call("add", (20, 22)))
        .await
        .expect("the server still serves");
    assert_eq!(sum, 42);
}

// --- 1. calls ------------------------------------------------------------------------------------

async fn calls(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let client = h.client(&server.addr()).await;

    let sum: i64 = within(client.call("add", (2, 40))).await.unwrap();
    assert_eq!(sum, 42);
    let hi: String = within(client.call("greet", ("Snake Plissken",)))
        .await
        .unwrap();
    assert_eq!(hi, "Hello Snake Plissken");
    let bytes: ByteBuf = within(client.call("echo_bytes", (ByteBuf::from(vec![0, 1, 0xff]),)))
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), [0, 1, 0xff]);
    let peer: String = within(client.call("whoami", ())).await.unwrap();
    match kind {
        Kind::Udp | Kind::Tcp => assert!(peer.starts_with("127.0.0.1:"), "{peer}"),
        Kind::Unix => assert!(peer.starts_with("unix"), "{peer}"),
    }

    let err = within(client.call::<i64>("no_such_method", (1,)))
        .await
        .unwrap_err();
    assert!(err.is_method_not_found(), "{err:?}");
    let err = within(client.call::<i64>("add", ("two", "forty")))
        .await
        .unwrap_err();
    assert!(err.is_invalid_params(), "wrong types: {err:?}");
    let err = within(client.call::<i64>("add", (1,))).await.unwrap_err();
    assert!(err.is_invalid_params(), "too few arguments: {err:?}");

    // Errors are answers, not failures of the transport: the client carries on.
    let sum: i64 = within(client.call("add", (1, 1))).await.unwrap();
    assert_eq!(sum, 2);
    assert_eq!(server.requests(), 8);
    assert_eq!(server.bad_frames(), 0);
    if kind.is_stream() {
        assert_eq!(server.accepted(), 1, "every call used one connection");
    }
}

for_kinds!(calls: udp, tcp, unix);

// --- 2. concurrency ------------------------------------------------------------------------------

async fn concurrency(kind: Kind) {
    // UDP: at most 200. A socket's default receive buffer (Linux: rmem_default, 212992 bytes)
    // holds about 256 small datagrams, each charged ~830 bytes of kernel overhead; more sent at
    // once are dropped by the kernel, on the server's socket (requests) or the client's
    // (responses, all released together by the barrier). A dropped request never reaches the
    // barrier, so every call would time out: with 1000, 500 or 300 calls the server received
    // only 250 to 750 of them, every run. Nothing retransmits over UDP (retrying is a policy).
    let n: usize = match kind {
        Kind::Udp => 200,
        Kind::Tcp | Kind::Unix => 1000,
    };
    // No handler returns before all n requests have arrived: the calls are in flight together.
    let barrier = Arc::new(Barrier::new(n));
    let router = Router::new().route("gate", move |x: i64| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            x * 3
        }
    });
    let limits = Limits {
        max_concurrent_requests: Some(2000),
        ..Limits::default()
    };
    let h = Harness::new(kind);
    let server = h.serve_with(limits, router).await;
    let client = h
        .client(&server.addr())
        .await
        .with_timeout(Duration::from_secs(8));

    let mut calls = JoinSet::new();
    for i in 0..n as i64 {
        let client = client.clone();
        calls.spawn(async move { (i, client.call::<i64>("gate", (i,)).await) });
    }
    let mut seen = vec![false; n];
    within(async {
        while let Some(done) = calls.join_next().await {
            let (i, result) = done.expect("the task does not panic");
            assert_eq!(result.expect("the call succeeds"), 3 * i, "call {i}");
            seen[i as usize] = true;
        }
    })
    .await;
    assert!(seen.iter().all(|s| *s));
    assert_eq!(server.requests(), n as u64);
    if kind.is_stream() {
        assert_eq!(server.accepted(), 1, "all calls shared one connection");
    }
}

for_kinds!(concurrency: udp, tcp, unix);

// --- 3. a peer closes mid-frame ------------------------------------------------------------------

async fn peer_closes_mid_frame(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let addr = server.addr();
    if kind.is_stream() {
        // A length prefix announcing 100 bytes, then 10 of them, then the end of the stream.
        let mut raw = raw_connect(&addr).await;
        raw.write_all(&[0, 0, 0, 100]).await.unwrap();
        raw.write_all(&[0xab; 10]).await.unwrap();
        raw.shutdown().await.unwrap();
        drop(raw);
    } else {
        // The datagram analogue: a request cut short inside its arguments (`add(1, ...)`).
        let request = [&[0x00][..], &[0x5a; 20], b"\x92\xa3add\x92\x01"].concat();
        let raw = raw_udp().await;
        raw.send_to(&request, udp_target(&addr)).await.unwrap();
    }
    eventually("the cut frame is counted", BOUND, || {
        server.bad_frames() == 1
    })
    .await;
    assert_eq!(server.requests(), 0, "nothing was served from it");
    still_serves(&h, &server).await;
    assert_eq!(server.bad_frames(), 1);
}

for_kinds!(peer_closes_mid_frame: udp, tcp, unix);

// --- 4. the server restarts under a live client --------------------------------------------------

async fn server_restart(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let addr = server.addr();
    let (client, connected) = h.client_and_probe(&addr).await;
    let sum: i64 = within(client.call("add", (1, 2))).await.unwrap();
    assert_eq!(sum, 3);

    assert!(within(server.shutdown(Duration::from_secs(2))).await);
    drop(server);
    // Streams: wait until the client has seen its connection end. A call made before that is
    // sent over the dying connection and fails even after the server is back: see
    // `a_call_after_the_connection_is_lost_reconnects`, which this wait works around.
    eventually("the client sees the server close", BOUND, || !connected()).await;
    let short = client.clone().with_timeout(Duration::from_millis(300));
    let err = within(short.call::<i64>("add", (1, 2))).await.unwrap_err();
    match kind {
        // Nothing answers a datagram to a closed port: the call times out.
        Kind::Udp => assert!(err.is_timeout(), "{err:?}"),
        Kind::Tcp | Kind::Unix => {
            assert!(matches!(err, Error::Transport(_)), "{err:?}")
        }
    }

    let server = h.restart(&addr, router()).await;
    // The same client object: stream clients reconnect on their next call.
    let sum: i64 = within(client.call("add", (2, 3))).await.unwrap();
    assert_eq!(sum, 5);
    assert_eq!(server.requests(), 1);
    assert!(within(server.shutdown(Duration::from_secs(2))).await);
}

for_kinds!(server_restart: udp, tcp, unix);

/// What `stream::Channel` promises: "Calls in flight when a
/// connection is lost fail with a transport error". The server is shut down with a short grace,
/// so it closes the connection under a call whose handler is still sleeping.
async fn calls_in_flight_fail_when_the_connection_is_lost(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let client = h
        .client(&server.addr())
        .await
        .with_timeout(Duration::from_secs(8));
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<i64>("sleep_echo", (5_000u64, 1)).await })
    };
    eventually("the server has the request", BOUND, || {
        server.requests() == 1
    })
    .await;
    let start = Instant::now();
    assert!(!within(server.shutdown(Duration::from_millis(100))).await);
    let err = within(call).await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Transport(_) | Error::Closed),
        "{err:?} after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "failed only after {:?}",
        start.elapsed()
    );
}

for_kinds!(calls_in_flight_fail_when_the_connection_is_lost: tcp, unix);

/// What `stream::Channel` promises: "later calls use a new connection" once one is lost. Here
/// the server goes away while the client is still serving a call back from it, so the client's
/// old connection lingers (lost, but answering its handler) for a while; a call made then, even
/// after the server is back, should open a new connection.
async fn a_call_after_the_connection_is_lost_reconnects(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let addr = server.addr();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let slow_double = Router::new().route("double", move |x: i64| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(1500)).await;
            x * 2
        }
    });
    let client = h
        .client_with(&addr, Limits::default(), Some(slow_double))
        .await;
    let relayed = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<i64>("relay", (1,)).await })
    };
    within(started.recv())
        .await
        .expect("the server called back");
    // The server's relay waits for the client's slow handler: a short grace closes the
    // connection under it.
    assert!(!within(server.shutdown(Duration::from_millis(50))).await);
    drop(server);
    let lost_at = Instant::now();

    // The call in flight when the connection went cannot be answered any more: it fails now,
    // not once the client's own handler is done.
    let err = within(relayed).await.unwrap().unwrap_err();
    let waited = lost_at.elapsed();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");

    // Once the client knows the connection is lost (a call made before it could know may still
    // go to it and fail: retrying that is a policy, not the transport's), later calls open a new
    // connection, although the old one is still answering the client's own handler.
    let server = h.restart(&addr, router()).await;
    let later = {
        let client = client.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            (client.call::<i64>("add", (2, 3)).await, start.elapsed())
        })
    };
    // The later call goes to the restarted server.
    let (sum, took) = within(later).await.unwrap();
    assert_eq!(
        sum.as_ref().ok(),
        Some(&5),
        "{sum:?} after {took:?}: the call went to the lost connection"
    );
    assert_eq!(server.accepted(), 1);
    assert!(
        waited < Duration::from_millis(500),
        "the call in flight failed only {waited:?} after the connection was lost"
    );
}

for_kinds!(
    a_call_after_the_connection_is_lost_reconnects:
    tcp,
    unix,
);

// --- 5. frames over the limit --------------------------------------------------------------------

async fn frame_over_the_limit(kind: Kind) {
    const LIMIT: usize = 1024;
    let limits = Limits {
        max_frame: Some(LIMIT),
        ..Limits::default()
    };
    let h = Harness::new(kind);
    let server = h.serve_with(limits, router()).await;
    let addr = server.addr();
    let client = h.client_with(&addr, limits, None).await;

    // Sending: refused before anything is sent; the client (and its connection) carries on.
    let err = within(client.call::<usize>("len", (ByteBuf::from(vec![7u8; 2000]),)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: LIMIT, .. }),
        "{err:?}"
    );
    let n: usize = within(client.call("len", (ByteBuf::from(vec![7u8; 100]),)))
        .await
        .unwrap();
    assert_eq!(n, 100);
    assert_eq!(server.requests(), 1, "the large call was never sent");
    assert_eq!(server.bad_frames(), 0);
    if kind.is_stream() {
        assert_eq!(server.accepted(), 1, "the connection stayed up");
    }

    // Receiving: a peer that sends more than the limit is cut off; others are still served.
    if kind.is_stream() {
        let mut raw = raw_connect(&addr).await;
        let mut frame = 2000u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0x00; 2000]);
        // The server may close before reading it all, so the write itself may fail.
        let _ = raw.write_all(&frame).await;
        assert!(
            closed_by_peer(&mut *raw).await,
            "the server closes the connection"
        );
    } else {
        let raw = raw_udp().await;
        let datagram = [&[0x00][..], &[0x5a; 20], &[0x00; 2000]].concat();
        raw.send_to(&datagram, udp_target(&addr)).await.unwrap();
    }
    eventually("the large frame is counted", BOUND, || {
        server.bad_frames() == 1
    })
    .await;
    let n: usize = within(client.call("len", (ByteBuf::from(vec![7u8; 10]),)))
        .await
        .unwrap();
    assert_eq!(n, 10);
    if kind.is_stream() {
        assert_eq!(server.accepted(), 2, "the client kept its connection");
    }
    assert_eq!(server.requests(), 2);
}

for_kinds!(frame_over_the_limit: udp, tcp, unix);

// --- 6. a 4 GiB length prefix --------------------------------------------------------------------

async fn huge_length_prefix(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let mut raw = raw_connect(&server.addr()).await;
    raw.write_all(b"\xff\xff\xff\xffabc").await.unwrap();
    let start = Instant::now();
    assert!(
        closed_by_peer(&mut *raw).await,
        "the server closes the connection within {CLOSE_BOUND:?}"
    );
    assert!(start.elapsed() < CLOSE_BOUND);
    eventually("the bad frame is counted", BOUND, || {
        server.bad_frames() == 1
    })
    .await;
    still_serves(&h, &server).await;
    eventually("the refused connection is gone", BOUND, || {
        server.connections() == 0
    })
    .await;
}

for_kinds!(huge_length_prefix: tcp, unix);

// --- 7. connection churn -------------------------------------------------------------------------

async fn churn(kind: Kind) {
    const CYCLES: usize = 200;
    const RAW: usize = 50;
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let addr = server.addr();
    within(async {
        for i in 0..CYCLES as i64 {
            let client = h.client(&addr).await;
            let sum: i64 = client.call("add", (i, 1)).await.expect("the call succeeds");
            assert_eq!(sum, i + 1);
        }
    })
    .await;
    if kind.is_stream() {
        // Connections that close at once, without a byte.
        for _ in 0..RAW {
            drop(raw_connect(&addr).await);
        }
        eventually("every connection is accepted", BOUND, || {
            server.accepted() == (CYCLES + RAW) as u64
        })
        .await;
        eventually("every connection is closed", Duration::from_secs(3), || {
            server.connections() == 0
        })
        .await;
    } else {
        // The datagram analogue: sockets that send one empty datagram each and go.
        for _ in 0..RAW {
            let raw = raw_udp().await;
            raw.send_to(&[], udp_target(&addr)).await.unwrap();
        }
        eventually("every empty datagram is counted", BOUND, || {
            server.bad_frames() == RAW as u64
        })
        .await;
    }
    assert_eq!(server.requests(), CYCLES as u64);
    still_serves(&h, &server).await;
    if kind.is_stream() {
        eventually("the last client's connection closes", BOUND, || {
            server.connections() == 0
        })
        .await;
    }
}

for_kinds!(churn: udp, tcp, unix);

// --- 8. graceful shutdown under load -------------------------------------------------------------

async fn graceful_shutdown(kind: Kind) {
    const CALLS: usize = 200;
    const CLIENTS: usize = 4;
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let addr = server.addr();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(h.client(&addr).await);
    }
    let mut calls = JoinSet::new();
    for i in 0..CALLS {
        let client = clients[i % CLIENTS].clone();
        let ms = 100 + (i as u64 * 7) % 100;
        calls.spawn(async move { (i, client.call::<i64>("sleep_echo", (ms, i as i64)).await) });
    }
    eventually("the server has accepted every call", BOUND, || {
        server.requests() == CALLS as u64
    })
    .await;
    let start = Instant::now();
    assert!(
        within(server.shutdown(Duration::from_secs(5))).await,
        "shut down within the grace period"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");

    let mut seen = [false; CALLS];
    within(async {
        while let Some(done) = calls.join_next().await {
            let (i, result) = done.expect("the task does not panic");
            let v = result.unwrap_or_else(|e| panic!("call {i} was lost: {e:?}"));
            assert_eq!(v, i as i64);
            seen[i] = true;
        }
    })
    .await;
    assert!(seen.iter().all(|s| *s));

    // After shutdown, a new call fails: refused (streams) or unanswered (UDP).
    let client = h
        .client(&addr)
        .await
        .with_timeout(Duration::from_millis(300));
    let err = within(client.call::<i64>("add", (1, 2))).await.unwrap_err();
    match kind {
        Kind::Udp => assert!(err.is_timeout(), "{err:?}"),
        Kind::Tcp | Kind::Unix => assert!(matches!(err, Error::Transport(_)), "{err:?}"),
    }
    assert_eq!(server.requests(), CALLS as u64);
}

for_kinds!(graceful_shutdown: udp, tcp, unix);

// --- symmetric peers -----------------------------------------------------------------------------

async fn symmetric(kind: Kind) {
    let h = Harness::new(kind);
    let server = h.serve(router()).await;
    let router_b = Router::new().route("double", double);
    let client = h
        .client_with(&server.addr(), Limits::default(), Some(router_b))
        .await;
    for x in [20, 100] {
        let got: i64 = within(client.call("relay", (x,))).await.unwrap();
        assert_eq!(got, 2 * x + 1, "the server called the client back");
    }
    if kind.is_stream() {
        assert_eq!(server.accepted(), 1, "calls back used the same connection");
    }

    // A client that serves nothing answers the call back "method not found". Over UDP the
    // relay's error answer is cut to three times the size of the request it answers.
    let plain = h.client(&server.addr()).await;
    let err = within(plain.call::<i64>("relay", (1,))).await.unwrap_err();
    let e = err.server_error().expect("relay reports the failure");
    if kind == Kind::Udp {
        assert!(
            e.message().starts_with("the call back failed") && e.message().ends_with('…'),
            "{e}"
        );
    } else {
        assert!(e.message().contains("method not found"), "{e}");
    }
}

for_kinds!(symmetric: udp, tcp, unix);

// --- Unix sockets only ---------------------------------------------------------------------------

/// This process's real uid, from `/proc/self/status`.
fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reads /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("a Uid: line");
    line.split_whitespace()
        .nth(1)
        .and_then(|uid| uid.parse().ok())
        .expect("a numeric uid")
}

fn unix_path(h: &Harness) -> PathBuf {
    match h.fresh() {
        Addr::Path(p) => p,
        Addr::Ip(a) => panic!("not a Unix address: {a}"),
    }
}

async fn unix_bind(path: &Path) -> io::Result<unix::Server> {
    unix::Builder::new()
        .serve(router())
        .bind(path, RpcudpCodec::new())
        .await
}

async fn unix_socket_file_lifecycle(_: Kind) {
    let h = Harness::new(Kind::Unix);
    let path = unix_path(&h);

    // A stale socket file, as a crashed server leaves: bound, then its listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("binds a std listener"));
    assert!(path.exists(), "the stale file is left behind");
    let server = unix_bind(&path)
        .await
        .expect("replaces a stale socket file");
    let client = unix::Builder::new().client(&path, RpcudpCodec::new());
    let sum: i64 = within(client.call("add", (1, 2))).await.unwrap();
    assert_eq!(sum, 3);

    // A live server's socket is not taken over.
    let err = unix_bind(&path).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    let sum: i64 = within(client.call("add", (2, 2))).await.unwrap();
    assert_eq!(sum, 4, "the live server is untouched");

    assert!(within(server.shutdown(Duration::from_secs(2))).await);
    assert!(!path.exists(), "shutdown removes the socket file");
}

async fn unix_peer_credentials(_: Kind) {
    let h = Harness::new(Kind::Unix);
    let server = h.serve(router()).await;
    let client = h.client(&server.addr()).await;
    let uid: u32 = within(client.call("uid", ())).await.unwrap();
    assert_eq!(uid, current_uid());
}

for_kinds!(unix_socket_file_lifecycle: unix);
for_kinds!(unix_peer_credentials: unix);
