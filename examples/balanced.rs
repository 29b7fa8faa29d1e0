//! One client over three servers under load; one server stops and starts again while it runs.
//!
//! The client is rpc_balance's: tower's p2c over peak EWMA, an endpoint whose connection fails
//! ejected for a backoff, and the retry policy on top, so that the calls of the idempotent
//! `work` method lost with the stopped server are retried on the others. The servers run on
//! runtimes of their own, so that stopping one drops its sockets mid-call, as a crash would.
//!
//! ```sh
//! cargo run --example balanced
//! ```
//!
//! It prints each phase's calls per server, and exits 0 if no call failed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_balance::discover::Discovery;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Client, Router};
use rpc_middleware::retry::RetryPolicy;
use rpc_transports::tcp;

/// A server on a runtime of its own.
struct Server {
    runtime: tokio::runtime::Runtime,
    _server: tcp::Server,
}

impl Server {
    /// Serves `work` at `addr` (port 0: any), counting its calls.
    fn start(addr: SocketAddr, calls: Arc<AtomicU64>) -> std::io::Result<(Server, SocketAddr)> {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let router = Router::new().route("work", move |n: u64| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::Relaxed);
                    n * 2
                }
            });
            let server = runtime.block_on(
                tcp::Builder::new()
                    .serve(router)
                    .bind(addr, RpcudpCodec::new()),
            )?;
            let addr = server.local_addr();
            Ok((
                Server {
                    runtime,
                    _server: server,
                },
                addr,
            ))
        })
        .join()
        .expect("the server thread")
    }

    /// Stops at once: every task and socket dropped, calls in flight cut off.
    fn stop(self) {
        self.runtime.shutdown_background();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for c in &calls {
        let (server, addr) = Server::start("127.0.0.1:0".parse()?, c.clone())?;
        servers.push(Some(server));
        addrs.push(addr);
    }

    let balanced = rpc_balance::builder(|addr: &SocketAddr| {
        tcp::Builder::new().channel(*addr, RpcudpCodec::new())
    })
    .build(Discovery::fixed(addrs.clone()));
    let client = Client::new(balanced, &rpc_core::msgpack::MsgPack)
        .layer(tower::retry::RetryLayer::new(
            RetryPolicy::new().idempotent(["work"]),
        ))
        .with_timeout(Duration::from_secs(2));

    // 32 calls in flight until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..32 {
        let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match client.call::<u64>("work", (n,)).await {
                    Ok(r) if r == n * 2 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let phase = |name: &str, before: &[u64]| -> Vec<u64> {
        let now: Vec<u64> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let took: Vec<String> = now
            .iter()
            .zip(before)
            .enumerate()
            .map(|(i, (n, b))| format!("{}: {}", addrs[i], n - b))
            .collect();
        println!("{name:<32} {}", took.join("  "));
        now
    };
    let zero = vec![0; 3];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = phase("three servers", &zero);

    servers[1].take().expect("running").stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = phase(&format!("{} stopped", addrs[1]), &mark);

    let (server, _) = Server::start(addrs[1], calls[1].clone())?;
    servers[1] = Some(server);
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase(&format!("{} started again", addrs[1]), &mark);

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await?;
    }
    for server in servers.into_iter().flatten() {
        server.stop();
    }
    let failed = failed.load(Ordering::Relaxed);
    println!("failed calls: {failed}");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
