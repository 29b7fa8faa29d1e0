//! The UDP transport over real loopback sockets (127.0.0.1 only), with the rpcudp codec.
//!
//! Every test is bounded in time: anything that could hang runs under `tokio::time::timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::handler::raw;
use rpc_core::{Context, Error, ErrorCode, Request, Response, Router, ServerError};
use rpc_transports::udp::{Builder, Endpoint};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Barrier};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The most any single step of a test may take.
const BOUND: Duration = Duration::from_secs(10);

/// Runs `f`, failing the test if it takes longer than [`BOUND`].
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

/// Polls `cond` until it holds, failing the test after [`BOUND`].
#[track_caller]
fn eventually(what: &'static str, cond: impl Fn() -> bool) -> impl Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + BOUND;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "never happened: {what} (at {caller})"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

const LOCALHOST: &str = "127.0.0.1:0";

async fn sayhi(ctx: Context, name: String) -> String {
    let peer = ctx.peer_addr().expect("UDP requests have a peer address");
    format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn refuse(code: i32) -> Result<(), ServerError> {
    Err(ServerError::new(
        ErrorCode::new(code),
        format!("refused {code}"),
    ))
}

async fn panics_at_once(_: i64) -> i64 {
    panic!("a handler bug, before any await")
}

async fn panics_later(_: i64) -> i64 {
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    panic!("a handler bug, after an await")
}

fn router() -> Router {
    Router::new()
        .route("sayhi", sayhi)
        .route("add", add)
        .route("refuse", refuse)
        .route("panics_at_once", panics_at_once)
        .route("panics_later", panics_later)
        .route(
            "echo",
            raw(|req: Request| async move { Response::ok(req.args().clone()) }),
        )
}

async fn server_with(builder: Builder) -> Endpoint<RpcudpCodec> {
    builder
        .serve(router())
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .expect("binds")
}

async fn server() -> Endpoint<RpcudpCodec> {
    server_with(Builder::new()).await
}

async fn endpoint() -> Endpoint<RpcudpCodec> {
    Endpoint::bind(LOCALHOST, RpcudpCodec::new())
        .await
        .expect("binds")
}

async fn raw_socket() -> UdpSocket {
    UdpSocket::bind(LOCALHOST).await.expect("binds")
}

/// Receives one datagram (bounded in time).
async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = within(socket.recv_from(&mut buf)).await.expect("receives");
    buf.truncate(n);
    (buf, from)
}

/// Whether a datagram arrives within `wait`.
async fn nothing_arrives(socket: &UdpSocket, wait: Duration) -> bool {
    let mut buf = vec![0u8; 70_000];
    tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .is_err()
}

// --- calls ---------------------------------------------------------------------------------------

#[tokio::test]
async fn typed_call_round_trip() {
    let server = server().await;
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));

    let answer: String = within(client.call("sayhi", ("Snake Plissken",)))
        .await
        .unwrap();
    assert_eq!(
        answer,
        format!(
            "Hello Snake Plissken you live at 127.0.0.1:{}",
            caller.local_addr().port()
        )
    );
    let sum: i64 = within(client.call("add", (2, 40))).await.unwrap();
    assert_eq!(sum, 42);
    let bytes: serde_bytes::ByteBuf =
        within(client.call("echo", (serde_bytes::Bytes::new(b"\x00\x01\xff"),)))
            .await
            .map(|(b,): (serde_bytes::ByteBuf,)| b)
            .unwrap();
    assert_eq!(bytes.as_ref(), b"\x00\x01\xff");

    let s = server.stats();
    assert_eq!(s.requests, 3);
    assert_eq!(s.responses_sent, 3);
    assert_eq!(s.malformed, 0);
    let c = caller.stats();
    assert_eq!(c.responses_received, 3);
    assert_eq!(c.unknown_responses, 0);
    assert_eq!(c.spoofed_responses, 0);
    assert_eq!(caller.calls_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_calls_in_flight_on_one_client() {
    // No handler returns before all 100 requests have arrived: the calls are in flight together.
    let barrier = Arc::new(Barrier::new(100));
    let server = Builder::new()
        .serve(Router::new().route("triple", move |x: i64| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                x * 3
            }
        }))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(8));

    let mut calls = JoinSet::new();
    for i in 0..100i64 {
        let client = client.clone();
        calls.spawn(async move { (i, client.call::<i64>("triple", (i,)).await) });
    }
    let mut seen = [false; 100];
    within(async {
        while let Some(done) = calls.join_next().await {
            let (i, result) = done.expect("the task does not panic");
            assert_eq!(result.expect("the call succeeds"), 3 * i, "call {i}");
            seen[i as usize] = true;
        }
    })
    .await;
    assert!(seen.iter().all(|s| *s));
    assert_eq!(caller.calls_in_flight(), 0);
    assert_eq!(caller.stats().responses_received, 100);
    assert_eq!(server.stats().requests, 100);
}

// --- errors --------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_method_and_bad_arguments_are_answered_at_once() {
    let server = server().await;
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));

    let start = Instant::now();
    let err = within(client.call::<()>("nope", ())).await.unwrap_err();
    assert!(err.is_method_not_found(), "{err:?}");
    assert!(!err.is_timeout());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "an error reply, not a timeout"
    );

    let err = within(client.call::<i64>("add", ("two", 2)))
        .await
        .unwrap_err();
    assert!(err.is_invalid_params(), "{err:?}");
    let err = within(client.call::<i64>("add", (1,))).await.unwrap_err();
    assert!(err.is_invalid_params(), "too few: {err:?}");
    let err = within(client.call::<i64>("add", (1, 2, 3)))
        .await
        .unwrap_err();
    assert!(err.is_invalid_params(), "too many: {err:?}");

    // An application error keeps its code and message.
    let err = within(client.call::<()>("refuse", (4711,)))
        .await
        .unwrap_err();
    let e = err.server_error().expect("a server error");
    assert_eq!(e.code(), ErrorCode::new(4711));
    assert_eq!(e.message(), "refused 4711");
    assert!(e.data().is_none());

    // A result of the wrong type is the caller's decoding error.
    let err = within(client.call::<String>("add", (1, 2)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err:?}");

    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(server.stats().responses_sent, 6);
    assert_eq!(caller.calls_in_flight(), 0);
}

#[tokio::test]
async fn without_error_replies_the_caller_times_out() {
    // As Python's rpcudp: a failing call gets no answer at all.
    let server = Builder::new()
        .serve(router())
        .bind(LOCALHOST, RpcudpCodec::new().without_error_replies())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_millis(200));
    let err = within(client.call::<()>("nope", ())).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let sum: i64 = within(client.call("add", (1, 2))).await.unwrap();
    assert_eq!(sum, 3);
}

#[tokio::test]
async fn panicking_handler_answers_internal_error_and_the_server_survives() {
    let server = server().await;
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));

    for method in ["panics_at_once", "panics_later"] {
        let err = within(client.call::<i64>(method, (1,))).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::INTERNAL_ERROR),
            "{method}: {err:?}"
        );
        let sum: i64 = within(client.call("add", (20, 22))).await.unwrap();
        assert_eq!(sum, 42, "the server still answers after {method}");
    }
}

#[tokio::test]
async fn panicking_service_does_not_stop_the_endpoint() {
    let router = Router::new().route("add", add);
    let service = tower::service_fn(move |req: Request| {
        let router = router.clone();
        async move {
            match req.method().name() {
                Some("boom") => panic!("a middleware bug, before any await"),
                Some("boom_later") => {
                    tokio::task::yield_now().await;
                    panic!("a middleware bug, after an await")
                }
                _ => Ok::<_, std::convert::Infallible>(router.dispatch(req).await),
            }
        }
    });
    let server = Builder::new()
        .serve(service)
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_millis(500));
    for method in ["boom", "boom_later"] {
        let err = within(client.call::<i64>(method, ())).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::INTERNAL_ERROR),
            "{method}: {err:?}"
        );
        let sum: i64 = within(client.call("add", (1, 2))).await.unwrap();
        assert_eq!(sum, 3, "the server still answers after {method}");
    }
}

// --- timeouts ------------------------------------------------------------------------------------

#[tokio::test]
async fn silent_peer_times_out() {
    let silent = raw_socket().await;
    let caller = endpoint().await;
    let client = caller
        .client(silent.local_addr().unwrap())
        .with_timeout(Duration::from_millis(200));

    let start = Instant::now();
    let err = within(client.call::<()>("ping", ())).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(matches!(err, Error::Timeout));
    assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
    assert_eq!(caller.calls_in_flight(), 0);

    // The request did go out.
    let (request, from) = recv(&silent).await;
    assert_eq!(from, caller.local_addr());
    assert_eq!(request[0], 0x00);

    // The builder's default timeout applies when the call has none.
    let caller = Builder::new()
        .timeout(Duration::from_millis(150))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let start = Instant::now();
    let err = within(
        caller
            .client(silent.local_addr().unwrap())
            .call::<()>("ping", ()),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(145));
    assert!(start.elapsed() < Duration::from_millis(650));
    assert_eq!(caller.calls_in_flight(), 0);
}

#[tokio::test]
async fn abandoned_call_frees_its_slot() {
    let silent = raw_socket().await;
    let caller = endpoint().await;
    let client = caller.client(silent.local_addr().unwrap());
    let call = client.call::<()>("ping", ());
    // The caller gives up long before the default timeout.
    assert!(tokio::time::timeout(Duration::from_millis(50), call)
        .await
        .is_err());
    assert_eq!(caller.calls_in_flight(), 0);
}

// --- malformed and oversize datagrams -----------------------------------------------------------

#[tokio::test]
async fn garbage_is_dropped_and_counted() {
    let server = server().await;
    let to = server.local_addr();
    let attacker = raw_socket().await;

    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    // Random bytes (a fixed xorshift stream), under every message type and an unknown one.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for kind in [0x00u8, 0x01, 0x02, 0x5c] {
        let len = 30 + (next() % 200) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        d[0] = kind;
        datagrams.push(d);
    }
    // Empty, and one byte short of the smallest message.
    datagrams.push(Vec::new());
    datagrams.push(vec![0u8; 21]);
    // A valid header, then truncated msgpack: the request's id is readable, so it is answered.
    let truncated_id = [0x77u8; 20];
    datagrams.push([&[0x00][..], &truncated_id, b"\x92\xa5say"].concat());
    // An unknown type byte on an otherwise valid request.
    datagrams.push([&[0x07][..], &[0x11; 20], b"\x92\xa3add\x92\x01\x02"].concat());
    // A response with trailing bytes.
    datagrams.push([&[0x01][..], &[0x12; 20], b"\xc0\xc0"].concat());

    for d in &datagrams {
        attacker.send_to(d, to).await.unwrap();
    }
    let n = datagrams.len() as u64;
    eventually("every datagram is counted as malformed", || {
        server.stats().malformed == n
    })
    .await;

    // The truncated request got an error reply with its id, the rest nothing.
    let mut got_reply = false;
    loop {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(Duration::from_millis(200), attacker.recv_from(&mut buf)).await {
            Err(_) => break,
            Ok(r) => {
                let (len, _) = r.unwrap();
                buf.truncate(len);
                assert_eq!(buf[0], 0x02, "only error replies: {buf:02x?}");
                if buf[1..21] == truncated_id {
                    got_reply = true;
                }
            }
        }
    }
    assert!(
        got_reply,
        "the truncated request was answered with an error"
    );

    let s = server.stats();
    assert_eq!(s.requests, 0, "{s:?}");
    assert_eq!(s.unknown_responses, 0, "{s:?}");

    let caller = endpoint().await;
    let sum: i64 = within(
        caller
            .client(to)
            .with_timeout(Duration::from_secs(5))
            .call("add", (1, 1)),
    )
    .await
    .unwrap();
    assert_eq!(sum, 2);
    assert_eq!(server.stats().malformed, n);
}

#[tokio::test]
async fn oversize_is_refused_before_sending_and_dropped_on_receipt() {
    let server = server_with(Builder::new().max_payload(100)).await;
    let caller = Builder::new()
        .max_payload(100)
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));

    // The body [ "echo", [ bin(n) ] ] takes 9 + n bytes: n = 91 is exactly the limit.
    let fits = vec![0xabu8; 91];
    let (back,): (serde_bytes::ByteBuf,) =
        within(client.call("echo", (serde_bytes::Bytes::new(&fits),)))
            .await
            .unwrap();
    assert_eq!(back.as_ref(), &fits[..]);

    let too_big = vec![0xabu8; 92];
    let err = within(client.call::<()>("echo", (serde_bytes::Bytes::new(&too_big),)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: 101,
                limit: 100
            }
        ),
        "{err:?}"
    );
    let err = within(client.call::<()>("echo", (serde_bytes::Bytes::new(&[0u8; 1000]),)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 100, .. }), "{err:?}");
    assert_eq!(caller.calls_in_flight(), 0);

    // Nothing was sent: the server saw only the call that fit.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.stats().requests, 1);
    assert_eq!(server.stats().oversize, 0);

    // Incoming: a 2000-byte datagram, and one a byte over the 121-byte frame limit, are dropped.
    let raw = raw_socket().await;
    raw.send_to(&[0u8; 2000], server.local_addr())
        .await
        .unwrap();
    let mut over = vec![0x00u8];
    over.extend_from_slice(&[0x33; 20]);
    over.extend_from_slice(b"\x92\xa4echo\x91\xc4\x5c");
    over.extend_from_slice(&[0xcd; 92]);
    assert_eq!(over.len(), 122);
    raw.send_to(&over, server.local_addr()).await.unwrap();
    eventually("both datagrams are counted as oversize", || {
        server.stats().oversize == 2
    })
    .await;
    assert!(nothing_arrives(&raw, Duration::from_millis(100)).await);
    assert_eq!(server.stats().malformed, 0);

    // A request of exactly 121 bytes is served.
    let mut exact = vec![0x00u8];
    exact.extend_from_slice(&[0x44; 20]);
    exact.extend_from_slice(b"\x92\xa4echo\x91\xc4\x5b");
    exact.extend_from_slice(&[0xcd; 91]);
    assert_eq!(exact.len(), 121);
    raw.send_to(&exact, server.local_addr()).await.unwrap();
    let (reply, _) = recv(&raw).await;
    assert_eq!(reply[0], 0x01);
    assert_eq!(&reply[1..21], &[0x44; 20]);
    assert_eq!(&reply[21..], &exact[27..]);

    let sum: i64 = within(client.call("add", (2, 2))).await.unwrap();
    assert_eq!(sum, 4);
}

#[tokio::test]
async fn response_over_the_limit_becomes_an_error() {
    let server = Builder::new()
        .max_payload(100)
        .serve(Router::new().route("big", |n: usize| async move {
            Ok::<_, ServerError>(serde_bytes::ByteBuf::from(vec![7u8; n]))
        }))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));
    let small: serde_bytes::ByteBuf = within(client.call("big", (10usize,))).await.unwrap();
    assert_eq!(small.len(), 10);
    let err = within(client.call::<serde_bytes::ByteBuf>("big", (500usize,)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MESSAGE_TOO_LARGE), "{err:?}");
}

#[tokio::test]
async fn payload_limit_accounts_for_the_udp_maximum() {
    let server = Builder::new()
        .max_payload(usize::MAX)
        .serve(Router::new().route("big", |n: usize| async move {
            Ok::<_, ServerError>(serde_bytes::ByteBuf::from(vec![7u8; n]))
        }))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = Builder::new()
        .max_payload(usize::MAX)
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(2));

    // A request body of 65500 bytes: within the payload limit, but a 65521-byte datagram.
    let err = within(client.call::<()>("big", (serde_bytes::ByteBuf::from(vec![1u8; 65_490]),)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");

    // A response body of 65493 bytes: a 65514-byte datagram, which cannot be sent.
    let err = within(client.call::<serde_bytes::ByteBuf>("big", (65_490usize,)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MESSAGE_TOO_LARGE), "{err:?}");
}

// --- spoofing ------------------------------------------------------------------------------------

#[tokio::test]
async fn responses_from_the_wrong_address_or_with_unknown_ids_are_dropped() {
    let a = raw_socket().await;
    let b = raw_socket().await;
    let caller = endpoint().await;
    let client = caller
        .client(a.local_addr().unwrap())
        .with_timeout(Duration::from_secs(8));
    let call = tokio::spawn(async move { client.call::<String>("whoami", ()).await });

    let (request, from) = recv(&a).await;
    assert_eq!(from, caller.local_addr());
    assert_eq!(request[0], 0x00);
    let id = request[1..21].to_vec();
    assert_eq!(&request[21..], b"\x92\xa6whoami\x90");

    // B forges a well-formed response with the right id.
    let forged = [&[0x01][..], &id, b"\xa6forged"].concat();
    b.send_to(&forged, caller.local_addr()).await.unwrap();
    eventually("the forged response is counted as spoofed", || {
        caller.stats().spoofed_responses == 1
    })
    .await;
    assert_eq!(caller.calls_in_flight(), 1, "the call still waits");

    // A forges an error reply from B as well: also refused.
    let forged_error = [&[0x02][..], &id, b"\x93\x01\xa1x\xc0"].concat();
    b.send_to(&forged_error, caller.local_addr()).await.unwrap();
    eventually("the forged error is counted as spoofed", || {
        caller.stats().spoofed_responses == 2
    })
    .await;

    // A response with an id nobody asked for.
    let unknown = [&[0x01][..], &[0xee; 20], b"\xa2no"].concat();
    a.send_to(&unknown, caller.local_addr()).await.unwrap();
    eventually("the stray response is counted as unknown", || {
        caller.stats().unknown_responses == 1
    })
    .await;
    assert_eq!(caller.calls_in_flight(), 1);

    // The real peer answers.
    let real = [&[0x01][..], &id, b"\xa2ok"].concat();
    a.send_to(&real, caller.local_addr()).await.unwrap();
    let answer = within(call).await.unwrap().unwrap();
    assert_eq!(answer, "ok");

    // A late duplicate of the real answer is unknown now.
    a.send_to(&real, caller.local_addr()).await.unwrap();
    eventually("the duplicate is counted as unknown", || {
        caller.stats().unknown_responses == 2
    })
    .await;

    let s = caller.stats();
    assert_eq!(s.spoofed_responses, 2);
    assert_eq!(s.responses_received, 1);
    assert_eq!(caller.calls_in_flight(), 0);
}

// --- symmetric peers -----------------------------------------------------------------------------

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

async fn double(ctx: Context, x: i64) -> i64 {
    assert!(ctx.peer_addr().is_some());
    x * 2
}

#[tokio::test]
async fn handler_calls_its_caller_back() {
    // The relay's error answers below quote the error of the call back in full: more than
    // three times the size of the request they answer.
    let server = Builder::new()
        .max_error_amplification(100)
        .serve(Router::new().route("relay", relay))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();

    // The caller serves through the builder...
    let caller = Builder::new()
        .serve(Router::new().route("double", double))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));
    let got: i64 = within(client.call("relay", (20,))).await.unwrap();
    assert_eq!(got, 41);
    assert_eq!(
        caller.stats().requests,
        1,
        "the call back reached the caller"
    );
    assert_eq!(server.stats().responses_received, 1);

    // ...or starts serving later, on the endpoint it already calls from.
    let late = endpoint().await;
    let client = late
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));
    let err = within(client.call::<i64>("relay", (1,))).await.unwrap_err();
    let e = err
        .server_error()
        .expect("relay reports the failed call back");
    assert_eq!(e.code(), ErrorCode::INTERNAL_ERROR);
    assert!(e.message().contains("method not found"), "{e}");

    assert!(late.serve(Router::new().route("double", double)));
    assert!(!late.serve(Router::new()), "a second service is refused");
    let got: i64 = within(client.call("relay", (100,))).await.unwrap();
    assert_eq!(got, 201);

    // An endpoint may call itself: the request and its answer cross the same socket.
    let me = late
        .client(late.local_addr())
        .with_timeout(Duration::from_secs(5));
    let got: i64 = within(me.call("double", (5,))).await.unwrap();
    assert_eq!(got, 10);
}

#[tokio::test]
async fn handler_holding_its_endpoint_calls_a_third_peer() {
    // A Kademlia-like node: its handler forwards to another node through its own endpoint.
    let third = Builder::new()
        .serve(Router::new().route("add", add))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let node = endpoint().await;
    let this_node = node.clone();
    let third_addr = third.local_addr();
    assert!(
        node.serve(Router::new().route("forward", move |a: i64, b: i64| {
            let node = this_node.clone();
            async move {
                node.client(third_addr)
                    .call::<i64>("add", (a, b))
                    .await
                    .map_err(|e| ServerError::internal(e.to_string()))
            }
        }))
    );
    let caller = endpoint().await;
    let got: i64 = within(
        caller
            .client(node.local_addr())
            .with_timeout(Duration::from_secs(5))
            .call("forward", (3, 4)),
    )
    .await
    .unwrap();
    assert_eq!(got, 7);
}

// --- overload ------------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_concurrent_requests_are_refused() {
    let server = Builder::new()
        .max_concurrent_requests(2)
        .serve(Router::new().route("slow", |x: i64| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            x
        }))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));

    let start = Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..5i64 {
        let client = client.clone();
        calls.spawn(async move {
            let r = client.call::<i64>("slow", (i,)).await;
            (i, r, start.elapsed())
        });
    }
    let (mut ok, mut overloaded) = (0, 0);
    within(async {
        while let Some(done) = calls.join_next().await {
            let (i, result, elapsed) = done.unwrap();
            match result {
                Ok(v) => {
                    assert_eq!(v, i);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.is_overloaded(), "call {i}: {e:?}");
                    assert_eq!(e.code(), Some(ErrorCode::OVERLOADED));
                    assert!(
                        elapsed < Duration::from_millis(250),
                        "refused at once, not after the slow calls: {elapsed:?}"
                    );
                    overloaded += 1;
                }
            }
        }
    })
    .await;
    assert!(overloaded >= 3, "{overloaded} refused");
    assert_eq!(ok + overloaded, 5);
    assert_eq!(server.stats().overloaded, overloaded);

    // Once the slow calls are done, their permits are back.
    let v: i64 = within(client.call("slow", (9,))).await.unwrap();
    assert_eq!(v, 9);
}

// --- notifications -------------------------------------------------------------------------------

#[tokio::test]
async fn notification_runs_the_handler_without_a_response() {
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let counter = count.clone();
    let server = Builder::new()
        .serve(Router::new().route("bump", move |n: i64| {
            let counter = counter.clone();
            let tx = tx.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(n);
            }
        }))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller.client(server.local_addr());

    let start = Instant::now();
    within(client.notify("bump", (5,))).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "notify returns once sent"
    );
    assert_eq!(caller.calls_in_flight(), 0, "nothing waits for an answer");
    assert_eq!(within(rx.recv()).await, Some(5));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    eventually("the server counts the request", || {
        server.stats().requests == 1
    })
    .await;

    // Give any answer time to arrive: none is taken as a response to a call.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = caller.stats();
    assert_eq!(s.responses_received, 0, "{s:?}");
    assert_eq!(s.spoofed_responses, 0, "{s:?}");
    // rpcudp has no notifications: the request goes with a fresh id and the server answers it as
    // any request; that answer is then dropped as a response to no call.
    assert!(s.unknown_responses <= 1, "{s:?}");

    // Notifying an unknown method is not an error for the sender.
    within(client.notify("nope", ())).await.unwrap();
    // The same method called normally runs once more and answers.
    let client = client.with_timeout(Duration::from_secs(5));
    within(client.call::<()>("bump", (7,))).await.unwrap();
    assert_eq!(within(rx.recv()).await, Some(7));
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(caller.stats().responses_received, 1);
}

// --- close ---------------------------------------------------------------------------------------

#[tokio::test]
async fn close_fails_pending_and_later_calls() {
    let silent = raw_socket().await;
    let caller = endpoint().await;
    let client = caller
        .client(silent.local_addr().unwrap())
        .with_timeout(Duration::from_secs(8));
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<()>("ping", ()).await })
    };
    eventually("the call is in flight", || caller.calls_in_flight() == 1).await;
    let _ = recv(&silent).await;

    assert!(!caller.is_closed());
    let start = Instant::now();
    caller.close();
    assert!(caller.is_closed());
    let err = within(pending).await.unwrap().unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(caller.calls_in_flight(), 0);

    // Later calls, through the old client or a new one, fail at once without sending.
    let start = Instant::now();
    let err = within(client.call::<()>("ping", ())).await.unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    let err = within(
        caller
            .client(silent.local_addr().unwrap())
            .call::<()>("ping", ()),
    )
    .await
    .unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    let err = within(client.notify("ping", ())).await.unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(100));
    assert!(nothing_arrives(&silent, Duration::from_millis(100)).await);
}

#[tokio::test]
async fn closed_server_stops_answering() {
    let server = server().await;
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_millis(200));
    let sum: i64 = within(client.call("add", (1, 2))).await.unwrap();
    assert_eq!(sum, 3);
    server.close();
    let err = within(client.call::<i64>("add", (1, 2))).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn close_still_answers_requests_being_served() {
    let server = Builder::new()
        .serve(Router::new().route("slow", |x: i64| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            x
        }))
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let caller = endpoint().await;
    let client = caller
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(5));
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<i64>("slow", (8,)).await })
    };
    eventually("the server has the request", || {
        server.stats().requests == 1
    })
    .await;
    server.close();
    assert_eq!(within(call).await.unwrap().unwrap(), 8);
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket() {
    let server = server().await;
    let addr = server.local_addr();
    let caller = endpoint().await;
    let client = caller.client(addr).with_timeout(Duration::from_secs(5));
    // A client keeps its endpoint open.
    drop(caller);
    let sum: i64 = within(client.call("add", (1, 2))).await.unwrap();
    assert_eq!(sum, 3);
    drop(client);

    drop(server);
    let deadline = Instant::now() + BOUND;
    while UdpSocket::bind(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the server's port is never freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_timeout_too_long_for_the_clock_means_no_timeout() {
    let server = server().await;
    let caller = Builder::new()
        .timeout(Duration::MAX)
        .bind(LOCALHOST, RpcudpCodec::new())
        .await
        .unwrap();
    let sum: i64 = within(caller.client(server.local_addr()).call("add", (2, 3)))
        .await
        .unwrap();
    assert_eq!(sum, 5);
}

#[test]
fn a_call_made_outside_any_runtime_still_times_out() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (caller, silent) = rt.block_on(async {
        let caller = Builder::new()
            .timeout(Duration::from_millis(200))
            .bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        (caller, raw_socket().await)
    });
    let client = caller.client(silent.local_addr().unwrap());
    // The first call of the endpoint, made from a thread with no runtime: its sweeper starts
    // on the endpoint's.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(
            client.call::<i64>("add", (1, 2)),
        ));
    });
    let outcome = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the call timed out");
    assert!(outcome.unwrap_err().is_timeout());
}

/// The `id` member of a JSON-RPC request datagram.
fn json_id(datagram: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(datagram).expect("a JSON-RPC request");
    v["id"].clone()
}

#[tokio::test]
async fn json_rpc_over_udp_has_unguessable_ids_and_refuses_a_forged_answer() {
    use rpc_codecs::jsonrpc::JsonRpcCodec;
    within(async {
        // A "server" that reads requests and answers by hand.
        let server = raw_socket().await;
        let addr = server.local_addr().unwrap();
        let a = Endpoint::bind("127.0.0.1:0", JsonRpcCodec::new())
            .await
            .unwrap();
        let b = Endpoint::bind("127.0.0.1:0", JsonRpcCodec::new())
            .await
            .unwrap();
        let (ca, cb) = (a.client(addr), b.client(addr));
        let first_a = tokio::spawn(async move { ca.call::<i64>("add", (1, 2)).await });
        let (req_a, from_a) = recv(&server).await;
        let first_b = tokio::spawn(async move { cb.call::<i64>("add", (3, 4)).await });
        let (req_b, from_b) = recv(&server).await;
        let (id_a, id_b) = (json_id(&req_a), json_id(&req_b));
        // Two new clients' first ids: 128 bits each, not a sequence both start at 1.
        for id in [&id_a, &id_b] {
            let s = id
                .as_str()
                .unwrap_or_else(|| panic!("not a string id: {id}"));
            assert_eq!(s.len(), 32, "{s}");
            assert!(s.bytes().all(|c| c.is_ascii_hexdigit()), "{s}");
        }
        assert_ne!(id_a, id_b);
        // A forger who guesses sequential ids answers from the server's own address: refused,
        // the call keeps waiting for its real answer.
        for guess in [
            serde_json::json!(1),
            serde_json::json!("1"),
            serde_json::json!(0),
        ] {
            let forged = serde_json::json!({"jsonrpc": "2.0", "id": guess, "result": 666});
            let bytes = serde_json::to_vec(&forged).unwrap();
            server.send_to(&bytes, from_a).await.unwrap();
            server.send_to(&bytes, from_b).await.unwrap();
        }
        eventually("the forged answers were dropped", || {
            a.stats().unknown_responses == 3 && b.stats().unknown_responses == 3
        })
        .await;
        for ((id, to), sum) in [((id_a, from_a), 3), ((id_b, from_b), 7)] {
            let real = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": sum});
            server
                .send_to(&serde_json::to_vec(&real).unwrap(), to)
                .await
                .unwrap();
        }
        assert_eq!(first_a.await.unwrap().unwrap(), 3);
        assert_eq!(first_b.await.unwrap().unwrap(), 7);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_waits_for_a_request_the_receive_loop_was_starting() {
    use std::sync::atomic::AtomicBool;
    within(async {
        let entered = Arc::new(AtomicBool::new(false));
        let flag = entered.clone();
        // The handler's first poll holds the receive loop (as a busy one does) before the
        // request has its slot; then it waits, so it must be answered later, from its task.
        let stall = move || {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
                tokio::time::sleep(Duration::from_millis(100)).await;
                7i64
            }
        };
        let server = Builder::new()
            .serve(Router::new().route("stall", stall))
            .bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        let client = endpoint().await.client(server.local_addr());
        let call = tokio::spawn(async move { client.call::<i64>("stall", ()).await });
        while !entered.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The loop is inside the handler's first poll: the request started, its slot not taken.
        assert!(server.shutdown(Duration::from_secs(5)).await);
        assert_eq!(
            server.stats().responses_sent,
            1,
            "shutdown returned before the request it accepted was answered"
        );
        assert_eq!(call.await.unwrap().unwrap(), 7);
    })
    .await;
}

#[tokio::test]
async fn error_answers_are_counted_by_code() {
    within(async {
        let server = server_with(Builder::new()).await;
        let client = endpoint().await.client(server.local_addr());
        let _ = client.call::<i64>("nope", ()).await;
        let _ = client.call::<i64>("add", ("one", 2)).await;
        let _ = client.call::<()>("refuse", (-32000,)).await;
        let _ = client.call::<()>("refuse", (7,)).await;
        let _ = client.call::<i64>("add", (1, 2)).await.unwrap();
        let e = server.stats().errors_sent;
        assert_eq!(
            (e.method_not_found, e.invalid_params, e.overloaded, e.other),
            (1, 1, 1, 1),
            "{e:?}"
        );
        assert_eq!(e.total(), 4);
        assert_eq!(server.stats().responses_sent, 5);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_strong_handle_closes_an_endpoint_whose_handlers_hold_weak_ones() {
    within(async {
        let node = Endpoint::bind(LOCALHOST, RpcudpCodec::new()).await.unwrap();
        let addr = node.local_addr();
        let other = server().await;
        let me = node.downgrade();
        let other_addr = other.local_addr();
        // The handler calls another peer through its own endpoint, as a Kademlia node does.
        node.serve(Router::new().route("relay", move |a: i64, b: i64| {
            let me = me.clone();
            async move {
                let node = me
                    .upgrade()
                    .ok_or_else(|| ServerError::internal("closed"))?;
                node.client(other_addr)
                    .call::<i64>("add", (a, b))
                    .await
                    .map_err(|e| ServerError::internal(e.to_string()))
            }
        }));
        let caller = endpoint().await;
        let sum: i64 = caller.client(addr).call("relay", (2, 40)).await.unwrap();
        assert_eq!(sum, 42);
        let weak = node.downgrade();
        drop(node);
        assert!(weak.upgrade().is_none(), "a weak handle kept the endpoint");
        // The socket is closed: its port can be bound again.
        let deadline = Instant::now() + BOUND;
        while UdpSocket::bind(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the endpoint's socket stayed open"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn every_answer_of_a_batch_is_counted_and_an_answer_never_sent_is_not() {
    use rpc_codecs::jsonrpc::JsonRpcCodec;
    within(async {
        let json = Builder::new()
            .serve(router())
            .bind(LOCALHOST, JsonRpcCodec::new())
            .await
            .unwrap();
        let peer = raw_socket().await;
        let batch = br#"[{"jsonrpc":"2.0","method":"nope","id":1},{"jsonrpc":"2.0","method":"add","params":[1,2],"id":2},{"jsonrpc":"2.0","method":"nope","id":3}]"#;
        peer.send_to(batch, json.local_addr()).await.unwrap();
        let (answer, _) = recv(&peer).await;
        let answers: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answers.as_array().map(Vec::len), Some(3));
        let s = json.stats();
        assert_eq!(s.responses_sent, 3, "{s:?}");
        assert_eq!(s.errors_sent.method_not_found, 2, "{s:?}");

        // rpcudp without error replies sends nothing for an unknown method: nothing is counted.
        let quiet = Builder::new()
            .serve(router())
            .bind(LOCALHOST, RpcudpCodec::new().without_error_replies())
            .await
            .unwrap();
        let client = endpoint().await.client(quiet.local_addr());
        let e = client
            .with_timeout(Duration::from_millis(100))
            .call::<i64>("nope", ())
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
        let s = quiet.stats();
        assert_eq!((s.requests, s.responses_sent, s.errors_sent.total()), (1, 0, 0), "{s:?}");
    })
    .await;
}

/// Sends `datagram` to `to` from `peer` and returns the size of the answer, if one comes within
/// 200 ms.
async fn answer_size(peer: &UdpSocket, to: SocketAddr, datagram: &[u8]) -> Option<usize> {
    peer.send_to(datagram, to).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    tokio::time::timeout(Duration::from_millis(200), peer.recv_from(&mut buf))
        .await
        .ok()
        .map(|r| r.unwrap().0)
}

#[tokio::test]
async fn no_bad_datagram_is_answered_with_more_than_three_times_its_size() {
    use rpc_codecs::jsonrpc::JsonRpcCodec;
    within(async {
        let json = Builder::new()
            .serve(router())
            .bind(LOCALHOST, JsonRpcCodec::new())
            .await
            .unwrap();
        let rpcudp = server().await;
        let peer = raw_socket().await;
        let invalid_items = format!("[{}]", vec!["1"; 72].join(","));
        let mut rpcudp_bad = vec![0u8];
        rpcudp_bad.extend_from_slice(&[7u8; 20]);
        rpcudp_bad.push(0xc1);
        let mut rpcudp_unknown = vec![0u8];
        rpcudp_unknown.extend_from_slice(&[8u8; 20]);
        rpcudp_unknown.extend_from_slice(&[0x92, 0xa1, b'x', 0x90]);
        let cases: Vec<(&str, SocketAddr, Vec<u8>)> = vec![
            ("empty, JSON-RPC", json.local_addr(), vec![]),
            ("one byte, JSON-RPC", json.local_addr(), b"x".to_vec()),
            ("not JSON", json.local_addr(), b"{\"jsonrpc\":".to_vec()),
            (
                "a batch of invalid items",
                json.local_addr(),
                invalid_items.into_bytes(),
            ),
            (
                "an unknown method",
                json.local_addr(),
                br#"{"jsonrpc":"2.0","method":"x","id":1}"#.to_vec(),
            ),
            ("empty, rpcudp", rpcudp.local_addr(), vec![]),
            ("a bad rpcudp body", rpcudp.local_addr(), rpcudp_bad),
            (
                "an unknown rpcudp method",
                rpcudp.local_addr(),
                rpcudp_unknown,
            ),
            (
                "wrong argument types",
                json.local_addr(),
                br#"{"jsonrpc":"2.0","method":"add","params":["a","b"],"id":1}"#.to_vec(),
            ),
            (
                "an invalid request object",
                json.local_addr(),
                br#"{"jsonrpc":"1.0","id":1}"#.to_vec(),
            ),
            (
                "a batch of notifications",
                json.local_addr(),
                br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","method":"y"}]"#.to_vec(),
            ),
            (
                "arguments too dense to decode",
                json.local_addr(),
                format!(
                    r#"{{"jsonrpc":"2.0","method":"add","params":[{}0],"id":1}}"#,
                    "0,".repeat(3000)
                )
                .into_bytes(),
            ),
        ];
        for (what, to, datagram) in cases {
            let answered = answer_size(&peer, to, &datagram).await;
            println!(
                "[udp amplification] {what}: {} bytes answered with {}",
                datagram.len(),
                answered.map_or("nothing".to_owned(), |n| format!(
                    "{n} ({:.2}x)",
                    n as f64 / datagram.len().max(1) as f64
                ))
            );
            if let Some(n) = answered {
                assert!(
                    n <= 3 * datagram.len(),
                    "{what}: {} bytes answered with {n}",
                    datagram.len()
                );
            }
            if datagram.is_empty() {
                assert_eq!(answered, None, "{what}: an empty datagram was answered");
            }
        }
        assert!(json.stats().withheld >= 2, "{:?}", json.stats());
        // A well-formed call is still answered in full, however large its result.
        let client = endpoint().await.client(rpcudp.local_addr());
        let hi: String = client.call("sayhi", ("x".repeat(3000),)).await.unwrap();
        assert!(hi.len() > 3000);
    })
    .await;
}

#[tokio::test]
async fn a_batch_whose_answer_is_too_large_is_answered_with_an_error_saying_so() {
    use rpc_codecs::jsonrpc::JsonRpcCodec;
    within(async {
        let server = Builder::new()
            .serve(Router::new().route("big", |n: usize| async move { "x".repeat(n) }))
            .bind(LOCALHOST, JsonRpcCodec::new())
            .await
            .unwrap();
        let peer = raw_socket().await;
        let batch = br#"[{"jsonrpc":"2.0","method":"big","params":[5000],"id":1},{"jsonrpc":"2.0","method":"big","params":[5000],"id":2}]"#;
        peer.send_to(batch, server.local_addr()).await.unwrap();
        let (answer, _) = recv(&peer).await;
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["id"], serde_json::Value::Null, "{answer}");
        assert_eq!(answer["error"]["code"], -32003, "{answer}");
        assert_eq!(server.stats().errors_sent.message_too_large, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_place_among_the_requests_served() {
    within(async {
        let server = Builder::new()
            .serve(Router::new().route("sleep", |ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }))
            .bind(LOCALHOST, RpcudpCodec::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        // One host keeps 1100 calls running: more than all there is room for (the default, 1024),
        // and more than its share (the default, 512).
        let greedy = Endpoint::bind("127.0.0.2:0", RpcudpCodec::new())
            .await
            .unwrap();
        let mut calls = JoinSet::new();
        // In steps of 50, so that no datagram is lost to a full socket buffer on the way.
        for _ in 0..22 {
            for _ in 0..50 {
                let c = greedy.client(addr).with_timeout(Duration::from_secs(8));
                calls.spawn(async move { c.call::<u64>("sleep", (5000u64,)).await });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eventually("the greedy host had its share", || {
            server.stats().overloaded >= 588
        })
        .await;
        // Another host is served at once.
        let other = Endpoint::bind("127.0.0.3:0", RpcudpCodec::new())
            .await
            .unwrap();
        let got = other
            .client(addr)
            .with_timeout(Duration::from_secs(1))
            .call::<u64>("sleep", (1u64,))
            .await;
        assert_eq!(got.unwrap(), 1);
        calls.abort_all();
    })
    .await;
}
