//! Arguments and results for the raw (basic-socket-rpc) codec, whose bytes carry no types.
//!
//! An ARG is `TYPE:VALUE` — `u8` `u16` `u32` `u64` `i8` `i16` `i32` `i64` `f32` `f64` `bool`,
//! `str:TEXT`, `bytes:HEX` — or a JSON string (a `str`) or `true`/`false`. Numbers need their
//! width: `u32:1000`. A result is printed as a hex string unless `--returns` names its types.

use rpc_codecs::raw::to_bytes;

use crate::Failure;

fn usage(arg: &str, why: impl std::fmt::Display) -> Failure {
    Failure::usage(format!(
        "raw argument {arg:?}: {why}; write TYPE:VALUE (u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 bool str bytes), as u32:1000"
    ))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes one ARG in the little-endian format.
fn encode_one(arg: &str) -> Result<Vec<u8>, Failure> {
    macro_rules! num {
        ($t:ty, $v:expr) => {
            to_bytes(&$v.parse::<$t>().map_err(|e| usage(arg, e))?)
        };
    }
    let encoded = match arg.split_once(':') {
        Some(("u8", v)) => num!(u8, v),
        Some(("u16", v)) => num!(u16, v),
        Some(("u32", v)) => num!(u32, v),
        Some(("u64", v)) => num!(u64, v),
        Some(("i8", v)) => num!(i8, v),
        Some(("i16", v)) => num!(i16, v),
        Some(("i32", v)) => num!(i32, v),
        Some(("i64", v)) => num!(i64, v),
        Some(("f32", v)) => num!(f32, v),
        Some(("f64", v)) => num!(f64, v),
        Some(("bool", v)) => num!(bool, v),
        Some(("str", v)) => to_bytes(v),
        Some(("bytes", v)) => {
            let b = hex(v).ok_or_else(|| usage(arg, "not hex"))?;
            to_bytes(serde_bytes::Bytes::new(&b))
        }
        _ => match serde_json::from_str::<serde_json::Value>(arg) {
            Ok(serde_json::Value::String(s)) => to_bytes(&s),
            Ok(serde_json::Value::Bool(b)) => to_bytes(&b),
            Ok(_) => return Err(usage(arg, "the width of a number is not known")),
            Err(_) => return Err(usage(arg, "not TYPE:VALUE nor a JSON string")),
        },
    };
    encoded.map_err(|e| usage(arg, e))
}

/// Encodes the ARGs one after another, as basic-socket-rpc's serializers do.
pub(crate) fn encode(args: &[String]) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    for a in args {
        out.extend(encode_one(a)?);
    }
    Ok(out)
}

/// Decodes a result by the comma-separated `types`, or shows its bytes as hex.
pub(crate) fn decode(bytes: &[u8], types: Option<&str>) -> Result<serde_json::Value, Failure> {
    use serde_json::Value;
    let Some(types) = types else {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return Ok(Value::String(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ));
    };
    let mut rest = bytes;
    let mut values = Vec::new();
    for t in types.split(',') {
        let mut de = rpc_codecs::raw::Deserializer::new(rest);
        macro_rules! take {
            ($ty:ty) => {
                serde_json::json!(<$ty as serde::Deserialize>::deserialize(&mut de)
                    .map_err(|e| Failure::usage(format!("the result is not {types}: {e}")))?)
            };
        }
        let v = match t.trim() {
            "u8" => take!(u8),
            "u16" => take!(u16),
            "u32" => take!(u32),
            "u64" => take!(u64),
            "i8" => take!(i8),
            "i16" => take!(i16),
            "i32" => take!(i32),
            "i64" => take!(i64),
            "f32" => take!(f32),
            "f64" => take!(f64),
            "bool" => take!(bool),
            "str" => take!(String),
            "bytes" => {
                let b: serde_bytes::ByteBuf = serde::Deserialize::deserialize(&mut de)
                    .map_err(|e| Failure::usage(format!("the result is not {types}: {e}")))?;
                Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
            }
            other => return Err(Failure::usage(format!("unknown result type {other:?}"))),
        };
        rest = de.remaining();
        values.push(v);
    }
    if !rest.is_empty() {
        return Err(Failure::usage(format!(
            "the result has {} byte(s) after {types}",
            rest.len()
        )));
    }
    Ok(if values.len() == 1 {
        values.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(values)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greet_arguments_encode_as_python_does() {
        assert_eq!(
            encode(&["\"Robert\"".into()]).ok(),
            Some(b"\x06\0\0\0Robert".to_vec())
        );
        assert_eq!(
            encode(&["u32:1000".into(), "u32:2050".into()]).ok(),
            Some(vec![0xe8, 3, 0, 0, 2, 8, 0, 0])
        );
        assert!(encode(&["1000".into()]).is_err());
        assert_eq!(
            decode(b"\xea\x0b\0\0", Some("u32")).ok(),
            Some(serde_json::json!(3050))
        );
        assert_eq!(
            decode(b"\xea\x0b", None).ok(),
            Some(serde_json::json!("ea0b"))
        );
        assert!(decode(b"\xea\x0b\0\0\0", Some("u32")).is_err());
    }
}
