//! The JSON value format, [`Json`], with by-name arguments.
//!
//! It lives here rather than with the JSON-RPC codec so that typed code can call `serde_json`
//! directly, monomorphized for the value's type, for positional argument lists and for results
//! (rpc-core recognises its own formats by type: see [`Format`]); argument lists by name still go through
//! `erased_serde`. `rpc_codecs::jsonrpc` re-exports it.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::format::DeserializeFn;
use crate::{BoxError, Format};
use bytes::{BufMut, BytesMut};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::value::RawValue;

/// JSON values, as serde_json writes and reads them.
///
/// Argument lists may come as an array (by position) or an object (by name). By name, each
/// parameter the handler declared with [`Route::params`](crate::Route::params) is taken from the
/// object: a missing one is `null` (so `Option` parameters may be left out), an unknown one is an
/// error. A handler that declared no names and takes a single argument receives the whole object
/// as that argument (a params struct). Absent params are an empty list.
///
/// ```
/// use rpc_core::json::Json;
/// use rpc_core::Payload;
///
/// let p = Payload::encode(&Json, &("a", 1.5, [1, 2]))?;
/// assert_eq!(p.bytes().as_ref(), br#"["a",1.5,[1,2]]"#);
/// # Ok::<(), rpc_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// The format as tests and payloads hold it.
#[cfg(test)]
static JSON: Json = Json;

impl Format for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    /// Counted from the structure outside strings: one, plus one per bracket opened, comma and
    /// colon (so an object's keys count as values, and an empty container as two): at least the
    /// values there are, at most twice as many.
    fn count_values(&self, src: &[u8], limit: usize) -> Option<usize> {
        let mut n = 1usize;
        let mut in_string = false;
        let mut escaped = false;
        for &b in src {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' | b':' => {
                    n += 1;
                    if n > limit {
                        return Some(n);
                    }
                }
                _ => {}
            }
        }
        Some(n)
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        let mut ser = serde_json::Serializer::new(dst.writer());
        erased_serde::serialize(value, &mut ser)?;
        Ok(())
    }

    fn decode(
        &self,
        src: &[u8],
        names: Option<&[&'static str]>,
        visit: &mut DeserializeFn<'_>,
    ) -> Result<(), BoxError> {
        match src.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {
                let mut de = serde_json::Deserializer::from_slice(b"[]");
                visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
                Ok(())
            }
            Some(b'{') => match names {
                Some(names) => {
                    let mut de = RawSeq(by_name(src, names)?);
                    visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
                    Ok(())
                }
                None => {
                    let raw = serde_json::from_slice::<&RawValue>(src)?;
                    let mut de = ObjectOrArgs(raw);
                    visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
                    Ok(())
                }
            },
            Some(_) => {
                let mut de = serde_json::Deserializer::from_slice(src);
                visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
                de.end()?;
                Ok(())
            }
        }
    }
}

const NULL: &str = "null";

/// The object's members in the order of `names`.
fn by_name<'a>(src: &'a [u8], names: &[&'static str]) -> Result<Vec<&'a RawValue>, BoxError> {
    let mut members: HashMap<Cow<'a, str>, &'a RawValue> = serde_json::from_slice(src)?;
    let null: &'static RawValue = serde_json::from_str(NULL).expect("null is a JSON value");
    let values = names
        .iter()
        .map(|n| members.remove(*n).unwrap_or(null))
        .collect();
    if let Some(unknown) = members.keys().next() {
        return Err(format!("unknown parameter {unknown:?}").into());
    }
    Ok(values)
}

/// Whether `raw`, a JSON object, has no members.
fn is_empty_object(raw: &str) -> bool {
    raw.trim_start()
        .strip_prefix('{')
        .is_some_and(|rest| rest.trim_start().starts_with('}'))
}

/// A JSON object: itself to anything that reads a value (a result, a map, a struct), and a list
/// of one argument to what reads an argument list (a tuple), so a handler taking one params struct
/// receives the whole object.
struct ObjectOrArgs<'a>(&'a RawValue);

macro_rules! forward_to_json {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let mut de = serde_json::Deserializer::from_str(self.0.get());
            let v = serde::Deserializer::$method(&mut de, visitor)?;
            de.end()?;
            Ok(v)
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for &mut ObjectOrArgs<'de> {
    type Error = serde_json::Error;

    forward_to_json!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // No arguments asked for, none given by name: `"params": {}` calls a method taking none.
        if len == 0 && is_empty_object(self.0.get()) {
            return visitor.visit_seq(RawSeqAccess(Vec::new().into_iter()));
        }
        visitor.visit_seq(RawSeqAccess(vec![self.0].into_iter()))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(RawSeqAccess(vec![self.0].into_iter()))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde::Deserializer::deserialize_unit_struct(&mut de, name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde::Deserializer::deserialize_newtype_struct(&mut de, name, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde::Deserializer::deserialize_struct(&mut de, name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde::Deserializer::deserialize_enum(&mut de, name, variants, visitor)
    }
}

/// A list of raw JSON values, read as a sequence.
struct RawSeq<'a>(Vec<&'a RawValue>);

impl<'de> serde::Deserializer<'de> for &mut RawSeq<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(RawSeqAccess(std::mem::take(&mut self.0).into_iter()))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct RawSeqAccess<'a>(std::vec::IntoIter<&'a RawValue>);

impl<'de> SeqAccess<'de> for RawSeqAccess<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.0.next() {
            None => Ok(None),
            Some(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let v = seed.deserialize(&mut de)?;
                de.end()?;
                Ok(Some(v))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Appends the encoding of `value` to `dst`.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(
    value: &T,
    dst: &mut BytesMut,
) -> Result<(), BoxError> {
    serde_json::to_writer(dst.writer(), value)?;
    Ok(())
}

/// What typed code may read directly from `src`: `Some` with the bytes of one JSON value (`[]`
/// when there are none); `None` for an object, which by-name parameters and whole-object
/// arguments read through [`Json`]'s `Format::decode`.
pub(crate) fn positional(src: &[u8]) -> Option<&[u8]> {
    match src.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Some(b"[]"),
        Some(b'{') => None,
        Some(_) => Some(src),
    }
}

/// Runs `read` over a decoder of `src`, which must hold exactly one value.
pub(crate) fn decode<'a, R>(
    src: &'a [u8],
    read: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>,
    ) -> Result<R, BoxError>,
) -> Result<R, BoxError> {
    let mut de = serde_json::Deserializer::from_slice(src);
    let v = read(&mut de)?;
    de.end()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Erased;
    use crate::format::FromArgs;
    use crate::Payload;

    fn args<T: FromArgs>(json: &str, names: Option<&[&'static str]>) -> Result<T, String> {
        let p = Payload::new(bytes::Bytes::copy_from_slice(json.as_bytes()), &JSON);
        T::from_args(&p, names).map_err(|e| e.message().to_string())
    }

    #[test]
    fn values_are_counted_from_the_structure_outside_strings() {
        let count = |s: &str| JSON.count_values(s.as_bytes(), usize::MAX).unwrap();
        assert_eq!(count("1"), 1);
        assert_eq!(count("[1,2,3]"), 4);
        // Keys count; brackets, commas and colons inside strings do not.
        assert_eq!(count(r#"{"a":1,"b":"[,:{"}"#), 5);
        assert_eq!(count(r#"["\"[,]"]"#), 2);
        // At least the values there are: empty containers count twice.
        assert_eq!(count("[[],[]]"), 5);
        assert_eq!(
            JSON.count_values(b"[0,0,0,0,0,0]", 3),
            Some(4),
            "stops past the limit"
        );
    }

    #[test]
    fn positional_and_named_reach_the_same_parameters() {
        let names: &[&'static str] = &["minuend", "subtrahend"];
        assert_eq!(args::<(i64, i64)>("[42, 23]", Some(names)), Ok((42, 23)));
        assert_eq!(
            args::<(i64, i64)>(r#"{"subtrahend": 23, "minuend": 42}"#, Some(names)),
            Ok((42, 23))
        );
        assert_eq!(
            args::<(i64, Option<i64>)>(r#"{"minuend": 42}"#, Some(names)),
            Ok((42, None))
        );
        assert!(
            args::<(i64, i64)>(r#"{"minuend": 42, "x": 1}"#, Some(names))
                .unwrap_err()
                .contains("unknown parameter")
        );
        assert!(args::<(i64, i64)>("[42]", Some(names)).is_err());
        assert!(args::<(i64, i64)>("[42, 1, 2]", Some(names)).is_err());
        assert_eq!(args::<()>("", None), Ok(()));
        assert_eq!(args::<()>("[]", None), Ok(()));
    }

    /// The same format reached only through `erased_serde`.
    static ERASED: Erased<Json> = Erased(Json);

    #[test]
    fn typed_and_erased_paths_agree() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct P {
            a: i64,
            b: Option<String>,
        }
        let value = (P { a: 1, b: None }, "x\u{e9}\"", [1.5, -2.0]);
        let typed = Payload::encode(&Json, &value).unwrap();
        let erased = Payload::encode(&ERASED, &value).unwrap();
        assert_eq!(typed.bytes(), erased.bytes());
        type Args = (P, String, Vec<f64>);
        for format in [&Json as &'static dyn Format, &ERASED] {
            let p = Payload::new(typed.bytes().clone(), format);
            assert_eq!(p.decode::<Args>().unwrap().0, P { a: 1, b: None });
            assert_eq!(Args::from_args(&p, None).unwrap().1, "x\u{e9}\"");
            assert!(<(P, String)>::from_args(&p, None).is_err());
            let object = Payload::new(bytes::Bytes::from_static(br#" {"a": 2}"#), format);
            assert_eq!(object.decode::<P>().unwrap(), P { a: 2, b: None });
            assert_eq!(<(P,)>::from_args(&object, None).unwrap().0.a, 2);
            let names: &[&'static str] = &["b", "a"];
            let two = Payload::new(bytes::Bytes::from_static(br#"{"a": 3}"#), format);
            assert_eq!(
                <(Option<String>, i64)>::from_args(&two, Some(names)).unwrap(),
                (None, 3)
            );
            let empty = Payload::new(bytes::Bytes::from_static(b"  "), format);
            assert_eq!(<()>::from_args(&empty, None), Ok(()));
            let trailing = Payload::new(bytes::Bytes::from_static(b"[1] 2"), format);
            assert!(trailing.decode::<Vec<i64>>().is_err());
            assert!(<(i64,)>::from_args(&trailing, None).is_err());
        }
    }

    #[test]
    fn an_object_without_names_is_one_argument() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct P {
            a: i64,
        }
        assert_eq!(args::<(P,)>(r#"{"a": 1}"#, None), Ok((P { a: 1 },)));
    }

    #[test]
    fn an_empty_object_calls_a_method_without_arguments() {
        assert_eq!(args::<()>("{}", None), Ok(()));
        assert_eq!(args::<()>(" { } ", None), Ok(()));
        assert!(args::<()>(r#"{"a": 1}"#, None).is_err());
    }
}
