//! MessagePack: the [`MsgPack`] value format and rpcudp's datagram codec, [`RpcudpCodec`].
//!
//! Values are encoded as Python's `msgpack.packb(use_bin_type=True)` and `umsgpack.packb` do:
//! strings are msgpack `str`, byte strings `bin`, `f64` is always float64 (`cb`). Rust structs
//! are maps keyed by field name, so Python peers see dicts.
//!
//! The value format itself lives in [`rpc_core::msgpack`] (typed code calls it without type
//! erasure) and is re-exported here.
//!
//! Byte strings need a byte type on the Rust side: `bytes::Bytes` or `serde_bytes::ByteBuf`
//! encode and decode as `bin`; a `Vec<u8>` is an array of integers, as serde sees it.

mod rpcudp;

pub use self::rpcudp::{MessageId, RpcudpCodec};
pub use rpc_core::msgpack::{skip_value, MsgPack, SkipError, MAX_DEPTH};

/// The format as the shared reference codecs and payloads hold.
pub(crate) static MSGPACK: MsgPack = MsgPack;
