//! The cost of each codec per message, without sockets or framing: encoding and decoding an
//! `echo` request with one 32-character string argument, and its response (the same string), in
//! rpcudp (msgpack), JSON-RPC (JSON) and basic-socket-rpc's little-endian values (`le`, values
//! only: its framing lives in the transports crate and is not measured here).
//!
//! For rpcudp and JSON-RPC each group measures the steps a call takes:
//! - `encode_args`: the typed `(String,)` into a [`Payload`], as the client does;
//! - `encode_request`: method and encoded args into a frame (a reused, cleared `BytesMut`);
//! - `decode_request`: a frame into a [`Message::Request`], then its args into `(String,)`;
//! - `encode_result`: the handler's `String` into a [`Payload`];
//! - `encode_response`: the result payload into a frame;
//! - `decode_response`: a frame into a [`Message::Response`], then its result into `String`.
//!
//! For `le`: `to_bytes`/`from_bytes` of the `(String,)` args and of the `String` result.
//!
//! Run with `cargo bench -p rpc-benches --bench codecs`.

// criterion's macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_codecs::raw::{from_bytes, to_bytes};
use rpc_core::format::{AsSeq, FromArgs};
use rpc_core::{Codec, Message, Method, Payload};

/// The argument and the result: 32 characters, 32 bytes of UTF-8.
const TEXT: &str = "The quick brown fox jumps over a";

const METHOD: &str = "echo";

/// One group per codec: its name, with per-message rates.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g
}

/// The six steps of a call through `codec`, in a group named `name`.
fn bench_codec<C: Codec>(c: &mut Criterion, name: &str, codec: &C) {
    let format = codec.format();
    let id = codec.new_id(rpc_core::IdSeed::Sequence(1));
    let method = Method::from(METHOD);
    let args_value = (TEXT.to_owned(),);
    let result_value = TEXT.to_owned();

    let args = Payload::encode(format, &AsSeq(&args_value)).expect("the args encode");
    let result = Payload::encode(format, &result_value).expect("the result encodes");

    // Captured frames, checked to decode to what was sent.
    let mut dst = BytesMut::new();
    codec
        .encode_request(Some(&id), &method, &args, &mut dst)
        .expect("the request encodes");
    let request_frame = dst.split().freeze();
    let written = codec
        .encode_response(&id, Ok(&result), &mut dst)
        .expect("the response encodes");
    assert!(written, "{name} writes a response");
    let response_frame = dst.split().freeze();
    assert_eq!(
        decode_request(codec, request_frame.clone()),
        args_value,
        "{name} request round trip"
    );
    assert_eq!(
        decode_response(codec, response_frame.clone()),
        result_value,
        "{name} response round trip"
    );

    let mut g = group(c, name);
    g.bench_function("encode_args", |b| {
        b.iter(|| Payload::encode(format, &AsSeq(black_box(&args_value))).expect("encodes"))
    });
    g.bench_function("encode_request", |b| {
        b.iter(|| {
            dst.clear();
            codec
                .encode_request(
                    Some(black_box(&id)),
                    black_box(&method),
                    black_box(&args),
                    &mut dst,
                )
                .expect("encodes");
            black_box(dst.len());
        })
    });
    g.bench_function("decode_request", |b| {
        b.iter(|| decode_request(codec, black_box(request_frame.clone())))
    });
    g.bench_function("encode_result", |b| {
        b.iter(|| Payload::encode(format, black_box(&result_value)).expect("encodes"))
    });
    g.bench_function("encode_response", |b| {
        b.iter(|| {
            dst.clear();
            let written = codec
                .encode_response(black_box(&id), Ok(black_box(&result)), &mut dst)
                .expect("encodes");
            black_box((written, dst.len()));
        })
    });
    g.bench_function("decode_response", |b| {
        b.iter(|| decode_response(codec, black_box(response_frame.clone())))
    });
    g.finish();
}

/// A request frame to its typed arguments, as a server does.
fn decode_request<C: Codec>(codec: &C, frame: Bytes) -> (String,) {
    match codec.decode(frame) {
        Ok(Message::Request { method, args, .. }) => {
            black_box(&method);
            let args = Payload::new(args, codec.format());
            <(String,)>::from_args(&args, None).expect("the args decode")
        }
        other => panic!("not a request: {other:?}"),
    }
}

/// A response frame to its typed result, as a client does.
fn decode_response<C: Codec>(codec: &C, frame: Bytes) -> String {
    match codec.decode(frame) {
        Ok(Message::Response { id, result }) => {
            black_box(&id);
            let result = Payload::new(result.expect("a success"), codec.format());
            result.decode().expect("the result decodes")
        }
        other => panic!("not a response: {other:?}"),
    }
}

fn rpcudp(c: &mut Criterion) {
    bench_codec(c, "rpcudp", &RpcudpCodec::new());
}

fn jsonrpc(c: &mut Criterion) {
    bench_codec(c, "jsonrpc", &JsonRpcCodec::new());
}

/// basic-socket-rpc's values alone: its framing is the transport's.
fn le(c: &mut Criterion) {
    let args_value = (TEXT.to_owned(),);
    let result_value = TEXT.to_owned();
    let args = to_bytes(&args_value).expect("the args encode");
    let result = to_bytes(&result_value).expect("the result encodes");
    assert_eq!(from_bytes::<(String,)>(&args), Ok(args_value.clone()));
    assert_eq!(from_bytes::<String>(&result), Ok(result_value.clone()));

    let mut g = group(c, "le");
    g.bench_function("encode_args", |b| {
        b.iter(|| to_bytes(black_box(&args_value)).expect("encodes"))
    });
    g.bench_function("decode_args", |b| {
        b.iter(|| from_bytes::<(String,)>(black_box(&args)).expect("decodes"))
    });
    g.bench_function("encode_result", |b| {
        b.iter(|| to_bytes(black_box(&result_value)).expect("encodes"))
    });
    g.bench_function("decode_result", |b| {
        b.iter(|| from_bytes::<String>(black_box(&result)).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, rpcudp, jsonrpc, le);
criterion_main!(benches);
