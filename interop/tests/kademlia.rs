//! The `kademlia` example in networks of Python kademlia 2.2.3 nodes (pinned in the interop
//! environment), all on loopback: values of every type both ways, bootstrapping both ways, a
//! mixed network where every node reads every key, and lookups through datagram loss.

use std::process::Command;

use interop::{example, py_dir, python, LineNode as Node};
use serde_json::{json, Value};

/// A Python kademlia node, bootstrapped through `boot`.
fn python_node(boot: &[&str]) -> Node {
    let mut c = Command::new(python());
    c.arg(py_dir().join("kademlia_peer.py")).arg("0").args(boot);
    Node::start(c)
}

/// A serving Rust node, bootstrapped through `boot`.
fn rust_node(boot: &[&str]) -> Node {
    Node::start(kademlia(boot, &["serve"]))
}

/// A Python node's value for `key`: `{"type": ..., "value": ...}`.
fn py_get(node: &mut Node, key: &str) -> Value {
    serde_json::from_str(&node.ask(&json!(["get", key]).to_string())).unwrap()
}

/// Ends the whole run if a test hangs (a node that never answers would block its read for
/// good): in 180 s unless the returned guard is dropped first.
fn watchdog(test: &'static str) -> std::sync::mpsc::Sender<()> {
    let (guard, dropped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            dropped.recv_timeout(std::time::Duration::from_secs(180))
        {
            eprintln!("{test} did not finish within 180 s");
            std::process::exit(101);
        }
    });
    guard
}

/// The example's command line: `--bind 127.0.0.1:0`, `--bootstrap` each of `boot`, a 2 s call
/// timeout (a loaded machine's Python nodes may be slow to answer), then `args`.
fn kademlia(boot: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(example("kademlia"));
    c.args(["--bind", "127.0.0.1:0", "--timeout", "2s"]);
    for b in boot {
        c.args(["--bootstrap", b]);
    }
    c.args(args);
    c
}

/// Runs a one-shot `kademlia ... ARGS`: its exit code and what it printed.
fn once(boot: &[&str], args: &[&str]) -> (i32, String) {
    let out = kademlia(boot, args).output().expect("kademlia runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
            .trim()
            .to_string(),
    )
}

/// Five Python nodes, each after the first bootstrapped through the one before.
fn python_network() -> Vec<Node> {
    let mut nodes = vec![python_node(&[])];
    for _ in 1..5 {
        let last = nodes.last().unwrap().addr.clone();
        nodes.push(python_node(&[&last]));
    }
    nodes
}

#[test]
fn python_and_rust_nodes_read_each_others_values_of_every_type() {
    let _watchdog = watchdog("python_and_rust_nodes_read_each_others_values_of_every_type");
    let mut py = python_network();
    let mut rust = rust_node(&[&py[0].addr]);

    // Python sets, Rust gets: each type comes back as it went.
    let set = |node: &mut Node, command: Value| assert_eq!(node.ask(&command.to_string()), "true");
    set(&mut py[2], json!(["set", "s", "hello"]));
    set(&mut py[2], json!(["set", "i", 42]));
    set(&mut py[2], json!(["set", "f", 1.5]));
    set(&mut py[2], json!(["set", "b", true]));
    set(&mut py[2], json!(["set_bytes", "raw", "010203"]));
    for (key, printed) in [
        ("s", "\"hello\""),
        ("i", "42"),
        ("f", "1.5"),
        ("b", "true"),
        ("raw", "[1,2,3]"),
    ] {
        assert_eq!(rust.ask(&format!("get {key}")), printed, "{key}");
    }

    // Rust sets, Python gets, with its own types.
    for (key, value) in [
        ("rs", "\"world\""),
        ("ri", "-7"),
        ("rf", "2.25"),
        ("rb", "false"),
    ] {
        assert_eq!(rust.ask(&format!("set {key} {value}")), "true");
    }
    assert_eq!(
        py_get(&mut py[4], "rs"),
        json!({"type": "str", "value": "world"})
    );
    assert_eq!(
        py_get(&mut py[4], "ri"),
        json!({"type": "int", "value": -7})
    );
    assert_eq!(
        py_get(&mut py[4], "rf"),
        json!({"type": "float", "value": 2.25})
    );
    assert_eq!(
        py_get(&mut py[4], "rb"),
        json!({"type": "bool", "value": false})
    );

    // The one-shot commands: a node that joins, sets or gets, and leaves. (Each leaves a
    // contact behind that no longer answers: Python nodes wait 5 s for it, so they are few.)
    assert_eq!(
        once(&[&py[1].addr], &["set", "once", "-1.5"]),
        (0, "true".into())
    );
    assert_eq!(once(&[&rust.addr], &["get", "once"]), (0, "-1.5".into()));
    let (code, out) = once(&[&rust.addr], &["get", "nobody"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no node has \"nobody\""), "{out}");
    // A value no node stores: a usage error, before any network.
    assert_eq!(once(&[&rust.addr], &["set", "k", "[1, 2]"]).0, 2);
}

#[test]
fn a_python_node_that_knows_only_a_rust_node_finds_the_others() {
    let _watchdog = watchdog("a_python_node_that_knows_only_a_rust_node_finds_the_others");
    let mut py = python_network();
    let mut rust = rust_node(&[&py[3].addr]);
    assert_eq!(
        py[0].ask(&json!(["set", "far", "away"]).to_string()),
        "true"
    );
    assert_eq!(rust.ask("set near \"by\""), "true");

    // Bootstrapped through the Rust node alone.
    let mut newcomer = python_node(&[&rust.addr]);
    assert_eq!(
        py_get(&mut newcomer, "far"),
        json!({"type": "str", "value": "away"})
    );
    assert_eq!(
        py_get(&mut newcomer, "near"),
        json!({"type": "str", "value": "by"})
    );
    // It learned of the Python nodes through the Rust node: a lookup reaches them all.
    let found: Value =
        serde_json::from_str(&newcomer.ask(&json!(["bootstrap", rust.addr.clone()]).to_string()))
            .unwrap();
    assert!(found.as_u64().unwrap() >= 5, "found {found} nodes");
}

#[test]
fn twenty_rust_and_five_python_nodes_all_read_every_key() {
    let _watchdog = watchdog("twenty_rust_and_five_python_nodes_all_read_every_key");
    let mut nodes = python_network();
    for i in 0..20 {
        // Each joins through two nodes already there.
        let a = nodes[i % nodes.len()].addr.clone();
        let b = nodes[(i * 7 + 3) % nodes.len()].addr.clone();
        nodes.push(rust_node(&[&a, &b]));
    }
    // Every node sets a key of its own.
    for (i, node) in nodes.iter_mut().enumerate() {
        let answer = if i < 5 {
            node.ask(&json!(["set", format!("key-{i}"), format!("value-{i}")]).to_string())
        } else {
            node.ask(&format!("set key-{i} \"value-{i}\""))
        };
        assert_eq!(answer, "true", "node {i}");
    }
    // And every node reads every key.
    for (i, node) in nodes.iter_mut().enumerate() {
        for k in 0..25 {
            let key = format!("key-{k}");
            if i < 5 {
                assert_eq!(
                    py_get(node, &key),
                    json!({"type": "str", "value": format!("value-{k}")}),
                    "python node {i}, {key}"
                );
            } else {
                assert_eq!(
                    node.ask(&format!("get {key}")),
                    format!("\"value-{k}\""),
                    "rust node {i}, {key}"
                );
            }
        }
    }
}

#[test]
fn a_get_succeeds_through_twenty_percent_datagram_loss() {
    let _watchdog = watchdog("a_get_succeeds_through_twenty_percent_datagram_loss");
    let mut nodes = python_network();
    for i in 0..5 {
        let a = nodes[i].addr.clone();
        nodes.push(rust_node(&[&a]));
    }
    for (k, node) in nodes.iter_mut().take(3).enumerate() {
        let answer = node.ask(&json!(["set", format!("lossy-{k}"), k]).to_string());
        assert_eq!(answer, "true");
    }
    let boot: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    for k in 0..3 {
        // Each way, a fifth of this node's datagrams are dropped.
        let (code, out) = once(&boot, &["--loss", "0.2", "get", &format!("lossy-{k}")]);
        assert_eq!((code, out), (0, k.to_string()));
    }
}
