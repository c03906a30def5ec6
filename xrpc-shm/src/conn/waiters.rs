//! Waiting for the peer: the [`Doorbell`] a side sleeps on in a reactor, and the
//! [`RecvWaiter`] and [`SendWaiter`] handles that wait for frames or for room — blocking, or in
//! a reactor — without touching the rings' indices.

use std::time::Duration;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use rustix::io::Errno;
use rustix::net::RecvFlags;

use super::{Bell, ConnectionState, deadline_of};
use crate::backoff::Backoff;
use crate::error::{Result, ShmError};
use crate::ring::RingWaiter;
use crate::segment::MappedRing;
use crate::sync::Arc;
use crate::sync::Ordering::Relaxed;
use crate::wait::SleepGuard;

/// Bytes a [`Doorbell::drain`] reads at most: more than an honest peer ever leaves (it
/// rings only while we announced a sleep); a peer that sends more only wakes its own
/// connection's sleepers again.
const DRAIN_LIMIT: usize = 4096;

/// The doorbell of one waiting side: our end of a socket on which the peer sends a byte
/// after publishing (frames, or room), whenever this side announced a sleep
/// ([`RecvWaiter::prepare_sleep`], [`SendWaiter::prepare_sleep`]). A reactor watches it for
/// readability; after waking, [`Doorbell::drain`] it. It also becomes readable (the end of
/// the stream) when the peer process dies or drops the connection, or when this side finds
/// the connection broken. Cloning shares the descriptor, which stays open while any clone
/// lives (so it can be registered with a reactor by value).
#[derive(Clone)]
pub struct Doorbell {
    pub(super) shared: Arc<ConnectionState>,
    pub(super) bell: Bell,
}

impl Doorbell {
    /// Reads what the peer sent (at most 4 KiB), so that the doorbell is readable again only
    /// after the next ring. Never waits (`MSG_DONTWAIT`, whatever the descriptor's flags). At
    /// the end of the stream (the peer is gone) the connection is marked dead: the frames
    /// already in the ring are still received, then the next `prepare_sleep` (or receive)
    /// reports `Disconnected`.
    pub fn drain(&self) -> Result<()> {
        let sock = self.shared.sock(self.bell);
        let mut buf = [0u8; 256];
        let mut read = 0;
        while read < DRAIN_LIMIT {
            match rustix::net::recv(&**sock, &mut buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => {
                    self.shared.kill();
                    return Ok(());
                }
                Ok((n, _)) => read += n,
                Err(e) if e == Errno::AGAIN || e == Errno::INTR => return Ok(()),
                Err(e) if e == Errno::CONNRESET => {
                    self.shared.kill();
                    return Ok(());
                }
                Err(e) => {
                    self.shared.kill();
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Doorbell")
            .field(&self.bell)
            .field(&self.as_raw_fd())
            .finish()
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock(self.bell).as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.sock(self.bell).as_raw_fd()
    }
}

/// Waits until the receive ring has something for
/// [`ShmReceiver::try_recv`], for an adapter that keeps the receiver on its
/// task or thread. Never touches the ring indices; may report readiness
/// spuriously (call `try_recv` again).
///
/// Two ways to wait, with one policy ([`Backoff`]):
///
/// * blocking: [`RecvWaiter::wait_readable`] spins, yields, then sleeps on
///   the futex (in bounded slices, checking the peer between them);
/// * in a reactor: run [`RecvWaiter::backoff`]'s steps around `try_recv`;
///   at [`WaitStep::Sleep`](crate::WaitStep::Sleep) call
///   [`RecvWaiter::prepare_sleep`]. `Ok(None)`: try again. A guard: wait until
///   [`RecvWaiter::doorbell`] is readable, drain it, drop the guard, and try
///   again (a dead peer is reported by the next `prepare_sleep`).
///
/// [`ShmReceiver::try_recv`]: super::ShmReceiver::try_recv
#[derive(Clone)]
pub struct RecvWaiter {
    pub(super) waiter: RingWaiter<MappedRing>,
    pub(super) bell: Doorbell,
    pub(super) shared: Arc<ConnectionState>,
}

impl RecvWaiter {
    /// How many times this side's sends found the peer asleep and woke it (its doorbell
    /// rung). A wait for frames that follows such a send waits longer before it sleeps:
    /// [`RecvWaiter::backoff`] and the blocking receives apply that themselves.
    pub fn peer_woken(&self) -> u64 {
        self.shared
            .peer_woken
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until a frame (or the peer's close) is visible, `Ok(false)`
    /// after `timeout`, `Err(Disconnected)` when the peer died.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        let shared = &*self.shared;
        self.waiter.block(
            0,
            &shared.recv_wait_cfg(deadline_of(timeout)),
            || shared.dead.load(Relaxed),
            &mut || shared.alive(),
        )
    }

    /// The wait policy for one wait for frames (this side's spin budget,
    /// adapted to how often spinning paid lately; twice as long after a send of
    /// this side that woke the peer, [`Backoff::after_waking_peer`]).
    pub fn backoff(&self) -> Backoff<'_> {
        let backoff = Backoff::new(self.shared.config.spin_budget, Some(&self.shared.recv_spin));
        if self.shared.woke_peer_since_last_wait() {
            backoff.after_waking_peer()
        } else {
            backoff
        }
    }

    /// Announces that this side sleeps until a frame comes, and re-checks.
    /// `Ok(None)`: a frame (or the peer's close) is visible now — call
    /// `try_recv`. `Ok(Some(guard))`: while the guard lives, the peer rings
    /// [`RecvWaiter::doorbell`] after it publishes. `Err(Disconnected)`: the
    /// peer is known to be gone.
    pub fn prepare_sleep(&self) -> Result<Option<SleepGuard<'_>>> {
        if self.shared.dead.load(Relaxed) {
            return Err(ShmError::Disconnected);
        }
        Ok(self.waiter.prepare_sleep(0))
    }

    /// The doorbell this side sleeps on while its ring is empty.
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    /// Peer liveness: `Err(Disconnected)` once the peer is gone (one
    /// zero-timeout `poll` of the rendezvous socket).
    pub fn check_peer(&self) -> Result<()> {
        self.shared.alive()
    }
}

/// Waits until the send ring has room for a frame — the send-side twin of
/// [`RecvWaiter`], used the same two ways. May report readiness spuriously.
#[derive(Clone)]
pub struct SendWaiter {
    pub(super) waiter: RingWaiter<MappedRing>,
    pub(super) bell: Doorbell,
    pub(super) shared: Arc<ConnectionState>,
}

impl SendWaiter {
    /// Blocks until a `len`-byte frame would fit (or the peer closed),
    /// `Ok(false)` after `timeout`, `Err(Disconnected)` when the peer died.
    pub fn wait_writable(&self, len: usize, timeout: Option<Duration>) -> Result<bool> {
        let shared = &*self.shared;
        self.waiter.block(
            len,
            &shared.send_wait_cfg(deadline_of(timeout)),
            || shared.dead.load(Relaxed),
            &mut || shared.alive(),
        )
    }

    /// The wait policy for one wait for room.
    pub fn backoff(&self) -> Backoff<'_> {
        Backoff::new(self.shared.config.spin_budget, Some(&self.shared.send_spin))
    }

    /// Announces that this side sleeps until a `len`-byte frame fits, and
    /// re-checks. `Ok(None)`: it fits (or the ring closed) — call
    /// `try_send`. `Ok(Some(guard))`: while the guard lives, the peer rings
    /// [`SendWaiter::doorbell`] after it frees room. `Err(Disconnected)`:
    /// the peer is known to be gone.
    pub fn prepare_sleep(&self, len: usize) -> Result<Option<SleepGuard<'_>>> {
        if self.shared.dead.load(Relaxed) {
            return Err(ShmError::Disconnected);
        }
        Ok(self.waiter.prepare_sleep(len))
    }

    /// The doorbell this side sleeps on while its ring is full.
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    /// Peer liveness, as [`RecvWaiter::check_peer`].
    pub fn check_peer(&self) -> Result<()> {
        self.shared.alive()
    }
}
