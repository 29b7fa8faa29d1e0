//! Authorization over real transports: by the verified TLS client certificate and by method,
//! and by the uid of a Unix socket peer. Loopback and a socket file under `target/` only.

use std::time::Duration;

use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Error, ErrorCode, Router};
use rpc_middleware::authorize::{AuthorizeLayer, Rule};
use rpc_middleware::limit::RateLimitLayer;
use rpc_transports::{tls, unix};
use tower::Layer;

const LIMIT: Duration = Duration::from_secs(20);

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn router() -> Router {
    Router::new()
        .route("add", add)
        .route("admin.reset", || async { true })
}

/// A CA and a PEM certificate and key it signed for `cn` with the alternative `names`.
fn leaf(
    ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
    cn: &str,
    names: &[&str],
) -> tls::Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, ca).unwrap();
    tls::Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
}

fn refused_as_not_authorized(r: Result<impl std::fmt::Debug, Error>) {
    match r {
        Err(Error::Server(e)) => {
            assert_eq!(e.code(), ErrorCode::NOT_AUTHORIZED, "{e}");
            assert!(e.was_refused(), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn over_tls_by_client_certificate_and_method() {
    tokio::time::timeout(LIMIT, async {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let roots = tls::Roots::from_pem(ca.pem().as_bytes()).unwrap();
        let policy = AuthorizeLayer::new()
            .allow(Rule::certificate("CN=admin"))
            .allow(Rule::certificate("billing.internal").method("add"));
        let config = tls::server_config(leaf(&ca, "server", &["localhost"]), Some(&roots)).unwrap();
        let server = tls::Builder::new()
            .serve(policy.layer(router()))
            .bind("127.0.0.1:0", config, RpcudpCodec::new())
            .await
            .unwrap();
        let client_as = |cn: &str, names: &[&str]| {
            let config = tls::client_config(&roots, Some(leaf(&ca, cn, names))).unwrap();
            let to = tls::Address::new(server.local_addr(), "localhost", config).unwrap();
            tls::Builder::new().client(to, RpcudpCodec::new())
        };
        let admin = client_as("admin", &[]);
        assert_eq!(admin.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        assert!(admin.call::<bool>("admin.reset", ()).await.unwrap());
        let billing = client_as("billing", &["billing.internal"]);
        assert_eq!(billing.call::<i64>("add", (1, 2)).await.unwrap(), 3);
        refused_as_not_authorized(billing.call::<bool>("admin.reset", ()).await);
        let other = client_as("other", &["other.internal"]);
        refused_as_not_authorized(other.call::<i64>("add", (1, 2)).await);
        // A method that does not exist is refused the same: the policy comes first.
        refused_as_not_authorized(other.call::<i64>("nope", ()).await);
        drop(server);

        // A rate limit per identity: each certificate has its own budget, whatever its
        // connections.
        let config = tls::server_config(leaf(&ca, "server", &["localhost"]), Some(&roots)).unwrap();
        let limit = RateLimitLayer::per_identity(1, Duration::from_secs(3600));
        let server = tls::Builder::new()
            .serve(limit.layer(router()))
            .bind("127.0.0.1:0", config, RpcudpCodec::new())
            .await
            .unwrap();
        let client_as = |cn: &str| {
            let config = tls::client_config(&roots, Some(leaf(&ca, cn, &[]))).unwrap();
            let to = tls::Address::new(server.local_addr(), "localhost", config).unwrap();
            tls::Builder::new().client(to, RpcudpCodec::new())
        };
        assert_eq!(client_as("a").call::<i64>("add", (1, 1)).await.unwrap(), 2);
        // The same certificate on a new connection: over its budget.
        match client_as("a").call::<i64>("add", (1, 1)).await {
            Err(Error::Server(e)) => assert_eq!(e.code(), ErrorCode::RATE_LIMITED, "{e}"),
            other => panic!("expected rate limited, got {other:?}"),
        }
        assert_eq!(client_as("b").call::<i64>("add", (1, 1)).await.unwrap(), 2);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn over_unix_sockets_by_uid() {
    tokio::time::timeout(LIMIT, async {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("authorize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // This process's uid: the owner of a file it made.
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir).unwrap());
        for (rule, allowed) in [
            (Rule::uid(me), true),
            (Rule::uid(me.wrapping_add(1)), false),
        ] {
            let path = dir.join(format!("rpc-{allowed}.sock"));
            let server = unix::Builder::new()
                .serve(AuthorizeLayer::new().allow(rule).layer(router()))
                .bind(&path, RpcudpCodec::new())
                .await
                .unwrap();
            let client = unix::Builder::new().client(&path, RpcudpCodec::new());
            let r = client.call::<i64>("add", (2, 3)).await;
            if allowed {
                assert_eq!(r.unwrap(), 5);
            } else {
                refused_as_not_authorized(r);
            }
            drop(server);
        }
    })
    .await
    .expect("in time");
}
