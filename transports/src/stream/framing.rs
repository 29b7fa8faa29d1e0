//! How a byte stream is cut into frames, and frames are written back.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rpc_core::msgpack::Measure;
use rpc_core::BoxError;
use tokio_util::codec::{AnyDelimiterCodec, Decoder};

/// The length prefix of [`Framing::LengthPrefixed`]: 4 bytes, big-endian.
const LENGTH_PREFIX: usize = 4;

/// The largest header block [`Framing::ContentLength`] reads, its blank line included.
pub const MAX_HEADER_BLOCK: usize = 8 * 1024;

/// Measures the self-delimiting frame at the start of a buffer: `Ok(Some(len))` when a whole
/// frame of `len` bytes is there, `Ok(None)` when more bytes are needed, `Err` when the bytes
/// cannot be a frame.
pub type FrameSplitter = fn(&[u8]) -> Result<Option<usize>, BoxError>;

/// How frames are delimited on a stream. Real peers differ, so it is a per-endpoint choice.
///
/// ```text
/// LengthPrefixed   | len: u32 big-endian | frame |      (rpc-stack's default)
/// Newline          | frame | \n |                      (bjsonrpc)
/// Eot              | frame | 0x04 |                    (rpcbd)
/// ContentLength    | Content-Length: N\r\n | other headers | \r\n | frame |
///                                                      (the Language Server Protocol)
/// MsgPack          | frame: one msgpack value |          (MessagePack-RPC)
/// SelfDelimited    | frame |  the codec's own header or structure tells where it ends
/// ```
///
/// Every framing enforces the endpoint's maximum frame length on both sides: a frame over it is
/// refused before sending, and a peer that announces or sends one loses the connection without
/// the claimed size ever being allocated.
#[derive(Clone, Copy, Default)]
#[non_exhaustive]
pub enum Framing {
    /// A 4-byte big-endian length, then the frame (as tokio-util's `LengthDelimitedCodec` writes
    /// them).
    #[default]
    LengthPrefixed,
    /// Each frame ends with a newline; frames must not contain one (compact JSON does not).
    Newline,
    /// Each frame ends with the byte `0x04` (EOT); frames must not contain it.
    Eot,
    /// Each frame follows a block of `Name: value` header lines ending with a blank line, as
    /// the Language Server Protocol (and HTTP) writes them: `Content-Length` gives the frame's
    /// length in bytes; other headers (`Content-Type`) are read and ignored. Sent frames carry
    /// `Content-Length` alone. A header block over [`MAX_HEADER_BLOCK`] (8 KiB), one without
    /// `Content-Length` or with two that differ, a malformed line or a length over the frame
    /// limit ends the connection.
    ContentLength,
    /// Each frame is one MessagePack value, with nothing around it (MessagePack-RPC, neovim's
    /// API): its end is found by measuring the value as it arrives (without recursion, in time
    /// linear in its size however it is cut, nesting bounded as every msgpack value's).
    MsgPack,
    /// Frames delimit themselves; the function finds where each ends.
    SelfDelimited(FrameSplitter),
}

impl fmt::Debug for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Framing::LengthPrefixed => "LengthPrefixed",
            Framing::Newline => "Newline",
            Framing::Eot => "Eot",
            Framing::ContentLength => "ContentLength",
            Framing::MsgPack => "MsgPack",
            Framing::SelfDelimited(_) => "SelfDelimited",
        })
    }
}

impl Framing {
    /// The byte that ends a frame, for delimiter framings.
    fn delimiter(self) -> Option<u8> {
        match self {
            Framing::Newline => Some(b'\n'),
            Framing::Eot => Some(0x04),
            _ => None,
        }
    }

    /// How many bytes of headers may come before a frame, past the few every framing has room
    /// for (a length, a delimiter).
    pub(crate) fn header_room(self) -> usize {
        match self {
            Framing::ContentLength => MAX_HEADER_BLOCK,
            _ => 0,
        }
    }

    /// A decoder that cuts frames of at most `max` bytes.
    pub(crate) fn decoder(self, max: usize) -> FrameDecoder {
        match self {
            Framing::LengthPrefixed => FrameDecoder::Length { max },
            Framing::Newline | Framing::Eot => {
                let d = [self.delimiter().expect("a delimiter framing")];
                FrameDecoder::Delimited(AnyDelimiterCodec::new_with_max_length(
                    d.to_vec(),
                    d.to_vec(),
                    max,
                ))
            }
            Framing::ContentLength => FrameDecoder::Headers {
                max,
                state: Headers::Reading { scanned: 0 },
            },
            Framing::MsgPack => FrameDecoder::MsgPack {
                max,
                measure: Measure::new(),
            },
            Framing::SelfDelimited(split) => FrameDecoder::Custom { split, max },
        }
    }

    /// Where a frame starts in `dst`: writes what goes before the frame and returns the offset of
    /// the frame's first byte, for [`Framing::end_frame`].
    pub(crate) fn begin_frame(self, dst: &mut BytesMut) -> usize {
        if let Framing::LengthPrefixed = self {
            dst.put_u32(0);
        }
        dst.len()
    }

    /// Finishes the frame that starts at `start`; fails if it exceeds `max` or holds its own
    /// delimiter. On failure the caller truncates `dst` back.
    pub(crate) fn end_frame(
        self,
        dst: &mut BytesMut,
        start: usize,
        max: usize,
    ) -> Result<(), FrameError> {
        let len = dst.len() - start;
        if len > max {
            return Err(FrameError::TooLarge {
                size: len,
                limit: max,
            });
        }
        match self {
            Framing::LengthPrefixed => {
                let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
                    size: len,
                    limit: max,
                })?;
                dst[start - 4..start].copy_from_slice(&prefix.to_be_bytes());
            }
            Framing::Newline | Framing::Eot => {
                let d = self.delimiter().expect("a delimiter framing");
                if dst[start..].contains(&d) {
                    return Err(FrameError::ContainsDelimiter);
                }
                dst.put_u8(d);
            }
            Framing::ContentLength => {
                // The header goes before the frame, which moves up to make room.
                let header = format!("Content-Length: {len}\r\n\r\n");
                dst.extend_from_slice(header.as_bytes());
                dst[start..].rotate_right(header.len());
            }
            Framing::MsgPack | Framing::SelfDelimited(_) => {}
        }
        Ok(())
    }
}

/// Why a frame could not be written.
#[derive(Debug)]
pub(crate) enum FrameError {
    TooLarge { size: usize, limit: usize },
    ContainsDelimiter,
}

/// Cuts frames off a stream.
#[derive(Debug)]
pub(crate) enum FrameDecoder {
    /// A 4-byte big-endian length, then the frame. (tokio-util's `LengthDelimitedCodec` reserves
    /// the whole claimed length as soon as it reads a header: a peer could make the server hold
    /// up to the frame limit per connection for 4 bytes sent. Here the buffer grows only with
    /// the bytes that arrive.)
    Length {
        max: usize,
    },
    Delimited(AnyDelimiterCodec),
    /// Headers, then a frame of the length they give; what is known so far is kept, so no byte
    /// is looked at twice.
    Headers {
        max: usize,
        state: Headers,
    },
    /// One msgpack value per frame, measured on from where the last read left off.
    MsgPack {
        max: usize,
        measure: Measure,
    },
    Custom {
        split: FrameSplitter,
        max: usize,
    },
}

impl Decoder for FrameDecoder {
    type Item = Bytes;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, io::Error> {
        match self {
            FrameDecoder::Length { max } => {
                let Some(head) = src.get(..LENGTH_PREFIX) else {
                    return Ok(None);
                };
                let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                if n > *max {
                    return Err(too_large(n, *max));
                }
                if src.len() < LENGTH_PREFIX + n {
                    return Ok(None);
                }
                src.advance(LENGTH_PREFIX);
                Ok(Some(src.split_to(n).freeze()))
            }
            FrameDecoder::Delimited(c) => c
                .decode(src)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            FrameDecoder::Headers { max, state } => {
                if let Headers::Reading { scanned } = *state {
                    let Some(end) = header_end(src, scanned)? else {
                        *state = Headers::Reading {
                            // The blank line may begin in the last three bytes.
                            scanned: src.len().saturating_sub(3),
                        };
                        return Ok(None);
                    };
                    let len = content_length(&src[..end])?;
                    if len > *max {
                        return Err(too_large(len, *max));
                    }
                    *state = Headers::Read {
                        header: end + 4,
                        len,
                    };
                }
                let Headers::Read { header, len } = *state else {
                    unreachable!("the headers were read above")
                };
                if src.len() < header.saturating_add(len) {
                    return Ok(None);
                }
                src.advance(header);
                *state = Headers::Reading { scanned: 0 };
                Ok(Some(src.split_to(len).freeze()))
            }
            FrameDecoder::MsgPack { max, measure } => match measure.resume(src) {
                Ok(Some(n)) if n > *max => Err(too_large(n, *max)),
                Ok(Some(n)) => Ok(Some(src.split_to(n).freeze())),
                Ok(None) if measure.at_least() > *max as u64 => {
                    Err(too_large(measure.at_least() as usize, *max))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            },
            FrameDecoder::Custom { split, max } => match split(src) {
                Ok(Some(n)) if n > *max => Err(too_large(n, *max)),
                Ok(Some(n)) if n <= src.len() => Ok(Some(src.split_to(n).freeze())),
                Ok(_) if src.len() > *max => Err(too_large(src.len(), *max)),
                Ok(_) => Ok(None),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            },
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, io::Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.has_remaining() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the peer closed the connection inside a frame ({} byte(s) pending)",
                    src.len()
                ),
            )),
            None => Ok(None),
        }
    }
}

/// Where a header block is, in a [`Framing::ContentLength`] stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Headers {
    /// Not all read: no blank line in the first `scanned` bytes.
    Reading { scanned: usize },
    /// Read: `header` bytes of headers, then a frame of `len` bytes.
    Read { header: usize, len: usize },
}

/// Where the blank line that ends a header block starts, looking from `from` on; an error if
/// the block is over [`MAX_HEADER_BLOCK`].
fn header_end(src: &[u8], from: usize) -> Result<Option<usize>, io::Error> {
    let window = &src[..src.len().min(MAX_HEADER_BLOCK)];
    match window
        .get(from..)
        .and_then(|w| w.windows(4).position(|w| w == b"\r\n\r\n"))
    {
        Some(at) => Ok(Some(from + at)),
        None if src.len() >= MAX_HEADER_BLOCK => Err(invalid(format!(
            "a header block over {MAX_HEADER_BLOCK} bytes"
        ))),
        None => Ok(None),
    }
}

/// The `Content-Length` of a header block (its lines, without the blank line).
fn content_length(block: &[u8]) -> Result<usize, io::Error> {
    let mut found: Option<usize> = None;
    for line in block.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(invalid(format!(
                "a header line without a colon: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(64)])
            )));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        let len = std::str::from_utf8(value)
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| {
                invalid(format!(
                    "Content-Length is not a length: {:?}",
                    String::from_utf8_lossy(&value[..value.len().min(64)])
                ))
            })?;
        if found.is_some_and(|f| f != len) {
            return Err(invalid("two Content-Length headers that differ"));
        }
        found = Some(len);
    }
    found.ok_or_else(|| invalid("a header block without Content-Length"))
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn too_large(size: usize, limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {size} bytes exceeds the limit of {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_length_reserves_nothing_until_the_bytes_arrive() {
        let mut d = Framing::LengthPrefixed.decoder(8 << 20);
        let mut src = BytesMut::with_capacity(16);
        src.extend_from_slice(&((8u32 << 20) - 1).to_be_bytes());
        src.extend_from_slice(b"x");
        assert!(d.decode(&mut src).unwrap().is_none());
        assert!(
            src.capacity() < 1024,
            "the claim was reserved: {}",
            src.capacity()
        );
        // A claim over the limit is refused from the header alone.
        let mut over = BytesMut::from(&((8u32 << 20) + 1).to_be_bytes()[..]);
        assert!(d.decode(&mut over).is_err());
    }

    fn write(f: Framing, frames: &[&[u8]]) -> BytesMut {
        let mut dst = BytesMut::new();
        for fr in frames {
            let start = f.begin_frame(&mut dst);
            dst.extend_from_slice(fr);
            f.end_frame(&mut dst, start, 100).unwrap();
        }
        dst
    }

    fn read_all(f: Framing, mut src: BytesMut) -> Vec<Bytes> {
        let mut d = f.decoder(100);
        let mut out = Vec::new();
        while let Some(fr) = d.decode(&mut src).unwrap() {
            out.push(fr);
        }
        out
    }

    #[test]
    fn every_framing_round_trips() {
        // Each also a msgpack value: a str of 2, the int 1, a str of 4.
        let frames: [&[u8]; 3] = [b"\xa2ab", b"\x01", b"\xa4xyzw"];
        fn first_byte_str(b: &[u8]) -> Result<Option<usize>, BoxError> {
            Ok(b.first()
                .map(|n| {
                    if *n == 1 {
                        1
                    } else {
                        usize::from(*n & 0x1f) + 1
                    }
                })
                .filter(|n| *n <= b.len()))
        }
        for f in [
            Framing::LengthPrefixed,
            Framing::Newline,
            Framing::Eot,
            Framing::ContentLength,
            Framing::MsgPack,
            Framing::SelfDelimited(first_byte_str),
        ] {
            let wire = write(f, &frames);
            let back = read_all(f, wire);
            assert_eq!(
                back.iter().map(|b| &b[..]).collect::<Vec<_>>(),
                frames,
                "{f:?}"
            );
        }
        assert_eq!(
            &write(Framing::LengthPrefixed, &[b"hi"])[..],
            b"\0\0\0\x02hi"
        );
        assert_eq!(&write(Framing::Eot, &[b"hi"])[..], b"hi\x04");
        assert_eq!(
            &write(Framing::ContentLength, &[b"{}", b"[1]"])[..],
            b"Content-Length: 2\r\n\r\n{}Content-Length: 3\r\n\r\n[1]"
        );
    }

    /// Feeds `wire` a byte at a time, as the slowest peer would.
    fn read_bytewise(f: Framing, wire: &[u8], max: usize) -> Result<Vec<Bytes>, io::Error> {
        let mut d = f.decoder(max);
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            src.put_u8(*b);
            while let Some(fr) = d.decode(&mut src)? {
                out.push(fr);
            }
        }
        Ok(out)
    }

    #[test]
    fn content_length_headers_are_read_as_the_language_server_protocol_writes_them() {
        let wire = b"Content-Length: 5\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\nhello\
                     content-length:2\r\n\r\nhi\
                     X-Other: 1\r\nContent-Length:  0 \r\n\r\n";
        let frames = read_bytewise(Framing::ContentLength, wire, 100).unwrap();
        assert_eq!(frames, [&b"hello"[..], b"hi", b""]);
        let refused = |wire: &[u8], why: &str| {
            let e = read_bytewise(Framing::ContentLength, wire, 100).unwrap_err();
            assert!(e.to_string().contains(why), "{e} should say {why:?}");
        };
        refused(b"Content-Type: x\r\n\r\nabc", "without Content-Length");
        refused(b"Content-Length: 101\r\n\r\n", "exceeds the limit of 100");
        refused(b"Content-Length: -1\r\n\r\n", "not a length");
        refused(
            b"Content-Length: 99999999999999999999999\r\n\r\n",
            "not a length",
        );
        refused(b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", "differ");
        refused(b"garbage\r\n\r\n", "without a colon");
        let endless = [&b"X: "[..], &[b'y'; MAX_HEADER_BLOCK]].concat();
        refused(&endless, "header block over 8192 bytes");
        // A header block just under the limit is read.
        let long = [
            &b"X: "[..],
            &[b'y'; MAX_HEADER_BLOCK - 30],
            b"\r\nContent-Length: 1\r\n\r\nz",
        ]
        .concat();
        assert_eq!(
            read_bytewise(Framing::ContentLength, &long, 100).unwrap(),
            [&b"z"[..]]
        );
    }

    #[test]
    fn msgpack_values_are_cut_whole_however_they_arrive() {
        let mut wire = Vec::new();
        let values = [
            rmpv::Value::Array(vec![
                0u8.into(),
                7u8.into(),
                "nvim_eval".into(),
                rmpv::Value::Array(vec!["1+2".into()]),
            ]),
            rmpv::Value::Binary(vec![9; 300]),
            rmpv::Value::Ext(0, vec![1]),
        ];
        for v in &values {
            rmpv::encode::write_value(&mut wire, v).unwrap();
        }
        let frames = read_bytewise(Framing::MsgPack, &wire, 1000).unwrap();
        assert_eq!(frames.len(), 3);
        for (frame, v) in frames.iter().zip(&values) {
            assert_eq!(&rmpv::decode::read_value(&mut &frame[..]).unwrap(), v);
        }
        // A value over the limit is refused, whether it comes whole in one read...
        let whole = [&b"\xc5\x0b\xb8"[..], &[7; 3000]].concat();
        let mut src = BytesMut::from(&whole[..]);
        let e = Framing::MsgPack.decoder(1000).decode(&mut src).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        // ... or its header claims too much, before its bytes come.
        let e = read_bytewise(Framing::MsgPack, b"\xc6\x00\x01\x00\x00", 1000).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        let e = read_bytewise(Framing::MsgPack, b"\xdd\x00\x01\x00\x00", 1000).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        let e = read_bytewise(Framing::MsgPack, b"\x92\xc1", 1000).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let deep = [vec![0x91u8; 200], vec![0x01]].concat();
        let e = read_bytewise(Framing::MsgPack, &deep, 1000).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn limits_hold_on_both_sides() {
        let mut dst = BytesMut::new();
        let start = Framing::LengthPrefixed.begin_frame(&mut dst);
        dst.extend_from_slice(&[0; 101]);
        assert!(matches!(
            Framing::LengthPrefixed.end_frame(&mut dst, start, 100),
            Err(FrameError::TooLarge {
                size: 101,
                limit: 100
            })
        ));
        // A 4 GiB claim is refused without allocating it.
        let mut src = BytesMut::from(&b"\xff\xff\xff\xffabc"[..]);
        assert!(Framing::LengthPrefixed
            .decoder(100)
            .decode(&mut src)
            .is_err());
        let mut src = BytesMut::from(&[b'a'; 200][..]);
        assert!(Framing::Newline.decoder(100).decode(&mut src).is_err());
        let mut dst = BytesMut::new();
        let start = Framing::Newline.begin_frame(&mut dst);
        dst.extend_from_slice(b"a\nb");
        assert!(matches!(
            Framing::Newline.end_frame(&mut dst, start, 100),
            Err(FrameError::ContainsDelimiter)
        ));
    }
}
