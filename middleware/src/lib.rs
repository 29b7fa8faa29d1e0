//! RPC-aware tower middleware for rpc-stack, for clients and servers alike.
//!
//! Clients and servers are `tower::Service`s, so tower's own layers apply as they are
//! (`tower::timeout`, `tower::limit`, `tower::load_shed`, `tower::buffer`), and their errors keep
//! their meaning on both sides. This crate adds what needs to know about RPC:
//!
//! | layer | side | what |
//! |---|---|---|
//! | [`deadline::SetDeadlineLayer`] | client | gives each call a deadline, which transports honour (and the peer too, where the codec carries it) |
//! | [`deadline::DeadlineLayer`] | server | refuses calls whose deadline has passed and cancels handlers that outlive it |
//! | [`retry::RetryPolicy`] | client | retries only what provably did not run (or what is marked idempotent), under a budget, with backoff and jitter |
//! | [`limit::RateLimitLayer`] | both | GCRA rate limits, global or keyed by peer or any request key; reject at once or wait |
//! | [`limit::KeyedConcurrencyLimitLayer`] | both | at most N calls at once per peer (or key) |
//! | [`trace::TraceLayer`] | both | a tracing span per call and counters to export |
//!
//! A refusal on the server side is an answer (a [`ServerError`](rpc_core::ServerError) with the
//! overloaded, rate-limited or deadline-exceeded code); on the client side it is an
//! [`Error::Rejected`](rpc_core::Error::Rejected), never sent.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use rpc_core::Router;
//! use rpc_middleware::deadline::DeadlineLayer;
//! use rpc_middleware::limit::{RateLimitLayer, KeyedConcurrencyLimitLayer};
//! use tower::ServiceBuilder;
//!
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! // A server stack: per-peer rate and concurrency limits, load shedding, deadlines.
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::per_peer(100, Duration::from_secs(1)))
//!     .layer(KeyedConcurrencyLimitLayer::per_peer(8))
//!     .load_shed()
//!     .concurrency_limit(256)
//!     .layer(DeadlineLayer::new().default_timeout(Duration::from_secs(10)))
//!     .service(Router::new().route("add", add));
//! # let _ = service;
//! ```
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

pub mod authorize;
pub mod deadline;
pub mod limit;
pub mod retry;
pub mod trace;

mod reject;

pub use self::reject::Reject;
pub use rpc_core::BoxError;
