//! Bi-directional JSON-RPC over one TCP connection, as rpcbd's count and callback examples.
//!
//! Run with `cargo run --release --example jsonrpc_bidirectional`.
//!
//! While serving `count(n)`, the server sends `progress` notifications back to the caller, and
//! `ask(question)` calls `answer` on the client, over the same connection. The client serves
//! those with a router of its own.

use std::sync::Arc;
use std::time::Duration;

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_core::{Context, Router, ServerError};
use rpc_transports::tcp;
use tokio::sync::Mutex;

async fn count(ctx: Context, n: u32) -> Result<u32, ServerError> {
    let caller = ctx
        .caller()
        .ok_or_else(|| ServerError::internal("no way back to the caller"))?;
    for i in 1..=n {
        caller
            .notify("progress", (format!("Counted to {i}"),))
            // A failed call becomes an error that tells the peer nothing internal (`From<Error>`).
            .await?;
    }
    Ok(n)
}

async fn ask(ctx: Context, question: String) -> Result<String, ServerError> {
    let caller = ctx
        .caller()
        .ok_or_else(|| ServerError::internal("no way back to the caller"))?;
    let answer: String = caller.call("answer", (question.clone(),)).await?;
    Ok(format!("the client says {question:?} -> {answer:?}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = tcp::Builder::new()
        .serve(Router::new().route("count", count).route("ask", ask))
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await?;
    println!("server on tcp://{}", server.local_addr());

    // The client serves too: progress notifications and the server's questions.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let client_router = Router::new()
        .route("progress", move |message: String| {
            let log = log.clone();
            async move {
                println!("  progress: {message}");
                log.lock().await.push(message);
            }
        })
        .route("answer", |question: String| async move {
            question.len().to_string()
        });
    let client = tcp::Builder::new()
        .serve(client_router)
        .client(server.local_addr(), JsonRpcCodec::new())
        .with_timeout(Duration::from_secs(5));

    let n: u32 = client.call("count", (3,)).await?;
    println!("count(3) -> {n}");
    let reply: String = client.call("ask", ("how long is this",)).await?;
    println!("ask -> {reply}");

    // Notifications are not answered, so give the last one a moment to be handled.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = seen.lock().await.clone();
    if seen != ["Counted to 1", "Counted to 2", "Counted to 3"] {
        return Err(format!("unexpected progress: {seen:?}").into());
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
