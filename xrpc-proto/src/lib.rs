//! # xrpc-proto — the sans-IO core of xrpc
//!
//! Everything xrpc knows about its wire protocol lives here, as plain data structures and state
//! machines with no sockets, threads, async runtime or clock reads:
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | length-prefixed framing: an incremental [`FrameDecoder`] and the frame size limit |
//! | [`skipped`] | [`SkippedFrame`]: a received frame over the maximum, skipped whole, and whom it was for |
//! | [`message`] | the versioned binary message header ([`Header`], [`Message`]), see `docs/PROTOCOL.md` |
//! | [`metadata`] | a call's key/value [`Metadata`] and its types' [`Signature`] |
//! | [`compression`] | per-message LZ4/Zstd compression with bounded decompression |
//! | [`codec`] | the serde-based [`Codec`] trait and its implementations |
//! | [`packet`] | [`Packet`]: a message generic over its payload, as the state machines see it |
//! | [`call`] | a call's record for its handles, and the one answer to each act on it ([`CallWake`], [`SendError`]) |
//! | [`client`] | [`ClientConnection`]: ids, pending calls, deadlines, cancellation, heartbeats |
//! | [`server`] | [`ServerConnection`]: dispatch events, answers, deadlines, shutdown |
//! | [`idmap`] | [`IdMap`](idmap::IdMap): the per-call tables' fast keyed hash map |
//! | [`flow`] | credit-based flow control shared by both sides' streams |
//! | [`budget`] | server-wide bounds shared by a server's connections ([`ServerBounds`]) |
//! | [`rate`] | rates of work: token buckets, and the decompression rate of a server |
//! | [`peer`] | peer identity on local transports: [`PeerCredentials`], the allow-list [`PeerPolicy`] |
//! | [`admission`] | [`Admission`]: which accepted connection is served, whose place it takes |
//! | [`payload`] | [`Payload`]: encoded bytes, or an in-process value |
//! | [`wire`] | one connection's bytes ↔ packets ([`WireConfig`]) |
//! | [`error`] | [`TransportError`], [`ProtoError`], [`ChannelError`]: the lower layers' errors |
//! | [`route`] | method routing: [`Routes`], [`MethodTable`] (with each method's [`Signature`]) |
//! | [`peer`] | [`PeerInfo`]: who is at the other end of a connection |
//! | [`stats`] | [`ServerStats`]: what a server counts (undelivered notifications) |
//! | [`rpc_error`] | [`RpcError`]: how a call fails, and every mapping of errors onto it and onto the wire |
//! | [`retry`] | [`RetryPolicy`]: delays between connection attempts |
//! | [`client_session`] | [`ClientSession`]: the client end of a connection, bytes in and out |
//! | [`server_session`] | [`ServerSession`]: the server end, with routing, shutdown and closing |
//! | [`session`] | [`Session`]: the transport side of either, for one driver |
//! | [`balance`] | load balancing: endpoints, strategies, health, failover, pool policy |
//!
//! An adapter drives a [`ClientSession`] or a [`ServerSession`]: bytes (or whole frames) and
//! the time come in through `handle_*`, bytes to write, events and the next deadline leave
//! through `poll_*`. Every protocol decision is made here; the adapter crates own the IO, the
//! timers and the runtime.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod admission;
pub mod balance;
pub mod budget;
pub mod call;
pub mod client;
pub mod client_session;
pub mod codec;
pub mod compression;
mod deadlines;
mod depth;
pub mod error;
pub mod flow;
pub mod frame;
pub mod idmap;
pub mod introspect;
pub mod message;
pub mod metadata;
pub mod packet;
pub mod payload;
pub mod peer;
pub mod rate;
pub mod retry;
pub mod route;
pub mod rpc_error;
pub mod server;
pub mod server_session;
pub mod session;
pub mod skipped;
pub mod stall;
pub mod stats;
pub mod wire;

/// The byte buffers of the API, re-exported so it can be named without another dependency.
pub use bytes;

pub use admission::{Admission, PeerKey, Refusal, Slot};
pub use budget::{HandlerBudget, OutputBudget, ReadBudget, ServerBounds};
pub use call::{CallWake, SendError};
pub use client::{
    CallError, CallKind, CallOptions, ClientConfig, ClientConnection, ClientEvent,
    MAX_UNSENT_PONGS, StreamSendError,
};
pub use client_session::{ClientSession, TRANSMIT_BATCH};
#[cfg(feature = "codec-cbor")]
pub use codec::CborCodec;
#[cfg(feature = "codec-json")]
pub use codec::JsonCodec;
#[cfg(feature = "codec-messagepack")]
pub use codec::MessagePackCodec;
#[cfg(feature = "codec-postcard")]
pub use codec::PostcardCodec;
pub use codec::{BincodeCodec, Codec, CodecError, CodecId, codec_name};
pub use compression::{
    CompressionConfig, CompressionError, CompressionType, Compressor, DecompressionBudget,
};
pub use error::{ChannelError, ProtoError, TransportError};
pub use frame::{
    DEFAULT_MAX_FRAME_SIZE, FRAME_PREFIX_LEN, FrameDecoder, FrameError, TLS_SNIFF_LEN, TlsRecord,
    tls_record_at_start,
};
pub use message::{
    ErrorCode, Flags, Header, Message, MessageDecoder, MessageEncoder, MessageKind, ParsedHeader,
    RemoteError,
};
pub use metadata::{Metadata, MetadataError, Signature};
pub use packet::{Body, Packet};
pub use payload::{Payload, WireSize};
pub use peer::{PeerCredentials, PeerInfo, PeerPolicy, PeerRefused};
pub use retry::RetryPolicy;
pub use route::{MethodTable, Routes};
pub use rpc_error::{
    PayloadOf, RpcError, decode_as, decode_as_with, decode_payload, decode_payload_with,
    handler_outcome, panic_message, payload_bytes, served,
};
pub use server::{
    IncomingCall, MAX_BACKLOG_PACKETS, ProtocolViolation, ServerConfig, ServerConnection,
    ServerEvent, ServerSendError,
};
pub use server_session::{CloseReason, HandlerOutcome, ServerSession, ServerSessionEvent};
pub use session::Session;
pub use skipped::SkippedFrame;
pub use stats::{NotificationDrop, NotificationStats, ServerCounters, ServerStats};
pub use wire::{Unsendable, WireConfig};
