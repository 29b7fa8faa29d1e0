//! The endpoint's socket, which wakes its runtime for incoming datagrams only.
//!
//! tokio's `UdpSocket` waits for both directions of readiness. A UDP socket becomes writable
//! again each time the kernel frees a datagram it sent (over loopback, when the peer reads it),
//! so an endpoint that sends a datagram per call and waits for the answer would wake its runtime
//! twice per call, once for nothing: a second `epoll_wait` and a pass of the runtime's drivers.
//! Sends almost always find room, so this socket is registered for reading only and sends with
//! a plain non-blocking `send_to`. When a send finds the socket's buffer full, a second
//! descriptor of the same socket is registered for writability while any send waits for room:
//! one for all the sends waiting, and new sends queue behind them rather than take the room
//! they wait for.

use std::io;
use std::net::SocketAddr;

/// A non-blocking UDP socket registered with the runtime for reading.
#[derive(Debug)]
pub(super) struct Socket {
    #[cfg(unix)]
    io: tokio::io::unix::AsyncFd<std::net::UdpSocket>,
    /// The runtime the socket is registered with: a send may be polled outside it.
    #[cfg(unix)]
    runtime: tokio::runtime::Handle,
    /// How many sends wait for room.
    #[cfg(unix)]
    waiting: std::sync::atomic::AtomicUsize,
    /// The registration for writability that the sends waiting for room share; gone when none
    /// waits.
    #[cfg(unix)]
    writer: std::sync::Mutex<std::sync::Weak<Writer>>,
    #[cfg(not(unix))]
    io: tokio::net::UdpSocket,
}

/// A duplicate descriptor of the socket, registered for writability.
#[cfg(unix)]
type Writer = tokio::io::unix::AsyncFd<std::net::UdpSocket>;

#[cfg(unix)]
impl Socket {
    /// Takes over a socket from tokio. Must be called within a tokio runtime.
    pub(super) fn new(socket: tokio::net::UdpSocket) -> io::Result<Self> {
        // `into_std` leaves the socket non-blocking, as `AsyncFd` needs.
        let io = register(socket.into_std()?, tokio::io::Interest::READABLE)?;
        Ok(Self {
            io,
            runtime: tokio::runtime::Handle::current(),
            waiting: Default::default(),
            writer: Default::default(),
        })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Receives a datagram that is already waiting, else fails with `WouldBlock`.
    pub(super) fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io
            .try_io(tokio::io::Interest::READABLE, |s| s.recv_from(buf))
    }

    /// Waits for a datagram and receives it. Only one task may wait at a time (the endpoint's
    /// receive loop): the socket keeps one waker, which is cheaper than a list of waiters.
    pub(super) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| loop {
            let mut ready = std::task::ready!(self.io.poll_read_ready(cx))?;
            // `WouldBlock` clears the readiness, and the next poll waits for another datagram.
            if let Ok(received) = ready.try_io(|s| s.get_ref().recv_from(buf)) {
                return std::task::Poll::Ready(received);
            }
        })
        .await
    }

    /// Sends a datagram if the socket has room for it now and no send waits for room, else
    /// fails with `WouldBlock`.
    pub(super) fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        if self.waiting.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.io.get_ref().send_to(buf, to)
    }

    /// Sends a datagram, waiting for room if there is none.
    pub(super) async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self.try_send_to(buf, to) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.send_when_writable(buf, to).await
            }
            sent => sent,
        }
    }

    /// Waits until the socket has room, then sends.
    async fn send_when_writable(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let _waiting = Waiting::new(&self.waiting);
        self.writer()?
            .async_io(tokio::io::Interest::WRITABLE, |s| s.send_to(buf, to))
            .await
    }

    /// The registration for writability, made for the first send that waits for room and
    /// shared with the others until the last is done. (Registering reports the readiness there
    /// is now, so room made since a send failed is not missed.)
    fn writer(&self) -> io::Result<std::sync::Arc<Writer>> {
        let mut shared = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(writer) = shared.upgrade() {
            return Ok(writer);
        }
        // Within the socket's runtime, wherever the send is polled.
        let _runtime = self.runtime.enter();
        let writer = std::sync::Arc::new(register(
            self.io.get_ref().try_clone()?,
            tokio::io::Interest::WRITABLE,
        )?);
        *shared = std::sync::Arc::downgrade(&writer);
        Ok(writer)
    }
}

/// Counts a send waiting for room while it lives.
#[cfg(unix)]
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

#[cfg(unix)]
impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }
}

#[cfg(unix)]
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Registers a socket that the returned `AsyncFd` owns.
///
/// tokio deprecated its safe constructors because they accept any `AsRawFd`, whose descriptor
/// could be closed or change while registered; a `std::net::UdpSocket` owned by the `AsyncFd`
/// keeps its one descriptor open until the `AsyncFd` is dropped, which is the condition the
/// replacement (an `unsafe fn`) asks its callers to uphold.
#[cfg(unix)]
#[allow(deprecated)]
fn register(
    socket: std::net::UdpSocket,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<std::net::UdpSocket>> {
    tokio::io::unix::AsyncFd::with_interest(socket, interest)
}

#[cfg(not(unix))]
impl Socket {
    pub(super) fn new(socket: tokio::net::UdpSocket) -> io::Result<Self> {
        Ok(Self { io: socket })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    pub(super) fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.try_recv_from(buf)
    }

    pub(super) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.recv_from(buf).await
    }

    pub(super) fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.io.try_send_to(buf, to)
    }

    pub(super) async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.io.send_to(buf, to).await
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_send_that_found_no_room_waits_for_room_and_sends() {
        let a = Socket::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let b = Socket::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        // The path a send takes after `WouldBlock`: it must see the room there is now.
        let sent = tokio::time::timeout(Duration::from_secs(5), a.send_when_writable(b"hi", to))
            .await
            .expect("room was reported")
            .unwrap();
        assert_eq!(sent, 2);
        let mut buf = [0u8; 16];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), b.recv_from(&mut buf))
            .await
            .expect("the datagram arrived")
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"hi"[..], a.local_addr().unwrap()));
        // And again: the registration of the first wait is gone, another can be made.
        a.send_when_writable(b"again", to).await.unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"again");
    }

    #[tokio::test]
    async fn sends_waiting_for_room_share_one_registration() {
        let a = Socket::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let first = a.writer().unwrap();
        let second = a.writer().unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&first, &second),
            "one duplicate descriptor"
        );
        drop((first, second));
        // Gone with the last send that waited: nothing wakes the runtime for writability.
        assert!(a.writer.lock().unwrap().upgrade().is_none());
    }

    #[tokio::test]
    async fn new_sends_queue_behind_sends_waiting_for_room() {
        let a = Socket::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let waiting = Waiting::new(&a.waiting);
        let e = a.try_send_to(b"late", to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(waiting);
        assert_eq!(a.try_send_to(b"now", to).unwrap(), 3);
    }

    #[test]
    fn a_send_polled_outside_any_runtime_can_wait_for_room() {
        // Calls may be made from threads outside the runtime (which runs elsewhere).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (a, b) = rt.block_on(async {
            let a = Socket::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            (a.unwrap(), b)
        });
        let to = b.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(futures::executor::block_on(a.send_when_writable(b"hi", to)));
        });
        let sent = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sent, without a panic outside the runtime")
            .unwrap();
        assert_eq!(sent, 2);
        let mut buf = [0u8; 16];
        let n = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), b.recv(&mut buf))
                .await
                .expect("the datagram arrived")
                .unwrap()
        });
        assert_eq!(&buf[..n], b"hi");
    }

    #[tokio::test]
    async fn try_recv_reports_would_block_when_nothing_waits() {
        let a = Socket::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let e = a.try_recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
