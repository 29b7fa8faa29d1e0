//! RPC in memory: the stream transport over in-process pipes ([`tokio::io::duplex`]), for tests
//! and for embedding a service in the process that calls it.
//!
//! A [`Server`] accepts connections as a TCP server does, and every connection is a real stream
//! connection: frames, codec, limits, idle timeouts, graceful shutdown and both-way calls behave
//! as over a socket, only the bytes never leave the process. A client connects to the server's
//! [`Addr`]; it connects on its first call, and again after the connection is lost.
//!
//! ```
//! use rpc_codecs::msgpack::RpcudpCodec;
//! use rpc_core::{Context, Router};
//! use rpc_transports::memory;
//!
//! async fn whoami(ctx: Context) -> String {
//!     ctx.peer().map(|p| p.to_string()).unwrap_or_default()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = memory::Builder::new()
//!     .serve(Router::new().route("whoami", whoami))
//!     .bind(RpcudpCodec::new());
//! let client = memory::Builder::new().client(server.local_addr(), RpcudpCodec::new());
//! let me: String = client.call("whoami", ()).await?;
//! assert!(me.starts_with("stream:memory-client-"), "{me}");
//! assert!(server.shutdown(std::time::Duration::from_secs(1)).await);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rpc_core::codec::Codec;
use rpc_core::{Client, Peer};
use tokio::sync::mpsc;

use crate::stream::{self, Accept, Io};

/// The default size of each direction's pipe buffer: 64 KiB.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// Connections waiting to be accepted, as a listen backlog.
const BACKLOG: usize = 128;

/// The in-memory transport, and its own setting: the pipes' buffer size.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    buffer: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            buffer: DEFAULT_BUFFER,
        }
    }
}

/// Configures in-memory servers and clients.
pub type Builder = crate::Builder<stream::Stream<Memory>>;

/// A channel to an in-memory server.
pub type Channel<C> = stream::Channel<C, Memory>;

/// A running in-memory server; see [`stream::Server`].
pub type Server = stream::Server<Memory>;

/// Where an in-memory server accepts connections. Cloning is cheap; connecting after the server
/// stopped fails with `ConnectionRefused`.
#[derive(Clone)]
pub struct Addr {
    inner: Arc<AddrInner>,
}

struct AddrInner {
    id: u64,
    connections: mpsc::Sender<Io>,
    buffer: usize,
    next_client: AtomicU64,
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory:{}", self.inner.id)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl stream::Transport for Memory {
    type Addr = Addr;
    type Local = Addr;

    async fn connect(addr: &Addr) -> io::Result<Io> {
        let inner = &addr.inner;
        let n = inner.next_client.fetch_add(1, Ordering::Relaxed);
        let (ours, theirs) = tokio::io::duplex(inner.buffer);
        let theirs = Io::new(theirs).with_peer(Peer::Stream(format!("memory-client-{n}").into()));
        inner.connections.send(theirs).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the in-memory server {addr} is not accepting"),
            )
        })?;
        Ok(Io::new(ours).with_peer(Peer::Stream(format!("memory-server-{}", inner.id).into())))
    }
}

struct Listener(mpsc::Receiver<Io>);

impl Accept for Listener {
    async fn accept(&mut self) -> io::Result<Io> {
        match self.0.recv().await {
            Some(io) => Ok(io),
            // Every address is gone, the server's own included: nothing will come.
            None => std::future::pending().await,
        }
    }
}

impl Builder {
    /// The size of each direction's pipe buffer: a writer waits when its peer has this much
    /// unread. Default 64 KiB. A server's setting holds for its connections (the client's
    /// builder is not asked).
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.transport.kind.buffer = bytes.max(1);
        self
    }

    /// Starts a server; clients connect to its [`local_addr`](stream::Server::local_addr). Must
    /// be called within a tokio runtime.
    pub fn bind<C: Codec>(self, codec: C) -> Server {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let (tx, rx) = mpsc::channel(BACKLOG);
        let addr = Addr {
            inner: Arc::new(AddrInner {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                connections: tx,
                buffer: self.transport.kind.buffer,
                next_client: AtomicU64::new(0),
            }),
        };
        self.start_server(Listener(rx), codec, addr)
    }

    /// A typed client of the server at `addr`; it connects on its first call.
    pub fn client<C: Codec>(self, addr: Addr, codec: C) -> Client<Channel<C>> {
        self.channel(addr, codec).into_client()
    }

    /// A channel (a `tower::Service`) to the server at `addr`.
    pub fn channel<C: Codec>(self, addr: Addr, codec: C) -> Channel<C> {
        stream::Channel::new(self, addr, codec)
    }
}
