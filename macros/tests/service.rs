//! Services declared with `#[rpc_stack::service]`, served and called through their generated
//! routers and clients over every transport and codec.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_stack::codecs::jsonrpc::JsonRpcCodec;
use rpc_stack::codecs::msgpack::RpcudpCodec;
use rpc_stack::transports::{memory, raw, tcp, udp, unix};
use rpc_stack::{Client, Codec, Context, Router, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[rpc_stack::service]
trait Greeter {
    /// Greets whoever calls.
    async fn sayhi(&self, ctx: Context, name: String) -> String;
    async fn divide(&self, a: f64, b: f64) -> Result<f64, ServerError>;
    #[rpc(name = "get_data")]
    async fn data(&self) -> (String, u32);
    #[rpc(id = 2)]
    async fn add_2_words(&self, a: u32, b: u32) -> u32;
    #[rpc(notification)]
    async fn log(&self, line: String);
}

#[rpc_stack::service(namespace = "counter")]
trait Counter {
    async fn add(&self, n: i64) -> i64;
}

#[derive(Clone, Default)]
struct Hello {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Greeter for Hello {
    async fn sayhi(&self, ctx: Context, name: String) -> String {
        let from = if ctx.peer().is_some() {
            "a peer"
        } else {
            "nowhere"
        };
        format!("Hello {name} from {from}")
    }
    async fn divide(&self, a: f64, b: f64) -> Result<f64, ServerError> {
        if b == 0.0 {
            return Err(ServerError::invalid_params("division by zero"));
        }
        Ok(a / b)
    }
    async fn data(&self) -> (String, u32) {
        ("hello".into(), 5)
    }
    async fn add_2_words(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    async fn log(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }
}

#[derive(Clone, Default)]
struct Total(Arc<Mutex<i64>>);

impl Counter for Total {
    async fn add(&self, n: i64) -> i64 {
        let mut t = self.0.lock().unwrap();
        *t += n;
        *t
    }
}

/// Both services on one router.
fn router(hello: &Hello, total: &Total) -> Router {
    hello
        .clone()
        .into_router()
        .merge(total.clone().into_router())
}

/// Every RPC of both services through `client`, which reaches a server of `router`.
async fn exercise<S>(client: Client<S>, hello: &Hello, total: &Total, what: &str)
where
    S: rpc_stack::Service<rpc_stack::Request, Response = rpc_stack::Payload>
        + Clone
        + Send
        + 'static,
    S::Error: Into<rpc_stack::BoxError>,
    S::Future: Send,
{
    let greeter = GreeterClient::new(client.clone());
    let counter = CounterClient::new(client);
    assert_eq!(
        greeter.sayhi("Ada".into()).await.unwrap(),
        "Hello Ada from a peer",
        "{what}"
    );
    assert_eq!(greeter.divide(1.0, 4.0).await.unwrap(), 0.25, "{what}");
    let refused = greeter.divide(1.0, 0.0).await.unwrap_err();
    assert!(
        refused.to_string().contains("division by zero"),
        "{what}: {refused}"
    );
    assert_eq!(greeter.data().await.unwrap(), ("hello".into(), 5), "{what}");
    assert_eq!(greeter.add_2_words(40, 2).await.unwrap(), 42, "{what}");
    let before = *total.0.lock().unwrap();
    assert_eq!(counter.add(3).await.unwrap(), before + 3, "{what}");
    greeter.log(format!("over {what}")).await.unwrap();
    let t = std::time::Instant::now();
    while !hello
        .lines
        .lock()
        .unwrap()
        .contains(&format!("over {what}"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: the notification never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn over_udp_tcp_unix_and_memory<C: Codec>(codec: C, name: &str) {
    let (hello, total) = (Hello::default(), Total::default());
    let udp = udp::Builder::new()
        .serve(router(&hello, &total))
        .bind("127.0.0.1:0", codec.clone())
        .await
        .unwrap();
    let me = udp::Endpoint::bind("127.0.0.1:0", codec.clone())
        .await
        .unwrap();
    exercise(
        me.client(udp.local_addr()),
        &hello,
        &total,
        &format!("udp {name}"),
    )
    .await;

    let tcp = tcp::Builder::new()
        .serve(router(&hello, &total))
        .bind("127.0.0.1:0", codec.clone())
        .await
        .unwrap();
    let client = tcp::Builder::new().client(tcp.local_addr(), codec.clone());
    exercise(client, &hello, &total, &format!("tcp {name}")).await;

    let path = std::env::temp_dir().join(format!("rpc-service-{}-{name}.sock", std::process::id()));
    let unix = unix::Builder::new()
        .serve(router(&hello, &total))
        .bind(&path, codec.clone())
        .await
        .unwrap();
    let client = unix::Builder::new().client(&path, codec.clone());
    exercise(client, &hello, &total, &format!("unix {name}")).await;
    drop(unix);

    let memory = memory::Builder::new()
        .serve(router(&hello, &total))
        .bind(codec.clone());
    let client = memory::Builder::new().client(memory.local_addr(), codec);
    exercise(client, &hello, &total, &format!("memory {name}")).await;
}

#[tokio::test]
async fn generated_clients_over_every_transport_with_msgpack() {
    over_udp_tcp_unix_and_memory(RpcudpCodec::new(), "msgpack").await;
}

#[tokio::test]
async fn generated_clients_over_every_transport_with_json_rpc() {
    over_udp_tcp_unix_and_memory(JsonRpcCodec::new(), "jsonrpc").await;
}

#[tokio::test]
async fn json_rpc_callers_may_name_the_parameters() {
    let (hello, total) = (Hello::default(), Total::default());
    let server = tcp::Builder::new()
        .serve(router(&hello, &total))
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let request = br#"{"jsonrpc":"2.0","method":"divide","params":{"b":4,"a":1},"id":1}"#;
    s.write_all(&(request.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, br#"{"jsonrpc":"2.0","result":0.25,"id":1}"#);
}

#[tokio::test]
async fn basic_socket_rpc_calls_by_command_id() {
    let (hello, total) = (Hello::default(), Total::default());
    let server = raw::Builder::new()
        .serve(router(&hello, &total))
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let greeter = GreeterClient::new(raw::Builder::new().client_tcp(server.local_addr()));
    assert_eq!(greeter.add_2_words(1000, 24).await.unwrap(), 1024);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn plain_handlers_take_their_routers_state() {
    use rpc_stack::handler::State;
    async fn hit(State(total): State<Total>, by: i64) -> i64 {
        let mut t = total.0.lock().unwrap();
        *t += by;
        *t
    }
    async fn greet(State(greeting): State<&'static str>, name: String) -> String {
        format!("{greeting} {name}")
    }
    let total = Total::default();
    let router = Router::new()
        .route("hit", hit)
        .with_state(total.clone())
        .merge(Router::new().route("greet", greet).with_state("Hello"));
    let server = memory::Builder::new()
        .serve(router)
        .bind(RpcudpCodec::new());
    let client = memory::Builder::new().client(server.local_addr(), RpcudpCodec::new());
    assert_eq!(client.call::<i64>("hit", (2,)).await.unwrap(), 2);
    assert_eq!(client.call::<i64>("hit", (3,)).await.unwrap(), 5);
    assert_eq!(*total.0.lock().unwrap(), 5);
    assert_eq!(
        client.call::<String>("greet", ("Ada",)).await.unwrap(),
        "Hello Ada"
    );
    // A state its router was not given: an internal error that names no type to the peer.
    let bare = memory::Builder::new()
        .serve(Router::new().route("hit", hit))
        .bind(RpcudpCodec::new());
    let client = memory::Builder::new().client(bare.local_addr(), RpcudpCodec::new());
    let e = client.call::<i64>("hit", (1,)).await.unwrap_err();
    assert!(e.to_string().contains("not configured"), "{e}");
    assert!(!e.to_string().contains("Total"), "{e}");
}

#[tokio::test]
async fn a_result_that_does_not_decode_says_of_which_method() {
    let (hello, total) = (Hello::default(), Total::default());
    let server = memory::Builder::new()
        .serve(router(&hello, &total))
        .bind(RpcudpCodec::new());
    let client = memory::Builder::new().client(server.local_addr(), RpcudpCodec::new());
    let e = client
        .call::<String>("counter.add", (1,))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the result of counter.add"), "{e}");
}
