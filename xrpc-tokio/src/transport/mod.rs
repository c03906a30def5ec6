//! Layer 1: the frame transports of the tokio adapter.
//!
//! | transport | peer | bytes copied per frame |
//! |---|---|---|
//! | [`TcpFrameTransport`] | another process or host | socket read/write only |
//! | [`UnixFrameTransport`] | another process | socket read/write only |
//! | [`SharedMemoryFrameTransport`] | another process | one into the ring, one out |
//! | [`ChannelFrameTransport`] | the same process | one (into a `Bytes`) |
//! | [`ArcFrameTransport`] | the same process | none with [`ArcFrameTransport::send_bytes`] |
//!
//! The [`FrameTransport`] trait, its errors and the in-process transports are runtime-neutral
//! (`xrpc-async`); they are re-exported here.

use std::future::Future;
use std::time::Duration;

pub use xrpc_async::transport::{
    FrameTransport, StatsCounters, TransportError, TransportStats, batch_frames, check_len,
    check_prefixed, check_prefixed_batch,
};
pub use xrpc_proto::RetryPolicy;

mod shm;
mod socket;
mod tcp;
mod unix;
mod zero_copy;

pub use shm::{SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener};
pub use tcp::{TcpConfig, TcpFrameTransport, TcpFrameTransportListener};
pub use unix::{UnixConfig, UnixFrameTransport, UnixFrameTransportListener};
pub use xrpc_async::memory::{ArcFrameTransport, ChannelConfig, ChannelFrameTransport};
pub use zero_copy::ZeroCopyTransport;

/// Runs `connect` up to `max_attempts` times (at least once), each bounded by `timeout`,
/// sleeping per `policy` between attempts. Returns the last error if all fail.
pub(crate) async fn connect_with_retry<S, F, Fut>(
    what: &(dyn std::fmt::Display + Sync),
    timeout: Duration,
    max_attempts: u32,
    policy: RetryPolicy,
    mut connect: F,
) -> Result<S, TransportError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let attempts = max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let err = match tokio::time::timeout(timeout, connect()).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => TransportError::ConnectionFailed(format!(
                "connect to {what} failed (attempt {attempt}/{attempts}): {e}"
            )),
            Err(_) => TransportError::Timeout,
        };
        if attempt >= attempts {
            return Err(err);
        }
        tokio::time::sleep(policy.delay(attempt)).await;
        attempt += 1;
    }
}

/// Implements [`FrameTransport`] for a wrapper by forwarding to a field that implements it.
macro_rules! forward_frame_transport {
    ($ty:ty, $field:ident) => {
        impl $crate::transport::FrameTransport for $ty {
            fn send_frame(
                &self,
                frame: &[u8],
            ) -> impl ::std::future::Future<Output = Result<(), $crate::TransportError>> + Send
            {
                self.$field.send_frame(frame)
            }

            fn send_frames(
                &self,
                frames: &[&[u8]],
            ) -> impl ::std::future::Future<Output = Result<(), $crate::TransportError>> + Send
            {
                self.$field.send_frames(frames)
            }

            fn send_frame_with<F, E>(
                &self,
                encode: F,
            ) -> impl ::std::future::Future<Output = Result<(), E>> + Send
            where
                F: FnOnce(&mut ::bytes::BytesMut) -> Result<(), E> + Send,
                E: From<$crate::TransportError> + Send,
            {
                self.$field.send_frame_with(encode)
            }

            fn send_batch_with<F, E>(
                &self,
                encode: F,
            ) -> impl ::std::future::Future<Output = Result<(), E>> + Send
            where
                F: FnOnce(&mut ::bytes::BytesMut) -> Result<(), E> + Send,
                E: From<$crate::TransportError> + Send,
            {
                self.$field.send_batch_with(encode)
            }

            fn recv_frame(
                &self,
            ) -> impl ::std::future::Future<Output = Result<::bytes::Bytes, $crate::TransportError>>
            + Send {
                self.$field.recv_frame()
            }

            fn recv_frames_with<F>(
                &self,
                max: usize,
                each: F,
            ) -> impl ::std::future::Future<Output = Result<usize, $crate::TransportError>> + Send
            where
                F: FnMut(::bytes::Bytes) + Send,
            {
                self.$field.recv_frames_with(max, each)
            }

            fn partial_frame(&self) -> usize {
                self.$field.partial_frame()
            }

            fn is_connected(&self) -> bool {
                self.$field.is_connected()
            }

            fn is_healthy(&self) -> bool {
                self.$field.is_healthy()
            }

            fn close(
                &self,
            ) -> impl ::std::future::Future<Output = Result<(), $crate::TransportError>> + Send
            {
                self.$field.close()
            }

            fn stats(&self) -> Option<$crate::TransportStats> {
                Some(self.$field.stats())
            }

            fn name(&self) -> &str {
                &self.name
            }

            fn max_frame_size(&self) -> usize {
                self.$field.max_frame_size()
            }
        }
    };
}
pub(crate) use forward_frame_transport;
