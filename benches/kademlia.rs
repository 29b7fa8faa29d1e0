//! Lookups per second of the `kademlia` example's node against a Python kademlia 2.2.3 node in
//! the same network: 12 Python nodes and one Rust node on loopback, each asked for keys no node
//! has, so that every `get` is a whole iterative lookup (find_value to the closest nodes until
//! all have answered). Both nodes are driven the same way, one command line at a time on their
//! standard input; the figure is lookups per second and CPU time per lookup of each node's
//! process (what the other nodes spend answering is the same for both).
//!
//! ```sh
//! cargo build --release -p examples --example kademlia
//! cargo bench -p rpc-benches --bench kademlia
//! ```

use std::process::Command;
use std::time::Instant;

use interop::LineNode as Node;

fn python(boot: &[String]) -> Node {
    let mut c = Command::new(interop::python());
    c.arg(interop::py_dir().join("kademlia_peer.py"))
        .arg("0")
        .args(boot);
    Node::start(c)
}

/// `lookups` gets of missing keys through `node`, each command made by `command`: lookups per
/// second and CPU µs per lookup.
fn measure(node: &mut Node, lookups: usize, command: impl Fn(usize) -> String) -> (f64, f64) {
    let cpu = node.cpu_time();
    let start = Instant::now();
    for i in 0..lookups {
        let answer = node.ask(&command(i));
        assert!(answer == "null" || answer.contains("NoneType"), "{answer}");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (node.cpu_time() - cpu).as_secs_f64();
    (lookups as f64 / secs, cpu * 1e6 / lookups as f64)
}

fn main() {
    let lookups: usize = std::env::var("RPC_BENCH_LOOKUPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut nodes = vec![python(&[])];
    for i in 1..12 {
        nodes.push(python(&[nodes[i - 1].addr.clone()]));
    }
    let mut rust = Node::start({
        let mut c = Command::new(interop::example("kademlia"));
        c.args([
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            &nodes[0].addr,
            "serve",
        ]);
        c
    });
    // Everyone has heard of everyone once: the same tables for both.
    let mut py = python(&[nodes[0].addr.clone()]);
    println!(
        "kademlia lookups of missing keys, {lookups} per node, 12 Python nodes + the two measured, one machine"
    );
    for round in 0..3 {
        let (r_rate, r_cpu) = measure(&mut rust, lookups, |i| format!("get missing-{round}-{i}"));
        let (p_rate, p_cpu) = measure(&mut py, lookups, |i| {
            format!("[\"get\", \"absent-{round}-{i}\"]")
        });
        println!(
            "round {round}: rust {r_rate:>7.0} lookups/s ({r_cpu:>6.0} µs CPU each)  python {p_rate:>7.0} lookups/s ({p_cpu:>6.0} µs CPU each)  ratio {:.2}",
            r_rate / p_rate
        );
    }
}
