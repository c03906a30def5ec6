//! [`Outcome`]: how a call ended, as the balancer counts it. Only transport failures and
//! timeouts count against an endpoint; an application error returned by the server means the
//! server is alive and answering, so it counts as a success for health.

use crate::client::CallError;
use crate::message::ErrorCode;
use crate::rpc_error::RpcError;

/// How a call ended, for the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response.
    Success,
    /// The server answered with an error (its handler's, or "method not found"): the
    /// endpoint is healthy.
    Remote,
    /// The server refused the call without running it (it is shutting down, out of
    /// capacity, or does not admit this peer): counts against the endpoint, and is safe to
    /// retry anywhere.
    Refused,
    /// The connection could not be made, broke, or the peer broke the protocol.
    Transport,
    /// The call's deadline passed without an answer.
    Timeout,
    /// The caller cancelled the call: says nothing about the endpoint.
    Cancelled,
    /// The call was refused on this side (too large, not encodable): says nothing about the
    /// endpoint and would fail the same way anywhere.
    Local,
}

impl Outcome {
    /// Whether the outcome counts as a failure of the endpoint.
    pub fn is_endpoint_failure(self) -> bool {
        matches!(self, Self::Transport | Self::Timeout | Self::Refused)
    }

    /// The outcome of an error answer with `code` from the server.
    pub fn of_remote(code: ErrorCode) -> Self {
        match code {
            ErrorCode::ShuttingDown | ErrorCode::ResourceExhausted | ErrorCode::PeerRefused => {
                Self::Refused
            }
            ErrorCode::DeadlineExceeded => Self::Timeout,
            ErrorCode::Cancelled => Self::Cancelled,
            ErrorCode::Protocol => Self::Transport,
            _ => Self::Remote,
        }
    }
}

impl From<&CallError> for Outcome {
    fn from(e: &CallError) -> Self {
        match e {
            CallError::Timeout => Self::Timeout,
            CallError::Cancelled => Self::Cancelled,
            CallError::Disconnected(_) | CallError::Protocol(_) => Self::Transport,
            CallError::Remote(r) => Self::of_remote(r.code),
            CallError::PeerRefused(_) => Self::Refused,
            CallError::Unsendable(_)
            | CallError::FrameTooLarge { .. }
            | CallError::Finished
            | CallError::Metadata(_) => Self::Local,
            CallError::TypeMismatch { .. } => Self::Remote,
        }
    }
}

impl From<&RpcError> for Outcome {
    /// Only transport failures, timeouts and refusals count against the endpoint; an
    /// application error from the server does not.
    fn from(e: &RpcError) -> Self {
        match e {
            RpcError::Transport(_) | RpcError::Disconnected(_) | RpcError::InvalidMessage(_) => {
                Self::Transport
            }
            RpcError::PeerRefused(_) => Self::Refused,
            RpcError::Timeout => Self::Timeout,
            RpcError::Cancelled => Self::Cancelled,
            RpcError::ServerError { code, .. } => Self::of_remote(*code),
            RpcError::MethodNotFound(_)
            | RpcError::StreamError(_)
            | RpcError::TypeMismatch { .. } => Self::Remote,
            RpcError::Serialization(_)
            | RpcError::Decode { .. }
            | RpcError::FrameTooLarge { .. }
            | RpcError::ClientError(_)
            | RpcError::Metadata(_) => Self::Local,
        }
    }
}

impl RpcError {
    /// How the call that ended with this error counts for load balancing (see
    /// [`Outcome`]).
    pub fn outcome(&self) -> Outcome {
        Outcome::from(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportError;

    #[test]
    fn only_the_endpoints_failures_count_against_it() {
        let counts = |e: RpcError| e.outcome().is_endpoint_failure();
        assert!(counts(RpcError::Transport(
            TransportError::ConnectionClosed
        )));
        assert!(counts(RpcError::Disconnected("reset".into())));
        assert!(counts(RpcError::Timeout));
        assert!(counts(RpcError::ServerError {
            code: ErrorCode::ShuttingDown,
            message: "bye".into()
        }));
        assert!(!counts(RpcError::server("no such key")));
        assert!(!counts(RpcError::MethodNotFound("kv.gett".into())));
        assert!(!counts(RpcError::Cancelled));
        assert!(!counts(RpcError::ClientError("misuse".into())));
        assert_eq!(
            RpcError::ServerError {
                code: ErrorCode::ResourceExhausted,
                message: "busy".into()
            }
            .outcome(),
            Outcome::Refused
        );
    }
}
