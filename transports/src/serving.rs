//! What every running server offers, whatever its transport.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::Stats;

/// A running server: a UDP [`Endpoint`](crate::udp::Endpoint) that serves, or a
/// [`stream::Server`](crate::stream::Server) (TCP, Unix, in memory, basic-socket-rpc). Code that
/// starts servers of several transports holds them as `Box<dyn Serving<Addr = ...>>`, or
/// generically.
///
/// Every server behaves alike at its end: [`shutdown`](Serving::shutdown) stops taking new
/// requests (no more accepting or receiving), answers those already accepted, and waits at most
/// its grace period before closing what is left; dropping the last handle stops taking new
/// requests and lets the accepted ones be answered, without waiting.
///
/// ```
/// use std::time::Duration;
/// use rpc_codecs::msgpack::RpcudpCodec;
/// use rpc_core::Router;
/// use rpc_transports::{tcp, udp, Serving};
///
/// async fn stop_all(servers: &[&dyn Serving<Addr = std::net::SocketAddr>]) -> bool {
///     let mut clean = true;
///     for s in servers {
///         clean &= s.shutdown(Duration::from_secs(1)).await;
///     }
///     clean
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let router = Router::new().route("ping", || async { "pong" });
/// let over_udp = udp::Builder::new().serve(router.clone()).bind("127.0.0.1:0", RpcudpCodec::new()).await?;
/// let over_tcp = tcp::Builder::new().serve(router).bind("127.0.0.1:0", RpcudpCodec::new()).await?;
/// assert_ne!(Serving::local_addr(&over_udp).port(), 0);
/// assert!(stop_all(&[&over_udp, &over_tcp]).await);
/// # Ok(())
/// # }
/// ```
pub trait Serving: Send + Sync {
    /// The address clients reach the server at.
    type Addr: Clone + fmt::Debug + Send + Sync + 'static;

    /// The address clients reach the server at.
    fn local_addr(&self) -> Self::Addr;

    /// What the server counted.
    fn stats(&self) -> Stats;

    /// Stops taking new requests, answers the accepted ones and closes, waiting at most `grace`;
    /// what is left then is closed. Returns whether everything was answered in time.
    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, bool>;
}
