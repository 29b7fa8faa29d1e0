//! One service, declared once with `#[rpc_stack::service]`, served over UDP, TCP, a Unix socket
//! and basic-socket-rpc's protocol at once, and called through its generated client on each.
//!
//! Run with `cargo run --example typed_service`; it prints each call and exits.

use std::time::Duration;

use rpc_stack::codecs::jsonrpc::JsonRpcCodec;
use rpc_stack::codecs::msgpack::RpcudpCodec;
use rpc_stack::transports::{raw, tcp, udp, unix};
use rpc_stack::{Context, ServerError};

/// A calculator, served everywhere at once.
#[rpc_stack::service]
pub trait Calculator {
    /// Greets the caller by its address.
    #[rpc(id = 0)]
    async fn sayhi(&self, ctx: Context, name: String) -> String;
    /// `a + b`, refused when it does not fit.
    #[rpc(id = 1)]
    async fn add(&self, a: u32, b: u32) -> Result<u32, ServerError>;
}

#[derive(Clone)]
struct Calc;

impl Calculator for Calc {
    async fn sayhi(&self, ctx: Context, name: String) -> String {
        match ctx.peer() {
            Some(peer) => format!("Hello {name}, from {peer}"),
            None => format!("Hello {name}"),
        }
    }

    async fn add(&self, a: u32, b: u32) -> Result<u32, ServerError> {
        a.checked_add(b)
            .ok_or_else(|| ServerError::invalid_params("the sum does not fit in a u32"))
    }
}

/// Both calls through `calc`, printed under `label`.
async fn show<S>(label: &str, calc: CalculatorClient<S>) -> Result<(), rpc_stack::Error>
where
    S: rpc_stack::Service<rpc_stack::Request, Response = rpc_stack::Payload>
        + Clone
        + Send
        + 'static,
    S::Error: Into<rpc_stack::BoxError>,
    S::Future: Send,
{
    let hi = calc.sayhi("Ada".into()).await?;
    let sum = calc.add(2, 40).await?;
    let too_big = calc.add(u32::MAX, 1).await.unwrap_err();
    println!("{label:>5}: sayhi -> {hi:?}; add(2, 40) -> {sum}; add(MAX, 1) -> {too_big}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Calc.into_router();

    // One router, four listeners.
    let over_udp = udp::Builder::new()
        .serve(router.clone())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await?;
    let over_tcp = tcp::Builder::new()
        .serve(router.clone())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await?;
    let path = std::env::temp_dir().join(format!("typed-service-{}.sock", std::process::id()));
    let over_unix = unix::Builder::new()
        .serve(router.clone())
        .bind(&path, RpcudpCodec::new())
        .await?;
    let over_bsr = raw::Builder::new()
        .serve(router)
        .bind_tcp("127.0.0.1:0")
        .await?;

    // The generated client over each: only the line that makes the `Client` differs.
    let me = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
    show(
        "udp",
        CalculatorClient::new(me.client(over_udp.local_addr())),
    )
    .await?;
    let client = tcp::Builder::new().client(over_tcp.local_addr(), JsonRpcCodec::new());
    show("tcp", CalculatorClient::new(client)).await?;
    let client = unix::Builder::new().client(&path, RpcudpCodec::new());
    show("unix", CalculatorClient::new(client)).await?;
    let client = raw::Builder::new().client_tcp(over_bsr.local_addr());
    show("bsr", CalculatorClient::new(client)).await?;

    let grace = Duration::from_secs(1);
    drop((over_udp, over_tcp, over_unix));
    over_bsr.shutdown(grace).await;
    Ok(())
}
