//! [`ZeroCopyTransport`]: typed values without serialization, with a tokio timeout.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{ArcFrameTransport, TransportError};

/// Sends and receives typed values without serializing them.
pub trait ZeroCopyTransport: Send + Sync + 'static {
    /// Sends a value already behind an [`Arc`] (no copy, no serialization).
    fn send_arc<T: Any + Send + Sync>(
        &self,
        value: Arc<T>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a value (moved into an [`Arc`]).
    fn send_typed<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.send_arc(Arc::new(value))
    }

    /// Receives the next typed value. If it is not a `T` it is dropped and
    /// [`TransportError::TypeMismatch`] is returned.
    fn recv_typed<T: Any + Send + Sync>(
        &self,
    ) -> impl Future<Output = Result<Arc<T>, TransportError>> + Send;

    /// [`recv_typed`](Self::recv_typed) with a time limit ([`TransportError::Timeout`]).
    fn recv_typed_timeout<T: Any + Send + Sync>(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Arc<T>, TransportError>> + Send {
        async move {
            tokio::time::timeout(timeout, self.recv_typed())
                .await
                .unwrap_or(Err(TransportError::Timeout))
        }
    }
}

impl ZeroCopyTransport for ArcFrameTransport {
    fn send_arc<T: Any + Send + Sync>(
        &self,
        value: Arc<T>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        ArcFrameTransport::send_arc(self, value)
    }

    fn recv_typed<T: Any + Send + Sync>(
        &self,
    ) -> impl Future<Output = Result<Arc<T>, TransportError>> + Send {
        ArcFrameTransport::recv_typed(self)
    }
}
