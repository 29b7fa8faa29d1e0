//! One router served over UDP, TCP and a Unix socket at once, and called over each.
//!
//! Run with `cargo run --release --example transport_swap`.
//!
//! Moving a service between transports changes the line that binds (and the one that connects),
//! never a handler.

use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Context, Router};
use rpc_transports::{tcp, udp, unix};

async fn sayhi(ctx: Context, name: String) -> String {
    format!(
        "Hello {name}, caller {}",
        ctx.peer().map(|p| p.to_string()).unwrap_or_default()
    )
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new().route("sayhi", sayhi).route("add", add);
    let dir = std::env::temp_dir().join(format!("rpc-stack-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("rpc.sock");

    // The same router, three transports: only these lines differ.
    let over_udp = udp::Builder::new()
        .serve(router.clone())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await?;
    let over_tcp = tcp::Builder::new()
        .serve(router.clone())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await?;
    let over_unix = unix::Builder::new()
        .serve(router)
        .bind(&sock, RpcudpCodec::new())
        .await?;
    println!(
        "serving on udp://{}, tcp://{}, unix://{}",
        over_udp.local_addr(),
        over_tcp.local_addr(),
        sock.display()
    );

    // The same calls, three clients (boxed to one type).
    let caller = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
    let clients = [
        ("udp", caller.client(over_udp.local_addr()).boxed()),
        (
            "tcp",
            tcp::Builder::new()
                .client(over_tcp.local_addr(), RpcudpCodec::new())
                .boxed(),
        ),
        (
            "unix",
            unix::Builder::new()
                .client(&sock, RpcudpCodec::new())
                .boxed(),
        ),
    ];
    for (name, client) in &clients {
        let hi: String = client.call("sayhi", ("Ada",)).await?;
        let sum: i64 = client.call("add", (2, 40)).await?;
        println!("{name:>4}: sayhi -> {hi:?}; add(2, 40) -> {sum}");
        if sum != 42 {
            return Err(format!("{name}: wrong sum {sum}").into());
        }
    }

    over_udp.shutdown(Duration::from_secs(1)).await;
    over_tcp.shutdown(Duration::from_secs(1)).await;
    over_unix.shutdown(Duration::from_secs(1)).await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
