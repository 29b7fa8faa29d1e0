//! Streams that are not sockets: the in-memory transport, and connections started over any byte
//! stream (a `tokio::io::duplex` pair), with every codec.

use std::time::Duration;

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Codec, Context, Error, Peer, Router, ServerError};
use rpc_transports::memory;
use rpc_transports::stream::{self, Framing, Io};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn whoami(ctx: Context) -> String {
    ctx.peer().map(|p| p.to_string()).unwrap_or_default()
}

/// Calls the caller back: `double` on the other side of the same connection.
async fn quadruple(ctx: Context, n: i64) -> Result<i64, ServerError> {
    let caller = ctx
        .caller()
        .ok_or_else(|| ServerError::internal("no caller"))?;
    let twice: i64 = caller
        .call("double", (n,))
        .await
        .map_err(|e| ServerError::internal(e.to_string()))?;
    Ok(2 * twice)
}

async fn sleep_ms(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

fn router() -> Router {
    Router::new()
        .route("add", add)
        .route("whoami", whoami)
        .route("quadruple", quadruple)
        .route("sleep", sleep_ms)
}

async fn over_memory<C: Codec>(codec: C) {
    let server = memory::Builder::new().serve(router()).bind(codec.clone());
    let client = memory::Builder::new()
        .serve(Router::new().route("double", |n: i64| async move { 2 * n }))
        .client(server.local_addr(), codec);
    let sums = futures::future::join_all((0..100i64).map(|i| client.call::<i64>("add", (i, 1))));
    for (i, sum) in sums.await.into_iter().enumerate() {
        assert_eq!(sum.unwrap(), i as i64 + 1);
    }
    let me: String = client.call("whoami", ()).await.unwrap();
    assert!(me.starts_with("stream:memory-client-"), "{me}");
    let q: i64 = client.call("quadruple", (5,)).await.unwrap();
    assert_eq!(q, 20);
    let e = client.call::<i64>("nope", ()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Server(s) if s.code() == rpc_core::ErrorCode::METHOD_NOT_FOUND),
        "{e:?}"
    );
    let stats = server.stats();
    assert_eq!(stats.connections, 1);
    assert!(stats.requests >= 103, "{stats:?}");
    assert!(server.shutdown(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_router_over_the_memory_transport_with_msgpack() {
    timeout(LIMIT, over_memory(RpcudpCodec::new()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_router_over_the_memory_transport_with_json_rpc() {
    timeout(LIMIT, over_memory(JsonRpcCodec::new()))
        .await
        .unwrap();
}

/// A server and a client started over the two ends of a duplex pipe; `wrap` may put something
/// between a side and its end (a buffer that must be flushed).
async fn over_duplex<C: Codec>(codec: C, framing: Framing, buffered: bool) {
    let (a, b) = tokio::io::duplex(4096);
    let server_io = if buffered {
        Io::new(tokio::io::BufWriter::new(a))
    } else {
        Io::new(a)
    };
    let server = stream::builder().framing(framing).serve(router()).start(
        server_io.with_peer(Peer::Stream("client".into())),
        codec.clone(),
    );
    let client = stream::builder()
        .framing(framing)
        .serve(Router::new().route("double", |n: i64| async move { 2 * n }))
        .start(Io::new(b), codec);
    let c = client.client();
    // More than the pipe holds at once, so writers wait for readers.
    let sums = futures::future::join_all((0..500i64).map(|i| c.call::<i64>("add", (i, i))));
    for (i, sum) in sums.await.into_iter().enumerate() {
        assert_eq!(sum.unwrap(), 2 * i as i64);
    }
    assert_eq!(
        c.call::<String>("whoami", ()).await.unwrap(),
        "stream:client"
    );
    assert_eq!(c.call::<i64>("quadruple", (3,)).await.unwrap(), 12);
    assert_eq!(client.peer(), &Peer::Stream("stream".into()));
    assert!(server.stats().requests >= 502);
    // The server drains: the request it accepted is answered before it closes.
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.call::<u64>("sleep", (50u64,)).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(server.shutdown(Duration::from_secs(2)).await);
    assert_eq!(slow.await.unwrap().unwrap(), 50);
    // Its end is closed: the client's connection ends with it.
    timeout(Duration::from_secs(2), client.closed())
        .await
        .expect("the client saw the server close");
    assert!(c.call::<i64>("add", (1, 2)).await.is_err());
}

#[tokio::test]
async fn a_router_over_a_duplex_stream_with_msgpack() {
    timeout(
        LIMIT,
        over_duplex(RpcudpCodec::new(), Framing::LengthPrefixed, false),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_router_over_a_duplex_stream_with_json_rpc_lines() {
    timeout(
        LIMIT,
        over_duplex(JsonRpcCodec::new(), Framing::Newline, false),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_that_buffers_its_writes_is_flushed_after_each_batch() {
    timeout(
        LIMIT,
        over_duplex(JsonRpcCodec::new(), Framing::LengthPrefixed, true),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    timeout(LIMIT, async {
        let (a, mut b) = tokio::io::duplex(4096);
        let conn = stream::builder().start(Io::new(a), RpcudpCodec::new());
        let client = conn.client();
        drop(conn);
        // A client still holds it open.
        let mut byte = [0u8; 1];
        assert!(
            timeout(Duration::from_millis(50), b.read(&mut byte))
                .await
                .is_err(),
            "closed while a client was left"
        );
        drop(client);
        // The peer reads the end of the stream.
        assert_eq!(b.read(&mut byte).await.unwrap(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stopped_memory_server_refuses_connections_and_its_clients_reconnect_to_none() {
    timeout(LIMIT, async {
        let server = memory::Builder::new()
            .serve(router())
            .bind(RpcudpCodec::new());
        let addr = server.local_addr();
        let client = memory::Builder::new().client(addr.clone(), RpcudpCodec::new());
        assert_eq!(client.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        assert!(server.shutdown(Duration::from_secs(1)).await);
        let e = client.call::<i64>("add", (1, 2)).await.unwrap_err();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
        let fresh = memory::Builder::new().client(addr, RpcudpCodec::new());
        let e = fresh.call::<i64>("add", (1, 2)).await.unwrap_err();
        assert!(
            matches!(&e, Error::Transport(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
            "{e:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn garbage_on_a_duplex_stream_closes_that_connection_only() {
    use tokio::io::AsyncWriteExt;
    timeout(LIMIT, async {
        let server = memory::Builder::new()
            .max_frame_length(1024)
            .serve(router())
            .bind(RpcudpCodec::new());
        let good = memory::Builder::new().client(server.local_addr(), RpcudpCodec::new());
        assert_eq!(good.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        // A raw stream to the same server claiming a frame over the limit.
        let (mut raw, theirs) = tokio::io::duplex(4096);
        let bad = stream::builder().start(Io::new(theirs), RpcudpCodec::new());
        raw.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .unwrap();
        let mut rest = Vec::new();
        // The connection closes: the peer reads to the end.
        raw.read_to_end(&mut rest).await.unwrap();
        assert!(bad.is_closed() || timeout(LIMIT, bad.closed()).await.is_ok());
        assert_eq!(bad.stats().bad_frames, 1);
        assert_eq!(good.call::<i64>("add", (2, 2)).await.unwrap(), 4);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_shutdown_ends_a_pipe_whose_handler_still_runs() {
    timeout(LIMIT, async {
        let server = memory::Builder::new()
            .serve(router())
            .bind(RpcudpCodec::new());
        let client = memory::Builder::new()
            .timeout(Duration::from_secs(60))
            .client(server.local_addr(), RpcudpCodec::new());
        let slow = tokio::spawn({
            let client = client.clone();
            async move { client.call::<u64>("sleep", (30_000u64,)).await }
        });
        while server.stats().requests < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!server.shutdown(Duration::from_millis(100)).await);
        // The pipe is closed at once, not when the handler ends: the call fails now.
        let e = timeout(Duration::from_secs(5), slow)
            .await
            .expect("the call failed when the connection was dropped")
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_batch_whose_answer_is_over_the_frame_limit_is_answered_with_an_error_saying_so() {
    use tokio::io::AsyncWriteExt;
    timeout(LIMIT, async {
        let server = memory::Builder::new()
            .max_frame_length(1024)
            .framing(Framing::Newline)
            .serve(Router::new().route("big", |n: usize| async move { "x".repeat(n) }))
            .bind(JsonRpcCodec::new());
        // A peer that writes a batch by hand over a pipe of the server's.
        let (mut raw, theirs) = tokio::io::duplex(64 * 1024);
        let _conn = stream::builder()
            .framing(Framing::Newline)
            .max_frame_length(1024)
            .serve(Router::new().route("big", |n: usize| async move { "x".repeat(n) }))
            .start(Io::new(theirs), JsonRpcCodec::new());
        let batch = concat!(
            r#"[{"jsonrpc":"2.0","method":"big","params":[600],"id":1},"#,
            r#"{"jsonrpc":"2.0","method":"big","params":[600],"id":2}]"#,
            "\n"
        );
        raw.write_all(batch.as_bytes()).await.unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while raw.read(&mut byte).await.unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let answer: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(answer["id"], serde_json::Value::Null, "{answer}");
        assert_eq!(answer["error"]["code"], -32003, "{answer}");
        drop(server);
    })
    .await
    .unwrap();
}
