//! The write-stall deadline of a session: output handed to the transport that stops moving —
//! the peer stopped reading — closes the connection after
//! [`ServerConfig::write_stall_timeout`](crate::ServerConfig::write_stall_timeout) (or the
//! client's). The driver feeds it the way it feeds partial reads: how many bytes it holds that
//! are not written yet, after each step (`handle_unwritten`); any fall of that number is
//! progress and starts the wait again.

use std::time::{Duration, Instant};

/// Since when output waits without progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStall {
    /// When the unwritten bytes last fell (or appeared), while some are held.
    since: Option<Instant>,
    unwritten: usize,
}

impl WriteStall {
    /// The transport holds `bytes` not yet written (0: none).
    pub fn update(&mut self, now: Instant, bytes: usize) {
        if bytes == 0 {
            self.since = None;
        } else if self.since.is_none() || bytes < self.unwritten {
            self.since = Some(now);
        }
        self.unwritten = bytes;
    }

    /// When the output in progress counts as stalled, given the timeout.
    pub fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        self.since?.checked_add(timeout?)
    }

    /// Says what stalled, for the close reason.
    pub fn describe(&self, timeout: Option<Duration>) -> String {
        format!(
            "a write made no progress for {:?} ({} bytes unwritten): the peer stopped reading",
            timeout.unwrap_or_default(),
            self.unwritten
        )
    }
}
