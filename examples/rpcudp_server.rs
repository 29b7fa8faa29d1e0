//! rpcudp's README server, in rpc-stack: `sayhi(name)` over UDP with msgpack.
//!
//! Run with `cargo run --release --example rpcudp_server -- --bind 127.0.0.1:1234`.
//! Python's rpcudp client, or `rpcudp_client`, can call it.

use std::net::SocketAddr;

use clap::Parser;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Context, Router};
use rpc_transports::udp::Builder;

#[derive(Parser)]
#[command(about = "Serve rpcudp's sayhi over UDP")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1234")]
    bind: SocketAddr,
}

async fn sayhi(ctx: Context, name: String) -> String {
    let peer = ctx.peer_addr().expect("UDP requests have a peer address");
    format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let server = Builder::new()
        .serve(Router::new().route("sayhi", sayhi))
        .bind(args.bind, RpcudpCodec::new())
        .await?;
    println!("listening on udp://{}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    Ok(())
}
