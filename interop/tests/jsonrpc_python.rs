//! rpc-stack's JSON-RPC against the Python packages: differential tests against jsonrpcserver
//! 5.0.9 on a corpus of valid and invalid requests, and jsonrpcclient 4.0.3 calling rpc-stack.

use std::collections::BTreeSet;
use std::time::Duration;

use interop::{jsonrpc_spec_router, py_dir, python};
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_transports::stream::Framing;
use rpc_transports::tcp;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Requests, valid and not. Where jsonrpcserver departs from the specification the case is listed
/// in `DEPARTURES` with the reason, and rpc-stack follows the specification.
const CORPUS: &[&str] = &[
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": "four"}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42], "id": 5}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23, 1], "id": 6}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42}, "id": 7}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 1, "x": 0}, "id": 8}"#,
    r#"{"jsonrpc": "2.0", "method": "sum", "params": [1, 2, 4], "id": 9}"#,
    r#"{"jsonrpc": "2.0", "method": "sum", "params": [], "id": 10}"#,
    r#"{"jsonrpc": "2.0", "method": "sum", "id": 11}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "id": 12}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "params": [], "id": 13}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "id": null}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "id": -1}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "id": ""}"#,
    r#"{"jsonrpc": "2.0", "method": "update", "params": [1, 2, 3, 4, 5]}"#,
    r#"{"jsonrpc": "2.0", "method": "foobar"}"#,
    r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#,
    r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
    r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
    r#"{"jsonrpc": "2.0", "method": "sum", "params": 3, "id": 20}"#,
    r#"{"jsonrpc": "1.0", "method": "get_data", "id": 21}"#,
    r#"{"method": "get_data", "id": 22}"#,
    r#"{"jsonrpc": "2.0", "id": 23}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "id": 24, "extra": true}"#,
    r#"{"jsonrpc": "2.0", "method": "get_data", "id": [25]}"#,
    r#""a string""#,
    r#"42"#,
    r#"null"#,
    r#"not json"#,
    r#"[]"#,
    r#"[1]"#,
    r#"[1, 2, 3]"#,
    r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method"]"#,
    r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}, {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"}, {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"}, {"jsonrpc": "2.0", "method": "get_data", "id": "9"}]"#,
    r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"foo": "boo"}]"#,
    r#"[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]"#,
];

/// Cases where jsonrpcserver departs from the specification, and why.
const DEPARTURES: &[(&str, &str)] = &[
    (
        r#"[1]"#,
        "jsonrpcserver answers a batch with an invalid member with one error for the whole batch; \
         the specification answers each member",
    ),
    (r#"[1, 2, 3]"#, "the same: one error instead of three"),
    (
        r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"foo": "boo"}]"#,
        "the same: the valid member goes unanswered",
    ),
];

/// An answer reduced to its meaning: per id, the result or the error code.
fn meaning(answer: Option<&str>) -> String {
    fn one(v: &Value) -> String {
        match v.get("error") {
            Some(e) => format!("id={} error={}", v["id"], e["code"]),
            None => format!("id={} result={}", v["id"], v["result"]),
        }
    }
    let Some(text) = answer else {
        return "nothing".into();
    };
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    match &v {
        Value::Array(items) => {
            let set: BTreeSet<String> = items.iter().map(one).collect();
            format!("batch {set:?}")
        }
        other => one(other),
    }
}

async fn rpc_stack_answers(corpus: &[&str]) -> Vec<Option<String>> {
    let server = tcp::Builder::new()
        .serve(jsonrpc_spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut out = Vec::new();
    let probe = r#"{"jsonrpc": "2.0", "method": "get_data", "id": "probe"}"#;
    for text in corpus {
        // Each case is followed by a probe: if the probe's answer comes first, the case had none.
        for t in [*text, probe] {
            s.write_all(&(t.len() as u32).to_be_bytes()).await.unwrap();
            s.write_all(t.as_bytes()).await.unwrap();
        }
        let mut answers = Vec::new();
        loop {
            let mut len = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
                .await
                .expect("answered within 5 s")
                .unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await.unwrap();
            let body = String::from_utf8(body).unwrap();
            if body.contains(r#""id":"probe""#) {
                break;
            }
            answers.push(body);
        }
        assert!(
            answers.len() <= 1,
            "{text}: more than one answer: {answers:?}"
        );
        out.push(answers.pop());
    }
    out
}

#[tokio::test]
async fn agrees_with_jsonrpcserver() {
    let python = python();
    let corpus_json = serde_json::to_string(CORPUS).unwrap();
    let mut child = tokio::process::Command::new(python)
        .arg(py_dir().join("jsonrpc_peer.py"))
        .arg("dispatch")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(corpus_json.as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("jsonrpcserver finished within 60 s")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    let ours = rpc_stack_answers(CORPUS).await;
    assert_eq!(theirs.len(), CORPUS.len());

    let mut departures_seen = 0;
    for ((text, a), b) in CORPUS.iter().zip(&ours).zip(&theirs) {
        let (mine, reference) = (meaning(a.as_deref()), meaning(b.as_deref()));
        match DEPARTURES.iter().find(|(t, _)| t == text) {
            Some((_, why)) => {
                assert_ne!(
                    mine, reference,
                    "{text}: listed as a departure ({why}) but both agree"
                );
                departures_seen += 1;
            }
            None => assert_eq!(
                mine, reference,
                "{text}\n rpc-stack:     {a:?}\n jsonrpcserver: {b:?}"
            ),
        }
    }
    assert_eq!(departures_seen, DEPARTURES.len());
}

#[tokio::test]
async fn jsonrpcclient_calls_rpc_stack() {
    let server = tcp::Builder::new()
        .framing(Framing::Newline)
        .serve(jsonrpc_spec_router())
        .bind("127.0.0.1:0", JsonRpcCodec::new())
        .await
        .unwrap();
    interop::python_client_passes("jsonrpc_peer.py", &server.local_addr().to_string()).await;
}
