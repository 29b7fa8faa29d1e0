//! rpc-stack against the real rpcudp 5.0.1, over UDP on loopback, in both directions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use interop::PeerProcess;
use rmpv::Value;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::handler::raw;
use rpc_core::{Context, Request, Response, Router};
use rpc_transports::udp::{Builder, Endpoint};
use serde_bytes::ByteBuf;

async fn sayhi(ctx: Context, name: String) -> String {
    let peer = ctx.peer_addr().unwrap();
    format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[allow(clippy::too_many_arguments)]
async fn types(
    i: i64,
    n: i64,
    f: f64,
    b: bool,
    nil: Option<()>,
    bin: ByteBuf,
    s: String,
    list: Vec<i64>,
    map: BTreeMap<String, String>,
) -> (
    i64,
    i64,
    f64,
    bool,
    Option<()>,
    ByteBuf,
    String,
    Vec<i64>,
    BTreeMap<String, String>,
) {
    (i, n, f, b, nil, bin, s, list, map)
}

fn demo_router() -> Router {
    Router::new()
        .route("sayhi", sayhi)
        .route("add", add)
        .route("types", types)
        .route(
            "echo",
            raw(|req: Request| async move { Response::ok(req.args().clone()) }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_calls_rpc_stack_server() {
    let server = Builder::new()
        .serve(demo_router())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    interop::python_client_passes("rpcudp_peer.py", &server.local_addr().to_string()).await;
    let stats = server.stats();
    assert!(stats.requests >= 139, "{stats:?}");
    assert_eq!(stats.malformed, 0, "{stats:?}");
}

fn every_type() -> Vec<Value> {
    vec![
        Value::from(0),
        Value::from(-1),
        Value::from(255),
        Value::from(u64::MAX),
        Value::from(i64::MIN),
        Value::F64(3.5),
        Value::F64(-1e300),
        Value::Boolean(true),
        Value::Boolean(false),
        Value::Nil,
        Value::Binary(vec![]),
        Value::Binary((0..=255).collect()),
        Value::from(""),
        Value::from("snowman \u{2603}"),
        Value::from("y".repeat(300)),
        Value::Array(vec![]),
        Value::Array(vec![Value::from(1), Value::Array(vec![Value::from(2)])]),
        Value::Map(vec![(Value::from("k"), Value::from("v"))]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_stack_client_calls_python_server() {
    let peer = PeerProcess::start("rpcudp_peer.py", &["server"]);
    let addr = peer.listen_addr();
    let endpoint = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let client = endpoint.client(addr).with_timeout(Duration::from_secs(3));

    let hi: String = client.call("sayhi", ("Snake Plissken",)).await.unwrap();
    assert_eq!(
        hi,
        format!(
            "Hello Snake Plissken you live at 127.0.0.1:{}",
            endpoint.local_addr().port()
        )
    );

    // Every msgpack type, one by one and all at once; str and bin stay apart, floats stay float64.
    for v in every_type() {
        let back: Value = client.call("echo", (v.clone(),)).await.unwrap();
        assert_eq!(back, Value::Array(vec![v]));
    }
    let all = every_type();
    let back: Value = client.call("echo", all.clone()).await.unwrap();
    assert_eq!(back, Value::Array(all));

    // The captured echo exchange of wire-formats.md, byte for byte.
    let req = client
        .request(
            "echo",
            &(
                1,
                -1,
                3.5,
                true,
                None::<()>,
                serde_bytes::Bytes::new(b"\x01\x02"),
                "s",
                [1, 2],
                BTreeMap::from([("k", "v")]),
            ),
        )
        .unwrap();
    let reply = client.send(req).await.unwrap();
    assert_eq!(
        reply.bytes().as_ref(),
        b"\x99\x01\xff\xcb\x40\x0c\0\0\0\0\0\0\xc3\xc0\xc4\x02\x01\x02\xa1s\x92\x01\x02\x81\xa1k\xa1v"
    );

    // Typed results decode straight from Python's values.
    let typed: (i64, f64, String, ByteBuf) = client
        .call("echo", (5, 2.5, "s", ByteBuf::from(vec![9u8])))
        .await
        .unwrap();
    assert_eq!(typed, (5, 2.5, "s".to_string(), ByteBuf::from(vec![9u8])));

    // 100 calls in flight at once on one socket; Python answers them out of order.
    let calls = (0..100).map(|i| client.call::<i64>("slow_add", (i, 1000)));
    let results = futures::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i64 + 1000);
    }

    // rpcudp answers nothing to an unknown method or a failing handler: a quick timeout.
    let short = client.clone().with_timeout(Duration::from_millis(300));
    for method in ["no_such_method", "fail"] {
        let start = Instant::now();
        let err = short.call::<Value>(method, ("boom",)).await.unwrap_err();
        assert!(err.is_timeout(), "{method}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{method} took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(endpoint.calls_in_flight(), 0);

    let hi: String = client.call("sayhi", ("again",)).await.unwrap();
    assert!(hi.starts_with("Hello again"));
    let stats = endpoint.stats();
    assert_eq!(
        stats.spoofed_responses + stats.unknown_responses + stats.malformed,
        0,
        "{stats:?}"
    );
}
