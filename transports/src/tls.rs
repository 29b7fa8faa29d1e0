//! RPC over TLS on TCP (feature `tls`): every codec and framing of [`stream`], with the server
//! authenticated by its certificate, secrecy on the wire, and optionally the client authenticated
//! by its own (mutual TLS).
//!
//! TLS is rustls's (TLS 1.3 and 1.2), with its `ring` crypto provider: it builds with a C compiler
//! alone (aws-lc-rs, rustls's default, also needs CMake), and it is the provider rustls has been
//! audited with. Certificates and keys are read from PEM; trust roots from PEM or from the
//! platform's store ([`Roots::platform`]). A client verifies that the server's certificate chains
//! to its roots and names the server it asked for; nothing in rpc-stack turns that off (a program
//! that must can build its own `rustls::ClientConfig` with rustls's `dangerous()` and pass it to
//! [`Address::new`]).
//!
//! ```
//! use rpc_codecs::msgpack::RpcudpCodec;
//! use rpc_core::{Context, Router};
//! use rpc_transports::tls;
//!
//! async fn whoami(ctx: Context) -> String {
//!     // The client's certificate, verified by the handshake.
//!     let cert = ctx.peer().and_then(|p| p.certificate());
//!     cert.map_or("anonymous".into(), |c| c.subject().to_owned())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
//! # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! # let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate()?)?;
//! # let leaf = |name: &str| -> Result<(String, String), rcgen::Error> {
//! #     let key = rcgen::KeyPair::generate()?;
//! #     let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
//! #     params.distinguished_name.push(rcgen::DnType::CommonName, name);
//! #     Ok((params.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
//! # };
//! # let ((server_cert, server_key), (client_cert, client_key)) = (leaf("localhost")?, leaf("billing")?);
//! # let ca_pem = ca.pem();
//! // PEM text, as read from files by `Identity::from_pem_files` and `Roots::from_pem_file`.
//! let roots = tls::Roots::from_pem(ca_pem.as_bytes())?;
//! let server_identity = tls::Identity::from_pem(server_cert.as_bytes(), server_key.as_bytes())?;
//! // Clients must show a certificate that chains to `roots`.
//! let server_config = tls::server_config(server_identity, Some(&roots))?;
//! let server = tls::Builder::new()
//!     .serve(Router::new().route("whoami", whoami))
//!     .bind("127.0.0.1:0", server_config, RpcudpCodec::new())
//!     .await?;
//!
//! let client_identity = tls::Identity::from_pem(client_cert.as_bytes(), client_key.as_bytes())?;
//! let client_config = tls::client_config(&roots, Some(client_identity))?;
//! let to = tls::Address::new(server.local_addr(), "localhost", client_config)?;
//! let client = tls::Builder::new().client(to, RpcudpCodec::new());
//! let me: String = client.call("whoami", ()).await?;
//! assert_eq!(me, "CN=billing");
//! # Ok(())
//! # }
//! ```
//!
//! Handshakes are bounded on the server: each must finish within
//! [`handshake_timeout`](Builder::handshake_timeout) (10 s), at most
//! [`max_handshakes`](Builder::max_handshakes) (1024) run at once and at most
//! [`max_handshakes_per_ip`](Builder::max_handshakes_per_ip) (64) for one IP address; a new
//! connection past either ends the handshake that has waited longest (of its address, or of all).
//! The limits on connections per IP address apply once a handshake is done. Handshakes run beside the accept loop, so a peer
//! that never finishes one holds back nobody. A failed handshake (plaintext sent to a TLS port,
//! an untrusted or missing client certificate) ends that connection only and is counted
//! ([`Stats::handshakes_failed`](crate::Stats::handshakes_failed),
//! [`Stats::handshakes_timed_out`](crate::Stats::handshakes_timed_out)).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::codec::Codec;
use rpc_core::context::{AltName, PeerCertificate};
use rpc_core::{Client, Peer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use rustls;

use crate::stats::{Counters, Event};
use crate::stream::{self, Accept, Io};
use crate::tcp;

/// The TLS transport's own settings: how long a handshake may take and how many may run at once.
#[derive(Debug, Clone, Copy)]
pub struct Tls {
    handshake_timeout: Duration,
    max_handshakes: usize,
    max_handshakes_per_ip: usize,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            max_handshakes_per_ip: 64,
        }
    }
}

/// Configures TLS servers and clients.
pub type Builder = crate::Builder<stream::Stream<Tls>>;

/// A channel to a TLS server.
pub type Channel<C> = stream::Channel<C, Tls>;

/// A running TLS server; see [`stream::Server`].
pub type Server = stream::Server<Tls>;

/// A certificate chain and its private key, read from PEM: who a server (or a client, with mutual
/// TLS) proves to be.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The certificates in `chain_pem` (the end entity's first) and the first private key in
    /// `key_pem` (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> io::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("reading the certificates: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("no certificate in the PEM text"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(format!("reading the private key: {e}")))?;
        Ok(Self { chain, key })
    }

    /// [`from_pem`](Identity::from_pem) of two files.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_pem(&read(chain.as_ref())?, &read(key.as_ref())?)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The certificate authorities a side trusts: a server's certificate (or, on a server, a
/// client's) must chain to one of them.
#[derive(Debug, Clone)]
pub struct Roots(rustls::RootCertStore);

impl Roots {
    /// Every certificate in the PEM text.
    pub fn from_pem(pem: &[u8]) -> io::Result<Self> {
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("reading the certificates: {e}")))?;
            store
                .add(cert)
                .map_err(|e| invalid(format!("a trust root was refused: {e}")))?;
        }
        if store.is_empty() {
            return Err(invalid("no certificate in the PEM text"));
        }
        Ok(Self(store))
    }

    /// [`from_pem`](Roots::from_pem) of a file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_pem(&read(path.as_ref())?)
    }

    /// The platform's trust store (on Linux, the system's CA bundle), through
    /// rustls-native-certs. Certificates the store holds but rustls cannot use are skipped.
    pub fn platform() -> io::Result<Self> {
        let found = rustls_native_certs::load_native_certs();
        let mut store = rustls::RootCertStore::empty();
        let (added, _skipped) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or("the store is empty".to_owned(), ToString::to_string);
            return Err(invalid(format!(
                "no usable certificate in the platform's store: {why}"
            )));
        }
        Ok(Self(store))
    }
}

/// The crypto provider every configuration here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS configuration: TLS 1.3 and 1.2, the server's `identity`, and, with
/// `client_roots`, mutual TLS: every client must show a certificate that chains to one of them.
pub fn server_config(
    identity: Identity,
    client_roots: Option<&Roots>,
) -> io::Result<Arc<rustls::ServerConfig>> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(tls_error)?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots.0.clone()),
                provider(),
            )
            .build()
            .map_err(|e| invalid(format!("the client trust roots: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(identity.chain, identity.key)
        .map_err(tls_error)?;
    Ok(Arc::new(config))
}

/// A client's TLS configuration: TLS 1.3 and 1.2, servers verified against `roots` (chain and
/// name), and with `identity` a client certificate for servers that ask for one.
pub fn client_config(
    roots: &Roots,
    identity: Option<Identity>,
) -> io::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(tls_error)?
        .with_root_certificates(roots.0.clone());
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(tls_error)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Where a TLS client connects: a TCP address, the name the server's certificate must carry, and
/// the client's configuration.
#[derive(Clone)]
pub struct Address {
    tcp: tcp::Address,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    handshake_timeout: Duration,
}

impl Address {
    /// `tcp` is where to connect (a socket address or `"host:port"`); `server_name` the DNS name
    /// or IP address the server's certificate must name.
    pub fn new(
        tcp: impl Into<tcp::Address>,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<Self> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            invalid(format!(
                "{server_name:?} is not a DNS name or an IP address"
            ))
        })?;
        Ok(Self {
            tcp: tcp.into(),
            server_name,
            config,
            handshake_timeout: Tls::default().handshake_timeout,
        })
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Address")
            .field("tcp", &self.tcp)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls://{}", self.tcp)
    }
}

impl stream::Transport for Tls {
    type Addr = Address;
    type Local = SocketAddr;

    async fn connect(addr: &Address) -> io::Result<Io> {
        let tcp = tcp::connect(&addr.tcp).await?;
        let peer_addr = tcp.peer_addr()?;
        let name = addr.server_name.to_str().into_owned();
        let handshake =
            TlsConnector::from(addr.config.clone()).connect(addr.server_name.clone(), tcp);
        let stream = match tokio::time::timeout(addr.handshake_timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("the TLS handshake with {name} failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the TLS handshake with {name} did not finish in {:?}",
                        addr.handshake_timeout
                    ),
                ))
            }
        };
        let certificate = peer_certificate(stream.get_ref().1.peer_certificates());
        Ok(Io::new(stream).with_peer(Peer::Tls {
            addr: peer_addr,
            certificate,
        }))
    }
}

/// The names in the end-entity certificate of a verified chain.
fn peer_certificate(chain: Option<&[CertificateDer<'_>]>) -> Option<Arc<PeerCertificate>> {
    use x509_parser::extensions::GeneralName;
    let der = chain?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = rfc4514(cert.subject());
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            names.extend(match name {
                GeneralName::DNSName(n) => Some(AltName::Dns((*n).to_owned())),
                GeneralName::RFC822Name(n) => Some(AltName::Email((*n).to_owned())),
                GeneralName::URI(n) => Some(AltName::Uri((*n).to_owned())),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                }
                .map(AltName::Ip),
                _ => None,
            });
        }
    }
    Some(Arc::new(PeerCertificate::new(subject, names)))
}

/// A distinguished name as RFC 4514 writes it: its last part first, `+` between the attributes
/// of a part, values escaped, and values that are not strings as `#` and their bytes in hex.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let parts: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let kind = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map_or_else(|_| attr.attr_type().to_id_string(), str::to_owned);
                    let value = match attr.as_str() {
                        Ok(text) => escape_value(text),
                        Err(_) => {
                            let hex: String =
                                attr.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{kind}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// An attribute value escaped as RFC 4514 asks, and control characters as `\XX` (so that a
/// subject in a log line is one line).
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl Builder {
    /// How long a server waits for a connection's handshake, and a client for its own. Default
    /// 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.transport.kind.handshake_timeout = timeout;
        self
    }

    /// How many handshakes a server runs at once. A connection that comes when this many are
    /// running ends the one that has waited longest. Default 1024.
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.transport.kind.max_handshakes = n.max(1);
        self
    }

    /// How many handshakes a server runs at once for one IP address: a connection from an
    /// address with this many under way ends that address's oldest, so one host cannot take
    /// every handshake. Default 64.
    pub fn max_handshakes_per_ip(mut self, n: usize) -> Self {
        self.transport.kind.max_handshakes_per_ip = n.max(1);
        self
    }

    /// Binds a listener and serves TLS connections with `config` (see [`server_config`]) until
    /// the server is shut down or its handle dropped. Must run within a tokio runtime.
    pub async fn bind<C: Codec>(
        self,
        addr: impl ToSocketAddrs,
        config: Arc<rustls::ServerConfig>,
        codec: C,
    ) -> io::Result<Server> {
        let (listener, local_addr) = listen(addr, config, self.transport.kind).await?;
        Ok(self.start_server(listener, codec, local_addr))
    }

    /// A typed client for the TLS server at `addr`; it connects on its first call.
    pub fn client<C: Codec>(self, addr: Address, codec: C) -> Client<Channel<C>> {
        self.channel(addr, codec).into_client()
    }

    /// A channel (a `tower::Service`) to the TLS server at `addr`.
    pub fn channel<C: Codec>(self, mut addr: Address, codec: C) -> Channel<C> {
        addr.handshake_timeout = self.transport.kind.handshake_timeout;
        stream::Channel::new(self, addr, codec)
    }
}

/// Binds a TLS listener with `settings`.
pub(crate) async fn listen(
    addr: impl ToSocketAddrs,
    config: Arc<rustls::ServerConfig>,
    settings: Tls,
) -> io::Result<(Listener, SocketAddr)> {
    let tcp = TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    Ok((
        Listener::Bound {
            tcp,
            acceptor: TlsAcceptor::from(config),
            settings,
        },
        local,
    ))
}

/// A TLS listener: bound, then running its handshakes beside the server's accept loop, which
/// takes the connections whose handshake is done.
pub(crate) enum Listener {
    Bound {
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        settings: Tls,
    },
    Running {
        done: mpsc::Receiver<Io>,
        _handshakes: AbortOnDrop,
    },
    /// Between the two, for the moment it takes to start.
    Starting,
}

impl Accept for Listener {
    fn attach(&mut self, counters: &Arc<Counters>) {
        match std::mem::replace(self, Listener::Starting) {
            Listener::Bound {
                tcp,
                acceptor,
                settings,
            } => {
                // Room for a burst of finished handshakes; past it, they wait for the accept
                // loop.
                let (tx, done) = mpsc::channel(64);
                let task = tokio::spawn(handshakes(tcp, acceptor, settings, counters.clone(), tx));
                *self = Listener::Running {
                    done,
                    _handshakes: AbortOnDrop(task.abort_handle()),
                };
            }
            running => *self = running,
        }
    }

    async fn accept(&mut self) -> io::Result<Io> {
        if matches!(self, Listener::Bound { .. }) {
            self.attach(&Arc::new(Counters::default()));
        }
        match self {
            Listener::Running { done, .. } => done
                .recv()
                .await
                .ok_or_else(|| io::Error::other("the TLS listener's handshakes stopped")),
            Listener::Bound { .. } | Listener::Starting => {
                Err(io::Error::other("the TLS listener did not start"))
            }
        }
    }
}

/// Aborts a task when dropped: the listener's handshakes go with it.
pub(crate) struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handshake under way: its task, and whether its handshake is over (the task may still be
/// handing the connection over, or lingering after a failure: neither is ended to make room).
#[derive(Clone)]
struct Running {
    task: AbortHandle,
    over: Arc<AtomicBool>,
}

impl Running {
    fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed) || self.task.is_finished()
    }
}

/// The handshakes under way, oldest first, in all and by IP address.
#[derive(Default)]
struct Handshakes {
    all: VecDeque<Running>,
    by_ip: HashMap<IpAddr, VecDeque<Running>>,
}

impl Handshakes {
    /// Lets go of the handshakes that are over (each handle keeps its task's memory): at the
    /// front at once, the rest once they are many, so both lists stay within a small multiple of
    /// the number under way.
    fn forget_finished(&mut self, max: usize) {
        while self.all.front().is_some_and(Running::is_over) {
            self.all.pop_front();
        }
        if self.all.len() > 2 * max {
            self.all.retain(|h| !h.is_over());
        }
        if self.by_ip.len() > 2 * max {
            self.by_ip.retain(|_, q| {
                q.retain(|h| !h.is_over());
                !q.is_empty()
            });
        }
    }

    /// Makes room for one more from `ip`: past `per_ip` under way from it, its oldest ends; past
    /// `max` in all, the oldest of all. Returns how many were ended.
    fn make_room(&mut self, ip: IpAddr, max: usize, per_ip: usize) -> u64 {
        let mut ended = 0;
        let mine = self.by_ip.entry(ip).or_default();
        mine.retain(|h| !h.is_over());
        if mine.len() >= per_ip {
            if let Some(oldest) = mine.pop_front() {
                oldest.task.abort();
                ended += 1;
            }
        }
        self.all.retain(|h| !h.is_over());
        if self.all.len() >= max {
            if let Some(oldest) = self.all.pop_front() {
                oldest.task.abort();
                ended += 1;
            }
        }
        ended
    }

    fn add(&mut self, ip: IpAddr, handshake: Running) {
        self.by_ip
            .entry(ip)
            .or_default()
            .push_back(handshake.clone());
        self.all.push_back(handshake);
    }
}

/// Accepts TCP connections and runs their handshakes, each in a task of its own, bounded in time
/// and in number, in all and from each IP address; sends the connections whose handshake is done
/// to `done`.
async fn handshakes(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    settings: Tls,
    counters: Arc<Counters>,
    done: mpsc::Sender<Io>,
) {
    let mut tasks = JoinSet::new();
    let mut under_way = Handshakes::default();
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            // Reaps finished tasks, so the set holds only running ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (socket, addr) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        under_way.forget_finished(settings.max_handshakes);
        let ended = under_way.make_room(
            addr.ip(),
            settings.max_handshakes,
            settings.max_handshakes_per_ip,
        );
        if ended > 0 {
            counters.record_n(Event::HandshakeTimedOut, ended);
            tracing::debug!(%addr, "too many handshakes at once: ended the oldest");
        }
        let over = Arc::new(AtomicBool::new(false));
        let task = tasks.spawn(handshake(
            socket,
            addr,
            acceptor.clone(),
            settings.handshake_timeout,
            counters.clone(),
            done.clone(),
            over.clone(),
        ));
        under_way.add(addr.ip(), Running { task, over });
    }
}

/// One server-side handshake.
async fn handshake(
    socket: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    timeout: Duration,
    counters: Arc<Counters>,
    done: mpsc::Sender<Io>,
    over: Arc<AtomicBool>,
) {
    let result = tokio::time::timeout(timeout, acceptor.accept(socket).into_fallible()).await;
    // Past this point the task is not ended to make room for others.
    over.store(true, Ordering::Relaxed);
    match result {
        Ok(Ok(stream)) => {
            let certificate = peer_certificate(stream.get_ref().1.peer_certificates());
            let io = Io::new(stream).with_peer(Peer::Tls { addr, certificate });
            let _ = done.send(io).await;
        }
        Ok(Err((error, mut socket))) => {
            counters.record(Event::HandshakeFailed);
            tracing::debug!(%addr, %error, "TLS handshake failed");
            // The alert that says why is sent; the socket is shut down for writing and what
            // the peer sent after it (a first request, say) is read away for a moment, so that
            // closing does not reset the connection and lose the alert before the peer reads it.
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
            let mut rest = tokio::io::AsyncReadExt::take(&mut socket, LINGER_BYTES);
            let mut nowhere = tokio::io::sink();
            let _ = tokio::time::timeout(LINGER, tokio::io::copy(&mut rest, &mut nowhere)).await;
        }
        Err(_) => {
            counters.record(Event::HandshakeTimedOut);
            tracing::debug!(%addr, ?timeout, "TLS handshake did not finish in time");
        }
    }
}

/// How long, and for how many bytes, a connection whose handshake failed is read away before it
/// is closed: long enough for a peer on a busy machine to read the alert before a request it
/// sends late meets a closed socket (whose reset would lose the alert).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 64 * 1024;

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.into())
}

fn tls_error(e: rustls::Error) -> io::Error {
    invalid(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject_of(edit: impl FnOnce(&mut rcgen::DistinguishedName)) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        edit(&mut params.distinguished_name);
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a certificate");
        peer_certificate(Some(&[cert.der().clone()]))
            .expect("parsed")
            .subject()
            .to_owned()
    }

    #[test]
    fn subjects_are_written_as_rfc_4514_and_cannot_pass_for_one_another() {
        let two = subject_of(|dn| {
            dn.push(rcgen::DnType::OrganizationName, "Acme");
            dn.push(rcgen::DnType::CommonName, "admin");
        });
        // The most specific part first.
        assert_eq!(two, "CN=admin,O=Acme");
        // One attribute whose value reads like two.
        let one = subject_of(|dn| dn.push(rcgen::DnType::CommonName, "admin,O=Acme"));
        assert_eq!(one, "CN=admin\\,O=Acme");
        assert_ne!(one, two);
        let odd = subject_of(|dn| dn.push(rcgen::DnType::CommonName, "#x \\ \"y\"\nz "));
        assert_eq!(odd, "CN=\\#x \\\\ \\\"y\\\"\\0Az\\ ");
    }
}
