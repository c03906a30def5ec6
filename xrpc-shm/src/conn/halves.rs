//! The two halves of a connection: [`ShmSender`] (copies frames in, or lends a [`SendSlot`] to
//! write one in place) and [`ShmReceiver`] (lends a [`FrameRef`] in place, or copies frames
//! out), each with its blocking and non-blocking operations, and how both are built over a
//! mapped segment.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustix::fd::OwnedFd;

use super::{Bell, ConnectionState, Doorbell, RecvWaiter, SendWaiter, ShmConnection, deadline_of};
use crate::backoff::SpinGauge;
use crate::config::ShmConfig;
use crate::error::{Result, ShmError};
use crate::ring::{Consumer, Found, Frame, Producer, RingWaiter, Slot};
use crate::segment::{Geometry, MappedRing, PeerBell, Segment};
use crate::sync::Ordering::Relaxed;
use crate::sync::{Arc, AtomicBool};
use crate::wait::Sleeper;

/// Builds both halves over a mapped segment and its two sockets.
pub(super) fn halves(
    segment: Segment,
    data_sock: Arc<OwnedFd>,
    room_sock: OwnedFd,
    config: ShmConfig,
    send_ring: usize,
    recv_ring: usize,
) -> Result<ShmConnection> {
    // The segment's limit is the server's choice, up to 4 GiB: a client never sends, takes or
    // reassembles frames larger than its own configured maximum either. A frame from the
    // server within the segment's limit but above the client's is skipped (`FrameTooLarge`),
    // a frame above the segment's limit is corruption.
    let Geometry {
        max_frame: wire_max,
        ..
    } = segment.geometry();
    let max_frame = wire_max.min(config.max_frame_size);
    let room_sock = Arc::new(room_sock);
    // We ring the peer's consumer of the ring we send into on the data socket, and the
    // peer's producer of the ring we receive from on the room socket.
    let peer_woken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let send_storage = segment.ring(send_ring).with_bell(PeerBell {
        who: Sleeper::Consumer,
        sock: data_sock.clone(),
        rung: Some(peer_woken.clone()),
    });
    let recv_storage = segment.ring(recv_ring).with_bell(PeerBell {
        who: Sleeper::Producer,
        sock: room_sock.clone(),
        rung: None,
    });
    let producer = Producer::new(send_storage, max_frame)?;
    let consumer = Consumer::new(recv_storage, max_frame, wire_max)?;
    let shared = Arc::new(ConnectionState {
        _segment: segment,
        data_sock,
        room_sock,
        dead: AtomicBool::new(false),
        recv_spin: SpinGauge::new(config.spin_budget),
        send_spin: SpinGauge::new(config.spin_budget),
        peer_woken,
        peer_woken_seen: std::sync::atomic::AtomicU64::new(0),
        config,
    });
    Ok(ShmConnection {
        peer: None,
        sender: ShmSender {
            producer,
            shared: shared.clone(),
        },
        receiver: ShmReceiver {
            consumer,
            copied: BytesMut::new(),
            spare: BytesMut::new(),
            shared,
        },
    })
}

/// The sending half of a connection. Dropping it closes this direction
/// (the peer drains what was sent, then sees `Disconnected`).
pub struct ShmSender {
    producer: Producer<MappedRing>,
    shared: Arc<ConnectionState>,
}

impl ShmSender {
    /// Copies `frame` into the ring without blocking. `Err(Full)` when there
    /// is no room now; `Err(FrameTooLarge)` above the max frame size.
    ///
    /// A frame of at most [`ShmSender::max_piece`] bytes is sent whole or
    /// not at all; a larger one travels in pieces and may be sent in part
    /// before `Full` — the next send starts over and the peer drops the
    /// unfinished frame. Use [`ShmSender::try_send_from`] to go on instead.
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<()> {
        let r = self.producer.try_send(frame);
        if let Err(ShmError::Corrupt(_)) = &r {
            self.shared.kill();
        }
        r
    }

    /// Copies `frame[*sent..]` into the ring without blocking, as much as
    /// fits, advancing `*sent`: `Ok(())` once the whole frame is sent,
    /// `Err(Full)` when the ring filled up first — wait for room
    /// ([`SendWaiter`]) and call again with the same frame and counter.
    /// Start each frame with `*sent == 0`.
    #[inline]
    pub fn try_send_from(&mut self, frame: &[u8], sent: &mut usize) -> Result<()> {
        let r = self.producer.try_send_from(frame, sent);
        if let Err(ShmError::Corrupt(_)) = &r {
            self.shared.kill();
        }
        r
    }

    /// Sends a batch: from now on the frames sent are published together by
    /// [`ShmSender::flush`] (or as soon as the ring is full), one shared store
    /// and wake-up check for the whole batch, until [`ShmSender::uncork`].
    /// A frame sent while corked is not seen by the peer until then.
    pub fn cork(&mut self) {
        self.producer.cork();
    }

    /// Publishes what was sent while corked and ends the batch.
    pub fn uncork(&mut self) {
        self.producer.uncork();
    }

    /// Publishes what was sent so far in a batch (see [`ShmSender::cork`]).
    pub fn flush(&mut self) {
        self.producer.flush();
    }

    /// Largest frame sent in one piece: half the ring less an 8-byte record
    /// header (or the max frame size, if smaller). The most
    /// [`ShmSender::try_reserve`] takes.
    pub fn max_piece(&self) -> usize {
        self.producer.max_piece()
    }

    /// Reserves room for a `len`-byte frame (at most
    /// [`ShmSender::max_piece`]) to be written in place (no copy); publish it
    /// with [`SendSlot::commit`]. `Err(Full)` when there is no room now.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<SendSlot<'_>> {
        match self.producer.try_reserve(len) {
            Ok(slot) => Ok(SendSlot(slot)),
            Err(e) => self.shared.check(Err(e)),
        }
    }

    /// Copies `frame` into the ring, waiting for room at most `timeout`
    /// (`None`: as long as the peer lives). `Err(Timeout)` at the deadline,
    /// `Err(Disconnected)` when the peer closes or dies.
    pub fn send(&mut self, frame: &[u8], timeout: Option<Duration>) -> Result<()> {
        let mut sent = 0;
        let mut deadline = None;
        loop {
            match self.try_send_from(frame, &mut sent) {
                Err(ShmError::Full) => {}
                done => return done,
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_of(timeout));
            self.wait_room(frame.len() - sent, deadline)?;
        }
    }

    /// [`ShmSender::try_reserve`], waiting for room at most `timeout`.
    pub fn reserve(&mut self, len: usize, timeout: Option<Duration>) -> Result<SendSlot<'_>> {
        let deadline = deadline_of(timeout);
        loop {
            match self.producer.try_reserve(len) {
                Ok(_unused_slot) => break,
                Err(ShmError::Full) => self.wait_room(len, deadline)?,
                Err(e) => return self.shared.check(Err(e)),
            }
        }
        self.try_reserve(len)
    }

    /// Waits until `len` more bytes of a frame (or the largest piece) fit.
    fn wait_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        let shared = &*self.shared;
        let cfg = shared.send_wait_cfg(deadline);
        if !self
            .producer
            .wait_writable(len, &cfg, &mut || shared.alive())?
        {
            return Err(ShmError::Timeout);
        }
        Ok(())
    }

    /// Largest frame this direction carries.
    pub fn max_frame_size(&self) -> usize {
        self.producer.max_frame()
    }

    /// A handle that waits for room from another thread (see
    /// [`SendWaiter`]).
    pub fn waiter(&self) -> SendWaiter {
        SendWaiter {
            waiter: RingWaiter::new(self.producer.storage().clone(), Sleeper::Producer),
            bell: Doorbell {
                shared: self.shared.clone(),
                bell: Bell::Room,
            },
            shared: self.shared.clone(),
        }
    }

    /// Whether the connection is still believed alive (no syscall: it only
    /// reports what earlier operations found).
    pub fn is_connected(&self) -> bool {
        !self.shared.dead.load(Relaxed)
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        self.producer.flush();
        self.producer.close();
    }
}

/// Room for one frame in the ring, written in place; dereferences to the
/// frame's bytes. [`SendSlot::commit`] publishes it; dropping it publishes
/// nothing.
pub struct SendSlot<'a>(Slot<'a, MappedRing>);

impl SendSlot<'_> {
    /// Publishes the frame and wakes the peer if it sleeps.
    #[inline]
    pub fn commit(self) {
        self.0.commit();
    }
}

impl Deref for SendSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for SendSlot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Size of the buffer a receiver copies small frames into.
const COPY_BUFFER_SIZE: usize = 16 * 1024;

/// Makes room for `need` bytes in `copied` (a receiver's copy buffer), allocating only when
/// neither of its buffers can be used again: `copied` itself or `spare` once every frame cut
/// from it is dropped (it then starts over from its beginning), else a new buffer, `copied`
/// becoming the spare. So frames that live a while (calls in flight) cost no allocation and no
/// free per buffer's worth of frames, and a receiver keeps at most two buffers besides its
/// frames.
fn room_for(copied: &mut BytesMut, spare: &mut BytesMut, need: usize) {
    if copied.capacity() >= need || copied.try_reclaim(need) {
        return;
    }
    if spare.try_reclaim(need) {
        std::mem::swap(copied, spare);
        return;
    }
    *spare = std::mem::replace(copied, BytesMut::with_capacity(need.max(COPY_BUFFER_SIZE)));
}

/// The receiving half of a connection. Dropping it closes this direction
/// (the peer's sends fail with `Disconnected`).
pub struct ShmReceiver {
    consumer: Consumer<MappedRing>,
    /// Frames copied out by [`try_recv_bytes`](Self::try_recv_bytes) are cut from here: no
    /// allocation per frame once the frames cut before are dropped.
    copied: BytesMut,
    /// The buffer filled before `copied`, kept while frames cut from it may live: once they
    /// are all dropped it is used again, not freed (see [`room_for`]).
    spare: BytesMut,
    shared: Arc<ConnectionState>,
}

impl ShmReceiver {
    /// Borrows the next frame in place (zero-copy) without blocking;
    /// `Ok(None)` when none is there. Dropping the [`FrameRef`] frees its
    /// room. A frame larger than one piece is reassembled on the way (its
    /// pieces are copied out as they come, so this makes progress even when
    /// it returns `None`) and is borrowed from the reassembly buffer. After
    /// the peer closed, the remaining frames come first, then
    /// `Err(Disconnected)`.
    ///
    /// A frame larger than [`ShmReceiver::max_frame_size`] (the peer's limit may be larger
    /// than ours) is skipped, its bytes released as they come and never buffered, and
    /// reported once it is gone as `Err(FrameTooLarge)`: an error of that frame alone — the
    /// connection goes on, the next receive returns the frame after it, and
    /// [`ShmReceiver::skipped_head`] holds the skipped frame's first bytes. Every receive
    /// below does the same.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<FrameRef<'_>>> {
        match self.consumer.next_frame() {
            Ok(Some(at)) => Ok(Some(FrameRef(self.consumer.frame(at)))),
            Ok(None) => Ok(None),
            Err(e) => self.shared.check(Err(e)),
        }
    }

    /// Borrows the next frame, waiting at most `timeout` (`None`: as long as
    /// the peer lives). `Err(Timeout)` at the deadline, `Err(Disconnected)`
    /// when the peer closed (after the last frame) or died.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<FrameRef<'_>> {
        let at = self.wait_frame(timeout)?;
        Ok(FrameRef(self.consumer.frame(at)))
    }

    /// Waits for the next whole frame.
    fn wait_frame(&mut self, timeout: Option<Duration>) -> Result<Found> {
        let mut deadline = None;
        loop {
            match self.consumer.next_frame() {
                Ok(Some(at)) => return Ok(at),
                Ok(None) => {}
                Err(e) => return self.shared.check(Err(e)),
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_of(timeout));
            let shared = &*self.shared;
            let cfg = shared.recv_wait_cfg(deadline);
            if !self.consumer.wait_readable(&cfg, &mut || shared.alive())? {
                return Err(ShmError::Timeout);
            }
        }
    }

    /// Copies the next frame out without blocking (a reassembled frame is
    /// handed over without a copy).
    #[inline]
    pub fn try_recv_bytes(&mut self) -> Result<Option<Bytes>> {
        match self.consumer.next_frame() {
            Ok(Some(at)) => Ok(Some(self.take_bytes(at))),
            Ok(None) => Ok(None),
            Err(e) => self.shared.check(Err(e)),
        }
    }

    /// Bytes received of a frame larger than the ring that is not whole
    /// yet, reassembled or skipped (0 when none is under way): a peer that stops mid-frame
    /// holds them.
    pub fn partial_bytes(&self) -> usize {
        self.consumer.partial_bytes()
    }

    /// The first bytes (at most 64: the message header) of the frame skipped last: after a
    /// receive returned `Err(FrameTooLarge)`, they tell which message it was. Written by the
    /// peer: parse them as untrusted input.
    pub fn skipped_head(&self) -> &[u8] {
        self.consumer.skipped_head()
    }

    /// Copies the next frame out, waiting at most `timeout` (a reassembled
    /// frame is handed over without a copy).
    pub fn recv_bytes(&mut self, timeout: Option<Duration>) -> Result<Bytes> {
        let at = self.wait_frame(timeout)?;
        Ok(self.take_bytes(at))
    }

    #[inline]
    fn take_bytes(&mut self, at: Found) -> Bytes {
        match at {
            Found::Assembled => Bytes::from(self.consumer.take_assembled()),
            at => {
                let frame = self.consumer.frame(at);
                room_for(
                    &mut self.copied,
                    &mut self.spare,
                    frame.len().max(COPY_BUFFER_SIZE / 2),
                );
                self.copied.extend_from_slice(&frame);
                drop(frame);
                self.copied.split().freeze()
            }
        }
    }

    /// Copies the next frame into `buf` (replacing its contents), waiting at
    /// most `timeout`; reuses `buf`'s allocation.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>, timeout: Option<Duration>) -> Result<()> {
        let frame = self.recv(timeout)?;
        buf.clear();
        buf.extend_from_slice(&frame);
        Ok(())
    }

    /// Largest frame this direction carries.
    pub fn max_frame_size(&self) -> usize {
        self.consumer.max_frame()
    }

    /// A handle that waits for frames from another thread (see
    /// [`RecvWaiter`]).
    pub fn waiter(&self) -> RecvWaiter {
        RecvWaiter {
            waiter: RingWaiter::new(self.consumer.storage().clone(), Sleeper::Consumer),
            bell: Doorbell {
                shared: self.shared.clone(),
                bell: Bell::Data,
            },
            shared: self.shared.clone(),
        }
    }

    /// Whether the connection is still believed alive (no syscall).
    pub fn is_connected(&self) -> bool {
        !self.shared.dead.load(Relaxed)
    }
}

impl Drop for ShmReceiver {
    fn drop(&mut self) {
        self.consumer.close();
    }
}

/// A frame borrowed in place from the receive ring; dereferences to its
/// bytes. Dropping it (or [`FrameRef::release`]) frees its room.
///
/// The bytes live in memory the peer can write: a hostile peer may change
/// them while they are borrowed. Parse them as untrusted input (copy first if
/// a check must hold until use).
pub struct FrameRef<'a>(Frame<'a, MappedRing>);

impl FrameRef<'_> {
    /// Frees the frame's room (same as dropping it).
    #[inline]
    pub fn release(self) {}

    /// Copies the frame into a `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl Deref for FrameRef<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for FrameRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRef")
            .field("len", &self.len())
            .finish()
    }
}
