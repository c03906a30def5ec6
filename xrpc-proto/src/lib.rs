//! # xrpc-proto — the sans-IO core of xrpc
//!
//! Everything xrpc knows about its wire protocol lives here, as plain data structures and state
//! machines with no sockets, threads, async runtime or clock reads:
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | length-prefixed framing: an incremental [`FrameDecoder`] and the frame size limit |
//! | [`message`] | the versioned binary message header ([`Header`], [`Message`]), see `docs/PROTOCOL.md` |
//! | [`compression`] | per-message LZ4/Zstd compression with bounded decompression |
//! | [`codec`] | the serde-based [`Codec`] trait and its implementations |
//! | [`packet`] | [`Packet`]: a message generic over its payload, as the state machines see it |
//! | [`client`] | [`ClientConnection`]: ids, pending calls, deadlines, cancellation, heartbeats |
//! | [`server`] | [`ServerConnection`]: dispatch events, answers, deadlines, shutdown |
//! | [`idmap`] | [`IdMap`](idmap::IdMap): the per-call tables' fast keyed hash map |
//! | [`flow`] | credit-based flow control shared by both sides' streams |
//!
//! Bytes come in through `handle_*`/`decode` functions and leave through `poll_*`/`encode`
//! functions; the adapter crates own the IO, the timers and the runtime.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod compression;
mod depth;
pub mod error;
pub mod flow;
pub mod frame;
pub mod idmap;
pub mod message;
pub mod packet;
pub mod server;
mod timer;

pub use client::{
    CallError, CallKind, CallOptions, ClientConfig, ClientConnection, ClientEvent,
    MAX_UNSENT_PONGS, StreamSendError,
};
#[cfg(feature = "codec-cbor")]
pub use codec::CborCodec;
#[cfg(feature = "codec-json")]
pub use codec::JsonCodec;
#[cfg(feature = "codec-messagepack")]
pub use codec::MessagePackCodec;
#[cfg(feature = "codec-postcard")]
pub use codec::PostcardCodec;
pub use codec::{BincodeCodec, Codec, CodecError, CodecId};
pub use compression::{CompressionConfig, CompressionError, CompressionType, Compressor};
pub use error::ProtoError;
pub use frame::{DEFAULT_MAX_FRAME_SIZE, FRAME_PREFIX_LEN, FrameDecoder, FrameError};
pub use message::{
    ErrorCode, Flags, Header, Message, MessageDecoder, MessageEncoder, MessageKind, RemoteError,
};
pub use packet::{Body, Packet};
pub use server::{
    IncomingCall, MAX_BACKLOG_PACKETS, ProtocolViolation, ServerConfig, ServerConnection,
    ServerEvent, ServerSendError,
};
