//! The in-process fast path: frames as [`Bytes`] moved without copying, and typed values as
//! `Arc<dyn Any>` with no serialization at all.

use std::any::{Any, type_name};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::channel::{ChannelConfig, ChannelFrameTransport};
use super::pipe::{CloseSignal, Pipe};
use crate::transport::{FrameTransport, TransportError, TransportStats};

/// A typed value in flight: its type name (for mismatch errors) and the value.
type TypedItem = (&'static str, Arc<dyn Any + Send + Sync>);

/// An in-process pair with two independent streams: frames ([`FrameTransport`], moved as
/// [`Bytes`] without copying when sent with [`send_bytes`](Self::send_bytes)) and typed values
/// (`send_typed`/`recv_typed`). Order is kept within each stream, not between them.
///
/// Closing either end closes both.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use xrpc_tokio::ArcFrameTransport;
/// let (a, b) = ArcFrameTransport::create_pair("demo");
/// a.send_typed(vec![1u32, 2, 3]).await.unwrap();
/// let v = b.recv_typed::<Vec<u32>>().await.unwrap();
/// assert_eq!(*v, [1, 2, 3]);
/// # }
/// ```
#[derive(Debug)]
pub struct ArcFrameTransport {
    /// The frame stream: an in-process frame transport closed with this pair.
    frames: ChannelFrameTransport,
    typed: Pipe<TypedItem>,
}

impl ArcFrameTransport {
    /// Two connected ends with the default [`ChannelConfig`]. Needs no runtime.
    pub fn create_pair(name: impl Into<String>) -> (Self, Self) {
        Self::create_pair_with_config(name, ChannelConfig::default())
    }

    /// Two connected ends; `config.capacity` applies to each stream in each direction.
    pub fn create_pair_with_config(name: impl Into<String>, config: ChannelConfig) -> (Self, Self) {
        let close = Arc::new(CloseSignal::default());
        let (fa, fb) =
            ChannelFrameTransport::pair_on(close.clone(), config, format!("arc:{}", name.into()));
        let (ta, tb) = Pipe::pair(config.capacity, config.spin_budget, close);
        (
            Self {
                frames: fa,
                typed: ta,
            },
            Self {
                frames: fb,
                typed: tb,
            },
        )
    }

    /// Sends a frame without copying it.
    pub async fn send_bytes(&self, frame: Bytes) -> Result<(), TransportError> {
        self.frames.send_bytes(frame).await
    }

    async fn send_item(&self, item: TypedItem) -> Result<(), TransportError> {
        let stats = &self.frames.stats;
        self.typed
            .send(item)
            .await
            .map_err(|e| stats.send_error(e))?;
        stats.sent(1, 0);
        Ok(())
    }

    async fn recv_item(&self) -> Result<TypedItem, TransportError> {
        let stats = &self.frames.stats;
        let item = self.typed.recv().await.map_err(|e| stats.recv_error(e))?;
        stats.received(0);
        Ok(item)
    }
}

impl FrameTransport for ArcFrameTransport {
    async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        self.frames.send_frame(frame).await
    }

    async fn send_frame_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        self.frames.send_frame_with(encode).await
    }

    async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        self.frames.send_batch_with(encode).await
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        self.frames.recv_frame().await
    }

    async fn recv_frames_with<F>(&self, max: usize, each: F) -> Result<usize, TransportError>
    where
        F: FnMut(Bytes) + Send,
    {
        self.frames.recv_frames_with(max, each).await
    }

    fn set_input_awaited(&self, awaited: bool) {
        self.frames.set_input_awaited(awaited);
        self.typed.set_awaited(awaited);
    }

    fn is_connected(&self) -> bool {
        self.frames.is_connected()
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.frames.close().await
    }

    fn stats(&self) -> Option<TransportStats> {
        self.frames.stats()
    }

    fn name(&self) -> &str {
        self.frames.name()
    }

    fn max_frame_size(&self) -> usize {
        self.frames.max_frame_size()
    }

    fn carries_values(&self) -> bool {
        true
    }

    async fn send_value(&self, value: Arc<dyn Any + Send + Sync>) -> Result<(), TransportError> {
        self.send_item(("dyn Any", value)).await
    }

    async fn recv_value(&self) -> Result<Arc<dyn Any + Send + Sync>, TransportError> {
        Ok(self.recv_item().await?.1)
    }
}

/// Typed values: sent and received without serialization (adapters also offer them through
/// their `ZeroCopyTransport` trait). They count in [`TransportStats`] as frames of 0 bytes.
impl ArcFrameTransport {
    /// Sends a value already behind an [`Arc`] (no copy, no serialization).
    pub async fn send_arc<T: Any + Send + Sync>(
        &self,
        value: Arc<T>,
    ) -> Result<(), TransportError> {
        self.send_item((type_name::<T>(), value)).await
    }

    /// Sends a value (moved into an [`Arc`]).
    pub async fn send_typed<T: Any + Send + Sync>(&self, value: T) -> Result<(), TransportError> {
        self.send_arc(Arc::new(value)).await
    }

    /// Receives the next typed value. If it is not a `T` it is dropped and
    /// [`TransportError::TypeMismatch`] is returned.
    pub async fn recv_typed<T: Any + Send + Sync>(&self) -> Result<Arc<T>, TransportError> {
        let (found, value) = self.recv_item().await?;
        value.downcast::<T>().map_err(|_| {
            self.frames.stats.recv_error(TransportError::TypeMismatch {
                expected: type_name::<T>(),
                found,
            })
        })
    }
}
