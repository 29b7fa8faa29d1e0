//! The encoding half of [`Le`](super::Le).

use bytes::BufMut;
use serde::ser::{self, Serialize};

use super::LeError;

/// A serde serializer that appends the little-endian encoding of values to a buffer.
///
/// The buffer is anything that can grow and be patched in place: `Vec<u8>`, `BytesMut`, or a
/// `&mut` to either. Sequence and map lengths are written after their elements, into room
/// reserved before them.
///
/// ```
/// use rpc_core::le::Serializer;
/// use serde::Serialize;
///
/// let mut out = Vec::new();
/// ["a", "bc"].to_vec().serialize(&mut Serializer::new(&mut out))?;
/// assert_eq!(out, b"\x0f\0\0\0\x02\0\0\0\x01\0\0\0a\x02\0\0\0bc");
/// # Ok::<(), rpc_core::le::LeError>(())
/// ```
#[derive(Debug)]
pub struct Serializer<W> {
    out: W,
}

impl<W: BufMut + AsMut<[u8]>> Serializer<W> {
    /// A serializer appending to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The buffer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn put(&mut self, bytes: &[u8]) {
        self.out.put_slice(bytes);
    }

    fn position(&mut self) -> usize {
        self.out.as_mut().len()
    }

    fn put_len(&mut self, len: usize) -> Result<(), LeError> {
        let len = u32::try_from(len).map_err(|_| LeError::TooLong)?;
        self.put(&len.to_le_bytes());
        Ok(())
    }

    /// Reserves a sequence's or map's `byte_len ‖ count` header; returns where it starts.
    fn begin_counted(&mut self) -> usize {
        let at = self.position();
        self.put(&[0; 8]);
        at
    }

    /// Fills in the header reserved at `at`, now that `count` elements follow it.
    fn end_counted(&mut self, at: usize, count: u64) -> Result<(), LeError> {
        let byte_len = self.position() - at - 4;
        let byte_len = u32::try_from(byte_len).map_err(|_| LeError::TooLong)?;
        let count = u32::try_from(count).map_err(|_| LeError::TooLong)?;
        let header = &mut self.out.as_mut()[at..at + 8];
        header[..4].copy_from_slice(&byte_len.to_le_bytes());
        header[4..].copy_from_slice(&count.to_le_bytes());
        Ok(())
    }
}

/// The state of a compound value being serialized: a tuple, struct, sequence, map or enum variant.
///
/// Returned by [`Serializer`]'s `serialize_seq`, `serialize_tuple`, `serialize_map`, ...
#[derive(Debug)]
pub struct Compound<'a, W> {
    ser: &'a mut Serializer<W>,
    /// Where the `byte_len ‖ count` header of a sequence or map starts; `None` for the
    /// fixed-size compounds, which have no header.
    header: Option<usize>,
    /// Elements (or map pairs) written so far.
    count: u64,
}

impl<W: BufMut + AsMut<[u8]>> Compound<'_, W> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LeError> {
        value.serialize(&mut *self.ser)
    }

    fn finish(self) -> Result<(), LeError> {
        match self.header {
            Some(at) => self.ser.end_counted(at, self.count),
            None => Ok(()),
        }
    }
}

macro_rules! put_le {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<(), LeError> {
            self.put(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a, W: BufMut + AsMut<[u8]>> ser::Serializer for &'a mut Serializer<W> {
    type Ok = ();
    type Error = LeError;
    type SerializeSeq = Compound<'a, W>;
    type SerializeTuple = Compound<'a, W>;
    type SerializeTupleStruct = Compound<'a, W>;
    type SerializeTupleVariant = Compound<'a, W>;
    type SerializeMap = Compound<'a, W>;
    type SerializeStruct = Compound<'a, W>;
    type SerializeStructVariant = Compound<'a, W>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), LeError> {
        self.put(&[u8::from(v)]);
        Ok(())
    }

    put_le! {
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_f32: f32, serialize_f64: f64
    }

    fn serialize_char(self, v: char) -> Result<(), LeError> {
        self.serialize_u32(u32::from(v))
    }

    fn serialize_str(self, v: &str) -> Result<(), LeError> {
        self.serialize_bytes(v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), LeError> {
        self.put_len(v.len())?;
        self.put(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), LeError> {
        self.put(&[0]);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), LeError> {
        self.put(&[1]);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), LeError> {
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), LeError> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
    ) -> Result<(), LeError> {
        self.serialize_u32(variant_index)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), LeError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), LeError> {
        self.put(&variant_index.to_le_bytes());
        value.serialize(self)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, W>, LeError> {
        let header = Some(self.begin_counted());
        Ok(Compound {
            ser: self,
            header,
            count: 0,
        })
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a, W>, LeError> {
        Ok(Compound {
            ser: self,
            header: None,
            count: 0,
        })
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, LeError> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, LeError> {
        self.put(&variant_index.to_le_bytes());
        self.serialize_tuple(len)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a, W>, LeError> {
        self.serialize_seq(len)
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, W>, LeError> {
        self.serialize_tuple(len)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, LeError> {
        self.put(&variant_index.to_le_bytes());
        self.serialize_tuple(len)
    }
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeSeq for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LeError> {
        self.count += 1;
        self.element(value)
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeTuple for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LeError> {
        self.element(value)
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeTupleStruct for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LeError> {
        self.element(value)
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeTupleVariant for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LeError> {
        self.element(value)
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeMap for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), LeError> {
        self.count += 1;
        self.element(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LeError> {
        self.element(value)
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

/// A field left out would shift every later one: the reader cannot tell.
fn cannot_skip(key: &'static str) -> LeError {
    LeError::Custom(format!(
        "cannot skip field `{key}`: the le format has no field names, so every field must be written"
    ))
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeStruct for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), LeError> {
        self.element(value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), LeError> {
        Err(cannot_skip(key))
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

impl<W: BufMut + AsMut<[u8]>> ser::SerializeStructVariant for Compound<'_, W> {
    type Ok = ();
    type Error = LeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), LeError> {
        self.element(value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), LeError> {
        Err(cannot_skip(key))
    }

    fn end(self) -> Result<(), LeError> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_after_existing_content_and_patches_the_right_header() {
        let mut out = bytes::BytesMut::from(&b"xyz"[..]);
        vec![vec![7u8], vec![]]
            .serialize(&mut Serializer::new(&mut out))
            .unwrap();
        assert_eq!(
            &out[..],
            b"xyz\x15\0\0\0\x02\0\0\0\x05\0\0\0\x01\0\0\0\x07\x04\0\0\0\0\0\0\0"
        );
    }

    #[test]
    fn a_seq_without_a_known_length_is_counted() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0u8..3).filter(|x| x % 2 == 0))
            }
        }
        let mut out = Vec::new();
        Unsized.serialize(&mut Serializer::new(&mut out)).unwrap();
        assert_eq!(out, b"\x06\0\0\0\x02\0\0\0\x00\x02");
    }
}
