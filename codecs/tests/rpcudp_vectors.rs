//! Byte-exact tests of `RpcudpCodec` against the rpcudp 5.0.1 and kademlia 2.2.3 captures in
//! `wire-formats.md` §1, and its handling of malformed datagrams and rpc-stack's error replies.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use rpc_codecs::msgpack::{MessageId, MsgPack, RpcudpCodec};
use rpc_core::format::{AsSeq, FromArgs};
use rpc_core::{Codec, DecodeError, ErrorCode, Message, Method, Payload, ServerError};

/// Parses hex digits, ignoring whitespace.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn id_from_hex(s: &str) -> MessageId {
    MessageId(hex(s).try_into().expect("20 bytes"))
}

/// Concatenates byte slices.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn encode_request(id: Option<&MessageId>, method: impl Into<Method>, args: &Payload) -> Vec<u8> {
    let mut dst = BytesMut::new();
    RpcudpCodec::new()
        .encode_request(id, &method.into(), args, &mut dst)
        .expect("encodes");
    dst.to_vec()
}

fn encode_response(id: &MessageId, result: &Payload) -> Vec<u8> {
    let mut dst = BytesMut::new();
    let written = RpcudpCodec::new()
        .encode_response(id, Ok(result), &mut dst)
        .expect("encodes");
    assert!(written);
    dst.to_vec()
}

fn decode(frame: &[u8]) -> Result<Message<MessageId>, DecodeError<MessageId>> {
    RpcudpCodec::new().decode(Bytes::copy_from_slice(frame))
}

fn args<A: rpc_core::format::Args + ?Sized>(a: &A) -> Payload {
    Payload::encode(&MsgPack, &AsSeq(a)).expect("encodes")
}

// --- sayhi("Snake Plissken") -------------------------------------------------------------------

const SAYHI_ID: &str = "1c6ad14bbeccff932a4d13d17904232301af7b5d";
const SAYHI_ANSWER: &str = "Hello Snake Plissken you live at 127.0.0.1:60458";

fn sayhi_request() -> Vec<u8> {
    hex(&format!(
        "00 {SAYHI_ID} 92 a5 7361796869 91 ae 536e616b6520506c6973736b656e"
    ))
}

fn sayhi_response() -> Vec<u8> {
    cat(&[
        &hex(&format!("01 {SAYHI_ID} d9 30")),
        SAYHI_ANSWER.as_bytes(),
    ])
}

#[test]
fn sayhi_request_decodes() {
    let frame = sayhi_request();
    assert_eq!(frame.len(), 44);
    let Ok(Message::Request {
        id, method, args, ..
    }) = decode(&frame)
    else {
        panic!("not a request: {:?}", decode(&frame));
    };
    assert_eq!(id, Some(id_from_hex(SAYHI_ID)));
    assert_eq!(method.name(), Some("sayhi"));
    assert_eq!(method, Method::from("sayhi"));
    assert_eq!(args.as_ref(), hex("91 ae 536e616b6520506c6973736b656e"));

    let payload = Payload::new(args, &MsgPack);
    let (name,) = <(String,) as FromArgs>::from_args(&payload, None).expect("one string");
    assert_eq!(name, "Snake Plissken");
    let (name,): (String,) = payload.decode().expect("decodes as a tuple");
    assert_eq!(name, "Snake Plissken");
    // Arity is exact: the one-element list is neither zero nor two arguments.
    assert!(<(String, String) as FromArgs>::from_args(&payload, None).is_err());
    assert!(<() as FromArgs>::from_args(&payload, None).is_err());
}

#[test]
fn sayhi_request_encodes_byte_for_byte() {
    let id = id_from_hex(SAYHI_ID);
    let bytes = encode_request(Some(&id), "sayhi", &args(&("Snake Plissken",)));
    assert_eq!(bytes, sayhi_request());
}

#[test]
fn sayhi_response_round_trips() {
    let id = id_from_hex(SAYHI_ID);
    let frame = sayhi_response();
    assert_eq!(frame.len(), 71);

    let result = Payload::encode(&MsgPack, SAYHI_ANSWER).unwrap();
    assert_eq!(encode_response(&id, &result), frame);

    let Ok(Message::Response { id: got, result }) = decode(&frame) else {
        panic!("not a response: {:?}", decode(&frame));
    };
    assert_eq!(got, id);
    let body = result.expect("a result, not an error");
    let answer: String = Payload::new(body, &MsgPack).decode().unwrap();
    assert_eq!(answer, SAYHI_ANSWER);
}

// --- echo(1, -1, 3.5, True, None, b"\x01\x02", "s", [1,2], {"k":"v"}) ------------------------

const ECHO_ID: &str = "654cdde4b96bdf2672c06fe7c7003fe8283881b1";
const ECHO_ARGS: &str = "99 01 ff cb400c000000000000 c3 c0 c4020102 a173 920102 81a16ba176";

#[test]
fn echo_request_encodes_byte_for_byte() {
    let id = id_from_hex(ECHO_ID);
    let map: BTreeMap<&str, &str> = [("k", "v")].into_iter().collect();
    let a = (
        1i64,
        -1i64,
        3.5f64,
        true,
        None::<()>,
        serde_bytes::Bytes::new(b"\x01\x02"),
        "s",
        vec![1i64, 2],
        map,
    );
    let expected = hex(&format!("00 {ECHO_ID} 92 a4 6563686f {ECHO_ARGS}"));
    assert_eq!(encode_request(Some(&id), "echo", &args(&a)), expected);

    // `()` is nil too.
    let with_unit = (
        1i64,
        -1i64,
        3.5f64,
        true,
        (),
        serde_bytes::Bytes::new(b"\x01\x02"),
        "s",
        vec![1i64, 2],
        [("k", "v")].into_iter().collect::<BTreeMap<_, _>>(),
    );
    assert_eq!(
        encode_request(Some(&id), "echo", &args(&with_unit)),
        expected
    );

    // And the captured request decodes back into the same Rust values.
    let Ok(Message::Request { args, .. }) = decode(&expected) else {
        panic!("not a request");
    };
    type EchoArgs = (
        i64,
        i64,
        f64,
        bool,
        Option<()>,
        serde_bytes::ByteBuf,
        String,
        Vec<i64>,
        BTreeMap<String, String>,
    );
    let back = <EchoArgs as FromArgs>::from_args(&Payload::new(args, &MsgPack), None).unwrap();
    assert_eq!(back.0, 1);
    assert_eq!(back.1, -1);
    assert_eq!(back.2, 3.5);
    assert!(back.3);
    assert_eq!(back.4, None);
    assert_eq!(back.5.as_ref(), b"\x01\x02");
    assert_eq!(back.6, "s");
    assert_eq!(back.7, vec![1, 2]);
    assert_eq!(back.8.get("k").map(String::as_str), Some("v"));
}

#[test]
fn echo_response_keeps_str_bin_and_float64() {
    let id = id_from_hex(ECHO_ID);
    let frame = hex(&format!("01 {ECHO_ID} {ECHO_ARGS}"));
    let Ok(Message::Response { id: got, result }) = decode(&frame) else {
        panic!("not a response: {:?}", decode(&frame));
    };
    assert_eq!(got, id);
    let body = result.unwrap();
    let mut rd = &body[..];
    let v = rmpv::decode::read_value(&mut rd).unwrap();
    assert!(rd.is_empty());
    use rmpv::Value;
    let expected = Value::Array(vec![
        Value::from(1),
        Value::from(-1),
        Value::F64(3.5),
        Value::Boolean(true),
        Value::Nil,
        Value::Binary(vec![1, 2]),
        Value::from("s"),
        Value::Array(vec![Value::from(1), Value::from(2)]),
        Value::Map(vec![(Value::from("k"), Value::from("v"))]),
    ]);
    assert_eq!(v, expected);
    let items = v.as_array().unwrap();
    assert!(matches!(items[2], Value::F64(_)), "float64, not float32");
    // (rmpv's `is_bin` is true for strings too, so match the variants.)
    assert!(matches!(items[5], Value::Binary(_)), "bin stays bin");
    assert!(matches!(items[6], Value::String(_)), "str stays str");

    // Through the typed side as well: decoding as an rmpv::Value via serde keeps bin as bin.
    let via_serde: Value = Payload::new(body.clone(), &MsgPack).decode().unwrap();
    let items = via_serde.as_array().unwrap();
    assert!(matches!(items[5], Value::Binary(_)));
    assert!(matches!(items[6], Value::String(_)));
    assert!(matches!(items[2], Value::F64(_)));

    // Re-encoding the value as the answer reproduces the response.
    let result = Payload::encode(&MsgPack, &v).unwrap();
    assert_eq!(encode_response(&id, &result), frame);
}

// --- kademlia 2.2.3 ------------------------------------------------------------------------------

fn id_of(byte: u8) -> MessageId {
    MessageId([byte; 20])
}

fn twenty(byte: u8) -> String {
    format!("{byte:02x}").repeat(20)
}

#[test]
fn kademlia_ping_encodes_byte_for_byte() {
    let id = id_of(0x01);
    let node_id = [0xccu8; 20];
    let request = encode_request(
        Some(&id),
        "ping",
        &args(&(serde_bytes::Bytes::new(&node_id),)),
    );
    assert_eq!(
        request,
        hex(&format!(
            "00 {} 92 a4 70696e67 91 c414 {}",
            twenty(0x01),
            twenty(0xcc)
        ))
    );

    let answer = Payload::encode(&MsgPack, serde_bytes::Bytes::new(&[0xaa; 20])).unwrap();
    let response = encode_response(&id, &answer);
    assert_eq!(
        response,
        hex(&format!("01 {} c414 {}", twenty(0x01), twenty(0xaa)))
    );

    // And both decode: the server side reads the node id, the caller its answer.
    let Ok(Message::Request { args, .. }) = decode(&request) else {
        panic!("not a request")
    };
    let (node,) =
        <(serde_bytes::ByteBuf,) as FromArgs>::from_args(&Payload::new(args, &MsgPack), None)
            .unwrap();
    assert_eq!(node.as_ref(), &node_id);
    let Ok(Message::Response { result, .. }) = decode(&response) else {
        panic!("not a response")
    };
    let theirs: serde_bytes::ByteBuf = Payload::new(result.unwrap(), &MsgPack).decode().unwrap();
    assert_eq!(theirs.as_ref(), &[0xaa; 20]);
}

#[test]
fn kademlia_find_node_encodes_byte_for_byte() {
    let id = id_of(0x06);
    let request = encode_request(
        Some(&id),
        "find_node",
        &args(&(
            serde_bytes::Bytes::new(&[0xcc; 20]),
            serde_bytes::Bytes::new(&[0x00; 20]),
        )),
    );
    assert_eq!(
        request,
        hex(&format!(
            "00 {} 92 a9 66696e645f6e6f6465 92 c414 {} c414 {}",
            twenty(0x06),
            twenty(0xcc),
            twenty(0x00)
        ))
    );

    let nodes = vec![(serde_bytes::Bytes::new(&[0xbb; 20]), "127.0.0.1", 48469u16)];
    let response = encode_response(&id, &Payload::encode(&MsgPack, &nodes).unwrap());
    assert_eq!(
        response,
        hex(&format!(
            "01 {} 91 93 c414 {} a9 3132372e302e302e31 cd bd55",
            twenty(0x06),
            twenty(0xbb)
        ))
    );

    let Ok(Message::Response { result, .. }) = decode(&response) else {
        panic!("not a response")
    };
    let back: Vec<(serde_bytes::ByteBuf, String, u16)> =
        Payload::new(result.unwrap(), &MsgPack).decode().unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0.as_ref(), &[0xbb; 20]);
    assert_eq!(back[0].1, "127.0.0.1");
    assert_eq!(back[0].2, 48469);
}

// --- malformed input -------------------------------------------------------------------------

const BAD_ID: [u8; 20] = [0x5a; 20];

fn with_header(kind: u8, body: &[u8]) -> Vec<u8> {
    cat(&[&[kind], &BAD_ID, body])
}

#[track_caller]
fn assert_dropped(frame: &[u8]) {
    match decode(frame) {
        Err(e) => assert!(
            e.reply_to.is_none(),
            "{frame:02x?}: expected a silent drop, got reply_to {:?}",
            e.reply_to
        ),
        Ok(m) => panic!("{frame:02x?} decoded as {m:?}"),
    }
}

#[track_caller]
fn assert_answered(frame: &[u8]) -> ServerError {
    match decode(frame) {
        Err(e) => {
            assert_eq!(
                e.reply_to,
                Some(MessageId(BAD_ID)),
                "{frame:02x?}: the request's id is readable, so the error is answered"
            );
            assert_eq!(e.error.code(), ErrorCode::INVALID_REQUEST, "{}", e.error);
            e.error
        }
        Ok(m) => panic!("{frame:02x?} decoded as {m:?}"),
    }
}

#[test]
fn short_datagrams_are_dropped() {
    assert_dropped(&[]);
    assert_dropped(&[0x00]);
    // A header alone (21 bytes) has no body.
    assert_dropped(&with_header(0x00, &[]));
    assert_dropped(&with_header(0x01, &[]));
    assert_dropped(&sayhi_request()[..21]);
    for n in 0..22 {
        assert_dropped(&vec![0u8; n]);
    }
}

#[test]
fn unknown_types_are_dropped() {
    for kind in [0x03u8, 0x04, 0x7f, 0x80, 0xff] {
        let mut frame = sayhi_request();
        frame[0] = kind;
        assert_dropped(&frame);
    }
}

#[test]
fn malformed_requests_are_answered_with_their_id() {
    // The body is not a 2-array.
    assert_answered(&with_header(0x00, &hex("c0")));
    assert_answered(&with_header(0x00, &hex("91 a5 7361796869")));
    assert_answered(&with_header(0x00, &hex("93 a5 7361796869 90 90")));
    assert_answered(&with_header(0x00, &hex("81 a1 6b a1 76")));
    assert_answered(&with_header(0x00, &hex("a5 7361796869")));
    // The method name is bin, as Python's rpcudp ignores it.
    assert_answered(&with_header(0x00, &hex("92 c4 05 7361796869 90")));
    // The method name is not a string at all, or not UTF-8.
    assert_answered(&with_header(0x00, &hex("92 01 90")));
    assert_answered(&with_header(0x00, &hex("92 a2 ff fe 90")));
    // The arguments are not an array.
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 a1 78")));
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 c0")));
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 81 a1 6b a1 76")));
    // No arguments at all.
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869")));
    // Trailing bytes after the arguments.
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 90 c0")));
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 91 01 02 03")));
    // Truncated msgpack: in the name, in the arguments, in a nested value.
    assert_answered(&with_header(0x00, &hex("92 a5 736179")));
    assert_answered(&with_header(0x00, &hex("92 d9 30 7361796869")));
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 92 01")));
    assert_answered(&with_header(
        0x00,
        &hex("92 a5 7361796869 91 ae 536e616b65"),
    ));
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 91 cb 400c")));
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 dd ffffffff")));
    // The reserved marker.
    assert_answered(&with_header(0x00, &hex("92 a5 7361796869 91 c1")));
    // Every truncation of the captured request that still has a body is answered, not accepted.
    let full = sayhi_request();
    for cut in 22..full.len() {
        let frame = cat(&[&[0x00], &BAD_ID, &full[21..cut]]);
        assert_answered(&frame);
    }
}

#[test]
fn malformed_responses_are_dropped() {
    // Trailing bytes after the result.
    assert_dropped(&with_header(0x01, &hex("a1 78 00")));
    assert_dropped(&cat(&[&sayhi_response(), &[0xc0]]));
    // Truncated results.
    assert_dropped(&with_header(0x01, &hex("92 01")));
    assert_dropped(&sayhi_response()[..70]);
    assert_dropped(&with_header(0x01, &hex("c1")));
    // Malformed error replies.
    assert_dropped(&with_header(0x02, &hex("c0")));
    assert_dropped(&with_header(0x02, &hex("93 a1 78 a1 78 c0")));
    assert_dropped(&with_header(0x02, &hex("93 01")));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic xorshift stream: lengths 0..300, every type byte.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000u32 {
        let len = (next() % 300) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = frame.first_mut() {
            *first = (round % 4) as u8;
        }
        let _ = decode(&frame);
    }
    // Mutations of every captured frame, one byte at a time.
    for frame in [sayhi_request(), sayhi_response()] {
        for i in 0..frame.len() {
            for b in [0x00u8, 0x7f, 0x90, 0xa0, 0xc1, 0xd9, 0xdc, 0xdd, 0xff] {
                let mut f = frame.clone();
                f[i] = b;
                let _ = decode(&f);
            }
        }
    }
}

// --- error replies -----------------------------------------------------------------------------

#[track_caller]
fn error_round_trip(error: &ServerError) {
    let id = MessageId([0x42; 20]);
    let mut dst = BytesMut::new();
    let written = RpcudpCodec::new()
        .encode_response(&id, Err(error), &mut dst)
        .unwrap();
    assert!(written);
    assert_eq!(dst[0], 0x02, "error replies have type 0x02");
    assert_eq!(&dst[1..21], &id.0);
    match decode(&dst) {
        Ok(Message::Response {
            id: got,
            result: Err(e),
        }) => {
            assert_eq!(got, id);
            assert_eq!(e.code(), error.code());
            assert_eq!(e.message(), error.message());
            assert_eq!(e.data(), error.data());
            assert_eq!(&e, error);
        }
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn error_replies_round_trip() {
    error_round_trip(&ServerError::method_not_found("nope"));
    error_round_trip(&ServerError::invalid_params(
        "expected 2 argument(s), got 1",
    ));
    error_round_trip(&ServerError::from_code(ErrorCode::OVERLOADED));
    error_round_trip(&ServerError::new(ErrorCode::new(42), "no such account"));
    error_round_trip(&ServerError::new(ErrorCode::new(i32::MIN), "min"));
    error_round_trip(&ServerError::new(ErrorCode::new(i32::MAX), "max"));
    error_round_trip(&ServerError::new(
        ErrorCode::new(7),
        "ü ✓ unicode".repeat(40),
    ));
    error_round_trip(
        &ServerError::new(ErrorCode::new(42), "with data").with_data(serde_json::json!({
            "id": 7,
            "neg": -3,
            "name": "x",
            "list": [1, "two", true, null],
            "nested": {"a": {"b": []}},
        })),
    );
    error_round_trip(&ServerError::internal("x").with_data(serde_json::json!("a string")));
    error_round_trip(&ServerError::internal("x").with_data(serde_json::json!(12)));
}

#[test]
fn error_reply_layout() {
    let id = MessageId([0x42; 20]);
    let mut dst = BytesMut::new();
    RpcudpCodec::new()
        .encode_response(
            &id,
            Err(&ServerError::new(ErrorCode::new(42), "no")),
            &mut dst,
        )
        .unwrap();
    // 0x02 ‖ id ‖ [code, message]: no data, no third element
    assert_eq!(
        dst.to_vec(),
        cat(&[&[0x02], &[0x42; 20], &hex("92 2a a2 6e6f")])
    );
}

#[test]
fn without_error_replies_writes_nothing() {
    let codec = RpcudpCodec::new().without_error_replies();
    let id = MessageId([0x42; 20]);
    let mut dst = BytesMut::new();
    let written = codec
        .encode_response(&id, Err(&ServerError::method_not_found("nope")), &mut dst)
        .unwrap();
    assert!(!written);
    assert!(dst.is_empty());

    // Results are still written, exactly as with error replies on.
    let result = Payload::encode(&MsgPack, SAYHI_ANSWER).unwrap();
    assert!(codec.encode_response(&id, Ok(&result), &mut dst).unwrap());
    assert_eq!(dst[0], 0x01);
    assert_eq!(dst.len(), 71);
}

#[test]
fn empty_result_is_nil() {
    let id = MessageId([0x42; 20]);
    let bytes = encode_response(&id, &Payload::empty(&MsgPack));
    assert_eq!(bytes, cat(&[&[0x01], &[0x42; 20], &[0xc0]]));
    // `()` and `None` are nil as well, as Python's None.
    assert_eq!(
        encode_response(&id, &Payload::encode(&MsgPack, &()).unwrap()),
        bytes
    );
    assert_eq!(
        encode_response(&id, &Payload::encode(&MsgPack, &None::<i64>).unwrap()),
        bytes
    );
}

// --- notifications and methods ---------------------------------------------------------------

#[test]
fn notifications_get_a_random_id() {
    let a = args(&("Snake Plissken",));
    let first = encode_request(None, "sayhi", &a);
    let second = encode_request(None, "sayhi", &a);
    assert_eq!(first.len(), 44);
    assert_eq!(first[0], 0x00);
    // The body is the same as with an explicit id.
    assert_eq!(&first[21..], &sayhi_request()[21..]);
    assert_ne!(&first[1..21], &second[1..21], "ids are random");
    assert_ne!(&first[1..21], &[0u8; 20]);
    match decode(&first) {
        Ok(Message::Request {
            id: Some(id),
            method,
            ..
        }) => {
            assert_eq!(&id.0[..], &first[1..21]);
            assert_eq!(method.name(), Some("sayhi"));
        }
        other => panic!("a notification is a valid request on the wire: {other:?}"),
    }
}

#[test]
fn ids_are_unguessable_whatever_the_seed() {
    let codec = RpcudpCodec::new();
    // Over a stream the seed is a sequence: rpcudp's ids are random all the same.
    let ids: std::collections::HashSet<MessageId> = (0..1000)
        .map(|n| codec.new_id(rpc_core::IdSeed::Sequence(n)))
        .collect();
    assert_eq!(ids.len(), 1000);
    // Over UDP they are the seed's bits.
    let ids: std::collections::HashSet<MessageId> = (0..1000u128)
        .map(|n| codec.new_id(rpc_core::IdSeed::Unguessable(n << 64 | n)))
        .collect();
    assert_eq!(ids.len(), 1000);
}

#[test]
fn numeric_methods_are_refused() {
    let mut dst = BytesMut::new();
    let err = RpcudpCodec::new()
        .encode_request(
            Some(&MessageId([1; 20])),
            &Method::Id(3),
            &args(&()),
            &mut dst,
        )
        .unwrap_err();
    assert!(matches!(err, rpc_core::Error::Codec(_)), "{err:?}");
    let err = RpcudpCodec::new()
        .encode_request(None, &Method::Id(3), &args(&()), &mut dst)
        .unwrap_err();
    assert!(matches!(err, rpc_core::Error::Codec(_)), "{err:?}");
}

#[test]
fn arguments_must_be_a_list() {
    let mut dst = BytesMut::new();
    let not_a_list = Payload::encode(&MsgPack, "Snake Plissken").unwrap();
    let err = RpcudpCodec::new()
        .encode_request(
            Some(&MessageId([1; 20])),
            &Method::from("sayhi"),
            &not_a_list,
            &mut dst,
        )
        .unwrap_err();
    assert!(matches!(err, rpc_core::Error::Codec(_)), "{err:?}");
}

#[test]
fn long_names_and_argument_lists() {
    // A 40-byte name takes str8 (d9), a 16-element list array16 (dc): both decode back.
    let name = "n".repeat(40);
    let list: Vec<i64> = (0..16).collect();
    let id = MessageId([9; 20]);
    let frame = encode_request(Some(&id), name.clone(), &args(&list));
    assert_eq!(&frame[21..24], &[0x92, 0xd9, 40]);
    assert_eq!(frame[24 + 40], 0xdc);
    let Ok(Message::Request { method, args, .. }) = decode(&frame) else {
        panic!("not a request")
    };
    assert_eq!(method.name(), Some(name.as_str()));
    let back: Vec<i64> = Payload::new(args, &MsgPack).decode().unwrap();
    assert_eq!(back, list);
}

#[test]
fn error_reply_with_trailing_bytes_is_dropped() {
    let mut frame = BytesMut::new();
    RpcudpCodec::new()
        .encode_response(
            &MessageId(BAD_ID),
            Err(&ServerError::new(ErrorCode::new(1), "m")),
            &mut frame,
        )
        .unwrap();
    assert!(decode(&frame).is_ok());
    let mut frame = frame.to_vec();
    frame.push(0xc0);
    assert_dropped(&frame);
}

#[test]
fn error_reply_with_null_data_round_trips() {
    error_round_trip(&ServerError::internal("x").with_data(serde_json::Value::Null));
}

#[test]
fn arguments_nested_too_deep_say_so() {
    // 00 ‖ id ‖ [ "m", [[[[...]]]] ] with 200 levels of arrays.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&[9u8; 20]);
    frame.extend_from_slice(&[0x92, 0xa1, b'm']);
    frame.extend(std::iter::repeat_n(0x91u8, 200));
    frame.push(0x90);
    let Err(e) = RpcudpCodec::new().decode(Bytes::from(frame)) else {
        panic!("decoded");
    };
    assert!(e.reply_to.is_some());
    assert!(
        e.error.message().contains("nested deeper than"),
        "{}",
        e.error
    );
}
