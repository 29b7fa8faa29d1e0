//! Randomized property of the stream framings, through the public API only: over a real
//! loopback TCP connection, a peer writes a random sequence of small JSON-RPC requests (and
//! notifications) in randomly sized chunks split at arbitrary points, so frames and their
//! delimiters or length prefixes straddle reads; every request is answered exactly once, with
//! the right result, and no notification is answered.
//!
//! Run for `Framing::Newline`, `Framing::Eot`, `Framing::LengthPrefixed` and
//! `Framing::ContentLength` (with a `Content-Type` header too, as LSP clients send it), with
//! `JsonRpcCodec`. Each case is one connection to a server shared by the cases of a framing;
//! failures are not persisted to files.
// serde_json comes with the `raw` feature (a default one).
#![cfg(all(feature = "tcp", feature = "raw"))]

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_core::Router;
use rpc_transports::stream::Framing;
use rpc_transports::tcp;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Cases per framing.
const CASES: u32 = 48;
/// The longest a case may take end to end.
const LIMIT: Duration = Duration::from_secs(10);

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn echo(s: String) -> String {
    s
}

fn router() -> Router {
    Router::new().route("add", add).route("echo", echo)
}

/// One message the peer sends: a call to `add` or `echo`, answered unless a notification.
#[derive(Debug, Clone)]
enum Call {
    Add(i32, i32),
    Echo(String),
}

impl Call {
    fn method_and_params(&self) -> (&'static str, Value) {
        match self {
            Call::Add(a, b) => ("add", json!([a, b])),
            Call::Echo(s) => ("echo", json!([s])),
        }
    }

    fn result(&self) -> Value {
        match self {
            Call::Add(a, b) => json!(i64::from(*a) + i64::from(*b)),
            Call::Echo(s) => json!(s),
        }
    }
}

/// Any character, delimiters and what JSON escapes included (they travel escaped).
fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        3 => any::<char>(),
        3 => proptest::char::range(' ', '~'),
        2 => proptest::sample::select(vec!['\n', '\u{4}', '"', '\\', '\0', '\r', '\u{2028}']),
    ];
    proptest::collection::vec(c, 0..24).prop_map(String::from_iter)
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (any::<i32>(), any::<i32>()).prop_map(|(a, b)| Call::Add(a, b)),
        text().prop_map(Call::Echo),
    ]
}

/// The messages (each a notification or not), and where to cut the bytes on the wire, with
/// whether to pause after each chunk so that it arrives in a read of its own.
type Case = (Vec<(Call, bool)>, Vec<(Index, bool)>);

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec((call(), proptest::bool::weighted(0.2)), 1..16),
        proptest::collection::vec((any::<Index>(), any::<bool>()), 0..24),
    )
}

/// The id of the `i`-th message: numbers and strings alternate.
fn id_of(i: usize) -> Value {
    if i % 2 == 0 {
        json!(i)
    } else {
        json!(format!("s{i}"))
    }
}

/// The frames of `messages` on the wire, framed as `framing` frames them.
fn wire(framing: Framing, messages: &[(Call, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (call, notification)) in messages.iter().enumerate() {
        let (method, params) = call.method_and_params();
        let mut msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if !notification {
            msg["id"] = id_of(i);
        }
        let frame = serde_json::to_vec(&msg).unwrap();
        match framing {
            Framing::LengthPrefixed => {
                out.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_be_bytes());
                out.extend_from_slice(&frame);
            }
            Framing::Newline => {
                assert!(!frame.contains(&b'\n'));
                out.extend_from_slice(&frame);
                out.push(b'\n');
            }
            Framing::Eot => {
                assert!(!frame.contains(&0x04));
                out.extend_from_slice(&frame);
                out.push(0x04);
            }
            Framing::ContentLength => {
                let extra = if i % 2 == 0 {
                    "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
                } else {
                    ""
                };
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n{extra}\r\n", frame.len()).as_bytes(),
                );
                out.extend_from_slice(&frame);
            }
            _ => unreachable!("not tested here"),
        }
    }
    out
}

/// Cuts the server's answers into frames.
fn frames(framing: Framing, mut bytes: &[u8]) -> Result<Vec<&[u8]>, TestCaseError> {
    let mut out = Vec::new();
    match framing {
        Framing::LengthPrefixed => {
            while !bytes.is_empty() {
                prop_assert!(bytes.len() >= 4, "a torn length prefix");
                let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
                prop_assert!(bytes.len() >= 4 + len, "a torn frame");
                out.push(&bytes[4..4 + len]);
                bytes = &bytes[4 + len..];
            }
        }
        Framing::Newline | Framing::Eot => {
            let d = if let Framing::Newline = framing {
                b'\n'
            } else {
                0x04
            };
            if !bytes.is_empty() {
                prop_assert_eq!(bytes.last(), Some(&d), "a frame without its delimiter");
                out.extend(bytes[..bytes.len() - 1].split(|b| *b == d));
            }
        }
        Framing::ContentLength => {
            while !bytes.is_empty() {
                let text = String::from_utf8_lossy(bytes);
                let Some(end) = text.find("\r\n\r\n") else {
                    return Err(TestCaseError::fail("a torn header block"));
                };
                let len: usize = text[..end]
                    .strip_prefix("Content-Length: ")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| TestCaseError::fail("a header block of another shape"))?;
                let body = end + 4;
                prop_assert!(bytes.len() >= body + len, "a torn frame");
                out.push(&bytes[body..body + len]);
                bytes = &bytes[body + len..];
            }
        }
        _ => unreachable!("not tested here"),
    }
    Ok(out)
}

/// Sends the case's bytes in chunks on a fresh connection, closes the sending side, and reads
/// every answer until the server closes.
async fn exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    cuts: &[(Index, bool)],
) -> std::io::Result<Vec<u8>> {
    let mut points: Vec<(usize, bool)> = cuts
        .iter()
        .map(|(at, pause)| (at.index(bytes.len() + 1), *pause))
        .collect();
    points.sort_unstable();
    points.dedup_by_key(|p| p.0);
    points.push((bytes.len(), false));
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut from = 0;
    for (to, pause) in points {
        if to > from {
            s.write_all(&bytes[from..to]).await?;
            s.flush().await?;
            from = to;
        }
        if pause {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    s.shutdown().await?;
    let mut answers = Vec::new();
    s.read_to_end(&mut answers).await?;
    Ok(answers)
}

fn check(framing: Framing) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(
            tcp::Builder::new()
                .framing(framing)
                .serve(router())
                .bind("127.0.0.1:0", JsonRpcCodec::new()),
        )
        .unwrap();
    let addr = server.local_addr();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&case(), |(messages, cuts)| {
        let bytes = wire(framing, &messages);
        let answers = rt
            .block_on(async { tokio::time::timeout(LIMIT, exchange(addr, &bytes, &cuts)).await })
            .map_err(|_| TestCaseError::fail("no end of the answers within the limit"))?
            .map_err(|e| TestCaseError::fail(format!("i/o: {e}")))?;
        let mut expected: HashMap<String, Value> = messages
            .iter()
            .enumerate()
            .filter(|(_, (_, notification))| !notification)
            .map(|(i, (call, _))| (id_of(i).to_string(), call.result()))
            .collect();
        let frames = frames(framing, &answers)?;
        prop_assert_eq!(frames.len(), expected.len(), "one answer per request");
        for f in frames {
            let v: Value = serde_json::from_slice(f)
                .map_err(|e| TestCaseError::fail(format!("an answer that is not JSON: {e}")))?;
            prop_assert_eq!(&v["jsonrpc"], "2.0");
            let id = v["id"].to_string();
            match expected.remove(&id) {
                Some(result) => prop_assert_eq!(&v["result"], &result, "the answer to {}", id),
                None => prop_assert!(false, "an answer to no request, or a second one: {}", v),
            }
        }
        prop_assert!(expected.is_empty(), "unanswered: {:?}", expected);
        Ok(())
    });
    rt.block_on(server.shutdown(Duration::from_secs(1)));
    if let Err(e) = result {
        panic!("{framing:?}: {e}");
    }
}

#[test]
fn newline_requests_in_random_chunks_are_each_answered_once() {
    check(Framing::Newline);
}

#[test]
fn eot_requests_in_random_chunks_are_each_answered_once() {
    check(Framing::Eot);
}

#[test]
fn content_length_requests_in_random_chunks_are_each_answered_once() {
    check(Framing::ContentLength);
}

#[test]
fn length_prefixed_requests_in_random_chunks_are_each_answered_once() {
    check(Framing::LengthPrefixed);
}
