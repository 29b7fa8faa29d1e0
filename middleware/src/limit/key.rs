//! What a limit is keyed by.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use rpc_core::{Peer, Request};

/// Takes the key a limit applies to from a request.
pub trait KeyFn: Clone + Send + Sync + 'static {
    /// The key.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// The key of `req`.
    fn key(&self, req: &Request) -> Self::Key;

    /// Whose calls a key counts, for refusals: "from this peer", "in all"; "for this key"
    /// unless the key says.
    fn scope(&self) -> &'static str {
        "for this key"
    }
}

/// One limit for everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyFn for Global {
    type Key = ();
    fn key(&self, _: &Request) {}
    fn scope(&self) -> &'static str {
        "in all"
    }
}

/// A limit per peer: per socket address (for IP transports) or per process (Unix sockets).
///
/// Over TCP each connection has a port of its own, so a client that opens more connections
/// gets more of a per-peer budget; [`ByIp`] counts a host once, whatever its ports.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByPeer;

/// A limit per IP address: a host's connections and source ports share it. Requests from Unix
/// sockets (and with no peer) share one key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByIp;

impl KeyFn for ByIp {
    type Key = Option<IpAddr>;
    fn key(&self, req: &Request) -> Option<IpAddr> {
        req.context().peer_addr().map(|a| a.ip())
    }
    fn scope(&self) -> &'static str {
        "from this IP address"
    }
}

impl KeyFn for ByPeer {
    type Key = PeerKey;
    fn key(&self, req: &Request) -> PeerKey {
        PeerKey(req.context().peer().cloned())
    }
    fn scope(&self) -> &'static str {
        "from this peer"
    }
}

/// A limit per identity, as the transport verified it: a TLS client certificate (by its
/// subject), a Unix socket peer (by uid); callers that proved nothing count by IP address
/// ([`ByIp`]). A client that opens more connections or ports gets no more of its budget.
///
/// ```
/// use std::time::Duration;
/// use rpc_middleware::limit::{KeyedConcurrencyLimitLayer, RateLimitLayer};
///
/// // 100 calls a second for each client certificate, 8 at once.
/// let rate = RateLimitLayer::per_identity(100, Duration::from_secs(1));
/// let concurrency = KeyedConcurrencyLimitLayer::per_identity(8);
/// # let _ = (rate, concurrency);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ByIdentity;

/// Who a caller proved to be, as a limit's key ([`ByIdentity`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    /// A verified TLS client certificate's subject.
    Certificate(String),
    /// A Unix socket peer's user id.
    Uid(u32),
    /// A caller that proved nothing, by IP address (`None`: no address either).
    Ip(Option<IpAddr>),
}

impl KeyFn for ByIdentity {
    type Key = IdentityKey;
    fn key(&self, req: &Request) -> IdentityKey {
        let peer = req.context().peer();
        if let Some(cert) = peer.and_then(Peer::certificate) {
            return IdentityKey::Certificate(cert.subject().to_owned());
        }
        if let Some(c) = peer.and_then(Peer::credentials) {
            return IdentityKey::Uid(c.uid);
        }
        IdentityKey::Ip(req.context().peer_addr().map(|a| a.ip()))
    }
    fn scope(&self) -> &'static str {
        "for this caller"
    }
}

/// A peer as a limit's key ([`ByPeer`]); requests with no peer share one key.
///
/// It hashes in two words rather than field by field: limits hash a key on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerKey(pub Option<Peer>);

impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal keys give equal words; flow info and scope id of IPv6 addresses are left out
        // (allowed: they only make more keys equal in hash than in `Eq`).
        let (a, b): (u128, u64) = match &self.0 {
            None => (0, 0),
            Some(Peer::Socket(SocketAddr::V4(v4))) => {
                (u32::from(*v4.ip()).into(), 1 << 32 | u64::from(v4.port()))
            }
            Some(Peer::Socket(SocketAddr::V6(v6))) => {
                (u128::from(*v6.ip()), 2 << 32 | u64::from(v6.port()))
            }
            // A TLS peer by its address, as a socket's (its certificate only makes the key
            // unequal, never the hash).
            Some(Peer::Tls { addr, .. }) => match addr {
                SocketAddr::V4(v4) => (u32::from(*v4.ip()).into(), 6 << 32 | u64::from(v4.port())),
                SocketAddr::V6(v6) => (u128::from(*v6.ip()), 7 << 32 | u64::from(v6.port())),
            },
            Some(Peer::Unix { credentials }) => match credentials {
                Some(c) => (
                    u128::from(c.uid) << 64
                        | u128::from(c.gid) << 32
                        | u128::from(c.pid.unwrap_or(-1) as u32),
                    3 << 32,
                ),
                None => (0, 4 << 32),
            },
            // Other kinds of peers (the enum is open) share a slot by kind alone.
            Some(_) => (0, 5 << 32),
        };
        state.write_u128(a);
        state.write_u64(b);
    }
}

impl<F, K> KeyFn for F
where
    F: Fn(&Request) -> K + Clone + Send + Sync + 'static,
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    type Key = K;
    fn key(&self, req: &Request) -> K {
        self(req)
    }
}
