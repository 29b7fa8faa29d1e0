//! Little-endian binary values: the argument and result encoding of basic-socket-rpc 0.6.1.
//!
//! basic-socket-rpc has no self-describing value format: each command pairs hand-written
//! serializers (`basic_socket_rpc/rpc_serialization_functions.py`) on both ends. [`Le`] is those
//! serializers driven by serde, so a Rust type that mirrors the Python command's signature encodes
//! to the same bytes, byte for byte:
//!
//! ```text
//! type                          bytes                                   Python helper
//! ----------------------------  --------------------------------------  -----------------------------
//! bool                          01 | 00                                 serialize_bool
//! u8, i8                        1 byte                                  int_to_le_bytes_1
//! u16, i16                      2 bytes LE                              int_to_le_bytes_2
//! u32, i32                      4 bytes LE                              int_to_le_bytes_4
//! u64, i64                      8 bytes LE                              int_to_le_bytes_8
//! u128, i128                    16 bytes LE                             int_to_le_bytes(16, _)
//! f32, f64                      IEEE 754, 4 / 8 bytes LE                -
//! char                          as u32                                  -
//! str, String                   u32 len ‖ UTF-8                         serialize_str
//! bytes (ByteBuf, Bytes)        u32 len ‖ bytes                         serialize_bytes
//! (), unit struct               nothing                                 serialize_no_args
//! tuple, struct, tuple struct,  elem ‖ elem ‖ ...                       make_serializer,
//!   [T; N]                        (no count, no names, no padding)        make_serialize_array_fixed_size
//! newtype struct                the inner value                         -
//! seq (Vec<T>, &[T])            u32 byte_len ‖ u32 count ‖ elem ‖ ...   make_serialize_array
//!                                 byte_len = 4 + bytes of the elements
//! ---- rpc-stack extensions: Python has no counterpart ----
//! Option<T>                     00 | 01 ‖ value
//! map                           u32 byte_len ‖ u32 count ‖ key ‖ value ‖ key ‖ value ...
//!                                 count is the number of pairs; byte_len as for seq
//! enum                          u32 LE variant index ‖ the variant's content, encoded as
//!                                 nothing / newtype / tuple / struct above
//! ```
//!
//! An argument list is a tuple, so it is its values concatenated: `hello("Robert")` sends
//! `06000000 526f62657274`, `add_2_words(1000, 2050)` as `(u32, u32)` sends `e8030000 02080000`,
//! and a command without arguments sends nothing.
//!
//! ```
//! use rpc_core::le::{from_bytes, to_bytes, LE};
//! use rpc_core::format::{AsSeq, FromArgs};
//! use rpc_core::Payload;
//!
//! // basic-socket-rpc's greet example: hello("Robert") -> "hello Robert".
//! let args = Payload::encode(&LE, &AsSeq(&("Robert",)))?;
//! assert_eq!(args.bytes().as_ref(), b"\x06\0\0\0Robert");
//! let (name,) = <(String,)>::from_args(&args, None)?;
//! assert_eq!(name, "Robert");
//!
//! // A sequence is make_serialize_array: byte length, count, elements.
//! let bytes = to_bytes(&vec![1u16, 2])?;
//! assert_eq!(bytes, b"\x08\0\0\0\x02\0\0\0\x01\0\x02\0");
//! assert_eq!(from_bytes::<Vec<u16>>(&bytes)?, [1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Mind the Rust types: a `Vec<u8>` is a sequence of `u8` (byte length, count, bytes), not a byte
//! string; use `serde_bytes::ByteBuf` or `bytes::Bytes` for Python's `serialize_bytes`. Python ints
//! have no width: pick the Rust integer whose size the command's serializer uses.
//!
//! The format is not self-describing: decoding needs the type (`deserialize_any` and
//! `deserialize_ignored_any` fail with [`LeError::NotSelfDescribing`]), so untagged enums, flattened
//! structs and `serde_json::Value` cannot be decoded, and fields cannot be skipped conditionally
//! (`skip_serializing_if` is an encoding error). Decoding is strict where Python is lenient: a bool
//! byte other than `00`/`01` and trailing bytes are errors, and a length prefix larger than the
//! input left fails before anything is allocated.

mod de;
mod ser;

pub use self::de::{Deserializer, MAX_DEPTH};
pub use self::ser::{Compound, Serializer};

use std::fmt;

use crate::error::BoxError;
use crate::format::{DeserializeFn, Format};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};

/// basic-socket-rpc's little-endian value format, as an rpc-core [`Format`] named `"le"`.
///
/// See the [module documentation](self) for the encoding. Decoding demands that the value uses
/// every byte; the handler's parameter names are not used (arguments are positional).
///
/// ```
/// use rpc_core::le::LE;
/// use rpc_core::Payload;
///
/// let result = Payload::encode(&LE, &3050u32)?;
/// assert_eq!(result.bytes().as_ref(), b"\xea\x0b\0\0");
/// assert_eq!(result.decode::<u32>()?, 3050);
/// # Ok::<(), rpc_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Le;

/// The [`Le`] format as a `'static` value, so that `&LE` is a `&'static dyn Format`.
pub static LE: Le = Le;

impl Format for Le {
    fn name(&self) -> &'static str {
        "le"
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        let start = dst.len();
        let mut ser = Serializer::new(&mut *dst);
        if let Err(e) = erased_serde::serialize(value, &mut ser) {
            // Leave no half-written value behind.
            dst.truncate(start);
            return Err(e.into());
        }
        Ok(())
    }

    fn decode(
        &self,
        src: &[u8],
        _names: Option<&[&'static str]>,
        visit: &mut DeserializeFn<'_>,
    ) -> Result<(), BoxError> {
        let mut de = Deserializer::new(src);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
        de.end()?;
        Ok(())
    }
}

/// Encodes `value` into a new buffer.
///
/// ```
/// assert_eq!(rpc_core::le::to_bytes(&("hi", true, 7u16))?, b"\x02\0\0\0hi\x01\x07\0");
/// # Ok::<(), rpc_core::le::LeError>(())
/// ```
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, LeError> {
    let mut out = Vec::new();
    value.serialize(&mut Serializer::new(&mut out))?;
    Ok(out)
}

/// Decodes a `T` from `bytes`, which must hold exactly one value: leftover bytes are
/// [`LeError::TrailingBytes`]. Strings and byte strings may borrow from `bytes`.
///
/// ```
/// use rpc_core::le::{from_bytes, LeError};
///
/// assert_eq!(from_bytes::<(u32, u32)>(b"\xe8\x03\0\0\x02\x08\0\0")?, (1000, 2050));
/// assert_eq!(from_bytes::<&str>(b"\x02\0\0\0hi")?, "hi");
/// assert_eq!(from_bytes::<u16>(b"\x01\0\0"), Err(LeError::TrailingBytes(1)));
/// # Ok::<(), LeError>(())
/// ```
pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, LeError> {
    let mut de = Deserializer::new(bytes);
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Why a value could not be encoded or decoded in the [`Le`] format.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeError {
    /// The input ended inside a value, or a length prefix claims more bytes than are left.
    Eof,
    /// The value was decoded but this many bytes follow it.
    TrailingBytes(usize),
    /// A bool byte other than `0x00` or `0x01`.
    InvalidBool(u8),
    /// An `Option` tag byte other than `0x00` or `0x01`.
    InvalidOption(u8),
    /// A `char` that is not a Unicode scalar value.
    InvalidChar(u32),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A sequence's or map's byte length disagrees with the bytes its elements take (or is too
    /// short to hold the count), or the reader left elements of a sequence or tuple unread.
    LengthMismatch,
    /// The type asked for a self-describing format (`deserialize_any`, `deserialize_ignored_any`):
    /// the bytes do not say what they are.
    NotSelfDescribing,
    /// A string, byte string, sequence or map is too long for its `u32` length prefix.
    TooLong,
    /// Options, sequences, maps and enums are nested more than [`MAX_DEPTH`] deep.
    TooDeep,
    /// An error raised by a `Serialize` or `Deserialize` implementation.
    Custom(String),
}

impl fmt::Display for LeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeError::Eof => f.write_str("unexpected end of input"),
            LeError::TrailingBytes(n) => write!(f, "{n} trailing byte(s) after the value"),
            LeError::InvalidBool(b) => {
                write!(f, "invalid bool byte 0x{b:02x} (expected 0x00 or 0x01)")
            }
            LeError::InvalidOption(b) => {
                write!(f, "invalid option tag 0x{b:02x} (expected 0x00 or 0x01)")
            }
            LeError::InvalidChar(c) => write!(f, "invalid char 0x{c:x}"),
            LeError::InvalidUtf8 => f.write_str("invalid utf-8 in a string"),
            LeError::LengthMismatch => {
                f.write_str("a byte length disagrees with the elements it covers")
            }
            LeError::NotSelfDescribing => f.write_str(
                "the le format is not self-describing: the type to decode must be known",
            ),
            LeError::TooLong => f.write_str("a length does not fit in its u32 prefix"),
            LeError::TooDeep => write!(f, "values nested more than {MAX_DEPTH} deep"),
            LeError::Custom(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for LeError {}

impl serde::ser::Error for LeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        LeError::Custom(msg.to_string())
    }
}

impl serde::de::Error for LeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        LeError::Custom(msg.to_string())
    }
}
