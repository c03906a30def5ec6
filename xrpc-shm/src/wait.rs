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

/// A `sched_yield` that took longer than this ran another thread on our CPU.
const YIELD_CONTENDED: Duration = Duration::from_micros(5);

/// Floor of the adaptive spin limit.
const MIN_SPIN: Duration = Duration::from_micros(1);

/// Every this many waits, spin the whole budget once (see [`SpinGauge`]).
const PROBE_EVERY: u32 = 32;

/// Adaptive spin limit of one waiting side (process-private; a heuristic,
/// not synchronization, hence plain std atomics that loom need not model).
///
/// When spinning finds the condition, the limit doubles (up to the budget);
/// when the wait has to sleep, it halves (down to 1 µs). With more runnable
/// threads than cores, the peer often shares our CPU and `sched_yield` does
/// not reliably hand it over: spinning then only delays the peer, and the
/// limit shrinks so that the futex hand-off (as fast as a socket) takes over.
/// Every `PROBE_EVERY` waits one full-budget spin checks whether spinning
/// pays again.
#[derive(Debug)]
pub(crate) struct SpinGauge {
    limit_ns: std::sync::atomic::AtomicU32,
    waits: std::sync::atomic::AtomicU32,
}

impl SpinGauge {
    /// A gauge starting at the full budget.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn new(budget: Duration) -> Self {
        SpinGauge {
            limit_ns: std::sync::atomic::AtomicU32::new(
                u32::try_from(budget.as_nanos()).unwrap_or(u32::MAX),
            ),
            waits: std::sync::atomic::AtomicU32::new(0),
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

/// The spin phase: `true` if `ready()` came true while spinning.
fn spin(cfg: &WaitCfg<'_>, ready: &mut impl FnMut() -> bool) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let limit = match cfg.gauge {
        Some(g) if g.waits.fetch_add(1, Relaxed) % PROBE_EVERY != 0 => cfg
            .spin
            .min(Duration::from_nanos(g.limit_ns.load(Relaxed).into()))
            .max(MIN_SPIN.min(cfg.spin)),
        _ => cfg.spin,
    };
    let adapt = |found: bool| {
        if let Some(g) = cfg.gauge {
            let next = if found {
                (limit * 2).min(cfg.spin)
            } else {
                (limit / 2).max(MIN_SPIN)
            };
            let next = u32::try_from(next.as_nanos()).unwrap_or(u32::MAX);
            g.limit_ns.store(next, Relaxed);
        }
        found
    };
    // Busy-spin briefly (the peer is usually mid-write), then spin with
    // `sched_yield` so that a peer waiting for a CPU gets one; give up when
    // a yield shows that the CPU is contended, or when the limit is spent.
    let start = Instant::now();
    let mut rounds = 0u32;
    loop {
        for _ in 0..64 {
            spin_loop();
            if ready() {
                return adapt(true);
            }
        }
        rounds += 1;
        if rounds > SPIN_ROUNDS_BEFORE_YIELD {
            let before = Instant::now();
            yield_now();
            // A long yield ran another thread on this CPU (often the very
            // peer we wait for): spinning costs the peer its CPU, so it does
            // not count as paying off, and we sleep instead of going on.
            let contended = before.elapsed() > YIELD_CONTENDED;
            if ready() {
                adapt(!contended);
                return true;
            }
            if contended {
                return adapt(false);
            }
        }
        if start.elapsed() >= limit {
            return adapt(false);
        }
    }
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
    if !cfg.spin.is_zero() && spin(cfg, &mut ready) {
        return Ok(true);
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
