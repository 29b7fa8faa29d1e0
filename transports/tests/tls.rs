//! TLS over TCP with certificates made here (rcgen): server-only and mutual TLS, what each side
//! refuses (an unknown CA, an expired certificate, a name mismatch, a missing client
//! certificate), the peer's identity in the context, plaintext and TLS on the wrong port, and
//! connections that never finish a handshake. All on loopback, every wait bounded.
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Context, Error, Router};
use rpc_transports::stream::Framing;
use rpc_transports::{raw, tcp, tls};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// A certificate authority of the test's own, and certificates it signs.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    fn identity(&self) -> tls::Identity {
        tls::Identity::from_pem(self.cert.as_bytes(), self.key.as_bytes()).expect("an identity")
    }
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("a key");
        Self {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).expect("a CA"),
        }
    }

    fn roots(&self) -> tls::Roots {
        tls::Roots::from_pem(self.ca.pem().as_bytes()).expect("roots")
    }

    /// A certificate for `names` (its alternative names), with the common name `cn`.
    fn leaf(&self, cn: &str, names: &[&str]) -> Leaf {
        self.leaf_with(cn, names, |_| {})
    }

    fn leaf_with(
        &self,
        cn: &str,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        edit(&mut params);
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// The caller's certificate subject and names, or "anonymous".
async fn whoami(ctx: Context) -> (String, Vec<String>) {
    match ctx.peer().and_then(|p| p.certificate()) {
        Some(c) => (
            c.subject().to_owned(),
            c.names().iter().map(ToString::to_string).collect(),
        ),
        None => ("anonymous".to_owned(), Vec::new()),
    }
}

fn router() -> Router {
    Router::new().route("add", add).route("whoami", whoami)
}

async fn server(pki: &Pki, client_roots: Option<&tls::Roots>) -> tls::Server {
    let config = tls::server_config(pki.leaf("server", &["localhost"]).identity(), client_roots)
        .expect("a server config");
    tls::Builder::new()
        .serve(router())
        .bind("127.0.0.1:0", config, RpcudpCodec::new())
        .await
        .expect("bound")
}

fn client(
    server: &tls::Server,
    name: &str,
    roots: &tls::Roots,
    identity: Option<tls::Identity>,
) -> rpc_core::Client<tls::Channel<RpcudpCodec>> {
    let config = tls::client_config(roots, identity).expect("a client config");
    let to = tls::Address::new(server.local_addr(), name, config).expect("an address");
    tls::Builder::new()
        .timeout(Duration::from_secs(5))
        .client(to, RpcudpCodec::new())
}

/// The text of a failed call's error, its sources included.
fn failure(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test]
async fn server_only_tls_serves_and_the_handler_sees_a_peer_without_certificate() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let server = server(&pki, None).await;
        let c = client(&server, "localhost", &pki.roots(), None);
        let sum: i64 = c.call("add", (2, 40)).await.expect("answered");
        assert_eq!(sum, 42);
        let (who, _): (String, Vec<String>) = c.call("whoami", ()).await.expect("answered");
        assert_eq!(who, "anonymous");
        assert_eq!(server.stats().handshakes_failed, 0);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn mutual_tls_gives_the_handler_the_clients_subject_and_names() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let roots = pki.roots();
        let server = server(&pki, Some(&roots)).await;
        let me = pki.leaf("billing", &["billing.internal", "127.0.0.7"]);
        let c = client(&server, "localhost", &roots, Some(me.identity()));
        let (who, names): (String, Vec<String>) = c.call("whoami", ()).await.expect("answered");
        assert_eq!(who, "CN=billing");
        assert_eq!(names, ["DNS:billing.internal", "IP:127.0.0.7"]);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused_and_says_so() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let server = server(&pki, None).await;
        let other = Pki::new("another CA");
        let c = client(&server, "localhost", &other.roots(), None);
        let e = c.call::<i64>("add", (1, 2)).await.expect_err("refused");
        let text = failure(&e);
        assert!(matches!(e, Error::Transport(_)), "{text}");
        assert!(
            text.contains("invalid peer certificate: UnknownIssuer"),
            "{text}"
        );
        // The server saw the client give up.
        eventually("the failed handshake counted", || {
            server.stats().handshakes_failed == 1
        })
        .await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_and_says_so() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let old = pki.leaf_with("server", &["localhost"], |p| {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        });
        let config = tls::server_config(old.identity(), None).expect("a config");
        let server = tls::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", config, RpcudpCodec::new())
            .await
            .expect("bound");
        let c = client(&server, "localhost", &pki.roots(), None);
        let e = c.call::<i64>("add", (1, 2)).await.expect_err("refused");
        assert!(
            failure(&e).contains("certificate expired"),
            "{}",
            failure(&e)
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused_and_says_so() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let server = server(&pki, None).await;
        let c = client(&server, "billing.internal", &pki.roots(), None);
        let e = c.call::<i64>("add", (1, 2)).await.expect_err("refused");
        assert!(
            failure(&e).contains("not valid for name \"billing.internal\""),
            "{}",
            failure(&e)
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_by_a_mutual_tls_server() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let roots = pki.roots();
        let server = server(&pki, Some(&roots)).await;
        let c = client(&server, "localhost", &roots, None);
        let e = c.call::<i64>("add", (1, 2)).await.expect_err("refused");
        // Under TLS 1.3 the client's side of the handshake ends before the server has judged its
        // certificate: the refusal comes as the server's alert, on the first read.
        let text = failure(&e);
        assert!(matches!(e, Error::Transport(_)), "{text}");
        assert!(text.contains("CertificateRequired"), "{text}");
        eventually("the failed handshake counted", || {
            server.stats().handshakes_failed == 1
        })
        .await;
        // A client with a certificate from another CA is refused too.
        let other = Pki::new("another CA").leaf("intruder", &[]);
        let c = client(&server, "localhost", &roots, Some(other.identity()));
        let e = c.call::<i64>("add", (1, 2)).await.expect_err("refused");
        assert!(matches!(e, Error::Transport(_)), "{}", failure(&e));
        eventually("the second failed handshake counted", || {
            server.stats().handshakes_failed == 2
        })
        .await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn plaintext_to_a_tls_port_ends_that_connection_only() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let server = server(&pki, None).await;
        let plain = tcp::Builder::new()
            .timeout(Duration::from_secs(2))
            .client(server.local_addr(), RpcudpCodec::new());
        let e = plain.call::<i64>("add", (1, 2)).await.expect_err("refused");
        assert!(matches!(e, Error::Transport(_)), "{}", failure(&e));
        eventually("the failed handshake counted", || {
            server.stats().handshakes_failed == 1
        })
        .await;
        let c = client(&server, "localhost", &pki.roots(), None);
        assert_eq!(c.call::<i64>("add", (1, 2)).await.expect("answered"), 3);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn tls_to_a_plaintext_port_ends_that_connection_only() {
    timeout(LIMIT, async {
        let plain = tcp::Builder::new()
            .serve(router())
            .bind("127.0.0.1:0", RpcudpCodec::new())
            .await
            .expect("bound");
        let pki = Pki::new("test CA");
        let config = tls::client_config(&pki.roots(), None).expect("a config");
        let to = tls::Address::new(plain.local_addr(), "localhost", config).expect("an address");
        let c = tls::Builder::new()
            .handshake_timeout(Duration::from_secs(2))
            .client(to, RpcudpCodec::new());
        let e = c.call::<i64>("add", (1, 2)).await.expect_err("refused");
        assert!(matches!(e, Error::Transport(_)), "{}", failure(&e));
        // The ClientHello read as a length prefix is over the frame limit.
        eventually("the bad frame counted", || plain.stats().bad_frames == 1).await;
        let good = tcp::Builder::new().client(plain.local_addr(), RpcudpCodec::new());
        assert_eq!(good.call::<i64>("add", (1, 2)).await.expect("answered"), 3);
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_connections_that_never_handshake_hold_back_no_one() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let config = tls::server_config(pki.leaf("server", &["localhost"]).identity(), None)
            .expect("a config");
        // Handshakes may take all of the test's time: only the number running is bounded here.
        let server = tls::Builder::new()
            .handshake_timeout(Duration::from_secs(60))
            .max_handshakes(256)
            .serve(router())
            .bind("127.0.0.1:0", config, RpcudpCodec::new())
            .await
            .expect("bound");
        // Thirty from each of ten hosts (127.0.0.2 to .11), each under its share.
        let mut silent = Vec::new();
        for i in 0..300u16 {
            let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 10) as u8);
            silent.push(connect_from(from, server.local_addr()).await);
        }
        // Half of a ClientHello from some of them: a handshake begun and never finished.
        for s in silent.iter_mut().step_by(3) {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .expect("written");
        }
        // Fresh clients, each its own connection and handshake, answered at once.
        for i in 0..20 {
            let c = client(&server, "localhost", &pki.roots(), None);
            let started = tokio::time::Instant::now();
            let sum: i64 = timeout(Duration::from_secs(2), c.call("add", (i, 1)))
                .await
                .expect("answered in time")
                .expect("answered");
            assert_eq!(sum, i + 1);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        }
        // Past 256 handshakes running, the oldest were ended to make room: at least 300 - 256.
        eventually("the oldest handshakes ended", || {
            server.stats().handshakes_timed_out >= 300 - 256
        })
        .await;
        drop(silent);
    })
    .await
    .expect("in time");
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(std::net::SocketAddr::new(from.into(), 0))
        .expect("bound");
    socket.connect(to).await.expect("connected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_take_every_handshake() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let config = tls::server_config(pki.leaf("server", &["localhost"]).identity(), None)
            .expect("a config");
        let server = tls::Builder::new()
            .handshake_timeout(Duration::from_secs(60))
            .max_handshakes(64)
            .max_handshakes_per_ip(16)
            .serve(router())
            .bind("127.0.0.1:0", config, RpcudpCodec::new())
            .await
            .expect("bound");
        // One host opens 100 connections and never handshakes: it keeps 16 at most.
        let mut silent = Vec::new();
        for _ in 0..100 {
            silent.push(connect_from([127, 0, 0, 2].into(), server.local_addr()).await);
        }
        eventually("the host's oldest handshakes ended", || {
            server.stats().handshakes_timed_out >= 100 - 16
        })
        .await;
        // Another host is served at once.
        let c = client(&server, "localhost", &pki.roots(), None);
        let sum: i64 = timeout(Duration::from_secs(2), c.call("add", (1, 1)))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(sum, 2);
        drop(silent);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_in_time_is_ended_and_counted() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let config = tls::server_config(pki.leaf("server", &["localhost"]).identity(), None)
            .expect("a config");
        let server = tls::Builder::new()
            .handshake_timeout(Duration::from_millis(200))
            .serve(router())
            .bind("127.0.0.1:0", config, RpcudpCodec::new())
            .await
            .expect("bound");
        let mut silent = TcpStream::connect(server.local_addr())
            .await
            .expect("connected");
        eventually("the handshake timed out", || {
            server.stats().handshakes_timed_out == 1
        })
        .await;
        // The server closed it.
        let mut buf = [0u8; 8];
        let n = timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
        )
        .await
        .expect("closed in time")
        .unwrap_or(0);
        assert_eq!(n, 0);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn json_rpc_with_newline_framing_over_tls() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let config = tls::server_config(pki.leaf("server", &["localhost"]).identity(), None)
            .expect("a config");
        let server = tls::Builder::new()
            .framing(Framing::Newline)
            .serve(router())
            .bind("127.0.0.1:0", config, JsonRpcCodec::new())
            .await
            .expect("bound");
        let config = tls::client_config(&pki.roots(), None).expect("a config");
        let to = tls::Address::new(server.local_addr(), "localhost", config).expect("an address");
        let c = tls::Builder::new()
            .framing(Framing::Newline)
            .client(to, JsonRpcCodec::new());
        assert_eq!(c.call::<i64>("add", (20, 22)).await.expect("answered"), 42);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn basic_socket_rpc_over_tls() {
    timeout(LIMIT, async {
        let pki = Pki::new("test CA");
        let config = tls::server_config(pki.leaf("server", &["localhost"]).identity(), None)
            .expect("a config");
        async fn hello(name: String) -> String {
            format!("hi {name}")
        }
        let server = raw::Builder::new()
            .serve(Router::new().command(1, hello))
            .bind_tls("127.0.0.1:0", config)
            .await
            .expect("bound");
        let config = tls::client_config(&pki.roots(), None).expect("a config");
        let to = tls::Address::new(server.local_addr(), "localhost", config).expect("an address");
        let c = raw::Builder::new().client_tls(to);
        let hi: String = c.call(1u16, ("tls",)).await.expect("answered");
        assert_eq!(hi, "hi tls");
    })
    .await
    .expect("in time");
}

/// The configuration helpers refuse what they cannot use, with a reason.
#[test]
fn bad_pem_is_refused_with_a_reason() {
    let e = tls::Roots::from_pem(b"not pem").expect_err("refused");
    assert!(e.to_string().contains("no certificate"), "{e}");
    let pki = Pki::new("test CA");
    let leaf = pki.leaf("server", &["localhost"]);
    let e = tls::Identity::from_pem(leaf.cert.as_bytes(), b"").expect_err("refused");
    assert!(e.to_string().contains("private key"), "{e}");
    let e = tls::Identity::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
        .expect_err("refused");
    assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    let config = tls::client_config(&pki.roots(), None).expect("a config");
    let e =
        tls::Address::new("127.0.0.1:1", "not a name!", Arc::clone(&config)).expect_err("refused");
    assert!(e.to_string().contains("not a DNS name"), "{e}");
}

#[tokio::test]
async fn tls_1_2_is_spoken_with_a_client_that_offers_nothing_newer() {
    timeout(LIMIT, async {
        use tls::rustls;
        let pki = Pki::new("test CA");
        let server = server(&pki, None).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let to = tls::Address::new(server.local_addr(), "localhost", Arc::new(config))
            .expect("an address");
        let c = tls::Builder::new().client(to, RpcudpCodec::new());
        assert_eq!(c.call::<i64>("add", (40, 2)).await.expect("answered"), 42);
    })
    .await
    .expect("in time");
}

/// The platform's trust store loads (Debian's ca-certificates, as on the machines CI runs on).
#[test]
fn the_platform_trust_store_loads() {
    tls::Roots::platform().expect("the platform's roots");
}
