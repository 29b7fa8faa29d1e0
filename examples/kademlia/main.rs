//! A Kademlia node on rpc-stack that joins a network of Python kademlia 2.2.3 nodes: the same
//! RPCs over rpcudp's datagrams (`ping`, `store`, `find_node`, `find_value`), 160-bit SHA-1 ids
//! and keys, k-buckets of 20, lookups 3 at a time, values on the 20 closest nodes.
//!
//! ```sh
//! cargo run --example kademlia -- --bind 127.0.0.1:8468 serve
//! cargo run --example kademlia -- --bind 127.0.0.1:0 --bootstrap 127.0.0.1:8468 set greeting '"hello"'
//! cargo run --example kademlia -- --bind 127.0.0.1:0 --bootstrap 127.0.0.1:8468 get greeting
//! ```
//!
//! `set KEY VALUE` stores VALUE (JSON: a string, a number or a boolean) under the SHA-1 digest
//! of KEY, as Python's `Server.set` does, and exits 0 if a node took it. `get KEY` prints the
//! value as JSON (bytes as an array of numbers) and exits 0, or exits 1 when no node has it.
//! `serve` joins the network, prints `listening on ADDR` and `joined with N contacts`, and serves
//! until SIGINT or SIGTERM; meanwhile it reads `set KEY VALUE` and `get KEY` lines on its
//! standard input and answers each with one line (`true`/`false`, the value's JSON, or `null`).
//!
//! Calls to other nodes time out after `--timeout` (5 s, as rpcudp's) and are not retried: a
//! contact that does not answer is dropped from its bucket, and a lookup goes on with the
//! others, as Python kademlia does. `--loss P` drops a share P of the datagrams this node sends
//! and receives, to see lookups work through loss.

mod node;
mod routing;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rmpv::Value;

use crate::node::Node;

#[derive(Parser)]
#[command(
    name = "kademlia",
    about = "A Kademlia node that speaks Python kademlia's RPCs"
)]
struct Args {
    /// Where this node listens (port 0: any).
    #[arg(long)]
    bind: SocketAddr,
    /// A node to join the network through; repeat for more.
    #[arg(long)]
    bootstrap: Vec<SocketAddr>,
    /// How long a call to another node waits for its answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The share of datagrams (0 to 1) dropped each way, on purpose.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join the network and serve until SIGINT or SIGTERM.
    Serve,
    /// Store VALUE (JSON: a string, number or boolean) under KEY.
    Set {
        key: String,
        #[arg(allow_negative_numbers = true)]
        value: String,
    },
    /// Print the value under KEY as JSON; exit 1 if no node has it.
    Get { key: String },
}

/// A JSON string, number or boolean as the msgpack value Python would store.
fn from_json(text: &str) -> Result<Value, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("VALUE {text:?} is not JSON: {e}"))?;
    match json {
        serde_json::Value::String(s) => Ok(Value::from(s)),
        serde_json::Value::Bool(b) => Ok(Value::from(b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ok(Value::from(i)),
            (None, Some(u), _) => Ok(Value::from(u)),
            (None, None, Some(f)) => Ok(Value::from(f)),
            _ => Err(format!("{n} is no number a node stores")),
        },
        _ => Err(format!(
            "VALUE {text:?}: a node stores strings, numbers and booleans"
        )),
    }
}

/// The value as JSON: bytes as an array of numbers.
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Boolean(b) => (*b).into(),
        Value::Integer(i) => i
            .as_i64()
            .map(Into::into)
            .or_else(|| i.as_u64().map(Into::into))
            .unwrap_or(serde_json::Value::Null),
        Value::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(serde_json::Value::Null, Into::into)
        }
        Value::F64(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::String(s) => s.as_str().unwrap_or_default().into(),
        Value::Binary(b) => b.iter().map(|&x| serde_json::Value::from(x)).collect(),
        _ => serde_json::Value::Null,
    }
}

/// Answers `set KEY VALUE` and `get KEY` lines on standard input, until it ends.
async fn commands(node: Node) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        let answer = match words.as_slice() {
            ["set", key, value] => match from_json(value) {
                Ok(v) => node.set(key, v).await.to_string(),
                Err(e) => serde_json::json!({ "error": e }).to_string(),
            },
            ["get", key] => node
                .get(key)
                .await
                .map_or(serde_json::Value::Null, |v| to_json(&v))
                .to_string(),
            _ => serde_json::json!({ "error": format!("unknown command {line:?}") }).to_string(),
        };
        let _ = out.write_all(format!("{answer}\n").as_bytes()).await;
        let _ = out.flush().await;
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    if !(0.0..1.0).contains(&args.loss) {
        return Err("--loss is a share from 0 to below 1".into());
    }
    let value = match &args.command {
        Command::Set { value, .. } => Some(from_json(value)?),
        _ => None,
    };
    let node = Node::start(args.bind, args.timeout, args.loss)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    match args.command {
        Command::Serve => {
            println!("listening on {}", node.local_addr());
            let contacts = node.bootstrap(&args.bootstrap).await;
            println!("joined with {contacts} contacts");
            tokio::spawn(commands(node.clone()));
            shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Set { key, .. } => {
            node.bootstrap(&args.bootstrap).await;
            let stored = node.set(&key, value.expect("parsed above")).await;
            println!("{stored}");
            Ok(if stored {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Get { key } => {
            node.bootstrap(&args.bootstrap).await;
            match node.get(&key).await {
                Some(v) => {
                    println!("{}", to_json(&v));
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("kademlia: no node has {key:?}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kademlia: {e}");
            ExitCode::from(2)
        }
    }
}
