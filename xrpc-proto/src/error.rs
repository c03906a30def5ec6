//! The errors of the lower layers: [`TransportError`] (moving frames), [`ProtoError`] (the bytes of
//! a frame or message are wrong) and [`ChannelError`] (a message channel: either of them).
//! The transports that raise a [`TransportError`] live in the adapter crates; the type lives
//! here so that every rule that maps one error onto another ([`crate::rpc_error`]) is in the core.

use crate::codec::CodecError;
use crate::compression::CompressionError;
use crate::frame::FrameError;
use crate::skipped::SkippedFrame;

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
    /// The metadata block is malformed (`docs/PROTOCOL.md` §3.3).
    #[error("malformed metadata: {0}")]
    InvalidMetadata(&'static str),
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

/// An error of a frame transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A frame is larger than the configured maximum (on send, or announced by the peer).
    #[error("frame of {size} bytes exceeds max {max}")]
    MessageTooLarge {
        /// The frame's (declared) size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A received frame longer than the maximum was skipped whole (never buffered): an error
    /// of that frame alone, for the session to fail what it carried
    /// ([`Session::handle_skipped`](crate::Session::handle_skipped)); the transport goes on.
    #[error(transparent)]
    FrameSkipped(SkippedFrame),
    /// The peer broke the framing or transport protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Writing to the underlying IO failed.
    #[error("send failed: {0}")]
    SendFailed(#[source] std::io::Error),
    /// Reading from the underlying IO failed.
    #[error("receive failed: {0}")]
    ReceiveFailed(#[source] std::io::Error),
    /// An operation did not finish within its configured timeout.
    #[error("operation timed out")]
    Timeout,
    /// A connection could not be established.
    #[error("connection failed: {0}")]
    ConnectionFailed(String),
    /// The server refused this process at connect (shared memory: in the rendezvous
    /// handshake), as opposed to a failure to reach it: holds the reason.
    #[error("refused by the server: {0}")]
    PeerRefused(String),
    /// The connection was closed, by the peer or locally.
    #[error("connection closed")]
    ConnectionClosed,
    /// The transport is not connected (or broken by an earlier error).
    #[error("not connected")]
    NotConnected,
    /// A typed value of another type than the one asked for arrived
    /// (`ZeroCopyTransport::recv_typed`). The value is dropped.
    #[error("type mismatch: expected {expected}, received {found}")]
    TypeMismatch {
        /// The requested type.
        expected: &'static str,
        /// The type of the value that arrived.
        found: &'static str,
    },
    /// The TLS layer failed: a handshake refused or broken (a certificate not trusted, expired
    /// or for another name; a peer that does not speak TLS, or that speaks it to a plaintext
    /// transport), a handshake not finished in time, or a record that does not decrypt.
    /// `reason` is the TLS library's own error (a `rustls::Error` when it came from rustls;
    /// downcast it to match on it).
    #[error("TLS {context}: {reason}")]
    Tls {
        /// What was being done, with whom: `handshake with 127.0.0.1:4000`.
        context: String,
        /// Why it failed.
        #[source]
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A shared-memory segment could not be created or opened (kept from the original API for
    /// shared-memory transports).
    #[error("shared memory creation failed: {0}")]
    SharedMemoryCreation(String),
}

impl TransportError {
    /// Whether the error means the transport can no longer be used.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::MessageTooLarge { .. }
                | Self::FrameSkipped(_)
                | Self::Timeout
                | Self::TypeMismatch { .. }
        )
    }

    /// A TLS error (see [`Tls`](Self::Tls)).
    pub fn tls(
        context: impl Into<String>,
        reason: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Tls {
            context: context.into(),
            reason: reason.into(),
        }
    }

    /// Classifies a write error: a reset or broken pipe is the peer closing. An IO error that
    /// carries a `TransportError` (a layer between the frames and the socket, such as TLS,
    /// that failed in its own way) is that error.
    pub fn send(e: std::io::Error) -> Self {
        let e = match carried(e) {
            Ok(t) => return t,
            Err(e) => e,
        };
        if is_disconnect(&e) {
            Self::ConnectionClosed
        } else {
            Self::SendFailed(e)
        }
    }

    /// Classifies a read error: a reset is the peer closing; an IO error that carries a
    /// `TransportError` is that error (see [`send`](Self::send)).
    pub fn recv(e: std::io::Error) -> Self {
        let e = match carried(e) {
            Ok(t) => return t,
            Err(e) => e,
        };
        if is_disconnect(&e) {
            Self::ConnectionClosed
        } else {
            Self::ReceiveFailed(e)
        }
    }
}

/// The `TransportError` an IO error carries (made with `io::Error::other(transport_error)`),
/// or the IO error as it was.
fn carried(e: std::io::Error) -> Result<TransportError, std::io::Error> {
    if !e
        .get_ref()
        .is_some_and(|inner| inner.is::<TransportError>())
    {
        return Err(e);
    }
    let kind = e.kind();
    match e
        .into_inner()
        .map(|inner| inner.downcast::<TransportError>())
    {
        Some(Ok(t)) => Ok(*t),
        Some(Err(inner)) => Err(std::io::Error::new(kind, inner)),
        None => Err(kind.into()),
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

/// An error of a message channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A message could not be encoded, or a received frame is not a valid message.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

impl From<CodecError> for ChannelError {
    fn from(e: CodecError) -> Self {
        Self::Proto(e.into())
    }
}

impl ChannelError {
    /// Whether the channel can no longer be used (a transport failure; a malformed message
    /// leaves the framing intact, so the channel stays usable).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Transport(e) => e.is_fatal(),
            Self::Proto(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_carrying_a_transport_error_is_that_error() {
        let tls = || TransportError::tls("record from tls:1.2.3.4:5", "bad record MAC");
        let e = TransportError::recv(std::io::Error::other(tls()));
        assert!(matches!(e, TransportError::Tls { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "TLS record from tls:1.2.3.4:5: bad record MAC"
        );
        let e = TransportError::send(std::io::Error::other(tls()));
        assert!(matches!(e, TransportError::Tls { .. }), "{e:?}");
        // Any other IO error is classified as before.
        let e = TransportError::recv(std::io::Error::other("something else"));
        assert!(matches!(e, TransportError::ReceiveFailed(_)), "{e:?}");
        let reset = std::io::ErrorKind::ConnectionReset;
        assert!(matches!(
            TransportError::send(reset.into()),
            TransportError::ConnectionClosed
        ));
    }
}
