//! What only stream transports (TCP, Unix) do: framing choices, connection limits, idle timeouts,
//! permissions, half-closed peers, peers that never read.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_codecs::msgpack::{skip_value, RpcudpCodec};
use rpc_core::{BoxError, Router};
use rpc_transports::stream::Framing;
use rpc_transports::{tcp, unix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn router() -> Router {
    Router::new().route("add", add)
}

fn temp_sock(name: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rpc-stream-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// rpcudp frames measure themselves: a 21-byte header, then one msgpack value.
fn rpcudp_frame(b: &[u8]) -> Result<Option<usize>, BoxError> {
    if b.len() < 22 {
        return Ok(None);
    }
    match skip_value(&b[21..]) {
        Ok(n) => Ok(Some(21 + n)),
        Err(rpc_codecs::msgpack::SkipError::Truncated) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn self_delimited_framing_end_to_end() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .framing(Framing::SelfDelimited(rpcudp_frame))
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let client = tcp::Builder::new()
            .framing(Framing::SelfDelimited(rpcudp_frame))
            .client(server.local_addr(), RpcudpCodec::new());
        let calls = (0..200).map(|i| client.call::<i64>("add", (i, 1)));
        for (i, r) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.unwrap(), i as i64 + 1);
        }
    })
    .await
    .unwrap();
}

/// A TCP server echoing byte strings, and a client of it.
async fn bytes_echo() -> (
    tcp::Server,
    rpc_core::Client<rpc_transports::stream::Channel<RpcudpCodec, tcp::Tcp>>,
) {
    async fn echo(s: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
        s
    }
    let server = tcp::Builder::new()
        .serve(Router::new().route("echo", echo))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let client = tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
    (server, client)
}

#[tokio::test]
async fn large_frames_round_trip() {
    timeout(LIMIT, async {
        let (_server, client) = bytes_echo().await;
        let big = serde_bytes::ByteBuf::from(vec![7u8; 4 << 20]);
        let back: serde_bytes::ByteBuf = client.call("echo", (big.clone(),)).await.unwrap();
        assert_eq!(back, big);
    })
    .await
    .unwrap();
}

/// A call alone on its connection writes its own request, the server's reader writes the answers
/// of a burst, the writer tasks take what the socket did not: with frames larger than the
/// socket's buffer, alternating lone and overlapping calls must still get their own answers.
#[tokio::test]
async fn direct_and_queued_writes_keep_frames_whole_and_in_order() {
    timeout(LIMIT, async {
        let (_server, client) = bytes_echo().await;
        let payload = |n: usize, seed: usize| {
            serde_bytes::ByteBuf::from((0..n).map(|i| (i * 31 + seed) as u8).collect::<Vec<_>>())
        };
        for round in 0..4 {
            let lone = payload(1 << 20, round);
            let back: serde_bytes::ByteBuf = client.call("echo", (lone.clone(),)).await.unwrap();
            assert_eq!(back, lone, "round {round}: lone call");
            let calls = (0..16).map(|i| {
                let client = client.clone();
                let p = payload(1 << (4 + i), i);
                async move {
                    let back: serde_bytes::ByteBuf =
                        client.call("echo", (p.clone(),)).await.unwrap();
                    assert_eq!(back, p, "round {round}: call {i}");
                }
            });
            futures::future::join_all(calls).await;
        }
    })
    .await
    .unwrap();
}

/// Calls waiting on a connection the peer drops fail at once, with a transport error (not
/// "closed", which means this side closed it): the first call, which connected, and the next,
/// which went out on the live connection.
#[tokio::test]
async fn calls_waiting_on_a_lost_connection_fail_with_a_transport_error() {
    timeout(LIMIT, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Reads two requests, answers neither, and drops the connection.
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let mut reads = 0;
            while reads < 2 {
                if s.read(&mut buf).await.unwrap() == 0 {
                    break;
                }
                reads += 1;
            }
        });
        let client = tcp::Builder::new().client(addr, RpcudpCodec::new());
        let first = tokio::spawn({
            let client = client.clone();
            async move { client.call::<i64>("add", (1, 2)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = client.call::<i64>("add", (3, 4)).await.unwrap_err();
        let first = first.await.unwrap().unwrap_err();
        for err in [first, second] {
            assert!(matches!(err, rpc_core::Error::Transport(_)), "{err:?}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .max_connections(2)
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let a = tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
        let b = tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
        assert_eq!(a.call::<i64>("add", (1, 1)).await.unwrap(), 2);
        assert_eq!(b.call::<i64>("add", (1, 1)).await.unwrap(), 2);
        let c = tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
        let err = c.call::<i64>("add", (1, 1)).await.unwrap_err();
        assert!(
            !err.is_timeout(),
            "refused at once, not left hanging: {err}"
        );
        assert_eq!(server.stats().connections_refused, 1);
        // The first two are unaffected.
        assert_eq!(a.call::<i64>("add", (2, 2)).await.unwrap(), 4);
        drop(a);
        // Room again once one goes.
        for _ in 0..100 {
            if server.connections() < 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(c.call::<i64>("add", (3, 3)).await.unwrap(), 6);
    })
    .await
    .unwrap();
}

/// A server closing connections idle for `period`, and a channel to it.
async fn idle_after(period: Duration) -> (tcp::Server, tcp::Channel<RpcudpCodec>) {
    let server = tcp::Builder::new()
        .idle_timeout(Some(period))
        .serve(router())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let channel = tcp::Builder::new().channel(server.local_addr(), RpcudpCodec::new());
    (server, channel)
}

#[tokio::test]
async fn idle_connections_are_closed_and_clients_reconnect() {
    timeout(LIMIT, async {
        let (server, channel) = idle_after(Duration::from_millis(200)).await;
        let client = channel.clone().into_client();
        assert_eq!(client.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        assert!(channel.is_connected());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(server.stats().idle_closed, 1);
        assert_eq!(server.connections(), 0);
        assert!(!channel.is_connected());
        assert_eq!(client.call::<i64>("add", (2, 2)).await.unwrap(), 4);
        assert_eq!(channel.stats().connections, 2);

        // A raw connection that sends nothing is closed too.
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(raw.read(&mut buf).await.unwrap(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connections_that_keep_calling_are_not_idle() {
    timeout(LIMIT, async {
        let (server, channel) = idle_after(Duration::from_millis(100)).await;
        let client = channel.clone().into_client();
        // A call every 30 ms for six idle periods: never a whole period without a frame.
        for i in 0..20 {
            assert_eq!(client.call::<i64>("add", (i, 1)).await.unwrap(), i + 1);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(server.stats().idle_closed, 0);
        assert_eq!(channel.stats().connections, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_half_closed_peer_still_gets_its_answers() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        // Encode ten requests with the codec, send them, and close our sending side.
        let client = tcp::Builder::new().channel(server.local_addr(), RpcudpCodec::new());
        let c = client.into_client();
        let mut wire = Vec::new();
        for i in 0..10i64 {
            let req = c.request("add", &(i, 100)).unwrap();
            let mut body = bytes::BytesMut::new();
            rpc_core::Codec::encode_request(
                &RpcudpCodec::new(),
                Some(&rpc_codecs::msgpack::MessageId([i as u8; 20])),
                req.method(),
                req.args(),
                &mut body,
            )
            .unwrap();
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
        }
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        raw.write_all(&wire).await.unwrap();
        raw.shutdown().await.unwrap();
        let mut answers = Vec::new();
        raw.read_to_end(&mut answers).await.unwrap();
        // Ten length-prefixed responses, then the server closed.
        let mut n = 0;
        let mut rest = &answers[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert_eq!(rest[4], 0x01, "a response");
            rest = &rest[4 + len..];
            n += 1;
        }
        assert_eq!(n, 10);
        assert!(rest.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_peer_that_never_reads_does_not_stop_the_server() {
    async fn blob(n: usize) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(vec![1u8; n])
    }
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .serve(Router::new().route("blob", blob).route("add", add))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        // A raw peer asks for 64 KiB responses, 400 times (25 MiB), and never reads them.
        let c = tcp::Builder::new()
            .channel(server.local_addr(), RpcudpCodec::new())
            .into_client();
        let req = c.request("blob", &(65536usize,)).unwrap();
        let mut body = bytes::BytesMut::new();
        rpc_core::Codec::encode_request(
            &RpcudpCodec::new(),
            Some(&rpc_codecs::msgpack::MessageId([9; 20])),
            req.method(),
            req.args(),
            &mut body,
        )
        .unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut hog = TcpStream::connect(server.local_addr()).await.unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..400 {
                if hog.write_all(&frame).await.is_err() {
                    break;
                }
            }
            hog
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Everyone else is still served.
        let other = tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
        for i in 0..20 {
            assert_eq!(other.call::<i64>("add", (i, i)).await.unwrap(), 2 * i);
        }
        writer.abort();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unix_socket_permissions_are_set() {
    timeout(LIMIT, async {
        let path = temp_sock("perm.sock");
        let server = unix::Builder::new()
            .permissions(0o600)
            .serve(router())
            .bind(&path, RpcudpCodec::new())
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = unix::Builder::new().client(&path, RpcudpCodec::new());
        assert_eq!(client.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        assert!(server.shutdown(Duration::from_secs(2)).await);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_server_calls_back_over_the_clients_connection() {
    async fn ask_back(ctx: rpc_core::Context, x: i64) -> Result<i64, rpc_core::ServerError> {
        let caller = ctx.caller().expect("a connection can call back");
        caller
            .call::<i64>("double", (x,))
            .await
            .map_err(|e| rpc_core::ServerError::internal(e.to_string()))
    }
    async fn double(x: i64) -> i64 {
        2 * x
    }
    timeout(LIMIT, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let server = tcp::Builder::new()
            .serve(Router::new().route("ask_back", ask_back))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let seen = calls.clone();
        let client = tcp::Builder::new()
            .serve(Router::new().route("double", move |x: i64| {
                seen.fetch_add(1, Ordering::Relaxed);
                double(x)
            }))
            .client(server.local_addr(), RpcudpCodec::new());
        assert_eq!(client.call::<i64>("ask_back", (21,)).await.unwrap(), 42);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(
            server.stats().connections,
            1,
            "one connection carried both directions"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_timeout_too_long_for_the_clock_means_no_timeout() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let client = tcp::Builder::new()
            .timeout(Duration::MAX)
            .client(server.local_addr(), RpcudpCodec::new());
        assert_eq!(client.call::<i64>("add", (2, 3)).await.unwrap(), 5);
    })
    .await
    .unwrap();
}

/// A handler answering `n` bytes.
async fn blob(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![1u8; n])
}

/// `n` framed rpcudp requests for 64 KiB blobs, as a peer that never reads would send them.
fn blob_requests(n: usize) -> Vec<u8> {
    use rpc_core::Codec;
    let codec = RpcudpCodec::new();
    let args = rpc_core::Payload::encode(&rpc_codecs::msgpack::MsgPack, &(65_536usize,)).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let mut body = bytes::BytesMut::new();
        let id = rpc_codecs::msgpack::MessageId([i as u8; 20]);
        codec
            .encode_request(Some(&id), &"blob".into(), &args, &mut body)
            .unwrap();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// The established TCP sockets on this machine whose local port is `port` (IPv4): a server's
/// side of its connections.
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("Linux's /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

/// Reads until the server closes the connection.
async fn read_to_end(mut s: TcpStream) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_peer_that_takes_no_bytes_is_closed_after_the_write_timeout() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .idle_timeout(None)
            .write_timeout(Duration::from_millis(300))
            .serve(Router::new().route("blob", blob))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        // Asks for 25 MiB of answers and reads none of them.
        let mut hog = TcpStream::connect(server.local_addr()).await.unwrap();
        hog.write_all(&blob_requests(400)).await.unwrap();
        while server.stats().write_stalled == 0 || server.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(read_to_end(hog).await);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_forced_shutdown_closes_a_connection_whose_peer_takes_no_bytes() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .write_timeout(Duration::MAX)
            .serve(Router::new().route("blob", blob))
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let mut hog = TcpStream::connect(server.local_addr()).await.unwrap();
        hog.write_all(&blob_requests(400)).await.unwrap();
        while server.stats().responses_sent == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The answers cannot be delivered: the grace period runs out, and the connection,
        // its socket included, is let go while the peer still reads nothing.
        let port = server.local_addr().port();
        assert_eq!(established_on(port), 1);
        assert!(!server.shutdown(Duration::from_millis(200)).await);
        while established_on(port) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(hog);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_sends_a_batchs_answer_that_waits_for_room() {
    async fn slow() -> u32 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        7
    }
    async fn text(n: usize) -> String {
        "x".repeat(n)
    }
    let server = tcp::Builder::new()
        .max_frame_length(64 << 20)
        .serve(Router::new().route("slow", slow).route("text", text))
        .bind("127.0.0.1:0", rpc_codecs::jsonrpc::JsonRpcCodec::new())
        .await
        .unwrap();
    let frame = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
    let text_req = |id: u32| {
        let body = format!(r#"{{"jsonrpc":"2.0","method":"text","params":[6291456],"id":{id}}}"#);
        frame(body.as_bytes())
    };
    // A small receive buffer, so that the kernel holds few of the answers.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut peer = sock.connect(server.local_addr()).await.unwrap();
    timeout(LIMIT, async {
        peer.write_all(&frame(
            br#"[{"jsonrpc":"2.0","method":"slow","params":[],"id":1}]"#,
        ))
        .await
        .unwrap();
        // Two large answers queued, the writer stuck on the first, before the batch is done.
        peer.write_all(&text_req(2)).await.unwrap();
        while server.stats().responses_sent < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Time for the writer to take the first answer out of the outbox.
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.write_all(&text_req(3)).await.unwrap();
        while server.stats().responses_sent < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let server = Arc::new(server);
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(8)).await }
    });
    // The batch is done by now; its answer waits for room behind the others.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let frames = timeout(LIMIT, async {
        let mut frames = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if peer.read_exact(&mut len).await.is_err() {
                return frames;
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            peer.read_exact(&mut body).await.unwrap();
            frames.push(body);
        }
    })
    .await
    .unwrap();
    assert!(shutdown.await.unwrap(), "a clean shutdown");
    assert!(
        frames.iter().any(|f| f.first() == Some(&b'[')),
        "the batch's answer was sent ({} frames)",
        frames.len()
    );
}

/// A loopback listener that never accepts, its accept queue full: a connection attempt to it
/// gets no answer (Linux retries for about two minutes).
fn unanswered() -> (
    tokio::net::TcpListener,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => return (listener, held, addr),
        }
    }
    panic!("could not fill the accept queue");
}

#[tokio::test]
async fn connecting_counts_against_the_calls_deadline() {
    let (_listener, _held, addr) = unanswered();
    let channel = tcp::Builder::new()
        .timeout(Duration::from_millis(300))
        .channel(addr, RpcudpCodec::new());
    let client = channel.clone().into_client();
    // Two callers at once: the second waits behind the first's attempt, within its own deadline.
    let with_timeout = client.clone().with_timeout(Duration::from_millis(200));
    let (a, b) = timeout(LIMIT, async {
        tokio::join!(
            with_timeout.call::<i64>("add", (1, 2)),
            client.call::<i64>("add", (1, 2))
        )
    })
    .await
    .expect("both calls ended at their deadlines");
    assert!(a.unwrap_err().is_timeout());
    assert!(b.unwrap_err().is_timeout());
    assert!(timeout(LIMIT, channel.connect())
        .await
        .unwrap()
        .unwrap_err()
        .is_timeout());
}

#[tokio::test]
async fn binding_over_a_file_that_is_not_a_socket_fails_and_keeps_it() {
    let path = temp_sock("notes.txt");
    std::fs::write(&path, b"kept").unwrap();
    let err = unix::Builder::new()
        .serve(router())
        .bind(&path, RpcudpCodec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"kept");
}

#[tokio::test]
async fn binding_over_a_busy_live_server_fails_with_addr_in_use() {
    let path = temp_sock("busy.sock");
    let live = tokio::net::UnixSocket::new_stream().unwrap();
    live.bind(&path).unwrap();
    let live = live.listen(1).unwrap();
    // Its accept queue filled: a new connection attempt is refused as "try again".
    let mut held = Vec::new();
    while let Ok(s) = tokio::net::UnixStream::connect(&path).await {
        held.push(s);
        assert!(held.len() < 64, "the accept queue never filled");
    }
    let err = unix::Builder::new()
        .serve(router())
        .bind(&path, RpcudpCodec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists());
    drop(live);
}

#[tokio::test]
async fn a_server_removes_only_its_own_socket_file() {
    let path = temp_sock("s.sock");
    let first = unix::Builder::new()
        .serve(router())
        .bind(&path, RpcudpCodec::new())
        .await
        .unwrap();
    // The file goes (a cleaner, an administrator), and another server binds the path.
    std::fs::remove_file(&path).unwrap();
    let second = unix::Builder::new()
        .serve(router())
        .bind(&path, RpcudpCodec::new())
        .await
        .unwrap();
    drop(first);
    let client = unix::Builder::new().client(&path, RpcudpCodec::new());
    assert_eq!(client.call::<i64>("add", (1, 2)).await.unwrap(), 3);
    drop(second);
    assert!(!path.exists());
}

#[tokio::test]
async fn a_tcp_client_connects_by_host_name() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let port = server.local_addr().port();
        // The name is resolved at each connection; each address it gives is tried in turn.
        let by_name = tcp::Builder::new().client(format!("localhost:{port}"), RpcudpCodec::new());
        assert_eq!(by_name.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        let by_pair = tcp::Builder::new().client(("localhost", port), RpcudpCodec::new());
        assert_eq!(by_pair.call::<i64>("add", (2, 2)).await.unwrap(), 4);
        let by_ip = tcp::Builder::new().client(([127, 0, 0, 1], port), RpcudpCodec::new());
        assert_eq!(by_ip.call::<i64>("add", (3, 2)).await.unwrap(), 5);
    })
    .await
    .unwrap();
}

/// A TCP connection to `to` from the loopback address `from` (127.x.y.z stand for hosts).
async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_host_cannot_take_every_connection() {
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        // One host opens more idle connections than its share (the default, 128).
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(connect_from([127, 0, 0, 2], addr).await);
        }
        let deadline = tokio::time::Instant::now() + LIMIT;
        while server.stats().connections_refused < 72 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                server.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            server.connections(),
            rpc_transports::DEFAULT_MAX_CONNECTIONS_PER_IP
        );
        // Another host is served at once.
        let other = connect_from([127, 0, 0, 3], addr).await;
        let conn = rpc_transports::stream::builder()
            .start(rpc_transports::stream::Io::from(other), RpcudpCodec::new());
        assert_eq!(conn.client().call::<i64>("add", (1, 2)).await.unwrap(), 3);
        drop(idle);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_tcp_batch_whose_answer_is_over_the_frame_limit_is_answered_with_an_error_saying_so() {
    use rpc_codecs::jsonrpc::JsonRpcCodec;
    timeout(LIMIT, async {
        let server = tcp::Builder::new()
            .max_frame_length(1024)
            .serve(Router::new().route("big", |n: usize| async move { "x".repeat(n) }))
            .bind("127.0.0.1:0", JsonRpcCodec::new())
            .await
            .unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let batch = concat!(
            r#"[{"jsonrpc":"2.0","method":"big","params":[600],"id":1},"#,
            r#"{"jsonrpc":"2.0","method":"big","params":[600],"id":2}]"#
        );
        s.write_all(&(batch.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(batch.as_bytes()).await.unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut answer).await.unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["id"], serde_json::Value::Null, "{answer}");
        assert_eq!(answer["error"]["code"], -32003, "{answer}");
        assert_eq!(server.stats().errors_sent.message_too_large, 1);
    })
    .await
    .unwrap();
}

/// A frame of exactly the largest length, behind a header block with more than
/// `Content-Length` in it (as language servers send them), is read whole; one byte more is not.
#[tokio::test]
async fn a_content_length_frame_of_the_largest_size_is_read_with_its_headers() {
    use rpc_codecs::jsonrpc::JsonRpcCodec;
    const MAX: usize = 1000;
    let server = tcp::Builder::new()
        .framing(Framing::ContentLength)
        .max_frame_length(MAX)
        .serve(Router::new().route("len", |s: String| async move { s.len() }))
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let frame = |len: usize| {
        let head = r#"{"jsonrpc":"2.0","id":1,"method":"len","params":[""#;
        let tail = r#""]}"#;
        let body = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
        assert_eq!(body.len(), len);
        let extra = format!("X-Padding: {}\r\n", "p".repeat(200));
        format!(
            "Content-Length: {len}\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n{extra}\r\n{body}"
        )
    };
    let addr = server.local_addr();
    let exchange = |wire: String| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(wire.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 256];
        let n = timeout(LIMIT, s.read(&mut answer)).await.unwrap().unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let answer = exchange(frame(MAX)).await;
    assert!(answer.starts_with("Content-Length: "), "{answer}");
    assert!(
        answer.contains(&format!("\"result\":{}", MAX - 53)),
        "{answer}"
    );
    // One byte over: the connection closes without an answer.
    assert_eq!(exchange(frame(MAX + 1)).await, "");
}
