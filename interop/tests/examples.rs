//! The rpcudp examples against each other and against the real rpcudp, in both directions.

use std::net::UdpSocket;
use std::process::Command;

use interop::{example, py_dir, python, PeerProcess, Program};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server() -> (Program, String) {
    let server = Program::start(&example("rpcudp_server"), &["--bind", "127.0.0.1:0"]);
    let addr = server
        .first_line
        .strip_prefix("listening on udp://127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("unexpected first line {:?}", server.first_line));
    (server, addr)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the client ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn rust_client_and_rust_server() {
    let (_server, addr) = start_server();
    let (ok, out) =
        run(Command::new(example("rpcudp_client")).args(["--server", &addr, "--name", "Ada"]));
    assert!(ok, "{out}");
    assert!(
        out.starts_with("Success! Hello Ada you live at 127.0.0.1:"),
        "{out}"
    );
}

#[test]
fn python_readme_client_and_rust_server() {
    let (_server, addr) = start_server();
    let (ok, out) = run(Command::new(python())
        .arg(py_dir().join("rpcudp_peer.py"))
        .args(["sayhi", &addr]));
    assert!(ok, "{out}");
    assert!(
        out.starts_with("Hello Snake Plissken you live at 127.0.0.1:"),
        "{out}"
    );
}

#[test]
fn rust_client_and_python_server() {
    let peer = PeerProcess::start("rpcudp_peer.py", &["server"]);
    let addr = peer.listen_addr().to_string();
    let (ok, out) = run(Command::new(example("rpcudp_client")).args(["--server", &addr]));
    assert!(ok, "{out}");
    assert!(
        out.starts_with("Success! Hello Snake Plissken you live at 127.0.0.1:"),
        "{out}"
    );
}

#[test]
fn rust_client_without_a_server() {
    // A port nobody serves: the client says so and fails, after its timeout.
    let addr = format!("127.0.0.1:{}", free_udp_port());
    let (ok, out) =
        run(Command::new(example("rpcudp_client")).args(["--server", &addr, "--timeout", "0.3"]));
    assert!(!ok);
    assert_eq!(out, "Response not received.");
}

#[test]
fn quickstart_runs() {
    let (ok, out) = run(&mut Command::new(example("quickstart")));
    assert!(ok, "{out}");
    assert!(
        out.contains("100 concurrent add calls -> all correct: true"),
        "{out}"
    );
    assert!(
        out.contains("nope() -> error: the peer answered with an error: method not found"),
        "{out}"
    );
}

#[test]
fn rpc_tool_calls_and_benches_the_python_server() {
    let peer = PeerProcess::start("rpcudp_peer.py", &["server"]);
    let url = format!("udp://{}", peer.listen_addr());
    let rpc = interop::binary("rpc");
    let (ok, out) = run(Command::new(&rpc).args(["call", &url, "echo", "1", "\"s\"", "2.5"]));
    assert!(ok, "{out}");
    assert_eq!(out, "[1,\"s\",2.5]");
    let (ok, out) = run(Command::new(&rpc).args([
        "bench",
        &url,
        "sayhi",
        "\"x\"",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--json",
    ]));
    assert!(ok, "{out}");
    assert!(out.contains("\"errors\":0"), "{out}");
    assert!(!out.contains("\"requests\":0,"), "{out}");
}

#[test]
fn typed_service_is_called_through_its_client_on_every_transport() {
    let (ok, out) = run(&mut Command::new(example("typed_service")));
    assert!(ok, "{out}");
    for name in ["udp:", "tcp:", "unix:", "bsr:"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(name)
                && l.contains("sayhi -> \"Hello Ada, from ")
                && l.contains("add(2, 40) -> 42")
                && l.contains("the sum does not fit in a u32")),
            "{name} missing in:\n{out}"
        );
    }
}

#[test]
fn transport_swap_calls_every_transport() {
    let (ok, out) = run(&mut Command::new(example("transport_swap")));
    assert!(ok, "{out}");
    for name in [" udp:", " tcp:", "unix:"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.ends_with("add(2, 40) -> 42")),
            "{name} missing in:\n{out}"
        );
    }
}

#[test]
fn in_memory_serves_and_calls_back_over_a_pipe() {
    let (ok, out) = run(&mut Command::new(example("in_memory")));
    assert!(ok, "{out}");
    assert!(out.contains("add(2, 40) -> 42"), "{out}");
    assert!(
        out.contains("greet() -> hello Ada, from stream:in-memory client"),
        "{out}"
    );
    assert!(out.contains("add(\"two\", 40) -> error: "), "{out}");
    assert!(
        out.contains("server shut down cleanly: true; client connection closed: true"),
        "{out}"
    );
}

#[test]
fn jsonrpc_bidirectional_calls_both_ways() {
    let (ok, out) = run(&mut Command::new(example("jsonrpc_bidirectional")));
    assert!(ok, "{out}");
    assert!(out.contains("progress: Counted to 3"), "{out}");
    assert!(
        out.contains(r#"ask -> the client says "how long is this" -> "16""#),
        "{out}"
    );
}

#[test]
fn balanced_loses_no_call_when_a_server_stops_and_uses_it_again_when_it_starts() {
    let (ok, out) = run(&mut Command::new(example("balanced")));
    assert!(ok, "{out}");
    assert!(out.contains("failed calls: 0"), "{out}");
    // Each phase's line: "NAME  ADDR: CALLS  ADDR: CALLS  ADDR: CALLS".
    let calls = |prefix: &str| -> Vec<u64> {
        let line = out
            .lines()
            .find(|l| l.starts_with(prefix) || l.contains(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"));
        line.split("  ")
            .filter_map(|part| part.trim().rsplit_once(": "))
            .map(|(_, n)| n.parse().expect("a count"))
            .collect()
    };
    let all = calls("three servers");
    assert!(all.len() == 3 && all.iter().all(|&n| n > 0), "{out}");
    // Only the calls it took between the first line and its stop.
    let stopped = calls("stopped");
    assert!(stopped[1] < all[1] / 10, "{out}");
    let again = calls("started again");
    assert!(again[1] > 0, "the restarted server took no call:\n{out}");
}

fn start_greet_server() -> (Program, String) {
    let server = Program::start(
        &example("greet_server"),
        &["--address", "127.0.0.1", "-p", "0"],
    );
    let port = server
        .first_line
        .strip_prefix("listening on tcp://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", server.first_line))
        .to_string();
    (server, port)
}

#[test]
fn greet_client_and_greet_server() {
    let (_server, port) = start_greet_server();
    let (ok, out) =
        run(Command::new(example("greet_client")).args(["--address", "127.0.0.1", "-p", &port]));
    assert!(ok, "{out}");
    assert!(
        out.contains(r#"hello("Robert") -> "hello Robert""#),
        "{out}"
    );
    assert!(out.contains("add_2_words(1000, 2050) -> 3050"), "{out}");
    assert!(out.ends_with("all answers right"), "{out}");
}

#[test]
fn python_greet_client_and_rust_greet_server() {
    let (_server, port) = start_greet_server();
    let (ok, out) = run(Command::new(python())
        .arg(py_dir().join("bsr_peer.py"))
        .args(["client", &format!("127.0.0.1:{port}")]));
    assert!(ok, "{out}");
    assert!(out.ends_with("all passed"), "{out}");
}

#[test]
fn greet_client_and_python_greet_server() {
    let peer = PeerProcess::start("bsr_peer.py", &["server"]);
    let port = peer.listen_addr().port().to_string();
    let (ok, out) = run(Command::new(example("greet_client")).args(["-p", &port]));
    assert!(ok, "{out}");
    assert!(out.ends_with("all answers right"), "{out}");
}

#[test]
fn greet_client_fails_without_a_server() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let out = Command::new(example("greet_client"))
        .args(["-p", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn middleware_stack_refuses_and_times_out_over_udp_and_tcp() {
    let (ok, out) = run(&mut Command::new(example("middleware_stack")));
    assert!(ok, "{out}");
    for name in ["udp", "tcp"] {
        assert!(out.contains(&format!("{name}: add(2, 40) -> 42")), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}: a noisy peer's"))
                    && l.contains("refused (rate limited")
                    && l.ends_with("ours: 3 of 3 right")),
            "{name}: no rate-limited refusal in:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}: slow(2000) -> "))
                    && l.contains("deadline exceeded")),
            "{name}: no deadline in:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}: server metrics:"))
                    && l.contains("deadline exceeded 1, in flight 0")),
            "{name}: no metrics in:\n{out}"
        );
    }
    assert!(out.ends_with("all outcomes as expected"), "{out}");
}
