//! neovim (Debian's package, installed by the test if missing) as a MessagePack-RPC peer, over a
//! Unix socket (`nvim --headless --clean --listen PATH`), over TCP (`--listen 127.0.0.1:PORT`)
//! and embedded (`nvim --embed --headless --clean`, through the process transport): calls,
//! neovim's handles as typed values, neovim's errors, and neovim calling back into Rust
//! handlers with `rpcrequest()` and `rpcnotify()`. Then the `rpc` tool against it.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rpc_codecs::msgpack::neovim::Buffer;
use rpc_codecs::msgpack::{MsgpackRpcCodec, Value};
use rpc_core::handler::raw;
use rpc_core::{BoxChannel, Client, Error, Request, Router};
use rpc_transports::stream::Framing;
use rpc_transports::{process, tcp, unix};
use tokio::sync::mpsc;

fn ensure_nvim() {
    interop::ensure_debian_program("nvim", "neovim");
}

/// A headless neovim listening on `address`, killed on drop.
struct Nvim {
    child: Child,
    _dir: Option<TempDir>,
}

impl Drop for Nvim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rpc-stack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_nvim(listen: &str) -> Child {
    Command::new("nvim")
        .args(["--headless", "--clean", "--listen", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("nvim starts")
}

/// Waits until `ready` holds, for 10 s at most.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < until, "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nvim_on_socket(name: &str) -> (Nvim, PathBuf) {
    ensure_nvim();
    let dir = TempDir::new(name);
    let path = dir.0.join("nvim.sock");
    let child = start_nvim(path.to_str().unwrap());
    wait_until("neovim's socket", || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    });
    (
        Nvim {
            child,
            _dir: Some(dir),
        },
        path,
    )
}

fn nvim_on_tcp() -> (Nvim, std::net::SocketAddr) {
    ensure_nvim();
    // A port that was free a moment ago; neovim takes it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = start_nvim(&addr.to_string());
    wait_until("neovim's TCP port", || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    (Nvim { child, _dir: None }, addr)
}

/// `nvim --embed --headless --clean` as a child, serving `callbacks` to it if given.
fn embedded(callbacks: Option<Router>) -> process::Child<MsgpackRpcCodec> {
    ensure_nvim();
    let mut command = Command::new("nvim");
    command.args(["--embed", "--headless", "--clean"]);
    let builder = process::builder().framing(Framing::MsgPack);
    let builder = match callbacks {
        Some(router) => builder.serve(router),
        None => builder,
    };
    builder
        .spawn(command, MsgpackRpcCodec::new())
        .expect("nvim --embed starts")
}

/// The handlers neovim calls back: `add(a, b)`, and the notification `note(...)`, whose
/// params go to `notes`.
fn callbacks(notes: mpsc::UnboundedSender<Vec<Value>>) -> Router {
    Router::new()
        .route("add", |a: i64, b: i64| async move { a + b })
        .route(
            "note",
            raw(move |req: Request| {
                let notes = notes.clone();
                async move {
                    let params: Vec<Value> = req.args().decode().unwrap_or_default();
                    let _ = notes.send(params);
                }
            }),
        )
}

/// What every way of reaching neovim must do.
async fn speaks_with_neovim(
    client: Client<BoxChannel>,
    notes: &mut mpsc::UnboundedReceiver<Vec<Value>>,
) {
    let three: i64 = client.call("nvim_eval", ("1+2",)).await.unwrap();
    assert_eq!(three, 3);

    // [channel id, {version, functions, ui_events, ui_options, error_types, types}]
    let (channel, info): (i64, Value) = client.call("nvim_get_api_info", ()).await.unwrap();
    assert!(channel > 0);
    let field = |name: &str| {
        info.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
            .map(|(_, v)| v.clone())
    };
    let functions = field("functions").and_then(|f| f.as_array().map(Vec::len));
    assert!(functions.is_some_and(|n| n > 100), "{functions:?}");
    assert!(field("types").is_some(), "api info has the handle types");

    // A buffer handle, as a typed value both ways.
    let buf: Buffer = client.call("nvim_get_current_buf", ()).await.unwrap();
    let lines = vec!["first line".to_string(), "ünïcode".into()];
    let () = client
        .call("nvim_buf_set_lines", (buf, 0, -1, false, &lines))
        .await
        .unwrap();
    let back: Vec<String> = client
        .call("nvim_buf_get_lines", (buf, 0, -1, false))
        .await
        .unwrap();
    assert_eq!(back, lines);
    let count: i64 = client.call("nvim_buf_line_count", (buf,)).await.unwrap();
    assert_eq!(count, 2);

    // neovim's own error, with its message.
    match client.call::<Value>("nvim_eval", ("NoSuchFunc()",)).await {
        Err(Error::Server(e)) => {
            assert_eq!(e.code(), MsgpackRpcCodec::EXCEPTION);
            assert!(e.message().contains("E117"), "{}", e.message());
            assert!(e.message().contains("NoSuchFunc"), "{}", e.message());
        }
        other => panic!("expected neovim's error, got {other:?}"),
    }
    // A function neovim does not have.
    match client.call::<Value>("nvim_no_such_function", ()).await {
        Err(Error::Server(e)) => assert!(e.message().contains("Invalid method"), "{e}"),
        other => panic!("expected neovim's error, got {other:?}"),
    }
    // An argument of the wrong type is an exception; a line out of range a validation error.
    match client.call::<Value>("nvim_buf_line_count", ("x",)).await {
        Err(Error::Server(e)) => assert!(e.message().contains("Wrong type"), "{e}"),
        other => panic!("expected neovim's error, got {other:?}"),
    }
    match client
        .call::<Value>("nvim_buf_get_lines", (buf, 10, 20, true))
        .await
    {
        Err(Error::Server(e)) => assert_eq!(e.code(), MsgpackRpcCodec::VALIDATION, "{e}"),
        other => panic!("expected a validation error, got {other:?}"),
    }

    // neovim calls back, inside an evaluation of ours, on the same connection.
    let sum: i64 = client
        .call(
            "nvim_eval",
            (format!("rpcrequest({channel}, 'add', 1, 2)"),),
        )
        .await
        .unwrap();
    assert_eq!(sum, 3);
    // A Rust handler's error reaches neovim with its message.
    let caught: String = client
        .call(
            "nvim_exec_lua",
            (
                format!(
                    "local ok, e = pcall(vim.rpcrequest, {channel}, 'add', 'x', 2) return tostring(e)"
                ),
                Vec::<Value>::new(),
            ),
        )
        .await
        .unwrap();
    assert!(caught.contains("invalid params"), "{caught}");
    let sent: i64 = client
        .call(
            "nvim_eval",
            (format!("rpcnotify({channel}, 'note', 'hi', 42)"),),
        )
        .await
        .unwrap();
    assert_eq!(sent, 1, "rpcnotify returns 1 once sent");
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("the notification arrived")
        .unwrap();
    assert_eq!(note, vec![Value::from("hi"), Value::from(42)]);
}

#[tokio::test]
async fn over_a_unix_socket() {
    let (_nvim, path) = nvim_on_socket("unix");
    let (tx, mut notes) = mpsc::unbounded_channel();
    let client = unix::Builder::new()
        .framing(Framing::MsgPack)
        .serve(callbacks(tx))
        .client(&path, MsgpackRpcCodec::new())
        .boxed();
    speaks_with_neovim(client, &mut notes).await;
}

#[tokio::test]
async fn over_tcp() {
    let (_nvim, addr) = nvim_on_tcp();
    let (tx, mut notes) = mpsc::unbounded_channel();
    let client = tcp::Builder::new()
        .framing(Framing::MsgPack)
        .serve(callbacks(tx))
        .client(addr, MsgpackRpcCodec::new())
        .boxed();
    speaks_with_neovim(client, &mut notes).await;
}

#[tokio::test]
async fn embedded_through_the_process_transport() {
    let (tx, mut notes) = mpsc::unbounded_channel();
    let child = embedded(Some(callbacks(tx)));
    speaks_with_neovim(child.client().boxed(), &mut notes).await;
    // Closing its stdin ends an embedded neovim.
    child.connection().close();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("neovim exited once its stdin closed")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_neovim_that_quits_fails_the_call_waiting_on_it() {
    let child = embedded(None);
    let client = child.client();
    // `:cquit 5` ends neovim with status 5 before it answers.
    let started = Instant::now();
    let e = client
        .call::<Value>("nvim_command", ("cquit 5",))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(child.wait().await.unwrap().code(), Some(5));
}

fn rpc(args: &[&str]) -> std::process::Output {
    Command::new(interop::binary("rpc"))
        .args(args)
        .output()
        .expect("rpc runs")
}

#[test]
fn the_rpc_tool_calls_neovim() {
    let (_nvim, path) = nvim_on_socket("cli");
    let url = format!("unix://{}?codec=msgpack-rpc", path.display());
    let out = rpc(&["call", &url, "nvim_eval", "\"1+2\""]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    let out = rpc(&[
        "call",
        "exec:nvim --embed --headless --clean",
        "nvim_eval",
        "\"1+2\"",
        "--codec",
        "msgpack-rpc",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    let out = rpc(&["call", &url, "nvim_eval", "\"NoSuchFunc()\""]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("E117: Unknown function: NoSuchFunc"),
        "{stderr}"
    );

    let out = rpc(&[
        "call",
        "exec:/nonexistent/nvim --embed",
        "nvim_eval",
        "\"1\"",
        "--codec",
        "msgpack-rpc",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/nvim"));
}

/// The `nvim_plugin` example, a program serving over its own stdio, started by neovim as an
/// RPC job: neovim calls it, it calls neovim back, and it exits when told.
#[tokio::test]
async fn neovim_runs_a_plugin_that_serves_over_its_stdio() {
    let child = embedded(None);
    let nvim = child.client();
    let plugin = interop::example("nvim_plugin");
    let job: i64 = nvim
        .call(
            "nvim_exec_lua",
            (
                // The exit code is kept when the job ends (a finished job's id is soon invalid,
                // so `jobwait` may not find it).
                format!(
                    "return vim.fn.jobstart({{'{}'}}, {{rpc = true, \
                     on_exit = function(_, code) vim.g.plugin_exit = code end}})",
                    plugin.display()
                ),
                Vec::<Value>::new(),
            ),
        )
        .await
        .unwrap();
    assert!(job > 0, "jobstart gave {job}");
    let sum: i64 = nvim
        .call("nvim_eval", (format!("rpcrequest({job}, 'add', 20, 22)"),))
        .await
        .unwrap();
    assert_eq!(sum, 42);
    let said: String = nvim
        .call("nvim_eval", (format!("rpcrequest({job}, 'greet', 'Ada')"),))
        .await
        .unwrap();
    assert_eq!(said, "greeted Ada; buffer 1 has 1 line(s)");
    let greeting: String = nvim.call("nvim_get_var", ("greeting",)).await.unwrap();
    assert_eq!(greeting, "hello Ada");
    // A plugin's error reaches neovim's caller.
    let caught: String = nvim
        .call(
            "nvim_exec_lua",
            (
                format!("local ok, e = pcall(vim.rpcrequest, {job}, 'no_such') return tostring(e)"),
                Vec::<Value>::new(),
            ),
        )
        .await
        .unwrap();
    assert!(caught.contains("method not found: no_such"), "{caught}");
    let () = nvim
        .call("nvim_eval", (format!("rpcnotify({job}, 'quit')"),))
        .await
        .map(|_: i64| ())
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let code = loop {
        match nvim.call::<i64>("nvim_get_var", ("plugin_exit",)).await {
            Ok(code) => break code,
            Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("the plugin did not exit within 10 s of quit: {e}"),
        }
    };
    assert_eq!(code, 0, "the plugin exited 0 when told to quit");
    child.kill();
}
