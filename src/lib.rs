//! # xrpc
//!
//! High-performance IPC/RPC for Rust: in-process channels for development, shared memory for
//! production IPC, TCP for the network — the same client and server code over each.
//!
//! This facade re-exports the layers; see the README for a tour.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use xrpc_proto as proto;
pub use xrpc_proto::{BincodeCodec, Codec, CodecError, CompressionConfig, CompressionType};
#[cfg(feature = "codec-cbor")]
pub use xrpc_proto::CborCodec;
#[cfg(feature = "codec-json")]
pub use xrpc_proto::JsonCodec;
#[cfg(feature = "codec-messagepack")]
pub use xrpc_proto::MessagePackCodec;
#[cfg(feature = "codec-postcard")]
pub use xrpc_proto::PostcardCodec;
