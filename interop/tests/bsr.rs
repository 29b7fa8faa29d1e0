//! basic-socket-rpc: rpc-stack against the real basic-socket-rpc 0.6.1 in both directions,
//! byte-exact checks from the captured greet session, bad input, and exclusive access.

use std::time::Duration;

use interop::{py_dir, python, PeerProcess};
use rpc_core::{Route, Router};
use rpc_transports::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn hello(name: String) -> String {
    format!("hello {name}")
}

async fn goodbye(name: String) -> String {
    format!("goodbye {name}")
}

async fn add_2_words(a: u32, b: u32) -> u32 {
    a.wrapping_add(b)
}

async fn func_no_args() {}

fn greet() -> Router {
    Router::new()
        .add_route(Route::new(hello).name("hello").command(0))
        .add_route(Route::new(goodbye).name("goodbye").command(1))
        .add_route(Route::new(add_2_words).name("add_2_words").command(2))
        .add_route(Route::new(func_no_args).name("func_no_args").command(3))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut size))
        .await
        .expect("a frame within 5 s")
        .unwrap();
    let n = u32::from_le_bytes(size) as usize;
    let mut rest = vec![0u8; n - 4];
    s.read_exact(&mut rest).await.unwrap();
    let mut frame = size.to_vec();
    frame.extend(rest);
    frame
}

/// The exception frame's name and text.
fn exception(frame: &[u8]) -> (String, String) {
    assert_eq!(frame[4], 4, "an exception frame: {frame:02x?}");
    let mut rest = &frame[5..];
    let mut take = || {
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let s = String::from_utf8(rest[4..4 + n].to_vec()).unwrap();
        rest = &rest[4 + n..];
        s
    };
    (take(), take())
}

#[tokio::test]
async fn the_captured_greet_session_byte_for_byte() {
    let server = raw::Builder::new()
        .serve(greet())
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    for (request, response) in [
        ("08000000 00 000001", "06000000 00 01"),
        (
            "11000000 01 0000 06000000 526f62657274",
            "15000000 01 0c000000 68656c6c6f20526f62657274",
        ),
        (
            "11000000 01 0100 06000000 526f62657274",
            "17000000 01 0e000000 676f6f6462796520526f62657274",
        ),
        ("0f000000 01 0200 e8030000 02080000", "09000000 01 ea0b0000"),
        ("07000000 01 0300", "05000000 01"),
    ] {
        s.write_all(&hex(request)).await.unwrap();
        assert_eq!(
            read_frame(&mut s).await,
            hex(response),
            "answer to {request}"
        );
    }
    // Unknown command 99: an exception frame, with no traceback or path in it.
    s.write_all(&hex("07000000 01 6300")).await.unwrap();
    let (name, text) = exception(&read_frame(&mut s).await);
    assert_eq!(name, "ProtocolError");
    assert!(text.contains("99"), "{text}");
    assert!(
        !text.contains("Traceback") && !text.contains(".rs"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_input_gets_exceptions_and_the_connection_stays_usable() {
    let server = raw::Builder::new()
        .serve(greet())
        .max_frame_length(1024)
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    // RPC before INIT.
    s.write_all(&hex("07000000 01 0300")).await.unwrap();
    assert!(exception(&read_frame(&mut s).await)
        .1
        .contains("initialize"));
    s.write_all(&hex("08000000 00 000001")).await.unwrap();
    assert_eq!(read_frame(&mut s).await, hex("06000000 00 01"));
    for (bad, says) in [
        ("08000000 00 000001", "already"),         // a second INIT
        ("06000000 01 03", "insufficient"),        // a short command id
        ("05000000 07", "type"),                   // an unknown type
        ("03000000", "too small"),                 // a size field under 5
        ("0b000000 01 0300 01020304", "trailing"), // trailing argument bytes
        ("0d000000 01 0000 06000000 5265", "invalid params"), // missing argument bytes
        ("0d000000 01 0000 02000000 fffe", "invalid params"), // invalid UTF-8
    ] {
        s.write_all(&hex(bad)).await.unwrap();
        let (name, text) = exception(&read_frame(&mut s).await);
        assert!(text.to_lowercase().contains(says), "{bad}: {name}: {text}");
        // Still usable.
        s.write_all(&hex("0f000000 01 0200 e8030000 02080000"))
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut s).await,
            hex("09000000 01 ea0b0000"),
            "after {bad}"
        );
    }
    // A size over the limit (here 4 GiB): an exception, then the connection closes, and nothing
    // that size is ever allocated.
    s.write_all(&hex("ffffffff 01 0000")).await.unwrap();
    let (_, text) = exception(&read_frame(&mut s).await);
    assert!(text.contains("exceeds"), "{text}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    // Others are still served.
    let client = raw::Builder::new().client_tcp(server.local_addr());
    let r: u32 = client.call(2u16, (1u32, 2u32)).await.unwrap();
    assert_eq!(r, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_calls_the_rpc_stack_greet_server() {
    let server = raw::Builder::new()
        .serve(greet())
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    interop::python_client_passes("bsr_peer.py", &server.local_addr().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_stack_client_calls_the_python_greet_server() {
    let peer = PeerProcess::start("bsr_peer.py", &["server"]);
    let client = raw::Builder::new().client_tcp(peer.listen_addr());
    let hello: String = client.call(0u16, ("Robert",)).await.unwrap();
    assert_eq!(hello, "hello Robert");
    let goodbye: String = client.call(1u16, ("Robert",)).await.unwrap();
    assert_eq!(goodbye, "goodbye Robert");
    let sum: u32 = client.call(2u16, (1000u32, 2050u32)).await.unwrap();
    assert_eq!(sum, 3050);
    let () = client.call(3u16, ()).await.unwrap();
    // Python answers an unknown command with an exception frame (a traceback, in its case).
    let err = client.call::<()>(99u16, ()).await.unwrap_err();
    assert!(err.is_method_not_found(), "{err}");
    // And wrong arguments (a trailing byte) too; the connection stays usable.
    let err = client
        .call::<u32>(2u16, (1u32, 2u32, 3u8))
        .await
        .unwrap_err();
    assert!(err.server_error().is_some(), "{err}");
    let sum: u32 = client.call(2u16, (1u32, 2u32)).await.unwrap();
    assert_eq!(sum, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_access_serves_three_python_clients_one_at_a_time() {
    let python = python();
    let server = raw::Builder::new()
        .exclusive()
        .serve(greet())
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(
            tokio::process::Command::new(&python)
                .arg(py_dir().join("bsr_peer.py"))
                .args(["hold", &addr, "0.5"])
                .output(),
        );
        // Ask in a known order.
        tokio::time::sleep(Duration::from_millis(100 * (i + 1))).await;
    }
    let mut sessions = Vec::new();
    for c in clients {
        let out = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("within 60 s")
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let time = |tag: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(tag))
                .unwrap_or_else(|| panic!("{tag} missing in {text}"))
                .trim()
                .parse()
                .unwrap()
        };
        sessions.push((time("session at "), time("released at ")));
    }
    // One at a time: every session starts after the one before it ended, in the order asked.
    for w in sessions.windows(2) {
        assert!(w[1].0 >= w[0].1 - 0.05, "sessions overlap: {sessions:?}");
    }
}

#[tokio::test]
async fn sessions_are_granted_in_the_order_asked() {
    let server = raw::Builder::new()
        .exclusive()
        .serve(greet())
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let client = |retry_ms| {
        raw::Builder::new()
            .init_retry_interval(Duration::from_millis(retry_ms))
            .client_tcp(server.local_addr())
    };
    let first = client(20);
    let _: String = first.call(0u16, ("first",)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (name, retry) in [("second", 60), ("third", 10)] {
        let c = client(retry);
        let tx = tx.clone();
        tokio::spawn(async move {
            let _: String = c.call(0u16, (name,)).await.unwrap();
            tx.send(name).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(c);
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nobody else gets in while the first holds the session.
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err());
    drop(first);
    // The second asked first, so it goes first, though the third asks again more often.
    assert_eq!(rx.recv().await, Some("second"));
    assert_eq!(rx.recv().await, Some("third"));
}

#[tokio::test]
async fn over_a_unix_socket_with_detailed_errors() {
    let dir = std::env::temp_dir().join(format!("rpc-bsr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("greet.sock");
    let server = raw::Builder::new()
        .detailed_errors(true)
        .serve(greet())
        .bind_unix(&path)
        .await
        .unwrap();
    let client = raw::Builder::new().client_unix(&path);
    let hello: String = client.call(0u16, ("Unix",)).await.unwrap();
    assert_eq!(hello, "hello Unix");
    // With detail on, the exception text carries the code.
    let err = client
        .call::<u32>(2u16, ("not a number",))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        err.is_invalid_params() && text.contains("code -32602"),
        "{text}"
    );
    // By name the raw protocol cannot call.
    let err = client.call::<String>("hello", ("x",)).await.unwrap_err();
    assert!(matches!(err, rpc_core::Error::Codec(_)), "{err}");
    assert!(server.shutdown(Duration::from_secs(1)).await);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A handler answering `n` bytes.
async fn big(n: u32) -> String {
    "x".repeat(n as usize)
}

/// A basic-socket-rpc frame: little-endian size (itself included), type, payload.
fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 5) as u32).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// The size of the answer a hog asks for: more than the sockets' buffers on both sides hold
/// (Linux allows each a few MiB at most by default), so writing it cannot finish while the hog
/// reads nothing.
const HOG_ANSWER: u32 = 64 << 20;

/// INIT, then one call for a [`HOG_ANSWER`]-byte answer, from a peer that will read none of it.
fn hog_bytes() -> Vec<u8> {
    let mut bytes = raw_frame(0, &[0, 0, 1]);
    let mut rpc = vec![0u8, 0];
    rpc.extend_from_slice(&HOG_ANSWER.to_le_bytes());
    bytes.extend_from_slice(&raw_frame(1, &rpc));
    bytes
}

/// A server built by `builder` serving `big`, and a peer that asked for an answer larger than
/// the sockets hold and reads none: once the server has read the request it is writing that
/// answer, and cannot finish (nor stop between frames to drain).
async fn stuck_behind_a_hog(builder: raw::Builder) -> (rpc_transports::tcp::Server, TcpStream) {
    let server = builder
        .max_frame_length(HOG_ANSWER as usize + 64)
        .serve(Router::new().command(0, big))
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let mut hog = TcpStream::connect(server.local_addr()).await.unwrap();
    hog.write_all(&hog_bytes()).await.unwrap();
    while server.stats().requests < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (server, hog)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reads_no_answers_loses_its_session_after_the_write_timeout() {
    let builder = raw::Builder::new()
        .exclusive()
        .write_timeout(Duration::from_millis(300));
    // The hog holds the session.
    let (server, hog) = stuck_behind_a_hog(builder).await;
    let other = raw::Builder::new()
        .timeout(Duration::from_secs(5))
        .init_retry_interval(Duration::from_millis(100))
        .client_tcp(server.local_addr());
    let answer: String = other.call(0u16, (3u32,)).await.unwrap();
    assert_eq!(answer, "xxx");
    assert_eq!(server.stats().write_stalled, 1);
    drop(hog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_shutdown_closes_a_connection_whose_peer_reads_no_answers() {
    let (server, hog) = stuck_behind_a_hog(raw::Builder::new().write_timeout(Duration::MAX)).await;
    assert!(!server.shutdown(Duration::from_millis(200)).await);
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the forced shutdown closed the connection");
    drop(hog);
}

#[tokio::test]
async fn a_request_has_no_deadline_the_protocol_did_not_carry() {
    async fn deadline(ctx: rpc_core::Context) -> String {
        format!("{:?}", ctx.deadline())
    }
    let server = raw::Builder::new()
        .idle_timeout(Some(Duration::from_secs(60)))
        .serve(Router::new().command(0, deadline))
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let client = raw::Builder::new().client_tcp(server.local_addr());
    let seen: String = client.call(0u16, ()).await.unwrap();
    assert_eq!(seen, "None");
}

#[tokio::test]
async fn failed_calls_are_not_counted_as_malformed_frames() {
    let server = raw::Builder::new()
        .serve(greet())
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let client = raw::Builder::new().client_tcp(server.local_addr());
    // Wrong argument types: the call fails, the frame was well formed.
    for _ in 0..3 {
        assert!(client.call::<u32>(2u16, ("not a number",)).await.is_err());
    }
    assert_eq!(server.stats().malformed, 0);
    // A frame of an unknown type is malformed.
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&raw_frame(9, b"")).await.unwrap();
    let _ = read_frame(&mut s).await;
    assert_eq!(server.stats().malformed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_is_never_taken_by_the_next_call() {
    async fn slow_one(n: u32) -> u32 {
        if n == 1 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        n
    }
    let server = raw::Builder::new()
        .serve(Router::new().command(0, slow_one))
        .bind_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let client = raw::Builder::new()
        .timeout(Duration::from_secs(2))
        .client_tcp(server.local_addr());
    // The first call times out while its answer is on the way; the second, queued behind it
    // for the connection, must get its own answer.
    let impatient = client.clone().with_timeout(Duration::from_millis(200));
    let first = impatient.call::<u32>(0u16, (1u32,));
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.call::<u32>(0u16, (2u32,)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.unwrap_err().is_timeout());
    assert_eq!(
        second.unwrap(),
        2,
        "the second call got the first call's answer"
    );
    // Later calls are answered correctly.
    assert_eq!(client.call::<u32>(0u16, (3u32,)).await.unwrap(), 3);
}
