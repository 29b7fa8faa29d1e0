//! The JSON-RPC decoder: never panics, and every error it would answer encodes as a valid
//! JSON-RPC error response.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_core::codec::{Codec, Message};

fuzz_target!(|data: &[u8]| {
    let codec = JsonRpcCodec::new().max_batch(64);
    let check = |e: &rpc_core::DecodeError<rpc_codecs::jsonrpc::Id>| {
        if let Some(id) = &e.reply_to {
            let mut out = BytesMut::new();
            codec
                .encode_response(id, Err(&e.error), &mut out)
                .expect("an error encodes");
            assert!(out.starts_with(br#"{"jsonrpc":"2.0","error":{"code":"#));
        }
    };
    match codec.decode(Bytes::copy_from_slice(data)) {
        Ok(Message::Batch(items)) => items.iter().filter_map(|i| i.as_ref().err()).for_each(check),
        Ok(_) => {}
        Err(e) => check(&e),
    }
});
