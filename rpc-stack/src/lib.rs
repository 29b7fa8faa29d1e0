//! rpc-stack: RPC as `tower::Service`s. Handlers are written once and served over any transport
//! with any codec; a client is a `tower::Service` too, so timeouts, retries, concurrency and
//! rate limits are tower layers.
//!
//! This crate is the one to depend on. Its root holds the service model (`Router`, `Client`,
//! `Context`, `Error`, `ServerError`, ...) and the [`service`] attribute; the parts are its
//! modules, each behind a cargo feature:
//!
//! | module | what | features |
//! |---|---|---|
//! | [`transports`] | UDP, TCP, Unix sockets, in-memory pipes, child processes and stdio, any byte stream, basic-socket-rpc | `udp`, `tcp`, `unix`, `memory`, `process`, `raw` |
//! | [`codecs`] | msgpack (rpcudp's wire), JSON-RPC 2.0, basic-socket-rpc's values | `msgpack`, `jsonrpc`, `raw` |
//! | [`middleware`] | deadlines, retries, keyed rate and concurrency limits, tracing | `middleware` |
//! | [`service`] | one trait declares a service, its client and its routes | `macros` |
//! | `balance` | a client over many servers: balancing, failover, keyed routing, discovery | `balance` (with `balance-dns`, `balance-etcd`) |
//!
//! All but `balance` are on by default; `full` adds `balance` with DNS and etcd discovery
//! (building etcd's client runs the protobuf compiler, `protoc`) and `metrics` (counters through
//! the `metrics` facade).
//!
//! ```
//! use rpc_stack::codecs::msgpack::RpcudpCodec;
//! use rpc_stack::transports::udp;
//! use rpc_stack::{Context, ServerError};
//!
//! #[rpc_stack::service]
//! pub trait Greeter {
//!     async fn sayhi(&self, ctx: Context, name: String) -> String;
//!     async fn divide(&self, a: f64, b: f64) -> Result<f64, ServerError>;
//! }
//!
//! #[derive(Clone)]
//! struct Hello;
//!
//! impl Greeter for Hello {
//!     async fn sayhi(&self, _: Context, name: String) -> String {
//!         format!("Hello {name}")
//!     }
//!     async fn divide(&self, a: f64, b: f64) -> Result<f64, ServerError> {
//!         if b == 0.0 {
//!             return Err(ServerError::invalid_params("division by zero"));
//!         }
//!         Ok(a / b)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = udp::Builder::new()
//!     .serve(Hello.into_router())
//!     .bind("127.0.0.1:0", RpcudpCodec::new())
//!     .await?;
//! let me = udp::Endpoint::bind("127.0.0.1:0", RpcudpCodec::new()).await?;
//! let greeter = GreeterClient::new(me.client(server.local_addr()));
//! assert_eq!(greeter.sayhi("Ada".into()).await?, "Hello Ada");
//! assert_eq!(greeter.divide(1.0, 4.0).await?, 0.25);
//! assert!(greeter.divide(1.0, 0.0).await.is_err());
//! # Ok(())
//! # }
//! ```

#[doc(inline)]
pub use rpc_core::*;

/// `#[rpc_stack::service]` on a trait of `async fn`s declares a service.
///
/// ```
/// use rpc_stack::{Context, ServerError};
///
/// #[rpc_stack::service(namespace = "greeter")]
/// pub trait Greeter {
///     /// Greets.
///     async fn sayhi(&self, ctx: Context, name: String) -> String;
///     async fn divide(&self, a: f64, b: f64) -> Result<f64, ServerError>;
///     #[rpc(name = "get_data")]
///     async fn data(&self) -> (String, u32);
///     #[rpc(id = 2)]
///     async fn add_2_words(&self, a: u32, b: u32) -> u32;
///     #[rpc(notification)]
///     async fn log(&self, line: String);
/// }
/// ```
///
/// It generates:
///
/// - the trait, each `async fn` a method returning a `Send` future (implement them with
///   `async fn`), and a provided `into_router(self) -> Router` for every implementor that is
///   `Clone + Send + Sync + 'static`: each call runs on a clone of it;
/// - `GreeterClient<S>`, made with `GreeterClient::new(client)` from any [`Client`] (so its
///   tower layers stay), with a method per RPC taking the same parameters without `&self` and a
///   leading [`Context`], returning `Result<T, Error>` (`T` the handler's value, or its `Ok`
///   type); a notification's method returns once the notification is sent.
///
/// Method names are the functions' names, or `#[rpc(name = "...")]`'s, prefixed with
/// `namespace.` when the service has one; parameter names are JSON-RPC's by-name params;
/// `#[rpc(id = N)]` also serves the method under basic-socket-rpc's command id `N` (and the
/// generated client calls it by id over that codec). Routers of several services merge
/// (`Router::merge`) and serve on one endpoint. Mistakes in the trait (a method that is not
/// `async`, takes no `&self`, a duplicate name or id, an unknown option) are compile errors
/// pointing at the item.
#[cfg(feature = "macros")]
pub use rpc_stack_macros::service;

/// Transports: UDP datagrams, TCP, Unix sockets, in-memory pipes and any byte stream, and
/// basic-socket-rpc's protocol (`rpc_transports`).
pub mod transports {
    #[doc(inline)]
    pub use rpc_transports::*;
}

/// Codecs: msgpack in rpcudp's format, JSON-RPC 2.0, basic-socket-rpc's little-endian values
/// (`rpc_codecs`).
pub mod codecs {
    #[doc(inline)]
    pub use rpc_codecs::*;
}

/// RPC-aware tower middleware: deadlines, retry policies, keyed rate and concurrency limits,
/// tracing (`rpc_middleware`).
#[cfg(feature = "middleware")]
pub mod middleware {
    #[doc(inline)]
    pub use rpc_middleware::*;
}

/// A client over many servers (`rpc_balance`, feature `balance`): tower's p2c balancing, failover,
/// keyed routing, and discovery from a list, a changing set, DNS (`balance-dns`) or etcd
/// (`balance-etcd`).
#[cfg(feature = "balance")]
pub mod balance {
    #[doc(inline)]
    pub use rpc_balance::*;
}

/// tokio, the runtime the transports run on (feature `rt`): a program that depends on
/// `rpc-stack` alone starts it with `#[rpc_stack::tokio::main(crate = "rpc_stack::tokio")]`.
#[cfg(feature = "rt")]
pub use tokio;

/// What the service macro's code calls; not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::fmt;

    use rpc_core::{Format, Method};
    use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
    use serde::{Serialize, Serializer};

    /// A `Vec<u8>` or `[u8; N]` of a service's signature, as the peer must see it: msgpack bin
    /// (serde's bytes), not an array of integers. Decodes from bytes or from a sequence.
    #[derive(Debug)]
    pub struct Bin<T>(pub T);

    impl<T: AsRef<[u8]>> Serialize for Bin<T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0.as_ref())
        }
    }

    /// The byte types a [`Bin`] holds.
    pub trait FromBytes: Sized {
        /// What the decoder expects, for its errors.
        const EXPECTED: &'static str;
        fn from_bytes(bytes: Vec<u8>) -> Option<Self>;
    }

    impl FromBytes for Vec<u8> {
        const EXPECTED: &'static str = "bytes";
        fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
            Some(bytes)
        }
    }

    impl<const N: usize> FromBytes for [u8; N] {
        const EXPECTED: &'static str = "a fixed number of bytes";
        fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
            bytes.try_into().ok()
        }
    }

    impl<'de, T: FromBytes> Deserialize<'de> for Bin<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: FromBytes> Visitor<'de> for V<T> {
                type Value = Bin<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(T::EXPECTED)
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                    self.visit_byte_buf(v.to_vec())
                }
                fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                    let n = v.len();
                    T::from_bytes(v)
                        .map(Bin)
                        .ok_or_else(|| E::invalid_length(n, &self))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                    while let Some(b) = seq.next_element::<u8>()? {
                        v.push(b);
                    }
                    self.visit_byte_buf(v)
                }
            }
            d.deserialize_bytes(V(std::marker::PhantomData))
        }
    }

    /// The method a generated client calls: by command id over a codec whose values are
    /// basic-socket-rpc's (its protocol knows no names), else by name.
    #[inline]
    pub fn method(format: &'static dyn Format, name: &'static str, id: Option<u16>) -> Method {
        match id {
            Some(id) if format.name() == rpc_core::le::LE.name() => Method::Id(id),
            _ => Method::from(name),
        }
    }
}
