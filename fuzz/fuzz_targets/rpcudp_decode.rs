//! rpcudp's datagram decoder and the msgpack measurer: never panic, and whatever decodes as a
//! request re-encodes to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_codecs::msgpack::{skip_value, MsgPack, RpcudpCodec};
use rpc_core::codec::{Codec, Message};
use rpc_core::Payload;

static FORMAT: MsgPack = MsgPack;

fuzz_target!(|data: &[u8]| {
    let _ = skip_value(data);
    let codec = RpcudpCodec::new();
    if let Ok(Message::Request {
        id: Some(id),
        method,
        args,
        ..
    }) = codec.decode(Bytes::copy_from_slice(data))
    {
        let mut out = BytesMut::new();
        codec
            .encode_request(Some(&id), &method, &Payload::new(args, &FORMAT), &mut out)
            .expect("a decoded request encodes");
        // The method name may have had a longer str header than needed; the rest must agree.
        assert_eq!(out[..21], data[..21]);
    }
});
