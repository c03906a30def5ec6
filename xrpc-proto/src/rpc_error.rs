//! [`RpcError`]: how a call fails, as the application sees it — and every rule that maps
//! another error onto it, or it onto the wire: a call's [`CallError`], an error answer from the
//! server ([`RemoteError`]), a transport or channel failure, a codec failure, a handler's error
//! or panic going out as a [`RemoteError`], and what serving a connection returns. Every
//! adapter uses these; none maps errors of its own.

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::client::CallError;
use crate::codec::{Codec, CodecError, CodecId, decode_with};
use crate::error::{ChannelError, ProtoError, TransportError};
use crate::frame::FrameError;
use crate::message::{ErrorCode, RemoteError};
use crate::metadata::MetadataError;
use crate::payload::Payload;
use crate::server_session::{CloseReason, HandlerOutcome};

/// Why an RPC failed. Every call ends with its response or one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The transport failed (connect, send or receive).
    #[error("transport error: {0}")]
    Transport(TransportError),
    /// The connection closed, or the peer stopped answering heartbeats, before the answer came.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// The server refused this process at connect (its allow-list of users and groups), as
    /// opposed to a failure of the network or of the server: holds the server's reason.
    #[error("refused by the server: {0}")]
    PeerRefused(String),
    /// The call's deadline passed.
    #[error("call timed out")]
    Timeout,
    /// The call was cancelled.
    #[error("call cancelled")]
    Cancelled,
    /// No handler is registered under the method name; holds that name (displayed as
    /// `method not found: kv.get`).
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// A value could not be serialized or deserialized.
    #[error("serialization error: {0}")]
    Serialization(#[from] CodecError),
    /// The remote handler returned an error (or panicked); the message is the handler's.
    #[error("server error ({code:?}): {message}")]
    ServerError {
        /// The error code the server sent.
        code: ErrorCode,
        /// The handler's message.
        message: String,
    },
    /// A frame exceeded the maximum size.
    #[error("frame of {size} bytes exceeds max {max}")]
    FrameTooLarge {
        /// The frame size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The peer sent a malformed message or broke the protocol.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A streaming call failed.
    #[error("stream error: {0}")]
    StreamError(String),
    /// A client-side error (misuse, or raised by application code).
    #[error("client error: {0}")]
    ClientError(String),
    /// The client and the server disagree on the types of a method: the signature the client
    /// sent (`CallOptions::with_signature`) differs from the one the server registered
    /// (`RpcServer::set_signature`). The call did not run.
    #[error("type mismatch calling `{method}`: the client has `{client}`, the server `{server}`")]
    TypeMismatch {
        /// The method.
        method: String,
        /// The client's signature text.
        client: String,
        /// The server's signature text.
        server: String,
    },
    /// A payload could not be decoded as the type expected of it: `what` says whose
    /// (``"request of `kv.get`"``, ``"response of `kv.get`"``).
    #[error("cannot decode the {what} as `{ty}`: {source}")]
    Decode {
        /// Whose payload: the request, response or stream item of which method.
        what: String,
        /// The type expected (`std::any::type_name`).
        ty: &'static str,
        /// The codec's error.
        source: CodecError,
    },
    /// Call metadata is invalid or over a limit (`max_metadata_bytes`,
    /// `max_metadata_entries` of the client's configuration).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl RpcError {
    /// A handler error with a message, as application handlers return it.
    pub fn server(message: impl Into<String>) -> Self {
        Self::ServerError {
            code: ErrorCode::Handler,
            message: message.into(),
        }
    }

    /// The wire form a server sends for this error when a handler returns it (PROTOCOL.md §5:
    /// a `MethodNotFound` error carries the bare method name).
    pub fn to_remote(&self) -> RemoteError {
        match self {
            Self::ServerError { code, message } => RemoteError::new(*code, message.clone()),
            Self::MethodNotFound(method) => RemoteError::new(ErrorCode::MethodNotFound, method),
            Self::Serialization(e) => RemoteError::new(ErrorCode::BadRequest, e.to_string()),
            Self::Decode { .. } => RemoteError::new(ErrorCode::BadRequest, self.to_string()),
            Self::TypeMismatch { server, .. } => {
                RemoteError::new(ErrorCode::TypeMismatch, server.clone())
            }
            Self::Timeout => RemoteError::new(ErrorCode::DeadlineExceeded, "timed out"),
            Self::Cancelled => RemoteError::new(ErrorCode::Cancelled, "cancelled"),
            other => RemoteError::new(ErrorCode::Handler, other.to_string()),
        }
    }
}

/// What serving a connection that closed for `reason` returns: an error if the client broke
/// the protocol or the transport failed.
pub fn served(reason: Option<CloseReason>) -> Result<(), RpcError> {
    match reason {
        Some(CloseReason::Protocol(m)) => Err(RpcError::InvalidMessage(format!(
            "client sent a malformed message: {m}"
        ))),
        Some(CloseReason::Transport(m)) => Err(RpcError::Disconnected(m)),
        _ => Ok(()),
    }
}

impl From<TransportError> for RpcError {
    /// A refusal is [`RpcError::PeerRefused`], every other transport error
    /// [`RpcError::Transport`].
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::PeerRefused(r) => Self::PeerRefused(r),
            other => Self::Transport(other),
        }
    }
}

impl From<RemoteError> for RpcError {
    fn from(e: RemoteError) -> Self {
        match e.code {
            ErrorCode::MethodNotFound => Self::MethodNotFound(method_of_not_found(e.message)),
            ErrorCode::DeadlineExceeded => Self::Timeout,
            ErrorCode::Cancelled => Self::Cancelled,
            ErrorCode::Protocol => Self::InvalidMessage(e.message),
            code => Self::ServerError {
                code,
                message: e.message,
            },
        }
    }
}

/// The method name in the message of a `MethodNotFound` error from the wire: the bare name
/// (PROTOCOL.md §5); a message of the form `method not found: <method>`, as servers before
/// 0.1 sent it, is read the same.
fn method_of_not_found(message: String) -> String {
    const PREFIX: &str = "method not found: ";
    match message.strip_prefix(PREFIX) {
        Some(method) => method.to_owned(),
        None => message,
    }
}

impl From<CallError> for RpcError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout => Self::Timeout,
            CallError::Cancelled => Self::Cancelled,
            CallError::Disconnected(r) => Self::Disconnected(r),
            CallError::PeerRefused(r) => Self::PeerRefused(r),
            CallError::Remote(r) => r.into(),
            CallError::Protocol(m) => Self::InvalidMessage(m),
            CallError::FrameTooLarge { size, max } => Self::FrameTooLarge { size, max },
            CallError::Finished => Self::StreamError(e.to_string()),
            CallError::Unsendable(_) => Self::InvalidMessage(e.to_string()),
            CallError::Metadata(m) => Self::Metadata(m),
            CallError::TypeMismatch {
                method,
                client,
                server,
            } => Self::TypeMismatch {
                method,
                client,
                server,
            },
        }
    }
}

impl From<ProtoError> for RpcError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Frame(FrameError::TooLarge { len, max }) => {
                Self::FrameTooLarge { size: len, max }
            }
            ProtoError::Frame(FrameError::Skipped(s)) => Self::FrameTooLarge {
                size: s.len,
                max: s.max,
            },
            ProtoError::Codec(c) => Self::Serialization(c),
            other => Self::InvalidMessage(other.to_string()),
        }
    }
}

impl From<ChannelError> for RpcError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Transport(TransportError::MessageTooLarge { size, max }) => {
                Self::FrameTooLarge { size, max }
            }
            ChannelError::Transport(TransportError::FrameSkipped(s)) => Self::FrameTooLarge {
                size: s.len,
                max: s.max,
            },
            ChannelError::Transport(TransportError::ConnectionClosed) => {
                Self::Disconnected("connection closed".into())
            }
            ChannelError::Transport(TransportError::PeerRefused(r)) => Self::PeerRefused(r),
            ChannelError::Transport(t) => Self::Transport(t),
            ChannelError::Proto(p) => p.into(),
        }
    }
}

/// Whose payload is decoded, for [`decode_as`]'s error text.
#[derive(Debug, Clone, Copy)]
pub enum PayloadOf<'a> {
    /// The request of a method.
    Request(&'a str),
    /// The response of a method.
    Response(&'a str),
    /// A stream item of a method.
    Item(&'a str),
}

impl std::fmt::Display for PayloadOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request(m) => write!(f, "request of `{m}`"),
            Self::Response(m) => write!(f, "response of `{m}`"),
            Self::Item(m) => write!(f, "stream item of `{m}`"),
        }
    }
}

/// Decodes a payload as `T` (see [`decode_payload`]); a failure is an [`RpcError::Decode`]
/// naming whose payload it is and `T` (``cannot decode the request of `get` as
/// `kv::GetRequest`: …``).
pub fn decode_as<T: DeserializeOwned + 'static, C: Codec>(
    codec: &C,
    of: PayloadOf<'_>,
    payload: Payload,
) -> Result<T, RpcError> {
    decode_as_with(codec, C::ID, of, payload)
}

/// [`decode_as`] for a payload that came with wire codec id `id`: a request a server answers
/// in its own codec (see [`answer_codec`](crate::codec::answer_codec)).
pub fn decode_as_with<T: DeserializeOwned + 'static, C: Codec>(
    codec: &C,
    id: CodecId,
    of: PayloadOf<'_>,
    payload: Payload,
) -> Result<T, RpcError> {
    decode_payload_with(codec, id, payload).map_err(|e| match e {
        RpcError::Serialization(source) => RpcError::Decode {
            what: of.to_string(),
            ty: std::any::type_name::<T>(),
            source,
        },
        other => other,
    })
}

/// Decodes a payload: bytes with the codec, an in-process value by downcasting.
pub fn decode_payload<T: DeserializeOwned + 'static, C: Codec>(
    codec: &C,
    payload: Payload,
) -> Result<T, RpcError> {
    decode_payload_with(codec, C::ID, payload)
}

/// [`decode_payload`] for bytes that came with wire codec id `id` (see
/// [`decode_with`]).
pub fn decode_payload_with<T: DeserializeOwned + 'static, C: Codec>(
    codec: &C,
    id: CodecId,
    payload: Payload,
) -> Result<T, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(decode_with(codec, id, &b)?),
        Payload::Value(v) => v.downcast::<T>().map(|b| *b).map_err(|_| {
            RpcError::Serialization(CodecError::decode(
                "in-process value",
                format_args!("the value is not a {}", std::any::type_name::<T>()),
            ))
        }),
    }
}

/// The bytes of a payload; an in-process value has none.
pub fn payload_bytes(payload: Payload) -> Result<Bytes, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(b),
        Payload::Value(_) => Err(RpcError::Serialization(CodecError::decode(
            "in-process value",
            "a raw call received a value instead of bytes",
        ))),
    }
}

/// The message of a panic payload (a handler that panicked).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_string())
}

/// What a handler ended with, as the session takes it: `Ok(Ok(Some))` a response,
/// `Ok(Ok(None))` the end of its stream, `Ok(Err)` its error, `Err` the message of its panic.
pub fn handler_outcome(res: Result<Result<Option<Payload>, RpcError>, String>) -> HandlerOutcome {
    match res {
        Ok(Ok(Some(p))) => HandlerOutcome::Response(p),
        Ok(Ok(None)) => HandlerOutcome::StreamEnd,
        Ok(Err(e)) => HandlerOutcome::Error(e.to_remote()),
        Err(panic) => HandlerOutcome::Panic(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_a_closed_connection_is_served_and_logged() {
        for (r, error, abnormal) in [
            (CloseReason::PeerClosed, false, false),
            (CloseReason::Shutdown, false, false),
            (CloseReason::Protocol("x".into()), true, true),
            (CloseReason::Transport("x".into()), true, true),
            (CloseReason::TimedOut("x".into()), false, true),
            (CloseReason::Reclaimed, false, true),
        ] {
            assert_eq!(served(Some(r.clone())).is_err(), error, "{r}");
            assert_eq!(r.is_abnormal(), abnormal, "{r}");
        }
    }

    #[test]
    fn method_not_found_names_the_method_once() {
        // The bare name (PROTOCOL.md §5), and the older prefixed text, read the same.
        for wire in ["kv.gett", "method not found: kv.gett"] {
            let e = RpcError::from(RemoteError::new(ErrorCode::MethodNotFound, wire));
            assert!(
                matches!(&e, RpcError::MethodNotFound(m) if m == "kv.gett"),
                "{e:?}"
            );
            assert_eq!(e.to_string(), "method not found: kv.gett");
        }
        // A handler that returns the error sends the bare name, as the core does.
        let sent = RpcError::MethodNotFound("kv.gett".into()).to_remote();
        assert_eq!(sent.message, "kv.gett");
        assert_eq!(
            RpcError::from(sent).to_string(),
            "method not found: kv.gett"
        );
    }
}
