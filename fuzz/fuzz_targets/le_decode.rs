//! The little-endian (basic-socket-rpc) value decoder: never panics, and what decodes re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_codecs::raw::{from_bytes, to_bytes};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = from_bytes::<(String, u32, Vec<u64>)>(data) {
        assert_eq!(to_bytes(&v).expect("encodes"), data);
    }
    if let Ok(v) = from_bytes::<(bool, serde_bytes::ByteBuf, Option<i16>)>(data) {
        assert_eq!(to_bytes(&v).expect("encodes"), data);
    }
    let _ = from_bytes::<Vec<Vec<String>>>(data);
});
