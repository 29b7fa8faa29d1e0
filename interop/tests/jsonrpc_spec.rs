//! Every example of the JSON-RPC 2.0 specification (section 7), over TCP, compared on meaning:
//! the same results, error codes and ids. "Nothing" is checked by sending a request after the
//! notification and seeing its answer come first.

use std::time::Duration;

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::Router;
use rpc_transports::{tcp, udp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn spec_router() -> Router {
    interop::jsonrpc_spec_router()
}

struct Conn(TcpStream);

impl Conn {
    async fn send(&mut self, text: &str) {
        let mut frame = (text.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(text.as_bytes());
        self.0.write_all(&frame).await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), self.0.read_exact(&mut len))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        check_shape(&v);
        v
    }

    /// Sends `text` and expects its answer.
    async fn exchange(&mut self, text: &str) -> Value {
        self.send(text).await;
        self.recv().await
    }

    /// Sends `text` and checks that nothing comes back for it.
    async fn nothing(&mut self, text: &str) {
        self.send(text).await;
        let probe = self
            .exchange(r#"{"jsonrpc": "2.0", "method": "get_data", "id": "probe"}"#)
            .await;
        assert_eq!(probe["id"], "probe", "{text} was answered: {probe}");
    }
}

/// Every response carries "jsonrpc": "2.0" and exactly one of result and error.
fn check_shape(v: &Value) {
    match v {
        Value::Array(items) => items.iter().for_each(check_shape),
        Value::Object(o) => {
            assert_eq!(o.get("jsonrpc"), Some(&json!("2.0")), "{v}");
            assert!(o.contains_key("id"), "{v}");
            assert!(o.contains_key("result") != o.contains_key("error"), "{v}");
        }
        other => panic!("not a response: {other}"),
    }
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

/// Batch answers may come in any order: compare them sorted by id.
fn sorted(v: Value) -> Vec<Value> {
    let mut items = v.as_array().expect("a batch answer").clone();
    items.sort_by_key(|i| i["id"].to_string());
    items
}

#[tokio::test]
async fn the_specification_examples() {
    let server = tcp::Builder::new()
        .serve(spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let mut c = Conn(TcpStream::connect(server.local_addr()).await.unwrap());

    // rpc call with positional parameters
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#)
        .await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": 19, "id": 1}));
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#)
        .await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": -19, "id": 2}));

    // rpc call with named parameters
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#)
        .await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": 19, "id": 3}));
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#)
        .await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": 19, "id": 4}));

    // a notification
    c.nothing(r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#)
        .await;
    c.nothing(r#"{"jsonrpc": "2.0", "method": "foobar"}"#).await;

    // rpc call of non-existent method
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#)
        .await;
    assert_eq!((error_code(&r), &r["id"]), (-32601, &json!("1")));

    // rpc call with invalid JSON
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#)
        .await;
    assert_eq!((error_code(&r), &r["id"]), (-32700, &Value::Null));

    // rpc call with invalid Request object
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#)
        .await;
    assert_eq!((error_code(&r), &r["id"]), (-32600, &Value::Null));

    // rpc call Batch, invalid JSON
    let r = c
        .exchange(
            r#"[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]"#,
        )
        .await;
    assert_eq!((error_code(&r), &r["id"]), (-32700, &Value::Null));

    // rpc call with an empty Array
    let r = c.exchange("[]").await;
    assert!(r.is_object(), "one error, not a batch: {r}");
    assert_eq!((error_code(&r), &r["id"]), (-32600, &Value::Null));

    // rpc call with an invalid Batch (but not empty)
    let r = c.exchange("[1]").await;
    let items = r.as_array().expect("a batch").clone();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (error_code(&items[0]), &items[0]["id"]),
        (-32600, &Value::Null)
    );

    // rpc call with invalid Batch
    let r = c.exchange("[1,2,3]").await;
    let items = r.as_array().expect("a batch").clone();
    assert_eq!(items.len(), 3);
    for i in &items {
        assert_eq!((error_code(i), &i["id"]), (-32600, &Value::Null));
    }

    // rpc call Batch
    let r = c
        .exchange(
            r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#,
        )
        .await;
    let items = sorted(r);
    assert_eq!(items.len(), 5, "{items:?}");
    assert_eq!(items[0], json!({"jsonrpc": "2.0", "result": 7, "id": "1"}));
    assert_eq!(items[1], json!({"jsonrpc": "2.0", "result": 19, "id": "2"}));
    assert_eq!(
        (error_code(&items[2]), &items[2]["id"]),
        (-32601, &json!("5"))
    );
    assert_eq!(
        items[3],
        json!({"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"})
    );
    assert_eq!(
        (error_code(&items[4]), &items[4]["id"]),
        (-32600, &Value::Null)
    );

    // rpc call Batch (all notifications)
    c.nothing(
        r#"[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]"#,
    )
    .await;
}

#[tokio::test]
async fn ids_and_errors_in_detail() {
    let server = tcp::Builder::new()
        .serve(spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new().max_batch(3))
        .await
        .unwrap();
    let mut c = Conn(TcpStream::connect(server.local_addr()).await.unwrap());
    // Ids come back exactly as sent: null, strings with escapes, big and negative numbers.
    for id in [
        r#"null"#,
        r#""a\"b""#,
        "18446744073709551615",
        "-7",
        r#""""#,
    ] {
        let r = c
            .exchange(&format!(
                r#"{{"jsonrpc": "2.0", "method": "get_data", "id": {id}}}"#
            ))
            .await;
        assert_eq!(r["id"], serde_json::from_str::<Value>(id).unwrap(), "{r}");
        assert_eq!(r["result"], json!(["hello", 5]));
    }
    // Wrong version, bad id type, params neither array nor object.
    for bad in [
        r#"{"jsonrpc": "1.0", "method": "get_data", "id": 1}"#,
        r#"{"method": "get_data", "id": 1}"#,
        r#"{"jsonrpc": "2.0", "method": "get_data", "id": [1]}"#,
        r#"{"jsonrpc": "2.0", "method": "sum", "params": 3, "id": 1}"#,
        r#""just a string""#,
    ] {
        let r = c.exchange(bad).await;
        assert_eq!(error_code(&r), -32600, "{bad} -> {r}");
    }
    // Invalid params, with the spec's code.
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "subtract", "params": ["a", 1], "id": 1}"#)
        .await;
    assert_eq!(error_code(&r), -32602);
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 1, "extra": 2}, "id": 1}"#)
        .await;
    assert_eq!(error_code(&r), -32602);
    // A batch over the limit is one error.
    let r = c.exchange(r#"[{"jsonrpc":"2.0","method":"get_data","id":1},{"jsonrpc":"2.0","method":"get_data","id":2},{"jsonrpc":"2.0","method":"get_data","id":3},{"jsonrpc":"2.0","method":"get_data","id":4}]"#).await;
    assert_eq!((error_code(&r), &r["id"]), (-32600, &Value::Null));
    assert!(r["error"]["message"].as_str().unwrap().contains("limit"));
    // Responses are never answered, even malformed ones.
    c.nothing(r#"{"jsonrpc": "2.0", "result": 1, "id": 77}"#)
        .await;
    c.nothing(r#"{"jsonrpc": "2.0", "error": {"code": "x"}, "id": 78}"#)
        .await;
}

#[tokio::test]
async fn typed_clients_over_tcp_and_udp() {
    let server = tcp::Builder::new()
        .serve(spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let client = tcp::Builder::new().client(server.local_addr(), JsonRpcCodec::new());
    let r: i64 = client.call("subtract", (42, 23)).await.unwrap();
    assert_eq!(r, 19);
    let e = client.call::<i64>("nope", ()).await.unwrap_err();
    assert!(e.is_method_not_found(), "{e}");
    client.notify("update", (1, 2)).await.unwrap();
    let data: (String, i64) = client.call("get_data", ()).await.unwrap();
    assert_eq!(data, ("hello".into(), 5));

    let over_udp = udp::Builder::new()
        .serve(spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let ep = udp::Endpoint::bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let r: i64 = ep
        .client(over_udp.local_addr())
        .call("sum", (1, 2, 3))
        .await
        .unwrap();
    assert_eq!(r, 6);
}

#[tokio::test]
async fn one_router_over_msgpack_udp_and_jsonrpc_tcp_at_once() {
    let router = spec_router();
    let over_udp = udp::Builder::new()
        .serve(router.clone())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let over_tcp = tcp::Builder::new()
        .serve(router)
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let ep = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let msgpack = ep.client(over_udp.local_addr());
    let json = tcp::Builder::new().client(over_tcp.local_addr(), JsonRpcCodec::new());
    for (a, b) in [(42, 23), (1, 2), (-5, 5)] {
        let x: i64 = msgpack.call("subtract", (a, b)).await.unwrap();
        let y: i64 = json.call("subtract", (a, b)).await.unwrap();
        assert_eq!((x, y), (a - b, a - b));
    }
}

#[tokio::test]
async fn deadlines_travel_with_the_request_when_both_ends_opt_in() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use rpc_core::Context;
    use rpc_middleware::deadline::DeadlineLayer;

    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    let router = Router::new()
        .route("remaining_ms", |ctx: Context| async move {
            ctx.remaining().map(|d| d.as_millis() as u64)
        })
        .route("slow", move || {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                done.store(true, Ordering::SeqCst);
            }
        });
    let service = tower::ServiceBuilder::new()
        .layer(DeadlineLayer::new())
        .service(router);
    let server = tcp::Builder::new()
        .serve(service)
        .bind("127.0.0.1:0", JsonRpcCodec::new().with_deadlines())
        .await
        .unwrap();
    let client = tcp::Builder::new()
        .client(server.local_addr(), JsonRpcCodec::new().with_deadlines())
        .with_timeout(Duration::from_millis(300));

    // The handler sees the caller's deadline.
    let left: Option<u64> = client.call("remaining_ms", ()).await.unwrap();
    let left = left.expect("the server knows the deadline");
    assert!(left > 100 && left <= 300, "{left} ms left");

    // The server gives up on its own when the deadline passes, and the handler is cancelled.
    let start = std::time::Instant::now();
    let err = client.call::<()>("slow", ()).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler ran past its deadline"
    );

    // A strict server (the default) refuses the extension member.
    let strict = tcp::Builder::new()
        .serve(spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let mut c = Conn(TcpStream::connect(strict.local_addr()).await.unwrap());
    let r = c
        .exchange(r#"{"jsonrpc": "2.0", "method": "get_data", "id": 1, "timeout_ms": 100}"#)
        .await;
    assert_eq!(error_code(&r), -32600);
}
