//! basic-socket-rpc's greet client, in rpc-stack: calls the four greet commands and checks them.
//!
//! Run with `cargo run --release --example greet_client -- [--address 127.0.0.1] [-p 11599]`.
//! Exits 0 only if every answer is right.

use std::process::ExitCode;

use clap::Parser;
use rpc_transports::raw;

#[derive(Parser)]
#[command(about = "Call basic-socket-rpc's greet commands")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// The server's port.
    #[arg(short, long, default_value_t = 11599)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = Args::parse();
    let addr = tokio::net::lookup_host((args.address.as_str(), args.port))
        .await?
        .next()
        .ok_or("the address resolves to nothing")?;
    let client = raw::Builder::new().client_tcp(addr);

    let hello: String = client.call(0u16, ("Robert",)).await?;
    println!("hello(\"Robert\") -> {hello:?}");
    let goodbye: String = client.call(1u16, ("Robert",)).await?;
    println!("goodbye(\"Robert\") -> {goodbye:?}");
    let sum: u32 = client.call(2u16, (1000u32, 2050u32)).await?;
    println!("add_2_words(1000, 2050) -> {sum}");
    let () = client.call(3u16, ()).await?;
    println!("func_no_args() -> ()");

    let right = hello == "hello Robert" && goodbye == "goodbye Robert" && sum == 3050;
    println!(
        "{}",
        if right {
            "all answers right"
        } else {
            "WRONG ANSWERS"
        }
    );
    Ok(if right {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
