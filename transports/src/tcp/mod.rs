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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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

/// Where a TCP client connects: a socket address, or a host name and port resolved at each
/// connection (each address the name resolves to is tried in turn, as `TcpStream::connect`
/// does). Made from the forms of `tokio::net::ToSocketAddrs` that name one peer: a `SocketAddr`,
/// an IP address and a port (`(IpAddr, u16)`, `([u8; 4], u16)`, ...), `"host:port"` or
/// `("host", port)`; an IP literal is kept as a socket address, never resolved.
///
/// ```
/// use rpc_transports::tcp::Address;
///
/// let by_name = Address::from("localhost:4000");
/// let by_number = Address::from(([127, 0, 0, 1], 4000));
/// assert_eq!(by_name.to_string(), "localhost:4000");
/// assert_eq!(by_number.to_string(), "127.0.0.1:4000");
/// assert_eq!(Address::from(("::1", 4000)), Address::from("[::1]:4000"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address(Target);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Socket(SocketAddr),
    Host(Arc<str>),
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address(Target::Socket(a))
    }
}

/// An IP address and a port, in each form `IpAddr` is made from.
macro_rules! from_ip_and_port {
    ($($ip:ty),*) => {$(
        impl From<($ip, u16)> for Address {
            fn from((ip, port): ($ip, u16)) -> Self {
                Address(Target::Socket(SocketAddr::new(IpAddr::from(ip), port)))
            }
        }
    )*};
}

from_ip_and_port!(
    IpAddr,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
    [u8; 4],
    [u8; 16]
);

impl From<&str> for Address {
    fn from(host_and_port: &str) -> Self {
        match host_and_port.parse() {
            Ok(a) => Address(Target::Socket(a)),
            Err(_) => Address(Target::Host(host_and_port.into())),
        }
    }
}

impl From<String> for Address {
    fn from(host_and_port: String) -> Self {
        Address::from(host_and_port.as_str())
    }
}

impl From<(&str, u16)> for Address {
    fn from((host, port): (&str, u16)) -> Self {
        match host.parse::<IpAddr>() {
            Ok(ip) => Address::from((ip, port)),
            Err(_) => Address(Target::Host(format!("{host}:{port}").into())),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Target::Socket(a) => a.fmt(f),
            Target::Host(h) => f.pad(h),
        }
    }
}

impl stream::Transport for Tcp {
    type Addr = Address;
    type Local = SocketAddr;

    async fn connect(addr: &Address) -> io::Result<Io> {
        Ok(Io::from(connect(addr).await?))
    }
}

/// A TCP connection to `addr`, with `TCP_NODELAY` set.
pub(crate) async fn connect(addr: &Address) -> io::Result<TcpStream> {
    let s = match &addr.0 {
        Target::Socket(a) => TcpStream::connect(a).await?,
        Target::Host(h) => TcpStream::connect(&**h).await?,
    };
    s.set_nodelay(true)?;
    Ok(s)
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<Io> {
        let (s, _) = TcpListener::accept(self).await?;
        s.set_nodelay(true)?;
        Ok(Io::from(s))
    }
}

impl Builder {
    /// Binds a listener and serves until the server is shut down or its handle dropped
    /// ([`Serving`](crate::Serving)). Must run within a tokio runtime.
    pub async fn bind<C: Codec>(self, addr: impl ToSocketAddrs, codec: C) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start_server(listener, codec, local_addr))
    }

    /// A typed client for the server at `addr`; it connects on its first call.
    pub fn client<C: Codec>(self, addr: impl Into<Address>, codec: C) -> Client<Channel<C>> {
        self.channel(addr, codec).into_client()
    }

    /// A channel (a `tower::Service`) to the server at `addr`.
    pub fn channel<C: Codec>(self, addr: impl Into<Address>, codec: C) -> Channel<C> {
        stream::Channel::new(self, addr.into(), codec)
    }
}

/// A running TCP server; see [`stream::Server`].
pub type Server = stream::Server<Tcp>;
