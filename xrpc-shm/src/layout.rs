//! The byte layout of a ring: its header (indices and wake-up words, each
//! group on its own 128-byte line) and its records.
//!
//! A record is an 8-byte header — `u32` payload length in the low half, `u32`
//! kind in the high half, written as one aligned `u64` — followed by the
//! payload padded to a multiple of 8 bytes. A record is always contiguous:
//! when it does not fit before the end of the data region, the producer fills
//! the rest with a padding record and writes the record at offset 0.
//!
//! A record carries at most half the ring ([`max_payload_for`]). A frame that
//! fits is one `KIND_FRAME` record; a larger one (up to the configured max
//! frame size) is a `KIND_FIRST` record — the frame's total length as a
//! little-endian `u64`, then its first bytes — followed by `KIND_CONT` records
//! with the rest, which the consumer reassembles.

use crate::sync::{AtomicU32, AtomicU64};

/// Size of a record header in bytes.
pub(crate) const REC_HDR: usize = 8;
/// Record kind of a frame.
pub(crate) const KIND_FRAME: u32 = 0x4652_4d58; // "XMRF"
/// Record kind of padding up to the end of the data region.
pub(crate) const KIND_PAD: u32 = 0x5041_4458; // "XDAP"
/// Record kind of the first piece of a frame larger than one record.
pub(crate) const KIND_FIRST: u32 = 0x5453_5258; // "XRST"
/// Record kind of a further piece of a frame larger than one record.
pub(crate) const KIND_CONT: u32 = 0x544e_4358; // "XCNT"
/// Bytes of the total-length prefix of a `KIND_FIRST` payload.
pub(crate) const FIRST_PREFIX: usize = 8;

/// Largest max frame size (the largest length a 4-byte stream prefix carries).
pub(crate) const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

/// Smallest ring data capacity in bytes.
pub(crate) const MIN_CAPACITY: usize = 32;
/// Largest ring data capacity in bytes (1 GiB).
pub(crate) const MAX_CAPACITY: usize = 1 << 30;

/// Bits of [`Control::closed`].
pub(crate) const CLOSED_BY_PRODUCER: u32 = 1;
pub(crate) const CLOSED_BY_CONSUMER: u32 = 2;

/// Size of a record carrying `len` payload bytes.
#[inline]
pub(crate) const fn record_len(len: usize) -> usize {
    REC_HDR + ((len + 7) & !7)
}

/// Largest record payload a ring of `capacity` bytes carries: half the ring,
/// so that a record always fits into an empty ring, wherever its indices
/// stand. Larger frames travel in pieces.
#[inline]
pub(crate) const fn max_payload_for(capacity: usize) -> usize {
    capacity / 2 - REC_HDR
}

/// The start area of a ring: how far into its ring a producer goes before it starts over at
/// the ring's start when it finds the ring empty (see `Producer::restart_pad`): 32 KiB, or a
/// quarter of a smaller ring.
/// A connection whose frames are small keeps this much of each ring resident, not all of it;
/// a producer that starts over still has this much room before it needs its consumer again.
#[inline]
pub(crate) const fn start_area(capacity: usize) -> usize {
    if capacity / 4 < 32 * 1024 {
        capacity / 4
    } else {
        32 * 1024
    }
}

/// Checks a ring capacity.
pub(crate) fn check_capacity(capacity: usize) -> Result<(), String> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(format!(
            "ring capacity {capacity} is not a power of two in [{MIN_CAPACITY}, {MAX_CAPACITY}]"
        ));
    }
    Ok(())
}

/// Checks a (capacity, max frame) pair. The max frame size does not depend
/// on the capacity: frames larger than a record travel in pieces.
pub(crate) fn check_geometry(capacity: usize, max_frame: usize) -> Result<(), String> {
    check_capacity(capacity)?;
    if max_frame == 0 || max_frame > MAX_FRAME_LIMIT {
        return Err(format!(
            "max frame size {max_frame} not in [1, {MAX_FRAME_LIMIT}]"
        ));
    }
    if max_frame > max_payload_for(capacity) && max_payload_for(capacity) <= FIRST_PREFIX {
        return Err(format!(
            "max frame size {max_frame} needs pieces, and a ring of {capacity} bytes is too small for them (at least 64)"
        ));
    }
    Ok(())
}

/// Encodes a record header.
#[inline]
pub(crate) const fn encode_rec(len: u32, kind: u32) -> u64 {
    ((kind as u64) << 32) | len as u64
}

/// Decodes a record header into (length, kind).
#[inline]
pub(crate) const fn decode_rec(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// One 128-byte line (two 64-byte lines, against adjacent-line prefetch).
#[repr(C, align(128))]
pub(crate) struct Line<T>(pub(crate) T);

/// The wake-up and lifecycle words of a ring.
#[repr(C)]
pub(crate) struct Control {
    /// `CLOSED_BY_*` bits, set once by an orderly close.
    pub(crate) closed: AtomicU32,
    /// Futex word the consumer sleeps on; bumped by the producer to wake it.
    pub(crate) data_seq: AtomicU32,
    /// Number of consumer-side sleepers (announced before sleeping).
    pub(crate) data_waiters: AtomicU32,
    /// Futex word the producer sleeps on; bumped by the consumer to wake it.
    pub(crate) space_seq: AtomicU32,
    /// Number of producer-side sleepers.
    pub(crate) space_waiters: AtomicU32,
}

/// The shared header of one ring (opaque outside the crate). All zeroes is
/// the valid initial state, so a freshly truncated memfd holds empty rings.
#[repr(C)]
pub struct RingHeader {
    /// Producer position in bytes since the start (monotonic, never wraps in
    /// practice). Only published here; the producer's own copy is private.
    pub(crate) head: Line<AtomicU64>,
    /// Consumer position, published by the consumer.
    pub(crate) tail: Line<AtomicU64>,
    /// Wake-up words and lifecycle flags.
    pub(crate) ctl: Line<Control>,
}

/// Size of a [`RingHeader`] in shared memory.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const RING_HEADER_SIZE: usize = 3 * 128;

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RingHeader>() == RING_HEADER_SIZE);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<RingHeader>() == 128);

#[cfg(any(test, loom, feature = "test-util"))]
impl RingHeader {
    /// A zeroed header (heap-backed rings; segments are zeroed by the kernel).
    pub(crate) fn new() -> Self {
        RingHeader {
            head: Line(AtomicU64::new(0)),
            tail: Line(AtomicU64::new(0)),
            ctl: Line(Control {
                closed: AtomicU32::new(0),
                data_seq: AtomicU32::new(0),
                data_waiters: AtomicU32::new(0),
                space_seq: AtomicU32::new(0),
                space_waiters: AtomicU32::new(0),
            }),
        }
    }
}
