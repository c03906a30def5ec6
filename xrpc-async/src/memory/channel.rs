//! In-process frames in memory, over bounded pipes (serialized: each frame is a [`Bytes`]).
//!
//! A frame is copied once, into a buffer that frames are split off (no allocation per frame:
//! the buffer's room is reused once the frames cut from it are dropped), and handed over as a
//! [`Bytes`] of it; receiving copies nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use xrpc_proto::{DEFAULT_MAX_FRAME_SIZE, FRAME_PREFIX_LEN};

use super::pipe::{CloseSignal, Pipe};
use crate::transport::{
    FrameTransport, StatsCounters, TransportError, TransportStats, batch_frames, check_len,
    check_prefixed, check_prefixed_batch,
};

/// Settings of a [`ChannelFrameTransport`] or [`ArcFrameTransport`](super::ArcFrameTransport)
/// pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Frames queued in each direction before a sender waits (default 1024; 0 is taken as 1).
    pub capacity: usize,
    /// Largest frame accepted by `send_*` (default 16 MiB).
    pub max_frame_size: usize,
    /// How long a receive that finds nothing (or a send that finds no room) lets the executor
    /// run its other tasks and looks again before it sleeps — the wait policy of shared memory
    /// (default 50 µs, as `SharedMemoryConfig::spin_budget`;
    /// zero: sleep at once). A wait whose peer end was last used on the same thread sleeps at
    /// once.
    pub spin_budget: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            spin_budget: xrpc_shm::DEFAULT_SPIN_BUDGET,
        }
    }
}

/// Initial capacity of the send buffer; frames are split off it, so one allocation serves
/// many small frames.
const SCRATCH_CAPACITY: usize = 16 * 1024;

/// The send buffer: frames are written into it and split off as [`Bytes`] of it.
#[derive(Debug)]
struct Scratch(std::sync::Mutex<BytesMut>);

impl Scratch {
    fn new() -> Self {
        Self(std::sync::Mutex::new(BytesMut::with_capacity(
            SCRATCH_CAPACITY,
        )))
    }

    /// What `write` puts into the (empty) buffer, once `check` (given the bytes and `max`)
    /// accepts it, as a [`Bytes`] of the buffer.
    fn fill<F, E>(
        &self,
        max: usize,
        write: F,
        check: impl FnOnce(&[u8], usize) -> Result<(), TransportError>,
    ) -> Result<Bytes, E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E>,
        E: From<TransportError>,
    {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.clear();
        match write(&mut buf).and_then(|()| Ok(check(&buf, max)?)) {
            Ok(()) => Ok(buf.split().freeze()),
            Err(e) => {
                buf.clear();
                Err(e)
            }
        }
    }
}

/// An in-process [`FrameTransport`] pair over bounded in-memory pipes (no runtime needed).
/// Sending copies the frame once, into a [`Bytes`] (cut from a reused buffer: no allocation
/// per frame); receiving copies nothing. A wait spins briefly before it sleeps, as shared
/// memory's does ([`ChannelConfig::spin_budget`]).
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
    scratch: Scratch,
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
        let (a, b) = Pipe::pair(config.capacity, config.spin_budget, close);
        let end = |pipe| Self {
            pipe,
            stats: StatsCounters::default(),
            scratch: Scratch::new(),
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
        let frame = self.scratch.fill(
            self.max_frame_size,
            |buf| {
                buf.extend_from_slice(frame);
                Ok::<_, TransportError>(())
            },
            |_, _| Ok(()),
        )?;
        self.send_bytes(frame).await
    }

    async fn send_frame_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let frame = self.scratch.fill(self.max_frame_size, encode, |buf, max| {
            check_prefixed(buf, max).map(drop)
        })?;
        Ok(self.send_bytes(frame.slice(FRAME_PREFIX_LEN..)).await?)
    }

    async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let batch = self.scratch.fill(self.max_frame_size, encode, |buf, max| {
            check_prefixed_batch(buf, max).map(drop)
        })?;
        for frame in batch_frames(&batch) {
            self.send_bytes(batch.slice_ref(frame)).await?;
        }
        Ok(())
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

    async fn recv_frames_with<F>(&self, max: usize, mut each: F) -> Result<usize, TransportError>
    where
        F: FnMut(Bytes) + Send,
    {
        each(self.recv_frame().await?);
        let mut n = 1;
        while n < max {
            let Some(frame) = self.pipe.try_recv() else {
                break;
            };
            self.stats.received(frame.len());
            each(frame);
            n += 1;
        }
        Ok(n)
    }

    fn set_input_awaited(&self, awaited: bool) {
        self.pipe.set_awaited(awaited);
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
