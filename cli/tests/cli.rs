//! The `rpc` binary, driven as a user would: serve on loopback, call, bench, exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const RPC: &str = env!("CARGO_BIN_EXE_rpc");

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Self {
        let s = Self::start_with(&["--listen", "udp://127.0.0.1:0"]);
        assert!(
            s.url.starts_with("udp://127.0.0.1:") && !s.url.ends_with(":0"),
            "{}",
            s.url
        );
        s
    }

    /// Runs `rpc serve ARGS` and reads the URL of its first `listening on` line.
    fn start_with(args: &[&str]) -> Self {
        let (child, mut urls) = Self::spawn(args, 1);
        Self {
            child,
            url: urls.remove(0),
        }
    }

    /// Runs `rpc serve ARGS` and reads the URLs of its first `n` `listening on` lines.
    fn spawn(args: &[&str], n: usize) -> (Child, Vec<String>) {
        let mut child = Command::new(RPC)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("rpc serve starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let urls = (0..n)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).unwrap();
                line.trim()
                    .strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .to_string()
            })
            .collect();
        (child, urls)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rpc bench URL add 1 2` with 4 calls in flight for a second, reporting in JSON.
fn bench_add_for_a_second(url: &str) -> [&str; 10] {
    [
        "bench",
        url,
        "add",
        "1",
        "2",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--json",
    ]
}

fn rpc(args: &[&str]) -> Output {
    Command::new(RPC).args(args).output().expect("rpc runs")
}

fn call(url: &str, method: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["call", url, method];
    all.extend_from_slice(args);
    let out = rpc(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn every_demo_method_answers() {
    let s = Server::start();
    let u = s.url.as_str();
    let ok = |method: &str, args: &[&str], want: &str| {
        let (code, out, err) = call(u, method, args);
        assert_eq!((code, out.as_str()), (0, want), "{method} {args:?}: {err}");
    };
    let (code, out, _) = call(u, "sayhi", &["\"Ada\""]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("\"Hello Ada you live at 127.0.0.1:"),
        "{out}"
    );
    ok(
        "echo",
        &["1", "\"s\"", "[1,{\"k\":null}]"],
        "[1,\"s\",[1,{\"k\":null}]]",
    );
    ok("echo", &["3.5"], "3.5");
    ok("add", &["-2", "40"], "38");
    ok("add", &["1.5", "1"], "2.5");
    ok("sleep", &["20"], "null");
    ok("subtract", &["42", "23"], "19");
    ok("sum", &["1", "2", "3.5"], "6.5");
    ok("get_data", &[], "[\"hello\",5]");
    ok("update", &["1", "2"], "null");
    ok("hello", &["\"Robert\""], "\"hello Robert\"");
    ok("goodbye", &["\"Robert\""], "\"goodbye Robert\"");
    ok("add_2_words", &["1000", "2050"], "3050");
    ok("func_no_args", &[], "null");
    let (code, out, _) = call(u, "notify_hello", &["7", "--notify"]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn errors_have_distinct_exit_codes() {
    let s = Server::start();
    let u = s.url.as_str();

    let (code, _, err) = call(u, "fail", &["\"boom\""]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("boom"), "{err}");
    let (code, _, err) = call(u, "nope", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("method not found"), "{err}");
    let (code, _, err) = call(u, "add", &["\"x\"", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid params: expected a number"), "{err}");

    let (code, _, err) = call(u, "add", &["1", "2", "--returns", "u32"]);
    assert_eq!(code, 2, "--returns with msgpack: {err}");
    assert!(err.contains("raw codec"), "{err}");
    let (code, _, err) = call(u, "sayhi", &["Ada"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is not JSON") && err.contains(r#"as '"Ada"'"#),
        "{err}"
    );
    // Quoting would not help a number out of range: no hint to.
    let (code, _, err) = call(u, "echo", &["1e400"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is not JSON") && !err.contains("quotes"),
        "{err}"
    );
    let (code, _, err) = call("udp://127.0.0.1", "x", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no port"), "{err}");
    let (code, _, err) = call(u, "x", &["--codec", "xml"]);
    assert_eq!(code, 2);
    assert!(err.contains("xml"), "{err}");
    // basic-socket-rpc runs over streams only.
    let url = format!("{u}?codec=raw");
    let (code, _, err) = call(&url, "0", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("tcp://"), "{err}");
    // Nothing listens there: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, err) = call(&url, "x", &[]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = call("unix:///nonexistent/rpc.sock", "x", &[]);
    assert_eq!(code, 4, "{err}");
    let out = rpc(&["call"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn one_service_on_udp_tcp_and_unix_at_once() {
    let dir = std::env::temp_dir().join(format!("rpc-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rpc.sock");
    let unix_url = format!("unix://{}", sock.display());
    let mut child = Command::new(RPC)
        .args([
            "serve",
            "--listen",
            "udp://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
        ])
        .args([
            "--listen",
            &unix_url,
            "--listen",
            "tcp://127.0.0.1:0?codec=jsonrpc",
        ])
        .args(["--listen", "udp://127.0.0.1:0?codec=jsonrpc"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    for _ in 0..5 {
        let line = lines.next().unwrap().unwrap();
        urls.push(line.strip_prefix("listening on ").unwrap().to_string());
    }
    assert!(
        urls[0].starts_with("udp://127.0.0.1:") && urls[1].starts_with("tcp://127.0.0.1:"),
        "{urls:?}"
    );
    assert_eq!(urls[2], unix_url);
    assert!(
        urls[3].starts_with("tcp://127.0.0.1:") && urls[3].ends_with("?codec=jsonrpc"),
        "{urls:?}"
    );
    assert!(
        urls[4].starts_with("udp://127.0.0.1:") && urls[4].ends_with("?codec=jsonrpc"),
        "{urls:?}"
    );
    for url in &urls {
        assert_eq!(
            call(url, "add", &["2", "40"]),
            (0, "42".into(), String::new()),
            "{url}"
        );
        assert_eq!(call(url, "get_data", &[]).1, "[\"hello\",5]", "{url}");
        let (code, _, err) = call(url, "fail", &["\"x\""]);
        assert_eq!(code, 1, "{url}: {err}");
    }
    let out = rpc(&[
        "bench",
        &urls[1],
        "add",
        "1",
        "2",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 100, "{report}");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    assert!(!sock.exists(), "the socket file is removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_raw_codec_with_typed_arguments() {
    let server = Server::start_with(&["--listen", "tcp://127.0.0.1:0?codec=raw"]);
    let url = server.url.clone();
    assert!(url.ends_with("?codec=raw"), "{url}");
    assert_eq!(
        call(&url, "2", &["u32:1000", "u32:2050", "--returns", "u32"]),
        (0, "3050".into(), String::new())
    );
    assert_eq!(
        call(&url, "0", &["\"Robert\"", "--returns", "str"]),
        (0, "\"hello Robert\"".into(), String::new())
    );
    // Without --returns: the bytes, as hex.
    assert_eq!(call(&url, "2", &["u32:1", "u32:2"]).1, "\"03000000\"");
    assert_eq!(call(&url, "3", &[]).1, "null");
    let (code, _, err) = call(&url, "99", &[]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = call(&url, "2", &["1000", "2050"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("u32:1000"), "{err}");
    let (code, _, err) = call(&url, "hello", &[]);
    assert_eq!(code, 2, "{err}");
    let out = rpc(&[
        "bench",
        &url,
        "2",
        "u32:1",
        "u32:2",
        "--duration",
        "1s",
        "--connections",
        "2",
        "--concurrency",
        "4",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    drop(server);
}

#[test]
fn a_timeout_exits_3_within_the_timeout() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", silent.local_addr().unwrap());
    let start = Instant::now();
    let (code, _, err) = call(&url, "sayhi", &["\"x\"", "--timeout", "300ms"]);
    let took = start.elapsed();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no response"), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // --retries sends again after each timeout.
    let start = Instant::now();
    let (code, _, _) = call(
        &url,
        "sayhi",
        &["\"x\"", "--timeout", "200ms", "--retries", "2"],
    );
    assert_eq!(code, 3);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn bench_reports_sane_figures() {
    let s = Server::start();
    let out = rpc(&[
        "bench",
        &s.url,
        "add",
        "1",
        "2",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--duration",
        "2s",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let n = |k: &str| {
        report[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    assert!(n("requests") > 100.0, "{report}");
    assert_eq!(n("errors"), 0.0, "{report}");
    assert!(n("rps") > 50.0, "{report}");
    assert!((1.5..4.0).contains(&n("duration_s")), "{report}");
    assert!(
        n("p50_us") > 0.0 && n("p50_us") <= n("p99_us") && n("p99_us") <= n("p999_us"),
        "{report}"
    );
    assert!(n("p999_us") <= n("max_us"), "{report}");
    // Linux tells a process its CPU time: the generator's own cost per call.
    if cfg!(target_os = "linux") {
        assert!(
            n("cpu_us_per_call") > 0.0 && n("cpu_us_per_call") < 100_000.0,
            "{report}"
        );
    }

    // The table form, with a rate limit.
    let out = rpc(&[
        "bench",
        &s.url,
        "get_data",
        "--rate",
        "100",
        "--duration",
        "1s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["requests", "errors", "throughput", "p50", "p99.9", "max"] {
        assert!(text.contains(word), "{text}");
    }
    let requests: u64 = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        (50..=130).contains(&requests),
        "--rate 100 for 1 s made {requests} calls"
    );
}

#[test]
fn serve_stops_gracefully_on_sigterm() {
    let mut s = Server::start();
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "rpc serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_shows_examples() {
    for sub in ["serve", "call", "bench"] {
        let out = rpc(&[sub, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Examples:"),
            "{sub}: {text}"
        );
    }
    let text = String::from_utf8_lossy(&rpc(&["--help"]).stdout).to_string();
    assert!(text.contains("Exit codes:"), "{text}");
}

#[test]
fn per_ip_limits_count_a_hosts_connections_together() {
    let server = Server::start_with(&["--listen", "tcp://127.0.0.1:0", "--rate-per-ip", "5"]);
    // Four connections from one address: one budget of 5 a second between them.
    let out = rpc(&[
        "bench",
        &server.url,
        "add",
        "1",
        "2",
        "--connections",
        "4",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let remote = report["errors_by_kind"]["remote"].as_u64().unwrap();
    let ok = report["requests"].as_u64().unwrap() - report["errors"].as_u64().unwrap();
    assert!(remote > 0 && ok <= 14, "{report}");
}

#[test]
fn the_transport_share_of_requests_per_ip_is_an_option() {
    let server = Server::start_with(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--max-concurrent-requests-per-ip",
        "1",
    ]);
    // Four calls at once from one address that may have one served at a time.
    let out = rpc(&[
        "bench",
        &server.url,
        "sleep",
        "100",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let remote = report["errors_by_kind"]["remote"].as_u64().unwrap();
    let ok = report["requests"].as_u64().unwrap() - report["errors"].as_u64().unwrap();
    assert!(remote > 0 && ok <= 11, "{report}");
}

#[test]
fn limits_in_all_count_the_calls_of_every_listener() {
    let (child, urls) = Server::spawn(
        &[
            "--listen",
            "udp://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
            "--rate",
            "3",
        ],
        2,
    );
    let _server = Server {
        child,
        url: urls[0].clone(),
    };
    // Both listeners loaded at once for a second: 3 calls a second in all (a burst of 3 and
    // about 3 more as the second goes by), not 3 a second on each.
    let start = Instant::now();
    let benches: Vec<_> = urls
        .iter()
        .map(|url| {
            Command::new(RPC)
                .args(bench_add_for_a_second(url))
                .stdout(Stdio::piped())
                .spawn()
                .expect("rpc bench starts")
        })
        .collect();
    let mut ok = 0;
    for bench in benches {
        let out = bench.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ok += report["requests"].as_u64().unwrap() - report["errors"].as_u64().unwrap();
    }
    // The budget of the time the two benches took together (a slow start of one stretches it);
    // separate limits would have let through about twice as many.
    let secs = start.elapsed().as_secs_f64();
    let budget = 4 + (3.0 * secs) as u64;
    assert!(
        (1..=budget).contains(&ok),
        "{ok} calls served by the two listeners in {secs:.2} s (budget {budget})"
    );
}

#[test]
fn server_side_limits() {
    let server = Server::start_with(&[
        "--listen",
        "udp://127.0.0.1:0",
        "--rate-per-peer",
        "20",
        "--max-concurrent",
        "2",
        "--request-timeout",
        "200ms",
    ]);
    let url = server.url.clone();

    // A call that outlives the server's timeout is cancelled and answered "deadline exceeded".
    let start = Instant::now();
    let (code, _, err) = call(&url, "sleep", &["2000", "--timeout", "5s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("-32002"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // One peer pushing hard is rate limited: most of its calls are refused.
    let out = rpc(&bench_add_for_a_second(&url));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let remote = report["errors_by_kind"]["remote"].as_u64().unwrap();
    let ok = report["requests"].as_u64().unwrap() - report["errors"].as_u64().unwrap();
    assert!(remote > 0 && ok <= 45, "{report}");

    // Over the limits (two at once, 20 a second), calls are refused rather than queued.
    let out = rpc(&[
        "bench",
        &url,
        "sleep",
        "50",
        "--concurrency",
        "6",
        "--duration",
        "1s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["errors_by_kind"]["remote"].as_u64().unwrap() > 0,
        "{report}"
    );
    drop(server);
}

#[test]
fn bench_at_a_rate_spreads_the_calls_over_the_run() {
    let server = Server::start_with(&["--listen", "udp://127.0.0.1:0"]);
    // 4 calls a second from 8 workers for one second: 4 calls, not a burst of 8.
    let out = rpc(&[
        "bench",
        &server.url,
        "add",
        "1",
        "2",
        "--rate",
        "4",
        "--concurrency",
        "8",
        "--duration",
        "1s",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let requests = report["requests"].as_u64().unwrap();
    assert!((3..=5).contains(&requests), "{report}");
}

#[test]
fn bench_exits_with_the_failure_when_no_call_succeeds() {
    // Nothing listens on port 1: every call fails to connect.
    let out = rpc(&[
        "bench",
        "tcp://127.0.0.1:1",
        "add",
        "1",
        "2",
        "--duration",
        "200ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], report["requests"]);
}

#[test]
fn bench_takes_extreme_numbers_without_panicking() {
    let out = rpc(&["bench", "tcp://127.0.0.1:1", "add", "--rate", "1e-30"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = rpc(&[
        "bench",
        "tcp://127.0.0.1:1",
        "add",
        "--rate",
        "1e-19",
        "--duration",
        "300ms",
        "--timeout",
        "500000000000years",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // A duration of nothing would run no call.
    let out = rpc(&["bench", "tcp://127.0.0.1:1", "add", "--duration", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_paced_bench_lasts_its_duration_and_a_refused_connection_backs_off() {
    let started = std::time::Instant::now();
    let out = rpc(&[
        "bench",
        "tcp://127.0.0.1:1",
        "add",
        "1",
        "2",
        "--rate",
        "0.5",
        "--duration",
        "1500ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["duration_s"].as_f64().unwrap() >= 1.5, "{report}");
    // Closed loop against a port nobody listens on: the workers back off (10 ms, doubling)
    // instead of trying again at once.
    let out = rpc(&[
        "bench",
        "tcp://127.0.0.1:1",
        "add",
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempts = report["requests"].as_u64().unwrap();
    assert!(
        attempts < 50,
        "{attempts} connection attempts in a second: {report}"
    );
}

#[test]
fn zero_limits_are_refused() {
    for option in [
        "--rate",
        "--rate-per-peer",
        "--rate-per-ip",
        "--max-concurrent",
        "--max-concurrent-per-peer",
        "--max-concurrent-per-ip",
        "--max-connections-per-ip",
        "--max-concurrent-requests-per-ip",
        "--max-frame-memory",
    ] {
        let out = rpc(&["serve", "--listen", "udp://127.0.0.1:0", option, "0"]);
        assert_eq!(out.status.code(), Some(2), "{option}: {out:?}");
    }
    // A request timeout of nothing would fail every call.
    let out = rpc(&[
        "serve",
        "--listen",
        "udp://127.0.0.1:0",
        "--request-timeout",
        "0s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn serve_prints_its_counters_when_it_stops() {
    let mut child = Command::new(RPC)
        .args(["serve", "--listen", "udp://127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rpc serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("listening on ").unwrap().to_string();
    let (code, _, err) = call(&url, "add", &["1", "2"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = call(&url, "no_such_method", &[]);
    assert_eq!(code, 1);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    let counters = rest
        .iter()
        .find(|l| l.starts_with(&format!("counters {url}: ")))
        .unwrap_or_else(|| panic!("no counters in {rest:?}"));
    assert!(
        counters.contains("requests 2, answers 2, errors 1 (method not found 1,"),
        "{counters}"
    );
}

/// `GET /metrics` from `addr`: the body, once the exporter answers.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .starts_with("HTTP/1.1 200")
        .then(|| {
            answer
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
        })
        .flatten()
}

#[test]
fn serve_exports_its_counters_to_prometheus() {
    // A free port for the exporter, which binds it itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let server = Server::start_with(&["--listen", "tcp://127.0.0.1:0", "--metrics", &metrics]);
    let (code, _, err) = call(&server.url, "add", &["1", "2"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = call(&server.url, "no_such_method", &[]);
    assert_eq!(code, 1);
    let requests = format!("rpc_requests_total{{listener=\"{}\"}} 2", server.url);
    let wanted = [
        requests.as_str(),
        "rpc_errors_sent_method_not_found_total",
        "rpc_calls_ok_total 1",
        "rpc_calls_failed_total 1",
        "# HELP rpc_requests_total requests and notifications received",
    ];
    // Published every second: wait for a reading after the calls.
    let t = Instant::now();
    let body = loop {
        let body = scrape(&metrics).unwrap_or_default();
        if wanted.iter().all(|w| body.contains(w)) || t.elapsed() > Duration::from_secs(10) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for w in wanted {
        assert!(body.contains(w), "{w:?} not in:\n{body}");
    }
}

/// A CA, a server certificate for `localhost` and a client certificate `CN=billing`, written as
/// PEM files in a fresh directory under `target/`.
struct Pem {
    dir: std::path::PathBuf,
}

impl Pem {
    fn make(name: &str) -> Self {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for (file, cn, names) in [
            ("server", "server", vec!["localhost".to_owned()]),
            ("client", "billing", vec!["billing.internal".to_owned()]),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

#[test]
fn tls_serve_call_and_bench_with_and_without_client_certificates() {
    let pem = Pem::make("cli");
    let (cert, key, ca) = (
        pem.path("server.pem"),
        pem.path("server.key"),
        pem.path("ca.pem"),
    );
    let s = Server::start_with(&[
        "--listen",
        "tls://127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let port = s.url.strip_prefix("tls://127.0.0.1:").expect("a tls URL");
    // The server's name is checked: the client calls it by the name its certificate carries.
    let url = format!("tls://localhost:{port}");
    let (code, out, err) = call(&url, "add", &["2", "40", "--tls-ca", &ca]);
    assert_eq!((code, out.as_str()), (0, "42"), "{err}");
    let (code, out, err) = call(&url, "whoami", &["--tls-ca", &ca]);
    assert_eq!(code, 0, "{err}");
    let who: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        who["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{out}"
    );
    assert!(who.get("subject").is_none(), "{out}");
    // A server the client does not trust: exit 4, and why.
    let other = Pem::make("other");
    let (code, _, err) = call(&url, "add", &["1", "2", "--tls-ca", &other.path("ca.pem")]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    // By another name than its certificate's.
    let (code, _, err) = call(
        &format!("tls://127.0.0.1:{port}"),
        "add",
        &["1", "2", "--tls-ca", &ca],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    // The load generator over TLS.
    let mut bench = bench_add_for_a_second(&url).to_vec();
    bench.extend(["--tls-ca", &ca]);
    let out = rpc(&bench);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["rps"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    drop(s);

    // Mutual TLS: a client certificate is required, and the handler sees it.
    let s = Server::start_with(&[
        "--listen",
        "tls://127.0.0.1:0?codec=jsonrpc",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ]);
    assert!(s.url.ends_with("?codec=jsonrpc"), "{}", s.url);
    let port = s
        .url
        .strip_prefix("tls://127.0.0.1:")
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let url = format!("tls://localhost:{port}?codec=jsonrpc");
    let me = [
        "--tls-ca",
        &ca,
        "--tls-cert",
        &pem.path("client.pem"),
        "--tls-key",
        &pem.path("client.key"),
    ];
    let (code, out, err) = call(&url, "whoami", &me);
    assert_eq!(code, 0, "{err}");
    let who: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(who["subject"], "CN=billing", "{out}");
    assert_eq!(
        who["names"],
        serde_json::json!(["DNS:billing.internal"]),
        "{out}"
    );
    let (code, _, err) = call(&url, "whoami", &["--tls-ca", &ca]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("CertificateRequired"), "{err}");
    // A tls:// listener without a certificate is a usage error.
    let out = rpc(&["serve", "--listen", "tls://127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

/// Debian's openssl, installed with apt-get if the machine lacks it.
fn ensure_openssl() {
    let present = || {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "openssl"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()) && present(),
        "openssl is not installed and `apt-get install openssl` failed"
    );
}

#[test]
fn openssl_verifies_the_servers_chain() {
    ensure_openssl();
    let pem = Pem::make("openssl");
    let s = Server::start_with(&[
        "--listen",
        "tls://127.0.0.1:0",
        "--tls-cert",
        &pem.path("server.pem"),
        "--tls-key",
        &pem.path("server.key"),
    ]);
    let addr = s.url.strip_prefix("tls://").unwrap().to_owned();
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "localhost",
            "-verify_return_error",
        ])
        .args([
            "-verify_hostname",
            "localhost",
            "-CAfile",
            &pem.path("ca.pem"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (Debian's openssl package)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // Against another CA, openssl refuses the chain.
    let other = Pem::make("openssl-other");
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "localhost",
            "-verify_return_error",
        ])
        .args(["-CAfile", &other.path("ca.pem")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn msgpack_rpc_and_every_framing_serve_and_call() {
    // msgpack-rpc on its own framing (one msgpack value per frame) over TCP and a Unix socket,
    // and JSON-RPC with Content-Length headers.
    let dir = std::env::temp_dir().join(format!("rpc-cli-framing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("m.sock");
    let unix = format!("unix://{}?codec=msgpack-rpc", sock.display());
    let (child, urls) = Server::spawn(
        &[
            "--listen",
            "tcp://127.0.0.1:0?codec=msgpack-rpc",
            "--listen",
            &unix,
            "--listen",
            "tcp://127.0.0.1:0?codec=jsonrpc&framing=content-length",
        ],
        3,
    );
    let _server = Server {
        child,
        url: urls[0].clone(),
    };
    assert!(urls[0].ends_with("?codec=msgpack-rpc"), "{urls:?}");
    for url in &urls {
        assert_eq!(
            call(url, "add", &["2", "40"]),
            (0, "42".into(), String::new()),
            "{url}"
        );
    }
    // Errors keep their meaning across msgpack-rpc.
    let (code, _, err) = call(&urls[0], "fail", &["\"boom\""]);
    assert_eq!(code, 1);
    assert!(err.contains("boom"), "{err}");

    // --framing applies to every URL that names none.
    let newline = Server::start_with(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--codec",
        "jsonrpc",
        "--framing",
        "newline",
    ]);
    let flags = ["2", "40", "--codec", "jsonrpc"];
    let with = |extra: &[&'static str]| [&flags[..], extra].concat();
    assert_eq!(
        call(
            &newline.url,
            "add",
            &with(&["--framing", "newline", "--timeout", "10s"])
        ),
        (0, "42".into(), String::new())
    );
    // A client on another framing gets no answer it can read.
    let (code, _, _) = call(&newline.url, "add", &with(&["--timeout", "500ms"]));
    assert_eq!(code, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exec_endpoints_start_the_program_and_explain_what_they_cannot_do() {
    // A child that answers one newline-framed JSON-RPC call with 42.
    let script =
        r#"exec:sh -c 'read -r call; echo "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":42}"'"#;
    let out = rpc(&[
        "call",
        script,
        "answer",
        "--codec",
        "jsonrpc",
        "--framing",
        "newline",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // A child that exits without answering: a transport failure, at once.
    let started = std::time::Instant::now();
    let out = rpc(&[
        "call",
        "exec:sh -c 'read -r call; exit 3'",
        "answer",
        "--codec",
        "jsonrpc",
        "--framing",
        "newline",
        "--timeout",
        "20s",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    for (args, says) in [
        (vec!["serve", "--listen", "exec:cat"], "rpc serve listens"),
        (vec!["call", "exec:", "x"], "takes a command"),
        (vec!["call", "exec:cat 'open", "x"], "unfinished quote"),
        (
            vec!["call", "udp://127.0.0.1:1?framing=newline", "x"],
            "for streams",
        ),
        (vec!["call", "exec:cat", "0", "--codec", "raw"], "raw codec"),
    ] {
        let out = rpc(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `rpc bench LIST add 1 2 --json` with `extra` options, for a second; the report.
fn bench_json(list: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        list,
        "add",
        "1",
        "2",
        "--concurrency",
        "8",
        "--duration",
        "1s",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = rpc(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn call_and_bench_over_a_list_of_endpoints() {
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start_with(&["--listen", "tcp://127.0.0.1:0"]))
        .collect();
    // One endpoint no one listens on: its refused calls go to the others.
    let dead = format!("tcp://127.0.0.1:{}", interop::free_port("127.0.0.1"));
    let mut urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    urls.push(dead.clone());
    let list = urls.join(",");

    assert_eq!(call(&list, "add", &["2", "40"]).1, "42");
    let report = bench_json(&list, &["--idempotent"]);
    assert_eq!(report["errors"], 0, "{report}");
    let per_endpoint = report["per_endpoint"].as_object().expect("per_endpoint");
    assert_eq!(per_endpoint.len(), 4, "{report}");
    for s in &servers {
        assert!(per_endpoint[&s.url].as_u64().unwrap() > 0, "{report}");
    }
    assert_eq!(per_endpoint[&dead], 0);
    let total: u64 = per_endpoint.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(total, report["requests"].as_u64().unwrap());

    // A list of endpoints speaks one codec.
    let mixed = format!("{},{}?codec=jsonrpc", servers[0].url, servers[1].url);
    let (code, _, err) = call(&mixed, "add", &["1", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one codec"), "{err}");
}

#[test]
fn serve_registers_in_etcd_and_callers_follow_the_prefix() {
    let etcd = interop::Etcd::start();
    let registry = format!("etcd://{}/services/demo", etcd.client_addr);
    let serve = |listen: &str| {
        Server::start_with(&[
            "--listen",
            listen,
            "--register",
            &registry,
            "--register-ttl",
            "2s",
        ])
    };
    // One service over TCP and UDP: callers learn each URL with its codec.
    let tcp = serve("tcp://127.0.0.1:0");
    let mut udp = serve("udp://127.0.0.1:0");
    let registered = |s: &Server| format!("{}?codec=msgpack", s.url);

    assert_eq!(call(&registry, "add", &["2", "40"]).1, "42");
    let report = bench_json(&registry, &[]);
    let per_endpoint = report["per_endpoint"].as_object().expect("per_endpoint");
    assert!(
        per_endpoint[&registered(&tcp)].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        per_endpoint[&registered(&udp)].as_u64().unwrap() > 0,
        "{report}"
    );

    // Killed, the UDP server's lease runs out: it is gone from the registry within its TTL.
    let _ = udp.child.kill();
    let _ = udp.child.wait();
    std::thread::sleep(Duration::from_secs(4));
    let report = bench_json(&registry, &[]);
    let per_endpoint = report["per_endpoint"].as_object().expect("per_endpoint");
    assert_eq!(per_endpoint.len(), 1, "{report}");
    assert!(
        per_endpoint[&registered(&tcp)].as_u64().unwrap() > 0,
        "{report}"
    );

    // Stopped, the TCP server leaves at once; a caller then finds no endpoint and times out.
    let pid = tcp.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut tcp = tcp;
    let _ = tcp.child.wait();
    let (code, _, err) = call(&registry, "add", &["2", "40"]);
    assert_eq!(code, 3, "{err}");

    // A bad registry URL is a usage error.
    let out = rpc(&[
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--register",
        "etcd://127.0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
