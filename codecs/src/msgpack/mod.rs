//! MessagePack: the [`MsgPack`] value format, rpcudp's datagram codec, [`RpcudpCodec`], and
//! MessagePack-RPC (neovim's), [`MsgpackRpcCodec`], with neovim's handles as typed values
//! ([`neovim`]).
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

mod rpc;
mod rpcudp;

pub mod neovim;

pub use self::rpc::MsgpackRpcCodec;
pub use self::rpcudp::{MessageId, RpcudpCodec};
pub use rpc_core::msgpack::{skip_value, Measure, MsgPack, SkipError, MAX_DEPTH};

/// Any msgpack value, for parameters and results whose type is not fixed: unlike
/// `serde_json::Value` it keeps str and bin apart (a Python peer's `str` and `bytes`), and
/// integers, floats, arrays, maps and extension types as they came (rmpv's `Value`).
///
/// ```
/// use rpc_codecs::msgpack::{MsgPack, Value};
/// use rpc_core::Payload;
///
/// let p = Payload::encode(&MsgPack, &(Value::from("s"), Value::Binary(vec![1, 2])))?;
/// let (s, b): (Value, Value) = p.decode()?;
/// assert!(s.is_str() && b.is_bin());
/// # Ok::<(), rpc_core::Error>(())
/// ```
pub use rmpv::Value;

/// The format as the shared reference codecs and payloads hold.
pub(crate) static MSGPACK: MsgPack = MsgPack;

/// The name of a request's method and the check that its arguments are a msgpack list, which
/// both msgpack envelopes need; `protocol` names the envelope in the errors.
pub(crate) fn named_with_list<'a>(
    method: &'a rpc_core::Method,
    args: &rpc_core::Payload,
    protocol: &str,
) -> Result<&'a rpc_core::MethodName, rpc_core::Error> {
    args.in_format(&MSGPACK)?;
    let rpc_core::Method::Name(name) = method else {
        return Err(rpc_core::Error::Codec(
            format!("{protocol} names its methods; it has no numeric command ids").into(),
        ));
    };
    if array_len(args.bytes()).is_none() {
        return Err(rpc_core::Error::Codec(
            format!("{protocol} arguments must be a list").into(),
        ));
    }
    Ok(name)
}

/// Reads a msgpack array header; returns its length and the header's size.
pub(crate) fn array_len(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        m @ 0x90..=0x9f => Some((usize::from(m & 0x0f), 1)),
        0xdc => Some((
            usize::from(u16::from_be_bytes(b.get(1..3)?.try_into().ok()?)),
            3,
        )),
        0xdd => Some((
            u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize,
            5,
        )),
        _ => None,
    }
}

/// Reads a msgpack str header; returns the string's length and the header's size.
pub(crate) fn str_len(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        m @ 0xa0..=0xbf => Some((usize::from(m & 0x1f), 1)),
        0xd9 => Some((usize::from(*b.get(1)?), 2)),
        0xda => Some((
            usize::from(u16::from_be_bytes(b.get(1..3)?.try_into().ok()?)),
            3,
        )),
        0xdb => Some((
            u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize,
            5,
        )),
        _ => None,
    }
}
