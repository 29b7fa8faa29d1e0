//! Wire formats for values: how arguments and results become bytes.
//!
//! A [`Format`] is the value half of a codec (msgpack, JSON, little-endian binary). It is object safe,
//! so one [`Router`](crate::Router) decodes typed arguments from whichever format a request arrived in:
//! handlers are written once, not per codec.
//!
//! Arguments are a positional list. A caller passes a tuple (`()` for none, `(x,)` for one, `(x, y)`,
//! ...) or a `Vec` of one type; a [`Request`](crate::Request) can also carry an already encoded
//! [`Payload`]. (In the little-endian format a `Vec` is written as one array, with its count, as
//! basic-socket-rpc's arrays are: there a list of arguments is a tuple.) Formats that know parameter names (JSON-RPC's by-name params) map them onto the
//! positions the handler declared.

use std::any::{Any, TypeId};
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{BoxError, Error, ServerError};

/// The callback through which a [`Format`] hands its deserializer to typed code.
pub type DeserializeFn<'a> =
    dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> + 'a;

/// A value encoding: turns any `Serialize` into bytes and bytes into any `Deserialize`.
///
/// Implementations are stateless unit types shared as `&'static dyn Format`.
///
/// Formats are an open set: any crate may write one, and typed code reaches it through
/// `erased_serde`. rpc-core's own formats ([`MsgPack`](crate::msgpack::MsgPack),
/// [`Json`](crate::json::Json)) are recognised by their type and encoded and decoded without type
/// erasure, a measured gain on every call (see `ARCHITECTURE.md`); no format can claim that path
/// for itself, and a format written elsewhere gets the same results through the erased path.
pub trait Format: Any + fmt::Debug + Send + Sync {
    /// A short name for logs and errors, such as `"msgpack"`.
    fn name(&self) -> &'static str;

    /// Appends the encoding of `value` to `dst`.
    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError>;

    /// Decodes `src`, which must hold exactly one value, by handing a deserializer over it to `visit`.
    ///
    /// `names` are the handler's declared parameter names, for formats whose argument lists may come
    /// by name; positional formats ignore them.
    fn decode(
        &self,
        src: &[u8],
        names: Option<&[&'static str]>,
        visit: &mut DeserializeFn<'_>,
    ) -> Result<(), BoxError>;

    /// How many values `src` holds, counted without decoding it (containers, their elements,
    /// map keys and values), or a number past `limit` as soon as it has more; `None` for a format
    /// that cannot tell, the default.
    ///
    /// Transports use it to refuse arguments that would decode into far more memory than they
    /// take on the wire (a megabyte of one-byte values is a million decoded values of tens of
    /// bytes each).
    fn count_values(&self, src: &[u8], limit: usize) -> Option<usize> {
        let _ = (src, limit);
        None
    }
}

/// A format rpc-core implements itself, which typed code encodes and decodes directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Native {
    MsgPack,
    Json,
}

/// Which of rpc-core's own formats `format` is, by its type.
fn native(format: &dyn Format) -> Option<Native> {
    let id = Any::type_id(format);
    if id == TypeId::of::<crate::msgpack::MsgPack>() {
        Some(Native::MsgPack)
    } else if id == TypeId::of::<crate::json::Json>() {
        Some(Native::Json)
    } else {
        None
    }
}

/// Whether `format` is of type `F`.
fn is<F: Format>(format: &dyn Format) -> bool {
    Any::type_id(format) == TypeId::of::<F>()
}

/// A native format reached only through `erased_serde`, as any format rpc-core does not know:
/// for tests that the typed and the erased paths agree.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Erased<F: Format>(pub(crate) F);

#[cfg(test)]
impl<F: Format> Format for Erased<F> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        self.0.encode(value, dst)
    }

    fn decode(
        &self,
        src: &[u8],
        names: Option<&[&'static str]>,
        visit: &mut DeserializeFn<'_>,
    ) -> Result<(), BoxError> {
        self.0.decode(src, names, visit)
    }
}

/// Appends `value` in `format` to `dst`, without type erasure when the format is native.
fn encode_into<T: Serialize + ?Sized>(
    format: &dyn Format,
    value: &T,
    dst: &mut BytesMut,
) -> Result<(), BoxError> {
    match native(format) {
        Some(Native::MsgPack) => crate::msgpack::encode(value, dst),
        Some(Native::Json) => crate::json::encode(value, dst),
        None => format.encode(&value, dst),
    }
}

/// The size of the chunks values are encoded into.
const ARENA_CHUNK: usize = 4096;

thread_local! {
    /// Values are encoded into a chunk shared by this thread's recent payloads and split off
    /// it: a payload costs no allocation of its own (a chunk is freed when its last payload
    /// goes). A payload kept for long keeps its chunk, at most 4 KiB, alive.
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Encodes `value` in `format` into fresh bytes.
pub fn encode<T: Serialize + ?Sized>(format: &dyn Format, value: &T) -> Result<Bytes, Error> {
    ARENA.with(|arena| {
        // Re-entered only if a value's `Serialize` encodes another payload: give it its own.
        let Ok(mut arena) = arena.try_borrow_mut() else {
            let mut dst = BytesMut::new();
            encode_into(format, value, &mut dst).map_err(Error::Codec)?;
            return Ok(dst.freeze());
        };
        if arena.capacity() < ARENA_CHUNK / 16 {
            *arena = BytesMut::with_capacity(ARENA_CHUNK);
        }
        match encode_into(format, value, &mut arena) {
            Ok(()) => Ok(arena.split().freeze()),
            Err(e) => {
                arena.clear();
                Err(Error::Codec(e))
            }
        }
    })
}

/// Decodes a `T` from `src` in `format`.
pub fn decode<T: DeserializeOwned>(
    format: &dyn Format,
    src: &[u8],
    names: Option<&[&'static str]>,
) -> Result<T, BoxError> {
    match native(format) {
        Some(Native::MsgPack) => return crate::msgpack::decode(src, |de| Ok(T::deserialize(de)?)),
        Some(Native::Json) => {
            if let Some(src) = crate::json::positional(src) {
                return crate::json::decode(src, |de| Ok(T::deserialize(de)?));
            }
        }
        None => {}
    }
    let mut out = None;
    format.decode(src, names, &mut |de| {
        out = Some(erased_serde::deserialize::<T>(de)?);
        Ok(())
    })?;
    out.ok_or_else(|| "the format produced no value".into())
}

/// Encoded bytes together with the [`Format`] they are in: an argument list or a result.
///
/// Cloning is cheap (the bytes are reference counted), so a request can be retried without
/// encoding it again.
#[derive(Clone)]
pub struct Payload {
    bytes: Bytes,
    format: &'static dyn Format,
}

impl Payload {
    /// Wraps bytes already encoded in `format`.
    pub fn new(bytes: Bytes, format: &'static dyn Format) -> Self {
        Self { bytes, format }
    }

    /// Encodes `value` in `format`.
    ///
    /// ```
    /// # use rpc_core::{format::Payload, format::Format};
    /// # #[derive(Debug)] struct Json;
    /// # impl Format for Json {
    /// #   fn name(&self) -> &'static str { "json" }
    /// #   fn encode(&self, v: &dyn erased_serde::Serialize, dst: &mut bytes::BytesMut) -> Result<(), rpc_core::BoxError> {
    /// #     use bytes::BufMut; let mut w = dst.writer();
    /// #     erased_serde::serialize(v, &mut serde_json::Serializer::new(&mut w))?; Ok(()) }
    /// #   fn decode(&self, src: &[u8], _: Option<&[&'static str]>, visit: &mut rpc_core::format::DeserializeFn<'_>) -> Result<(), rpc_core::BoxError> {
    /// #     let mut de = serde_json::Deserializer::from_slice(src);
    /// #     visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?; de.end()?; Ok(()) }
    /// # }
    /// let p = Payload::encode(&Json, &[1, 2, 3])?;
    /// assert_eq!(p.bytes().as_ref(), b"[1,2,3]");
    /// assert_eq!(p.decode::<Vec<u8>>()?, vec![1, 2, 3]);
    /// # Ok::<(), rpc_core::Error>(())
    /// ```
    pub fn encode<T: Serialize + ?Sized>(
        format: &'static dyn Format,
        value: &T,
    ) -> Result<Self, Error> {
        Ok(Self::new(encode(format, value)?, format))
    }

    /// An empty payload (the answer to a notification).
    pub fn empty(format: &'static dyn Format) -> Self {
        Self::new(Bytes::new(), format)
    }

    /// Decodes the payload as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(self.format, &self.bytes, None).map_err(Error::Codec)
    }

    /// Decodes the payload as an argument list for a handler with the given parameter names.
    pub fn decode_args<T: DeserializeOwned>(
        &self,
        names: Option<&[&'static str]>,
    ) -> Result<T, ServerError> {
        decode(self.format, &self.bytes, names).map_err(ServerError::invalid_params)
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The format the bytes are in.
    pub fn format(&self) -> &'static dyn Format {
        self.format
    }

    /// Whether the bytes are in format `F`: a codec checks that the arguments it is given are in
    /// its own format ([`Codec::Format`](crate::Codec::Format)).
    ///
    /// ```
    /// use rpc_core::{json::Json, msgpack::MsgPack, Payload};
    ///
    /// let p = Payload::encode(&MsgPack, &1u8)?;
    /// assert!(p.format_is::<MsgPack>());
    /// assert!(!p.format_is::<Json>());
    /// # Ok::<(), rpc_core::Error>(())
    /// ```
    pub fn format_is<F: Format>(&self) -> bool {
        is::<F>(self.format)
    }

    /// `Ok` if the bytes are in `format`, else the error a codec or transport of that format
    /// gives for arguments it cannot carry ([`Error::Codec`]).
    ///
    /// ```
    /// use rpc_core::{json::Json, msgpack::MsgPack, Payload};
    ///
    /// let e = Payload::encode(&MsgPack, &1u8)?.in_format(&Json).unwrap_err();
    /// assert_eq!(e.to_string(), "codec error: the values are msgpack, not json");
    /// # Ok::<(), rpc_core::Error>(())
    /// ```
    pub fn in_format<F: Format>(&self, format: &F) -> Result<(), Error> {
        if self.format_is::<F>() {
            return Ok(());
        }
        Err(Error::Codec(
            format!(
                "the values are {}, not {}",
                self.format.name(),
                format.name()
            )
            .into(),
        ))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("format", &self.format.name())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A positional argument list a caller can send: tuples of up to twelve values, `Vec<T>` and slices.
///
/// Every implementation encodes as a sequence, including `()` (an empty sequence).
pub trait Args {
    /// Serializes the arguments as one sequence.
    fn serialize_args<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

/// Adapts an [`Args`] to `Serialize`.
#[derive(Debug)]
pub struct AsSeq<'a, A: ?Sized>(pub &'a A);

impl<A: Args + ?Sized> Serialize for AsSeq<'_, A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_args(serializer)
    }
}

impl<T: Serialize> Args for [T] {
    fn serialize_args<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self)
    }
}

impl<T: Serialize> Args for Vec<T> {
    fn serialize_args<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self)
    }
}

impl<A: Args + ?Sized> Args for &A {
    fn serialize_args<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize_args(serializer)
    }
}

/// An argument list a handler can take: tuples of up to twelve `DeserializeOwned` values.
///
/// Decoding demands exactly as many arguments as the tuple has: fewer or more is invalid params.
pub trait FromArgs: Sized {
    /// The number of arguments.
    const ARITY: usize;
    /// Decodes the list from a payload.
    fn from_args(payload: &Payload, names: Option<&[&'static str]>) -> Result<Self, ServerError>;
}

/// Decodes an argument tuple into a slot rather than returning it: through `erased_serde` a
/// returned value is boxed (when over two words), a stored one is not.
struct SlotSeq<'a, T>(&'a mut Option<T>);

/// Decodes one argument into a slot, for the same reason.
struct Slot<'a, T>(&'a mut Option<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Slot<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        *self.0 = Some(T::deserialize(d)?);
        Ok(())
    }
}

/// The next argument of `seq`, of `n` expected, `got` so far.
fn next_arg<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    n: usize,
    got: usize,
) -> Result<T, A::Error> {
    let mut slot = None;
    seq.next_element_seed(Slot(&mut slot))?;
    slot.ok_or_else(|| {
        serde::de::Error::custom(format_args!("expected {n} argument(s), got {got}"))
    })
}

macro_rules! tuples {
    ($n:expr; $($t:ident $v:ident),*) => {
        impl<$($t: Serialize),*> Args for ($($t,)*) {
            #[allow(non_snake_case, unused_mut)]
            fn serialize_args<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let ($($v,)*) = self;
                let mut tup = serializer.serialize_tuple($n)?;
                $(tup.serialize_element($v)?;)*
                tup.end()
            }
        }

        impl<'de, $($t: Deserialize<'de>),*> Visitor<'de> for SlotSeq<'_, ($($t,)*)> {
            type Value = ();

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of {} argument(s)", $n)
            }

            #[allow(unused_variables, unused_mut, unused_assignments)]
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                let mut got = 0usize;
                $(
                    let $v: $t = next_arg(&mut seq, $n, got)?;
                    got += 1;
                )*
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(format_args!(
                        "expected {} argument(s), got more", $n)));
                }
                *self.0 = Some(($($v,)*));
                Ok(())
            }

            // Formats that write "no arguments" as null (or leave them out) mean an empty list.
            fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
                self.visit_seq(serde::de::value::SeqDeserializer::<std::iter::Empty<()>, E>::new(
                    std::iter::empty(),
                ))
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
                self.visit_unit()
            }
        }

        impl<$($t: DeserializeOwned),*> FromArgs for ($($t,)*) {
            const ARITY: usize = $n;

            fn from_args(payload: &Payload, names: Option<&[&'static str]>) -> Result<Self, ServerError> {
                let mut slot = None;
                let seq = SlotSeq::<($($t,)*)>(&mut slot);
                let json = match native(payload.format) {
                    Some(Native::Json) => crate::json::positional(&payload.bytes),
                    _ => None,
                };
                match (native(payload.format), json) {
                    (Some(Native::MsgPack), _) => crate::msgpack::decode_tuple(&payload.bytes, $n, seq),
                    (_, Some(src)) => crate::json::decode(src, |de| Ok(de.deserialize_tuple($n, seq)?)),
                    _ => payload.format.decode(&payload.bytes, names, &mut |de| {
                        de.deserialize_tuple($n, SlotSeq::<($($t,)*)>(seq.0))
                    }),
                }
                .map_err(ServerError::invalid_params)?;
                slot.ok_or_else(|| ServerError::invalid_params("the format produced no value"))
            }
        }
    };
}

tuples!(0;);
tuples!(1; A1 a1);
tuples!(2; A1 a1, A2 a2);
tuples!(3; A1 a1, A2 a2, A3 a3);
tuples!(4; A1 a1, A2 a2, A3 a3, A4 a4);
tuples!(5; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5);
tuples!(6; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6);
tuples!(7; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7);
tuples!(8; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8);
tuples!(9; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9);
tuples!(10; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10);
tuples!(11; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11);
tuples!(12; A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11, A12 a12);
