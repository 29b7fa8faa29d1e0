//! One builder for every transport: the settings they share are set and documented here once;
//! each transport adds its own ([`udp`](crate::udp), [`stream`](crate::stream), ...).

use std::fmt;
use std::time::Duration;

use crate::serve::Serve;
use rpc_core::{BoxError, Request, Response, Service};

/// The default time a call waits for its response when its request has no deadline: 10 s, on
/// every transport. (rpcudp's own is 5 s and basic-socket-rpc's 20 s; set
/// [`Builder::timeout`] to match a peer's.)
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of requests served at once, per UDP endpoint or per connection.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// The default largest frame on a connection: 8 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 8 * 1024 * 1024;
/// The default idle timeout of connections: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default time a connection waits for its peer to take bytes it has queued: 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default number of connections a server keeps.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default number of connections a server keeps from one IP address: an eighth of all, so
/// one host cannot take every connection.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = DEFAULT_MAX_CONNECTIONS / 8;
/// The default number of requests from one IP address served at once: half of
/// [`DEFAULT_MAX_CONCURRENT_REQUESTS`], so one source cannot take every place, while one busy
/// client still has many.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS_PER_IP: usize = DEFAULT_MAX_CONCURRENT_REQUESTS / 2;
/// The default memory a server's connections may hold in unfinished frames and frames being
/// served: 64 MiB, eight frames of the largest size.
pub const DEFAULT_MAX_FRAME_MEMORY: usize = 64 * 1024 * 1024;
/// The default density past which arguments are refused: more than one value per 3 bytes (in
/// frames over 4 KiB). JSON arrays of numbers up to 255 pass (3.6 bytes a value on average);
/// msgpack arrays of small integers (1 or 2 bytes a value) do not: bytes travel as bin.
pub const DEFAULT_MIN_BYTES_PER_VALUE: usize = 3;
/// The arguments of frames up to this size are decoded whatever their density: their decoded
/// size is small however dense they are.
pub(crate) const DENSITY_CHECKED_FROM: usize = 4 * 1024;

/// Configures servers and clients of a transport `T`: [`udp::Builder`](crate::udp::Builder),
/// [`tcp::Builder`](crate::tcp::Builder), [`unix::Builder`](crate::unix::Builder),
/// [`memory::Builder`](crate::memory::Builder), [`raw::Builder`](crate::raw::Builder), and
/// [`stream::builder`](crate::stream::builder) for streams the caller opens.
///
/// # Defaults and limits
///
/// | setting | default | transports |
/// |---|---|---|
/// | [`timeout`](Builder::timeout) | 10 s for a call without a deadline | all |
/// | [`max_concurrent_requests`](Builder::max_concurrent_requests) | 1024 per endpoint or connection; more are answered "overloaded" | all but basic-socket-rpc, which serves one call at a time per connection |
/// | [`max_frame_length`](Builder::max_frame_length) | 8 MiB, enforced on send (the call fails, the connection stays) and on receive (the connection closes; the claimed size is never allocated) | connections |
/// | [`idle_timeout`](Builder::idle_timeout) | 5 min without frames and with nothing in flight closes the connection, on either end (a client reconnects on its next call) | connections |
/// | [`write_timeout`](Builder::write_timeout) | 30 s without the peer taking any queued byte closes the connection (`Stats::write_stalled`); a forced shutdown drops what is queued | connections |
/// | [`max_connections`](Builder::max_connections) | 1024 per server; more are closed as soon as they are accepted | connections |
/// | [`max_connections_per_ip`](Builder::max_connections_per_ip) | 128 from one IP address; more from it are closed as soon as they are accepted | TCP |
/// | [`max_concurrent_requests_per_ip`](Builder::max_concurrent_requests_per_ip) | 512 from one IP address served at once (of an endpoint's, or of a server's over all its connections); more from it are answered "overloaded" | UDP, TCP |
/// | [`max_frame_memory`](Builder::max_frame_memory) | 64 MiB per server for unfinished frames and frames being served; past it the connection holding the most of an unfinished frame is closed, or reading waits for frames to be served | connections |
/// | [`min_bytes_per_value`](Builder::min_bytes_per_value) | 3: in frames over 4 KiB, arguments with more than one value per 3 bytes are answered "message too large" | all (JSON and msgpack arguments) |
/// | [`max_payload`](crate::udp::Builder::max_payload) | 8192 bytes, as rpcudp | UDP |
///
/// ```
/// use std::time::Duration;
/// use rpc_transports::{tcp, udp};
///
/// // The shared settings read the same on every transport.
/// let over_udp = udp::Builder::new().timeout(Duration::from_secs(2)).max_concurrent_requests(64);
/// let over_tcp = tcp::Builder::new().timeout(Duration::from_secs(2)).max_concurrent_requests(64);
/// # let _ = (over_udp, over_tcp);
/// ```
pub struct Builder<T> {
    pub(crate) timeout: Duration,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) max_concurrent_requests_per_ip: usize,
    pub(crate) min_bytes_per_value: usize,
    pub(crate) service: Option<Serve>,
    pub(crate) transport: T,
}

impl<T: Default> Default for Builder<T> {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_concurrent_requests_per_ip: DEFAULT_MAX_CONCURRENT_REQUESTS_PER_IP,
            min_bytes_per_value: DEFAULT_MIN_BYTES_PER_VALUE,
            service: None,
            transport: T::default(),
        }
    }
}

impl<T: Default> Builder<T> {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T> Builder<T> {
    /// How long a call waits for its response when its request has no deadline. Default 10 s.
    ///
    /// The call table fails a call at its deadline (this timeout, or the one set on the
    /// request: the client's `with_timeout`, `SetDeadlineLayer`), a millisecond late at most,
    /// with no timer per call: its sweeper looks at the calls every sixteenth of this timeout
    /// (1 ms to 1 s) and sleeps until the earliest deadline. A timeout too long for the clock
    /// (`Duration::MAX`) means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many requests are served at once (per UDP endpoint, or per connection) before more
    /// are refused as overloaded. Default 1024.
    ///
    /// A request counts while its handler is still running after the receive loop first polled
    /// it; one whose handler finishes at once never takes a slot.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n.max(1);
        self
    }

    /// How many requests from one IP address (a host, whatever its ports) are served at once;
    /// more from it are answered "overloaded", so one source cannot take what all share. Over
    /// UDP, of an endpoint's [`max_concurrent_requests`](Builder::max_concurrent_requests); over
    /// TCP, counted over all the connections from the address (each of which also has its own
    /// `max_concurrent_requests`). Default 512: clients behind one proxy address share it.
    /// Peers without an IP address (Unix sockets, pipes) have no share; basic-socket-rpc serves
    /// one call at a time per connection, bounded by
    /// [`max_connections_per_ip`](Builder::max_connections_per_ip).
    pub fn max_concurrent_requests_per_ip(mut self, n: usize) -> Self {
        self.max_concurrent_requests_per_ip = n.max(1);
        self
    }

    /// In frames over 4 KiB, refuses arguments that hold more than one value per `bytes` of
    /// their encoding (and 16 more), answering "message too large" (`Stats::too_dense`), before
    /// any handler decodes them; a batch's items are checked each. Default 3; 0 turns the check
    /// off.
    ///
    /// Decoding turns each value into a Rust one of tens of bytes (a `serde_json::Value` takes
    /// 32, an `rmpv::Value` 40, a `String` 24): a megabyte of one-byte msgpack values would take
    /// 40 MB decoded. With the default, decoded arguments take at most about 13 times their size
    /// in such types (a frame up to 4 KiB at most about 160 KiB). JSON arrays of byte values
    /// pass (3.6 bytes a value on average); msgpack arrays of small integers do not: send bytes
    /// as msgpack bin (`serde_bytes`, `bytes::Bytes`), or set 1. Values are counted by the
    /// codec's format ([`Format::count_values`](rpc_core::Format::count_values)): JSON and
    /// msgpack count; a format that cannot count is not checked.
    pub fn min_bytes_per_value(mut self, bytes: usize) -> Self {
        self.min_bytes_per_value = bytes;
        self
    }

    /// Serves `service` (a [`Router`](rpc_core::Router), or one under tower layers): a server's,
    /// or a client's, which the server may then call back over the same connection or socket.
    /// Without it requests are answered "method not found".
    pub fn serve<S>(mut self, service: S) -> Self
    where
        S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.service = Some(Serve::new(service));
        self
    }
}

/// The settings of transports over connections (streams and basic-socket-rpc).
#[derive(Debug, Clone)]
pub struct Connections {
    pub(crate) max_frame: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) write_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_frame_memory: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME_LENGTH,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_frame_memory: DEFAULT_MAX_FRAME_MEMORY,
        }
    }
}

impl Connections {
    /// A server's frame memory: never less than a frame of the largest size needs.
    pub(crate) fn budget(&self) -> std::sync::Arc<crate::budget::Budget> {
        crate::budget::Budget::new(
            self.max_frame_memory
                .max(self.max_frame.saturating_add(1024)),
        )
    }
}

/// Transports over connections: their builders take the connection settings.
pub trait Connected: sealed::Sealed {
    #[doc(hidden)]
    fn connections(&mut self) -> &mut Connections;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

impl<T: Connected> Builder<T> {
    /// The largest frame sent or accepted, in bytes. Default 8 MiB.
    pub fn max_frame_length(mut self, bytes: usize) -> Self {
        self.transport.connections().max_frame = bytes.min(u32::MAX as usize);
        self
    }

    /// Closes a connection after this long without frames and with nothing in flight;
    /// `None` keeps idle connections. Default 5 minutes. The timer is checked once a period,
    /// not reset on every frame, so an idle connection closes between one and two periods
    /// after its last frame.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.transport.connections().idle_timeout = timeout;
        self
    }

    /// How long a connection waits for its peer to take any of the bytes it has queued before
    /// it closes (a peer that stops reading would otherwise hold the connection, its queued
    /// answers and the handlers waiting to send, for good). Default 30 s; a timeout too long
    /// for the clock (`Duration::MAX`) means none.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.transport.connections().write_timeout = timeout;
        self
    }

    /// How many connections a server keeps; more are closed at once. Default 1024.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.transport.connections().max_connections = n.max(1);
        self
    }

    /// How many connections a server keeps from one IP address (a host, whatever its ports);
    /// more from it are closed at once, so one host cannot lock the others out. Default 128, an
    /// eighth of [`max_connections`](Builder::max_connections)' default. Peers without an IP
    /// address (Unix sockets, pipes) count against `max_connections` only.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.transport.connections().max_connections_per_ip = n.max(1);
        self
    }

    /// The memory a server's connections may hold in frames, in bytes: the read buffers of
    /// frames still arriving, past the first 64 KiB of each connection's, and those of frames
    /// whose requests are being decoded and served (a frame keeps the buffer it was cut from
    /// alive: it is the allocation that counts). Default 64 MiB; never less than a frame of
    /// [`max_frame_length`](Builder::max_frame_length) needs, so that one can always be read.
    ///
    /// When a connection needs more to go on reading and the budget is spent, then if the
    /// buffers of frames still arriving hold too much, the connection with the largest is
    /// closed (`Stats::over_budget`): a peer that sends most of a large frame and stops holds
    /// memory for nothing. Else the budget is held by frames being served, and the connection
    /// is not read until they are answered, for at most 10 s, after which it is closed too. So
    /// a server's frame memory stays under this plus 64 KiB per connection, whatever the peers
    /// send. Clients and connections started outside a server ([`Builder::start`]) have no
    /// budget of their own.
    pub fn max_frame_memory(mut self, bytes: usize) -> Self {
        self.transport.connections().max_frame_memory = bytes;
        self
    }
}

impl<T: Clone> Clone for Builder<T> {
    fn clone(&self) -> Self {
        Self {
            timeout: self.timeout,
            max_concurrent_requests: self.max_concurrent_requests,
            max_concurrent_requests_per_ip: self.max_concurrent_requests_per_ip,
            min_bytes_per_value: self.min_bytes_per_value,
            service: self.service.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("timeout", &self.timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field(
                "max_concurrent_requests_per_ip",
                &self.max_concurrent_requests_per_ip,
            )
            .field("min_bytes_per_value", &self.min_bytes_per_value)
            .field("serving", &self.service.is_some())
            .field("transport", &self.transport)
            .finish()
    }
}
