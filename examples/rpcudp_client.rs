//! rpcudp's README client, in rpc-stack: calls `sayhi` and prints the answer.
//!
//! Run with `cargo run --release --example rpcudp_client -- --server 127.0.0.1:1234 [--name NAME]`.
//! Prints `Success! <result>` and exits 0, or `Response not received.` and exits 1.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_transports::udp::Endpoint;

#[derive(Parser)]
#[command(about = "Call sayhi on an rpcudp server")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:1234")]
    server: SocketAddr,
    /// The name to greet.
    #[arg(long, default_value = "Snake Plissken")]
    name: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = Args::parse();
    let local: SocketAddr = if args.server.is_ipv4() {
        "127.0.0.1:0".parse()?
    } else {
        "[::1]:0".parse()?
    };
    let endpoint = Endpoint::bind(local, RpcudpCodec::new()).await?;
    let timeout = Duration::try_from_secs_f64(args.timeout).map_err(|_| {
        format!(
            "--timeout must be a number of seconds, not {}",
            args.timeout
        )
    })?;
    let client = endpoint.client(args.server).with_timeout(timeout);
    match client.call::<String>("sayhi", (args.name,)).await {
        Ok(result) => {
            println!("Success! {result}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("Response not received.");
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
