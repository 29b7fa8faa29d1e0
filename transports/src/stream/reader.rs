//! Reading frames off a stream into a buffer that grows with the bytes that arrive, counted
//! against the server's frame memory ([`budget`](crate::budget)).

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

use crate::budget::{Account, Serving, FREE};

/// The read buffer a connection starts with, and comes back to once it is empty.
pub(crate) const READ_BUFFER: usize = 4 * 1024;

/// Room past the largest frame for what frames its framing puts around it (a length, a
/// delimiter, basic-socket-rpc's header).
const FRAMING_ROOM: usize = 64;

/// Frames read by `decoder` off `io`.
///
/// The buffer at most doubles at a time, and only when full: a peer that claims a large frame
/// holds only what it has sent, and never more than the largest frame allowed. What it holds
/// past [`FREE`] is granted by the server's budget first, when there is one.
#[derive(Debug)]
pub(crate) struct FrameReader<R, D> {
    io: R,
    decoder: D,
    buf: BytesMut,
    /// The buffer never grows past this.
    limit: usize,
    account: Option<Account>,
    state: ReadState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    /// The peer has finished sending: what is buffered is all there is.
    Ended,
}

impl<R: AsyncRead + Unpin, D: Decoder<Error = io::Error>> FrameReader<R, D> {
    /// A reader of frames of at most `max_frame` bytes.
    pub(crate) fn new(io: R, decoder: D, max_frame: usize, account: Option<Account>) -> Self {
        Self {
            io,
            decoder,
            buf: BytesMut::with_capacity(READ_BUFFER),
            limit: max_frame.saturating_add(FRAMING_ROOM),
            account,
            state: ReadState::Reading,
        }
    }

    /// The next frame already buffered, without reading.
    pub(crate) fn buffered(&mut self) -> Option<io::Result<D::Item>> {
        let item = self.decoder.decode(&mut self.buf).transpose();
        if item.is_some() {
            self.settle();
        }
        item
    }

    /// The next frame; `None` once the peer has finished sending and every frame was taken.
    /// Cancel-safe: no byte read is lost when the future is dropped.
    pub(crate) async fn next(&mut self) -> Option<io::Result<D::Item>> {
        loop {
            if let Some(item) = self.buffered() {
                return Some(item);
            }
            if self.state == ReadState::Ended {
                return self.decoder.decode_eof(&mut self.buf).transpose();
            }
            if let Err(e) = self.make_room().await {
                return Some(Err(e));
            }
            let Self {
                io, buf, account, ..
            } = self;
            let read = match account {
                // Only a connection that holds part of the budget can be closed to free it.
                Some(a) if a.held() > 0 => tokio::select! {
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

    /// Counts a frame of `bytes` that was just cut against the budget, until the guard goes.
    pub(crate) fn serving(&self, bytes: usize) -> Option<Serving> {
        self.account.as_ref().map(|a| a.budget().serving(bytes))
    }

    /// Makes room in a full buffer: a small one again when it is empty, else twice its bytes,
    /// what goes past [`FREE`] granted first.
    async fn make_room(&mut self) -> io::Result<()> {
        let len = self.buf.len();
        if self.buf.capacity() > len {
            return Ok(());
        }
        if len == 0 {
            // Takes back the allocation when the frames cut from it are gone; a large one left
            // by a large frame is not kept.
            self.buf.reserve(READ_BUFFER);
            self.settle();
            return Ok(());
        }
        let target = len.saturating_mul(2).clamp(READ_BUFFER, self.limit);
        if target <= len {
            // The decoder refuses a frame over the limit before the buffer gets there.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame passes the limit of {} bytes", self.limit),
            ));
        }
        if let Some(a) = &mut self.account {
            a.hold(target.saturating_sub(FREE))
                .await
                .map_err(|_| over_budget())?;
        }
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
        self.settle();
        Ok(())
    }

    /// Gives back to the budget what the buffer no longer holds: an empty buffer left large by a
    /// large frame starts small again.
    fn settle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > FREE {
            self.buf = BytesMut::with_capacity(READ_BUFFER);
        }
        if let Some(a) = &mut self.account {
            a.release_to(self.buf.capacity().saturating_sub(FREE));
        }
    }
}

/// The error of a connection closed to keep the server within its frame memory.
pub(crate) fn over_budget() -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        "closed to keep the server's memory for unfinished frames within its budget",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::stream::Framing;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_are_read_whole_in_a_buffer_that_grows_with_them() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let budget = Budget::new(1 << 20);
        let mut r = FrameReader::new(
            rx,
            Framing::LengthPrefixed.decoder(512 * 1024),
            512 * 1024,
            Some(budget.account()),
        );
        let big = vec![7u8; 300 * 1024];
        let writer = tokio::spawn(async move {
            for frame in [&b"small"[..], &big] {
                tx.write_all(&(frame.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                tx.write_all(frame).await.unwrap();
            }
        });
        assert_eq!(&r.next().await.unwrap().unwrap()[..], b"small");
        let frame = r.next().await.unwrap().unwrap();
        assert_eq!(frame.len(), 300 * 1024);
        assert!(frame.iter().all(|b| *b == 7));
        writer.await.unwrap();
        assert!(r.next().await.is_none(), "the end of the stream");
        // The buffer's share went with the frame.
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_connection_that_holds_the_most_is_closed_when_the_budget_is_full() {
        let budget = Budget::new(256 * 1024);
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = tokio::io::duplex(1 << 20);
            writers.push(tx);
            readers.push(FrameReader::new(
                rx,
                Framing::LengthPrefixed.decoder(1 << 20),
                1 << 20,
                Some(budget.account()),
            ));
        }
        // Each claims a 1 MiB frame and sends 200 KiB of it: the second passes the budget.
        for w in &mut writers {
            w.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
            w.write_all(&[1; 200 * 1024]).await.unwrap();
        }
        let mut b = readers.pop().unwrap();
        let mut a = readers.pop().unwrap();
        let wait = std::time::Duration::from_millis(100);
        // A reads its 200 KiB; then B, which needs as much: A holds the most and is closed.
        assert!(
            tokio::time::timeout(wait, a.next()).await.is_err(),
            "a partial frame"
        );
        assert!(
            tokio::time::timeout(wait, b.next()).await.is_err(),
            "a partial frame"
        );
        let closed = a.next().await.unwrap().unwrap_err();
        assert_eq!(closed.kind(), io::ErrorKind::OutOfMemory);
        assert!(budget.used() <= 256 * 1024, "{}", budget.used());
    }
}
