//! Reading frames off a stream into a buffer that grows with the bytes that arrive, its
//! allocations counted against the server's frame memory ([`budget`](crate::budget)).

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

use crate::budget::{Account, Held, OverBudget, FREE};

/// The read buffer a connection starts with, and starts anew in once a large frame is cut.
pub(crate) const READ_BUFFER: usize = 4 * 1024;

/// Room past the largest frame for what frames its framing puts around it (a length, a
/// delimiter, basic-socket-rpc's header).
const FRAMING_ROOM: usize = 64;

/// Frames read by `decoder` off `io`.
///
/// The buffer is allocated anew when full, twice as large as the bytes it holds (never larger
/// than the largest frame allowed): a peer that claims a large frame holds only about what it
/// has sent. Frames are cut from the buffer without copying, so each keeps its allocation alive:
/// each allocation is a [`Charge`](crate::budget::Charge) on the server's budget, which the frames
/// cut from it hold ([`Cut::held`]) until their requests are answered.
#[derive(Debug)]
pub(crate) struct FrameReader<R, D> {
    io: R,
    decoder: D,
    buf: BytesMut,
    /// The charge of the allocation `buf` is in; none outside a server.
    charge: Held,
    /// The buffer never grows past this.
    limit: usize,
    account: Option<Account>,
    state: ReadState,
}

/// A frame, and what keeps its memory counted.
#[derive(Debug)]
pub(crate) struct Cut<T> {
    pub(crate) frame: T,
    pub(crate) held: Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    /// The peer has finished sending: what is buffered is all there is.
    Ended,
}

impl<R: AsyncRead + Unpin, D: Decoder<Error = io::Error>> FrameReader<R, D> {
    /// A reader of frames of at most `max_frame` bytes, counting its buffers in `account`.
    pub(crate) fn new(io: R, decoder: D, max_frame: usize, account: Option<Account>) -> Self {
        let charge = account.as_ref().map(|a| a.allocate_small(READ_BUFFER));
        Self {
            io,
            decoder,
            buf: BytesMut::with_capacity(READ_BUFFER),
            charge,
            limit: max_frame.saturating_add(FRAMING_ROOM),
            account,
            state: ReadState::Reading,
        }
    }

    /// The next frame already buffered, without reading.
    pub(crate) fn buffered(&mut self) -> Option<io::Result<Cut<D::Item>>> {
        match self.decoder.decode(&mut self.buf) {
            Ok(Some(frame)) => Some(Ok(self.cut(frame))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The next frame; `None` once the peer has finished sending and every frame was taken.
    /// Cancel-safe: no byte read is lost when the future is dropped.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Cut<D::Item>>> {
        loop {
            if let Some(item) = self.buffered() {
                return Some(item);
            }
            if self.state == ReadState::Ended {
                return match self.decoder.decode_eof(&mut self.buf) {
                    Ok(Some(frame)) => Some(Ok(self.cut(frame))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                };
            }
            if let Err(e) = self.make_room().await {
                return Some(Err(e));
            }
            let Self {
                io,
                buf,
                account,
                charge,
                ..
            } = self;
            let read = match account {
                // Only a large buffer can be closed to make room.
                Some(a) if charge.as_ref().is_some_and(|c| c.bytes() > FREE) => tokio::select! {
                    r = io.read_buf(buf) => r,
                    _ = a.evicted() => Err(over_budget()),
                },
                _ => io.read_buf(buf).await,
            };
            match read {
                Ok(0) => self.state = ReadState::Ended,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// `frame`, just cut, with the charge of the allocation it shares; a large allocation is
    /// then left to it, the rest of the buffer moved into a small one.
    fn cut(&mut self, frame: D::Item) -> Cut<D::Item> {
        let held = self.charge.clone();
        let large = self.charge.as_ref().is_some_and(|c| c.bytes() > FREE);
        if large && self.buf.len() <= READ_BUFFER {
            let mut small = BytesMut::with_capacity(READ_BUFFER);
            small.extend_from_slice(&self.buf);
            self.buf = small;
            self.charge = self.account.as_ref().map(|a| a.allocate_small(READ_BUFFER));
        }
        Cut { frame, held }
    }

    /// Makes room in a full buffer: a new allocation twice the bytes it holds (at least
    /// [`READ_BUFFER`], at most the limit), granted first by the budget.
    async fn make_room(&mut self) -> io::Result<()> {
        let len = self.buf.len();
        if self.buf.capacity() > len {
            return Ok(());
        }
        let target = len.saturating_mul(2).max(READ_BUFFER).min(self.limit);
        if target <= len {
            // The decoder refuses a frame over the limit before the buffer gets there.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame passes the limit of {} bytes", self.limit),
            ));
        }
        if let Some(a) = &self.account {
            let charge = a.allocate(target, self.charge.as_ref()).await;
            self.charge = Some(charge.map_err(|_| over_budget())?);
        }
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
        Ok(())
    }
}

/// The error of a connection closed to keep the server within its frame memory.
pub(crate) fn over_budget() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, OverBudget)
}

/// Whether `e` is [`over_budget`]'s.
pub(crate) fn is_over_budget(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OverBudget>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::stream::Framing;
    use tokio::io::AsyncWriteExt;

    fn length_prefixed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_keep_their_allocation_counted_until_they_go() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let budget = Budget::new(4 << 20);
        let mut r = FrameReader::new(
            rx,
            Framing::LengthPrefixed.decoder(512 * 1024),
            512 * 1024,
            Some(budget.account()),
        );
        let big = vec![7u8; 300 * 1024];
        // A large frame, then one byte of the next frame's length: the large allocation stays
        // counted while the frame is held, and goes with it (the byte moved to a small buffer).
        let mut wire = length_prefixed(b"small");
        wire.extend_from_slice(&length_prefixed(&big));
        wire.push(0);
        tx.write_all(&wire).await.unwrap();
        assert_eq!(&r.next().await.unwrap().unwrap().frame[..], b"small");
        let cut = r.next().await.unwrap().unwrap();
        assert_eq!(cut.frame.len(), 300 * 1024);
        assert!(cut.frame.iter().all(|b| *b == 7));
        assert!(budget.used() > 300 * 1024, "{}", budget.used());
        drop(cut);
        assert!(budget.used() <= 2 * READ_BUFFER, "{}", budget.used());
        drop(tx);
        assert!(
            r.next().await.unwrap().is_err(),
            "the stream ended inside a frame"
        );
    }

    #[tokio::test]
    async fn a_small_frame_limit_never_panics_on_a_full_buffer() {
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::new(rx, Framing::LengthPrefixed.decoder(1000), 1000, None);
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.extend_from_slice(&length_prefixed(&[1; 500]));
        }
        tx.write_all(&wire).await.unwrap();
        drop(tx);
        for _ in 0..10 {
            assert_eq!(r.next().await.unwrap().unwrap().frame.len(), 500);
        }
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn the_connection_with_the_largest_buffer_is_closed_when_the_budget_is_full() {
        let budget = Budget::new(1 << 20);
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = tokio::io::duplex(1 << 20);
            writers.push(tx);
            readers.push(FrameReader::new(
                rx,
                Framing::LengthPrefixed.decoder(4 << 20),
                4 << 20,
                Some(budget.account()),
            ));
        }
        // Each claims a 4 MiB frame and sends 600 KiB of it: A's buffer is 1 MiB once it holds
        // them; B then needs as much: A's is the largest and is closed.
        for w in &mut writers {
            w.write_all(&(4u32 << 20).to_be_bytes()).await.unwrap();
            w.write_all(&[1; 600 * 1024]).await.unwrap();
        }
        let mut b = readers.pop().unwrap();
        let mut a = readers.pop().unwrap();
        let wait = std::time::Duration::from_millis(200);
        assert!(
            tokio::time::timeout(wait, a.next()).await.is_err(),
            "a partial frame"
        );
        let b_reads = tokio::spawn(async move { b.next().await.map(|r| r.map(|_| ())) });
        let closed = a.next().await.unwrap().unwrap_err();
        assert!(is_over_budget(&closed), "{closed}");
        drop(a);
        tokio::time::sleep(wait).await;
        assert!(!b_reads.is_finished(), "B's frame is not whole yet");
        assert!(budget.used() <= 1 << 20, "{}", budget.used());
        b_reads.abort();
    }
}
