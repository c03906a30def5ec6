//! The xrpc message: a versioned binary header, an optional method name and a payload.
//!
//! The byte layout is specified in `docs/PROTOCOL.md`. In short, every message starts with a
//! fixed 16-byte header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `"XR"` (0x58 0x52) |
//! | 2 | 1 | version (1) |
//! | 3 | 1 | [`MessageKind`] |
//! | 4 | 1 | [`Flags`] |
//! | 5 | 1 | codec id ([`CodecId`]) |
//! | 6 | 1 | compression id ([`CompressionType`]) |
//! | 7 | 1 | method name length `M` |
//! | 8 | 8 | request / stream id, u64 little-endian |
//!
//! followed by the optional fields the flags announce (timeout: u64 µs; window: u32;
//! signature fingerprint: u64), the method name (`M` bytes of UTF-8), the metadata block if
//! the flags announce one (u16 length `B`, then `B` bytes of entries, see
//! [`Metadata`]) and the payload (the rest of the frame).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{CodecError, CodecId};
use crate::compression::{CompressionConfig, CompressionType, Compressor};
use crate::error::ProtoError;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, FRAME_PREFIX_LEN, FrameError};
use crate::metadata::{MAX_METADATA_BLOCK_LEN, Metadata};

/// The magic bytes `"XR"` that open every message.
pub const MAGIC: [u8; 2] = *b"XR";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed part of the header.
pub const FIXED_HEADER_LEN: usize = 16;
/// Longest method name a header can carry.
pub const MAX_METHOD_LEN: usize = u8::MAX as usize;
/// Longest possible header before the metadata block: fixed part, timeout, window,
/// signature and a 255-byte method name.
pub const MAX_HEADER_LEN: usize = FIXED_HEADER_LEN + 8 + 4 + 8 + MAX_METHOD_LEN;

/// What a message is (header byte 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// A call that expects an answer (client → server). Carries a method name.
    Request = 1,
    /// The successful answer to a request (server → client).
    Response = 2,
    /// The failed answer to a request, or the abnormal end of a stream; the payload is a
    /// [`RemoteError`].
    Error = 3,
    /// A one-way call that gets no answer (client → server). Carries a method name.
    Notification = 4,
    /// One item of a stream, in either direction.
    StreamItem = 5,
    /// The normal end of a stream, in either direction.
    StreamEnd = 6,
    /// The client gives up on a call or stream (client → server).
    Cancel = 7,
    /// Liveness probe; the receiver answers with a `Pong` of the same id and payload.
    Ping = 8,
    /// Answer to a `Ping`.
    Pong = 9,
    /// Flow control: the sender may now send `window` more stream items on stream `id`.
    Credit = 10,
}

impl MessageKind {
    /// Parses the kind byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Error,
            4 => Self::Notification,
            5 => Self::StreamItem,
            6 => Self::StreamEnd,
            7 => Self::Cancel,
            8 => Self::Ping,
            9 => Self::Pong,
            10 => Self::Credit,
            _ => return None,
        })
    }

    /// Whether this kind carries a method name.
    pub fn has_method(self) -> bool {
        matches!(self, Self::Request | Self::Notification)
    }
}

/// The header's flag byte (header byte 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    /// A u64 timeout in microseconds follows the fixed header.
    pub const HAS_TIMEOUT: u8 = 0x01;
    /// The request opens a stream of items from the client (client or bidirectional streaming).
    pub const CLIENT_STREAM: u8 = 0x02;
    /// The request asks for a stream of items from the server (server or bidirectional streaming).
    pub const SERVER_STREAM: u8 = 0x04;
    /// A u32 flow-control window follows the fixed header (and the timeout, if any).
    pub const HAS_WINDOW: u8 = 0x08;
    /// A metadata block follows the method name (requests and notifications).
    pub const HAS_METADATA: u8 = 0x10;
    /// A u64 signature fingerprint follows the window (requests and notifications).
    pub const HAS_SIGNATURE: u8 = 0x20;
    /// Bits that must be zero in version 1.
    pub const RESERVED: u8 = 0xc0;

    /// The raw byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `mask` is set.
    pub fn contains(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// The decoded fields of a message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the message is.
    pub kind: MessageKind,
    /// The request id; stream messages, cancels and credits reuse the id of the request that
    /// opened the call.
    pub id: u64,
    /// How the payload is serialized (0 = raw bytes).
    pub codec: CodecId,
    /// How the payload is compressed on the wire. Set by the encoder, reported by the decoder.
    pub compression: CompressionType,
    /// On a request: the client will send a stream of items.
    pub client_stream: bool,
    /// On a request: the client expects a stream of items.
    pub server_stream: bool,
    /// On a request: the time the caller is willing to wait, relative to receipt.
    pub timeout: Option<Duration>,
    /// On a request: the initial window for the server's stream. On a credit: the increment.
    pub window: Option<u32>,
    /// On a request or notification: the fingerprint of the caller's
    /// [`Signature`](crate::Signature) for the method.
    pub signature: Option<u64>,
}

impl Header {
    /// A header of `kind` and `id` with every optional field empty.
    pub const fn new(kind: MessageKind, id: u64) -> Self {
        Self {
            kind,
            id,
            codec: 0,
            compression: CompressionType::None,
            client_stream: false,
            server_stream: false,
            timeout: None,
            window: None,
            signature: None,
        }
    }

    /// The same header with a codec id.
    pub const fn with_codec(mut self, codec: CodecId) -> Self {
        self.codec = codec;
        self
    }

    /// The flag byte for this header.
    pub fn flags(&self) -> Flags {
        let mut f = 0;
        if self.timeout.is_some() {
            f |= Flags::HAS_TIMEOUT;
        }
        if self.client_stream {
            f |= Flags::CLIENT_STREAM;
        }
        if self.server_stream {
            f |= Flags::SERVER_STREAM;
        }
        if self.window.is_some() {
            f |= Flags::HAS_WINDOW;
        }
        if self.signature.is_some() {
            f |= Flags::HAS_SIGNATURE;
        }
        Flags(f)
    }

    /// Checks the per-kind rules of `docs/PROTOCOL.md` §3 for a header, method length and
    /// metadata presence.
    fn validate(&self, method_len: usize, has_metadata: bool) -> Result<(), ProtoError> {
        let kind = self.kind;
        let bad = |what| Err(ProtoError::InvalidField { kind, what });
        if kind.has_method() {
            if method_len == 0 {
                return bad("method name missing");
            }
        } else if method_len != 0 {
            return bad("method name not allowed");
        }
        if (self.client_stream || self.server_stream) && kind != MessageKind::Request {
            return bad("stream flags are only allowed on requests");
        }
        if self.timeout.is_some() && !kind.has_method() {
            return bad("timeout is only allowed on requests and notifications");
        }
        if self.signature.is_some() && !kind.has_method() {
            return bad("signature is only allowed on requests and notifications");
        }
        if has_metadata && !kind.has_method() {
            return bad("metadata is only allowed on requests and notifications");
        }
        match (kind, self.window) {
            (MessageKind::Credit, None) => bad("window missing"),
            (MessageKind::Credit | MessageKind::Request, _) | (_, None) => Ok(()),
            (_, Some(_)) => bad("window not allowed"),
        }
    }

    /// Parses a header from the start of `buf` (a message without its frame prefix).
    ///
    /// Returns the header, the method name's byte range, the metadata entries' byte range
    /// (empty when absent; not yet validated, see [`Metadata::from_wire`]) and the payload's
    /// start offset. Every malformed input yields a typed error.
    pub fn parse(buf: &[u8]) -> Result<ParsedHeader, ProtoError> {
        let Some(fixed) = buf.first_chunk::<FIXED_HEADER_LEN>() else {
            return Err(ProtoError::Truncated {
                needed: FIXED_HEADER_LEN,
                got: buf.len(),
            });
        };
        if fixed[0..2] != MAGIC {
            return Err(ProtoError::BadMagic(u16::from_be_bytes([
                fixed[0], fixed[1],
            ])));
        }
        if fixed[2] != VERSION {
            return Err(ProtoError::UnsupportedVersion(fixed[2]));
        }
        let kind = MessageKind::from_u8(fixed[3]).ok_or(ProtoError::UnknownKind(fixed[3]))?;
        let flags = fixed[4];
        if flags & Flags::RESERVED != 0 {
            return Err(ProtoError::ReservedFlags(flags & Flags::RESERVED));
        }
        let codec = fixed[5];
        let compression =
            CompressionType::from_id(fixed[6]).ok_or(ProtoError::UnknownCompression(fixed[6]))?;
        let method_len = fixed[7] as usize;
        let mut id = [0u8; 8];
        id.copy_from_slice(&fixed[8..16]);
        let id = u64::from_le_bytes(id);

        let mut pos = FIXED_HEADER_LEN;
        let timeout = if flags & Flags::HAS_TIMEOUT != 0 {
            let v = take::<8>(buf, &mut pos)?;
            Some(Duration::from_micros(u64::from_le_bytes(v)))
        } else {
            None
        };
        let window = if flags & Flags::HAS_WINDOW != 0 {
            Some(u32::from_le_bytes(take::<4>(buf, &mut pos)?))
        } else {
            None
        };
        let signature = if flags & Flags::HAS_SIGNATURE != 0 {
            Some(u64::from_le_bytes(take::<8>(buf, &mut pos)?))
        } else {
            None
        };
        let method_start = pos;
        let method_end = pos + method_len;
        let method = buf.get(pos..method_end).ok_or(ProtoError::Truncated {
            needed: method_end,
            got: buf.len(),
        })?;
        if std::str::from_utf8(method).is_err() {
            return Err(ProtoError::InvalidMethod);
        }
        pos = method_end;
        let has_metadata = flags & Flags::HAS_METADATA != 0;
        let metadata = if has_metadata {
            let len = u16::from_le_bytes(take::<2>(buf, &mut pos)?) as usize;
            if len == 0 {
                return Err(ProtoError::InvalidMetadata("an empty block"));
            }
            let end = pos + len;
            if end > buf.len() {
                return Err(ProtoError::Truncated {
                    needed: end,
                    got: buf.len(),
                });
            }
            pos = end;
            end - len..end
        } else {
            pos..pos
        };
        let header = Header {
            kind,
            id,
            codec,
            compression,
            client_stream: flags & Flags::CLIENT_STREAM != 0,
            server_stream: flags & Flags::SERVER_STREAM != 0,
            timeout,
            window,
            signature,
        };
        header.validate(method_len, has_metadata)?;
        Ok(ParsedHeader {
            header,
            method: method_start..method_start + method_len,
            metadata,
            payload_start: pos,
        })
    }
}

/// What [`Header::parse`] finds in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    /// The header fields.
    pub header: Header,
    /// The method name's byte range (valid UTF-8).
    pub method: std::ops::Range<usize>,
    /// The metadata entries' byte range (empty without metadata), not yet validated.
    pub metadata: std::ops::Range<usize>,
    /// Where the payload starts.
    pub payload_start: usize,
}

/// Reads `N` bytes at `*pos`, advancing it, or reports truncation.
fn take<const N: usize>(buf: &[u8], pos: &mut usize) -> Result<[u8; N], ProtoError> {
    let end = *pos + N;
    let s = buf.get(*pos..end).ok_or(ProtoError::Truncated {
        needed: end,
        got: buf.len(),
    })?;
    let mut v = [0u8; N];
    v.copy_from_slice(s);
    *pos = end;
    Ok(v)
}

/// A decoded message. The method name and payload share the frame's buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header fields.
    pub header: Header,
    method: Bytes,
    metadata: Metadata,
    /// The payload: decompressed when the message came from a [`MessageDecoder`].
    pub payload: Bytes,
}

impl Message {
    /// A message with the given header, method name and payload.
    ///
    /// Fails if the method name is longer than 255 bytes or the fields break the rules of
    /// the message kind.
    pub fn new(header: Header, method: &str, payload: Bytes) -> Result<Self, ProtoError> {
        Self::with_metadata(header, method, Metadata::new(), payload)
    }

    /// A message with the given header, method name, metadata and payload.
    ///
    /// Fails if the method name is longer than 255 bytes or the fields break the rules of
    /// the message kind.
    pub fn with_metadata(
        header: Header,
        method: &str,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<Self, ProtoError> {
        if method.len() > MAX_METHOD_LEN {
            return Err(ProtoError::MethodTooLong(method.len()));
        }
        header.validate(method.len(), !metadata.is_empty())?;
        Ok(Self {
            header,
            method: Bytes::copy_from_slice(method.as_bytes()),
            metadata,
            payload,
        })
    }

    /// The metadata (empty for kinds without it).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The method name (empty for kinds without one).
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// Splits the message into its header, method name bytes (valid UTF-8), metadata and
    /// payload.
    pub fn into_parts(self) -> (Header, Bytes, Metadata, Bytes) {
        (self.header, self.method, self.metadata, self.payload)
    }

    /// Parses a message from a frame (without its length prefix), leaving a compressed payload
    /// compressed. See [`MessageDecoder::decode`] for the usual path. Malformed metadata is a
    /// malformed message ([`ProtoError::InvalidMetadata`]).
    pub fn decode_raw(frame: Bytes) -> Result<Self, ProtoError> {
        let parsed = Header::parse(&frame)?;
        let metadata = if parsed.metadata.is_empty() {
            Metadata::new()
        } else {
            Metadata::from_wire(frame.slice(parsed.metadata)).map_err(|e| match e {
                crate::MetadataError::Malformed(what) => ProtoError::InvalidMetadata(what),
                _ => ProtoError::InvalidMetadata("invalid entries"),
            })?
        };
        Ok(Self {
            header: parsed.header,
            method: frame.slice(parsed.method),
            metadata,
            payload: frame.slice(parsed.payload_start..),
        })
    }
}

/// Error codes carried by [`MessageKind::Error`] messages (first two payload bytes, LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No handler is registered under the method name.
    MethodNotFound,
    /// The handler returned an error.
    Handler,
    /// The handler panicked.
    Panic,
    /// The request payload could not be decoded.
    BadRequest,
    /// The request's timeout passed before the handler finished.
    DeadlineExceeded,
    /// The call was cancelled.
    Cancelled,
    /// The request uses a codec, compression or feature the server does not support.
    Unsupported,
    /// The peer broke the protocol.
    Protocol,
    /// The server refuses the call for lack of resources (too many calls or streams).
    ResourceExhausted,
    /// The server is shutting down.
    ShuttingDown,
    /// The caller's signature fingerprint for the method differs from the server's; the
    /// message is the server's signature text.
    TypeMismatch,
    /// The server refused this peer at connect (its allow-list); sent with request id 0 just
    /// before the server closes the connection (PROTOCOL.md §5.11).
    PeerRefused,
    /// A code this implementation does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::MethodNotFound => 1,
            Self::Handler => 2,
            Self::Panic => 3,
            Self::BadRequest => 4,
            Self::DeadlineExceeded => 5,
            Self::Cancelled => 6,
            Self::Unsupported => 7,
            Self::Protocol => 8,
            Self::ResourceExhausted => 9,
            Self::ShuttingDown => 10,
            Self::TypeMismatch => 11,
            Self::PeerRefused => 12,
            Self::Unknown(v) => v,
        }
    }

    /// Parses a wire value; unknown values are kept as [`ErrorCode::Unknown`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::MethodNotFound,
            2 => Self::Handler,
            3 => Self::Panic,
            4 => Self::BadRequest,
            5 => Self::DeadlineExceeded,
            6 => Self::Cancelled,
            7 => Self::Unsupported,
            8 => Self::Protocol,
            9 => Self::ResourceExhausted,
            10 => Self::ShuttingDown,
            11 => Self::TypeMismatch,
            12 => Self::PeerRefused,
            v => Self::Unknown(v),
        }
    }
}

/// The payload of an `Error` message: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Details, for humans.
    pub message: String,
}

impl RemoteError {
    /// A remote error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Appends the wire form: u16 LE code, then the message as UTF-8.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u16_le(self.code.to_u16());
        out.extend_from_slice(self.message.as_bytes());
    }

    /// Parses the wire form leniently: a short payload is code `Unknown(0)`, invalid UTF-8 is
    /// replaced. Never fails, never panics.
    pub fn decode(payload: &[u8]) -> Self {
        match payload.split_first_chunk::<2>() {
            Some((code, msg)) => Self {
                code: ErrorCode::from_u16(u16::from_le_bytes(*code)),
                message: match std::str::from_utf8(msg) {
                    Ok(text) => text.to_owned(),
                    // Replacement characters can triple the size: only a bounded prefix.
                    Err(_) => {
                        String::from_utf8_lossy(&msg[..msg.len().min(MAX_LOSSY_ERROR)]).into_owned()
                    }
                },
            },
            None => Self {
                code: ErrorCode::Unknown(0),
                message: String::new(),
            },
        }
    }
}

/// How many bytes of an error message that is not valid UTF-8 are kept (each invalid byte
/// becomes a 3-byte U+FFFD).
pub const MAX_LOSSY_ERROR: usize = 1024;

/// Encodes messages into length-prefixed frames, compressing payloads per its configuration.
#[derive(Debug)]
pub struct MessageEncoder {
    max_frame_size: usize,
    compression: CompressionConfig,
    compressor: Compressor,
}

impl Default for MessageEncoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE, CompressionConfig::none())
    }
}

impl MessageEncoder {
    /// An encoder that refuses frames above `max_frame_size` and compresses per `compression`.
    pub fn new(max_frame_size: usize, compression: CompressionConfig) -> Self {
        Self {
            max_frame_size,
            compression,
            compressor: Compressor::new(),
        }
    }

    /// The compression settings.
    pub fn compression(&self) -> CompressionConfig {
        self.compression
    }

    /// Changes the compression settings.
    pub fn set_compression(&mut self, compression: CompressionConfig) {
        self.compression = compression;
    }

    /// The maximum frame size.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Appends one frame — `[u32 LE length][header][method][payload]` — to `out`.
    ///
    /// `header.compression` is ignored: the encoder decides from its configuration and records
    /// its choice. On error nothing is appended.
    pub fn encode(
        &mut self,
        header: &Header,
        method: &str,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ProtoError> {
        self.encode_with_metadata(header, method, &Metadata::new(), payload, out)
    }

    /// Like [`encode`](Self::encode), with a metadata block (requests and notifications).
    pub fn encode_with_metadata(
        &mut self,
        header: &Header,
        method: &str,
        metadata: &Metadata,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ProtoError> {
        let start = self.put_header(header, method, metadata, out)?;
        let cfg = self.compression;
        if cfg.algorithm != CompressionType::None && payload.len() >= cfg.threshold {
            // Compress straight from the caller's payload: no copy of it into the frame first.
            match self
                .compressor
                .compress(cfg.algorithm, cfg.zstd_level, payload)
            {
                Ok(Some(compressed)) => {
                    out.extend_from_slice(compressed);
                    out[start + FRAME_PREFIX_LEN + 6] = cfg.algorithm.id();
                }
                Ok(None) => out.extend_from_slice(payload),
                Err(e) => {
                    out.truncate(start);
                    return Err(e.into());
                }
            }
        } else {
            out.extend_from_slice(payload);
        }
        self.finish(start, out)
    }

    /// Like [`encode`](Self::encode), but the payload is written in place by `write_payload`
    /// (for example a [`Codec`](crate::Codec) serializing straight into the frame — no
    /// intermediate buffer).
    pub fn encode_with(
        &mut self,
        header: &Header,
        method: &str,
        out: &mut BytesMut,
        write_payload: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    ) -> Result<(), ProtoError> {
        let start = self.put_header(header, method, &Metadata::new(), out)?;
        let payload_start = out.len();
        if let Err(e) = write_payload(out) {
            out.truncate(start);
            return Err(e.into());
        }
        let cfg = self.compression;
        if cfg.algorithm != CompressionType::None && out.len() - payload_start >= cfg.threshold {
            match self
                .compressor
                .compress(cfg.algorithm, cfg.zstd_level, &out[payload_start..])
            {
                Ok(Some(compressed)) => {
                    out.truncate(payload_start);
                    out.extend_from_slice(compressed);
                    out[start + FRAME_PREFIX_LEN + 6] = cfg.algorithm.id();
                }
                Ok(None) => {}
                Err(e) => {
                    out.truncate(start);
                    return Err(e.into());
                }
            }
        }
        self.finish(start, out)
    }

    /// Checks the header and appends the frame prefix (patched by [`finish`](Self::finish)),
    /// the fixed header, the optional fields, the method name and the metadata. Returns the
    /// frame's start.
    fn put_header(
        &self,
        header: &Header,
        method: &str,
        metadata: &Metadata,
        out: &mut BytesMut,
    ) -> Result<usize, ProtoError> {
        if method.len() > MAX_METHOD_LEN {
            return Err(ProtoError::MethodTooLong(method.len()));
        }
        header.validate(method.len(), !metadata.is_empty())?;
        debug_assert!(metadata.encoded_len() <= MAX_METADATA_BLOCK_LEN);
        let start = out.len();
        let mut flags = header.flags().bits();
        if !metadata.is_empty() {
            flags |= Flags::HAS_METADATA;
            out.reserve(FRAME_PREFIX_LEN + MAX_HEADER_LEN + 2 + metadata.encoded_len());
        } else {
            out.reserve(FRAME_PREFIX_LEN + MAX_HEADER_LEN);
        }
        out.put_u32_le(0); // patched by `finish`
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(header.kind as u8);
        out.put_u8(flags);
        out.put_u8(header.codec);
        out.put_u8(CompressionType::None.id()); // patched if compressed
        out.put_u8(method.len() as u8);
        out.put_u64_le(header.id);
        if let Some(t) = header.timeout {
            out.put_u64_le(u64::try_from(t.as_micros()).unwrap_or(u64::MAX));
        }
        if let Some(w) = header.window {
            out.put_u32_le(w);
        }
        if let Some(s) = header.signature {
            out.put_u64_le(s);
        }
        out.put_slice(method.as_bytes());
        metadata.encode_into(out);
        Ok(start)
    }

    /// Checks the frame's size and writes its length prefix; on error removes the frame.
    fn finish(&self, start: usize, out: &mut BytesMut) -> Result<(), ProtoError> {
        let len = out.len() - start - FRAME_PREFIX_LEN;
        if len > self.max_frame_size || len > u32::MAX as usize {
            out.truncate(start);
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_size,
            }
            .into());
        }
        out[start..start + FRAME_PREFIX_LEN].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

/// Decodes frames into messages, decompressing payloads up to a bound.
#[derive(Debug)]
pub struct MessageDecoder {
    max_decompressed: usize,
    compressor: Compressor,
}

impl Default for MessageDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl MessageDecoder {
    /// A decoder that refuses payloads that would decompress to more than `max_decompressed`
    /// bytes.
    pub fn new(max_decompressed: usize) -> Self {
        Self {
            max_decompressed,
            compressor: Compressor::new(),
        }
    }

    /// Decodes one frame (without its length prefix, as a [`FrameDecoder`](crate::FrameDecoder)
    /// yields it). The returned payload is decompressed; `header.compression` tells how it
    /// travelled.
    pub fn decode(&mut self, frame: Bytes) -> Result<Message, ProtoError> {
        let mut msg = Message::decode_raw(frame)?;
        if msg.header.compression != CompressionType::None {
            msg.payload = self.compressor.decompress(
                msg.header.compression,
                &msg.payload,
                self.max_decompressed,
            )?;
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn frame_of(header: &Header, method: &str, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        MessageEncoder::default()
            .encode(header, method, payload, &mut out)
            .unwrap();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        dec.handle_bytes(&out);
        dec.poll_frame().unwrap().unwrap()
    }

    fn request() -> Header {
        Header {
            timeout: Some(Duration::from_millis(1500)),
            window: Some(32),
            server_stream: true,
            ..Header::new(MessageKind::Request, 0x0102_0304_0506_0708).with_codec(1)
        }
    }

    #[test]
    fn exact_layout() {
        let f = frame_of(&request(), "add", b"pl");
        let mut expected = vec![b'X', b'R', 1, 1, 0x0d, 1, 0, 3];
        expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        expected.extend_from_slice(&1_500_000u64.to_le_bytes());
        expected.extend_from_slice(&32u32.to_le_bytes());
        expected.extend_from_slice(b"add");
        expected.extend_from_slice(b"pl");
        assert_eq!(&f[..], &expected[..]);
        let m = MessageDecoder::default().decode(f).unwrap();
        assert_eq!(m.header, request());
        assert_eq!(m.method(), "add");
        assert_eq!(&m.payload[..], b"pl");
    }

    fn err_of(mut bytes: Vec<u8>, patch: impl FnOnce(&mut Vec<u8>)) -> ProtoError {
        patch(&mut bytes);
        Message::decode_raw(Bytes::from(bytes)).unwrap_err()
    }

    #[test]
    fn every_malformed_header_is_a_typed_error() {
        let good = frame_of(&request(), "add", b"pl").to_vec();
        assert!(matches!(
            err_of(good.clone(), |b| b.truncate(15)),
            ProtoError::Truncated {
                needed: 16,
                got: 15
            }
        ));
        assert!(matches!(
            err_of(good.clone(), |b| b[0] = b'Y'),
            ProtoError::BadMagic(0x5952)
        ));
        assert!(matches!(
            err_of(good.clone(), |b| b[2] = 2),
            ProtoError::UnsupportedVersion(2)
        ));
        assert!(matches!(
            err_of(good.clone(), |b| b[3] = 0),
            ProtoError::UnknownKind(0)
        ));
        assert!(matches!(
            err_of(good.clone(), |b| b[3] = 11),
            ProtoError::UnknownKind(11)
        ));
        assert!(matches!(
            err_of(good.clone(), |b| b[4] |= 0x40),
            ProtoError::ReservedFlags(0x40)
        ));
        assert!(matches!(
            err_of(good.clone(), |b| b[6] = 9),
            ProtoError::UnknownCompression(9)
        ));
        // Method length runs past the end of the frame.
        assert!(matches!(
            err_of(good.clone(), |b| b[7] = 200),
            ProtoError::Truncated { .. }
        ));
        // Timeout flag but only 4 bytes follow the fixed header.
        assert!(matches!(
            err_of(good.clone(), |b| b.truncate(20)),
            ProtoError::Truncated { needed: 24, .. }
        ));
        // Invalid UTF-8 in the method name (offset 28 = 16 + 8 + 4).
        assert!(matches!(
            err_of(good.clone(), |b| b[28] = 0xff),
            ProtoError::InvalidMethod
        ));
        // A request without a method.
        assert!(matches!(
            err_of(good.clone(), |b| {
                b[7] = 0;
            }),
            ProtoError::InvalidField { .. }
        ));
        // A response may not carry a method, stream flags, a timeout or a window.
        for flags in [0x01, 0x02, 0x04, 0x08] {
            let mut resp = frame_of(&Header::new(MessageKind::Response, 1), "", b"x").to_vec();
            resp[4] = flags;
            resp.splice(16..16, [0u8; 12]);
            assert!(matches!(
                Message::decode_raw(Bytes::from(resp)),
                Err(ProtoError::InvalidField { .. })
            ));
        }
        // A credit without a window.
        let mut credit = frame_of(&Header::new(MessageKind::Response, 1), "", b"").to_vec();
        credit[3] = MessageKind::Credit as u8;
        assert!(matches!(
            Message::decode_raw(Bytes::from(credit)),
            Err(ProtoError::InvalidField { .. })
        ));
    }

    /// A request with a signature and the metadata `k = v`, `x = ""`.
    fn with_metadata() -> Bytes {
        let mut md = Metadata::new();
        md.insert("k", "v").unwrap().insert("x", "").unwrap();
        let header = Header {
            signature: Some(0x1122_3344_5566_7788),
            ..Header::new(MessageKind::Notification, 0)
        };
        let mut out = BytesMut::new();
        MessageEncoder::default()
            .encode_with_metadata(&header, "m", &md, b"pl", &mut out)
            .unwrap();
        out.freeze().slice(FRAME_PREFIX_LEN..)
    }

    #[test]
    fn metadata_and_signature_layout() {
        let f = with_metadata();
        let mut expected = vec![b'X', b'R', 1, 4, 0x30, 0, 0, 1];
        expected.extend_from_slice(&0u64.to_le_bytes());
        expected.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        expected.push(b'm');
        expected.extend_from_slice(&[9, 0, 1, b'k', 1, 0, b'v', 1, b'x', 0, 0]);
        expected.extend_from_slice(b"pl");
        assert_eq!(&f[..], &expected[..]);
        let m = Message::decode_raw(f).unwrap();
        assert_eq!(m.header.signature, Some(0x1122_3344_5566_7788));
        assert_eq!(m.metadata().get_str("k"), Some("v"));
        assert_eq!(m.metadata().get("x"), Some(&b""[..]));
        assert_eq!(&m.payload[..], b"pl");
    }

    #[test]
    fn malformed_metadata_is_a_typed_error() {
        let good = with_metadata().to_vec();
        // Offsets: block length at 25..27, first key length at 27.
        let bad = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            patch(&mut b);
            Message::decode_raw(Bytes::from(b)).unwrap_err()
        };
        // An empty block.
        assert!(matches!(
            bad(&|b| b[25..27].copy_from_slice(&[0, 0])),
            ProtoError::InvalidMetadata(_)
        ));
        // A block longer than the frame.
        assert!(matches!(
            bad(&|b| b[25..27].copy_from_slice(&[0xff, 0xff])),
            ProtoError::Truncated { .. }
        ));
        // A block cut short: the length says 8, so the second entry runs past it.
        assert!(matches!(
            bad(&|b| b[25] = 8),
            ProtoError::InvalidMetadata(_)
        ));
        // A key length past the block.
        assert!(matches!(
            bad(&|b| b[27] = 200),
            ProtoError::InvalidMetadata(_)
        ));
        // A key outside printable ASCII, and a duplicate key.
        assert!(matches!(
            bad(&|b| b[28] = b' '),
            ProtoError::InvalidMetadata(_)
        ));
        assert!(matches!(
            bad(&|b| b[32] = b'k'),
            ProtoError::InvalidMetadata(_)
        ));
        // The flag without room for the length.
        assert!(matches!(
            bad(&|b| b.truncate(26)),
            ProtoError::Truncated { .. }
        ));
        // Metadata or a signature on a kind that may not carry them.
        for flag in [Flags::HAS_METADATA, Flags::HAS_SIGNATURE] {
            let mut resp = frame_of(&Header::new(MessageKind::Response, 1), "", b"").to_vec();
            resp[4] = flag;
            resp.extend_from_slice(&[1, 0, 1, b'k', 0, 0, 0, 0]);
            assert!(matches!(
                Message::decode_raw(Bytes::from(resp)),
                Err(ProtoError::InvalidField { .. })
            ));
        }
        // And the encoder refuses them there.
        let mut md = Metadata::new();
        md.insert("k", "v").unwrap();
        let mut out = BytesMut::new();
        assert!(
            MessageEncoder::default()
                .encode_with_metadata(
                    &Header::new(MessageKind::Response, 1),
                    "",
                    &md,
                    b"",
                    &mut out
                )
                .is_err()
        );
    }

    #[test]
    fn encoder_refuses_bad_headers_and_oversized_frames() {
        let mut enc = MessageEncoder::new(64, CompressionConfig::none());
        let mut out = BytesMut::new();
        assert!(
            enc.encode(&request(), &"m".repeat(256), b"", &mut out)
                .is_err()
        );
        assert!(
            enc.encode(&Header::new(MessageKind::Request, 1), "", b"", &mut out)
                .is_err()
        );
        assert!(matches!(
            enc.encode(
                &Header::new(MessageKind::Response, 1),
                "",
                &[0; 100],
                &mut out
            ),
            Err(ProtoError::Frame(FrameError::TooLarge { .. }))
        ));
        assert!(out.is_empty(), "nothing appended on error");
    }

    #[test]
    fn compressed_roundtrip_and_threshold() {
        for cfg in [
            CompressionConfig::lz4().with_threshold(100),
            #[cfg(feature = "zstd")]
            CompressionConfig::zstd(3).with_threshold(100),
        ] {
            let mut enc = MessageEncoder::new(DEFAULT_MAX_FRAME_SIZE, cfg);
            let mut dec = MessageDecoder::new(1 << 20);
            let big = vec![7u8; 10_000];
            let h = Header::new(MessageKind::Response, 9);
            let mut out = BytesMut::new();
            enc.encode(&h, "", &big, &mut out).unwrap();
            assert!(out.len() < 1000);
            let m = dec.decode(out.freeze().slice(4..)).unwrap();
            assert_eq!(m.header.compression, cfg.algorithm);
            assert_eq!(&m.payload[..], &big[..]);

            let mut out = BytesMut::new();
            enc.encode(&h, "", &[7u8; 99], &mut out).unwrap();
            let m = dec.decode(out.freeze().slice(4..)).unwrap();
            assert_eq!(
                m.header.compression,
                CompressionType::None,
                "below threshold"
            );

            // The receiver's bound applies.
            let mut out = BytesMut::new();
            enc.encode(&h, "", &big, &mut out).unwrap();
            let mut small = MessageDecoder::new(9_999);
            assert!(matches!(
                small.decode(out.freeze().slice(4..)),
                Err(ProtoError::Compression(_))
            ));
        }
    }

    #[test]
    fn remote_error_roundtrip() {
        let e = RemoteError::new(ErrorCode::Handler, "boom");
        let mut out = BytesMut::new();
        e.encode_into(&mut out);
        assert_eq!(RemoteError::decode(&out), e);
        assert_eq!(RemoteError::decode(&[1]).code, ErrorCode::Unknown(0));
        assert_eq!(
            RemoteError::decode(&[0x34, 0x12]).code,
            ErrorCode::Unknown(0x1234)
        );
    }

    #[test]
    fn invalid_utf8_error_messages_stay_bounded() {
        let mut payload = vec![2, 0];
        payload.extend(std::iter::repeat_n(0xff, 30_000));
        let e = RemoteError::decode(&payload);
        assert_eq!(e.code, ErrorCode::Handler);
        assert_eq!(e.message.chars().count(), MAX_LOSSY_ERROR);
        assert!(e.message.len() <= 3 * MAX_LOSSY_ERROR);
        // Valid UTF-8 is kept whole.
        let mut payload = vec![2, 0];
        payload.extend(std::iter::repeat_n(b'x', 30_000));
        assert_eq!(RemoteError::decode(&payload).message.len(), 30_000);
    }
}
