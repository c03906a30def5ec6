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
