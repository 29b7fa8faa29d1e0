//! Little-endian binary values: basic-socket-rpc's argument and result encoding. The format
//! lives in rpc-core ([`rpc_core::le`]) beside MessagePack and JSON, since the basic-socket-rpc
//! transport needs it and no codec of messages goes with it; this module re-exports it.

pub use rpc_core::le::*;
