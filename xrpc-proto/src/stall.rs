//! The write-stall deadline of a session: output handed to the transport that stops moving —
//! the peer stopped reading — closes the connection after
//! [`ServerConfig::write_stall_timeout`](crate::ServerConfig::write_stall_timeout) (or the
//! client's). The driver feeds it the way it feeds partial reads: how many bytes it holds that
//! are not written yet, after each step (`handle_unwritten`); any fall of that number is
//! progress and starts the wait again.

use std::time::{Duration, Instant};

/// Since when output waits without progress.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriteStall {
    /// When the unwritten bytes last fell (or appeared), while some are held.
    since: Option<Instant>,
    unwritten: usize,
}

impl WriteStall {
    /// The transport holds `bytes` not yet written (0: none).
    pub(crate) fn update(&mut self, now: Instant, bytes: usize) {
        if bytes == 0 {
            self.since = None;
        } else if self.since.is_none() || bytes < self.unwritten {
            self.since = Some(now);
        }
        self.unwritten = bytes;
    }

    /// When the output in progress counts as stalled, given the timeout.
    pub(crate) fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        self.since?.checked_add(timeout?)
    }

    /// Says what stalled, for the close reason.
    pub(crate) fn describe(&self, timeout: Option<Duration>) -> String {
        format!(
            "a write made no progress for {:?} ({} bytes unwritten): the peer stopped reading",
            timeout.unwrap_or_default(),
            self.unwritten
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_restarts_the_wait_and_an_empty_transport_ends_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = WriteStall::default();
        assert_eq!(w.deadline(Some(s)), None);
        w.update(t0, 100);
        assert_eq!(w.deadline(Some(s)), Some(t0 + s));
        w.update(t0 + s / 2, 100); // no progress
        assert_eq!(w.deadline(Some(s)), Some(t0 + s));
        w.update(t0 + s / 2, 60); // progress
        assert_eq!(w.deadline(Some(s)), Some(t0 + s / 2 + s));
        assert_eq!(w.deadline(None), None);
        w.update(t0 + s, 0);
        assert_eq!(w.deadline(Some(s)), None);
    }
}
