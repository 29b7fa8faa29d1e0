//! JSON-RPC 2.0: the [`Json`] value format and the [`JsonRpcCodec`].
//!
//! ```text
//! request       {"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}
//! notification  {"jsonrpc":"2.0","method":"update","params":[1,2,3]}
//! response      {"jsonrpc":"2.0","result":19,"id":1}
//! error         {"jsonrpc":"2.0","error":{"code":-32601,"message":"method not found: foo"},"id":"1"}
//! batch         [ ...requests and notifications... ]  ->  [ ...their responses... ]
//! ```
//!
//! The whole specification: params by position or by name (see [`Json`]); notifications, which are
//! never answered, not even with an error; batches, answered in one array without the
//! notifications (an empty batch is one Invalid Request error; a batch of notifications gets no
//! answer at all); ids that are numbers, strings or null, echoed as they came (a whole number
//! beyond 64 bits is read as a float and echoed in that form); and the standard
//! codes: -32700 parse error (id null), -32600 invalid request (also for a request with members
//! the specification does not define, as jsonrpcserver and rpcbd judge it), -32601 method not found, -32602
//! invalid params, -32603 internal error, with rpc-stack's own in -32000..-32099 (overloaded,
//! rate limited, deadline exceeded, message too large).
//!
//! Messages are routed by shape, never by id: a message with `method` is a request for us, one
//! with `result` or `error` answers one of our calls. Both ends of a connection can therefore call
//! each other with ids that collide. Nothing that looks like a response is ever answered, so two
//! peers cannot bounce errors at each other.
//!
//! The codec frames nothing itself: one message per UDP datagram, and over streams the transport's
//! framing (length-prefixed by default; `Framing::Newline` for bjsonrpc-style peers,
//! `Framing::Eot` for rpcbd).

pub use rpc_core::json::Json;

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::{Codec, DecodeError, IdSeed, Message};
use rpc_core::{Error, ErrorCode, Method, MethodName, Payload, Response, ServerError};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The format as the codec and its payloads hold it.
static JSON: Json = Json;

/// The default longest batch: 1000 messages.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// A JSON-RPC request id: a number, a string, or null.
///
/// A number is kept as the JSON text it came as, and answered with that text byte for byte, as
/// the specification asks: `1180591620717411303424` or `1e400` come back as they went, not as
/// the nearest double. Two ids are the same when their text is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// `null` (the id of errors about requests whose id could not be read).
    Null,
    /// A number, as its JSON text.
    Number(Arc<str>),
    /// A string.
    String(Arc<str>),
}

impl Id {
    fn write(&self, dst: &mut BytesMut) {
        match self {
            Id::Null => dst.put_slice(b"null"),
            Id::Number(n) => dst.put_slice(n.as_bytes()),
            Id::String(s) => write_json(dst, &**s),
        }
    }
}

/// A member's value read as what it should be (a request id, a method name), or found not to be:
/// read once, in the envelope's own pass, and never an error (the message is then invalid, not
/// unparsable).
enum Read<T> {
    Is(T),
    Not,
}

/// A method name: borrowed from the frame when it has no escapes.
enum Text<'a> {
    Borrowed(&'a str),
    Owned(String),
}

/// Visitor methods for the kinds of value a `Read` is not (the scalars named, and arrays and
/// objects, which are read past): they read as `Read::Not`.
macro_rules! not_this {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: serde::de::Error>(self, _: $ty) -> Result<Self::Value, E> {
                Ok(Read::Not)
            }
        )*
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Read::Not)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(Read::Not)
        }
    };
}

impl<'de> Deserialize<'de> for Read<Id> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Read<Id>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request id")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Read::Is(Id::Null))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Read::Is(Id::String(s.into())))
            }
            // Numbers are read from their text (`id_of`), not here.
            not_this!(
                visit_bool(bool),
                visit_u64(u64),
                visit_i64(i64),
                visit_f64(f64)
            );
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Read<Text<'de>> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Read<Text<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a method name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Read::Is(Text::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Read::Is(Text::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Read::Is(Text::Owned(s)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Read::Not)
            }
            not_this!(
                visit_bool(bool),
                visit_u64(u64),
                visit_i64(i64),
                visit_f64(f64)
            );
        }
        d.deserialize_any(V)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Null => f.pad("null"),
            Id::Number(n) => fmt::Display::fmt(n, f),
            Id::String(s) => fmt::Debug::fmt(s, f),
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.to_string().into())
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Number(n.to_string().into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::String(s.into())
    }
}

/// The JSON-RPC 2.0 codec. Outgoing calls get the ids their transport asks for
/// ([`IdSeed`]): numbers in sequence over a connection, unguessable strings over UDP.
#[derive(Debug, Clone)]
pub struct JsonRpcCodec {
    max_batch: usize,
    deadlines: bool,
}

impl Default for JsonRpcCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonRpcCodec {
    /// The codec.
    pub fn new() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            deadlines: false,
        }
    }

    /// Carries each call's remaining time as a `"timeout_ms"` member (an rpc-stack extension),
    /// and accepts it in requests: the server's handlers then see the caller's deadline, and its
    /// deadline layer enforces it. Both ends must turn it on: strict JSON-RPC peers (and this codec
    /// without it) refuse a request with a member the specification does not define.
    pub fn with_deadlines(mut self) -> Self {
        self.deadlines = true;
        self
    }

    /// The longest batch accepted; a longer one is answered with one Invalid Request error.
    /// Default 1000.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}

fn write_json<T: serde::Serialize + ?Sized>(dst: &mut BytesMut, v: &T) {
    // Strings, numbers and JSON values always serialize.
    let _ = serde_json::to_writer(dst.writer(), v);
}

/// The members of a message, as raw JSON; `null` counts as present.
#[derive(Default)]
struct Envelope<'a> {
    jsonrpc: Option<&'a RawValue>,
    method: Option<Read<Text<'a>>>,
    params: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    result: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    timeout_ms: Option<&'a RawValue>,
    /// A member the specification does not define (requests with one are invalid).
    unknown: Option<String>,
}

/// A member's name: the ones the envelope knows are matched without allocating (serde_json
/// hands keys over as owned strings to a `Cow`).
enum Member {
    Known(&'static str),
    Unknown(String),
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Member;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Member, E> {
                const KNOWN: [&str; 7] = [
                    "jsonrpc",
                    "method",
                    "params",
                    "id",
                    "result",
                    "error",
                    "timeout_ms",
                ];
                Ok(match KNOWN.iter().find(|k| **k == name) {
                    Some(k) => Member::Known(k),
                    None => Member::Unknown(name.to_owned()),
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Envelope<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut env = Envelope::default();
                while let Some(key) = map.next_key::<Member>()? {
                    let name = match key {
                        Member::Known(name) => name,
                        Member::Unknown(name) => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            env.unknown.get_or_insert(name);
                            continue;
                        }
                    };
                    match name {
                        "jsonrpc" => put(&mut env.jsonrpc, &mut map, name)?,
                        "method" => put(&mut env.method, &mut map, name)?,
                        "params" => put(&mut env.params, &mut map, name)?,
                        "id" => put(&mut env.id, &mut map, name)?,
                        "result" => put(&mut env.result, &mut map, name)?,
                        "error" => put(&mut env.error, &mut map, name)?,
                        // The last of the known names.
                        _ => put(&mut env.timeout_ms, &mut map, name)?,
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a member's value into its slot; a second one is an error.
fn put<'de, T: Deserialize<'de>, A: serde::de::MapAccess<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
    name: &str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(serde::de::Error::custom(format_args!(
            "duplicate member {name:?}"
        )));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i32,
    message: String,
    /// Present, even as `null`, is `Some`.
    #[serde(default, deserialize_with = "present_value")]
    data: Option<serde_json::Value>,
}

fn present_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn first_byte(b: &[u8]) -> Option<u8> {
    b.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// An Invalid Request error. Its id is null, as the specification asks when a request is invalid,
/// even where the id could be read (jsonrpcserver does the same).
fn invalid(why: &str) -> DecodeError<Id> {
    DecodeError {
        reply_to: Some(Id::Null),
        error: ServerError::invalid_request(why),
    }
}

fn parse_error(e: impl fmt::Display) -> DecodeError<Id> {
    DecodeError {
        reply_to: Some(Id::Null),
        error: ServerError::new(ErrorCode::PARSE_ERROR, format!("parse error: {e}")),
    }
}

/// An id member, from its JSON text: a number as that text, a string or null as such.
fn id_of(raw: &RawValue) -> Read<Id> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Read::Is(Id::Number(text.into())),
        _ => serde_json::from_str(text).unwrap_or(Read::Not),
    }
}

/// Decodes one message: `text` is a JSON object (or, within a batch, any JSON value).
fn decode_one(frame: &Bytes, text: &[u8], deadlines: bool) -> Result<Message<Id>, DecodeError<Id>> {
    if first_byte(text) != Some(b'{') {
        return Err(invalid("a message must be a JSON object"));
    }
    let env: Envelope<'_> = serde_json::from_slice(text).map_err(parse_error)?;
    let looks_like_response = env.result.is_some() || env.error.is_some();
    let id = match env.id.map(id_of) {
        None => None,
        Some(Read::Is(id)) => Some(id),
        // A response: never answered, whatever is wrong with it.
        Some(Read::Not) if env.method.is_none() && looks_like_response => {
            return Err(DecodeError::drop(ServerError::invalid_request(
                "a response with an id that is not a number, a string or null",
            )))
        }
        Some(Read::Not) => return Err(invalid("the id must be a number, a string or null")),
    };
    if let Some(method) = env.method {
        if env.jsonrpc.map(RawValue::get) != Some(r#""2.0""#) {
            return Err(invalid(r#""jsonrpc" must be exactly "2.0""#));
        }
        if let Some(member) = env.unknown {
            return Err(invalid(&format!("unknown member {member:?} in a request")));
        }
        if looks_like_response {
            return Err(invalid(r#"a request with "result" or "error""#));
        }
        let timeout = match env.timeout_ms {
            None => None,
            Some(_) if !deadlines => {
                return Err(invalid(r#"unknown member "timeout_ms" in a request"#))
            }
            Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
                Ok(ms) => Some(std::time::Duration::from_millis(ms)),
                Err(_) => return Err(invalid(r#""timeout_ms" must be a whole number"#)),
            },
        };
        // A name without escapes is the raw text between its quotes: shared with the frame, not
        // copied. (serde gives `Cow<str>` owned always, so borrowing is tried as `&str` first.)
        let name = match method {
            Read::Is(Text::Borrowed(s)) => MethodName::from_utf8(frame.slice_ref(s.as_bytes()))
                .map_err(|_| invalid("the method is not UTF-8"))?,
            Read::Is(Text::Owned(s)) => MethodName::from(s),
            Read::Not => return Err(invalid("the method must be a string")),
        };
        let args = match env.params {
            None => Bytes::new(),
            Some(p) if matches!(first_byte(p.get().as_bytes()), Some(b'[' | b'{')) => {
                frame.slice_ref(p.get().as_bytes())
            }
            Some(_) => return Err(invalid("params must be an array or an object")),
        };
        return Ok(Message::Request {
            id,
            method: Method::Name(name),
            args,
            timeout,
        });
    }
    // A response: never answered, whatever is wrong with it.
    let drop = |why: &str| DecodeError::drop(ServerError::invalid_request(why));
    let Some(id) = id else {
        return Err(match (env.result, env.error) {
            (None, None) => invalid("neither a request nor a response"),
            _ => drop("a response without an id"),
        });
    };
    match (env.result, env.error) {
        (Some(result), None) => Ok(Message::Response {
            id,
            result: Ok(frame.slice_ref(result.get().as_bytes())),
        }),
        (None, Some(error)) => {
            let e: ErrorObject =
                serde_json::from_str(error.get()).map_err(|_| drop("a malformed error object"))?;
            let mut se = ServerError::new(ErrorCode::new(e.code), e.message);
            if let Some(d) = e.data {
                se = se.with_data(d);
            }
            Ok(Message::Response {
                id,
                result: Err(se),
            })
        }
        (Some(_), Some(_)) => Err(drop("a response with both result and error")),
        (None, None) => Err(invalid("neither a request nor a response")),
    }
}

impl Codec for JsonRpcCodec {
    type Id = Id;

    type Format = Json;

    fn format(&self) -> &'static Json {
        &JSON
    }

    /// A number in a stream's sequence; 32 hexadecimal digits of unguessable bits (as a string:
    /// JSON numbers past 2^53 lose precision in many peers) over datagrams.
    fn new_id(&self, seed: IdSeed) -> Id {
        match seed {
            IdSeed::Unguessable(bits) => Id::String(format!("{bits:032x}").into()),
            IdSeed::Sequence(n) => Id::from(n),
        }
    }

    fn decode(&self, frame: Bytes) -> Result<Message<Id>, DecodeError<Id>> {
        match first_byte(&frame) {
            Some(b'[') => {
                let members: Vec<&RawValue> =
                    serde_json::from_slice(&frame).map_err(parse_error)?;
                if members.is_empty() {
                    return Err(invalid("an empty batch"));
                }
                if members.len() > self.max_batch {
                    return Err(invalid(&format!(
                        "a batch of {} messages exceeds the limit of {}",
                        members.len(),
                        self.max_batch
                    )));
                }
                Ok(Message::Batch(
                    members
                        .iter()
                        .map(|m| decode_one(&frame, m.get().as_bytes(), self.deadlines))
                        .collect(),
                ))
            }
            Some(b'{') => decode_one(&frame, &frame, self.deadlines),
            _ => match serde_json::from_slice::<serde::de::IgnoredAny>(&frame) {
                Ok(_) => Err(invalid("a message must be a JSON object or an array")),
                Err(e) => Err(parse_error(e)),
            },
        }
    }

    fn encode_request(
        &self,
        id: Option<&Id>,
        method: &Method,
        args: &Payload,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        self.encode_request_with_timeout(id, method, args, None, dst)
    }

    fn carries_timeout(&self) -> bool {
        self.deadlines
    }

    fn encode_request_with_timeout(
        &self,
        id: Option<&Id>,
        method: &Method,
        args: &Payload,
        timeout: Option<std::time::Duration>,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        args.in_format(&JSON)?;
        let Method::Name(name) = method else {
            return Err(Error::Codec(
                "JSON-RPC names its methods; it has no numeric command ids".into(),
            ));
        };
        dst.put_slice(br#"{"jsonrpc":"2.0","method":"#);
        write_json(dst, name.as_str());
        let params = args.bytes();
        if !params.is_empty() && params.as_ref() != b"[]" {
            dst.put_slice(br#","params":"#);
            dst.put_slice(params);
        }
        if let (true, Some(t)) = (self.deadlines, timeout) {
            dst.put_slice(br#","timeout_ms":"#);
            dst.put_slice(t.as_millis().to_string().as_bytes());
        }
        if let Some(id) = id {
            dst.put_slice(br#","id":"#);
            id.write(dst);
        }
        dst.put_u8(b'}');
        Ok(())
    }

    fn encode_response(
        &self,
        id: &Id,
        result: Result<&Payload, &ServerError>,
        dst: &mut BytesMut,
    ) -> Result<bool, Error> {
        match result {
            Ok(p) => {
                p.in_format(&JSON)?;
                dst.put_slice(br#"{"jsonrpc":"2.0","result":"#);
                if p.bytes().is_empty() {
                    dst.put_slice(b"null");
                } else {
                    dst.put_slice(p.bytes());
                }
            }
            Err(e) => {
                dst.put_slice(br#"{"jsonrpc":"2.0","error":{"code":"#);
                dst.put_slice(e.code().code().to_string().as_bytes());
                dst.put_slice(br#","message":"#);
                write_json(dst, e.message());
                if let Some(data) = e.data() {
                    dst.put_slice(br#","data":"#);
                    write_json(dst, data);
                }
                dst.put_u8(b'}');
            }
        }
        dst.put_slice(br#","id":"#);
        id.write(dst);
        dst.put_u8(b'}');
        Ok(true)
    }

    fn encode_frame_error(&self, error: &ServerError, dst: &mut BytesMut) -> Result<bool, Error> {
        self.encode_response(&Id::Null, Err(error), dst)
    }

    fn encode_batch(
        &self,
        responses: &[(Id, Response)],
        dst: &mut BytesMut,
    ) -> Result<bool, Error> {
        if responses.is_empty() {
            return Ok(false);
        }
        dst.put_u8(b'[');
        for (i, (id, r)) in responses.iter().enumerate() {
            if i > 0 {
                dst.put_u8(b',');
            }
            self.encode_response(id, r.result(), dst)?;
        }
        dst.put_u8(b']');
        Ok(true)
    }
}
