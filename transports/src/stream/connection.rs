//! A connection over a stream the caller opened: its handle, which is also its client.

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use rpc_core::codec::Codec;
use rpc_core::{Client, Error, Payload, Peer, Request, Service};

use super::conn::Conn;
use super::Stats;
use crate::CallFuture;

/// One connection over a byte stream, started with [`Builder::start`](super::Builder::start):
/// it serves the builder's service to the peer (if given one) and calls the peer, both at once.
///
/// It is a `tower::Service` of calls to the peer, and [`client`](Connection::client) puts typed
/// calls on it. Cloning is cheap. The connection runs until the peer closes the stream, it is idle
/// for the idle timeout, [`close`](Connection::close) or [`shutdown`](Connection::shutdown) is
/// called, or the last handle (this, its clones and the clients made from them) is dropped.
/// Handlers calling back through [`Context::caller`](rpc_core::Context::caller) do not keep it
/// open.
///
/// ```
/// use rpc_codecs::jsonrpc::JsonRpcCodec;
/// use rpc_core::Router;
/// use rpc_transports::stream::{self, Io};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::Error> {
/// let (a, b) = tokio::io::duplex(64 * 1024);
/// let _server = stream::builder()
///     .serve(Router::new().route("add", |a: i64, b: i64| async move { a + b }))
///     .start(Io::new(a), JsonRpcCodec::new());
/// let client = stream::builder().start(Io::new(b), JsonRpcCodec::new()).client();
/// let sum: i64 = client.call("add", (2, 40)).await?;
/// assert_eq!(sum, 42);
/// # Ok(())
/// # }
/// ```
pub struct Connection<C: Codec> {
    conn: Arc<Conn<C>>,
    /// Closes the connection when the last handle goes; `None` for handlers' callbacks.
    guard: Option<Arc<CloseOnDrop<C>>>,
}

/// Closes a connection when dropped.
struct CloseOnDrop<C: Codec>(Arc<Conn<C>>);

impl<C: Codec> Drop for CloseOnDrop<C> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<C: Codec> Connection<C> {
    /// A handle that closes `conn` when it and its clones are gone.
    pub(crate) fn guarded(conn: Arc<Conn<C>>) -> Self {
        Self {
            guard: Some(Arc::new(CloseOnDrop(conn.clone()))),
            conn,
        }
    }

    /// A handle that does not keep `conn` open.
    pub(crate) fn unguarded(conn: Arc<Conn<C>>) -> Self {
        Self { conn, guard: None }
    }

    /// Closes the connection as lost, for `why` (see `Conn::lose`).
    pub(crate) fn lose(&self, kind: std::io::ErrorKind, why: String) {
        self.conn.lose(kind, why);
    }

    /// A handle that does not keep the connection open.
    pub(crate) fn weak(&self) -> Self {
        Self::unguarded(self.conn.clone())
    }

    /// A typed client of the peer.
    pub fn client(&self) -> Client<Self> {
        Client::new(self.clone(), self.conn.codec_format())
    }

    /// The peer at the other end.
    pub fn peer(&self) -> &Peer {
        self.conn.peer()
    }

    /// What this connection counted.
    pub fn stats(&self) -> Stats {
        self.conn.counters().snapshot()
    }

    /// Whether the connection is finished.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Resolves when the connection is finished.
    pub async fn closed(&self) {
        self.conn.closed().await
    }

    /// Closes the connection now: calls in flight fail, queued frames are still written.
    pub fn close(&self) {
        self.conn.close();
    }

    /// Stops reading, answers the requests already accepted, flushes and closes, waiting at most
    /// `grace`; what is left then is dropped. Returns whether it closed in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.conn.drain();
        let clean = tokio::time::timeout(grace, self.conn.closed())
            .await
            .is_ok();
        if !clean {
            self.conn.abort();
        }
        clean
    }
}

impl<C: Codec> Clone for Connection<C> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<C: Codec> fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", self.conn.peer())
            .field("closed", &self.conn.is_closed())
            .finish()
    }
}

impl<C: Codec> Service<Request> for Connection<C> {
    type Response = Payload;
    type Error = Error;
    type Future = CallFuture<C::Id, ()>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.conn.call(req)
    }
}
