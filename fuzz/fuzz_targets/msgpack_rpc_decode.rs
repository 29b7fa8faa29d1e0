//! The MessagePack-RPC decoder: never panics; a request or notification it reads re-encodes to
//! a message it reads the same; an error it would answer encodes, both ways.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_codecs::msgpack::{MsgPack, MsgpackRpcCodec};
use rpc_core::codec::{Codec, Message};
use rpc_core::Payload;

static FORMAT: MsgPack = MsgPack;

fuzz_target!(|data: &[u8]| {
    let codec = MsgpackRpcCodec::new();
    match codec.decode(Bytes::copy_from_slice(data)) {
        Ok(Message::Request {
            id, method, args, ..
        }) => {
            let mut out = BytesMut::new();
            codec
                .encode_request(id.as_ref(), &method, &Payload::new(args.clone(), &FORMAT), &mut out)
                .expect("a decoded request encodes");
            match codec.decode(out.freeze()) {
                Ok(Message::Request {
                    id: id2,
                    method: method2,
                    args: args2,
                    ..
                }) => assert!(id == id2 && method == method2 && args == args2),
                other => panic!("a re-encoded request reads otherwise: {other:?}"),
            }
        }
        Ok(Message::Response { id, result }) => {
            if let Err(e) = result {
                for c in [codec, codec.with_error_codes()] {
                    let mut out = BytesMut::new();
                    c.encode_response(&id, Err(&e), &mut out)
                        .expect("an error encodes");
                    assert!(c.decode(out.freeze()).is_ok());
                }
            }
        }
        Ok(Message::Batch(_)) => panic!("MessagePack-RPC has no batches"),
        Err(e) => {
            if let Some(id) = e.reply_to {
                let mut out = BytesMut::new();
                codec
                    .encode_response(&id, Err(&e.error), &mut out)
                    .expect("an answer to a bad request encodes");
            }
        }
    }
});
