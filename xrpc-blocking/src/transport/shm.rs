//! Shared memory between processes on one machine, over the rings of [`xrpc_shm`]. The thread
//! that waits for input waits on the ring itself, by `xrpc_shm`'s wait policy ([`Backoff`]):
//! it checks the ring again and again, yielding the CPU between checks, for the whole
//! [`SharedMemoryConfig::spin_budget`] (an answer within it costs no sleep and no hand-off),
//! then sleeps on the ring's doorbell (readable too when the peer dies), in slices of at most
//! [`SLICE`] to notice a local close. A frame above this side's maximum is skipped without
//! being buffered and reported as [`TransportError::MessageTooLarge`].

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use xrpc_async::transport::batch_frames;
use xrpc_shm::{
    Backoff, RecvWaiter, SendWaiter, ShmConfig, ShmConnection, ShmError, ShmListener, ShmReceiver,
    ShmSender, WaitStep,
};

use super::{Chunk, Close, FrameListener, FrameTransport, Io, Reader, TransportError, Writer};

/// Longest single wait on a ring before the local close flag is checked again.
const SLICE: Duration = Duration::from_millis(20);

pub use xrpc_shm::SharedMemoryConfig;

fn shm_error(e: ShmError) -> TransportError {
    match e {
        ShmError::Disconnected => TransportError::ConnectionClosed,
        ShmError::Timeout => TransportError::Timeout,
        ShmError::FrameTooLarge { size, max } => TransportError::MessageTooLarge { size, max },
        other => TransportError::ConnectionFailed(other.to_string()),
    }
}

/// A shared-memory connection, wire-compatible with `xrpc_tokio::SharedMemoryFrameTransport`:
/// `RpcClient::new(SharedMemoryFrameTransport::connect_client("my_service")?)`.
pub struct SharedMemoryFrameTransport {
    conn: ShmConnection,
}

impl SharedMemoryFrameTransport {
    /// Connects to service `name` with the default configuration.
    pub fn connect_client(name: &str) -> Result<Self, TransportError> {
        Self::connect(name, SharedMemoryConfig::default())
    }

    /// Connects to service `name`, waiting at most `config.connect_timeout` for its segment.
    pub fn connect(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let conn = ShmConnection::connect(name, ShmConfig::from(&config)).map_err(shm_error)?;
        Ok(Self { conn })
    }
}

impl FrameTransport for SharedMemoryFrameTransport {
    fn into_io(self) -> Io {
        let max_frame_size = self.conn.max_frame_size();
        let (sender, receiver) = self.conn.split();
        let closed = Arc::new(AtomicBool::new(false));
        let waiter = sender.waiter();
        let sender = Arc::new(Mutex::new(Some(sender)));
        Io {
            reader: Box::new(RingReader {
                waiter: receiver.waiter(),
                rx: receiver,
                closed: closed.clone(),
            }),
            writer: Box::new(RingWriter {
                tx: sender.clone(),
                waiter,
                closed: closed.clone(),
            }),
            closer: Box::new(RingCloser { tx: sender, closed }),
            max_frame_size,
        }
    }
}

struct RingReader {
    rx: ShmReceiver,
    waiter: RecvWaiter,
    closed: Arc<AtomicBool>,
}

impl Reader for RingReader {
    fn read(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(Chunk<'_>),
    ) -> Result<bool, TransportError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // A thread that waits for nothing else keeps checking for the whole spin budget,
        // however long its yields take, as a runtime's task does.
        let mut backoff: Backoff<'_> = self.waiter.backoff().in_runtime();
        loop {
            match self.rx.try_recv_bytes() {
                Ok(Some(frame)) => {
                    backoff.ready();
                    deliver(Chunk::Frame(frame));
                    return Ok(true);
                }
                Ok(None) if !self.closed.load(Ordering::Acquire) => {}
                Ok(None) | Err(ShmError::Disconnected) => return Ok(false),
                Err(e) => return Err(shm_error(e)),
            }
            match backoff.step() {
                WaitStep::Spin => std::hint::spin_loop(),
                WaitStep::Yield => std::thread::yield_now(),
                WaitStep::Sleep => {
                    let left =
                        deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
                    let Ok(announced) = self.waiter.prepare_sleep() else {
                        return Ok(false); // the peer is gone
                    };
                    if announced.is_none() {
                        continue;
                    }
                    if left.is_zero() {
                        return Ok(true);
                    }
                    let bell = self.waiter.doorbell();
                    let [rung] = super::wait_readable([bell.as_fd()], left.min(SLICE))?;
                    if rung {
                        // At the end of its stream (the peer is gone) the next
                        // `prepare_sleep` says so, after the frames still in the ring.
                        bell.drain().map_err(shm_error)?;
                    }
                }
            }
        }
    }
}

struct RingWriter {
    tx: Arc<Mutex<Option<ShmSender>>>,
    waiter: SendWaiter,
    closed: Arc<AtomicBool>,
}

impl Writer for RingWriter {
    fn write(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let mut tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        for frame in batch_frames(batch) {
            let (mut sent, since) = (0, Instant::now());
            loop {
                let sender = tx.as_mut().ok_or(TransportError::ConnectionClosed)?;
                match sender.try_send_from(frame, &mut sent) {
                    Ok(()) => break,
                    Err(ShmError::Full) => {}
                    Err(e) => return Err(shm_error(e)),
                }
                if self.closed.load(Ordering::Acquire) {
                    return Err(TransportError::ConnectionClosed);
                }
                if since.elapsed() > super::WRITE_STALL {
                    return Err(TransportError::Timeout);
                }
                self.waiter
                    .wait_writable(frame.len() - sent, Some(SLICE))
                    .map_err(shm_error)?;
            }
        }
        Ok(())
    }
}

/// Closing drops the sending half, which tells the peer (its receive ends with
/// `Disconnected` after the frames already sent).
struct RingCloser {
    tx: Arc<Mutex<Option<ShmSender>>>,
    closed: Arc<AtomicBool>,
}

impl Close for RingCloser {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let sender = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(sender);
    }
}

/// Accepts shared-memory clients of one service, each on its own segment.
pub struct SharedMemoryFrameTransportListener {
    listener: ShmListener,
}

impl SharedMemoryFrameTransportListener {
    /// Listens as service `name` (an abstract Unix socket: nothing is left on disk).
    pub fn bind(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let listener = ShmListener::bind(name, ShmConfig::from(&config)).map_err(shm_error)?;
        listener.set_nonblocking(true).map_err(shm_error)?;
        Ok(Self { listener })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        self.listener.name()
    }
}

impl FrameListener for SharedMemoryFrameTransportListener {
    type Transport = SharedMemoryFrameTransport;

    fn accept_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<SharedMemoryFrameTransport>, TransportError> {
        if !super::wait_readable([self.listener.as_fd()], timeout)?[0] {
            return Ok(None);
        }
        match self.listener.accept() {
            Ok(conn) => Ok(Some(SharedMemoryFrameTransport { conn })),
            Err(ShmError::Io(e)) => super::accepted(Err(e)),
            Err(e) => Err(shm_error(e)),
        }
    }
}
