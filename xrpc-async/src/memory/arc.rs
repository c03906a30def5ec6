//! The in-process fast path: frames as [`Bytes`] moved without copying, and typed values as
//! `Arc<dyn Any>` with no serialization at all.

use std::any::{Any, type_name};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::channel::{ChannelConfig, SCRATCH_CAPACITY, encode_to_bytes};
use super::pipe::{CloseSignal, Pipe};
use crate::transport::{FrameTransport, StatsCounters, TransportError, TransportStats, check_len};

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
    frames: Pipe<Bytes>,
    typed: Pipe<TypedItem>,
    close: Arc<CloseSignal>,
    stats: StatsCounters,
    scratch: std::sync::Mutex<BytesMut>,
    max_frame_size: usize,
    name: String,
}

impl ArcFrameTransport {
    /// Two connected ends with the default [`ChannelConfig`]. Needs no runtime.
    pub fn create_pair(name: impl Into<String>) -> (Self, Self) {
        Self::create_pair_with_config(name, ChannelConfig::default())
    }

    /// Two connected ends; `config.capacity` applies to each stream in each direction.
    pub fn create_pair_with_config(name: impl Into<String>, config: ChannelConfig) -> (Self, Self) {
        let name = format!("arc:{}", name.into());
        let close = Arc::new(CloseSignal::default());
        let (fa, fb) = Pipe::pair(config.capacity, close.clone());
        let (ta, tb) = Pipe::pair(config.capacity, close.clone());
        let end = |frames, typed| Self {
            frames,
            typed,
            close: close.clone(),
            stats: StatsCounters::default(),
            scratch: std::sync::Mutex::new(BytesMut::with_capacity(SCRATCH_CAPACITY)),
            max_frame_size: config.max_frame_size,
            name: name.clone(),
        };
        (end(fa, ta), end(fb, tb))
    }

    /// Sends a frame without copying it.
    pub async fn send_bytes(&self, frame: Bytes) -> Result<(), TransportError> {
        check_len(frame.len(), self.max_frame_size)?;
        let len = frame.len();
        self.frames
            .send(frame)
            .await
            .map_err(|e| self.stats.send_error(e))?;
        self.stats.sent(1, len);
        Ok(())
    }
}

impl FrameTransport for ArcFrameTransport {
    async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        check_len(frame.len(), self.max_frame_size)?;
        self.send_bytes(Bytes::copy_from_slice(frame)).await
    }

    async fn send_frame_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let frame = encode_to_bytes(&self.scratch, self.max_frame_size, encode)?;
        Ok(self.send_bytes(frame).await?)
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        let frame = self
            .frames
            .recv()
            .await
            .map_err(|e| self.stats.recv_error(e))?;
        self.stats.received(frame.len());
        Ok(frame)
    }

    fn is_connected(&self) -> bool {
        self.frames.is_connected() && self.typed.is_connected()
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.close.close();
        Ok(())
    }

    fn stats(&self) -> Option<TransportStats> {
        Some(self.stats.snapshot())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    fn carries_values(&self) -> bool {
        true
    }

    async fn send_value(&self, value: Arc<dyn Any + Send + Sync>) -> Result<(), TransportError> {
        self.typed
            .send(("dyn Any", value))
            .await
            .map_err(|e| self.stats.send_error(e))?;
        self.stats.sent(1, 0);
        Ok(())
    }

    async fn recv_value(&self) -> Result<Arc<dyn Any + Send + Sync>, TransportError> {
        let (_, value) = self
            .typed
            .recv()
            .await
            .map_err(|e| self.stats.recv_error(e))?;
        self.stats.received(0);
        Ok(value)
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
        self.typed
            .send((type_name::<T>(), value))
            .await
            .map_err(|e| self.stats.send_error(e))?;
        self.stats.sent(1, 0);
        Ok(())
    }

    /// Sends a value (moved into an [`Arc`]).
    pub async fn send_typed<T: Any + Send + Sync>(&self, value: T) -> Result<(), TransportError> {
        self.send_arc(Arc::new(value)).await
    }

    /// Receives the next typed value. If it is not a `T` it is dropped and
    /// [`TransportError::TypeMismatch`] is returned.
    pub async fn recv_typed<T: Any + Send + Sync>(&self) -> Result<Arc<T>, TransportError> {
        let (found, value) = self
            .typed
            .recv()
            .await
            .map_err(|e| self.stats.recv_error(e))?;
        self.stats.received(0);
        value.downcast::<T>().map_err(|_| {
            self.stats.recv_error(TransportError::TypeMismatch {
                expected: type_name::<T>(),
                found,
            })
        })
    }
}
