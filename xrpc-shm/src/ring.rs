//! The single-producer/single-consumer ring of variable-length frames,
//! generic over its [`RingStorage`].
//!
//! Each end keeps its own index privately (`Producer::head`,
//! `Consumer::tail`) and only *publishes* it to the shared header. The peer's
//! index is read once into a local, validated (monotonic, within one capacity
//! of our own, 8-byte aligned) and cached; the producer re-reads the tail only
//! when the ring looks full, the consumer re-reads the head only when it looks
//! empty. Record headers are copied once into a local and bounded before use.
//! Any violation is [`ShmError::Corrupt`] and kills this end for good.
//!
//! A frame larger than one record ([`crate::layout`]) travels in pieces: the
//! producer publishes a `KIND_FIRST` record and then `KIND_CONT` records as
//! room frees up, and the consumer copies each piece into a reassembly buffer
//! (releasing its room at once, so a frame may be larger than the ring),
//! bounded by the frame's declared total, itself bounded by the max frame
//! size. The buffer is empty (no allocation) between large frames.

use std::ops::{Deref, DerefMut};
use std::ptr;

use crate::error::{Result, ShmError, corrupt};
use crate::layout::{
    CLOSED_BY_CONSUMER, CLOSED_BY_PRODUCER, FIRST_PREFIX, KIND_CONT, KIND_FIRST, KIND_FRAME,
    KIND_PAD, REC_HDR, check_geometry, decode_rec, encode_rec, max_payload_for, record_len,
    start_area,
};
use crate::storage::RingStorage;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::wait::{SleepGuard, Sleeper, WaitCfg, announce, block_on, notify, wake};

/// Bytes kept of a frame skipped for being larger than the max frame size
/// ([`Consumer::skipped_head`]): more than a message header.
pub(crate) const SKIPPED_HEAD: usize = 64;

fn dead_error() -> ShmError {
    corrupt("ring is dead after an earlier corruption")
}

/// The writing end of a ring.
pub struct Producer<S: RingStorage> {
    storage: S,
    cap: u64,
    mask: u64,
    max_frame: usize,
    /// Largest record payload (half the ring less a header).
    max_payload: usize,
    /// [`start_area`] of this ring.
    start_area: u64,
    /// The frame being sent in pieces: (total length, bytes published).
    partial: Option<(usize, usize)>,
    /// Authoritative write position (private).
    head: u64,
    /// The write position last published to the consumer.
    published_head: u64,
    /// Commits are published together by [`Producer::flush`] (a batch of frames: one shared
    /// store, fence and waiter check for all of them).
    corked: bool,
    /// Last validated consumer position.
    cached_tail: u64,
    dead: bool,
}

/// The reading end of a ring.
pub struct Consumer<S: RingStorage> {
    storage: S,
    cap: u64,
    mask: u64,
    max_frame: usize,
    /// Largest record payload (half the ring less a header).
    max_payload: usize,
    /// Largest frame the producer may send (the segment's limit, at least `max_frame`): a
    /// larger declared total is corruption, one within it but above `max_frame` is skipped.
    wire_max: usize,
    /// Reassembly of a frame that arrives in pieces; empty (unallocated)
    /// between such frames.
    partial: Vec<u8>,
    /// Declared total length of the frame in `partial`; 0: none under way.
    partial_total: usize,
    /// A frame above `max_frame` whose pieces are being skipped (never buffered): its declared
    /// total and the bytes skipped so far.
    skipping: Option<(usize, usize)>,
    /// The first bytes of the frame skipped last (for the caller to tell which it was).
    skipped_head: [u8; SKIPPED_HEAD],
    skipped_head_len: usize,
    /// Authoritative read position (private).
    tail: u64,
    /// The read position last published to the producer. Room is handed back in batches
    /// (every quarter ring, and whenever every published record is read): one shared store,
    /// fence and waiter check per batch instead of per frame.
    published_tail: u64,
    /// Last validated producer position.
    cached_head: u64,
    dead: bool,
}

/// Creates both ends of a fresh (all-zero) ring.
#[cfg(any(test, loom, feature = "test-util"))]
pub(crate) fn split<S: RingStorage + Clone>(
    storage: S,
    max_frame: usize,
) -> Result<(Producer<S>, Consumer<S>)> {
    Ok((
        Producer::new(storage.clone(), max_frame)?,
        Consumer::new(storage, max_frame, max_frame)?,
    ))
}

impl<S: RingStorage> Producer<S> {
    /// The producer of a fresh ring (indices at 0).
    pub(crate) fn new(storage: S, max_frame: usize) -> Result<Self> {
        let cap = storage.capacity();
        check_geometry(cap, max_frame).map_err(ShmError::InvalidConfig)?;
        Ok(Producer {
            storage,
            cap: cap as u64,
            mask: cap as u64 - 1,
            max_frame,
            max_payload: max_payload_for(cap),
            start_area: start_area(cap) as u64,
            partial: None,
            head: 0,
            published_head: 0,
            corked: false,
            cached_tail: 0,
            dead: false,
        })
    }

    /// Largest frame accepted.
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Largest frame written in one record (in place with
    /// [`Producer::try_reserve`], or at once by [`Producer::try_send`]).
    #[inline]
    pub fn max_piece(&self) -> usize {
        self.max_payload.min(self.max_frame)
    }

    /// Reserves room for a frame of `len` bytes (at most
    /// [`Producer::max_piece`]), to be written in place and published with
    /// [`Slot::commit`]. `Err(Full)` when there is no room now.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<Slot<'_, S>> {
        if self.dead {
            return Err(dead_error());
        }
        if len > self.max_piece() {
            return Err(ShmError::FrameTooLarge {
                size: len,
                max: self.max_piece(),
            });
        }
        self.reserve_record(len, KIND_FRAME)
    }

    /// Reserves room for one record of `kind` with `len` payload bytes
    /// (`len <= max_payload`, checked by callers).
    #[inline]
    fn reserve_record(&mut self, len: usize, kind: u32) -> Result<Slot<'_, S>> {
        if self.storage.header().ctl.0.closed.load(Relaxed) != 0 {
            return Err(ShmError::Disconnected);
        }
        let (mut pad, rec) = self.layout_for(len);
        if pad == 0 && self.leaves_start_area(rec) {
            pad = self.restart_pad(rec)?;
        }
        if self.head - self.cached_tail + pad + rec > self.cap {
            self.refresh_tail()?;
            if self.head - self.cached_tail + pad + rec > self.cap {
                // The consumer makes room only for what it sees.
                self.flush();
                return Err(ShmError::Full);
            }
        }
        let frame_off = if pad == 0 { self.head & self.mask } else { 0 };
        Ok(Slot {
            producer: self,
            frame_off: frame_off as usize,
            len,
            kind,
            pad,
            rec,
        })
    }

    /// Copies `frame` into the ring. `Err(Full)` when there is no room now.
    ///
    /// A frame of at most [`Producer::max_piece`] bytes is published whole or
    /// not at all. A larger one may be published in part before `Full`: the
    /// next send then starts over, and the consumer drops the unfinished
    /// frame. To go on where a send stopped, use [`Producer::try_send_from`].
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<()> {
        let mut sent = 0;
        self.try_send_from(frame, &mut sent)
    }

    /// Copies `frame[*sent..]` into the ring, as much as fits now, and
    /// advances `*sent`: `Ok(())` once the whole frame is published,
    /// `Err(Full)` when the ring filled up first (call again with the same
    /// frame and counter once there is room). Start a frame with `*sent ==
    /// 0`; a counter that does not match the frame under way starts it over
    /// (the consumer drops the unfinished one).
    pub fn try_send_from(&mut self, frame: &[u8], sent: &mut usize) -> Result<()> {
        if self.dead {
            return Err(dead_error());
        }
        let total = frame.len();
        if total > self.max_frame {
            return Err(ShmError::FrameTooLarge {
                size: total,
                max: self.max_frame,
            });
        }
        if total <= self.max_payload {
            let mut slot = self.reserve_record(total, KIND_FRAME)?;
            slot.copy_from_slice(frame);
            slot.commit();
            self.partial = None;
            *sent = total;
            return Ok(());
        }
        if *sent == 0 || self.partial != Some((total, *sent)) {
            *sent = 0;
        }
        while *sent < total {
            let s = *sent;
            if s == 0 {
                let chunk = self.max_payload - FIRST_PREFIX;
                let mut slot = self.reserve_record(FIRST_PREFIX + chunk, KIND_FIRST)?;
                slot[..FIRST_PREFIX].copy_from_slice(&(total as u64).to_le_bytes());
                slot[FIRST_PREFIX..].copy_from_slice(&frame[..chunk]);
                slot.commit();
                *sent = chunk;
            } else {
                let chunk = (total - s).min(self.max_payload);
                let mut slot = self.reserve_record(chunk, KIND_CONT)?;
                slot.copy_from_slice(&frame[s..s + chunk]);
                slot.commit();
                *sent = s + chunk;
            }
            self.partial = Some((total, *sent));
        }
        self.partial = None;
        Ok(())
    }

    /// (padding, record) bytes a frame of `len` bytes takes at the head.
    #[inline]
    fn layout_for(&self, len: usize) -> (u64, u64) {
        let rec = record_len(len) as u64;
        let contig = self.cap - (self.head & self.mask);
        if rec <= contig {
            (0, rec)
        } else {
            (contig, rec)
        }
    }

    /// Whether a record of `rec` bytes at the head would take the head past the ring's first
    /// [`start_area`] bytes (once per lap of the ring, at most): the producer then checks
    /// whether it can start over at the ring's start instead ([`Producer::restart_pad`]).
    #[inline]
    fn leaves_start_area(&self, rec: u64) -> bool {
        let off = self.head & self.mask;
        off <= self.start_area && off + rec > self.start_area
    }

    /// Padding that makes a record of `rec` bytes start over at the ring's start, when the
    /// ring is empty (every published record released, nothing committed unpublished) and the
    /// padding and the record fit; 0 otherwise. So a connection whose frames are small beside
    /// the ring keeps using the ring's first pages instead of cycling through (and keeping
    /// resident) every page. The padding takes the rest of the ring until the consumer reads
    /// past it: meanwhile the producer has the room before its old position (at least the
    /// start area less one record), more than a batch of small frames needs. One load of the
    /// shared tail per lap.
    #[cold]
    fn restart_pad(&mut self, rec: u64) -> Result<u64> {
        self.refresh_tail()?;
        let off = self.head & self.mask;
        if self.cached_tail == self.head && rec <= off {
            Ok(self.cap - off)
        } else {
            Ok(0)
        }
    }

    #[cold]
    fn refresh_tail(&mut self) -> Result<()> {
        let t = self.storage.header().tail.0.load(Acquire);
        if t < self.cached_tail || t > self.head || t & 7 != 0 {
            self.dead = true;
            return Err(corrupt(format!(
                "consumer index {t} outside [{}, {}] or misaligned",
                self.cached_tail, self.head
            )));
        }
        self.cached_tail = t;
        Ok(())
    }

    /// Whether a frame of `len` bytes would fit now, judged from the shared
    /// tail (also `true` when the ring is closed or the tail is invalid, so
    /// that the next `try_reserve` reports it).
    fn writable(&self, len: usize) -> bool {
        let hdr = self.storage.header();
        if self.dead || hdr.ctl.0.closed.load(Acquire) != 0 {
            return true;
        }
        let t = hdr.tail.0.load(Acquire);
        let (pad, rec) = self.layout_for(len.min(self.max_payload));
        t < self.cached_tail || t > self.head || self.head - t + pad + rec <= self.cap
    }

    /// Blocks until a frame of `len` bytes (or, for a larger frame, a
    /// record of the largest size) would fit (`Ok(true)`) or the deadline
    /// passes (`Ok(false)`).
    pub(crate) fn wait_writable(
        &self,
        len: usize,
        cfg: &WaitCfg,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<bool> {
        block_on(
            &self.storage,
            Sleeper::Producer,
            cfg,
            || self.writable(len),
            alive,
        )
    }

    /// From now on, commits are published together by [`flush`](Self::flush)
    /// (or when the ring is found full), until [`uncork`](Self::uncork).
    pub fn cork(&mut self) {
        self.corked = true;
    }

    /// Publishes what is committed and publishes each commit at once again.
    pub fn uncork(&mut self) {
        self.corked = false;
        self.flush();
    }

    /// Publishes every committed frame to the consumer (and wakes it if it
    /// sleeps).
    #[inline]
    pub fn flush(&mut self) {
        if self.published_head != self.head {
            self.storage.header().head.0.store(self.head, Release);
            self.published_head = self.head;
            notify(&self.storage, Sleeper::Consumer);
        }
    }

    /// Marks the ring closed by the producer and wakes the consumer. Frames
    /// already published are still delivered (flush first).
    pub(crate) fn close(&self) {
        close_ring(&self.storage, CLOSED_BY_PRODUCER);
    }

    /// The storage this end runs on.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }
}

fn close_ring<S: RingStorage>(s: &S, bit: u32) {
    s.header().ctl.0.closed.fetch_or(bit, Release);
    // Unconditionally: a close is rare, and a sleeper must see it.
    wake(s, Sleeper::Consumer);
    wake(s, Sleeper::Producer);
}

/// Room reserved in the ring for one frame; write it, then [`Slot::commit`].
/// Dropping the slot without committing publishes nothing.
pub struct Slot<'a, S: RingStorage> {
    producer: &'a mut Producer<S>,
    frame_off: usize,
    len: usize,
    kind: u32,
    pad: u64,
    rec: u64,
}

impl<S: RingStorage> Slot<'_, S> {
    /// Publishes the frame to the consumer (and wakes it if it sleeps).
    #[inline]
    pub fn commit(self) {
        let p = self.producer;
        let s = &p.storage;
        if self.pad != 0 {
            let pad_off = (p.head & p.mask) as usize;
            write_rec(s, pad_off, (self.pad as usize - REC_HDR) as u32, KIND_PAD);
        }
        write_rec(s, self.frame_off, self.len as u32, self.kind);
        if self.kind != KIND_CONT {
            // A new frame: the consumer drops any unfinished one.
            p.partial = None;
        }
        p.head += self.pad + self.rec;
        if !p.corked {
            p.flush();
        }
    }
}

impl<S: RingStorage> Deref for Slot<'_, S> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let s = &self.producer.storage;
        s.track_read(self.frame_off + REC_HDR, self.len);
        // SAFETY: `frame_off + REC_HDR + len <= capacity` (checked by
        // `try_reserve`: the record fits before the end of the region), the
        // region is valid per the `RingStorage` contract, and the consumer
        // does not read these bytes until `commit` publishes them.
        unsafe { std::slice::from_raw_parts(s.data().add(self.frame_off + REC_HDR), self.len) }
    }
}

impl<S: RingStorage> DerefMut for Slot<'_, S> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let s = &self.producer.storage;
        s.track_write(self.frame_off + REC_HDR, self.len);
        // SAFETY: as in `deref`; the `&mut self` borrow makes this the only
        // live slice of these bytes in this process.
        unsafe { std::slice::from_raw_parts_mut(s.data().add(self.frame_off + REC_HDR), self.len) }
    }
}

#[inline]
fn write_rec<S: RingStorage>(s: &S, off: usize, len: u32, kind: u32) {
    debug_assert!(off.is_multiple_of(8) && off + REC_HDR <= s.capacity());
    s.track_write(off, REC_HDR);
    // SAFETY: callers pass an 8-aligned `off` with `off + 8 <= capacity`
    // (offsets are positions masked by the capacity, and all positions are
    // multiples of 8); the data region is 8-aligned and valid per the storage
    // contract. Volatile: the peer reads this memory concurrently.
    unsafe { ptr::write_volatile(s.data().add(off).cast::<u64>(), encode_rec(len, kind)) }
}

#[inline]
fn read_rec<S: RingStorage>(s: &S, off: usize) -> (u32, u32) {
    debug_assert!(off.is_multiple_of(8) && off + REC_HDR <= s.capacity());
    s.track_read(off, REC_HDR);
    // SAFETY: as in `write_rec`. The value is copied once into a local and
    // validated by the caller before use.
    decode_rec(unsafe { ptr::read_volatile(s.data().add(off).cast::<u64>()) })
}

impl<S: RingStorage> Consumer<S> {
    /// The consumer of a fresh ring (indices at 0) whose producer sends frames of at most
    /// `wire_max` bytes, of which it delivers those of at most `max_frame` bytes and skips the
    /// larger ones (see [`Consumer::next_frame`]).
    pub(crate) fn new(storage: S, max_frame: usize, wire_max: usize) -> Result<Self> {
        let cap = storage.capacity();
        check_geometry(cap, wire_max).map_err(ShmError::InvalidConfig)?;
        check_geometry(cap, max_frame).map_err(ShmError::InvalidConfig)?;
        Ok(Consumer {
            storage,
            cap: cap as u64,
            mask: cap as u64 - 1,
            max_frame: max_frame.min(wire_max),
            wire_max,
            max_payload: max_payload_for(cap),
            partial: Vec::new(),
            partial_total: 0,
            skipping: None,
            skipped_head: [0; SKIPPED_HEAD],
            skipped_head_len: 0,
            tail: 0,
            published_tail: 0,
            cached_head: 0,
            dead: false,
        })
    }

    /// Largest frame accepted.
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    #[cfg(any(test, loom, feature = "test-util"))]
    /// Borrows the next frame (in place, or from the reassembly buffer when
    /// it came in pieces), or `Ok(None)` when no whole frame is there yet.
    /// Dropping the [`Frame`] releases its room to the producer.
    /// `Err(Disconnected)` once the producer closed and every frame was read.
    /// `Err(FrameTooLarge)`: the next frame was above this end's max frame size and was
    /// skipped (its first bytes are in [`Consumer::skipped_head`]); the next call goes on.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Frame<'_, S>>> {
        Ok(self.next_frame()?.map(|at| self.frame(at)))
    }

    #[cfg(any(test, loom, feature = "test-util"))]
    /// Copies the next frame into `buf` (replacing its contents); `Ok(false)`
    /// when no whole frame is there yet.
    #[inline]
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        match self.try_recv()? {
            Some(frame) => {
                buf.clear();
                buf.extend_from_slice(&frame);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Locates the next whole frame. Pieces of a large frame are copied into
    /// the reassembly buffer (and their room released) on the way.
    /// `Err(FrameTooLarge)`: the next frame was larger than this end's max frame size; its
    /// bytes were skipped (released unread, never buffered), its first bytes are in
    /// [`Consumer::skipped_head`], and the next call goes on with the frame after it.
    #[inline]
    pub(crate) fn next_frame(&mut self) -> Result<Option<Found>> {
        if self.dead {
            return Err(dead_error());
        }
        // One call consumes at most a ring's worth of padding and pieces: a producer that keeps
        // publishing pieces (or restarting a frame) cannot hold a non-blocking receive in this
        // loop. The caller then finds the ring still readable and calls again.
        let start = self.tail;
        let budget = self.storage.capacity() as u64;
        loop {
            if self.tail.wrapping_sub(start) > budget {
                self.flush_tail();
                return Ok(None);
            }
            if self.cached_head == self.tail && !self.refresh_head()? {
                self.flush_tail();
                return Ok(None);
            }
            let found = match self.parse() {
                Ok(Some(rec)) => self.take(rec),
                Ok(None) => Ok(Taken::Nothing),
                Err(e) => Err(e),
            };
            match found {
                Ok(Taken::Frame(found)) => return Ok(Some(found)),
                // Padding, or a piece of a large frame: go on.
                Ok(Taken::Nothing) => {}
                // A frame this end does not take: skipped, and the ring goes on.
                Ok(Taken::Skipped(size)) => {
                    return Err(ShmError::FrameTooLarge {
                        size,
                        max: self.max_frame,
                    });
                }
                Err(e) => {
                    self.dead = true;
                    self.drop_partial();
                    return Err(e);
                }
            }
        }
    }

    /// Re-reads the shared head; `Ok(false)` if still empty.
    #[cold]
    fn refresh_head(&mut self) -> Result<bool> {
        let mut h = self.load_head()?;
        if h == self.tail {
            if self.storage.header().ctl.0.closed.load(Acquire) == 0 {
                return Ok(false);
            }
            // Closed: frames published before the close must still be seen.
            h = self.load_head()?;
            if h == self.tail {
                // An unfinished large frame never completes now.
                self.drop_partial();
                return Err(ShmError::Disconnected);
            }
        }
        self.cached_head = h;
        Ok(true)
    }

    fn load_head(&mut self) -> Result<u64> {
        let h = self.storage.header().head.0.load(Acquire);
        if h < self.cached_head || h - self.tail > self.cap || h & 7 != 0 {
            self.dead = true;
            return Err(corrupt(format!(
                "producer index {h} outside [{}, {}] or misaligned",
                self.cached_head,
                self.tail + self.cap
            )));
        }
        Ok(h)
    }

    /// Reads and bounds the record at the tail (skipping a padding record):
    /// `Ok(None)` when only padding was published.
    fn parse(&mut self) -> Result<Option<Record>> {
        let s = &self.storage;
        let mut avail = self.cached_head - self.tail;
        let mut off = self.tail & self.mask;
        let (mut len, mut kind) = read_rec(s, off as usize);
        if kind == KIND_PAD {
            let skip = self.cap - off;
            if off == 0 || u64::from(len) + REC_HDR as u64 != skip || skip > avail {
                return Err(corrupt(format!(
                    "padding record of {len} bytes at offset {off} does not end the ring of {} bytes ({avail} published)",
                    self.cap
                )));
            }
            // The padding is consumed privately now, published with the
            // next release.
            self.tail += skip;
            avail -= skip;
            off = 0;
            if avail == 0 {
                self.publish_tail();
                return Ok(None);
            }
            (len, kind) = read_rec(s, 0);
        }
        let len = len as usize;
        let limit = match kind {
            KIND_FRAME => self.max_payload.min(self.wire_max),
            KIND_FIRST | KIND_CONT => self.max_payload,
            _ => {
                return Err(corrupt(format!(
                    "record kind {kind:#x} at offset {off} is neither frame, piece nor padding"
                )));
            }
        };
        if len > limit {
            return Err(corrupt(format!("record length {len} exceeds max {limit}")));
        }
        let rec = record_len(len) as u64;
        if rec > avail || off + rec > self.cap {
            return Err(corrupt(format!(
                "record of {rec} bytes at offset {off} overruns the {avail} published bytes or the ring end"
            )));
        }
        Ok(Some(Record {
            kind,
            off: off as usize + REC_HDR,
            len,
            next: self.tail + rec,
        }))
    }

    /// Handles a bounded record: a whole frame is returned in place; a piece
    /// is copied into the reassembly buffer and released, and the frame is
    /// returned once complete. A frame above the max frame size is skipped: its record (or
    /// each of its pieces) is released unread, and [`Taken::Skipped`] reports it once its
    /// last byte is gone.
    fn take(&mut self, r: Record) -> Result<Taken> {
        match r.kind {
            KIND_FRAME => {
                // A new frame: a producer that gave up a large frame
                // mid-way starts over; the unfinished one is dropped.
                self.drop_partial();
                if r.len > self.max_frame {
                    self.skipped_head_len = 0;
                    self.keep_head(r.off, r.len);
                    self.release(r.off, r.len, r.next);
                    return Ok(Taken::Skipped(r.len));
                }
                Ok(Taken::Frame(Found::InPlace {
                    off: r.off,
                    len: r.len,
                    next: r.next,
                }))
            }
            KIND_FIRST => {
                self.drop_partial();
                if r.len <= FIRST_PREFIX {
                    return Err(corrupt(format!(
                        "first piece of {} bytes carries no frame bytes",
                        r.len
                    )));
                }
                let total = u64::from_le(read_u64(&self.storage, r.off));
                let chunk = r.len - FIRST_PREFIX;
                let total = match usize::try_from(total) {
                    Ok(t) if t <= self.wire_max && t > chunk => t,
                    _ => {
                        return Err(corrupt(format!(
                            "large frame of {total} bytes not in ({chunk}, {}]",
                            self.wire_max
                        )));
                    }
                };
                if total > self.max_frame {
                    self.skipped_head_len = 0;
                    self.keep_head(r.off + FIRST_PREFIX, chunk);
                    self.skipping = Some((total, chunk));
                } else {
                    self.partial_total = total;
                    self.append(r.off + FIRST_PREFIX, chunk);
                }
                self.release(r.off, r.len, r.next);
                Ok(Taken::Nothing)
            }
            _ => {
                // KIND_CONT (`parse` admits no other kind).
                if let Some((total, skipped)) = self.skipping {
                    if r.len == 0 || r.len > total - skipped {
                        return Err(corrupt(format!(
                            "piece of {} bytes does not continue a large frame ({skipped} of {total} bytes received)",
                            r.len
                        )));
                    }
                    self.keep_head(r.off, r.len);
                    self.release(r.off, r.len, r.next);
                    let skipped = skipped + r.len;
                    if skipped == total {
                        self.skipping = None;
                        return Ok(Taken::Skipped(total));
                    }
                    self.skipping = Some((total, skipped));
                    return Ok(Taken::Nothing);
                }
                let have = self.partial.len();
                if self.partial_total == 0 || r.len == 0 || r.len > self.partial_total - have {
                    return Err(corrupt(format!(
                        "piece of {} bytes does not continue a large frame ({have} of {} bytes received)",
                        r.len, self.partial_total
                    )));
                }
                self.append(r.off, r.len);
                self.release(r.off, r.len, r.next);
                if self.partial.len() == self.partial_total {
                    Ok(Taken::Frame(Found::Assembled))
                } else {
                    Ok(Taken::Nothing)
                }
            }
        }
    }

    /// Keeps what [`Consumer::skipped_head`] still lacks of the `len` payload bytes at `off`,
    /// the next bytes of a frame being skipped (after `skipped_head_len` was reset at its
    /// start).
    fn keep_head(&mut self, off: usize, len: usize) {
        let have = self.skipped_head_len;
        let n = len.min(SKIPPED_HEAD - have);
        if n == 0 {
            return;
        }
        let s = &self.storage;
        s.track_read(off, n);
        // SAFETY: `parse` checked that the record holding these bytes lies within the capacity
        // and the published bytes (as for `append`).
        let bytes = unsafe { std::slice::from_raw_parts(s.data().add(off), n) };
        self.skipped_head[have..have + n].copy_from_slice(bytes);
        self.skipped_head_len = have + n;
    }

    /// The first bytes (at most 64) of the frame skipped last for being larger than the max
    /// frame size (see [`Consumer::try_recv`]): its message header, for the caller to tell
    /// which message it was. Copied out of the ring: stable, but written by the peer.
    #[cfg_attr(loom, allow(dead_code))]
    pub fn skipped_head(&self) -> &[u8] {
        &self.skipped_head[..self.skipped_head_len]
    }

    /// Copies `len` payload bytes at `off` into the reassembly buffer, which
    /// grows by doubling but never beyond the declared total (itself at most
    /// the max frame size).
    fn append(&mut self, off: usize, len: usize) {
        let need = self.partial.len() + len;
        debug_assert!(need <= self.partial_total);
        if need > self.partial.capacity() {
            let want = need
                .max(self.partial.capacity() * 2)
                .min(self.partial_total);
            self.partial.reserve_exact(want - self.partial.len());
        }
        let s = &self.storage;
        s.track_read(off, len);
        // SAFETY: `parse` checked that the record (`off - 8 + record_len(len)`)
        // lies within the capacity and the published bytes, which the producer
        // does not overwrite before we release them (a hostile producer can,
        // but only with garbage bytes, never out of bounds).
        let bytes = unsafe { std::slice::from_raw_parts(s.data().add(off), len) };
        self.partial.extend_from_slice(bytes);
    }

    /// Forgets an unfinished (or delivered) large frame and frees its buffer, and forgets a
    /// frame being skipped.
    #[inline]
    fn drop_partial(&mut self) {
        if self.partial_total != 0 || self.partial.capacity() != 0 {
            self.partial = Vec::new();
            self.partial_total = 0;
        }
        self.skipping = None;
    }

    /// Bytes received of a large frame not yet whole, reassembled or skipped (0 when none is
    /// under way).
    #[cfg_attr(loom, allow(dead_code))]
    pub fn partial_bytes(&self) -> usize {
        match self.skipping {
            Some((_, skipped)) => skipped,
            None => self.partial.len(),
        }
    }

    /// Takes the reassembled frame found by `next_frame` (`Found::Assembled`).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn take_assembled(&mut self) -> Vec<u8> {
        self.partial_total = 0;
        std::mem::take(&mut self.partial)
    }

    #[inline]
    fn publish_tail(&mut self) {
        let hdr = self.storage.header();
        hdr.tail.0.store(self.tail, Release);
        self.published_tail = self.tail;
        notify(&self.storage, Sleeper::Producer);
    }

    /// Hands all released room back to the producer (before this end reports the ring empty,
    /// and so before it sleeps: a producer waiting for room always gets it).
    #[inline]
    fn flush_tail(&mut self) {
        if self.published_tail != self.tail {
            self.publish_tail();
        }
    }

    /// Releases the record at `off` (payload offset) of `len` bytes. Room goes back to the
    /// producer every quarter ring, and as soon as every record published so far is read: a
    /// producer is never refused room that its consumer has freed, whatever the consumer does
    /// next (it may not read again before the producer's next frame arrives).
    #[inline]
    pub(crate) fn release(&mut self, off: usize, len: usize, next: u64) {
        self.storage.track_read(off, len);
        self.tail = next;
        if self.tail == self.cached_head || self.tail - self.published_tail >= self.cap / 4 {
            self.publish_tail();
        }
    }

    /// Whether `try_recv` would make progress, judged from the shared head
    /// (also `true` when closed or invalid, so that `try_recv` reports it).
    fn readable(&self) -> bool {
        let hdr = self.storage.header();
        self.dead || hdr.head.0.load(Acquire) != self.tail || hdr.ctl.0.closed.load(Acquire) != 0
    }

    /// Blocks until `try_recv` would make progress (`Ok(true)`) or the
    /// deadline passes (`Ok(false)`).
    pub(crate) fn wait_readable(
        &self,
        cfg: &WaitCfg,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<bool> {
        block_on(
            &self.storage,
            Sleeper::Consumer,
            cfg,
            || self.readable(),
            alive,
        )
    }

    /// Marks the ring closed by the consumer and wakes the producer.
    pub(crate) fn close(&self) {
        close_ring(&self.storage, CLOSED_BY_CONSUMER);
    }

    /// The storage this end runs on.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    /// Builds a frame borrow from `next_frame`'s result.
    pub(crate) fn frame(&mut self, at: Found) -> Frame<'_, S> {
        Frame { consumer: self, at }
    }
}

/// A bounded record at the tail.
struct Record {
    kind: u32,
    /// Payload offset in the data region.
    off: usize,
    len: usize,
    /// Tail position after the record.
    next: u64,
}

/// What [`Consumer::take`] made of a record.
enum Taken {
    /// A whole frame.
    Frame(Found),
    /// Padding, or a piece of a frame not whole yet.
    Nothing,
    /// The last piece of a frame of this many bytes, above the max frame size, skipped.
    Skipped(usize),
}

/// Where the next whole frame is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Found {
    /// In the ring: payload offset, length, tail position after it.
    InPlace { off: usize, len: usize, next: u64 },
    /// In the consumer's reassembly buffer.
    Assembled,
}

/// Reads the aligned `u64` at `off` of the data region.
#[inline]
fn read_u64<S: RingStorage>(s: &S, off: usize) -> u64 {
    debug_assert!(off.is_multiple_of(8) && off + 8 <= s.capacity());
    s.track_read(off, 8);
    // SAFETY: callers pass the 8-aligned payload offset of a bounded record
    // of more than 8 payload bytes, so `off + 8 <= capacity`; the region is
    // valid per the storage contract. Volatile: the peer may write it.
    unsafe { ptr::read_volatile(s.data().add(off).cast::<u64>()) }
}

/// A frame borrowed in place from the ring. Dropping it (or
/// [`Frame::release`]) hands its room back to the producer.
///
/// The bytes live in memory the peer can write: a hostile peer may change
/// them while they are borrowed. Treat them as untrusted input, and copy them
/// out before validating if that matters.
pub struct Frame<'a, S: RingStorage> {
    consumer: &'a mut Consumer<S>,
    at: Found,
}

impl<S: RingStorage> Frame<'_, S> {
    /// Releases the frame (same as dropping it).
    #[cfg(any(test, loom, feature = "test-util"))]
    #[inline]
    pub fn release(self) {}
}

impl<S: RingStorage> Deref for Frame<'_, S> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self.at {
            Found::InPlace { off, len, .. } => {
                let s = &self.consumer.storage;
                s.track_read(off, len);
                // SAFETY: `parse` checked `off - 8 + record_len(len) <=
                // capacity` and that the record lies within the published
                // bytes, which the producer does not overwrite until this
                // frame is released (a hostile producer can, but only with
                // garbage bytes, never out of bounds).
                unsafe { std::slice::from_raw_parts(s.data().add(off), len) }
            }
            Found::Assembled => &self.consumer.partial,
        }
    }
}

impl<S: RingStorage> Drop for Frame<'_, S> {
    #[inline]
    fn drop(&mut self) {
        match self.at {
            Found::InPlace { off, len, next } => self.consumer.release(off, len, next),
            Found::Assembled => self.consumer.drop_partial(),
        }
    }
}

/// The waiting side of one end of a ring, apart from the end itself: it
/// judges readiness from the shared header alone (never touching the private
/// indices), so it can live on another thread or task than the end — the
/// handle an adapter sleeps with.
#[derive(Clone)]
pub(crate) struct RingWaiter<S: RingStorage> {
    storage: S,
    who: Sleeper,
}

impl<S: RingStorage> RingWaiter<S> {
    /// The waiter of the consumer (`Sleeper::Consumer`) or the producer of
    /// the ring on `storage`.
    pub(crate) fn new(storage: S, who: Sleeper) -> Self {
        RingWaiter { storage, who }
    }

    /// Whether the end would make progress now (for the producer: whether
    /// a frame of `len` bytes, or the largest record, fits). Also `true` when the ring is closed, so
    /// that the next `try_*` reports it. May be `true` spuriously.
    pub(crate) fn ready(&self, len: usize) -> bool {
        let hdr = self.storage.header();
        let ctl = &hdr.ctl.0;
        if ctl.closed.load(Acquire) != 0 {
            return true;
        }
        let head = hdr.head.0.load(Acquire);
        let tail = hdr.tail.0.load(Acquire);
        match self.who {
            Sleeper::Consumer => head != tail,
            Sleeper::Producer => {
                let cap = self.storage.capacity() as u64;
                // A larger frame goes in pieces of at most the largest record.
                let rec = record_len(len.min(max_payload_for(self.storage.capacity()))) as u64;
                let used = head.wrapping_sub(tail);
                // Padding up to the ring end first if the record does not
                // fit before it.
                let contig = cap - (head & (cap - 1));
                let need = if rec <= contig { rec } else { contig + rec };
                used.saturating_add(need) <= cap
            }
        }
    }

    /// Announces a sleep and re-checks [`RingWaiter::ready`]: `None` when
    /// ready, else the guard of the announced sleep.
    pub(crate) fn prepare_sleep(&self, len: usize) -> Option<SleepGuard<'_>> {
        let (_, waiters) = self.who.words(&self.storage.header().ctl.0);
        announce(waiters, || self.ready(len))
    }

    /// Blocks on the futex until ready (see [`block_on`]).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn block(
        &self,
        len: usize,
        cfg: &WaitCfg,
        extra_ready: impl Fn() -> bool,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<bool> {
        block_on(
            &self.storage,
            self.who,
            cfg,
            || extra_ready() || self.ready(len),
            alive,
        )
    }
}

#[cfg(test)]
mod tests;
