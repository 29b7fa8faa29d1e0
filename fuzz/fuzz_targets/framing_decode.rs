//! The stream framings (length-prefixed, newline, EOT, Content-Length headers, msgpack values)
//! and basic-socket-rpc's frames: never panic,
//! never hand out a frame over the limit, never reserve a size a peer merely claimed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first / 5) + 1;
    rpc_transports::fuzzing::framing(first % 5, chunk, rest);
    rpc_transports::fuzzing::raw_frames(rest);
});
