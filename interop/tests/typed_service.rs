//! Services declared with `#[rpc_stack::service]`, served to the real Python peers: rpcudp 5.0.1
//! reads bytes results as `bytes` (msgpack bin), and basic-socket-rpc 0.6.1's client calls a
//! generated router by command id.

use rpc_stack::codecs::msgpack::RpcudpCodec;
use rpc_stack::transports::{raw, udp};

/// A Kademlia-like node's byte-typed methods.
#[rpc_stack::service]
trait Node {
    async fn node_id(&self) -> [u8; 20];
    async fn reverse(&self, data: Vec<u8>) -> Vec<u8>;
    async fn find(&self, key: [u8; 20]) -> Result<Vec<u8>, rpc_stack::ServerError>;
    async fn echo(
        &self,
        value: rpc_stack::codecs::msgpack::Value,
    ) -> rpc_stack::codecs::msgpack::Value;
}

#[derive(Clone)]
struct Me;

impl Node for Me {
    async fn node_id(&self) -> [u8; 20] {
        [7; 20]
    }
    async fn reverse(&self, mut data: Vec<u8>) -> Vec<u8> {
        data.reverse();
        data
    }
    async fn find(&self, key: [u8; 20]) -> Result<Vec<u8>, rpc_stack::ServerError> {
        Ok(key[..3].to_vec())
    }
    async fn echo(
        &self,
        value: rpc_stack::codecs::msgpack::Value,
    ) -> rpc_stack::codecs::msgpack::Value {
        value
    }
}

/// basic-socket-rpc's greet commands, by id.
#[rpc_stack::service]
trait Greet {
    #[rpc(id = 0)]
    async fn hello(&self, name: String) -> String;
    #[rpc(id = 1)]
    async fn goodbye(&self, name: String) -> String;
    #[rpc(id = 2)]
    async fn add_2_words(&self, a: u32, b: u32) -> u32;
    #[rpc(id = 3)]
    async fn func_no_args(&self);
}

impl Greet for Me {
    async fn hello(&self, name: String) -> String {
        format!("hello {name}")
    }
    async fn goodbye(&self, name: String) -> String {
        format!("goodbye {name}")
    }
    async fn add_2_words(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    async fn func_no_args(&self) {}
}

/// `python rpcudp_peer.py call ADDR METHOD ARGS...`: the result's Python type and repr.
async fn python_calls(addr: &str, method: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(interop::python())
            .arg(interop::py_dir().join("rpcudp_peer.py"))
            .args(["call", addr, method])
            .args(args)
            .output(),
    )
    .await
    .expect("the Python client finished within 30 s")
    .expect("the Python client ran");
    assert!(
        out.status.success(),
        "{method}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rpcudp_reads_bytes_results_as_bytes() {
    // A type serving several services names the one it serves.
    let server = udp::Builder::new()
        .serve(Node::into_router(Me))
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    assert_eq!(
        python_calls(&addr, "node_id", &[]).await,
        format!("bytes b'{}'", "\\x07".repeat(20))
    );
    assert_eq!(
        python_calls(&addr, "reverse", &["b'abc'"]).await,
        "bytes b'cba'"
    );
    assert_eq!(
        python_calls(&addr, "find", &[&format!("b'{}'", "x".repeat(20))]).await,
        "bytes b'xxx'"
    );
    // A dynamic value keeps str and bin apart, both ways.
    assert_eq!(python_calls(&addr, "echo", &["b'ab'"]).await, "bytes b'ab'");
    assert_eq!(python_calls(&addr, "echo", &["'ab'"]).await, "str 'ab'");
    assert_eq!(
        python_calls(&addr, "echo", &["[1, b'x', 'y', {'k': 2.5}]"]).await,
        "list [1, b'x', 'y', {'k': 2.5}]"
    );
    // And the generated client reads them back as Rust bytes.
    let me = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new())
        .await
        .unwrap();
    let node = NodeClient::new(me.client(server.local_addr()));
    assert_eq!(node.node_id().await.unwrap(), [7; 20]);
    assert_eq!(node.reverse(b"xyz".to_vec()).await.unwrap(), b"zyx");
    assert_eq!(node.find([1; 20]).await.unwrap(), [1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_basic_socket_rpc_calls_a_generated_router_by_command_id() {
    let server = raw::Builder::new()
        .serve(Greet::into_router(Me))
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    interop::python_client_passes("bsr_peer.py", &server.local_addr().to_string()).await;
    let greet = GreetClient::new(raw::Builder::new().client_tcp(server.local_addr()));
    assert_eq!(greet.hello("Robert".into()).await.unwrap(), "hello Robert");
}
