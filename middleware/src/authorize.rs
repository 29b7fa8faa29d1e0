//! Authorization: allow or refuse each call by who calls, what it calls and where from.
//!
//! An [`AuthorizeLayer`] holds rules; a call runs if any rule allows it, and is otherwise
//! answered [`ErrorCode::NOT_AUTHORIZED`] (-32004, marked refused: it did not run), distinct from
//! "method not found" (the method may exist) and from "overloaded". A rule names a caller (anyone,
//! a verified TLS certificate by its subject or one of its alternative names, a Unix socket peer
//! by uid or gid), optionally the methods it may call (names, `prefix.*` for a namespace, command
//! ids) and the IP networks it may call from. Who a caller is comes from the transport: TLS's
//! verified client certificate ([`Peer::certificate`]) and Unix sockets' peer credentials
//! ([`Peer::credentials`]); nothing a caller sends in a request is trusted for it.
//!
//! ```
//! use rpc_core::context::{AltName, PeerCertificate};
//! use rpc_core::{Context, ErrorCode, Peer, Request, Router};
//! use rpc_middleware::authorize::{AuthorizeLayer, Rule};
//! use tower::{Layer, ServiceExt};
//!
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = AuthorizeLayer::new()
//!     // Anyone may call `status`, from loopback.
//!     .allow(Rule::anyone().method("status").from_network("127.0.0.0/8")?)
//!     // The billing service's certificate may call everything under `billing.`.
//!     .allow(Rule::certificate("billing.internal").method("billing.*"));
//! let svc = policy.layer(Router::new().route("billing.add", add));
//!
//! let billing = Peer::Tls {
//!     addr: "127.0.0.1:5000".parse()?,
//!     certificate: Some(
//!         PeerCertificate::new("CN=billing", [AltName::Dns("billing.internal".into())]).into(),
//!     ),
//! };
//! let call = |peer: Peer| {
//!     let args = rpc_core::Payload::encode(&rpc_core::msgpack::MsgPack, &(1, 2))?;
//!     let mut req = Request::new("billing.add", args);
//!     *req.context_mut() = Context::from_peer(peer);
//!     Ok::<_, rpc_core::Error>(req)
//! };
//! let answer = svc.clone().oneshot(call(billing)?).await?;
//! assert!(answer.result().is_ok());
//!
//! let stranger = Peer::Socket("127.0.0.1:5001".parse()?);
//! let answer = svc.oneshot(call(stranger)?).await?;
//! assert_eq!(answer.result().unwrap_err().code(), ErrorCode::NOT_AUTHORIZED);
//! # Ok(())
//! # }
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::Either;
use rpc_core::{ErrorCode, Method, Peer, Request, ServerError, Service};
use tower::Layer;

use crate::Reject;

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Anyone,
    /// A verified TLS certificate whose subject or an alternative name is this.
    Certificate(String),
    Uid(u32),
    Gid(u32),
}

/// What a rule allows to be called.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Callable {
    Name(String),
    /// Names that begin with this (a rule's `prefix.*`).
    Prefix(String),
    Id(u16),
}

/// An IP network: an address and how many of its leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    fn parse(s: &str) -> Result<Self, InvalidNetwork> {
        let bad = || InvalidNetwork(s.to_owned());
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer seen through an IPv6 socket is the IPv4 address it maps.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = |a: u128, b: u128, width: u32| {
            let shift = width - u32::from(self.bits);
            shift >= width || (a >> shift) == (b >> shift)
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix(u32::from(n).into(), u32::from(a).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix(u128::from(n), u128::from(a), 128),
            _ => false,
        }
    }
}

/// A string that is not an IP network (`ADDRESS` or `ADDRESS/BITS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNetwork(String);

impl std::fmt::Display for InvalidNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not an IP network (ADDRESS or ADDRESS/BITS, as 10.0.0.0/8)",
            self.0
        )
    }
}

impl std::error::Error for InvalidNetwork {}

/// One rule: a caller, and optionally the methods it may call and the networks it may call from.
/// With no methods named, every method; with no networks, from anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    who: Who,
    methods: Vec<Callable>,
    networks: Vec<Network>,
}

impl Rule {
    fn new(who: Who) -> Self {
        Self {
            who,
            methods: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// Any caller, authenticated or not.
    pub fn anyone() -> Self {
        Self::new(Who::Anyone)
    }

    /// A caller whose verified TLS certificate has `name` as its subject (`CN=billing,O=Acme`,
    /// RFC 4514, as [`PeerCertificate::subject`](rpc_core::context::PeerCertificate::subject)
    /// writes it) or as one of its DNS names
    /// ([`PeerCertificate::is_named`](rpc_core::context::PeerCertificate::is_named)).
    pub fn certificate(name: impl Into<String>) -> Self {
        Self::new(Who::Certificate(name.into()))
    }

    /// A caller over a Unix socket running as user `uid`.
    pub fn uid(uid: u32) -> Self {
        Self::new(Who::Uid(uid))
    }

    /// A caller over a Unix socket running with group `gid`.
    pub fn gid(gid: u32) -> Self {
        Self::new(Who::Gid(gid))
    }

    /// Allows the method `name`; `prefix.*` allows every method whose name begins with
    /// `prefix.`, and `*` every method called by name (not basic-socket-rpc's command ids: see
    /// [`command`](Self::command)). Each call adds to the methods allowed; a rule that names
    /// none allows every method.
    pub fn method(mut self, name: &str) -> Self {
        self.methods.push(match name.strip_suffix('*') {
            Some(prefix) => Callable::Prefix(prefix.to_owned()),
            None => Callable::Name(name.to_owned()),
        });
        self
    }

    /// Allows the command `id` (basic-socket-rpc's numeric methods).
    pub fn command(mut self, id: u16) -> Self {
        self.methods.push(Callable::Id(id));
        self
    }

    /// Allows calls from the IP network `network` (`10.0.0.0/8`, `::1`, ...) only; each call
    /// adds a network. Callers with no IP address (Unix sockets, streams) are outside every
    /// network.
    pub fn from_network(mut self, network: &str) -> Result<Self, InvalidNetwork> {
        self.networks.push(Network::parse(network)?);
        Ok(self)
    }

    fn allows(&self, peer: Option<&Peer>, method: &Method) -> bool {
        let who = match &self.who {
            Who::Anyone => true,
            Who::Certificate(name) => peer
                .and_then(Peer::certificate)
                .is_some_and(|c| c.is_named(name)),
            Who::Uid(uid) => peer
                .and_then(Peer::credentials)
                .is_some_and(|c| c.uid == *uid),
            Who::Gid(gid) => peer
                .and_then(Peer::credentials)
                .is_some_and(|c| c.gid == *gid),
        };
        let what = self.methods.is_empty()
            || self.methods.iter().any(|m| match (m, method) {
                (Callable::Name(n), Method::Name(name)) => n == name.as_str(),
                (Callable::Prefix(p), Method::Name(name)) => name.as_str().starts_with(p.as_str()),
                (Callable::Id(i), Method::Id(id)) => i == id,
                _ => false,
            });
        let from = self.networks.is_empty()
            || peer
                .and_then(Peer::socket_addr)
                .is_some_and(|a| self.networks.iter().any(|n| n.contains(a.ip())));
        who && what && from
    }
}

/// Allows a call when one of its rules does, and refuses it otherwise with
/// [`ErrorCode::NOT_AUTHORIZED`]. With no rules, every call is refused.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeLayer {
    rules: Arc<Vec<Rule>>,
}

impl AuthorizeLayer {
    /// A policy that allows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule.
    pub fn allow(mut self, rule: Rule) -> Self {
        Arc::make_mut(&mut self.rules).push(rule);
        self
    }

    /// Whether the rules allow a call of `method` from `peer`.
    pub fn allows(&self, peer: Option<&Peer>, method: &Method) -> bool {
        self.rules.iter().any(|r| r.allows(peer, method))
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            policy: self.clone(),
        }
    }
}

/// Refuses the calls its policy does not allow; see [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: AuthorizeLayer,
}

impl<S> Service<Request> for Authorize<S>
where
    S: Service<Request>,
    S::Response: Reject<S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.policy.allows(req.context().peer(), req.method()) {
            return Either::Left(self.inner.call(req));
        }
        tracing::debug!(peer = ?req.context().peer(), method = %req.method(), "not authorized");
        let code = ErrorCode::NOT_AUTHORIZED;
        let refusal =
            ServerError::refused(code, code.default_message().unwrap_or("not authorized"));
        Either::Right(std::future::ready(S::Response::reject(refusal)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::context::{AltName, Credentials, PeerCertificate};

    fn tls(ip: &str, cert: Option<(&str, &[&str])>) -> Peer {
        Peer::Tls {
            addr: format!("{ip}:4000").parse().unwrap(),
            certificate: cert.map(|(s, n)| {
                let names = n.iter().map(|d| AltName::Dns((*d).to_owned()));
                Arc::new(PeerCertificate::new(s, names))
            }),
        }
    }

    fn unix(uid: u32, gid: u32) -> Peer {
        Peer::Unix {
            credentials: Some(Credentials {
                uid,
                gid,
                pid: None,
            }),
        }
    }

    #[test]
    fn rules_match_by_identity_method_and_network() {
        let policy = AuthorizeLayer::new()
            .allow(Rule::certificate("CN=admin"))
            .allow(
                Rule::certificate("billing.internal")
                    .method("billing.*")
                    .method("ping"),
            )
            .allow(Rule::uid(1000).command(3))
            .allow(Rule::gid(50).method("status"))
            .allow(
                Rule::anyone()
                    .method("health")
                    .from_network("10.0.0.0/8")
                    .unwrap(),
            );
        let m = |n: &str| Method::named(n);
        let admin = tls("192.0.2.1", Some(("CN=admin", &[])));
        let billing = tls("192.0.2.2", Some(("CN=billing", &["billing.internal"])));
        let anonymous = tls("10.1.2.3", None);
        assert!(policy.allows(Some(&admin), &m("anything")));
        assert!(policy.allows(Some(&admin), &Method::Id(9)));
        assert!(policy.allows(Some(&billing), &m("billing.charge")));
        assert!(policy.allows(Some(&billing), &m("ping")));
        assert!(!policy.allows(Some(&billing), &m("admin.drop")));
        assert!(
            !policy.allows(Some(&billing), &m("billing")),
            "the prefix is `billing.`"
        );
        assert!(policy.allows(Some(&anonymous), &m("health")));
        assert!(!policy.allows(Some(&tls("11.0.0.1", None)), &m("health")));
        assert!(!policy.allows(Some(&anonymous), &m("ping")));
        assert!(policy.allows(Some(&unix(1000, 1)), &Method::Id(3)));
        assert!(!policy.allows(Some(&unix(1000, 1)), &Method::Id(4)));
        assert!(!policy.allows(Some(&unix(1001, 1)), &Method::Id(3)));
        assert!(policy.allows(Some(&unix(7, 50)), &m("status")));
        assert!(!policy.allows(None, &m("health")), "no peer: no network");
        // A Unix peer is in no IP network, and a plain socket shows no certificate.
        let plain = Peer::Socket("192.0.2.1:1".parse().unwrap());
        assert!(!policy.allows(Some(&plain), &m("anything")));
        assert!(
            !AuthorizeLayer::new().allows(Some(&admin), &m("x")),
            "no rules: nothing"
        );
    }

    #[test]
    fn networks_parse_and_match() {
        let n = |s: &str| Network::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(n("127.0.0.0/8").contains(ip("127.200.0.1")));
        assert!(!n("127.0.0.0/8").contains(ip("128.0.0.1")));
        assert!(n("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(n("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!n("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(n("::1").contains(ip("::1")));
        assert!(n("fd00::/8").contains(ip("fd12::1")));
        assert!(!n("fd00::/8").contains(ip("127.0.0.1")));
        assert!(
            n("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")),
            "a mapped IPv4 address"
        );
        for bad in ["", "10.0.0.0/33", "::/129", "host/8", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
