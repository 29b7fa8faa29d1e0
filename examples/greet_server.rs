//! basic-socket-rpc's greet server, in rpc-stack: four commands by id over TCP.
//!
//! Run with `cargo run --release --example greet_server -- [--address 127.0.0.1] [-p 11599]`.
//! basic-socket-rpc's Python greet client, or `greet_client`, can call it.

use clap::Parser;
use rpc_core::{Route, Router};
use rpc_transports::raw;

#[derive(Parser)]
#[command(about = "Serve basic-socket-rpc's greet commands")]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// The port to listen on.
    #[arg(short, long, default_value_t = 11599)]
    port: u16,
    /// One client at a time, the others wait (basic-socket-rpc's exclusive server).
    #[arg(long)]
    exclusive: bool,
}

async fn hello(name: String) -> String {
    format!("hello {name}")
}

async fn goodbye(name: String) -> String {
    format!("goodbye {name}")
}

async fn add_2_words(a: u32, b: u32) -> u32 {
    a.wrapping_add(b)
}

async fn func_no_args() {}

/// The greet commands, by id and by name.
fn greet() -> Router {
    Router::new()
        .add_route(Route::new(hello).name("hello").command(0))
        .add_route(Route::new(goodbye).name("goodbye").command(1))
        .add_route(Route::new(add_2_words).name("add_2_words").command(2))
        .add_route(Route::new(func_no_args).name("func_no_args").command(3))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut builder = raw::Builder::new().serve(greet());
    if args.exclusive {
        builder = builder.exclusive();
    }
    let server = builder.bind_tcp((args.address.as_str(), args.port)).await?;
    println!("listening on tcp://{}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
