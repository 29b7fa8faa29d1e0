//! The byte stream a connection runs over: any `AsyncRead + AsyncWrite`, with a direct write path
//! for sockets.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};

use rpc_core::Peer;
use tokio::io::{AsyncRead, AsyncWrite};

/// An open byte stream for a connection to run over: a TCP or Unix socket, a TLS stream, an
/// in-memory pipe ([`tokio::io::duplex`]), a child process's stdout and stdin, ...
///
/// A connection reads its stream from one task and writes it from another (see [`stream`](super)).
/// Sockets (`From<TcpStream>`, `From<UnixStream>`) keep one more path: a caller whose call is alone
/// on its connection, or the reader answering a burst of requests, writes to the socket without
/// waking the writer task when nothing else is being written. Other streams are written by the
/// writer task only, and flushed after each batch of frames (a TLS stream sends its records then).
///
/// ```
/// use rpc_core::Peer;
/// use rpc_transports::stream::Io;
///
/// let (a, b) = tokio::io::duplex(64 * 1024);
/// let io = Io::new(a).with_peer(Peer::Stream("test".into()));
/// assert_eq!(io.peer().to_string(), "stream:test");
/// // Two one-way streams, as a child process's stdout and stdin.
/// let (r, w) = tokio::io::split(b);
/// let io = Io::from_halves(r, w);
/// # let _ = io;
/// ```
pub struct Io {
    pub(crate) read: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) write: Box<dyn AsyncWrite + Send + Unpin>,
    /// The socket, for writes through a shared reference.
    pub(crate) direct: Option<Arc<dyn TryWrite>>,
    pub(crate) peer: Peer,
}

impl Io {
    /// Any byte stream; the peer is `Peer::Stream("stream")` until [`with_peer`](Io::with_peer)
    /// names it.
    pub fn new<S>(stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        Self::from_halves(read, write)
    }

    /// A stream made of a read half and a write half, such as a child's stdout and stdin.
    /// Shutting the write half down (when the connection closes) must tell the peer there is
    /// nothing more to read.
    pub fn from_halves<R, W>(read: R, write: W) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Self {
            read: Box::new(read),
            write: Box::new(write),
            direct: None,
            peer: Peer::Stream("stream".into()),
        }
    }

    /// Names the peer at the other end, as handlers see it ([`Context::peer`](rpc_core::Context::peer)).
    pub fn with_peer(mut self, peer: Peer) -> Self {
        self.peer = peer;
        self
    }

    /// The peer at the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// A socket split into halves that are both written through a shared reference.
    fn socket<R, W>(read: R, write: W, peer: Peer) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: SocketWrite,
    {
        let write = Arc::new(write);
        Self {
            read: Box::new(read),
            direct: Some(write.clone()),
            write: Box::new(Shared(write)),
            peer,
        }
    }
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("peer", &self.peer)
            .field("direct_writes", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// Writes what the stream takes now, without waiting; `WouldBlock` if it takes nothing.
pub(crate) trait TryWrite: Send + Sync {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

/// The write half of a socket: written without waiting through a shared reference, and polled for
/// room. Dropping the last handle shuts the socket down for writing.
trait SocketWrite: Send + Sync + 'static {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn poll_write_ready(&self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>>;
}

impl<W: SocketWrite> TryWrite for W {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        SocketWrite::try_write(self, buf)
    }
}

/// A socket's write half as the writer task holds it.
struct Shared<W>(Arc<W>);

impl<W: SocketWrite> AsyncWrite for Shared<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.0.try_write(buf) {
                // Nothing taken: wait for room (`try_write` cleared the readiness it used up).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_write_ready(cx))?
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket shuts down for writing when its last handle is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tcp")]
mod tcp {
    use tokio::net::tcp::OwnedWriteHalf;
    use tokio::net::TcpStream;

    use super::*;

    impl SocketWrite for OwnedWriteHalf {
        fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
            OwnedWriteHalf::try_write(self, buf)
        }

        fn poll_write_ready(&self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
            self.as_ref().poll_write_ready(cx)
        }
    }

    /// A TCP connection, with its peer's address and the direct write path.
    impl From<TcpStream> for Io {
        fn from(s: TcpStream) -> Self {
            let peer = match s.peer_addr() {
                Ok(addr) => Peer::Socket(addr),
                Err(_) => Peer::Stream("tcp".into()),
            };
            let (read, write) = s.into_split();
            Io::socket(read, write, peer)
        }
    }
}

#[cfg(all(unix, feature = "unix"))]
mod unix {
    use rpc_core::context::Credentials;
    use tokio::net::unix::OwnedWriteHalf;
    use tokio::net::UnixStream;

    use super::*;

    impl SocketWrite for OwnedWriteHalf {
        fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
            OwnedWriteHalf::try_write(self, buf)
        }

        fn poll_write_ready(&self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
            self.as_ref().poll_write_ready(cx)
        }
    }

    /// A Unix socket connection, with its peer's credentials and the direct write path.
    impl From<UnixStream> for Io {
        fn from(s: UnixStream) -> Self {
            let credentials = s.peer_cred().ok().map(|c| Credentials {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            });
            let (read, write) = s.into_split();
            Io::socket(read, write, Peer::Unix { credentials })
        }
    }
}
