//! Randomized inputs to the JSON-RPC codec: whatever the bytes, the codec either yields messages
//! or an error that encodes as a valid JSON-RPC error response, or nothing; it never panics.
//! (Deterministic: a fixed-seed generator, so a failure reproduces.)

use bytes::{Bytes, BytesMut};
use rpc_codecs::jsonrpc::{Id, JsonRpcCodec};
use rpc_core::codec::{Codec, DecodeError, Message};
use serde_json::Value;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": "x"}"#,
    r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#,
    r#"{"jsonrpc": "2.0", "result": 19, "id": 1}"#,
    r#"{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found", "data": [1]}, "id": "1"}"#,
    r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"foo": "boo"}, 1]"#,
    r#"[]"#,
];

const STANDARD: &[i64] = &[-32700, -32600];

fn check_error_reply(codec: &JsonRpcCodec, e: &DecodeError<Id>, input: &[u8]) {
    let Some(id) = &e.reply_to else { return };
    let mut dst = BytesMut::new();
    assert!(codec
        .encode_response(id, Err(&e.error), &mut dst)
        .expect("an error always encodes"));
    let v: Value = serde_json::from_slice(&dst).unwrap_or_else(|err| {
        panic!(
            "invalid JSON ({err}) for input {:?}",
            String::from_utf8_lossy(input)
        )
    });
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v.get("result").is_none());
    assert!(
        STANDARD.contains(&v["error"]["code"].as_i64().unwrap()),
        "{v}"
    );
    assert!(v["error"]["message"].is_string());
    assert!(v.get("id").is_some());
}

fn check(codec: &JsonRpcCodec, input: Vec<u8>) {
    let frame = Bytes::from(input.clone());
    match codec.decode(frame) {
        Ok(Message::Batch(items)) => {
            for item in items {
                if let Err(e) = item {
                    check_error_reply(codec, &e, &input);
                }
            }
        }
        Ok(_) => {}
        Err(e) => check_error_reply(codec, &e, &input),
    }
}

#[test]
fn random_bytes() {
    let codec = JsonRpcCodec::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&codec, input);
    }
}

#[test]
fn mutated_messages() {
    let codec = JsonRpcCodec::new();
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let alphabet = br#"{}[]",:0123456789-.eE truefalsenull\u"#;
    for _ in 0..50_000 {
        let mut input = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(4) {
                0 if at < input.len() => {
                    input.remove(at);
                }
                1 => input.insert(at, alphabet[rng.below(alphabet.len())]),
                2 if at < input.len() => input[at] = rng.next() as u8,
                _ => input.truncate(at),
            }
        }
        check(&codec, input);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let codec = JsonRpcCodec::new();
    for depth in [100, 10_000, 1_000_000] {
        let mut input = b"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":".to_vec();
        input.extend(std::iter::repeat_n(b'[', depth));
        input.extend(std::iter::repeat_n(b']', depth));
        input.extend_from_slice(b",\"id\":1}");
        check(&codec, input.clone());
        check(&codec, std::iter::repeat_n(b'[', depth).collect());
    }
}

#[test]
fn nothing_that_looks_like_a_response_is_answered_whatever_its_id() {
    let codec = JsonRpcCodec::new();
    for frame in [
        &br#"{"jsonrpc":"2.0","result":1,"id":true}"#[..],
        br#"{"jsonrpc":"2.0","error":{"code":1,"message":"x"},"id":[1]}"#,
        br#"{"jsonrpc":"2.0","result":1,"id":{"a":1}}"#,
    ] {
        if let Err(e) = codec.decode(Bytes::copy_from_slice(frame)) {
            assert!(
                e.reply_to.is_none(),
                "answered {}: {:?}",
                String::from_utf8_lossy(frame),
                e.error
            );
        }
    }
    // A request with a bad id is still answered, with id null.
    let e = codec
        .decode(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"m","id":true}"#,
        ))
        .unwrap_err();
    assert_eq!(e.reply_to, Some(Id::Null));
}

#[test]
fn a_request_carrying_result_or_error_is_invalid() {
    let codec = JsonRpcCodec::new();
    for frame in [
        &br#"{"jsonrpc":"2.0","method":"m","result":1,"id":1}"#[..],
        br#"{"jsonrpc":"2.0","method":"m","error":{"code":1,"message":"x"},"id":1}"#,
    ] {
        let e = codec.decode(Bytes::copy_from_slice(frame)).unwrap_err();
        assert_eq!(
            e.error.code().code(),
            -32600,
            "{}",
            String::from_utf8_lossy(frame)
        );
        assert!(e.reply_to.is_some());
    }
}

#[test]
fn number_ids_are_echoed_byte_for_byte() {
    use rpc_core::Payload;
    let codec = JsonRpcCodec::new();
    for id in ["1180591620717411303424", "1e400", "-0", "7.50", "12"] {
        let frame = format!(r#"{{"jsonrpc":"2.0","method":"m","params":[],"id":{id}}}"#);
        let Ok(Message::Request { id: Some(got), .. }) = codec.decode(Bytes::from(frame)) else {
            panic!("{id}: not a request");
        };
        let mut dst = BytesMut::new();
        let result = Payload::encode(codec.format(), &1u8).unwrap();
        codec.encode_response(&got, Ok(&result), &mut dst).unwrap();
        let answer = String::from_utf8(dst.to_vec()).unwrap();
        assert!(
            answer.ends_with(&format!(r#","id":{id}}}"#)),
            "{id}: {answer}"
        );
    }
}
