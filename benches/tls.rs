//! TLS handshakes per second against an rpc-stack TLS server on loopback: full handshakes (each
//! connection with a client configuration of its own, so nothing to resume) and resumed ones
//! (one configuration, whose session cache resumes each connection after the first). Each
//! connection is opened, makes one call (which also takes in the server's session tickets) and
//! is closed, one after another, on one runtime thread for the server and one for the client.
//! The same over plain TCP (a connection, one call, closed) is measured in the same run as the
//! baseline.
//!
//! Run with `cargo bench -p rpc-benches --bench tls`. Bounded: `RPC_BENCH_SECS` (default 2) per
//! kind and at most 3 000 connections each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::Router;
use rpc_transports::{tcp, tls};

/// At most this many connections of each kind: each leaves a socket in TIME_WAIT on the client
/// side, and a loop of connections would otherwise run out of ephemeral ports.
const MAX_CONNECTIONS: u32 = 3_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A CA and the server's configuration for `localhost`; the CA's roots.
fn pki() -> (Arc<tls::rustls::ServerConfig>, tls::Roots) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("a key"))
        .expect("a CA");
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("signed");
    let identity = tls::Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .expect("an identity");
    let roots = tls::Roots::from_pem(ca.pem().as_bytes()).expect("roots");
    (tls::server_config(identity, None).expect("a config"), roots)
}

/// Connections per second for `secs`: each made by `connect` and dropped.
async fn rate<F, Fut>(secs: Duration, mut connect: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < secs && n < MAX_CONNECTIONS {
        connect().await;
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn main() {
    let secs = Duration::from_secs_f64(
        std::env::var("RPC_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let (server_config, roots) = pki();
    let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let ping = || Router::new().route("ping", || async {});
            let tls_server = tls::Builder::new()
                .serve(ping())
                .bind("127.0.0.1:0", server_config, RpcudpCodec::new())
                .await
                .expect("bound");
            let tcp_server = tcp::Builder::new()
                .serve(ping())
                .bind("127.0.0.1:0", RpcudpCodec::new())
                .await
                .expect("bound");
            tx.send((tls_server.local_addr(), tcp_server.local_addr()))
                .expect("the bench waits");
            // Served until the process exits.
            std::future::pending::<()>().await;
        })
    });
    let (tls_addr, tcp_addr) = rx.recv().expect("the servers started");
    let rt = runtime();
    let (tcp, full, resumed) = rt.block_on(async {
        let tcp = rate(secs, || async {
            let client = tcp::Builder::new().client(tcp_addr, RpcudpCodec::new());
            let () = client.call("ping", ()).await.expect("answered");
        })
        .await;
        let full = rate(secs, || {
            // A configuration of its own: no session to resume.
            let config = tls::client_config(&roots, None).expect("a config");
            async move {
                let to = tls::Address::new(tls_addr, "localhost", config).expect("an address");
                let client = tls::Builder::new().client(to, RpcudpCodec::new());
                let () = client.call("ping", ()).await.expect("answered");
            }
        })
        .await;
        let shared = tls::client_config(&roots, None).expect("a config");
        let resumed = rate(secs, || {
            let config = shared.clone();
            async move {
                let to = tls::Address::new(tls_addr, "localhost", config).expect("an address");
                let client = tls::Builder::new().client(to, RpcudpCodec::new());
                let () = client.call("ping", ()).await.expect("answered");
            }
        })
        .await;
        (tcp, full, resumed)
    });
    println!("| connection | per second | × TCP |");
    println!("|---|---:|---:|");
    println!("| TCP, one call (baseline) | {tcp:.0} | 1.00 |");
    println!(
        "| TLS 1.3, full handshake, one call | {full:.0} | {:.2} |",
        full / tcp
    );
    println!(
        "| TLS 1.3, resumed, one call | {resumed:.0} | {:.2} |",
        resumed / tcp
    );
}
