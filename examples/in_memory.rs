//! A router served and called over a `tokio::io::duplex` pair: no socket, the same handlers,
//! codec and client as over TCP. Both ends serve, so the server calls the client back too.
//!
//! `cargo run --example in_memory`

use std::time::Duration;

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_core::{Context, Peer, Router, ServerError};
use rpc_transports::stream::{self, Framing, Io};

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Asks the caller for its name, over the same pipe.
async fn greet(ctx: Context) -> Result<String, ServerError> {
    let caller = ctx
        .caller()
        .ok_or_else(|| ServerError::internal("no way back to the caller"))?;
    let name: String = caller
        .call("name", ())
        // A failed call becomes an error that tells the peer nothing internal (`From<Error>`).
        .await?;
    Ok(format!(
        "hello {name}, from {}",
        ctx.peer().map(|p| p.to_string()).unwrap_or_default()
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One pipe, two ends; 64 KiB in flight each way.
    let (server_end, client_end) = tokio::io::duplex(64 * 1024);

    let server = stream::builder()
        .framing(Framing::Newline)
        .serve(Router::new().route("add", add).route("greet", greet))
        .start(
            Io::new(server_end).with_peer(Peer::Stream("in-memory client".into())),
            JsonRpcCodec::new(),
        );
    let connection = stream::builder()
        .framing(Framing::Newline)
        .serve(Router::new().route("name", || async { "Ada".to_owned() }))
        .start(Io::new(client_end), JsonRpcCodec::new());

    let client = connection.client().with_timeout(Duration::from_secs(2));
    let sum: i64 = client.call("add", (2, 40)).await?;
    println!("add(2, 40) -> {sum}");
    let greeting: String = client.call("greet", ()).await?;
    println!("greet() -> {greeting}");
    match client.call::<i64>("add", ("two", 40)).await {
        Ok(n) => println!("add(\"two\", 40) -> {n} (unexpected)"),
        Err(e) => println!("add(\"two\", 40) -> error: {e}"),
    }

    // Graceful: the server answers what it accepted, then closes its end; the client sees it.
    let clean = server.shutdown(Duration::from_secs(1)).await;
    connection.closed().await;
    println!(
        "server shut down cleanly: {clean}; client connection closed: {}",
        connection.is_closed()
    );
    Ok(())
}
