//! The sleep/wake handshake, shared by both ends of a ring.
//!
//! A side with nothing to do spins for a budget, then announces that it
//! sleeps (increments a waiter counter in the ring header), re-checks its
//! condition, and sleeps on a futex word in bounded slices. The other side,
//! after publishing an index, reads the counter and bumps and wakes the futex
//! word only when someone sleeps. Both sides separate their store from their
//! load with a `SeqCst` fence (Dekker): either the sleeper sees the new index
//! or the publisher sees the sleeper. The futex word is read *before* the
//! announcement, so a bump that races with going to sleep makes the futex
//! wait return at once.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::storage::RingStorage;
use crate::sync::{AtomicU32, Ordering, fence, spin_loop, yield_now};

/// Rounds of 64 busy spins (a few microseconds) before the spin phase starts
/// yielding the CPU.
const SPIN_ROUNDS_BEFORE_YIELD: u32 = 16;

/// How a blocking call waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitCfg {
    /// Time spent spinning before sleeping.
    pub(crate) spin: Duration,
    /// Longest single futex sleep (`None`: unbounded; loom only). After each
    /// slice the liveness check runs.
    pub(crate) slice: Option<Duration>,
    /// When to give up (`None`: never).
    pub(crate) deadline: Option<Instant>,
}

/// Publisher side: wakes the sleepers of `seq` if any announced themselves.
/// Call right after publishing an index.
#[inline]
pub(crate) fn notify<S: RingStorage>(s: &S, seq: &AtomicU32, waiters: &AtomicU32) {
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Acquire) != 0 {
        notify_slow(s, seq);
    }
}

#[cold]
#[inline(never)]
fn notify_slow<S: RingStorage>(s: &S, seq: &AtomicU32) {
    seq.fetch_add(1, Ordering::Release);
    s.futex_wake(seq);
}

/// Waits until `ready()` holds (`Ok(true)`) or the deadline passes
/// (`Ok(false)`); `alive()` runs after every sleep slice and its error ends
/// the wait.
pub(crate) fn block_on<S: RingStorage>(
    s: &S,
    seq: &AtomicU32,
    waiters: &AtomicU32,
    cfg: &WaitCfg,
    mut ready: impl FnMut() -> bool,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<bool> {
    if ready() {
        return Ok(true);
    }
    if !cfg.spin.is_zero() {
        // Busy-spin briefly (the peer is usually mid-write), then spin with
        // `sched_yield` so that a peer waiting for a CPU (fewer cores than
        // busy threads) gets one; only then sleep.
        let start = Instant::now();
        let mut rounds = 0u32;
        loop {
            for _ in 0..64 {
                spin_loop();
                if ready() {
                    return Ok(true);
                }
            }
            rounds += 1;
            if rounds > SPIN_ROUNDS_BEFORE_YIELD {
                yield_now();
                if ready() {
                    return Ok(true);
                }
            }
            if start.elapsed() >= cfg.spin {
                break;
            }
        }
    }
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
        waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready() {
            waiters.fetch_sub(1, Ordering::Relaxed);
            return Ok(true);
        }
        s.futex_wait(seq, observed, timeout);
        waiters.fetch_sub(1, Ordering::Relaxed);
        if ready() {
            return Ok(true);
        }
        alive()?;
    }
}
