//! Measuring a msgpack value without decoding it.

use std::fmt;

/// Why [`skip_value`] could not measure a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipError {
    /// The input ends inside the value.
    Truncated,
    /// The byte `0xc1`, which msgpack never uses.
    Reserved(usize),
    /// Containers nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    TooDeep,
}

impl fmt::Display for SkipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipError::Truncated => f.pad("truncated msgpack value"),
            SkipError::Reserved(at) => write!(f, "reserved msgpack marker 0xc1 at byte {at}"),
            SkipError::TooDeep => write!(
                f,
                "msgpack containers nested deeper than {}",
                super::MAX_DEPTH
            ),
        }
    }
}

impl std::error::Error for SkipError {}

/// The length in bytes of the msgpack value at the start of `buf`.
///
/// Never recurses: it counts the values still to skip (and, for values with more than
/// [`MAX_DEPTH`](super::MAX_DEPTH) containers, those of each open container), in time linear
/// in the input: every step consumes at least one byte. Values
/// whose containers nest deeper than [`MAX_DEPTH`](super::MAX_DEPTH) are refused
/// ([`SkipError::TooDeep`]), so a decoder that runs after this check never recurses deeper,
/// whatever the type it decodes (serde's enums, say, which `rmp_serde` does not count).
///
/// ```
/// use rpc_core::msgpack::{skip_value, SkipError, MAX_DEPTH};
/// assert_eq!(skip_value(b"\x92\x01\xa1x\xff"), Ok(4));
/// assert!(skip_value(b"\x92\x01").is_err());
/// let deep = [vec![0x91u8; MAX_DEPTH + 1], vec![0x01]].concat();
/// assert_eq!(skip_value(&deep), Err(SkipError::TooDeep));
/// ```
pub fn skip_value(buf: &[u8]) -> Result<usize, SkipError> {
    match Measure::new().resume(buf)? {
        Some(len) => Ok(len),
        None => Err(SkipError::Truncated),
    }
}

/// [`skip_value`] over bytes that arrive a piece at a time: each [`resume`](Measure::resume)
/// goes on from where the last stopped, so measuring a value costs time linear in its size
/// however it is cut (a stream's reader measures each frame this way as its bytes come).
///
/// ```
/// use rpc_core::msgpack::Measure;
///
/// let value = b"\x92\x01\xa3abc";
/// let mut m = Measure::new();
/// assert_eq!(m.resume(&value[..3]), Ok(None));
/// assert_eq!(m.resume(&value[..]), Ok(Some(value.len())));
/// ```
#[derive(Debug, Clone)]
pub struct Measure {
    /// Where the next marker starts: every marker before it was read whole.
    pos: usize,
    /// The values still to measure.
    pending: u64,
    /// Containers with values in them: only if there are more than the depth limit can the
    /// nesting be deeper, and then a second pass measures the depth.
    containers: usize,
    /// Where the unfinished marker at `pos` ends, as far as its header tells.
    partial_end: usize,
}

impl Default for Measure {
    fn default() -> Self {
        Self::new()
    }
}

impl Measure {
    /// A measure of the value to come.
    pub fn new() -> Self {
        Self {
            pos: 0,
            pending: 1,
            containers: 0,
            partial_end: 0,
        }
    }

    /// Measures on over `buf`, which holds the bytes given before (unchanged) and perhaps more:
    /// `Ok(Some(len))` when a whole value of `len` bytes is there (the measure then starts
    /// again, for the next value), `Ok(None)` when it needs more bytes, and an error when the
    /// bytes cannot be a value. The bytes before the first unfinished marker are never read
    /// again.
    #[inline]
    pub fn resume(&mut self, buf: &[u8]) -> Result<Option<usize>, SkipError> {
        // The loop runs on locals (registers, for the common whole value at once), written back
        // only if it stops before the value's end.
        let (mut pos, mut pending, mut containers) = (self.pos, self.pending, self.containers);
        let stopped = loop {
            if pending == 0 {
                break None;
            }
            let mut next = pos;
            match step(buf, &mut next) {
                Ok(children) => {
                    pos = next;
                    pending -= 1;
                    if children > 0 {
                        containers += 1;
                        pending += children;
                        // Every value takes at least one byte: more pending values than bytes
                        // left cannot fit yet.
                        if pending > (buf.len() - pos) as u64 {
                            break Some(Ok(None));
                        }
                    }
                }
                // The marker is not all there yet: read it again with more bytes. (`step`
                // went as far as its header told.)
                Err(SkipError::Truncated) => {
                    self.partial_end = next;
                    break Some(Ok(None));
                }
                Err(e) => break Some(Err(e)),
            }
        };
        if let Some(result) = stopped {
            (self.pos, self.pending, self.containers) = (pos, pending, containers);
            return result;
        }
        *self = Self::new();
        if containers > super::MAX_DEPTH {
            check_depth(&buf[..pos])?;
        }
        Ok(Some(pos))
    }

    /// The least number of bytes the value takes, from what is known so far: each value still
    /// to measure takes one at least.
    pub fn at_least(&self) -> u64 {
        let known = self.pos as u64 + self.pending;
        // The unfinished marker counts to where its header says it ends.
        known.max((self.partial_end as u64 + self.pending).saturating_sub(1))
    }
}

/// The values in `buf` (every marker: containers, their elements, map keys and values), counted
/// up to the first that does not parse, or to one past `limit`.
pub(crate) fn count_values(buf: &[u8], limit: usize) -> usize {
    let mut pos = 0usize;
    let mut n = 0usize;
    while pos < buf.len() && n <= limit {
        if step(buf, &mut pos).is_err() {
            break;
        }
        n += 1;
    }
    n
}

/// Refuses `value` (one whole msgpack value) if its containers nest deeper than the limit.
fn check_depth(value: &[u8]) -> Result<(), SkipError> {
    let mut pos = 0usize;
    // The values still to skip in each open container, outermost first.
    let mut left: Vec<u64> = Vec::with_capacity(super::MAX_DEPTH + 1);
    left.push(1);
    while let Some(top) = left.last_mut() {
        if *top == 0 {
            left.pop();
            continue;
        }
        *top -= 1;
        let children = step(value, &mut pos)?;
        if children > 0 {
            if left.len() > super::MAX_DEPTH {
                return Err(SkipError::TooDeep);
            }
            left.push(children);
        }
    }
    Ok(())
}

/// Skips one marker at `pos` and what it holds inline (a string's bytes, a number), and gives
/// how many values follow inside it (a container's elements, a map's keys and values).
/// Inlined: it is the body of the measuring loop, run for every value of every request.
#[inline(always)]
fn step(buf: &[u8], pos: &mut usize) -> Result<u64, SkipError> {
    let marker = *buf.get(*pos).ok_or(SkipError::Truncated)?;
    *pos += 1;
    let (skip, children): (usize, u64) = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
        0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (0, u64::from(marker & 0x0f)),
        0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
        0xc1 => return Err(SkipError::Reserved(*pos - 1)),
        0xc4 | 0xd9 => (read_len(buf, pos, 1)?, 0),
        0xc5 | 0xda => (read_len(buf, pos, 2)?, 0),
        0xc6 | 0xdb => (read_len(buf, pos, 4)?, 0),
        0xc7 => (read_len(buf, pos, 1)? + 1, 0),
        0xc8 => (read_len(buf, pos, 2)? + 1, 0),
        0xc9 => (read_len(buf, pos, 4)? + 1, 0),
        0xca | 0xce | 0xd2 => (4, 0),
        0xcb | 0xcf | 0xd3 => (8, 0),
        0xcc | 0xd0 => (1, 0),
        0xcd | 0xd1 => (2, 0),
        0xd4 => (2, 0),
        0xd5 => (3, 0),
        0xd6 => (5, 0),
        0xd7 => (9, 0),
        0xd8 => (17, 0),
        0xdc => (0, read_len(buf, pos, 2)? as u64),
        0xdd => (0, read_len(buf, pos, 4)? as u64),
        0xde => (0, 2 * read_len(buf, pos, 2)? as u64),
        0xdf => (0, 2 * read_len(buf, pos, 4)? as u64),
    };
    *pos = pos.checked_add(skip).ok_or(SkipError::Truncated)?;
    if *pos > buf.len() {
        return Err(SkipError::Truncated);
    }
    Ok(children)
}

fn read_len(buf: &[u8], pos: &mut usize, width: usize) -> Result<usize, SkipError> {
    let bytes = buf.get(*pos..*pos + width).ok_or(SkipError::Truncated)?;
    *pos += width;
    Ok(bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::MAX_DEPTH;

    #[test]
    fn nesting_up_to_the_limit_is_measured_and_deeper_refused() {
        for kind in [0x91u8, 0x81] {
            // A map's one entry is a key then the nested value: key 0x01 before each level.
            let level: &[u8] = if kind == 0x81 { &[0x81, 0x01] } else { &[0x91] };
            let at_limit = [level.repeat(MAX_DEPTH), vec![0x01]].concat();
            assert_eq!(skip_value(&at_limit), Ok(at_limit.len()));
            let over = [level.repeat(MAX_DEPTH + 1), vec![0x01]].concat();
            assert_eq!(skip_value(&over), Err(SkipError::TooDeep));
        }
        // Wide is not deep: many siblings at one level.
        let wide = [vec![0xdc, 0x10, 0x00], vec![0x91; 0], vec![0x90; 4096]].concat();
        assert_eq!(skip_value(&wide), Ok(wide.len()));
    }

    #[test]
    fn measures_every_kind_of_value() {
        let v = rmpv::Value::Array(vec![
            rmpv::Value::Nil,
            rmpv::Value::from(-1),
            rmpv::Value::from(u64::MAX),
            rmpv::Value::from(3.5f64),
            rmpv::Value::from(1.5f32),
            rmpv::Value::from("s".repeat(300)),
            rmpv::Value::Binary(vec![1; 70_000]),
            rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::from(true))]),
            rmpv::Value::Ext(5, vec![1, 2, 3, 4]),
            rmpv::Value::Ext(5, vec![1; 3]),
            rmpv::Value::Array((0..20).map(rmpv::Value::from).collect()),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        assert_eq!(skip_value(&buf), Ok(buf.len()));
        buf.push(0x01);
        assert_eq!(skip_value(&buf), Ok(buf.len() - 1));
        for cut in 0..buf.len() - 1 {
            assert_eq!(
                skip_value(&buf[..cut]),
                Err(SkipError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_value_measured_a_byte_at_a_time_measures_the_same() {
        let v = rmpv::Value::Array(vec![
            rmpv::Value::from("s".repeat(300)),
            rmpv::Value::Binary(vec![1; 70_000]),
            rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::Ext(0, vec![5]))]),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        buf.extend_from_slice(b"\x93\x01\x02\x03");
        let first = buf.len() - 4;
        let mut m = Measure::new();
        for end in 0..first {
            assert_eq!(m.resume(&buf[..end]), Ok(None), "at {end}");
            assert!(m.at_least() <= first as u64);
        }
        assert_eq!(m.resume(&buf[..first]), Ok(Some(first)));
        // It starts again for the next value.
        assert_eq!(m.resume(&buf[first..]), Ok(Some(4)));
        // A claim is known to be too large from its header alone.
        let mut m = Measure::new();
        assert_eq!(m.resume(b"\xdd\xff\xff\xff\xff"), Ok(None));
        assert!(m.at_least() > u64::from(u32::MAX));
        assert_eq!(
            Measure::new().resume(b"\x91\xc1"),
            Err(SkipError::Reserved(1))
        );
    }

    #[test]
    fn values_are_counted_to_the_limit() {
        // [nil, "ab", {1: [2]}]: the array, nil, the string, the map, 1, the inner array, 2.
        let v = b"\x93\xc0\xa2ab\x81\x01\x91\x02";
        assert_eq!(count_values(v, 100), 7);
        assert_eq!(count_values(v, 3), 4, "one past the limit, then it stops");
        assert_eq!(count_values(&[0xc0; 1000], usize::MAX), 1000);
    }

    #[test]
    fn huge_claimed_lengths_fail_fast() {
        assert_eq!(
            skip_value(b"\xdd\xff\xff\xff\xff"),
            Err(SkipError::Truncated)
        );
        assert_eq!(
            skip_value(b"\xc6\xff\xff\xff\xff"),
            Err(SkipError::Truncated)
        );
        assert_eq!(skip_value(b"\xc1"), Err(SkipError::Reserved(0)));
        let deep = vec![0x91u8; 1_000_000];
        assert_eq!(skip_value(&deep), Err(SkipError::Truncated));
        let deep_and_whole = [vec![0x91u8; 1_000_000], vec![0x01]].concat();
        assert_eq!(skip_value(&deep_and_whole), Err(SkipError::TooDeep));
    }
}
