//! The sleep/wake handshake of a ring, shared by both ends and by every adapter; before it, a
//! waiting side follows the wait policy ([`Backoff`], in `backoff.rs`).
//!
//! **Handshake.** Before sleeping, a side announces itself (increments a
//! waiter counter in the ring header, [`announce`]) and re-checks its
//! condition. The other side, after publishing an index, reads the counter
//! and, only when someone sleeps, bumps and wakes the futex word *and* rings
//! the doorbell ([`notify`]). Both sides separate their store from their load
//! with a `SeqCst` fence (Dekker): either the sleeper sees the new index or
//! the publisher sees the sleeper. The futex word is read *before* the
//! announcement, so a bump that races with going to sleep makes the futex
//! wait return at once; a doorbell stays readable until its sleeper drains
//! it, so a ring that races with going to sleep makes the reactor wake at
//! once.

use std::time::{Duration, Instant};

use crate::backoff::{Backoff, SpinGauge, WaitStep};

use crate::error::Result;
use crate::layout::Control;
use crate::storage::RingStorage;
use crate::sync::{AtomicU32, Ordering, fence, spin_loop, yield_now};

/// Which side of a ring sleeps: the consumer waits for frames, the producer
/// for room. Each has its own futex word, waiter counter and doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sleeper {
    /// The consumer, waiting for data (`data_seq`, `data_waiters`).
    Consumer,
    /// The producer, waiting for room (`space_seq`, `space_waiters`).
    Producer,
}

impl Sleeper {
    /// (futex word, waiter counter) of this sleeper.
    #[inline]
    pub(crate) fn words(self, ctl: &Control) -> (&AtomicU32, &AtomicU32) {
        match self {
            Sleeper::Consumer => (&ctl.data_seq, &ctl.data_waiters),
            Sleeper::Producer => (&ctl.space_seq, &ctl.space_waiters),
        }
    }

    /// 0 for the consumer, 1 for the producer (index of its doorbell in the heap storage's
    /// model).
    #[cfg(any(test, loom, feature = "test-util"))]
    #[inline]
    pub(crate) fn index(self) -> usize {
        match self {
            Sleeper::Consumer => 0,
            Sleeper::Producer => 1,
        }
    }
}

/// How a blocking call waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitCfg<'a> {
    /// Longest time spent spinning before sleeping.
    pub(crate) spin: Duration,
    /// Adaptive spin limit; `None`: always spin the whole `spin`.
    pub(crate) gauge: Option<&'a SpinGauge>,
    /// Longest single futex sleep (`None`: unbounded; loom only). After each
    /// slice the liveness check runs.
    pub(crate) slice: Option<Duration>,
    /// When to give up (`None`: never).
    pub(crate) deadline: Option<Instant>,
    /// A receive that follows a send which woke the peer: it spins longer
    /// ([`Backoff::after_waking_peer`]).
    pub(crate) after_waking_peer: bool,
}

/// An announced sleep: while it lives, the publisher on the other side of
/// the ring wakes this side's futex and rings its doorbell after every
/// publish. Dropping it retracts the announcement.
///
/// Obtained from `prepare_sleep` on [`crate::RecvWaiter`] /
/// [`crate::SendWaiter`] only when the condition was still false *after*
/// the announcement: sleep until the doorbell (or the peer socket) is
/// readable, drain the doorbell, drop the guard, and check again.
#[must_use = "dropping the guard retracts the announcement: sleep first"]
#[derive(Debug)]
pub struct SleepGuard<'a> {
    waiters: &'a AtomicU32,
}

impl Drop for SleepGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sleeper side of the handshake: announces a sleep on `waiters`, then
/// re-checks `ready`. `None` (announcement retracted) when the condition
/// already holds; otherwise the guard of a sleep that any later publish will
/// interrupt.
#[inline]
pub(crate) fn announce(
    waiters: &AtomicU32,
    ready: impl FnOnce() -> bool,
) -> Option<SleepGuard<'_>> {
    waiters.fetch_add(1, Ordering::SeqCst);
    let guard = SleepGuard { waiters };
    fence(Ordering::SeqCst);
    if ready() { None } else { Some(guard) }
}

/// Publisher side: wakes `who` if it announced a sleep. Call right after
/// publishing an index. No system call when nobody sleeps.
#[inline]
pub(crate) fn notify<S: RingStorage>(s: &S, who: Sleeper) {
    let (_, waiters) = who.words(&s.header().ctl.0);
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Acquire) != 0 {
        wake(s, who);
    }
}

/// Bumps and wakes the futex word of `who`, and rings its doorbell.
#[cold]
#[inline(never)]
pub(crate) fn wake<S: RingStorage>(s: &S, who: Sleeper) {
    let (seq, _) = who.words(&s.header().ctl.0);
    seq.fetch_add(1, Ordering::Release);
    s.futex_wake(seq);
    s.ring_doorbell(who);
}

/// Waits until `ready()` holds (`Ok(true)`) or the deadline passes
/// (`Ok(false)`), sleeping on the futex of `who`; `alive()` runs after every
/// sleep slice and its error ends the wait.
pub(crate) fn block_on<S: RingStorage>(
    s: &S,
    who: Sleeper,
    cfg: &WaitCfg,
    mut ready: impl FnMut() -> bool,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<bool> {
    if ready() {
        return Ok(true);
    }
    let mut backoff = Backoff::new(cfg.spin, cfg.gauge);
    if cfg.after_waking_peer {
        backoff = backoff.after_waking_peer();
    }
    loop {
        match backoff.step() {
            WaitStep::Spin => spin_loop(),
            WaitStep::Yield => yield_now(),
            WaitStep::Sleep => break,
        }
        if ready() {
            backoff.ready();
            return Ok(true);
        }
    }
    let (seq, waiters) = who.words(&s.header().ctl.0);
    loop {
        let timeout = match cfg.deadline {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                let left = deadline - now;
                Some(cfg.slice.map_or(left, |s| s.min(left)))
            }
            None => cfg.slice,
        };
        let observed = seq.load(Ordering::Acquire);
        let Some(guard) = announce(waiters, &mut ready) else {
            return Ok(true);
        };
        s.futex_wait(seq, observed, timeout);
        drop(guard);
        if ready() {
            return Ok(true);
        }
        alive()?;
    }
}
