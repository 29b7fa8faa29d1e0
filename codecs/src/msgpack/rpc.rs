//! MessagePack-RPC, as its specification and neovim write it.
//!
//! ```text
//! request       [0, msgid: u32, method: str, params: array]
//! response      [1, msgid: u32, error: any (nil when none), result: any]
//! notification  [2, method: str, params: array]
//! ```
//!
//! Over a stream, each message is one msgpack value with nothing around it
//! ([`Framing::MsgPack`](https://docs.rs/rpc-stack-transports) on the stream transports): its
//! end is found by measuring it.

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::{Codec, DecodeError, IdSeed, Message};
use rpc_core::{Error, ErrorCode, Format, Method, MethodName, Payload, ServerError};

use super::{array_len, named_with_list, skip_value, str_len, MsgPack, MSGPACK};

const REQUEST: u8 = 0;
const RESPONSE: u8 = 1;
const NOTIFICATION: u8 = 2;
const NIL: u8 = 0xc0;

const EXCEPTION: ErrorCode = MsgpackRpcCodec::EXCEPTION;
const VALIDATION: ErrorCode = MsgpackRpcCodec::VALIDATION;

/// The MessagePack-RPC codec: neovim's API and plugin hosts, and any peer of the
/// specification.
///
/// - Request ids are `u32`: a connection's sequence, from 1; answers may come in any order.
///   Over UDP (a transport the specification does not name) they are the low 32 bits of the
///   transport's unguessable seed.
/// - Methods are named ([`Method::Id`] cannot be encoded); a method may arrive as str or bin.
/// - Errors arrive as any value: `[code, message]` and `[code, message, data]` become a
///   [`ServerError`] with that code (neovim's `[0, "Vim:E117: ..."]` has code [`EXCEPTION`](Self::EXCEPTION),
///   `[1, ...]` [`VALIDATION`](Self::VALIDATION)); a bare string is an [`EXCEPTION`](Self::EXCEPTION) with that message; anything
///   else an [`EXCEPTION`](Self::EXCEPTION) whose message shows the value and whose data holds it.
/// - Errors are sent as neovim reads them, `[0, message]` or `[1, message]` (neovim shows the
///   message to whoever called `rpcrequest()`; it shows "unknown error" for any other shape):
///   method not found, invalid params, invalid request and parse errors as validation errors,
///   the rest as exceptions. That drops the code and the data, and with them what tells a
///   caller's retry policy that a call was refused without running:
///   [`with_error_codes`](Self::with_error_codes) sends `[code, message]` and
///   `[code, message, data]` instead, for peers that are rpc-stack too.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use rpc_codecs::msgpack::{MsgPack, MsgpackRpcCodec};
/// use rpc_core::codec::{Codec, Message};
/// use rpc_core::{Method, Payload};
///
/// let codec = MsgpackRpcCodec::new();
/// let mut frame = BytesMut::new();
/// let args = Payload::encode(&MsgPack, &("1+2",))?;
/// codec.encode_request(Some(&7), &Method::from("nvim_eval"), &args, &mut frame)?;
/// assert_eq!(&frame[..], b"\x94\x00\x07\xa9nvim_eval\x91\xa31+2");
///
/// // neovim's answer: no error, the result 3.
/// let answer = codec.decode(Bytes::from_static(b"\x94\x01\x07\xc0\x03"));
/// let Ok(Message::Response { id: 7, result: Ok(result) }) = answer else { panic!() };
/// assert_eq!(&result[..], b"\x03");
/// # Ok::<(), rpc_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgpackRpcCodec {
    error_codes: bool,
}

impl MsgpackRpcCodec {
    /// The code of an error that neovim sends as `[0, message]`: an exception (a Vim error, a
    /// failed evaluation). Also the code of an error sent as a bare string, as pynvim sends
    /// them.
    pub const EXCEPTION: ErrorCode = ErrorCode::new(0);

    /// The code of an error that neovim sends as `[1, message]`: a validation error (wrong
    /// arguments, an unknown method).
    pub const VALIDATION: ErrorCode = ErrorCode::new(1);

    /// The codec, sending errors as neovim reads them.
    pub const fn new() -> Self {
        Self { error_codes: false }
    }

    /// Sends errors as `[code, message]`, or `[code, message, data]` when they have data, so
    /// that a caller that is rpc-stack too sees every error as it was raised (codes, refusals).
    /// neovim shows such an error as "unknown error".
    pub const fn with_error_codes(mut self) -> Self {
        self.error_codes = true;
        self
    }
}

/// Reads a msgpack unsigned integer that fits a `u32`; returns it and its size.
fn read_u32(b: &[u8]) -> Option<(u32, usize)> {
    let mut rest = b;
    let n: u64 = rmp::decode::read_int(&mut rest).ok()?;
    Some((u32::try_from(n).ok()?, b.len() - rest.len()))
}

/// Reads a method name, str or bin; returns it and where it ends.
fn read_method(frame: &Bytes, at: usize) -> Result<(MethodName, usize), &'static str> {
    let rest = frame.get(at..).unwrap_or_default();
    let (len, header) = str_len(rest)
        .or_else(|| bin_len(rest))
        .ok_or("the method name is not a msgpack str")?;
    let start = at + header;
    let end = start
        .checked_add(len)
        .filter(|e| *e <= frame.len())
        .ok_or("truncated method name")?;
    let name = MethodName::from_utf8(frame.slice(start..end))
        .map_err(|_| "the method name is not UTF-8")?;
    Ok((name, end))
}

/// Reads a msgpack bin header; returns the length and the header's size.
fn bin_len(b: &[u8]) -> Option<(usize, usize)> {
    let width = match *b.first()? {
        0xc4 => 1,
        0xc5 => 2,
        0xc6 => 4,
        _ => return None,
    };
    let len = b
        .get(1..1 + width)?
        .iter()
        .fold(0usize, |n, b| (n << 8) | usize::from(*b));
    Some((len, 1 + width))
}

/// The params at `at`, the last element of the message: an array, to the end of the frame.
fn params(frame: &Bytes, at: usize) -> Result<Bytes, &'static str> {
    let params = frame.slice(at.min(frame.len())..);
    if array_len(&params).is_none() {
        return Err("the params are not a msgpack array");
    }
    Ok(params)
}

/// The largest error value decoded into a message and data; past it, an error says only how
/// large the value was (decoding multiplies a value's size many times over).
const MAX_ERROR_VALUE: usize = 16 * 1024;

/// An error value as it came: see [`MsgpackRpcCodec`].
fn read_error(value: &[u8]) -> ServerError {
    if value.len() > MAX_ERROR_VALUE {
        return ServerError::new(
            EXCEPTION,
            format!("an error value of {} bytes, not read", value.len()),
        );
    }
    // The frame was measured whole: this reads a bounded, well-formed value.
    let Ok(value) = rmpv::decode::read_value_with_max_depth(&mut &value[..], super::MAX_DEPTH)
    else {
        return ServerError::new(EXCEPTION, "an error value that does not decode");
    };
    use rmpv::Value;
    let text = |v: &Value| match v {
        Value::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    };
    if let Some(message) = text(&value) {
        return ServerError::new(EXCEPTION, message);
    }
    if let Value::Array(parts) = &value {
        let code = parts
            .first()
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok());
        let message = parts.get(1).and_then(text);
        if let (2..=3, Some(code), Some(message)) = (parts.len(), code, message) {
            let e = ServerError::new(ErrorCode::new(code), message);
            return match parts.get(2) {
                Some(data) => e.with_data(to_json(data)),
                None => e,
            };
        }
    }
    let data = to_json(&value);
    let shown = data.to_string();
    let shown = match shown.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &shown[..at]),
        None => shown,
    };
    ServerError::new(EXCEPTION, format!("error: {shown}")).with_data(data)
}

/// A msgpack value as JSON: bin as an array of numbers, ext as `[type, [bytes]]`, map keys
/// as text.
fn to_json(value: &rmpv::Value) -> serde_json::Value {
    use rmpv::Value;
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => (*b).into(),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => n.into(),
            (None, Some(n)) => n.into(),
            _ => serde_json::Value::Null,
        },
        Value::F32(f) => serde_json::Value::from(f64::from(*f)),
        Value::F64(f) => serde_json::Value::from(*f),
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned().into(),
        Value::Binary(b) => b.iter().map(|b| serde_json::Value::from(*b)).collect(),
        Value::Array(items) => items.iter().map(to_json).collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                let key = match k {
                    Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    other => to_json(other).to_string(),
                };
                (key, to_json(v))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Ext(kind, data) => serde_json::json!([kind, data]),
    }
}

fn decode_message(frame: Bytes) -> Result<Message<u32>, DecodeError<u32>> {
    let drop = |why: &str| DecodeError::drop(ServerError::invalid_request(why));
    if skip_value(&frame) != Ok(frame.len()) {
        return Err(drop("a message must be exactly one msgpack value"));
    }
    let Some((len, mut at)) = array_len(&frame) else {
        return Err(drop("a message must be a msgpack array"));
    };
    let kind = match frame.get(at) {
        Some(k @ 0..=2) => *k,
        _ => return Err(drop("a message's type must be 0, 1 or 2")),
    };
    at += 1;
    match (kind, len) {
        (REQUEST, 4) => {
            let (id, n) = read_u32(&frame[at..]).ok_or_else(|| drop("msgid is not a u32"))?;
            at += n;
            let bad = |why: &str| DecodeError {
                reply_to: Some(id),
                error: ServerError::invalid_request(why),
            };
            let (method, at) = read_method(&frame, at).map_err(bad)?;
            let args = params(&frame, at).map_err(bad)?;
            Ok(Message::Request {
                id: Some(id),
                method: Method::Name(method),
                args,
                timeout: None,
            })
        }
        (NOTIFICATION, 3) => {
            let (method, at) = read_method(&frame, at).map_err(drop)?;
            let args = params(&frame, at).map_err(drop)?;
            Ok(Message::Request {
                id: None,
                method: Method::Name(method),
                args,
                timeout: None,
            })
        }
        (RESPONSE, 4) => {
            let (id, n) = read_u32(&frame[at..]).ok_or_else(|| drop("msgid is not a u32"))?;
            at += n;
            let error_len = skip_value(&frame[at..]).map_err(|_| drop("a truncated error"))?;
            let error = &frame[at..at + error_len];
            let result = frame.slice(at + error_len..);
            let result = if error == [NIL] {
                Ok(result)
            } else {
                Err(read_error(error))
            };
            Ok(Message::Response { id, result })
        }
        (REQUEST | RESPONSE, _) => Err(drop(
            "a request or response must have 4 elements: [type, msgid, ...]",
        )),
        _ => Err(drop(
            "a notification must have 3 elements: [2, method, params]",
        )),
    }
}

fn write_u32(dst: &mut BytesMut, n: u32) {
    rmp::encode::write_uint(&mut dst.writer(), u64::from(n)).expect("writing to memory");
}

fn write_str(dst: &mut BytesMut, s: &str) {
    rmp::encode::write_str(&mut dst.writer(), s).expect("writing to memory");
}

/// What neovim calls an error's type, for a code.
fn neovim_kind(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::METHOD_NOT_FOUND
        | ErrorCode::INVALID_PARAMS
        | ErrorCode::INVALID_REQUEST
        | ErrorCode::PARSE_ERROR => 1,
        c if c == VALIDATION => 1,
        _ => 0,
    }
}

impl Codec for MsgpackRpcCodec {
    type Id = u32;

    type Format = MsgPack;

    fn format(&self) -> &'static MsgPack {
        &MSGPACK
    }

    /// The envelope around the params or the result: the array, its type, the id, and a nil.
    fn overhead(&self) -> usize {
        8
    }

    fn new_id(&self, seed: IdSeed) -> u32 {
        match seed {
            IdSeed::Sequence(n) => n as u32,
            IdSeed::Unguessable(bits) => bits as u32,
        }
    }

    fn decode(&self, frame: Bytes) -> Result<Message<u32>, DecodeError<u32>> {
        decode_message(frame)
    }

    fn encode_request(
        &self,
        id: Option<&u32>,
        method: &Method,
        args: &Payload,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let name = named_with_list(method, args, "MessagePack-RPC")?;
        match id {
            Some(id) => {
                dst.put_slice(&[0x94, REQUEST]);
                write_u32(dst, *id);
            }
            None => dst.put_slice(&[0x93, NOTIFICATION]),
        }
        write_str(dst, name.as_str());
        dst.extend_from_slice(args.bytes());
        Ok(())
    }

    fn encode_response(
        &self,
        id: &u32,
        result: Result<&Payload, &ServerError>,
        dst: &mut BytesMut,
    ) -> Result<bool, Error> {
        dst.put_slice(&[0x94, RESPONSE]);
        write_u32(dst, *id);
        match result {
            Ok(p) => {
                p.in_format(&MSGPACK)?;
                dst.put_u8(NIL);
                if p.bytes().is_empty() {
                    // A handler that returned nothing answers nil.
                    dst.put_u8(NIL);
                } else {
                    dst.extend_from_slice(p.bytes());
                }
            }
            Err(e) => {
                let encoded = match (self.error_codes, e.data()) {
                    (false, _) => MSGPACK.encode(&(neovim_kind(e.code()), e.message()), dst),
                    (true, Some(data)) => {
                        MSGPACK.encode(&(e.code().code(), e.message(), data), dst)
                    }
                    (true, None) => MSGPACK.encode(&(e.code().code(), e.message()), dst),
                };
                encoded.map_err(Error::Codec)?;
                dst.put_u8(NIL);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: &rmpv::Value) -> Bytes {
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, v).unwrap();
        b.into()
    }

    fn arr(items: Vec<rmpv::Value>) -> rmpv::Value {
        rmpv::Value::Array(items)
    }

    #[test]
    fn requests_notifications_and_responses_decode() {
        let c = MsgpackRpcCodec::new();
        let req = frame(&arr(vec![
            0.into(),
            70_000.into(),
            "add".into(),
            arr(vec![1.into(), 2.into()]),
        ]));
        match c.decode(req) {
            Ok(Message::Request {
                id: Some(70_000),
                method,
                args,
                ..
            }) => {
                assert_eq!(method.to_string(), "add");
                assert_eq!(&args[..], b"\x92\x01\x02");
            }
            other => panic!("{other:?}"),
        }
        // A method as bin, as some older clients send it.
        let note = frame(&arr(vec![
            2.into(),
            rmpv::Value::Binary(b"note".to_vec()),
            arr(vec!["hi".into()]),
        ]));
        assert!(matches!(
            c.decode(note),
            Ok(Message::Request { id: None, .. })
        ));
        let ok = frame(&arr(vec![1.into(), 3.into(), rmpv::Value::Nil, "r".into()]));
        assert!(
            matches!(c.decode(ok), Ok(Message::Response { id: 3, result: Ok(r) }) if &r[..] == b"\xa1r")
        );
    }

    #[test]
    fn errors_arrive_as_neovim_and_others_send_them() {
        let c = MsgpackRpcCodec::new();
        let err = |e: rmpv::Value| match c.decode(frame(&arr(vec![
            1.into(),
            9.into(),
            e,
            rmpv::Value::Nil,
        ]))) {
            Ok(Message::Response {
                id: 9,
                result: Err(e),
            }) => e,
            other => panic!("{other:?}"),
        };
        let nvim = err(arr(vec![
            0.into(),
            "Vim:E117: Unknown function: Nope".into(),
        ]));
        assert_eq!(nvim.code(), EXCEPTION);
        assert_eq!(nvim.message(), "Vim:E117: Unknown function: Nope");
        let coded = err(arr(vec![
            (-32601).into(),
            "method not found: x".into(),
            5.into(),
        ]));
        assert!(coded.code() == ErrorCode::METHOD_NOT_FOUND && coded.data() == Some(&5.into()));
        let text = err("Traceback: boom".into());
        assert_eq!(
            (text.code(), text.message()),
            (EXCEPTION, "Traceback: boom")
        );
        let huge = err(rmpv::Value::Binary(vec![0; 1 << 20]));
        assert_eq!(huge.message(), "an error value of 1048581 bytes, not read");
        assert!(huge.data().is_none());
        let odd = err(rmpv::Value::Map(vec![("why".into(), true.into())]));
        assert_eq!(odd.code(), EXCEPTION);
        assert!(odd.message().contains("\"why\":true"), "{}", odd.message());
        assert_eq!(odd.data(), Some(&serde_json::json!({"why": true})));
    }

    #[test]
    fn errors_are_sent_as_neovim_reads_them_or_with_codes() {
        let e = ServerError::refused(ErrorCode::OVERLOADED, "busy");
        let mut dst = BytesMut::new();
        MsgpackRpcCodec::new()
            .encode_response(&5, Err(&e), &mut dst)
            .unwrap();
        assert_eq!(&dst[..], b"\x94\x01\x05\x92\x00\xa4busy\xc0");
        let mut dst = BytesMut::new();
        let missing = ServerError::method_not_found("x");
        MsgpackRpcCodec::new()
            .encode_response(&5, Err(&missing), &mut dst)
            .unwrap();
        assert_eq!(dst[4], 1, "a validation error");
        // With codes, the refusal comes back whole.
        let c = MsgpackRpcCodec::new().with_error_codes();
        let mut dst = BytesMut::new();
        c.encode_response(&5, Err(&e), &mut dst).unwrap();
        let Ok(Message::Response {
            result: Err(back), ..
        }) = c.decode(dst.freeze())
        else {
            panic!()
        };
        assert!(back.code() == ErrorCode::OVERLOADED && back.was_refused());
    }

    #[test]
    fn bad_messages_are_refused_and_answered_when_they_have_an_id() {
        let c = MsgpackRpcCodec::new();
        let refused = |v: rmpv::Value| c.decode(frame(&v)).unwrap_err();
        assert!(refused(arr(vec![])).reply_to.is_none());
        assert!(refused(arr(vec![3.into(), 1.into()])).reply_to.is_none());
        assert!(
            refused(arr(vec![0.into(), (-1).into(), "m".into(), arr(vec![])]))
                .reply_to
                .is_none()
        );
        assert!(refused(arr(vec![
            0.into(),
            5_000_000_000u64.into(),
            "m".into(),
            arr(vec![])
        ]))
        .reply_to
        .is_none());
        let e = refused(arr(vec![0.into(), 4.into(), 1.into(), arr(vec![])]));
        assert_eq!(e.reply_to, Some(4));
        let e = refused(arr(vec![0.into(), 4.into(), "m".into(), 1.into()]));
        assert!(e.error.message().contains("params"), "{}", e.error);
        assert!(c
            .decode(Bytes::from_static(b"\x94\x00\x01\xa1m\x90\x00"))
            .is_err());
        assert!(c.decode(Bytes::from_static(b"\x94\x00\x01\xa1m")).is_err());
    }
}
