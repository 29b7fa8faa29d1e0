//! The quickstart: serve a router over UDP with msgpack and call it, on loopback.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Context, Router, ServerError};
use rpc_transports::udp::{Builder, Endpoint};
use serde::{Deserialize, Serialize};

/// Handlers are plain async functions with typed arguments.
async fn sayhi(ctx: Context, name: String) -> String {
    let peer = ctx.peer_addr().expect("UDP requests have a peer address");
    format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[derive(Debug, Serialize, Deserialize)]
struct Stats {
    count: usize,
    mean: f64,
}

/// Failing is returning an error; the caller gets it as a response, the server keeps serving.
async fn stats(values: Vec<f64>) -> Result<Stats, ServerError> {
    if values.is_empty() {
        return Err(ServerError::invalid_params("no values"));
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    Ok(Stats {
        count: values.len(),
        mean,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new()
        .route("sayhi", sayhi)
        .route("add", add)
        .route("stats", stats);

    // Serve on an ephemeral loopback port. For TCP or a Unix socket, only this line changes.
    let server = Builder::new()
        .serve(router)
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await?;
    println!("serving on udp://{}", server.local_addr());

    // A client is a tower::Service too; here with typed calls on top.
    let endpoint = Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
    let client = endpoint
        .client(server.local_addr())
        .with_timeout(Duration::from_secs(2));

    let greeting: String = client.call("sayhi", ("Snake Plissken",)).await?;
    println!("sayhi(\"Snake Plissken\") -> {greeting:?}");

    let sum: i64 = client.call("add", (2, 40)).await?;
    println!("add(2, 40) -> {sum}");

    // 100 calls in flight at once on one socket, matched by id.
    let calls = (0..100).map(|i| client.call::<i64>("add", (i, i)));
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .enumerate()
        .all(|(i, r)| matches!(r, Ok(v) if *v == 2 * i as i64));
    println!("100 concurrent add calls -> all correct: {ok}");

    let s: Stats = client.call("stats", (vec![1.0, 2.0, 6.0],)).await?;
    println!("stats([1, 2, 6]) -> {s:?}");

    let err = client
        .call::<Stats>("stats", (Vec::<f64>::new(),))
        .await
        .unwrap_err();
    println!("stats([]) -> error: {err}");

    let err = client.call::<()>("nope", ()).await.unwrap_err();
    println!("nope() -> error: {err}");

    let err = client.call::<i64>("add", ("two", 2)).await.unwrap_err();
    println!("add(\"two\", 2) -> error: {err}");

    if !ok {
        return Err("concurrent calls returned wrong results".into());
    }
    Ok(())
}
