//! A Kademlia node: the four RPCs Python kademlia 2.2.3 speaks, over rpcudp's datagrams, its
//! storage, and the iterative lookups of the paper's section 2.3.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rmpv::Value;
use rpc_stack::codecs::msgpack::RpcudpCodec;
use rpc_stack::transports::udp;
use rpc_stack::{Context, Error, ServerError};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::routing::{digest, distance, Added, Contact, Id, Table};

/// Contacts per bucket, and nodes a value is stored on.
pub(crate) const K: usize = 20;
/// Lookups in parallel.
pub(crate) const ALPHA: usize = 3;
/// How long a bucket may go without a lookup before it is refreshed, and how old a value gets
/// before this node publishes it again: an hour, as Python kademlia does.
pub(crate) const REFRESH: Duration = Duration::from_secs(3600);
/// How long a value is kept: a week, as Python's `ForgetfulStorage`.
pub(crate) const VALUE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most values this node keeps (the oldest go first), each at most a datagram: peers
/// cannot make it hold more than about 80 MB.
pub(crate) const MAX_VALUES: usize = 10_000;
/// The most values handed to one newcomer.
const MAX_GIVEN: usize = 1_000;
/// The most nodes one lookup asks: peers answering with ever-new ids cannot keep it going.
const MAX_ASKED: usize = 8 * K;

/// A contact as `find_node` answers it: `[id, ip, port]`.
pub(crate) type WireContact = (ByteBuf, String, u16);

/// What `find_value` answers: `{"value": v}`, or the closest contacts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Found {
    Value { value: Value },
    Nodes(Vec<WireContact>),
}

/// Python kademlia's RPCs. Every call carries the caller's id, so the callee learns of it.
#[rpc_stack::service]
pub(crate) trait Kademlia {
    /// Answers this node's id.
    async fn ping(&self, ctx: Context, nodeid: [u8; 20]) -> Result<[u8; 20], ServerError>;
    /// Keeps `value` under `key`.
    async fn store(
        &self,
        ctx: Context,
        nodeid: [u8; 20],
        key: [u8; 20],
        value: Value,
    ) -> Result<bool, ServerError>;
    /// The k contacts closest to `key`, leaving out the caller.
    async fn find_node(
        &self,
        ctx: Context,
        nodeid: [u8; 20],
        key: [u8; 20],
    ) -> Result<Vec<WireContact>, ServerError>;
    /// The value under `key`, or the k contacts closest to it.
    async fn find_value(
        &self,
        ctx: Context,
        nodeid: [u8; 20],
        key: [u8; 20],
    ) -> Result<Found, ServerError>;
}

/// Whether `v` is a value Python kademlia stores: int, float, bool, str or bytes.
pub(crate) fn storable(v: &Value) -> bool {
    matches!(
        v,
        Value::Integer(_)
            | Value::F32(_)
            | Value::F64(_)
            | Value::Boolean(_)
            | Value::String(_)
            | Value::Binary(_)
    )
}

/// The values this node keeps, oldest first.
#[derive(Debug, Default)]
struct Storage {
    values: HashMap<Id, (Instant, Value)>,
}

impl Storage {
    fn cull(&mut self) {
        self.values.retain(|_, (at, _)| at.elapsed() < VALUE_TTL);
    }

    fn insert(&mut self, key: Id, value: Value) {
        self.cull();
        if self.values.len() >= MAX_VALUES && !self.values.contains_key(&key) {
            let oldest = self
                .values
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.values.remove(&k);
            }
        }
        self.values.insert(key, (Instant::now(), value));
    }

    fn get(&mut self, key: &Id) -> Option<Value> {
        self.cull();
        self.values.get(key).map(|(_, v)| v.clone())
    }

    fn keys(&mut self) -> Vec<Id> {
        self.cull();
        self.values.keys().copied().collect()
    }

    fn older_than(&mut self, age: Duration) -> Vec<(Id, Value)> {
        self.cull();
        self.values
            .iter()
            .filter(|(_, (at, _))| at.elapsed() >= age)
            .map(|(k, (_, v))| (*k, v.clone()))
            .collect()
    }
}

/// What an iterative lookup found.
enum Crawled {
    Nodes(Vec<Contact>),
    Value(Option<Value>),
}

/// A node; cloning shares it.
#[derive(Clone)]
pub(crate) struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: Id,
    table: Mutex<Table>,
    storage: Mutex<Storage>,
    endpoint: OnceLock<udp::Endpoint<RpcudpCodec>>,
    /// The share of datagrams lost on purpose, each way (testing lookups under loss).
    loss: f64,
    timeout: Duration,
}

impl Node {
    /// A node with a random id, listening at `bind`; calls to other nodes time out after
    /// `timeout`, and a share `loss` of the datagrams it would send or receive are dropped.
    pub(crate) async fn start(
        bind: SocketAddr,
        timeout: Duration,
        loss: f64,
    ) -> std::io::Result<Node> {
        let id = digest(&rand::random::<[u8; 32]>());
        let node = Node {
            inner: Arc::new(Inner {
                id,
                table: Mutex::new(Table::new(id, K)),
                storage: Mutex::default(),
                endpoint: OnceLock::new(),
                loss,
                timeout,
            }),
        };
        // rpcudp sends nothing when a call fails: neither does this node.
        let endpoint = udp::Builder::new()
            .timeout(timeout)
            .bind(bind, RpcudpCodec::new().without_error_replies())
            .await?;
        endpoint.serve(node.clone().into_router());
        let _ = node.inner.endpoint.set(endpoint);
        tokio::spawn(node.clone().refresh_every(REFRESH));
        Ok(node)
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.endpoint().local_addr()
    }

    /// How many contacts the routing table holds.
    pub(crate) fn contacts(&self) -> usize {
        self.table().len()
    }

    fn endpoint(&self) -> &udp::Endpoint<RpcudpCodec> {
        self.inner.endpoint.get().expect("set at start")
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn storage(&self) -> std::sync::MutexGuard<'_, Storage> {
        self.inner
            .storage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this datagram is lost on purpose.
    fn lost(&self) -> bool {
        self.inner.loss > 0.0 && rand::random::<f64>() < self.inner.loss
    }

    fn client(
        &self,
        addr: SocketAddr,
    ) -> KademliaClient<rpc_stack::transports::udp::Channel<RpcudpCodec>> {
        KademliaClient::new(self.endpoint().client(addr))
    }

    /// Runs a call to another node, losing its request or its answer on purpose as `loss` says.
    async fn exchange<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if self.lost() {
            tokio::time::sleep(self.inner.timeout).await;
            return Err(Error::Timeout);
        }
        let answer = call.await;
        if answer.is_ok() && self.lost() {
            return Err(Error::Timeout);
        }
        answer
    }

    /// A request that arrived: refused (unanswered, as a lost datagram) if lost on purpose;
    /// otherwise its sender is welcomed.
    fn arrived(&self, ctx: &Context, nodeid: Id) -> Result<Contact, ServerError> {
        let Some(addr) = ctx.peer_addr() else {
            return Err(ServerError::invalid_request("no sender address"));
        };
        if self.lost() || self.lost() {
            return Err(ServerError::internal("lost on purpose"));
        }
        let sender = Contact { id: nodeid, addr };
        self.welcome_if_new(sender, false);
        Ok(sender)
    }

    /// A contact that called or answered: if it is new, it gets the values it should hold
    /// (section 2.5: it is closer to the key than the furthest of our k closest, and this
    /// node is closer than the closest), then joins the routing table. A contact known only
    /// from a request it sent (`proven` false: its source address may be forged) gets them once
    /// it has answered a ping from its address, so that a forged request cannot turn this node
    /// into a source of stores aimed at someone else.
    ///
    /// (Python kademlia 2.2.3 digests the stored keys once more here, `digest(key)`, and so
    /// weighs the wrong ids; this node weighs the keys themselves, as the paper does.)
    fn welcome_if_new(&self, c: Contact, proven: bool) {
        if c.id == self.inner.id {
            return;
        }
        if !self.table().is_new(&c.id) {
            // Seen again: least recently seen no more.
            self.add_contact(c);
            return;
        }
        if proven {
            self.give(c);
        } else {
            let node = self.clone();
            tokio::spawn(async move {
                let client = node.client(c.addr);
                if node
                    .exchange(client.ping(node.inner.id))
                    .await
                    .is_ok_and(|id| id == c.id)
                {
                    node.give(c);
                }
            });
        }
        self.add_contact(c);
    }

    /// Stores on `c`, one after the other, the values it should hold (at most [`MAX_GIVEN`]).
    fn give(&self, c: Contact) {
        let keys = self.storage().keys();
        let give: Vec<Id> = {
            let mut table = self.table();
            keys.into_iter()
                .filter(|key| {
                    let neighbors = table.nearest(key, K, None);
                    match (neighbors.first(), neighbors.last()) {
                        (Some(first), Some(last)) => {
                            distance(&c.id, key) < distance(&last.id, key)
                                && distance(&self.inner.id, key) < distance(&first.id, key)
                        }
                        _ => true,
                    }
                })
                .take(MAX_GIVEN)
                .collect()
        };
        if give.is_empty() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            for key in give {
                let value = node.storage().get(&key);
                if let Some(value) = value {
                    let _ = node.call_store(c, key, value).await;
                }
            }
        });
    }

    fn add_contact(&self, c: Contact) {
        let added = self.table().add(c);
        if let Added::PingHead(head) = added {
            // A full bucket: its least recently seen contact stays if it answers.
            let node = self.clone();
            tokio::spawn(async move { node.call_ping(head).await });
        }
    }

    /// After a call to `c`: an answer welcomes it, silence drops it from the routing table
    /// (a failure of this side's, such as a value too large to send, says nothing of `c`).
    fn answered<T>(&self, c: Contact, r: Result<T, Error>) -> Result<T, Error> {
        match &r {
            Ok(_) | Err(Error::Server(_)) => self.welcome_if_new(c, true),
            Err(Error::Timeout) => self.table().remove(&c),
            Err(_) => {}
        }
        r
    }

    async fn call_ping(&self, c: Contact) -> Result<Id, Error> {
        let r = self.exchange(self.client(c.addr).ping(self.inner.id)).await;
        self.answered(c, r)
    }

    async fn call_store(&self, c: Contact, key: Id, value: Value) -> Result<bool, Error> {
        let r = self
            .exchange(self.client(c.addr).store(self.inner.id, key, value))
            .await;
        self.answered(c, r)
    }

    async fn call_find(&self, c: Contact, key: Id, value: bool) -> Result<Found, Error> {
        let client = self.client(c.addr);
        let r = if value {
            self.exchange(client.find_value(self.inner.id, key)).await
        } else {
            self.exchange(client.find_node(self.inner.id, key))
                .await
                .map(Found::Nodes)
        };
        self.answered(c, r)
    }

    /// The iterative lookup of `target` from `peers`: ALPHA calls at a time to the closest
    /// contacts not yet asked, all of the k closest when a round brought none closer, until
    /// the k closest have all answered (or, looking for a value, one has it).
    async fn crawl(&self, target: Id, peers: Vec<Contact>, value: bool) -> Crawled {
        let mut heap: BTreeMap<Id, Contact> = BTreeMap::new();
        let mut asked: HashSet<Id> = HashSet::new();
        let mut asked_at: HashSet<SocketAddr> = HashSet::new();
        // Those that did not answer: not taken back from later answers.
        let mut failed: HashSet<Id> = HashSet::new();
        let mut last_round: Vec<Id> = Vec::new();
        // The closest contact that answered without the value: it is given the value found.
        let mut closest_without: Option<(Id, Contact)> = None;
        for p in peers {
            heap.insert(distance(&p.id, &target), p);
        }
        loop {
            let nearest: Vec<Contact> = heap.values().take(K).copied().collect();
            let ids: Vec<Id> = nearest.iter().map(|c| c.id).collect();
            let count = if ids == last_round {
                nearest.len()
            } else {
                ALPHA
            };
            last_round = ids;
            let ask: Vec<Contact> = nearest
                .iter()
                .filter(|c| !asked.contains(&c.id) && !asked_at.contains(&c.addr))
                .take(count)
                .copied()
                .collect();
            if ask.is_empty() || asked.len() >= MAX_ASKED {
                return match value {
                    true => Crawled::Value(None),
                    false => Crawled::Nodes(nearest),
                };
            }
            asked.extend(ask.iter().map(|c| c.id));
            asked_at.extend(ask.iter().map(|c| c.addr));
            let answers =
                futures::future::join_all(ask.iter().map(|c| self.call_find(*c, target, value)))
                    .await;
            let mut values: Vec<(Value, usize)> = Vec::new();
            for (c, answer) in ask.iter().zip(answers) {
                match answer {
                    Err(_) => {
                        heap.remove(&distance(&c.id, &target));
                        failed.insert(c.id);
                    }
                    // A value no node stores is no answer to pass on.
                    Ok(Found::Value { value }) if !storable(&value) => {}
                    Ok(Found::Value { value }) => {
                        match values.iter_mut().find(|(v, _)| *v == value) {
                            Some((_, n)) => *n += 1,
                            None => values.push((value, 1)),
                        }
                    }
                    Ok(Found::Nodes(list)) => {
                        let d = distance(&c.id, &target);
                        if value && closest_without.as_ref().is_none_or(|(best, _)| d < *best) {
                            closest_without = Some((d, *c));
                        }
                        // At most 2k from one answer: a peer cannot grow a lookup without bound.
                        for found in list.iter().take(2 * K).filter_map(parse_contact) {
                            if found.id != self.inner.id && !failed.contains(&found.id) {
                                heap.entry(distance(&found.id, &target)).or_insert(found);
                            }
                        }
                    }
                }
            }
            // The commonest value, the first seen among equals; the closest node without it
            // gets it (section 2.3).
            if let Some((found, _)) = values.into_iter().rev().max_by_key(|(_, n)| *n) {
                if let Some((_, c)) = closest_without {
                    let _ = self.call_store(c, target, found.clone()).await;
                }
                return Crawled::Value(Some(found));
            }
        }
    }

    /// Joins the network through the nodes at `addrs`: pings them, then looks itself up.
    /// The contacts found.
    pub(crate) async fn bootstrap(&self, addrs: &[SocketAddr]) -> usize {
        let pings = addrs.iter().map(|addr| async move {
            let r = self.exchange(self.client(*addr).ping(self.inner.id)).await;
            r.ok().map(|id| Contact { id, addr: *addr })
        });
        let peers: Vec<Contact> = futures::future::join_all(pings)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.crawl(self.inner.id, peers, false).await;
        self.contacts()
    }

    /// Stores `value` under the digest of `key` on the k nodes closest to it (and here, if this
    /// node is among them); whether any of them took it.
    pub(crate) async fn set(&self, key: &str, value: Value) -> bool {
        self.set_digest(digest(key.as_bytes()), value).await
    }

    async fn set_digest(&self, key: Id, value: Value) -> bool {
        let nearest = self.table().nearest(&key, K, None);
        if nearest.is_empty() {
            return false;
        }
        let Crawled::Nodes(nodes) = self.crawl(key, nearest, false).await else {
            unreachable!("a node lookup finds nodes")
        };
        let furthest = nodes.iter().map(|n| distance(&n.id, &key)).max();
        if furthest.is_none_or(|f| distance(&self.inner.id, &key) < f) {
            self.storage().insert(key, value.clone());
        }
        let stores = nodes
            .iter()
            .map(|n| self.call_store(*n, key, value.clone()));
        futures::future::join_all(stores)
            .await
            .into_iter()
            .any(|r| matches!(r, Ok(true)))
    }

    /// The value under the digest of `key`, here or on the network.
    pub(crate) async fn get(&self, key: &str) -> Option<Value> {
        let key = digest(key.as_bytes());
        if let Some(v) = self.storage().get(&key) {
            return Some(v);
        }
        let nearest = self.table().nearest(&key, K, None);
        if nearest.is_empty() {
            return None;
        }
        match self.crawl(key, nearest, true).await {
            Crawled::Value(v) => v,
            Crawled::Nodes(_) => None,
        }
    }

    /// Every `every`: looks up a random id in each bucket not looked up for that long, then
    /// publishes again the values held for that long (section 2.3, as Python kademlia does).
    async fn refresh_every(self, every: Duration) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A pass that overran its period is not followed by a burst of passes.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let ids = self.table().refresh_ids(every);
            for id in ids {
                let nearest = self.table().nearest(&id, ALPHA, None);
                self.crawl(id, nearest, false).await;
            }
            let old = self.storage().older_than(every);
            for (key, value) in old {
                self.set_digest(key, value).await;
            }
        }
    }
}

/// A contact from a `find_node` answer; `None` if malformed.
fn parse_contact((id, ip, port): &WireContact) -> Option<Contact> {
    let id: Id = id.as_slice().try_into().ok()?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    Some(Contact {
        id,
        addr: SocketAddr::new(ip, *port),
    })
}

fn wire(c: &Contact) -> WireContact {
    (
        ByteBuf::from(c.id.to_vec()),
        c.addr.ip().to_string(),
        c.addr.port(),
    )
}

impl Kademlia for Node {
    async fn ping(&self, ctx: Context, nodeid: [u8; 20]) -> Result<[u8; 20], ServerError> {
        self.arrived(&ctx, nodeid)?;
        Ok(self.inner.id)
    }

    async fn store(
        &self,
        ctx: Context,
        nodeid: [u8; 20],
        key: [u8; 20],
        value: Value,
    ) -> Result<bool, ServerError> {
        self.arrived(&ctx, nodeid)?;
        // Answered, so that the caller keeps this node; kept only if Python would store it.
        if !storable(&value) {
            return Ok(false);
        }
        self.storage().insert(key, value);
        Ok(true)
    }

    async fn find_node(
        &self,
        ctx: Context,
        nodeid: [u8; 20],
        key: [u8; 20],
    ) -> Result<Vec<WireContact>, ServerError> {
        let sender = self.arrived(&ctx, nodeid)?;
        let nearest = self.table().nearest(&key, K, Some(sender.addr));
        Ok(nearest.iter().map(wire).collect())
    }

    async fn find_value(
        &self,
        ctx: Context,
        nodeid: [u8; 20],
        key: [u8; 20],
    ) -> Result<Found, ServerError> {
        let sender = self.arrived(&ctx, nodeid)?;
        if let Some(value) = self.storage().get(&key) {
            return Ok(Found::Value { value });
        }
        let nearest = self.table().nearest(&key, K, Some(sender.addr));
        Ok(Found::Nodes(nearest.iter().map(wire).collect()))
    }
}
