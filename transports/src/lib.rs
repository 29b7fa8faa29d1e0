//! Transports for rpc-stack: they move a [`Codec`](rpc_core::Codec)'s frames between peers and
//! drive a server's [`Service`](rpc_core::Service) and a client's calls.
//!
//! | module | medium | framing | peers per socket |
//! |---|---|---|---|
//! | [`udp`] | UDP datagrams | one datagram, one message | any: one socket serves and calls everyone |
//!
//! Every transport gives the same two things: a way to serve a router (or any
//! `Service<Request, Response = Response>`), and per peer a client `Service<Request,
//! Response = Payload>` that [`rpc_core::Client`] puts typed calls on. Swapping transports changes
//! the line that binds, not the handlers nor the calls.
//!
//! # Feature flags
//!
//! | name | what | default |
//! |---|---|---|
//! | `udp` | the UDP transport | yes |
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

#[cfg(feature = "udp")]
pub mod udp;
