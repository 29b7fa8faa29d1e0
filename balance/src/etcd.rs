//! Endpoints registered in etcd v3: servers [`register`] their listeners under a key prefix with
//! a lease they keep alive; callers [`watch`] the prefix.
//!
//! A server registers each endpoint (a URL such as `tcp://127.0.0.1:4000`, as the value) under
//! `PREFIX/LEASE-INDEX`, all attached to one lease of `ttl`, kept alive at a third of it. A
//! server that dies stops the keep-alives: etcd deletes its keys when the lease expires, and
//! every caller's watch removes them. [`Registration::deregister`] revokes the lease, removing
//! them at once. A keep-alive that breaks (the connection is lost, or nothing answers within a
//! third of the TTL) is tried again on the same lease; once etcd says the lease expired (it was
//! unreachable for longer than the TTL), the registration grants a new one and puts its keys
//! again. Connect with [`connect`], whose client notices a dead connection within seconds.
//!
//! A watch reads every key under the prefix, then follows the changes from the revision it read
//! at. When its stream breaks (etcd restarted, the connection was lost) it reads the prefix again
//! a second later and sends what changed meanwhile, so no caller restarts to catch up.
//!
//! ```no_run
//! use rpc_balance::etcd;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = etcd::connect(["127.0.0.1:2379"]).await?;
//! // A server:
//! let registration = etcd::register(
//!     client.clone(),
//!     "/services/greeter",
//!     ["tcp://127.0.0.1:4000".to_string()],
//!     Duration::from_secs(10),
//! )
//! .await?;
//! // A caller: its endpoints are the registered URLs.
//! let discovery = etcd::watch(client, "/services/greeter");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use etcd_client::{Client, ConnectOptions, Error};
use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};

use crate::discover::{self, Discovery, Endpoints};

/// How long a broken watch or keep-alive waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// The most keys a watch follows under its prefix: whoever may write there cannot make a
/// caller hold more.
pub const MAX_KEYS: usize = 10_000;

/// A client of the etcd at `endpoints` (`HOST:PORT`s) that finds out within seconds that a
/// connection is dead (HTTP/2 pings every 5 s, answered within 5 s), so that a watch or a
/// registration on it starts again rather than waiting on a connection that is gone; at most
/// 5 s to connect.
pub async fn connect<E: AsRef<str>, S: AsRef<[E]>>(endpoints: S) -> Result<Client, Error> {
    let options = ConnectOptions::new()
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5));
    Client::connect(endpoints, Some(options)).await
}

/// The keys of `endpoints` under `prefix` for `lease`.
fn key(prefix: &str, lease: i64, index: usize) -> String {
    format!("{}/{lease:x}-{index}", prefix.trim_end_matches('/'))
}

/// Registers `endpoints` under `prefix` with a lease of `ttl` (at least 1 s; etcd may round it
/// up to its own minimum) and keeps it alive until the registration is dropped or deregistered.
/// Fails if etcd cannot grant the lease or take the keys.
pub async fn register(
    mut client: Client,
    prefix: impl Into<String>,
    endpoints: impl IntoIterator<Item = String>,
    ttl: Duration,
) -> Result<Registration, Error> {
    let prefix = prefix.into();
    let endpoints: Vec<String> = endpoints.into_iter().collect();
    let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = put_with_lease(&mut client, &prefix, &endpoints, ttl_secs).await?;
    let lease = Arc::new(AtomicI64::new(lease));
    let keeper = tokio::spawn(keep_alive(
        client.clone(),
        prefix,
        endpoints,
        ttl_secs,
        lease.clone(),
    ));
    Ok(Registration {
        client,
        lease,
        keeper,
    })
}

/// Grants a lease and puts every endpoint's key on it; the lease's id. A lease whose keys could
/// not all be put is revoked.
async fn put_with_lease(
    client: &mut Client,
    prefix: &str,
    endpoints: &[String],
    ttl_secs: i64,
) -> Result<i64, Error> {
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let put = client
            .put(
                key(prefix, lease, i),
                endpoint.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        if let Err(e) = put {
            let _ = client.lease_revoke(lease).await;
            return Err(e);
        }
    }
    tracing::debug!(
        prefix,
        lease,
        endpoints = endpoints.len(),
        "registered in etcd"
    );
    Ok(lease)
}

/// How keeping a lease alive ended.
enum Kept {
    /// etcd says the lease is gone: its keys are too.
    Expired,
    /// The connection broke or went quiet; the lease may still be alive.
    Broken(String),
}

/// Keeps the lease alive at a third of its TTL, through broken connections; registers anew
/// (a new lease) once etcd says the lease expired.
async fn keep_alive(
    mut client: Client,
    prefix: String,
    endpoints: Vec<String>,
    ttl_secs: i64,
    lease: Arc<AtomicI64>,
) {
    let period = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1)) / 3;
    loop {
        match keep(&mut client, lease.load(Ordering::Relaxed), period).await {
            Kept::Broken(error) => {
                tracing::warn!(error, prefix, "etcd keep-alive broke; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Kept::Expired => tracing::warn!(prefix, "etcd lease expired; registering again"),
        }
        loop {
            match put_with_lease(&mut client, &prefix, &endpoints, ttl_secs).await {
                Ok(new) => {
                    lease.store(new, Ordering::Relaxed);
                    break;
                }
                Err(error) => tracing::warn!(%error, prefix, "etcd registration failed"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Sends keep-alives for `lease` every `period`, each answered within `period`.
async fn keep(client: &mut Client, lease: i64, period: Duration) -> Kept {
    let broken = |e: Error| Kept::Broken(e.to_string());
    let (mut keeper, mut answers) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return broken(e),
    };
    loop {
        if let Err(e) = keeper.keep_alive().await {
            return broken(e);
        }
        match tokio::time::timeout(period, answers.message()).await {
            // A TTL of zero: the lease is gone.
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
            Ok(Ok(_)) => return Kept::Expired,
            Ok(Err(e)) => return broken(e),
            Err(_) => return Kept::Broken(format!("no answer within {period:?}")),
        }
        tokio::time::sleep(period).await;
    }
}

/// A server's registration in etcd: the keys stay while it lives. Dropping it stops the
/// keep-alives (the keys go when the lease expires); [`deregister`](Registration::deregister)
/// removes them at once.
pub struct Registration {
    client: Client,
    lease: Arc<AtomicI64>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// The lease the keys are on now.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Stops the keep-alives and revokes the lease: the keys leave etcd, and every caller's set,
    /// now.
    pub async fn deregister(mut self) -> Result<(), Error> {
        self.keeper.abort();
        // Stopped, not halfway through granting a lease this would not revoke.
        let _ = (&mut self.keeper).await;
        let lease = self.lease();
        self.client.lease_revoke(lease).await.map(drop)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("lease", &self.lease())
            .finish_non_exhaustive()
    }
}

/// The endpoints registered under `prefix`: each key's value (a URL, as [`register`] puts
/// them), kept up to date until the discovery is dropped (see the [module docs](self)). Only
/// keys under `prefix/` count, not those of a sibling prefix (`/services/echo2` for
/// `/services/echo`), and at most [`MAX_KEYS`] of them. Must be called within a tokio runtime.
pub fn watch(client: Client, prefix: impl Into<String>) -> Discovery<String> {
    let prefix = format!("{}/", prefix.into().trim_end_matches('/'));
    let (endpoints, discovery) = discover::set();
    tokio::spawn(async move {
        let mut set = Registered::default();
        let mut client = client;
        loop {
            tokio::select! {
                _ = endpoints.closed() => return,
                r = follow(&mut client, &prefix, &mut set, &endpoints) => {
                    if let Err(error) = r {
                        tracing::warn!(%error, prefix, "etcd watch broke; reading the prefix again");
                    }
                }
            }
            tokio::select! {
                _ = endpoints.closed() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    });
    discovery
}

/// The keys under the prefix and their endpoints, as last read, with how many keys name each
/// endpoint (an endpoint leaves the set with its last key).
#[derive(Default)]
struct Registered {
    keys: HashMap<String, String>,
    named: HashMap<String, usize>,
}

impl Registered {
    fn put(&mut self, key: String, endpoint: String, out: &Endpoints<String>) {
        if self.keys.get(&key) == Some(&endpoint) {
            return;
        }
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS {
            tracing::warn!(
                key,
                MAX_KEYS,
                "too many keys under the prefix; this one is left out"
            );
            return;
        }
        self.delete(&key, out);
        let n = self.named.entry(endpoint.clone()).or_default();
        *n += 1;
        if *n == 1 {
            out.insert(endpoint.clone());
        }
        self.keys.insert(key, endpoint);
    }

    fn delete(&mut self, key: &str, out: &Endpoints<String>) {
        let Some(old) = self.keys.remove(key) else {
            return;
        };
        if let Some(n) = self.named.get_mut(&old) {
            *n -= 1;
            if *n == 0 {
                self.named.remove(&old);
                out.remove(old);
            }
        }
    }
}

/// Reads the prefix, sends what changed since `set`, then follows the watch until it breaks.
async fn follow(
    client: &mut Client,
    prefix: &str,
    set: &mut Registered,
    out: &Endpoints<String>,
) -> Result<(), Error> {
    let now = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_limit(MAX_KEYS as i64)),
        )
        .await?;
    let revision = now.header().map_or(0, |h| h.revision());
    let read: HashMap<String, String> = now
        .kvs()
        .iter()
        .filter_map(|kv| {
            Some((
                kv.key_str().ok()?.to_owned(),
                kv.value_str().ok()?.to_owned(),
            ))
        })
        .collect();
    let gone: Vec<String> = set
        .keys
        .keys()
        .filter(|k| !read.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        set.delete(&key, out);
    }
    for (key, endpoint) in read {
        set.put(key, endpoint, out);
    }
    let mut stream = client
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    while let Some(answer) = stream.message().await? {
        if answer.canceled() {
            return Ok(());
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            match event.event_type() {
                EventType::Put => match kv.value_str() {
                    Ok(endpoint) => set.put(key.to_owned(), endpoint.to_owned(), out),
                    Err(_) => set.delete(key, out),
                },
                EventType::Delete => set.delete(key, out),
            }
        }
    }
    Ok(())
}
