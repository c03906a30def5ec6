//! The wait policy, shared by both ends of a ring, by every adapter and by the in-process
//! transports of `xrpc-async` (portable: built without the feature `rings` too).
//!
//! **Policy.** A side with nothing to do follows one policy, [`Backoff`]:
//! spin (check again at once), then yield the CPU between checks, then
//! sleep. The blocking API runs it with `spin_loop` / `sched_yield` / a futex;
//! an async adapter runs the very same steps with a busy check / a yield to
//! its runtime / a sleep in its reactor on a doorbell. Adapters configure the
//! policy (`ShmConfig::spin_budget`), never re-implement it.

use std::time::{Duration, Instant};

/// Busy checks per spin round; the clock is read once per round.
const CHECKS_PER_ROUND: u32 = 64;

/// Rounds of busy checks (a few microseconds) before the spin phase starts
/// yielding the CPU.
const SPIN_ROUNDS_BEFORE_YIELD: u32 = 16;

/// A yield that took longer than this ran another thread (or task) on our
/// CPU.
const YIELD_CONTENDED: Duration = Duration::from_micros(5);

/// How many budgets a wait spins after its side woke the peer (see
/// [`Backoff::after_waking_peer`]).
const STRETCH: u32 = 2;

/// The default spin budget of every wait that follows this policy: shared memory
/// (`SharedMemoryConfig::spin_budget`), the in-process transports of `xrpc-async` and the
/// blocking runtime's sockets.
pub const DEFAULT_SPIN_BUDGET: Duration = Duration::from_micros(50);

/// Floor of the adaptive spin limit.
const MIN_SPIN: Duration = Duration::from_micros(1);

/// Every this many waits, spin the whole budget once (see [`SpinGauge`]).
const PROBE_EVERY: u32 = 32;

/// Adaptive spin limit of one waiting side (process-private; a heuristic,
/// not synchronization, hence plain std atomics that loom need not model):
/// the rings keep one per side, and a waiter on something else (the blocking
/// runtime's sockets, a gauge per thread) its own, given to
/// [`Backoff::with_gauge`].
///
/// When spinning finds the condition, the limit doubles (up to the budget);
/// when the wait has to sleep, it halves (down to 1 µs). With more runnable
/// threads than cores, the peer often shares our CPU and `sched_yield` does
/// not reliably hand it over: spinning then only delays the peer, and the
/// limit shrinks so that the futex hand-off (as fast as a socket) takes over.
/// Every 32nd wait one full-budget spin checks whether spinning
/// pays again.
#[derive(Debug)]
pub struct SpinGauge {
    limit_ns: std::sync::atomic::AtomicU32,
    waits: std::sync::atomic::AtomicU32,
}

impl SpinGauge {
    /// A gauge starting at the full budget.
    pub fn new(budget: Duration) -> Self {
        SpinGauge {
            limit_ns: std::sync::atomic::AtomicU32::new(
                u32::try_from(budget.as_nanos()).unwrap_or(u32::MAX),
            ),
            waits: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

/// What a waiting side does before it checks its condition again, as the
/// wait policy ([`Backoff`]) decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStep {
    /// Check again at once (after a `spin_loop` hint): the peer is likely
    /// in the middle of a write.
    Spin,
    /// Give the CPU away once — `sched_yield` in a thread, a yield to the
    /// runtime in a task — then check again.
    Yield,
    /// Spinning does not pay now: announce the sleep and sleep (futex, or
    /// the doorbell in a reactor). Once returned, every later step is
    /// `Sleep`.
    Sleep,
}

/// The wait policy of one wait: spin, then yield, then sleep — the only
/// implementation of it, used by the blocking API and by async adapters.
///
/// Obtain one from [`crate::RecvWaiter::backoff`] or
/// [`crate::SendWaiter::backoff`] after a `try_*` call found nothing to do,
/// call [`Backoff::step`] after each failed check and do what it says, and
/// call [`Backoff::ready`] when the check succeeds (this tunes the spin
/// limit of later waits).
///
/// ```
/// use xrpc_shm::{Backoff, WaitStep};
/// fn wait(mut backoff: Backoff<'_>, mut ready: impl FnMut() -> bool) -> bool {
///     loop {
///         match backoff.step() {
///             WaitStep::Spin => std::hint::spin_loop(),
///             WaitStep::Yield => std::thread::yield_now(),
///             WaitStep::Sleep => return false, // sleep on the futex or doorbell
///         }
///         if ready() {
///             backoff.ready();
///             return true;
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Backoff<'a> {
    gauge: Option<&'a SpinGauge>,
    /// The configured spin budget.
    budget: Duration,
    /// This wait's spin limit (adapted, at most `budget`; `STRETCH` budgets after waking the
    /// peer).
    limit: Duration,
    /// The wait follows a send that woke the peer ([`Backoff::after_waking_peer`]).
    stretched: bool,
    start: Option<Instant>,
    checks: u32,
    /// Checks between two clock reads (see [`Backoff::costly_checks`]).
    checks_per_round: u32,
    /// When the last `Yield` step was handed out (not yet judged).
    yielded: Option<Instant>,
    /// Every retry yields (see [`Backoff::in_runtime`]).
    in_runtime: bool,
    /// On a runtime, busy checks per yield (see [`Backoff::checks_between_yields`]).
    checks_between_yields: u32,
    /// The runtime's yield gives the thread's CPU away (see
    /// [`Backoff::yield_gives_the_cpu_away`]): a long one means a contended CPU there too, as
    /// it always does on a thread.
    yield_gives_the_cpu_away: bool,
    asleep: bool,
}

impl<'a> Backoff<'a> {
    /// The policy for one wait with spin budget `budget`, adapted by `gauge`.
    pub(crate) fn new(budget: Duration, gauge: Option<&'a SpinGauge>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let limit = match gauge {
            Some(g) if g.waits.fetch_add(1, Relaxed) % PROBE_EVERY != 0 => budget
                .min(Duration::from_nanos(g.limit_ns.load(Relaxed).into()))
                .max(MIN_SPIN.min(budget)),
            _ => budget,
        };
        Backoff {
            gauge,
            budget,
            limit,
            stretched: false,
            start: None,
            checks: 0,
            checks_per_round: CHECKS_PER_ROUND,
            yielded: None,
            in_runtime: false,
            checks_between_yields: 1,
            yield_gives_the_cpu_away: false,
            asleep: false,
        }
    }

    /// The policy for one wait on something other than a ring (the in-process transports of
    /// `xrpc-async`), with spin budget `budget` and no adaptation across waits.
    pub fn with_budget(budget: Duration) -> Backoff<'static> {
        Backoff::new(budget, None)
    }

    /// The policy for one wait on something other than a ring, with spin budget `budget`,
    /// adapted across waits by `gauge` (as a ring's side adapts its own).
    pub fn with_gauge(budget: Duration, gauge: &'a SpinGauge) -> Backoff<'a> {
        Backoff::new(budget, Some(gauge))
    }

    /// Each check is a system call (a zero-timeout `poll(2)` on a socket), which takes as long
    /// as a round of memory checks: the clock is read after every check, so that the spin ends
    /// on time, and the CPU is given away between checks after the first few, so that a busy
    /// CPU is noticed as on a ring.
    #[must_use]
    pub fn costly_checks(mut self) -> Self {
        self.checks_per_round = 1;
        self
    }

    /// The waits run on an async runtime, whose yield lets the runtime's other tasks and its
    /// reactor run: a long yield is then no sign of a CPU shared with the peer, and does not
    /// end the spin (on a blocking thread, `sched_yield` taking long means exactly that). The
    /// spin is not adapted either: a connection's waits for a peer that is sometimes idle for
    /// long would shrink it to nothing. Every retry yields (no busy spin holding the thread;
    /// a few busy checks between yields with [`Backoff::checks_between_yields`]) until the
    /// whole budget is spent, then the wait sleeps in the reactor.
    #[must_use]
    pub fn in_runtime(mut self) -> Self {
        self.in_runtime = true;
        self.gauge = None;
        self.limit = self.full_limit();
        self
    }

    /// With [`Backoff::in_runtime`]: `n` checks per yield, the others busy ([`WaitStep::Spin`]),
    /// for a wait whose check is far cheaper than a turn of the runtime (a ring's index,
    /// against a poll of the connection's driver and a reschedule of the task, which on tokio
    /// also wakes an idle worker). An answer that comes during the busy checks is seen at once;
    /// the thread is held for `n` checks at most (a few hundred nanoseconds for a ring) before
    /// the runtime's other tasks run. A peer on the same thread gains nothing from them.
    #[must_use]
    pub fn checks_between_yields(mut self, n: u32) -> Self {
        self.checks_between_yields = n.max(1);
        self
    }

    /// The runtime's yield gives the thread's CPU away (the blocking runtime's is a
    /// `sched_yield`): with [`Backoff::in_runtime`], a yield that took long ran another thread
    /// on this CPU — often the very peer, or a process that took the CPU from it — and ends the
    /// spin as on a thread: the wait sleeps, and the wake-up it then gets from the peer is
    /// served at once, where a thread that kept yielding would wait for a scheduler slice.
    #[must_use]
    pub fn yield_gives_the_cpu_away(mut self) -> Self {
        self.yield_gives_the_cpu_away = true;
        self
    }

    /// This side's last send woke the peer from sleep: its answer comes after the peer's
    /// wake-up, which can take longer than the spin budget (tens of microseconds where idle
    /// CPUs are halted). The wait spins for up to twice the budget, so that this
    /// side is still awake when the answer comes — were it asleep too, the peer's next wait
    /// would outlast its spin in turn, and both sides would sleep at every exchange.
    #[must_use]
    pub fn after_waking_peer(mut self) -> Self {
        self.stretched = true;
        self.limit = self.full_limit();
        self
    }

    /// The longest this wait spins (and yields) before it sleeps.
    pub fn spin_limit(&self) -> Duration {
        self.limit
    }

    /// The longest this wait spins: the budget, or `STRETCH` budgets after waking the peer.
    fn full_limit(&self) -> Duration {
        if self.stretched {
            self.budget.saturating_mul(STRETCH)
        } else {
            self.budget
        }
    }

    /// The condition was found false: what to do before checking again.
    #[inline]
    pub fn step(&mut self) -> WaitStep {
        if self.asleep {
            return WaitStep::Sleep;
        }
        if self.limit.is_zero() {
            self.asleep = true;
            return WaitStep::Sleep;
        }
        if let Some(at) = self.yielded.take() {
            // A long yield ran another thread on this CPU (often the very
            // peer we wait for): spinning costs the peer its CPU, so we
            // sleep instead of going on.
            if at.elapsed() > YIELD_CONTENDED {
                return self.give_up();
            }
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        if self.in_runtime {
            // On a runtime: every retry yields (a busy spin would hold the thread that the
            // runtime's other tasks, the peer's among them, may need), or every
            // `checks_between_yields`-th, until the budget is spent — looked at before each
            // yield (a yield may take long: the runtime's other tasks run).
            self.checks += 1;
            if !self.checks.is_multiple_of(self.checks_between_yields) {
                return WaitStep::Spin;
            }
            if start.elapsed() >= self.limit {
                return self.give_up();
            }
            if self.yield_gives_the_cpu_away {
                self.yielded = Some(Instant::now());
            }
            return WaitStep::Yield;
        }
        self.checks += 1;
        if !self.checks.is_multiple_of(self.checks_per_round) {
            return WaitStep::Spin;
        }
        if start.elapsed() >= self.limit {
            return self.give_up();
        }
        if self.checks / self.checks_per_round > SPIN_ROUNDS_BEFORE_YIELD {
            self.yielded = Some(Instant::now());
            return WaitStep::Yield;
        }
        WaitStep::Spin
    }

    /// The condition was found true: tunes the spin limit of later waits
    /// (spinning paid, unless it only did so after a contended yield).
    #[inline]
    pub fn ready(&mut self) {
        if self.asleep {
            return;
        }
        let contended = self
            .yielded
            .take()
            .is_some_and(|at| at.elapsed() > YIELD_CONTENDED);
        self.adapt(!contended);
    }

    #[cold]
    fn give_up(&mut self) -> WaitStep {
        self.adapt(false);
        self.asleep = true;
        WaitStep::Sleep
    }

    fn adapt(&self, found: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(g) = self.gauge {
            let next = if found {
                self.limit.saturating_mul(2).min(self.budget)
            } else {
                (self.limit / 2).max(MIN_SPIN)
            };
            g.limit_ns
                .store(u32::try_from(next.as_nanos()).unwrap_or(u32::MAX), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `b`'s steps (as a runtime does: every retry yields) until it says to sleep; how
    /// long that took.
    fn until_sleep(mut b: Backoff<'_>) -> Duration {
        let t0 = Instant::now();
        while b.step() != WaitStep::Sleep {
            std::thread::yield_now();
        }
        t0.elapsed()
    }

    /// On a runtime whose yield is a `sched_yield`, a yield that took long (another thread ran on
    /// this CPU) ends the spin; on one whose yield runs other tasks, it does not.
    #[test]
    fn a_long_thread_yield_ends_a_runtime_spin() {
        let budget = Duration::from_secs(60);
        // The step after a yield of 2 ms.
        let after_long_yield = |mut b: Backoff<'_>| {
            assert_eq!(b.step(), WaitStep::Yield);
            std::thread::sleep(Duration::from_millis(2));
            b.step()
        };
        let runtime = || Backoff::with_budget(budget);
        let ends = runtime().in_runtime().yield_gives_the_cpu_away();
        assert_eq!(after_long_yield(ends), WaitStep::Sleep);
        // In either order.
        let ends = runtime().yield_gives_the_cpu_away().in_runtime();
        assert_eq!(after_long_yield(ends), WaitStep::Sleep);
        // Tasks that ran long do not end it.
        assert_eq!(after_long_yield(runtime().in_runtime()), WaitStep::Yield);
    }

    /// Checks that take long (system calls) end the spin on time: the clock is read after each,
    /// not once per round of 64.
    #[test]
    fn costly_checks_read_the_clock_after_each_check() {
        let mut b = Backoff::with_budget(Duration::from_millis(1)).costly_checks();
        let mut checks = 0;
        while b.step() != WaitStep::Sleep {
            checks += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        // After 5 checks of at least 200 µs the 1 ms limit has passed; without costly checks
        // the clock is first read after 64.
        assert!((1..=5).contains(&checks), "{checks} checks of 200 µs");
    }

    /// On a runtime, a wait with `n` checks per yield spins `n - 1` times between yields, and
    /// still sleeps once its budget is spent; without, every retry yields.
    #[test]
    fn a_runtime_wait_checks_busily_between_its_yields() {
        let steps = |b: &mut Backoff<'_>| (0..8).map(|_| b.step()).collect::<Vec<_>>();
        let budget = Duration::from_millis(2);
        let t0 = Instant::now();
        let mut b = Backoff::with_budget(budget)
            .in_runtime()
            .checks_between_yields(4);
        use WaitStep::{Spin, Yield};
        assert_eq!(
            steps(&mut b),
            [Spin, Spin, Spin, Yield, Spin, Spin, Spin, Yield]
        );
        let mut every = Backoff::with_budget(budget).in_runtime();
        assert_eq!(steps(&mut every), [Yield; 8]);
        while b.step() != WaitStep::Sleep {
            std::hint::spin_loop();
        }
        assert!(t0.elapsed() >= budget);
    }

    #[test]
    fn a_wait_after_waking_the_peer_spins_twice_the_budget() {
        let budget = Duration::from_millis(3);
        assert!(until_sleep(Backoff::with_budget(budget).in_runtime()) >= budget);
        let stretched = Backoff::with_budget(budget)
            .in_runtime()
            .after_waking_peer();
        assert!(until_sleep(stretched) >= 2 * budget);
        // In either order.
        let stretched = Backoff::with_budget(budget)
            .after_waking_peer()
            .in_runtime();
        assert!(until_sleep(stretched) >= 2 * budget);
        // A budget too large to double is the largest there is, not a panic.
        let huge = Backoff::with_budget(Duration::MAX).after_waking_peer();
        assert_eq!(huge.limit, Duration::MAX);
        // Nor is a spin that pays, adapted by a gauge.
        let gauge = SpinGauge::new(Duration::MAX);
        let mut paid = Backoff::with_gauge(Duration::MAX, &gauge).after_waking_peer();
        assert_eq!(paid.step(), WaitStep::Spin);
        paid.ready();
    }
}
