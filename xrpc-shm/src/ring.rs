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

use std::ops::{Deref, DerefMut};
use std::ptr;

use crate::error::{Result, ShmError, corrupt};
use crate::layout::{
    CLOSED_BY_CONSUMER, CLOSED_BY_PRODUCER, KIND_FRAME, KIND_PAD, REC_HDR, check_geometry,
    decode_rec, encode_rec, record_len,
};
use crate::storage::RingStorage;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::wait::{SleepGuard, Sleeper, WaitCfg, announce, block_on, notify, wake};

fn dead_error() -> ShmError {
    corrupt("ring is dead after an earlier corruption")
}

/// The writing end of a ring.
pub struct Producer<S: RingStorage> {
    storage: S,
    cap: u64,
    mask: u64,
    max_frame: usize,
    /// Authoritative write position (private).
    head: u64,
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
    /// Authoritative read position (private).
    tail: u64,
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
        Consumer::new(storage, max_frame)?,
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
            head: 0,
            cached_tail: 0,
            dead: false,
        })
    }

    /// Largest frame accepted.
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Reserves room for a frame of `len` bytes, to be written in place and
    /// published with [`Slot::commit`]. `Err(Full)` when there is no room now.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<Slot<'_, S>> {
        if self.dead {
            return Err(dead_error());
        }
        if len > self.max_frame {
            return Err(ShmError::FrameTooLarge {
                size: len,
                max: self.max_frame,
            });
        }
        if self.storage.header().ctl.0.closed.load(Relaxed) != 0 {
            return Err(ShmError::Disconnected);
        }
        let (pad, rec) = self.layout_for(len);
        if self.head - self.cached_tail + pad + rec > self.cap {
            self.refresh_tail()?;
            if self.head - self.cached_tail + pad + rec > self.cap {
                return Err(ShmError::Full);
            }
        }
        let frame_off = if pad == 0 { self.head & self.mask } else { 0 };
        Ok(Slot {
            producer: self,
            frame_off: frame_off as usize,
            len,
            pad,
            rec,
        })
    }

    /// Copies `frame` into the ring. `Err(Full)` when there is no room now.
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<()> {
        let mut slot = self.try_reserve(frame.len())?;
        slot.copy_from_slice(frame);
        slot.commit();
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
        let (pad, rec) = self.layout_for(len.min(self.max_frame));
        t < self.cached_tail || t > self.head || self.head - t + pad + rec <= self.cap
    }

    /// Blocks until a frame of `len` bytes would fit (`Ok(true)`) or the
    /// deadline passes (`Ok(false)`).
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

    /// Marks the ring closed by the producer and wakes the consumer. Frames
    /// already published are still delivered.
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
        write_rec(s, self.frame_off, self.len as u32, KIND_FRAME);
        p.head += self.pad + self.rec;
        let hdr = s.header();
        hdr.head.0.store(p.head, Release);
        notify(s, Sleeper::Consumer);
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
    /// The consumer of a fresh ring (indices at 0).
    pub(crate) fn new(storage: S, max_frame: usize) -> Result<Self> {
        let cap = storage.capacity();
        check_geometry(cap, max_frame).map_err(ShmError::InvalidConfig)?;
        Ok(Consumer {
            storage,
            cap: cap as u64,
            mask: cap as u64 - 1,
            max_frame,
            tail: 0,
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
    /// Borrows the next frame in place, or `Ok(None)` when the ring is empty.
    /// Dropping the [`Frame`] releases its room to the producer.
    /// `Err(Disconnected)` once the producer closed and every frame was read.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Frame<'_, S>>> {
        Ok(self.next_frame()?.map(|(off, len, next)| Frame {
            consumer: self,
            off,
            len,
            next,
        }))
    }

    #[cfg(any(test, loom, feature = "test-util"))]
    /// Copies the next frame into `buf` (replacing its contents); `Ok(false)`
    /// when the ring is empty.
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

    /// Locates the next frame: (payload offset, length, next tail).
    #[inline]
    pub(crate) fn next_frame(&mut self) -> Result<Option<(usize, usize, u64)>> {
        if self.dead {
            return Err(dead_error());
        }
        if self.cached_head == self.tail && !self.refresh_head()? {
            return Ok(None);
        }
        match self.parse() {
            Ok(found) => Ok(found),
            Err(e) => {
                self.dead = true;
                Err(e)
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

    fn parse(&mut self) -> Result<Option<(usize, usize, u64)>> {
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
        if kind != KIND_FRAME {
            return Err(corrupt(format!(
                "record kind {kind:#x} at offset {off} is neither frame nor padding"
            )));
        }
        let len = len as usize;
        if len > self.max_frame {
            return Err(corrupt(format!(
                "frame length {len} exceeds max {}",
                self.max_frame
            )));
        }
        let rec = record_len(len) as u64;
        if rec > avail || off + rec > self.cap {
            return Err(corrupt(format!(
                "frame record of {rec} bytes at offset {off} overruns the {avail} published bytes or the ring end"
            )));
        }
        Ok(Some((off as usize + REC_HDR, len, self.tail + rec)))
    }

    #[inline]
    fn publish_tail(&self) {
        let hdr = self.storage.header();
        hdr.tail.0.store(self.tail, Release);
        notify(&self.storage, Sleeper::Producer);
    }

    /// Releases the frame found by `next_frame`.
    #[inline]
    pub(crate) fn release(&mut self, off: usize, len: usize, next: u64) {
        self.storage.track_read(off, len);
        self.tail = next;
        self.publish_tail();
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
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn frame(&mut self, (off, len, next): (usize, usize, u64)) -> Frame<'_, S> {
        Frame {
            consumer: self,
            off,
            len,
            next,
        }
    }
}

/// A frame borrowed in place from the ring. Dropping it (or
/// [`Frame::release`]) hands its room back to the producer.
///
/// The bytes live in memory the peer can write: a hostile peer may change
/// them while they are borrowed. Treat them as untrusted input, and copy them
/// out before validating if that matters.
pub struct Frame<'a, S: RingStorage> {
    consumer: &'a mut Consumer<S>,
    off: usize,
    len: usize,
    next: u64,
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
        let s = &self.consumer.storage;
        s.track_read(self.off, self.len);
        // SAFETY: `parse` checked `off - 8 + record_len(len) <= capacity` and
        // that the record lies within the published bytes, which the producer
        // does not overwrite until this frame is released (a hostile producer
        // can, but only with garbage bytes, never out of bounds).
        unsafe { std::slice::from_raw_parts(s.data().add(self.off), self.len) }
    }
}

impl<S: RingStorage> Drop for Frame<'_, S> {
    #[inline]
    fn drop(&mut self) {
        self.consumer.release(self.off, self.len, self.next);
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
    /// a frame of `len` bytes fits). Also `true` when the ring is closed, so
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
                let rec = record_len(len) as u64;
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
