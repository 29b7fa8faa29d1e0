//! The decoding half of [`Le`](super::Le).

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::LeError;

/// How deeply options, sequences, maps and enums may nest in decoded input; deeper input is
/// refused ([`LeError::TooDeep`]), not recursed into. Only recursive types can get near it.
pub const MAX_DEPTH: usize = 128;

/// A serde deserializer reading the little-endian encoding from a byte slice.
///
/// Strings and byte strings are borrowed from the input where the type allows. The format is not
/// self-describing: `deserialize_any` and `deserialize_ignored_any` fail with
/// [`LeError::NotSelfDescribing`]. Call [`end`](Self::end) after the value to refuse trailing bytes.
///
/// ```
/// use rpc_core::le::Deserializer;
/// use serde::Deserialize;
///
/// let mut de = Deserializer::new(b"\x01\x02\0\0\0hi\xff");
/// assert_eq!(<(bool, &str)>::deserialize(&mut de)?, (true, "hi"));
/// assert_eq!(de.remaining(), b"\xff");
/// assert!(de.end().is_err());
/// # Ok::<(), rpc_core::le::LeError>(())
/// ```
#[derive(Debug)]
pub struct Deserializer<'de> {
    input: &'de [u8],
    depth: usize,
}

/// How many more elements than bytes a sequence or map may claim (elements of zero-sized types).
const ZERO_SIZED_ELEMENTS: usize = 1 << 16;

impl<'de> Deserializer<'de> {
    /// A deserializer over `input`.
    pub fn new(input: &'de [u8]) -> Self {
        Self { input, depth: 0 }
    }

    /// The bytes not consumed yet.
    pub fn remaining(&self) -> &'de [u8] {
        self.input
    }

    /// Succeeds if every byte has been consumed, else [`LeError::TrailingBytes`].
    pub fn end(&self) -> Result<(), LeError> {
        match self.input.len() {
            0 => Ok(()),
            n => Err(LeError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], LeError> {
        if n > self.input.len() {
            return Err(LeError::Eof);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, LeError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A `u32` length prefix and the bytes it covers; never more than the input holds.
    fn prefixed(&mut self) -> Result<&'de [u8], LeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| LeError::Eof)?;
        self.take(len)
    }

    fn enter(&mut self) -> Result<(), LeError> {
        if self.depth >= MAX_DEPTH {
            return Err(LeError::TooDeep);
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A sequence or map: `u32 byte_len ‖ u32 count ‖ elements`, the elements taking exactly
    /// `byte_len - 4` bytes. `visit` reads the elements from `self` with the count.
    fn counted<T>(
        &mut self,
        visit: impl FnOnce(&mut Counted<'_, 'de>) -> Result<T, LeError>,
    ) -> Result<T, LeError> {
        let Some((count, elements)) = self.prefixed()?.split_first_chunk::<4>() else {
            // Too short to hold even the count.
            return Err(LeError::LengthMismatch);
        };
        let count = u32::from_le_bytes(*count);
        // Elements of a zero-sized type take no bytes, so the count alone would set the work:
        // at most `ZERO_SIZED_ELEMENTS` more elements than bytes are read.
        if count as usize > elements.len().saturating_add(ZERO_SIZED_ELEMENTS) {
            return Err(LeError::LengthMismatch);
        }
        let after = std::mem::replace(&mut self.input, elements);
        self.enter()?;
        let mut access = Counted {
            de: &mut *self,
            left: count as usize,
        };
        // The body is all there (`prefixed` checked), so running out inside it means the
        // elements need more bytes than the byte length gave them.
        let value = visit(&mut access).map_err(|e| match e {
            LeError::Eof => LeError::LengthMismatch,
            e => e,
        })?;
        if access.left != 0 || !self.input.is_empty() {
            return Err(LeError::LengthMismatch);
        }
        self.leave();
        self.input = after;
        Ok(value)
    }

    /// `len` values in a row, without a header.
    fn fixed<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, LeError> {
        let mut access = Counted {
            de: &mut *self,
            left: len,
        };
        let value = visitor.visit_seq(&mut access)?;
        if access.left != 0 {
            return Err(LeError::LengthMismatch);
        }
        Ok(value)
    }
}

macro_rules! get_le {
    ($($method:ident => $visit:ident: $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
            visitor.$visit(<$t>::from_le_bytes(self.array()?))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = LeError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, LeError> {
        Err(LeError::NotSelfDescribing)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, LeError> {
        Err(LeError::NotSelfDescribing)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        match self.array::<1>()?[0] {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(LeError::InvalidBool(b)),
        }
    }

    get_le! {
        deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128, deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16, deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64, deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32, deserialize_f64 => visit_f64: f64
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        let c = self.u32()?;
        visitor.visit_char(char::from_u32(c).ok_or(LeError::InvalidChar(c))?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        let s = std::str::from_utf8(self.prefixed()?).map_err(|_| LeError::InvalidUtf8)?;
        visitor.visit_borrowed_str(s)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        visitor.visit_borrowed_bytes(self.prefixed()?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        match self.array::<1>()?[0] {
            0 => visitor.visit_none(),
            1 => {
                self.enter()?;
                let value = visitor.visit_some(&mut *self)?;
                self.leave();
                Ok(value)
            }
            b => Err(LeError::InvalidOption(b)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        self.counted(|access| visitor.visit_seq(access))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, LeError> {
        self.fixed(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, LeError> {
        self.fixed(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        self.counted(|access| visitor.visit_map(access))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LeError> {
        self.fixed(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LeError> {
        self.enter()?;
        let value = visitor.visit_enum(&mut *self)?;
        self.leave();
        Ok(value)
    }

    /// Identifiers are variant indexes, as enums write them: a `u32`.
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LeError> {
        self.deserialize_u32(visitor)
    }
}

/// The elements of a tuple, struct, sequence or map: `left` more to go, then `None`.
struct Counted<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Counted<'_, 'de> {
    type Error = LeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, LeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // The count is what the input claims; never hint beyond the bytes there are.
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::MapAccess<'de> for Counted<'_, 'de> {
    type Error = LeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, LeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, LeError> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::EnumAccess<'de> for &mut Deserializer<'de> {
    type Error = LeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), LeError> {
        let index = self.u32()?;
        let variant = seed.deserialize(index.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Deserializer<'de> {
    type Error = LeError;

    fn unit_variant(self) -> Result<(), LeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, LeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, LeError> {
        self.fixed(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LeError> {
        self.fixed(fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn a_tuple_yields_exactly_its_elements_then_none_without_reading() {
        struct Probe;
        impl<'de> Visitor<'de> for Probe {
            type Value = (u8, u8, Option<de::IgnoredAny>, Option<de::IgnoredAny>);
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("two bytes")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                Ok((
                    seq.next_element()?.unwrap(),
                    seq.next_element()?.unwrap(),
                    // IgnoredAny would fail (NotSelfDescribing) if it were ever decoded.
                    seq.next_element()?,
                    seq.next_element()?,
                ))
            }
        }
        let mut de = Deserializer::new(b"\x01\x02\x03");
        let v = de::Deserializer::deserialize_tuple(&mut de, 2, Probe).unwrap();
        assert_eq!((v.0, v.1, v.2.is_none(), v.3.is_none()), (1, 2, true, true));
        assert_eq!(de.remaining(), b"\x03");
    }

    #[test]
    fn a_visitor_that_stops_early_is_a_length_mismatch() {
        /// Reads one element of type `T`, whatever the length.
        struct First<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for First<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a seq")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
                seq.next_element()
            }
        }
        fn first<T>() -> First<T> {
            First(std::marker::PhantomData)
        }
        let mut de = Deserializer::new(b"\x06\0\0\0\x02\0\0\0\x01\x02");
        assert_eq!(
            de::Deserializer::deserialize_seq(&mut de, first::<u8>()),
            Err(LeError::LengthMismatch)
        );
        let mut de = Deserializer::new(b"\x01\x02");
        assert_eq!(
            de::Deserializer::deserialize_tuple(&mut de, 2, first::<u8>()),
            Err(LeError::LengthMismatch)
        );
        // A seq of zero-sized elements whose visitor stops early is caught by the count.
        let mut de = Deserializer::new(b"\x04\0\0\0\x02\0\0\0");
        assert_eq!(
            de::Deserializer::deserialize_seq(&mut de, first::<()>()),
            Err(LeError::LengthMismatch)
        );
    }

    #[test]
    fn depth_resets_between_siblings() {
        // 200 sibling options at depth 1 each: fine; depth only counts nesting.
        let mut input = vec![];
        for _ in 0..200 {
            input.extend_from_slice(&[1, 7]);
        }
        let mut de = Deserializer::new(&input);
        for _ in 0..200 {
            assert_eq!(Option::<u8>::deserialize(&mut de).unwrap(), Some(7));
        }
        de.end().unwrap();
    }
}
