//! rpcudp's datagram format.
//!
//! ```text
//! +------+----------------+-----------------------------------------------+
//! | type | id (20 bytes)  | body: one msgpack value                       |
//! +------+----------------+-----------------------------------------------+
//!   0x00   random           request:  [name: str, args: array]
//!   0x01   the request's    response: the result, any value (nil for None)
//!   0x02   the request's    error:    [code: int, message: str(, data)]  (rpc-stack only)
//! ```

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::{Codec, DecodeError, IdSeed, Message};
use rpc_core::{Error, ErrorCode, Format, Method, MethodName, Payload, ServerError};

use super::{array_len, named_with_list, skip_value, str_len, MsgPack, MSGPACK};

const REQUEST: u8 = 0x00;
const RESPONSE: u8 = 0x01;
const ERROR: u8 = 0x02;
const ID_LEN: usize = 20;
const HEADER: usize = 1 + ID_LEN;

/// rpcudp's 20-byte message id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MessageId(pub [u8; ID_LEN]);

impl std::hash::Hash for MessageId {
    /// All 20 bytes, fed as three words rather than as a byte slice (no length prefix, no
    /// byte-string path in the hasher): ids are looked up twice per call.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c] = id_words(&self.0);
        state.write_u64(a);
        state.write_u64(b);
        state.write_u64(c);
    }
}

/// The id's bytes as three words (the last holds four bytes).
fn id_words(id: &[u8; ID_LEN]) -> [u64; 3] {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    let mut c = [0u8; 4];
    a.copy_from_slice(&id[..8]);
    b.copy_from_slice(&id[8..16]);
    c.copy_from_slice(&id[16..]);
    [
        u64::from_le_bytes(a),
        u64::from_le_bytes(b),
        u64::from(u32::from_le_bytes(c)),
    ]
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The codec of rpcudp 5.0.1 (the transport under the kademlia DHT), byte for byte.
///
/// - A request is `0x00 ‖ id ‖ [name, args]`; ids are 20 bytes from a cryptographically secure
///   generator, so an off-path attacker cannot guess them.
/// - A response is `0x01 ‖ id ‖ result`.
/// - rpcudp has no error replies: an unknown method or a failing handler gets no answer at all,
///   and its caller times out. An rpc-stack server answers errors as `0x02 ‖ id ‖ [code, message,
///   data]` (data only when there is some), a type rpcudp drops unread, so an rpc-stack caller fails at once with the error while
///   a Python caller sees what it always sees, no reply. [`without_error_replies`] turns this off.
/// - rpcudp has no notifications; a notification is sent as a request whose answer is ignored.
///
/// Named methods only: a [`Method::Id`] cannot be encoded.
///
/// [`without_error_replies`]: RpcudpCodec::without_error_replies
#[derive(Debug, Clone, Copy)]
pub struct RpcudpCodec {
    error_replies: bool,
}

impl Default for RpcudpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcudpCodec {
    /// The codec, sending error replies to rpc-stack callers.
    pub const fn new() -> Self {
        Self {
            error_replies: true,
        }
    }

    /// Sends nothing when a call fails, exactly as rpcudp does.
    pub const fn without_error_replies(mut self) -> Self {
        self.error_replies = false;
        self
    }
}

fn header(dst: &mut BytesMut, kind: u8, id: &MessageId) {
    dst.reserve(HEADER);
    dst.put_u8(kind);
    dst.put_slice(&id.0);
}

fn exactly_one_value(b: &[u8]) -> bool {
    skip_value(b) == Ok(b.len())
}

fn decode_request(
    id: MessageId,
    body: Bytes,
) -> Result<Message<MessageId>, DecodeError<MessageId>> {
    let bad = |why: &str| DecodeError {
        reply_to: Some(id),
        error: ServerError::invalid_request(why),
    };
    match array_len(&body) {
        Some((2, h)) => {
            let rest = &body[h..];
            let (n, sh) =
                str_len(rest).ok_or_else(|| bad("the method name is not a msgpack str"))?;
            let name_start = h + sh;
            let name_end = name_start
                .checked_add(n)
                .filter(|e| *e <= body.len())
                .ok_or_else(|| bad("truncated method name"))?;
            let name = MethodName::from_utf8(body.slice(name_start..name_end))
                .map_err(|_| bad("the method name is not UTF-8"))?;
            let args = body.slice(name_end..);
            if array_len(&args).is_none() {
                return Err(bad("the arguments are not a msgpack array"));
            }
            match skip_value(&args) {
                Ok(n) if n == args.len() => {}
                Ok(_) => return Err(bad("trailing bytes after the arguments")),
                // Says which: nested too deep, cut short, or a byte msgpack never uses.
                Err(e) => return Err(bad(&format!("the arguments are malformed: {e}"))),
            }
            Ok(Message::Request {
                id: Some(id),
                method: Method::Name(name),
                args,
                timeout: None,
            })
        }
        _ => Err(bad("a request body must be the array [name, args]")),
    }
}

/// Reads an error reply's body: `[code, message]`, or `[code, message, data]` when it has data.
fn decode_error(body: &[u8]) -> Option<ServerError> {
    if !exactly_one_value(body) {
        return None;
    }
    // The same depth limit as every other msgpack value: nested data must not overflow the stack.
    fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        let mut de = rmp_serde::Deserializer::from_read_ref(body);
        de.set_max_depth(super::MAX_DEPTH);
        serde::Deserialize::deserialize(&mut de).ok()
    }
    match array_len(body)?.0 {
        2 => {
            let (code, message): (i32, String) = read(body)?;
            Some(ServerError::new(ErrorCode::new(code), message))
        }
        3 => {
            let (code, message, data): (i32, String, serde_json::Value) = read(body)?;
            Some(ServerError::new(ErrorCode::new(code), message).with_data(data))
        }
        _ => None,
    }
}

/// An id as rpcudp makes them, whatever the transport: 20 unpredictable bytes. (A peer that
/// could guess the ids of calls to others could answer them with a forged source address.) One
/// fill from the thread's ChaCha generator (sampling the array would draw a word per byte).
fn random_id() -> MessageId {
    let mut id = [0u8; ID_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    MessageId(id)
}

impl Codec for RpcudpCodec {
    type Id = MessageId;

    type Format = MsgPack;

    fn format(&self) -> &'static MsgPack {
        &MSGPACK
    }

    fn overhead(&self) -> usize {
        HEADER
    }

    /// 20 bytes, as rpcudp's: over UDP the seed's 128 unguessable bits (its first 4 bytes
    /// again fill the rest), over a stream 20 random bytes.
    fn new_id(&self, seed: IdSeed) -> MessageId {
        match seed {
            IdSeed::Unguessable(bits) => {
                let bytes = bits.to_le_bytes();
                let mut id = [0u8; ID_LEN];
                id[..16].copy_from_slice(&bytes);
                id[16..].copy_from_slice(&bytes[..ID_LEN - 16]);
                MessageId(id)
            }
            IdSeed::Sequence(_) => random_id(),
        }
    }

    fn decode(&self, frame: Bytes) -> Result<Message<MessageId>, DecodeError<MessageId>> {
        if frame.len() < HEADER + 1 {
            return Err(DecodeError::drop(ServerError::invalid_request(
                "datagram shorter than 22 bytes",
            )));
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&frame[1..HEADER]);
        let id = MessageId(id);
        let body = frame.slice(HEADER..);
        match frame[0] {
            REQUEST => decode_request(id, body),
            RESPONSE if exactly_one_value(&body) => Ok(Message::Response {
                id,
                result: Ok(body),
            }),
            ERROR => match decode_error(&body) {
                Some(e) => Ok(Message::Response { id, result: Err(e) }),
                None => Err(DecodeError::drop(ServerError::invalid_request(
                    "malformed error reply",
                ))),
            },
            RESPONSE => Err(DecodeError::drop(ServerError::invalid_request(
                "malformed response body",
            ))),
            other => Err(DecodeError::drop(ServerError::invalid_request(format!(
                "unknown message type {other:#04x}"
            )))),
        }
    }

    fn encode_request(
        &self,
        id: Option<&MessageId>,
        method: &Method,
        args: &Payload,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let name = named_with_list(method, args, "rpcudp")?;
        let id = id.copied().unwrap_or_else(random_id);
        header(dst, REQUEST, &id);
        dst.put_u8(0x92);
        let mut w = dst.writer();
        rmp::encode::write_str_len(&mut w, name.as_bytes().len() as u32)
            .map_err(|e| Error::Codec(e.into()))?;
        let dst = w.into_inner();
        dst.extend_from_slice(name.as_bytes());
        dst.extend_from_slice(args.bytes());
        Ok(())
    }

    fn encode_response(
        &self,
        id: &MessageId,
        result: Result<&Payload, &ServerError>,
        dst: &mut BytesMut,
    ) -> Result<bool, Error> {
        match result {
            Ok(p) => {
                p.in_format(&MSGPACK)?;
                header(dst, RESPONSE, id);
                if p.bytes().is_empty() {
                    // A handler that returned nothing encodes as nil, as Python's None does.
                    dst.put_u8(0xc0);
                } else {
                    dst.extend_from_slice(p.bytes());
                }
                Ok(true)
            }
            Err(_) if !self.error_replies => Ok(false),
            Err(e) => {
                header(dst, ERROR, id);
                let encoded = match e.data() {
                    Some(data) => MSGPACK.encode(&(e.code().code(), e.message(), data), dst),
                    None => MSGPACK.encode(&(e.code().code(), e.message()), dst),
                };
                encoded.map_err(Error::Codec)?;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, RandomState};

    use super::*;

    #[test]
    fn an_id_hashes_all_of_its_bytes() {
        let s = RandomState::new();
        let base = MessageId([7; ID_LEN]);
        for i in 0..ID_LEN {
            let mut other = base;
            other.0[i] ^= 1;
            assert_ne!(
                s.hash_one(base),
                s.hash_one(other),
                "byte {i} is not hashed"
            );
        }
        assert_eq!(s.hash_one(base), s.hash_one(MessageId([7; ID_LEN])));
    }
}
