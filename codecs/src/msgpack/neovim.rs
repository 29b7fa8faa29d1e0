//! neovim's handles, as typed values: [`Buffer`], [`Window`] and [`Tabpage`].
//!
//! neovim sends them as msgpack extension values whose type is the handle's kind (0, 1 and 2,
//! as `nvim_get_api_info()` lists them under `types`) and whose data is the handle's number,
//! itself msgpack-encoded. A handler takes them as parameters and a caller passes them as
//! arguments, as any other value; they decode only from an extension value of their kind.
//!
//! ```
//! use rpc_codecs::msgpack::neovim::Buffer;
//! use rpc_codecs::msgpack::MsgPack;
//! use rpc_core::Payload;
//!
//! // neovim's current buffer, as it arrives: ext type 0, data 0x01 (the integer 1).
//! let p = Payload::new(bytes::Bytes::from_static(b"\x91\xd4\x00\x01"), &MsgPack);
//! let (buf,): (Buffer,) = p.decode()?;
//! assert_eq!(buf, Buffer(1));
//! assert_eq!(Payload::encode(&MsgPack, &(buf,))?.bytes().as_ref(), b"\x91\xd4\x00\x01");
//! # Ok::<(), rpc_core::Error>(())
//! ```
//!
//! These are for the msgpack formats; encoded as another format (JSON), a handle becomes its
//! kind and data, `[0, [1]]`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The name by which rmp-serde reads and writes a msgpack extension value.
const EXT: &str = "_ExtStruct";

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident = $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl $name {
            /// The extension type neovim gives this kind of handle.
            pub const EXT_TYPE: i8 = $kind;
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize(Self::EXT_TYPE, self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize(Self::EXT_TYPE, stringify!($name), deserializer).map(Self)
            }
        }
    };
}

handle!(
    /// A neovim buffer (`nvim_buf_*` functions take one first).
    Buffer = 0
);
handle!(
    /// A neovim window (`nvim_win_*`).
    Window = 1
);
handle!(
    /// A neovim tab page (`nvim_tabpage_*`).
    Tabpage = 2
);

fn serialize<S: Serializer>(kind: i8, handle: i64, serializer: S) -> Result<S::Ok, S::Error> {
    let mut data = Vec::with_capacity(9);
    rmp::encode::write_sint(&mut data, handle).map_err(serde::ser::Error::custom)?;
    serializer.serialize_newtype_struct(EXT, &(kind, serde_bytes::ByteBuf::from(data)))
}

fn deserialize<'de, D: Deserializer<'de>>(
    kind: i8,
    name: &'static str,
    deserializer: D,
) -> Result<i64, D::Error> {
    struct Ext {
        kind: i8,
        name: &'static str,
    }

    impl<'de> Visitor<'de> for Ext {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a neovim {} (msgpack ext type {})", self.name, self.kind)
        }

        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
            let (kind, data): (i8, serde_bytes::ByteBuf) = Deserialize::deserialize(d)?;
            if kind != self.kind {
                return Err(de::Error::custom(format!(
                    "expected a neovim {} (msgpack ext type {}), got ext type {kind}",
                    self.name, self.kind
                )));
            }
            let mut rest = &data[..];
            let handle: i64 = rmp::decode::read_int(&mut rest).map_err(|e| {
                de::Error::custom(format!(
                    "a {} whose handle is not an integer: {e}",
                    self.name
                ))
            })?;
            if !rest.is_empty() {
                return Err(de::Error::custom(format!(
                    "a {} with bytes after its handle",
                    self.name
                )));
            }
            Ok(handle)
        }
    }

    deserializer.deserialize_newtype_struct(EXT, Ext { kind, name })
}

#[cfg(test)]
mod tests {
    use rpc_core::Payload;

    use super::*;
    use crate::msgpack::{MsgPack, Value};

    #[test]
    fn handles_round_trip_as_the_ext_values_neovim_sends() {
        let p = Payload::encode(&MsgPack, &(Value::Ext(0, vec![0x05]),)).unwrap();
        let (b,): (Buffer,) = p.decode().unwrap();
        assert_eq!((b, Buffer::EXT_TYPE), (Buffer(5), 0));
        // Large handles (neovim's window ids start at 1000) take a wider integer.
        let w = Window(1000);
        let p = Payload::encode(&MsgPack, &(w, Tabpage(1))).unwrap();
        let (v, t): (Value, Value) = p.decode().unwrap();
        assert_eq!(v, Value::Ext(1, vec![0xcd, 0x03, 0xe8]));
        assert_eq!(t, Value::Ext(2, vec![0x01]));
        assert_eq!(p.decode::<(Window, Tabpage)>().unwrap(), (w, Tabpage(1)));
    }

    #[test]
    fn a_handle_of_another_kind_or_not_a_handle_is_refused() {
        let window = Payload::encode(&MsgPack, &(Window(1000),)).unwrap();
        let e = window.decode::<(Buffer,)>().unwrap_err().to_string();
        assert!(e.contains("ext type 1"), "{e}");
        let number = Payload::encode(&MsgPack, &(1,)).unwrap();
        assert!(number.decode::<(Buffer,)>().is_err());
        let junk = Payload::encode(&MsgPack, &(Value::Ext(0, vec![0xa1, b'x']),)).unwrap();
        assert!(junk.decode::<(Buffer,)>().is_err());
    }
}
