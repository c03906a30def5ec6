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
//!
//! Bytes come in through `handle_*`/`decode` functions and leave through `poll_*`/`encode`
//! functions; adapter crates (`xrpc-tokio`, …) own the IO.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod codec;
pub mod compression;
pub mod error;
pub mod frame;
pub mod message;

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
