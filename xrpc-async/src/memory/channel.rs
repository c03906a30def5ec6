//! In-process frames in memory, over bounded pipes (serialized: each frame is a [`Bytes`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use xrpc_proto::{DEFAULT_MAX_FRAME_SIZE, FRAME_PREFIX_LEN};

use super::pipe::{CloseSignal, Pipe};
use crate::transport::{
    FrameTransport, StatsCounters, TransportError, TransportStats, check_len, check_prefixed,
};

/// Settings of a [`ChannelFrameTransport`] or [`ArcFrameTransport`](super::ArcFrameTransport)
/// pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Frames queued in each direction before a sender waits (default 1024; 0 is taken as 1).
    pub capacity: usize,
    /// Largest frame accepted by `send_*` (default 16 MiB).
    pub max_frame_size: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// Initial capacity of the encode scratch buffer; frames are split off it, so one allocation
/// serves many small frames.
const SCRATCH_CAPACITY: usize = 16 * 1024;

/// Encodes one prefixed frame into a shared scratch buffer and returns it without the prefix
/// (the bytes are then owned by the returned [`Bytes`]; the buffer's spare room is reused).
fn encode_to_bytes<F, E>(
    scratch: &std::sync::Mutex<BytesMut>,
    max: usize,
    encode: F,
) -> Result<Bytes, E>
where
    F: FnOnce(&mut BytesMut) -> Result<(), E>,
    E: From<TransportError>,
{
    let mut buf = scratch.lock().unwrap_or_else(|e| e.into_inner());
    buf.clear();
    let res = encode(&mut buf).and_then(|()| Ok(check_prefixed(&buf, max)?));
    match res {
        Ok(_) => Ok(buf.split().freeze().slice(FRAME_PREFIX_LEN..)),
        Err(e) => {
            buf.clear();
            Err(e)
        }
    }
}

/// An in-process [`FrameTransport`] pair over bounded in-memory pipes (no runtime needed). Sending copies the frame
/// once, into a [`Bytes`]; receiving copies nothing.
///
/// For tests and in-process use. Closing either end closes both.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use xrpc_tokio::{ChannelConfig, ChannelFrameTransport, FrameTransport};
/// let (a, b) = ChannelFrameTransport::create_pair("demo", ChannelConfig::default());
/// a.send_frame(b"ping").await.unwrap();
/// assert_eq!(&b.recv_frame().await.unwrap()[..], b"ping");
/// # }
/// ```
#[derive(Debug)]
pub struct ChannelFrameTransport {
    pipe: Pipe<Bytes>,
    /// The pair's counters (an `ArcFrameTransport` counts its typed values here too).
    pub(super) stats: StatsCounters,
    scratch: std::sync::Mutex<BytesMut>,
    max_frame_size: usize,
    name: String,
}

impl ChannelFrameTransport {
    /// Two connected ends. Needs no runtime.
    pub fn create_pair(name: impl Into<String>, config: ChannelConfig) -> (Self, Self) {
        let name = format!("channel:{}", name.into());
        Self::pair_on(Arc::new(CloseSignal::default()), config, name)
    }

    /// Two connected ends closed by `close` (shared with the pair's other streams).
    pub(super) fn pair_on(
        close: Arc<CloseSignal>,
        config: ChannelConfig,
        name: String,
    ) -> (Self, Self) {
        let (a, b) = Pipe::pair(config.capacity, close);
        let end = |pipe| Self {
            pipe,
            stats: StatsCounters::default(),
            scratch: std::sync::Mutex::new(BytesMut::with_capacity(SCRATCH_CAPACITY)),
            max_frame_size: config.max_frame_size,
            name: name.clone(),
        };
        (end(a), end(b))
    }

    /// Sends a frame that is already a [`Bytes`] (no copy).
    pub async fn send_bytes(&self, frame: Bytes) -> Result<(), TransportError> {
        check_len(frame.len(), self.max_frame_size)?;
        let len = frame.len();
        self.pipe
            .send(frame)
            .await
            .map_err(|e| self.stats.send_error(e))?;
        self.stats.sent(1, len);
        Ok(())
    }
}

impl FrameTransport for ChannelFrameTransport {
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
            .pipe
            .recv()
            .await
            .map_err(|e| self.stats.recv_error(e))?;
        self.stats.received(frame.len());
        Ok(frame)
    }

    fn is_connected(&self) -> bool {
        self.pipe.is_connected()
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.pipe.close();
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
}
