//! Codecs for rpc-stack: how values and messages become bytes on the wire.
//!
//! Each codec has two halves, the traits of which live in `rpc-core`:
//! a [`Format`](rpc_core::Format) for values (arguments and results) and a
//! [`Codec`](rpc_core::Codec) for whole messages (requests and responses with their ids).
//! Transports are generic over the codec; handlers never see it.
//!
//! | module | format | codec | wire-compatible with |
//! |---|---|---|---|
//! | [`msgpack`] | [`MsgPack`](msgpack::MsgPack) | [`RpcudpCodec`](msgpack::RpcudpCodec) | rpcudp 5.0.1, kademlia 2.2.3 |
//! | [`msgpack`] | [`MsgPack`](msgpack::MsgPack) | [`MsgpackRpcCodec`](msgpack::MsgpackRpcCodec) | MessagePack-RPC: neovim, its plugin hosts |
//! | [`jsonrpc`] | [`Json`](jsonrpc::Json) | [`JsonRpcCodec`](jsonrpc::JsonRpcCodec) | the JSON-RPC 2.0 specification, jsonrpcserver, jsonrpcclient |
//! | [`raw`] | [`Le`](raw::Le) | — (values only) | basic-socket-rpc 0.6.1 (arguments and results) |
//!
//! # Feature flags
//!
//! | name | what | default |
//! |---|---|---|
//! | `msgpack` | MessagePack values, rpcudp's datagram format and MessagePack-RPC | yes |
//! | `jsonrpc` | JSON values and JSON-RPC 2.0 | yes |
//! | `raw` | little-endian binary values (basic-socket-rpc) | yes |
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

#[cfg(feature = "jsonrpc")]
pub mod jsonrpc;
#[cfg(feature = "msgpack")]
pub mod msgpack;
#[cfg(feature = "raw")]
pub mod raw;
