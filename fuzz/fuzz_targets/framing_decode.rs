//! The stream framings (length-prefixed, newline, EOT) and basic-socket-rpc's frames: never panic,
//! never hand out a frame over the limit, never reserve a size a peer merely claimed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first >> 2) + 1;
    rpc_transports::fuzzing::framing(first & 3, chunk, rest);
    rpc_transports::fuzzing::raw_frames(rest);
});
