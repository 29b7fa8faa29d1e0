//! Keyed routing for sharded services: rendezvous (highest random weight) hashing.
//!
//! Each request's key (bytes a function takes from the request: an argument, a header of the
//! caller's) is scored against every endpoint, and the call goes to the endpoint with the
//! highest score that is not ejected. A key's endpoint changes only when that endpoint leaves
//! (or is ejected): endpoints joining take over about 1/n of the keys, and no other key moves.
//!
//! Scores are FNV-1a 64 of the endpoint key's text and of the request's key, mixed by
//! splitmix64's finalizer: fixed functions, so every caller, in any process, built from any
//! version, sends a key to the same endpoint. Requests the function gives no key go round
//! robin over the endpoints that are up.

use std::fmt::{self, Display};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use rpc_core::{Error, Payload, Request};
use tower::Service;

use crate::discover::{Discovery, Update};
use crate::health::{Backoff, Guarded, GuardedFuture, Standing};
use crate::{polled_twice, wait_deadline, when_ready, Builder, Connect, Polled};

/// The function that takes a request's routing key.
type KeyOf = Arc<dyn Fn(&Request) -> Option<Vec<u8>> + Send + Sync>;

impl<K, S> Builder<K, S>
where
    K: Clone + Eq + Display + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    /// A client that routes each request by the key `key_of` takes from it (see [`Keyed`]).
    /// The load measure does not apply: a key's endpoint is its endpoint, however loaded.
    pub fn keyed(
        self,
        discovery: Discovery<K>,
        key_of: impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Keyed<K, S> {
        Keyed {
            shared: Arc::new(Polled::new(Ring {
                discovery,
                connect: self.connect,
                standing: Arc::default(),
                backoff: self.backoff,
                endpoints: Vec::new(),
                next: 0,
            })),
            key_of: Arc::new(key_of),
            timeout: self.timeout,
        }
    }
}

/// A client over many endpoints that sends each request to the endpoint its key picks by
/// rendezvous hashing: a `tower::Service` like [`Balanced`](crate::Balanced), made by
/// [`Builder::keyed`].
///
/// ```
/// use rpc_balance::discover::Discovery;
/// use rpc_codecs::msgpack::RpcudpCodec;
/// use rpc_core::Router;
/// use rpc_transports::tcp;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut servers = Vec::new();
/// for shard in 0..3 {
///     let router = Router::new().route("where", move |_user: String| async move { shard });
///     servers.push(tcp::Builder::new().serve(router).bind("127.0.0.1:0", RpcudpCodec::new()).await?);
/// }
/// let addrs: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
///
/// // The first argument, a user name, is the key.
/// let keyed = rpc_balance::builder(|addr: &String| tcp::Builder::new().channel(addr.as_str(), RpcudpCodec::new()))
///     .keyed(Discovery::fixed(addrs), |req| {
///         req.args().decode::<(String,)>().ok().map(|(user,)| user.into_bytes())
///     });
/// let client = rpc_core::Client::new(keyed, &rpc_core::msgpack::MsgPack);
/// let shard = client.call::<u32>("where", ("ada",)).await?;
/// for _ in 0..10 {
///     assert_eq!(client.call::<u32>("where", ("ada",)).await?, shard);
/// }
/// # Ok(()) }
/// ```
pub struct Keyed<K, S> {
    shared: Arc<Polled<Ring<K, S>>>,
    key_of: KeyOf,
    timeout: Duration,
}

/// The endpoints, as discovery left them.
struct Ring<K, S> {
    discovery: Discovery<K>,
    connect: Connect<K, S>,
    standing: Arc<Standing>,
    backoff: Backoff,
    endpoints: Vec<Entry<K, S>>,
    /// The round-robin position for requests without a key.
    next: usize,
}

struct Entry<K, S> {
    key: K,
    /// The hash of the key's text, the endpoint's part of each score.
    seed: u64,
    channel: Guarded<S>,
}

impl<K, S> Ring<K, S>
where
    K: Clone + Eq + Display + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    /// Takes in what discovery has sent.
    fn update(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(update)) = Pin::new(&mut self.discovery).poll_next(cx) {
            match update {
                Update::Insert(key) => {
                    self.endpoints.retain(|e| e.key != key);
                    let channel =
                        Guarded::new((self.connect)(&key), self.standing.clone(), self.backoff);
                    let seed = fnv1a(key.to_string().as_bytes());
                    self.endpoints.push(Entry { key, seed, channel });
                }
                Update::Remove(key) => self.endpoints.retain(|e| e.key != key),
            }
        }
    }

    /// The endpoint for `key`: the highest score among those ready, else pending (discovery
    /// and the ejected endpoints are then registered with `cx`).
    fn pick(&mut self, key: Option<&[u8]>, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        self.update(cx);
        let n = self.endpoints.len();
        let order: Vec<usize> = match key {
            Some(key) => {
                let h = fnv1a(key);
                let scores: Vec<u64> = self.endpoints.iter().map(|e| mix(e.seed ^ h)).collect();
                let score = |i: usize| scores[i];
                // The best is usually ready: found in one pass, with no sort.
                if let Some(best) = (0..n).max_by_key(|&i| score(i)) {
                    match self.endpoints[best].channel.poll_ready(cx) {
                        Poll::Ready(r) => return Poll::Ready(r.map(|()| best)),
                        Poll::Pending => {}
                    }
                }
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(score(i)));
                order
            }
            None => {
                self.next = self.next.wrapping_add(1);
                let first = self.next % n.max(1);
                (0..n).map(|i| (first + i) % n).collect()
            }
        };
        for i in order {
            match self.endpoints[i].channel.poll_ready(cx) {
                Poll::Ready(r) => return Poll::Ready(r.map(|()| i)),
                Poll::Pending => continue,
            }
        }
        Poll::Pending
    }
}

impl<K, S> Ring<K, S>
where
    K: Clone + Eq + Display + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    /// Starts `req` on the endpoint for `key`, once one is ready.
    fn start(
        &mut self,
        key: Option<&[u8]>,
        req: &mut Option<Request>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<GuardedFuture<S::Future>, Error>> {
        let i = std::task::ready!(self.pick(key, cx))?;
        let req = req.take().ok_or_else(polled_twice)?;
        Poll::Ready(Ok(self.endpoints[i].channel.call(req)))
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finalizer: every bit of the input moves every bit of the score.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<K, S> Keyed<K, S>
where
    K: Clone + Eq + Display + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
{
    /// The endpoints known now, after taking in what discovery has sent.
    pub fn len(&self) -> usize {
        self.shared.with(|ring, cx| {
            ring.update(cx);
            ring.endpoints.len()
        })
    }

    /// Whether no endpoint is known now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoint a request with `key` goes to now, if any is known.
    pub fn endpoint_for(&self, key: &[u8]) -> Option<K> {
        self.shared.with(|ring, cx| match ring.pick(Some(key), cx) {
            Poll::Ready(Ok(i)) => Some(ring.endpoints[i].key.clone()),
            _ => None,
        })
    }
}

impl<K, S> Clone for Keyed<K, S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            key_of: self.key_of.clone(),
            timeout: self.timeout,
        }
    }
}

impl<K, S> fmt::Debug for Keyed<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<K, S> Service<Request> for Keyed<K, S>
where
    K: Clone + Eq + Display + Send + 'static,
    S: Service<Request, Response = Payload, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Payload;
    type Error = Error;
    type Future = KeyedFuture<S::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let key = (self.key_of)(&req);
        let mut req = Some(req);
        match self
            .shared
            .with(|ring, cx| ring.start(key.as_deref(), &mut req, cx))
        {
            Poll::Ready(Ok(call)) => return KeyedFuture::Picked(call),
            Poll::Ready(Err(e)) => return KeyedFuture::Waiting(Box::pin(async { Err(e) })),
            Poll::Pending => {}
        }
        let deadline = wait_deadline(req.as_ref().expect("not taken"), self.timeout);
        let shared = self.shared.clone();
        KeyedFuture::Waiting(Box::pin(when_ready(deadline, move |cx| {
            shared.waiting(cx, |ring, cx| ring.start(key.as_deref(), &mut req, cx))
        })))
    }
}

/// The future of a call on a [`Keyed`] client.
#[pin_project::pin_project(project = KeyedFutureProj)]
pub enum KeyedFuture<F> {
    /// Given to its endpoint at once.
    Picked(#[pin] GuardedFuture<F>),
    /// Waiting for an endpoint first.
    Waiting(BoxFuture<'static, Result<Payload, Error>>),
}

impl<F> Future for KeyedFuture<F>
where
    F: Future<Output = Result<Payload, Error>>,
{
    type Output = Result<Payload, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            KeyedFutureProj::Picked(f) => f.poll(cx),
            KeyedFutureProj::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

impl<F> fmt::Debug for KeyedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyedFuture::Picked(_) => "KeyedFuture::Picked",
            KeyedFuture::Waiting(_) => "KeyedFuture::Waiting",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_fixed_functions() {
        // FNV-1a's published vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(mix(0), 0);
        assert_ne!(mix(1), mix(2));
    }
}
