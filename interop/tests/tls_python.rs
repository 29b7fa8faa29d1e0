//! JSON-RPC 2.0 over TLS between rpc-stack and Python's `ssl` module (with jsonrpcclient 4.0.3
//! and jsonrpcserver 5.0.9), both ways, with newline and length framing, server-only and mutual
//! TLS. Certificates are made here (rcgen) and written under `target/`; all on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use interop::{jsonrpc_spec_router, python_run_passes, PeerProcess};
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_transports::stream::Framing;
use rpc_transports::tls;

/// A CA with a server certificate for `localhost` and a client certificate `CN=billing`, as PEM
/// files in a directory of their own.
struct Pem {
    dir: PathBuf,
}

impl Pem {
    fn make(name: &str) -> Self {
        let dir = interop::workspace_root()
            .join("target")
            .join(format!("tls-interop-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for (file, cn, names) in [
            ("server", "server", vec!["localhost".to_owned()]),
            ("client", "billing", vec!["billing.internal".to_owned()]),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn file(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

fn framing(name: &str) -> Framing {
    match name {
        "newline" => Framing::Newline,
        _ => Framing::LengthPrefixed,
    }
}

/// rpc-stack serves JSON-RPC over TLS; Python's `ssl` with jsonrpcclient calls it.
async fn python_calls_rpc_stack(framing_name: &str, mutual: bool) {
    let pem = Pem::make(&format!("py-client-{framing_name}-{mutual}"));
    let roots = tls::Roots::from_pem_file(pem.file("ca.pem")).unwrap();
    let identity =
        tls::Identity::from_pem_files(pem.file("server.pem"), pem.file("server.key")).unwrap();
    let config = tls::server_config(identity, mutual.then_some(&roots)).unwrap();
    let server = tls::Builder::new()
        .framing(framing(framing_name))
        .serve(jsonrpc_spec_router())
        .bind("127.0.0.1:0", config, JsonRpcCodec::new())
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let (ca, cert, key) = (
        pem.path("ca.pem"),
        pem.path("client.pem"),
        pem.path("client.key"),
    );
    let mut args = vec!["client", &addr, "localhost", &ca, framing_name];
    if mutual {
        args.extend([cert.as_str(), key.as_str()]);
    }
    python_run_passes("tls_peer.py", &args).await;
    assert_eq!(server.stats().handshakes_failed, 0);
}

#[tokio::test]
async fn python_ssl_calls_rpc_stack_over_tls_newline_framing() {
    python_calls_rpc_stack("newline", false).await;
}

#[tokio::test]
async fn python_ssl_calls_rpc_stack_over_mutual_tls_length_framing() {
    python_calls_rpc_stack("length", true).await;
}

/// Python's `ssl` serves JSON-RPC (jsonrpcserver); rpc-stack calls it, verifying its chain and
/// name, with a client certificate when the server requires one.
async fn rpc_stack_calls_python(framing_name: &str, mutual: bool) {
    let pem = Pem::make(&format!("py-server-{framing_name}-{mutual}"));
    let (cert, key, ca) = (
        pem.path("server.pem"),
        pem.path("server.key"),
        pem.path("ca.pem"),
    );
    let mut args = vec!["server", cert.as_str(), key.as_str(), framing_name];
    if mutual {
        args.push(&ca);
    }
    let peer = PeerProcess::start("tls_peer.py", &args);
    let roots = tls::Roots::from_pem_file(pem.file("ca.pem")).unwrap();
    let me = mutual.then(|| {
        tls::Identity::from_pem_files(pem.file("client.pem"), pem.file("client.key")).unwrap()
    });
    let config = tls::client_config(&roots, me).unwrap();
    let to = tls::Address::new(peer.listen_addr(), "localhost", config).unwrap();
    let client = tls::Builder::new()
        .framing(framing(framing_name))
        .timeout(Duration::from_secs(10))
        .client(to, JsonRpcCodec::new());
    let difference: i64 = client.call("subtract", (42, 23)).await.unwrap();
    assert_eq!(difference, 19);
    let total: i64 = client.call("sum", (1, 2, 4)).await.unwrap();
    assert_eq!(total, 7);
    let who: Option<String> = client.call("whoami", ()).await.unwrap();
    assert_eq!(who.as_deref(), mutual.then_some("billing"));
}

#[tokio::test]
async fn rpc_stack_calls_python_ssl_over_tls_length_framing() {
    rpc_stack_calls_python("length", false).await;
}

#[tokio::test]
async fn rpc_stack_calls_python_ssl_over_mutual_tls_newline_framing() {
    rpc_stack_calls_python("newline", true).await;
}

/// A Python server that requires client certificates refuses rpc-stack without one, and the
/// call says so.
#[tokio::test]
async fn python_ssl_refuses_rpc_stack_without_a_client_certificate() {
    let pem = Pem::make("py-server-refuses");
    let (cert, key, ca) = (
        pem.path("server.pem"),
        pem.path("server.key"),
        pem.path("ca.pem"),
    );
    let peer = PeerProcess::start("tls_peer.py", &["server", &cert, &key, "newline", &ca]);
    let roots = tls::Roots::from_pem_file(Path::new(&ca)).unwrap();
    let config = tls::client_config(&roots, None).unwrap();
    let to = tls::Address::new(peer.listen_addr(), "localhost", config).unwrap();
    let client = tls::Builder::new()
        .framing(Framing::Newline)
        .timeout(Duration::from_secs(10))
        .client(to, JsonRpcCodec::new());
    let e = client
        .call::<i64>("subtract", (42, 23))
        .await
        .expect_err("refused");
    assert!(matches!(e, rpc_core::Error::Transport(_)), "{e}");
}
