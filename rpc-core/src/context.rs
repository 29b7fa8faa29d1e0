//! What a handler can know about the call it serves.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{BoxChannel, Client};

/// How far ahead [`deadline_after`] puts a deadline that the clock cannot hold: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// The deadline `timeout` after `now`; for a timeout too long for the clock to add
/// (`Duration::MAX`, a common way to say "no timeout"), a deadline about 30 years ahead, which
/// never comes.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::context::deadline_after;
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// assert_eq!(deadline_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
/// ```
pub fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now.checked_add(FAR_FUTURE).unwrap_or(now))
}

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// An IP socket address (UDP or TCP).
    Socket(SocketAddr),
    /// The other end of a Unix socket.
    Unix {
        /// Its process's credentials, where the platform tells them.
        credentials: Option<Credentials>,
    },
    /// The other end of a byte stream that is not a socket (in memory, a pipe, a child process),
    /// by the name whoever opened the stream gave it.
    Stream(Arc<str>),
    /// The other end of a TLS connection over TCP: its address, and the certificate it proved
    /// to hold, if it showed one (a server always does; a client when the server asks for one).
    Tls {
        /// The IP socket address.
        addr: SocketAddr,
        /// The verified certificate's names, if the peer showed one.
        certificate: Option<Arc<PeerCertificate>>,
    },
}

/// Who a peer's verified certificate names: its subject and its subject alternative names.
///
/// The subject is written as RFC 4514 writes a distinguished name: the most specific part first
/// (`CN=billing,O=Acme`), `+` between the attributes of one part, and `,`, `+`, `"`, `\`, `<`,
/// `>`, `;`, a leading `#` or space, a trailing space and control characters escaped with `\`;
/// so two different subjects never read the same.
///
/// ```
/// use rpc_core::context::{AltName, PeerCertificate};
///
/// let cert = PeerCertificate::new("CN=billing", [AltName::Dns("billing.internal".into())]);
/// assert!(cert.is_named("billing.internal"));
/// assert!(cert.is_named("CN=billing"));
/// assert!(!cert.is_named("CN=other"));
/// assert_eq!(cert.names()[0].to_string(), "DNS:billing.internal");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerCertificate {
    subject: String,
    names: Vec<AltName>,
}

/// One of a certificate's subject alternative names, by kind: each kind is its own namespace
/// (a URI that reads `CN=admin` is not the subject `CN=admin`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AltName {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(std::net::IpAddr),
    /// An e-mail address (RFC 822 name).
    Email(String),
    /// A URI (a SPIFFE id, say).
    Uri(String),
}

impl fmt::Display for AltName {
    /// As OpenSSL writes them: `DNS:`, `IP:`, `email:`, `URI:` and the name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AltName::Dns(n) => write!(f, "DNS:{n}"),
            AltName::Ip(ip) => write!(f, "IP:{ip}"),
            AltName::Email(n) => write!(f, "email:{n}"),
            AltName::Uri(n) => write!(f, "URI:{n}"),
        }
    }
}

impl PeerCertificate {
    /// A certificate's subject (RFC 4514, as above) and subject alternative names.
    pub fn new(subject: impl Into<String>, names: impl IntoIterator<Item = AltName>) -> Self {
        Self {
            subject: subject.into(),
            names: names.into_iter().collect(),
        }
    }

    /// The subject's distinguished name, `CN=...,O=...`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject alternative names.
    pub fn names(&self) -> &[AltName] {
        &self.names
    }

    /// Whether `name` is the subject or one of the DNS names (other kinds of names are matched
    /// through [`names`](Self::names)).
    pub fn is_named(&self, name: &str) -> bool {
        self.subject == name
            || self
                .names
                .iter()
                .any(|n| matches!(n, AltName::Dns(d) if d == name))
    }
}

/// The credentials of the process at the other end of a Unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id, where the platform tells it.
    pub pid: Option<i32>,
}

impl Peer {
    /// The socket address, for IP transports.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Socket(a) | Peer::Tls { addr: a, .. } => Some(*a),
            Peer::Unix { .. } | Peer::Stream(_) => None,
        }
    }

    /// The credentials, for Unix sockets.
    pub fn credentials(&self) -> Option<Credentials> {
        match self {
            Peer::Unix { credentials } => *credentials,
            Peer::Socket(_) | Peer::Stream(_) | Peer::Tls { .. } => None,
        }
    }

    /// The verified certificate, for TLS peers that showed one.
    pub fn certificate(&self) -> Option<&PeerCertificate> {
        match self {
            Peer::Tls { certificate, .. } => certificate.as_deref(),
            Peer::Socket(_) | Peer::Unix { .. } | Peer::Stream(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Socket(a) => fmt::Display::fmt(a, f),
            Peer::Unix {
                credentials: Some(c),
            } => match c.pid {
                Some(pid) => write!(f, "unix:pid={pid},uid={}", c.uid),
                None => write!(f, "unix:uid={}", c.uid),
            },
            Peer::Unix { credentials: None } => f.pad("unix"),
            Peer::Stream(name) => write!(f, "stream:{name}"),
            Peer::Tls {
                addr,
                certificate: None,
            } => write!(f, "tls:{addr}"),
            Peer::Tls {
                addr,
                certificate: Some(c),
            } => write!(f, "tls:{addr} ({})", c.subject),
        }
    }
}

/// Opens a client back to the peer a request came from, over the same socket or connection.
pub trait Origin: Send + Sync + 'static {
    /// A client that calls `peer`, or `None` if the socket or connection is gone.
    fn client(&self, peer: &Peer) -> Option<Client<BoxChannel>>;
}

/// The context of one call: peer, deadline, a way to call the peer back, and typed extensions.
///
/// On the server side a transport fills it in; on the client side the caller sets the deadline.
/// Cloning is cheap.
#[derive(Clone, Default)]
pub struct Context {
    peer: Option<Peer>,
    deadline: Option<Instant>,
    origin: Option<Arc<dyn Origin>>,
    extensions: Extensions,
}

impl Context {
    /// A context for a request from `peer`.
    pub fn from_peer(peer: Peer) -> Self {
        Self {
            peer: Some(peer),
            ..Self::default()
        }
    }

    /// The peer that sent the request, when known.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// The peer's socket address, for IP transports.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_ref().and_then(Peer::socket_addr)
    }

    /// When the call must be done by, if it has a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left before the deadline, if there is one (zero once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Sets the deadline to `timeout` from now, unless an earlier one is already set.
    pub fn set_timeout(&mut self, timeout: Duration) {
        let d = deadline_after(Instant::now(), timeout);
        self.deadline = Some(self.deadline.map_or(d, |old| old.min(d)));
    }

    /// Sets how to call the peer back. Transports do this.
    pub fn set_origin(&mut self, origin: Arc<dyn Origin>) {
        self.origin = Some(origin);
    }

    /// A client that calls the peer this request came from, over the same socket or connection
    /// (symmetric peers: a Kademlia node pinging back, a server calling its client).
    pub fn caller(&self) -> Option<Client<BoxChannel>> {
        self.origin.as_ref()?.client(self.peer.as_ref()?)
    }

    /// Typed values attached by transports and middleware (peer credentials, metadata, ...).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Typed values, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("peer", &self.peer)
            .field("deadline", &self.deadline)
            .field("can_call_back", &self.origin.is_some())
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// A map from type to value; allocates nothing until the first insert.
///
/// ```
/// let mut ext = rpc_core::Extensions::default();
/// ext.insert(7u32);
/// assert_eq!(ext.get::<u32>(), Some(&7));
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    // Behind an `Arc` so an empty `Extensions`, the common case, is one pointer wide in every
    // `Context`, and a copy (a router's state given to each request) is a count, not a map.
    map: Option<Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Extensions {
    /// Inserts a value, replacing any of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        Arc::make_mut(self.map.get_or_insert_with(Default::default))
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// Adds the values of `other` whose types this has none of.
    pub fn extend_from(&mut self, other: &Extensions) {
        let Some(theirs) = &other.map else {
            return;
        };
        match &mut self.map {
            None => self.map = Some(theirs.clone()),
            Some(mine) => {
                let mine = Arc::make_mut(mine);
                for (k, v) in theirs.iter() {
                    mine.entry(*k).or_insert_with(|| v.clone());
                }
            }
        }
    }

    /// The value of type `T`, if any.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map
            .as_ref()?
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(|m| m.is_empty())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.as_ref().map_or(0, |m| m.len()))
            .finish()
    }
}
