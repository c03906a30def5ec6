//! How an [`RpcError`] counts for the balancer: the classification is the core's
//! ([`Outcome`]); this maps the async layer's error onto it.

use xrpc_proto::balance::Outcome;

use crate::rpc::RpcError;

impl RpcError {
    /// How the call that ended with this error counts for load balancing: only transport
    /// failures, timeouts and refusals count against the endpoint; an application error from
    /// the server does not.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Transport(_) | Self::Disconnected(_) | Self::InvalidMessage(_) => {
                Outcome::Transport
            }
            Self::Timeout => Outcome::Timeout,
            Self::Cancelled => Outcome::Cancelled,
            Self::ServerError { code, .. } => Outcome::of_remote(*code),
            Self::MethodNotFound(_) | Self::StreamError(_) => Outcome::Remote,
            Self::Serialization(_) | Self::FrameTooLarge { .. } | Self::ClientError(_) => {
                Outcome::Local
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use xrpc_proto::ErrorCode;

    use super::*;
    use crate::transport::TransportError;

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
