//! [`RpcError`]: how a call can fail.

use xrpc_proto::{CallError, CloseReason, CodecError, ErrorCode, ProtoError, RemoteError};

use crate::channel::ChannelError;
use crate::transport::TransportError;

/// Why an RPC failed. Every call ends with its response or one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The transport failed (connect, send or receive).
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),
    /// The connection closed, or the peer stopped answering heartbeats, before the answer came.
    #[error("disconnected: {0}")]
    Disconnected(String),
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
}

impl RpcError {
    /// A handler error with a message, as application handlers return it.
    pub fn server(message: impl Into<String>) -> Self {
        Self::ServerError {
            code: ErrorCode::Handler,
            message: message.into(),
        }
    }

    /// The wire form a server sends for this error when a handler returns it.
    pub fn to_remote(&self) -> RemoteError {
        match self {
            Self::ServerError { code, message } => RemoteError::new(*code, message.clone()),
            Self::MethodNotFound(_) => {
                RemoteError::new(ErrorCode::MethodNotFound, self.to_string())
            }
            Self::Serialization(e) => RemoteError::new(ErrorCode::BadRequest, e.to_string()),
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

/// The method name in the message of a `MethodNotFound` error from the wire: a server sends
/// `method not found: <method>` (the [`RpcError::MethodNotFound`] text); a message without that
/// prefix is taken as the name itself.
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
            CallError::Remote(r) => r.into(),
            CallError::Protocol(m) => Self::InvalidMessage(m),
            CallError::FrameTooLarge { size, max } => Self::FrameTooLarge { size, max },
            other => Self::InvalidMessage(other.to_string()),
        }
    }
}

impl From<ProtoError> for RpcError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Frame(xrpc_proto::FrameError::TooLarge { len, max }) => {
                Self::FrameTooLarge { size: len, max }
            }
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
            ChannelError::Transport(TransportError::ConnectionClosed) => {
                Self::Disconnected("connection closed".into())
            }
            ChannelError::Transport(t) => Self::Transport(t),
            ChannelError::Proto(p) => p.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_found_names_the_method_once() {
        // As a server sends it, and as another server might (just the name).
        for wire in ["method not found: kv.gett", "kv.gett"] {
            let e = RpcError::from(RemoteError::new(ErrorCode::MethodNotFound, wire));
            assert!(
                matches!(&e, RpcError::MethodNotFound(m) if m == "kv.gett"),
                "{e:?}"
            );
            assert_eq!(e.to_string(), "method not found: kv.gett");
        }
        // A handler that returns the error sends the same text, which reads back the same.
        let sent = RpcError::MethodNotFound("kv.gett".into()).to_remote();
        assert_eq!(sent.message, "method not found: kv.gett");
        assert_eq!(
            RpcError::from(sent).to_string(),
            "method not found: kv.gett"
        );
    }
}
