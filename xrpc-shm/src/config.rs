//! Connection configuration.

use std::time::Duration;

use crate::error::{Result, ShmError};
use crate::layout::{RING_HEADER_SIZE, check_geometry};

/// Smallest ring capacity of a shared-memory segment (one page, which also
/// keeps both ring headers 128-byte aligned).
pub(crate) const MIN_SEGMENT_CAPACITY: usize = 4096;

/// Default max frame size: 16 MiB, as `xrpc_proto::DEFAULT_MAX_FRAME_SIZE`.
pub(crate) const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;

/// Longest futex sleep slice: bounds how late a dead peer is noticed.
pub(crate) const MAX_WAIT_SLICE: Duration = Duration::from_millis(50);

/// Configuration of a shared-memory listener or connection.
///
/// The server's `ring_capacity` and `max_frame_size` decide the geometry of
/// every segment it hands out (the client learns them from the segment and
/// ignores its own); the waiting parameters are per side.
///
/// ```
/// use std::time::Duration;
/// use xrpc_shm::ShmConfig;
///
/// let config = ShmConfig {
///     ring_capacity: 1 << 20,
///     max_frame_size: 256 * 1024,
///     spin_budget: Duration::from_micros(20),
///     ..ShmConfig::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct ShmConfig {
    /// Data bytes of each ring (one per direction): a power of two in
    /// `[4096, 1 GiB]`. Default 4 MiB. Pages are only touched as the ring
    /// cycles through them.
    pub ring_capacity: usize,
    /// Largest frame, in `[1, 4 GiB - 1]`, independent of the ring capacity:
    /// a frame larger than half the ring (less an 8-byte record header)
    /// passes through it in pieces and is reassembled by the receiver, into
    /// a buffer allocated per such frame (never for an idle connection).
    /// Default 16 MiB, as on every xrpc transport.
    pub max_frame_size: usize,
    /// Longest time a blocking call spins before it sleeps on the futex.
    /// Longer trades CPU for latency. The actual spin adapts below this: it
    /// shrinks when spinning does not pay (for instance when the peer shares
    /// our CPU on an oversubscribed host, where the futex hand-off is
    /// faster) and grows back when it does. Zero: never spin. Default 50 µs.
    pub spin_budget: Duration,
    /// Longest single futex sleep, after which peer liveness is checked
    /// (one zero-timeout `poll` of the rendezvous socket): bounds how late a
    /// dead peer is noticed. In `(0, 50 ms]`, default 10 ms.
    pub wait_slice: Duration,
    /// How long [`crate::ShmConnection::connect`] waits for the server's
    /// segment. Default 5 s.
    pub handshake_timeout: Duration,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            ring_capacity: 4 << 20,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            spin_budget: crate::backoff::DEFAULT_SPIN_BUDGET,
            wait_slice: Duration::from_millis(10),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

impl ShmConfig {
    /// Checks every value, saying which is out of range.
    pub fn validate(&self) -> Result<()> {
        if self.ring_capacity < MIN_SEGMENT_CAPACITY {
            return Err(ShmError::InvalidConfig(format!(
                "ring capacity {} below the minimum {MIN_SEGMENT_CAPACITY}",
                self.ring_capacity
            )));
        }
        check_geometry(self.ring_capacity, self.max_frame_size).map_err(ShmError::InvalidConfig)?;
        if self.wait_slice.is_zero() || self.wait_slice > MAX_WAIT_SLICE {
            return Err(ShmError::InvalidConfig(format!(
                "wait slice {:?} not in (0, {MAX_WAIT_SLICE:?}]",
                self.wait_slice
            )));
        }
        Ok(())
    }

    /// Bytes of shared memory one connection takes with this configuration.
    pub fn segment_size(&self) -> usize {
        crate::segment::Geometry {
            capacity: self.ring_capacity,
            max_frame: self.max_frame_size,
        }
        .total_size()
    }
}

/// The settings of a shared-memory transport as the adapter crates (`xrpc-tokio`,
/// `xrpc-blocking`, …) present them — one definition, so every adapter has the same names and
/// defaults. Converts into the [`ShmConfig`] of a listener or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemoryConfig {
    /// Bytes of each ring (one per direction): a power of two, at least 4096. Default 1 MiB.
    pub buffer_size: usize,
    /// Largest frame. Default 16 MiB (`xrpc_proto::DEFAULT_MAX_FRAME_SIZE`), as on every
    /// transport. Independent of `buffer_size`: a frame larger than half the ring passes through
    /// it in pieces, reassembled by the receiver into a buffer of that frame's size (an idle
    /// connection holds none). The server's value applies to both directions.
    pub max_frame_size: usize,
    /// How long a waiting side keeps retrying (spinning, or yielding between tries in a
    /// runtime) before it sleeps. Longer trades CPU for latency. Default 50 µs.
    pub spin_budget: Duration,
    /// How long a client waits for the server's segment. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for SharedMemoryConfig {
    fn default() -> Self {
        Self {
            buffer_size: 1 << 20,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            spin_budget: crate::backoff::DEFAULT_SPIN_BUDGET,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl From<&SharedMemoryConfig> for ShmConfig {
    fn from(c: &SharedMemoryConfig) -> Self {
        ShmConfig {
            ring_capacity: c.buffer_size,
            max_frame_size: c.max_frame_size,
            spin_budget: c.spin_budget,
            handshake_timeout: c.connect_timeout,
            ..ShmConfig::default()
        }
    }
}

const _: () =
    assert!(MIN_SEGMENT_CAPACITY.is_multiple_of(128) && RING_HEADER_SIZE.is_multiple_of(128));
