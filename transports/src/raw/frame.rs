//! basic-socket-rpc's frames.
//!
//! ```text
//! +------------------+------+---------+
//! | size: u32 LE     | type | payload |     size = 4 + 1 + payload length
//! +------------------+------+---------+
//! client types: 0 INIT (payload: version 00 00 01), 1 RPC (payload: u16 LE command id ‖ arguments)
//! server types: 0 INIT reply (payload: 01 granted, 00 busy), 1 RPC reply (payload: the result),
//!               4 EXCEPTION (payload: u32 LE len ‖ name ‖ u32 LE len ‖ text)
//! ```

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rpc_core::{ErrorCode, ServerError};
use tokio_util::codec::Decoder;

/// Client INIT, server INIT reply.
pub(crate) const INIT: u8 = 0;
/// Client RPC request, server RPC reply.
pub(crate) const RPC: u8 = 1;
/// Server exception.
pub(crate) const EXCEPTION: u8 = 4;
/// The header: size and type.
pub(crate) const HEADER: usize = 5;
/// The protocol version a client announces; only the major (first byte) must match.
pub(crate) const VERSION: [u8; 3] = [0, 0, 1];

/// One frame read off the stream.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A whole frame.
    Msg { kind: u8, payload: Bytes },
    /// A size field under 5: the 4 bytes were consumed, the stream goes on after them (as the
    /// Python server reads it).
    TooSmall(u32),
}

/// Cuts frames, refusing sizes over `max` before allocating them.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    pub(crate) max: usize,
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        if src.len() < 4 {
            return Ok(None);
        }
        let size = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        if (size as usize) < HEADER {
            src.advance(4);
            return Ok(Some(Frame::TooSmall(size)));
        }
        let size = size as usize;
        if size > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of {size} bytes exceeds the limit of {} bytes",
                    self.max
                ),
            ));
        }
        if src.len() < size {
            // The buffer grows with the bytes that arrive, not with the size claimed.
            return Ok(None);
        }
        let mut frame = src.split_to(size);
        frame.advance(4);
        let kind = frame.get_u8();
        Ok(Some(Frame::Msg {
            kind,
            payload: frame.freeze(),
        }))
    }
}

/// Appends a frame of `kind` whose payload `write` appends; fails past `max` bytes.
pub(crate) fn put_frame(
    dst: &mut BytesMut,
    kind: u8,
    max: usize,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), (usize, usize)> {
    let start = dst.len();
    dst.put_u32_le(0);
    dst.put_u8(kind);
    write(dst);
    let size = dst.len() - start;
    match u32::try_from(size) {
        Ok(n) if size <= max => {
            dst[start..start + 4].copy_from_slice(&n.to_le_bytes());
            Ok(())
        }
        _ => {
            dst.truncate(start);
            Err((size, max))
        }
    }
}

fn put_str(dst: &mut BytesMut, s: &str) {
    dst.put_u32_le(s.len() as u32);
    dst.put_slice(s.as_bytes());
}

/// The exception a [`ServerError`] becomes: a name a Python client understands, and the message
/// (with the code and data when `detail` is on). Never a traceback or a file path.
pub(crate) fn put_exception(dst: &mut BytesMut, e: &ServerError, detail: bool) {
    let name = match e.code() {
        ErrorCode::METHOD_NOT_FOUND | ErrorCode::INVALID_REQUEST | ErrorCode::PARSE_ERROR => {
            "ProtocolError"
        }
        _ => "ServerRpcError",
    };
    let text = match (detail, e.data()) {
        (false, _) => e.message().to_string(),
        (true, None) => format!("{} (code {})", e.message(), e.code()),
        (true, Some(d)) => format!("{} (code {}, data {d})", e.message(), e.code()),
    };
    // An exception frame is small; no limit applies to it.
    let _ = put_frame(dst, EXCEPTION, usize::MAX, |dst| {
        put_str(dst, name);
        put_str(dst, &text);
    });
}

fn take_str(b: &mut Bytes) -> Option<String> {
    if b.len() < 4 {
        return None;
    }
    let n = b.get_u32_le() as usize;
    if b.len() < n {
        return None;
    }
    String::from_utf8(b.split_to(n).to_vec()).ok()
}

/// Reads an exception frame's payload back into the error it stands for.
pub(crate) fn parse_exception(mut payload: Bytes) -> ServerError {
    let (Some(name), Some(text)) = (take_str(&mut payload), take_str(&mut payload)) else {
        return ServerError::internal("a malformed exception frame");
    };
    let code = if text.starts_with("method not found") || text.contains("Unknown command") {
        ErrorCode::METHOD_NOT_FOUND
    } else if text.starts_with("invalid params") {
        ErrorCode::INVALID_PARAMS
    } else if name == "ProtocolError" {
        ErrorCode::INVALID_REQUEST
    } else {
        ErrorCode::INTERNAL_ERROR
    };
    ServerError::new(code, format!("{name}: {text}"))
        .with_data(serde_json::json!({ "exception": name }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cut_and_refuse() {
        let mut d = FrameDecoder { max: 64 };
        let mut src = BytesMut::from(&b"\x08\0\0\0\0\0\0\x01\x02\0\0\0"[..]);
        match d.decode(&mut src).unwrap() {
            Some(Frame::Msg { kind: 0, payload }) => assert_eq!(&payload[..], b"\0\0\x01"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.decode(&mut src).unwrap(),
            Some(Frame::TooSmall(2))
        ));
        assert!(src.is_empty());
        let mut huge = BytesMut::from(&b"\xff\xff\xff\xff\x01"[..]);
        assert!(d.decode(&mut huge).is_err());
        // A claim within the limit reserves nothing until its bytes arrive.
        let mut d = FrameDecoder { max: 8 << 20 };
        let mut claim = BytesMut::from(&((8u32 << 20).to_le_bytes())[..]);
        claim.extend_from_slice(b"\x01");
        assert!(d.decode(&mut claim).unwrap().is_none());
        assert!(claim.capacity() < 1024, "reserved {}", claim.capacity());
    }

    #[test]
    fn exceptions_round_trip_without_internals() {
        let mut dst = BytesMut::new();
        put_exception(&mut dst, &ServerError::method_not_found("#99"), false);
        let mut d = FrameDecoder { max: 1024 };
        let Some(Frame::Msg {
            kind: EXCEPTION,
            payload,
        }) = d.decode(&mut dst).unwrap()
        else {
            panic!("an exception frame")
        };
        let e = parse_exception(payload);
        assert_eq!(e.code(), ErrorCode::METHOD_NOT_FOUND);
        assert_eq!(e.message(), "ProtocolError: method not found: #99");
    }
}
