//! Payloads are encoded into a per-thread chunk and split off it: each payload must keep
//! exactly its own bytes, whatever was encoded before, during or after it.

use rpc_codecs::msgpack::MsgPack;
use rpc_core::Payload;
use serde::ser::Error as _;
use serde::{Serialize, Serializer};

/// Encodes another payload while being encoded itself (the chunk is in use then).
struct Nested(u32);

impl Serialize for Nested {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inner = Payload::encode(&MsgPack, &("inner", self.0)).map_err(S::Error::custom)?;
        s.serialize_bytes(inner.bytes())
    }
}

/// Writes part of a value, then fails.
struct FailsHalfway;

impl Serialize for FailsHalfway {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element("written before the failure")?;
        Err(S::Error::custom("fails halfway"))
    }
}

#[test]
fn payloads_keep_their_own_bytes() {
    let payloads: Vec<(u32, Payload)> = (0..2000u32)
        .map(|i| {
            (
                i,
                Payload::encode(&MsgPack, &(i, "x".repeat(i as usize % 300))).unwrap(),
            )
        })
        .collect();
    // Later encodings (which reuse and replace chunks) change none of the earlier payloads.
    for (i, p) in &payloads {
        let (n, s): (u32, String) = p.decode().unwrap();
        assert_eq!((n, s.len()), (*i, *i as usize % 300));
    }
    // A payload larger than a chunk.
    let big = "y".repeat(100_000);
    let p = Payload::encode(&MsgPack, &(&big,)).unwrap();
    assert_eq!(p.decode::<(String,)>().unwrap().0, big);
}

#[test]
fn a_payload_encoded_while_encoding_another_is_its_own() {
    let outer = Payload::encode(&MsgPack, &(Nested(7), "after")).unwrap();
    let (inner, after): (serde_bytes::ByteBuf, String) = outer.decode().unwrap();
    assert_eq!(after, "after");
    let inner = Payload::new(inner.into_vec().into(), &MsgPack);
    assert_eq!(
        inner.decode::<(String, u32)>().unwrap(),
        ("inner".to_owned(), 7)
    );
}

#[test]
fn a_failed_encoding_leaves_nothing_behind() {
    assert!(Payload::encode(&MsgPack, &FailsHalfway).is_err());
    // The next payload holds only its own bytes: [1, 2] is 0x92 0x01 0x02.
    let p = Payload::encode(&MsgPack, &(1, 2)).unwrap();
    assert_eq!(p.bytes().as_ref(), b"\x92\x01\x02");
}
