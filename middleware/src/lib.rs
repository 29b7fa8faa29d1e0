//! RPC-aware middleware for rpc-stack.
//!
//! Clients and servers in rpc-stack are `tower::Service`s, so tower's own layers apply as they
//! are: `tower::timeout`, `tower::limit`, `tower::load_shed`, `tower::buffer`. Their errors are
//! understood on both sides: a caller's [`Error::from_boxed`](rpc_core::Error::from_boxed) turns
//! tower's `Elapsed` into a timeout and `Overloaded` into an overload, and a server answers them
//! with the deadline-exceeded and overloaded codes.
//!
//! This crate will hold the parts that need to know about RPC: deadline propagation, retry
//! policies that know which failures prove a call was not processed, keyed rate limits and
//! per-peer concurrency limits.

pub use rpc_core::BoxError;
