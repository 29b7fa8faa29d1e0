//! How a byte stream is cut into frames, and frames are written back.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rpc_core::BoxError;
use tokio_util::codec::{AnyDelimiterCodec, Decoder};

/// The length prefix of [`Framing::LengthPrefixed`]: 4 bytes, big-endian.
const LENGTH_PREFIX: usize = 4;

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
/// SelfDelimited    | frame |  the codec's own header or structure tells where it ends
///                                                      (basic-socket-rpc, msgpack-rpc)
/// ```
///
/// Every framing enforces the endpoint's maximum frame length on both sides: a frame over it is
/// refused before sending, and a peer that announces or sends one loses the connection without
/// the claimed size ever being allocated.
#[derive(Clone, Copy, Default)]
pub enum Framing {
    /// A 4-byte big-endian length, then the frame (as tokio-util's `LengthDelimitedCodec` writes
    /// them).
    #[default]
    LengthPrefixed,
    /// Each frame ends with a newline; frames must not contain one (compact JSON does not).
    Newline,
    /// Each frame ends with the byte `0x04` (EOT); frames must not contain it.
    Eot,
    /// Frames delimit themselves; the function finds where each ends.
    SelfDelimited(FrameSplitter),
}

impl fmt::Debug for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Framing::LengthPrefixed => "LengthPrefixed",
            Framing::Newline => "Newline",
            Framing::Eot => "Eot",
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
            Framing::SelfDelimited(_) => {}
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
        fn first_byte_len(b: &[u8]) -> Result<Option<usize>, BoxError> {
            Ok(b.first().map(|n| usize::from(*n)).filter(|n| *n <= b.len()))
        }
        let frames: [&[u8]; 3] = [b"\x03ab", b"\x01", b"\x05xyzw"];
        for f in [
            Framing::LengthPrefixed,
            Framing::Newline,
            Framing::Eot,
            Framing::SelfDelimited(first_byte_len),
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
