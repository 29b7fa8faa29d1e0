//! Rate and concurrency limits, global or keyed by peer, by IP address, or by any key taken from
//! the request.
//!
//! Global concurrency limits and load shedding are tower's (`ServiceBuilder::concurrency_limit`,
//! `load_shed`); an exclusive, one-at-a-time service is `concurrency_limit(1)`. The layers here add
//! keys: each peer (or key) has its own limit, so one noisy peer cannot starve the others. State
//! per key is evicted once idle, so memory stays bounded whatever the number of peers.

mod cells;
mod concurrency;
mod key;
mod rate;

pub use self::concurrency::{
    KeyedConcurrencyFuture, KeyedConcurrencyLimit, KeyedConcurrencyLimitLayer,
};
pub use self::key::{ByIdentity, ByIp, ByPeer, Global, IdentityKey, KeyFn, PeerKey};
pub use self::rate::{RateLimit, RateLimitFuture, RateLimitLayer};
