//! Ids, distances and the routing table: k-buckets that split as the paper's section 4.2 says
//! (and Python kademlia does), with a replacement cache per bucket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A 160-bit node id or key: a SHA-1 digest.
pub(crate) type Id = [u8; 20];

/// The SHA-1 digest of `key`'s UTF-8 bytes, as Python kademlia's `digest` makes keys.
pub(crate) fn digest(key: &[u8]) -> Id {
    use sha1::Digest;
    sha1::Sha1::digest(key).into()
}

/// The XOR distance between two ids, comparable as a big-endian number.
pub(crate) fn distance(a: &Id, b: &Id) -> Id {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Bit `i` of `id`, from the most significant.
fn bit(id: &Id, i: usize) -> bool {
    id[i / 8] & (0x80 >> (i % 8)) != 0
}

/// How many leading bits `a` and `b` share.
fn shared_bits(a: &Id, b: &Id) -> usize {
    let d = distance(a, b);
    d.iter()
        .position(|&x| x != 0)
        .map_or(160, |i| i * 8 + d[i].leading_zeros() as usize)
}

/// A node we know: its id and where it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contact {
    pub(crate) id: Id,
    pub(crate) addr: SocketAddr,
}

/// The contacts whose ids start with `prefix`'s first `depth` bits.
#[derive(Debug)]
struct Bucket {
    prefix: Id,
    depth: usize,
    /// Least recently seen first.
    nodes: Vec<Contact>,
    /// Contacts seen while the bucket was full, most recently seen last.
    replacements: Vec<Contact>,
    last_updated: Instant,
}

impl Bucket {
    fn new(prefix: Id, depth: usize) -> Self {
        Bucket {
            prefix,
            depth,
            nodes: Vec::new(),
            replacements: Vec::new(),
            last_updated: Instant::now(),
        }
    }

    fn covers(&self, id: &Id) -> bool {
        shared_bits(&self.prefix, id) >= self.depth
    }

    /// How many leading bits the bucket's contacts share (Python's `KBucket.depth`).
    fn shared_depth(&self) -> usize {
        let mut nodes = self.nodes.iter();
        let Some(first) = nodes.next() else { return 0 };
        nodes.fold(160, |d, n| d.min(shared_bits(&first.id, &n.id)))
    }

    /// The two halves of the bucket, its contacts and replacements sorted into them.
    fn split(self, k: usize) -> (Bucket, Bucket) {
        let mask = 0x80 >> (self.depth % 8);
        let (mut low, mut high) = (self.prefix, self.prefix);
        low[self.depth / 8] &= !mask;
        high[self.depth / 8] |= mask;
        let mut one = Bucket::new(low, self.depth + 1);
        let mut two = Bucket::new(high, self.depth + 1);
        for c in self.nodes.into_iter().chain(self.replacements) {
            let half = if bit(&c.id, self.depth) {
                &mut two
            } else {
                &mut one
            };
            half.add(c, k);
        }
        (one, two)
    }

    /// Adds `c`, or marks it seen now if it is there (keeping the address it was first seen at:
    /// another address cannot take over a known id); false if the bucket is full and `c` is new
    /// (it is then kept as a replacement).
    fn add(&mut self, c: Contact, k: usize) -> bool {
        if let Some(i) = self.nodes.iter().position(|n| n.id == c.id) {
            let known = self.nodes.remove(i);
            self.nodes.push(known);
            return true;
        }
        if let Some(i) = self.replacements.iter().position(|n| n.id == c.id) {
            let known = self.replacements.remove(i);
            self.replacements.push(known);
            return true;
        }
        if self.nodes.len() < k {
            self.nodes.push(c);
            return true;
        }
        self.replacements.push(c);
        let max = k.saturating_mul(5);
        if self.replacements.len() > max {
            self.replacements.remove(0);
        }
        false
    }

    /// A random id in the bucket's range.
    fn random_id(&self) -> Id {
        let mut id: Id = rand::random();
        for i in 0..self.depth {
            let mask = 0x80 >> (i % 8);
            id[i / 8] = (id[i / 8] & !mask) | (self.prefix[i / 8] & mask);
        }
        id
    }
}

/// What adding a contact needs done: nothing, or a ping of the bucket's least recently seen
/// contact (the bucket is full; the newcomer waits among the replacements).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    Done,
    PingHead(Contact),
}

/// The routing table of the node with id `me`.
#[derive(Debug)]
pub(crate) struct Table {
    me: Id,
    k: usize,
    buckets: Vec<Bucket>,
}

impl Table {
    pub(crate) fn new(me: Id, k: usize) -> Self {
        Table {
            me,
            k,
            buckets: vec![Bucket::new([0; 20], 0)],
        }
    }

    fn index_for(&self, id: &Id) -> usize {
        self.buckets
            .iter()
            .position(|b| b.covers(id))
            .expect("the buckets cover every id")
    }

    /// Whether `id` is neither a contact nor a replacement.
    pub(crate) fn is_new(&self, id: &Id) -> bool {
        let b = &self.buckets[self.index_for(id)];
        !b.nodes.iter().chain(&b.replacements).any(|n| n.id == *id)
    }

    /// Adds `c` (never this node itself), splitting its bucket where the paper allows.
    pub(crate) fn add(&mut self, c: Contact) -> Added {
        if c.id == self.me {
            return Added::Done;
        }
        loop {
            let i = self.index_for(&c.id);
            if self.buckets[i].add(c, self.k) {
                return Added::Done;
            }
            let bucket = &self.buckets[i];
            // Split a full bucket that covers this node's id, or whose depth is not a
            // multiple of 5 (section 4.2), while there are bits left to split on.
            let splittable =
                bucket.depth < 159 && (bucket.covers(&self.me) || bucket.shared_depth() % 5 != 0);
            if !splittable {
                return Added::PingHead(bucket.nodes[0]);
            }
            let bucket = self.buckets.remove(i);
            // The newcomer was kept as a replacement: the split sorts it with the others.
            let (one, two) = bucket.split(self.k);
            self.buckets.insert(i, two);
            self.buckets.insert(i, one);
        }
    }

    /// Drops a contact that did not answer (its id at that address: a peer naming a known id
    /// at another address evicts nobody); the bucket's most recent replacement takes its place.
    pub(crate) fn remove(&mut self, c: &Contact) {
        let i = self.index_for(&c.id);
        let b = &mut self.buckets[i];
        b.replacements.retain(|n| n != c);
        if let Some(at) = b.nodes.iter().position(|n| n == c) {
            b.nodes.remove(at);
            if let Some(r) = b.replacements.pop() {
                b.nodes.push(r);
            }
        }
    }

    /// The `k` contacts closest to `target`, nearest first, leaving out `target` itself and the
    /// contact at `exclude`; marks `target`'s bucket as looked up.
    pub(crate) fn nearest(
        &mut self,
        target: &Id,
        k: usize,
        exclude: Option<SocketAddr>,
    ) -> Vec<Contact> {
        let i = self.index_for(target);
        self.buckets[i].last_updated = Instant::now();
        let mut all: Vec<Contact> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter().copied())
            .filter(|c| c.id != *target && Some(c.addr) != exclude)
            .collect();
        all.sort_by_key(|c| distance(&c.id, target));
        all.truncate(k);
        all
    }

    /// A random id in each bucket not looked up for `age`, to refresh them (section 2.3).
    pub(crate) fn refresh_ids(&self, age: Duration) -> Vec<Id> {
        self.buckets
            .iter()
            .filter(|b| b.last_updated.elapsed() >= age)
            .map(Bucket::random_id)
            .collect()
    }

    /// Every contact.
    pub(crate) fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }
}
