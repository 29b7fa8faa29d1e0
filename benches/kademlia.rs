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

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A node driven one command line at a time.
struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: String,
}

impl Node {
    fn start(mut command: Command) -> Node {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the node starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut node = Node {
            child,
            stdin,
            stdout,
            addr: String::new(),
        };
        node.addr = node
            .line()
            .strip_prefix("listening on ")
            .expect("a listening line")
            .to_string();
        assert!(node.line().starts_with("joined"));
        node
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading the node");
        assert!(!line.is_empty(), "the node exited");
        line.trim().to_string()
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("writing to the node");
        self.stdin.flush().expect("flushing");
        self.line()
    }

    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Duration::from_millis((ticks(14) + ticks(15)) * 10)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let cpu = node.cpu();
    let start = Instant::now();
    for i in 0..lookups {
        let answer = node.ask(&command(i));
        assert!(answer == "null" || answer.contains("NoneType"), "{answer}");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (node.cpu() - cpu).as_secs_f64();
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
