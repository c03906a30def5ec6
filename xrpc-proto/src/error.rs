//! The error type of the message layer.

use crate::codec::CodecError;
use crate::compression::CompressionError;
use crate::frame::FrameError;

/// A malformed or unacceptable frame or message.
///
/// Every way untrusted bytes can be wrong maps to one variant; decoding never panics.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The framing layer rejected the bytes.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The message is shorter than its header says it must be.
    #[error("message truncated: needs at least {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the header requires.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first two bytes are not the xrpc magic `"XR"`.
    #[error("bad magic 0x{0:04x}, expected 0x5852 (\"XR\")")]
    BadMagic(u16),
    /// The protocol version is not one this implementation speaks.
    #[error("unsupported protocol version {0}, expected 1")]
    UnsupportedVersion(u8),
    /// The message kind byte has no meaning in this version.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A reserved flag bit is set.
    #[error("reserved flag bits set: 0x{0:02x}")]
    ReservedFlags(u8),
    /// The compression byte names no known algorithm.
    #[error("unknown compression id {0}")]
    UnknownCompression(u8),
    /// The method name is not valid UTF-8.
    #[error("method name is not valid UTF-8")]
    InvalidMethod,
    /// The method name is longer than the 255 bytes the header can carry.
    #[error("method name of {0} bytes exceeds the maximum of 255")]
    MethodTooLong(usize),
    /// A message kind requires a field that is absent, or forbids one that is present.
    #[error("{kind:?} message: {what}")]
    InvalidField {
        /// The kind of the message.
        kind: crate::message::MessageKind,
        /// What is wrong.
        what: &'static str,
    },
    /// The payload could not be compressed or decompressed.
    #[error(transparent)]
    Compression(#[from] CompressionError),
    /// A value could not be encoded or decoded by the codec.
    #[error(transparent)]
    Codec(#[from] CodecError),
}
