//! A receive's batch: the frame it waited for, then the frames already received behind it,
//! handed to the caller in order — the one loop of every transport that receives in batches
//! (sockets, shared memory).

use bytes::Bytes;
use xrpc_proto::SkippedFrame;

use super::{StatsCounters, TransportError};

/// What a transport finds already received behind a frame, without waiting.
pub(crate) enum Behind {
    /// A whole frame.
    Frame(Bytes),
    /// A frame over the maximum, skipped: the next receive reports it.
    Skipped(SkippedFrame),
    /// Nothing whole yet — or an error, which the next receive finds again.
    Nothing,
}

/// The start of a receive: a frame the last batch skipped ([`hand_out`] keeps it) is this
/// receive's error, counted in `stats`.
pub(crate) fn report_skipped(
    skipped: &mut Option<SkippedFrame>,
    stats: &StatsCounters,
) -> Result<(), TransportError> {
    match skipped.take() {
        Some(frame) => Err(stats.recv_error(TransportError::FrameSkipped(frame))),
        None => Ok(()),
    }
}

/// Hands `first` to `each`, then what `next` finds behind it, `max` frames in all at most,
/// counting each in `stats`. A skipped frame ends the batch and is kept in `skipped` for the
/// next receive to report. Returns how many frames `each` got.
pub(crate) fn hand_out(
    first: Bytes,
    max: usize,
    stats: &StatsCounters,
    skipped: &mut Option<SkippedFrame>,
    each: &mut impl FnMut(Bytes),
    mut next: impl FnMut() -> Behind,
) -> usize {
    stats.received(first.len());
    each(first);
    let mut n = 1;
    while n < max {
        match next() {
            Behind::Frame(frame) => {
                stats.received(frame.len());
                each(frame);
                n += 1;
            }
            Behind::Skipped(frame) => {
                *skipped = Some(frame);
                break;
            }
            Behind::Nothing => break,
        }
    }
    n
}
