//! Discovery against real servers the tests start: etcd (Debian's etcd-server) and a DNS server
//! (Debian's dnsmasq), both on loopback ports, installed if missing.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_balance::discover::{Discovery, Update};
use rpc_balance::{dns, etcd};
use rpc_codecs::msgpack::RpcudpCodec;
use rpc_core::{Client, Router};
use rpc_transports::tcp;
use tokio::time::{timeout, Instant};

/// A TCP server answering `whoami` with `index`, counting its calls.
async fn server(addr: SocketAddr, index: usize, calls: Arc<AtomicUsize>) -> tcp::Server {
    let router = Router::new().route("whoami", move || {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::Relaxed);
            index
        }
    });
    tcp::Builder::new()
        .serve(router)
        .bind(addr, RpcudpCodec::new())
        .await
        .unwrap()
}

/// The next update, within `within`.
async fn next<K: std::fmt::Debug>(d: &mut Discovery<K>, within: Duration) -> Update<K> {
    timeout(within, d.next())
        .await
        .expect("an update in time")
        .expect("the discovery goes on")
}

/// Calls until `calls` counts one, within `within`.
async fn reaches<S>(client: &Client<S>, calls: &AtomicUsize, within: Duration)
where
    S: tower::Service<rpc_core::Request, Response = rpc_core::Payload, Error = rpc_core::Error>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let start = Instant::now();
    while calls.load(Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < within,
            "no call reached the server within {within:?}"
        );
        let _ = client.call::<usize>("whoami", ()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_register_in_etcd_and_callers_follow_them() {
    let etcd_server = tokio::task::spawn_blocking(interop::Etcd::start)
        .await
        .unwrap();
    let connect = || etcd::connect([etcd_server.client_addr.clone()]);
    let ttl = Duration::from_secs(2);
    let prefix = "/services/whoami";

    let calls: Vec<_> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut servers = Vec::new();
    let mut registrations = Vec::new();
    for (i, calls) in calls.iter().enumerate().take(3) {
        let s = server("127.0.0.1:0".parse().unwrap(), i, calls.clone()).await;
        let url = format!("tcp://{}", s.local_addr());
        registrations.push(
            etcd::register(connect().await.unwrap(), prefix, [url], ttl)
                .await
                .unwrap(),
        );
        servers.push(s);
    }

    // A sibling prefix is another service's.
    let sibling = server("127.0.0.1:0".parse().unwrap(), 9, Arc::default()).await;
    let _other = etcd::register(
        connect().await.unwrap(),
        format!("{prefix}-canary"),
        [format!("tcp://{}", sibling.local_addr())],
        ttl,
    )
    .await
    .unwrap();

    // One watch to see the set change, one under a balanced client.
    let mut watched = etcd::watch(connect().await.unwrap(), prefix);
    let mut seen = Vec::new();
    for _ in 0..3 {
        match next(&mut watched, Duration::from_secs(10)).await {
            Update::Insert(url) => seen.push(url),
            other => panic!("{other:?}"),
        }
    }
    seen.sort();
    let mut urls: Vec<_> = servers
        .iter()
        .map(|s| format!("tcp://{}", s.local_addr()))
        .collect();
    urls.sort();
    assert_eq!(seen, urls);

    let balanced = rpc_balance::builder(|url: &String| {
        let addr = url.strip_prefix("tcp://").expect("a tcp:// URL");
        tcp::Builder::new().channel(addr, RpcudpCodec::new())
    })
    .build(etcd::watch(connect().await.unwrap(), prefix));
    let client = Client::new(balanced.clone(), &rpc_core::msgpack::MsgPack);
    for c in &calls[..3] {
        reaches(&client, c, Duration::from_secs(10)).await;
    }

    // A server dies: its keep-alives stop with it, and it leaves the set within its lease.
    let dead = format!("tcp://{}", servers[1].local_addr());
    drop(registrations.remove(1));
    drop(servers.remove(1));
    let died = Instant::now();
    assert_eq!(
        next(&mut watched, ttl + Duration::from_secs(3)).await,
        Update::Remove(dead)
    );
    eprintln!(
        "a dead server left the set {:?} after it died",
        died.elapsed()
    );
    assert!(died.elapsed() < ttl + Duration::from_secs(2));

    // A new one joins, and the running caller calls it.
    let s = server("127.0.0.1:0".parse().unwrap(), 3, calls[3].clone()).await;
    let url = format!("tcp://{}", s.local_addr());
    let joined = etcd::register(connect().await.unwrap(), prefix, [url.clone()], ttl)
        .await
        .unwrap();
    assert_eq!(
        next(&mut watched, Duration::from_secs(5)).await,
        Update::Insert(url.clone())
    );
    reaches(&client, &calls[3], Duration::from_secs(5)).await;
    assert_eq!(balanced.len(), 3);

    // Leaving on purpose is at once.
    joined.deregister().await.unwrap();
    assert_eq!(
        next(&mut watched, Duration::from_millis(500)).await,
        Update::Remove(url)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_is_re_resolved_and_its_records_followed() {
    let dns_server = tokio::task::spawn_blocking(interop::Dnsmasq::start)
        .await
        .unwrap();
    // Three hosts on loopback addresses, one port.
    let ips: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    let port = interop::free_port("127.0.0.2");
    let calls: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut servers = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        servers.push(server(SocketAddr::new(*ip, port), i, calls[i].clone()).await);
    }
    dns_server.set("svc.test", &ips[..2]);

    let every = Duration::from_millis(200);
    let resolver = || dns::resolver_at(dns_server.addr);
    let mut watched = dns::watch(resolver(), "svc.test", port, every);
    let mut first = vec![
        next(&mut watched, Duration::from_secs(5)).await,
        next(&mut watched, Duration::from_secs(5)).await,
    ];
    first.sort_by_key(|u| format!("{u:?}"));
    assert_eq!(
        first,
        vec![
            Update::Insert(SocketAddr::new(ips[0], port)),
            Update::Insert(SocketAddr::new(ips[1], port)),
        ]
    );

    let balanced =
        rpc_balance::builder(|a: &SocketAddr| tcp::Builder::new().channel(*a, RpcudpCodec::new()))
            .build(dns::watch(resolver(), "svc.test", port, every));
    let client = Client::new(balanced, &rpc_core::msgpack::MsgPack);
    reaches(&client, &calls[0], Duration::from_secs(5)).await;
    reaches(&client, &calls[1], Duration::from_secs(5)).await;
    assert_eq!(calls[2].load(Ordering::Relaxed), 0);

    // The records change: one host out, another in.
    dns_server.set("svc.test", &ips[1..]);
    let mut changes = vec![
        next(&mut watched, Duration::from_secs(5)).await,
        next(&mut watched, Duration::from_secs(5)).await,
    ];
    changes.sort_by_key(|u| format!("{u:?}"));
    assert_eq!(
        changes,
        vec![
            Update::Insert(SocketAddr::new(ips[2], port)),
            Update::Remove(SocketAddr::new(ips[0], port)),
        ]
    );
    reaches(&client, &calls[2], Duration::from_secs(5)).await;
    // Once the removal is taken in, the host that left gets nothing more.
    tokio::time::sleep(every * 3).await;
    for _ in 0..20 {
        client.call::<usize>("whoami", ()).await.unwrap();
    }
    let before = calls[0].load(Ordering::Relaxed);
    for _ in 0..200 {
        client.call::<usize>("whoami", ()).await.unwrap();
    }
    assert_eq!(calls[0].load(Ordering::Relaxed), before);
}
