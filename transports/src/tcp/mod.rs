//! RPC over TCP: frames on a connection (length-prefixed by default), both ends serving and calling.
//!
//! ```
//! use rpc_codecs::msgpack::RpcudpCodec;
//! use rpc_core::Router;
//! use rpc_transports::tcp;
//!
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = tcp::Builder::new()
//!     .serve(Router::new().route("add", add))
//!     .bind("127.0.0.1:0", RpcudpCodec::new())
//!     .await?;
//!
//! // Connects on the first call, and again after a lost connection.
//! let client = tcp::Builder::new().client(server.local_addr(), RpcudpCodec::new());
//! let sum: i64 = client.call("add", (2, 40)).await?;
//! assert_eq!(sum, 42);
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```
//!
//! Connections have `TCP_NODELAY` set: frames are coalesced by the writer, not by Nagle.
//! Limits and defaults are in [`stream`].

use std::io;
use std::net::SocketAddr;

use rpc_core::codec::Codec;
use rpc_core::Client;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::stream::{self, Accept, Io};

/// The TCP transport.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

/// Configures TCP servers and clients.
pub type Builder = crate::Builder<stream::Stream<Tcp>>;

/// A channel to a TCP server.
pub type Channel<C> = stream::Channel<C, Tcp>;

impl stream::Transport for Tcp {
    type Addr = SocketAddr;

    async fn connect(addr: &SocketAddr) -> io::Result<Io> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Io::from(s))
    }
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<Io> {
        let (s, _) = TcpListener::accept(self).await?;
        s.set_nodelay(true)?;
        Ok(Io::from(s))
    }
}

impl Builder {
    /// Binds a listener and serves until [`Server::shutdown`]. Must run within a tokio runtime.
    pub async fn bind<C: Codec>(self, addr: impl ToSocketAddrs, codec: C) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start_server(listener, codec, local_addr))
    }

    /// A typed client for the server at `addr`; it connects on its first call.
    pub fn client<C: Codec>(self, addr: SocketAddr, codec: C) -> Client<Channel<C>> {
        self.channel(addr, codec).into_client()
    }

    /// A channel (a `tower::Service`) to the server at `addr`.
    pub fn channel<C: Codec>(self, addr: SocketAddr, codec: C) -> Channel<C> {
        stream::Channel::new(self, addr, codec)
    }
}

/// A running TCP server; see [`stream::Server`].
pub type Server = stream::Server<Tcp>;
