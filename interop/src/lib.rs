//! Helpers for the interop tests: a Python virtual environment with the real peers, pinned, and
//! peer processes that are killed when the test lets go of them.
//!
//! The environment lives in `target/interop-venv`. It is built on first use from
//! `interop/py/requirements.txt` (exact versions), in a temporary directory renamed into place, so
//! test binaries running at the same time never see half an environment. It is rebuilt when the
//! requirements change. Set `RPC_STACK_PYTHON` to choose the interpreter that creates it (default
//! `python3`). Any failure panics with the command's output: an interop test never passes by
//! skipping its peer.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("interop/ sits in the workspace")
        .to_path_buf()
}

/// The directory of the Python peer scripts.
pub fn py_dir() -> PathBuf {
    workspace_root().join("interop").join("py")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python interpreter of the interop environment, creating the environment if needed.
///
/// # Panics
///
/// If the environment cannot be created or the pinned packages cannot be installed.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(ensure_venv).clone()
}

fn ensure_venv() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let venv = target.join("interop-venv");
    let requirements = py_dir().join("requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    let marker = |dir: &Path| dir.join("rpc-stack-requirements.txt");
    let python_in = |dir: &Path| dir.join("bin").join("python");

    if fs::read_to_string(marker(&venv)).ok().as_deref() == Some(wanted.as_str()) {
        return python_in(&venv);
    }
    fs::create_dir_all(&target).expect("cannot create the target directory");
    let tmp = target.join(format!("interop-venv.tmp.{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let base = std::env::var("RPC_STACK_PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        Command::new(&base).arg("-m").arg("venv").arg(&tmp),
        "creating the interop virtual environment",
    );
    run(
        Command::new(python_in(&tmp))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&requirements),
        "installing the pinned Python peers (pip install -r interop/py/requirements.txt)",
    );
    fs::write(marker(&tmp), &wanted).expect("cannot write the environment marker");
    // Another test binary may have finished first: keep whichever complete environment is there.
    if fs::read_to_string(marker(&venv)).ok().as_deref() != Some(wanted.as_str()) {
        let _ = fs::remove_dir_all(&venv);
        if fs::rename(&tmp, &venv).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
    } else {
        let _ = fs::remove_dir_all(&tmp);
    }
    assert!(
        fs::read_to_string(marker(&venv)).ok().as_deref() == Some(wanted.as_str()),
        "the interop environment at {} is incomplete",
        venv.display()
    );
    python_in(&venv)
}

/// Runs the Python client `python interop/py/<script> client <addr>` against an rpc-stack server
/// of this process, and panics with its output unless it exits 0 printing `all passed`.
///
/// # Panics
///
/// If the client fails, or runs longer than 60 s.
pub async fn python_client_passes(script: &str, addr: &str) {
    python_run_passes(script, &["client", addr]).await
}

/// Runs `python interop/py/<script> <args...>` and asserts that it exits 0 and says
/// `all passed`.
///
/// # Panics
///
/// If the script fails, says otherwise or takes more than 60 s.
pub async fn python_run_passes(script: &str, args: &[&str]) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(python())
            .arg(py_dir().join(script))
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} client finished within 60 s"))
    .unwrap_or_else(|e| panic!("{script} client ran: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all passed"),
        "{script} client against rpc-stack:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes sure `program` runs (`program --version`), installing Debian's `package` with apt-get
/// if it does not (and the package lists first, if the install fails without them). apt-get
/// waits up to two minutes for another install to finish.
///
/// # Panics
///
/// If the program is missing and cannot be installed.
pub fn ensure_debian_program(program: &str, package: &str) {
    let present = || {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=120", "-q", "-y"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let mut out = apt(&["install", "--no-install-recommends", package]);
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = apt(&["update"]);
        out = apt(&["install", "--no-install-recommends", package]);
    }
    let why = match &out {
        Ok(o) => format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        present(),
        "{program} is not installed and `apt-get install {package}` failed:\n{why}"
    );
}

/// A Python peer process, killed on drop.
#[derive(Debug)]
pub struct PeerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The first line the peer printed (servers print `listening on HOST:PORT`).
    pub first_line: String,
}

impl PeerProcess {
    /// Starts `python interop/py/<script> <args...>` and waits for its first line of output.
    pub fn start(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(py_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        let stdin = child.stdin.take();
        let mut first_line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut first_line)
            .expect("reading the peer's first line");
        assert!(
            !first_line.is_empty(),
            "{script} exited before printing anything"
        );
        Self {
            child,
            stdin,
            first_line: first_line.trim().to_string(),
        }
    }

    /// The address in a `listening on HOST:PORT` first line.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.first_line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {:?}", self.first_line))
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of an example program built by `cargo test` (which builds every example) or
/// `cargo build --examples`, in the same profile as the running test.
///
/// # Panics
///
/// If it has not been built.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "example {name} is not built at {}: run the tests with `cargo test --workspace`, which builds the examples",
        path.display()
    );
    path
}

/// A program started by a test, killed on drop; `first_line` is what it printed first.
#[derive(Debug)]
pub struct Program {
    child: Child,
    /// The first line the program printed.
    pub first_line: String,
}

impl Program {
    /// Starts `path args...` and waits for its first line of output.
    pub fn start(path: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut first_line)
            .expect("reading the program's first line");
        Self {
            child,
            first_line: first_line.trim().to_string(),
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's Rust code compiles (run by `cargo test` as a doc test).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The path of a binary of the workspace (such as `rpc`), built by `cargo test --workspace`.
///
/// # Panics
///
/// If it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join(name);
    assert!(
        path.exists(),
        "binary {name} is not built at {}: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// The methods of the JSON-RPC 2.0 specification's examples, as rpc-stack handlers:
/// `subtract(minuend, subtrahend)` by position or name, `sum(numbers...)`, `get_data()`, and
/// `update`, `notify_hello`, `notify_sum`, which accept anything.
pub fn jsonrpc_spec_router() -> rpc_core::Router {
    use rpc_core::handler::raw;
    use rpc_core::{Request, Route, Router, ServerError};

    async fn subtract(minuend: i64, subtrahend: i64) -> i64 {
        minuend - subtrahend
    }
    async fn sum(req: Request) -> Result<i64, ServerError> {
        let numbers: Vec<i64> = req.args().decode().map_err(ServerError::invalid_params)?;
        Ok(numbers.iter().sum())
    }
    async fn get_data() -> (&'static str, i64) {
        ("hello", 5)
    }
    async fn accept(_: Request) {}

    Router::new()
        .add_route(
            Route::new(subtract)
                .name("subtract")
                .params(["minuend", "subtrahend"]),
        )
        .route("sum", raw(sum))
        .route("get_data", get_data)
        .route("update", raw(accept))
        .route("notify_hello", raw(accept))
        .route("notify_sum", raw(accept))
}

/// A free TCP port on `ip` now (another process may take it before it is used).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `name`.
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An etcd server (Debian's `etcd-server`, installed if missing) on loopback ports, with a
/// temporary data directory; killed on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    /// `127.0.0.1:PORT`, where it takes clients.
    pub client_addr: String,
    _data: TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it takes clients (at most 30 s).
    pub fn start() -> Self {
        ensure_debian_program("etcd", "etcd-server");
        let data = TempDir::new("rpc-etcd");
        let client_port = free_port("127.0.0.1");
        let peer_port = free_port("127.0.0.1");
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", data.path().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("etcd starts");
        let etcd = Self {
            child,
            client_addr: format!("127.0.0.1:{client_port}"),
            _data: data,
        };
        let started = std::time::Instant::now();
        // Taking clients once its health endpoint says so.
        loop {
            let healthy = std::net::TcpStream::connect(&etcd.client_addr).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let asked = s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok();
                let mut answer = String::new();
                asked && s.read_to_string(&mut answer).is_ok() && answer.contains("\"true\"")
            });
            if healthy {
                return etcd;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "etcd did not become healthy within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DNS server (Debian's dnsmasq, installed if missing) on a loopback port, answering from the
/// hosts files of a directory it watches, and nothing else; killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    /// Where it answers, over UDP and TCP.
    pub addr: std::net::SocketAddr,
    hosts: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with no records.
    pub fn start() -> Self {
        // Debian puts it in /usr/sbin, which a user's PATH may leave out.
        const DNSMASQ: &str = "/usr/sbin/dnsmasq";
        ensure_debian_program(DNSMASQ, "dnsmasq-base");
        let hosts = TempDir::new("rpc-dns");
        let port = free_port("127.0.0.1");
        let child = Command::new(DNSMASQ)
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--pid-file=")
            .arg("--user=root")
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg(format!("--port={port}"))
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--local-ttl=0")
            .arg(format!("--hostsdir={}", hosts.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq starts");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "dnsmasq did not listen within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, addr, hosts }
    }

    /// Makes `name` resolve to `ips` (A and AAAA records), replacing what it resolved to.
    pub fn set(&self, name: &str, ips: &[std::net::IpAddr]) {
        let text: String = ips.iter().map(|ip| format!("{ip} {name}\n")).collect();
        // Written beside the directory and moved in, so dnsmasq never reads half a file.
        let staged = self.hosts.path().with_extension("staged");
        std::fs::write(&staged, text).expect("writing the hosts file");
        std::fs::rename(&staged, self.hosts.path().join("hosts")).expect("moving the hosts file");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node program driven line by line: it prints `listening on ADDR`, then a line starting with
/// `joined` once it has joined its network, then one answer line per command line it reads (the
/// kademlia example's `serve`, `py/kademlia_peer.py`). Killed on drop.
#[derive(Debug)]
pub struct LineNode {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    /// Where it listens, as its first line says.
    pub addr: String,
}

impl LineNode {
    /// Starts `command` and waits until it has joined.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the node starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut node = Self {
            child,
            stdin,
            stdout,
            addr: String::new(),
        };
        let first = node.line();
        node.addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let joined = node.line();
        assert!(joined.starts_with("joined"), "{joined:?}");
        node
    }

    /// Its next line.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading the node");
        assert!(!line.is_empty(), "the node at {} exited", self.addr);
        line.trim().to_string()
    }

    /// Sends one command line and reads its answer.
    pub fn ask(&mut self, command: &str) -> String {
        use std::io::Write;
        writeln!(self.stdin, "{command}").expect("writing to the node");
        self.stdin.flush().expect("flushing the node's input");
        self.line()
    }

    /// The CPU time it has used.
    pub fn cpu_time(&self) -> std::time::Duration {
        cpu_time(self.child.id())
    }
}

impl Drop for LineNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPU time (user and system) process `pid` has used, from `/proc/PID/stat`; zero where
/// there is no such file.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The kernel counts in USER_HZ, 100 a second on Linux.
    std::time::Duration::from_millis((ticks(14) + ticks(15)) * 10)
}
