//! What a limit is keyed by.

use std::hash::Hash;

use rpc_core::{Peer, Request};

/// Takes the key a limit applies to from a request.
pub trait KeyFn: Clone + Send + Sync + 'static {
    /// The key.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// The key of `req`.
    fn key(&self, req: &Request) -> Self::Key;
}

/// One limit for everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyFn for Global {
    type Key = ();
    fn key(&self, _: &Request) {}
}

/// A limit per peer: per socket address (for IP transports) or per process (Unix sockets).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByPeer;

impl KeyFn for ByPeer {
    type Key = Option<Peer>;
    fn key(&self, req: &Request) -> Option<Peer> {
        req.context().peer().cloned()
    }
}

impl<F, K> KeyFn for F
where
    F: Fn(&Request) -> K + Clone + Send + Sync + 'static,
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    type Key = K;
    fn key(&self, req: &Request) -> K {
        self(req)
    }
}
