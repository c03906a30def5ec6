//! [`TransportStats`]: a transport's counters, and the live atomics behind them
//! ([`StatsCounters`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::TransportError;

/// A snapshot of a transport's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Frame bytes sent (length prefixes excluded).
    pub bytes_sent: u64,
    /// Frame bytes received (length prefixes excluded).
    pub bytes_received: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Failed receives (a clean close is not counted).
    pub recv_errors: u64,
}

/// The live counters behind [`TransportStats`] (relaxed atomics, one increment per event), for
/// transports to keep.
#[derive(Debug, Default)]
pub struct StatsCounters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
}

impl StatsCounters {
    /// Counts `frames` frames of `bytes` bytes in all sent.
    pub fn sent(&self, frames: u64, bytes: usize) {
        self.frames_sent.fetch_add(frames, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one frame of `bytes` bytes received.
    pub fn received(&self, bytes: usize) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a failed send and passes the error through.
    pub fn send_error(&self, e: TransportError) -> TransportError {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Counts a failed receive (not a clean close) and passes the error through.
    pub fn recv_error(&self, e: TransportError) -> TransportError {
        if !matches!(e, TransportError::ConnectionClosed) {
            self.recv_errors.fetch_add(1, Ordering::Relaxed);
        }
        e
    }

    /// The counters now.
    pub fn snapshot(&self) -> TransportStats {
        TransportStats {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            recv_errors: self.recv_errors.load(Ordering::Relaxed),
        }
    }
}
