//! The MessagePack value format, [`MsgPack`], and [`skip_value`], which measures a value unread.
//!
//! Values are encoded as Python's `msgpack.packb(use_bin_type=True)` and `umsgpack.packb` do:
//! strings are msgpack `str`, byte strings `bin`, `f64` is always float64 (`cb`). Rust structs
//! are maps keyed by field name, so Python peers see dicts.
//!
//! Byte strings need a byte type on the Rust side: `bytes::Bytes` or `serde_bytes::ByteBuf`
//! encode and decode as `bin`; a `Vec<u8>` is an array of integers, as serde sees it.
//!
//! The format lives here rather than with the codecs so that typed code — [`Payload::encode`],
//! [`Payload::decode`], handler arguments — can call `rmp_serde` directly, monomorphized for the
//! value's type, instead of through `erased_serde` as it must for formats it does not know
//! (an allocation and a dozen indirect calls less per value). `rpc_codecs::msgpack` re-exports it.
//!
//! [`Payload::encode`]: crate::Payload::encode
//! [`Payload::decode`]: crate::Payload::decode

mod skip;

pub use self::skip::{skip_value, Measure, SkipError};

use bytes::{BufMut, BytesMut};
use serde::{Deserializer as _, Serialize};

use crate::error::BoxError;
use crate::format::{DeserializeFn, Format};

/// How deeply nested a decoded value may be; deeper input is refused, not recursed into.
pub const MAX_DEPTH: usize = 128;

/// The MessagePack value format.
///
/// ```
/// use rpc_core::msgpack::MsgPack;
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

    fn count_values(&self, src: &[u8], limit: usize) -> Option<usize> {
        Some(skip::count_values(src, limit))
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        encode(value, dst)
    }

    fn decode(
        &self,
        src: &[u8],
        _names: Option<&[&'static str]>,
        visit: &mut DeserializeFn<'_>,
    ) -> Result<(), BoxError> {
        decode(src, |de| {
            visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(de)).map_err(BoxError::from)
        })
    }
}

/// The decoder [`decode`] hands out: over a slice, strings and bytes borrowed from it.
pub(crate) type SliceDeserializer<'a> =
    rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'a, [u8]>>;

/// Appends the encoding of `value` to `dst`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), BoxError> {
    let mut ser = rmp_serde::Serializer::new(dst.writer()).with_struct_map();
    value.serialize(&mut ser)?;
    Ok(())
}

/// Runs `read` over a decoder of `src`, which must hold exactly one value.
pub(crate) fn decode<'a, R>(
    src: &'a [u8],
    read: impl FnOnce(&mut SliceDeserializer<'a>) -> Result<R, BoxError>,
) -> Result<R, BoxError> {
    // Exactly one value: measured first (no allocation, no recursion), so the decoder can
    // read straight from the slice, strings borrowed rather than copied through `io::Read`.
    let len = skip_value(src)?;
    if len != src.len() {
        return Err(format!("{} trailing byte(s) after the value", src.len() - len).into());
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(src);
    de.set_max_depth(MAX_DEPTH);
    read(&mut de)
}

/// Decodes a tuple of `n` values with `visitor` (handler arguments).
pub(crate) fn decode_tuple<'a, V: serde::de::Visitor<'a>>(
    src: &'a [u8],
    n: usize,
    visitor: V,
) -> Result<V::Value, BoxError> {
    decode(src, |de| Ok(de.deserialize_tuple(n, visitor)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::format::Erased;
    use crate::format::FromArgs;
    use crate::Payload;

    /// The same format reached only through `erased_serde`.
    static ERASED: Erased<MsgPack> = Erased(MsgPack);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Node {
        name: String,
        port: u16,
        tags: Vec<String>,
        extra: Option<BTreeMap<String, f64>>,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    }

    fn node() -> Node {
        Node {
            name: "ünïcode".into(),
            port: 8468,
            tags: vec!["a".into(), String::new()],
            extra: Some(BTreeMap::from([("x".into(), 1.5)])),
            blob: vec![0, 255, 7],
        }
    }

    #[test]
    fn typed_and_erased_paths_write_the_same_bytes() {
        assert!(Payload::encode(&ERASED, &1u8).is_ok_and(|p| !p.format_is::<MsgPack>()));
        let typed = Payload::encode(&MsgPack, &(node(), -3i64, "s", ())).unwrap();
        let erased = Payload::encode(&ERASED, &(node(), -3i64, "s", ())).unwrap();
        assert_eq!(typed.bytes(), erased.bytes());
    }

    #[test]
    fn typed_and_erased_paths_read_the_same_values() {
        let bytes = Payload::encode(&MsgPack, &(node(), 42u8))
            .unwrap()
            .into_bytes();
        for format in [&MsgPack as &'static dyn Format, &ERASED] {
            let p = Payload::new(bytes.clone(), format);
            assert_eq!(p.decode::<(Node, u8)>().unwrap(), (node(), 42));
            assert_eq!(<(Node, u8)>::from_args(&p, None).unwrap(), (node(), 42));
            // Wrong arity and wrong types are refused the same way on both paths.
            assert!(<(Node,)>::from_args(&p, None).is_err());
            assert!(<(Node, u8, u8)>::from_args(&p, None).is_err());
            assert!(p.decode::<(String, u8)>().is_err());
        }
    }

    /// A recursive type that `rmp_serde` decodes without counting depth (an enum's variants).
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    enum Expr {
        Num(i64),
        Neg(Box<Expr>),
    }

    #[test]
    fn a_recursive_enum_is_refused_past_the_depth_limit_not_recursed_into() {
        let nested = |depth: usize| {
            let mut b = vec![0x91u8];
            for _ in 0..depth {
                b.extend_from_slice(b"\x81\xa3Neg");
            }
            b.extend_from_slice(b"\x81\xa3Num\x01");
            Payload::new(bytes::Bytes::from(b), &MsgPack)
        };
        assert!(<(Expr,)>::from_args(&nested(10), None).is_ok());
        // Deep enough to overflow a small stack if it were recursed into.
        let deep = nested(200_000);
        let refused = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || <(Expr,)>::from_args(&deep, None).is_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(refused);
    }

    #[test]
    fn typed_path_refuses_what_the_erased_path_refuses() {
        let deep = [vec![0x91u8; MAX_DEPTH + 8], vec![0xc0]].concat();
        let cases: [&[u8]; 4] = [b"\x92\x01", b"\x91\x01\x02", b"\xc1", &deep];
        for bytes in cases {
            let bytes = bytes::Bytes::copy_from_slice(bytes);
            let typed = Payload::new(bytes.clone(), &MsgPack);
            let erased = Payload::new(bytes, &ERASED);
            assert!(
                typed.decode::<serde::de::IgnoredAny>().is_err(),
                "{typed:?}"
            );
            assert!(
                erased.decode::<serde::de::IgnoredAny>().is_err(),
                "{erased:?}"
            );
            assert!(<(u8,)>::from_args(&typed, None).is_err());
        }
        let trailing = Payload::new(bytes::Bytes::from_static(b"\x01\x02"), &MsgPack);
        let err = trailing.decode::<u8>().unwrap_err().to_string();
        assert!(err.contains("1 trailing byte(s)"), "{err}");
    }
}
