//! MessagePack: the [`MsgPack`] value format and rpcudp's datagram codec, [`RpcudpCodec`].
//!
//! Values are encoded as Python's `msgpack.packb(use_bin_type=True)` and `umsgpack.packb` do:
//! strings are msgpack `str`, byte strings `bin`, `f64` is always float64 (`cb`). Rust structs
//! are maps keyed by field name, so Python peers see dicts.
//!
//! Byte strings need a byte type on the Rust side: `bytes::Bytes` or `serde_bytes::ByteBuf`
//! encode and decode as `bin`; a `Vec<u8>` is an array of integers, as serde sees it.

mod rpcudp;
mod skip;

pub use self::rpcudp::{MessageId, RpcudpCodec};
pub use self::skip::{skip_value, SkipError};

use bytes::{BufMut, BytesMut};
use rpc_core::format::DeserializeFn;
use rpc_core::{BoxError, Format};

/// How deeply nested a decoded value may be; deeper input is refused, not recursed into.
pub const MAX_DEPTH: usize = 128;

/// The MessagePack value format.
///
/// ```
/// use rpc_codecs::msgpack::MsgPack;
/// use rpc_core::Payload;
///
/// let p = Payload::encode(&MsgPack, &("echo", 3.5, serde_bytes::Bytes::new(b"\x01")))?;
/// assert_eq!(p.bytes().as_ref(), b"\x93\xa4echo\xcb\x40\x0c\0\0\0\0\0\0\xc4\x01\x01");
/// let back: (String, f64, serde_bytes::ByteBuf) = p.decode()?;
/// assert_eq!(back.1, 3.5);
/// # Ok::<(), rpc_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl Format for MsgPack {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        let mut ser = rmp_serde::Serializer::new(dst.writer()).with_struct_map();
        erased_serde::serialize(value, &mut ser)?;
        Ok(())
    }

    fn decode(
        &self,
        src: &[u8],
        _names: Option<&[&'static str]>,
        visit: &mut DeserializeFn<'_>,
    ) -> Result<(), BoxError> {
        // Exactly one value: measured first (no allocation, no recursion), so the decoder can
        // read straight from the slice, strings borrowed rather than copied through `io::Read`.
        let len = skip_value(src)?;
        if len != src.len() {
            return Err(format!("{} trailing byte(s) after the value", src.len() - len).into());
        }
        let mut de = rmp_serde::Deserializer::from_read_ref(src);
        de.set_max_depth(MAX_DEPTH);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
        Ok(())
    }
}

/// The format as the shared reference codecs and payloads hold.
pub(crate) static MSGPACK: MsgPack = MsgPack;
