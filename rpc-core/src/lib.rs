//! The service model of rpc-stack: every RPC is a [`tower::Service`].
//!
//! This crate holds what every transport and codec plugs into:
//!
//! - **Messages.** A [`Request`] is a [`Method`] (a name, or a 16-bit command id), its arguments as
//!   an encoded [`Payload`], and a [`Context`] (peer, deadline, a way to call the peer back,
//!   extensions). A [`Response`] is an encoded result or a [`ServerError`].
//! - **Server side.** Handlers are plain async functions with typed arguments (see [`handler`]);
//!   a [`Router`] maps method names and command ids to them and is a
//!   `Service<Request, Response = Response>`, so any tower layer wraps it. One router serves any
//!   number of transports and codecs at once.
//! - **Client side.** A transport gives a `Service<Request, Response = Payload>` per peer; a
//!   [`Client`] puts typed calls on it (`client.call::<String>("sayhi", ("Snake Plissken",))`) and
//!   keeps them when tower layers are added. Many calls share one socket, matched by id (the
//!   transports' call tables).
//! - **Encodings.** A [`Format`] turns values into bytes (msgpack, JSON, ...); a [`Codec`] turns
//!   whole messages into frames. Both are object safe or generic at the transport, never per handler.
//! - **Errors.** [`Error`] is what a caller sees; [`ServerError`] is what travels back on the wire.
//!
//! Transports live in `rpc-transports`, codecs in `rpc-codecs`, middleware in `rpc-middleware`.
//!
//! # Example
//!
//! A router is a service: call it directly, wrap it in layers, or serve it on a transport.
//!
//! ```
//! use rpc_core::{Context, Router, ServerError};
//!
//! async fn divide(a: f64, b: f64) -> Result<f64, ServerError> {
//!     if b == 0.0 {
//!         return Err(ServerError::invalid_params("division by zero"));
//!     }
//!     Ok(a / b)
//! }
//!
//! async fn whoami(ctx: Context) -> String {
//!     ctx.peer().map(|p| p.to_string()).unwrap_or_default()
//! }
//!
//! let router = Router::new().route("divide", divide).route("whoami", whoami);
//! # let _ = router;
//! ```
//!
//! # Layout
//!
//! - [`message`]: [`Request`], [`Response`], [`Method`].
//! - [`context`]: [`Context`], [`Peer`], [`Extensions`].
//! - [`handler`], [`router`]: the server side.
//! - [`client`]: the client side.
//! - [`format`](mod@format), [`codec`]: encodings; [`msgpack`], [`json`] and [`le`]: the
//!   MessagePack, JSON and little-endian (basic-socket-rpc) value formats.
//! - [`error`]: the error model.
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

pub mod client;
pub mod codec;
pub mod context;
pub mod error;
pub mod format;
pub mod handler;
mod hash;
pub mod json;
pub mod le;
pub mod message;
pub mod msgpack;
pub mod router;

pub use client::{BoxChannel, Client};
pub use codec::{Codec, DecodeError, IdSeed, Message};
pub use context::{Context, Extensions, Peer};
pub use error::{BoxError, Error, ErrorCode, Result, ServerError};
pub use format::{Format, Payload};
pub use handler::{Handler, IntoReply};
pub use message::{Method, MethodName, Request, Response};
pub use router::{Route, Router};

#[doc(inline)]
pub use tower::{Layer, Service};
