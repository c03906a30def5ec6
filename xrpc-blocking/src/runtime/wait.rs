//! Waiting on a thread: [`block_on`] polls a future on the calling thread and, between polls,
//! waits in one `poll(2)` for what that future waits on — the descriptors and instants of the
//! [`Interest`]s armed while it was polled on this thread — and for a wake-up from another
//! thread (an eventfd); with no descriptor to wait for, on a futex instead. The kernel wakes
//! the waiting thread itself: no other thread is in between. (A shared reactor — async-io's,
//! tokio's — has one thread wait for all the others and wake them: a second hand-off per
//! wake-up, which doubles a socket round trip between two waiting threads: 16 µs against
//! 8.5 µs for blocking `std` IO, measured.)
//!
//! Before it sleeps, a thread whose future waits for a socket's input checks what it waits on
//! without sleeping, for up to 50 µs, under the wait policy of shared memory
//! ([`xrpc_shm::Backoff`], adapted per thread): where idle CPUs are halted, an answer that
//! comes while the thread sleeps costs a wake-up longer than the answer took (see
//! [`Entered::spin`]).
//!
//! An interest still armed when its `block_on` returns — the read of a client's connection that
//! a call drove and no longer waits for, a heartbeat's timer — goes to the
//! [watcher](super::watcher), which waits for it from then on (a descriptor after a short
//! delay: a client calling in a loop takes it back first); so does one armed outside any
//! `block_on`. A yield asked in a `block_on`'s last poll is resumed by the watcher too (see
//! [`ask_yield`]).
//!
//! A `block_on` is a *frame* on its thread's stack of frames (a handler that makes a blocking
//! call inside a task nests one); an interest is armed in the innermost frame.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::thread::futex;
use xrpc_shm::{Backoff, SpinGauge, WaitStep};

use super::watcher;

/// A descriptor to wait on, kept open by whoever waits for it.
pub(crate) type Fd = Arc<dyn AsFd + Send + Sync>;

/// Where an interest is armed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Place {
    /// Nowhere: fired, disarmed, or never armed.
    Idle,
    /// In the frame with this number: its thread polls for it.
    Frame(u64),
    /// With the watcher.
    Watcher,
}

/// A wake-up a future waits for: a descriptor becoming ready for `events`, or (with no
/// descriptor) an instant passing. Armed with a waker where the future is polled, it fires —
/// wakes the waker — once; the next poll that still needs it arms it again.
pub(crate) struct Interest {
    fd: Option<Fd>,
    events: PollFlags,
    /// A thread about to sleep for it checks it without sleeping first (see [`Entered::spin`]).
    spins: bool,
    state: Mutex<State>,
}

pub(crate) struct State {
    /// Bumped by every arming and disarming: an entry (of a frame or the watcher) that carries
    /// another generation is stale.
    generation: u64,
    place: Place,
    waker: Option<Waker>,
    /// The instant of a timer.
    pub(crate) at: Option<Instant>,
    /// Fired since it was last armed.
    fired: bool,
    /// An armed timer's key in the watcher's queue.
    pub(crate) watcher_key: Option<(Instant, u64)>,
}

impl Interest {
    /// An interest in `fd` becoming ready for `events` (`IN` or `OUT`).
    pub(crate) fn descriptor(fd: Fd, events: PollFlags) -> Arc<Self> {
        Self::new(Some(fd), events, false)
    }

    /// An interest in `fd` becoming ready for `events` that a thread checks without sleeping
    /// before it sleeps for it (a socket's input: a peer's answer often comes sooner than a
    /// sleeping thread wakes up; see [`Entered::spin`]).
    pub(crate) fn descriptor_spun(fd: Fd, events: PollFlags) -> Arc<Self> {
        Self::new(Some(fd), events, true)
    }

    /// An interest in an instant (given when armed).
    pub(crate) fn timer() -> Arc<Self> {
        Self::new(None, PollFlags::empty(), false)
    }

    fn new(fd: Option<Fd>, events: PollFlags, spins: bool) -> Arc<Self> {
        Arc::new(Self {
            fd,
            events,
            spins,
            state: Mutex::new(State {
                generation: 0,
                place: Place::Idle,
                waker: None,
                at: None,
                fired: false,
                watcher_key: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn fd(&self) -> Option<&Fd> {
        self.fd.as_ref()
    }

    pub(crate) fn events(&self) -> PollFlags {
        self.events
    }

    /// Arms the interest to wake `waker` (at `at`, for a timer), in the current frame — or with
    /// the watcher outside any. Arming it again where it is armed only refreshes the waker and
    /// the instant.
    pub(crate) fn arm(self: &Arc<Self>, waker: &Waker, at: Option<Instant>) {
        self.arm_in(current_frame(), waker, at);
    }

    /// Arms the interest, a timer, to wake `waker` at `at` (`now` is the caller's reading of
    /// the clock): in the current frame, as [`arm`](Self::arm) does, unless it is due in
    /// [`FAR_TIMER`] or later — then with the watcher, where it stays while it is armed again
    /// for the same instant. The frame would sleep for it no sooner than the watcher wakes
    /// its waker, and a client's call deadline (30 s by default) would otherwise go to the
    /// watcher at the end of every call's `block_on` and come back at the next: a lock, an
    /// insertion and a removal per call.
    pub(crate) fn arm_timer(self: &Arc<Self>, waker: &Waker, at: Instant, now: Instant) {
        let frame = if at.saturating_duration_since(now) >= FAR_TIMER {
            None
        } else {
            current_frame()
        };
        self.arm_in(frame, waker, Some(at));
    }

    /// Arms the interest in frame `frame`, or with the watcher (`None`).
    fn arm_in(self: &Arc<Self>, frame: Option<u64>, waker: &Waker, at: Option<Instant>) {
        let mut st = self.lock();
        let here = match frame {
            Some(n) => Place::Frame(n),
            None => Place::Watcher,
        };
        // Armed there already: only the waker and (in a frame) the instant are refreshed; the
        // watcher keeps a timer only for the instant it has it queued at.
        if st.place == here && (frame.is_some() || st.at == at) {
            if !st.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                st.waker = Some(waker.clone());
            }
            st.at = at;
            return;
        }
        self.withdraw(&mut st);
        st.generation += 1;
        st.waker = Some(waker.clone());
        st.at = at;
        st.fired = false;
        let generation = st.generation;
        match frame {
            Some(n) => {
                st.place = Place::Frame(n);
                drop(st);
                FRAMES.with(|f| {
                    if let Some(top) = f.borrow_mut().last_mut() {
                        top.armed.push((self.clone(), generation));
                    }
                });
            }
            None => {
                st.place = Place::Watcher;
                let now = watcher::adopt(self, generation, &mut st);
                drop(st);
                if let Some(w) = now {
                    w.wake();
                }
            }
        }
    }

    /// Whether the watcher holds the interest, a timer, armed for `at` to wake `waker`: it
    /// fires it then, and it stays there while it is armed again for the same instant (see
    /// [`arm_timer`](Self::arm_timer)).
    pub(crate) fn held_by_watcher(&self, at: Instant, waker: &Waker) -> bool {
        let st = self.lock();
        st.place == Place::Watcher
            && st.at == Some(at)
            && st.waker.as_ref().is_some_and(|w| w.will_wake(waker))
    }

    /// Moves an armed timer to `at` where it is armed (a reset timer that is not polled again
    /// still fires on time).
    pub(crate) fn reschedule(self: &Arc<Self>, at: Instant) {
        let mut st = self.lock();
        match st.place {
            Place::Idle => {}
            Place::Frame(_) => st.at = Some(at),
            Place::Watcher => {
                watcher::remove(self, &mut st);
                st.at = Some(at);
                let generation = st.generation;
                let now = watcher::adopt(self, generation, &mut st);
                drop(st);
                if let Some(w) = now {
                    w.wake();
                }
            }
        }
    }

    /// Disarms the interest (its future is dropped or done with it).
    pub(crate) fn disarm(&self) {
        let mut st = self.lock();
        self.withdraw(&mut st);
        st.generation += 1;
        st.place = Place::Idle;
        st.waker = None;
    }

    /// How many times it was armed or disarmed (tests).
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether the watcher holds it (tests).
    #[cfg(test)]
    pub(crate) fn is_with_the_watcher(&self) -> bool {
        self.lock().place == Place::Watcher
    }

    /// Whether it fired since it was last armed.
    pub(crate) fn fired(&self) -> bool {
        self.lock().fired
    }

    /// Whether it fired since it was last armed or asked; asking clears it.
    pub(crate) fn take_fired(&self) -> bool {
        std::mem::take(&mut self.lock().fired)
    }

    /// Takes it back from the watcher if it is armed there.
    fn withdraw(&self, st: &mut State) {
        if st.place == Place::Watcher {
            watcher::remove(self, st);
        }
    }

    /// Fires the interest if it is still armed at `place` in `generation`: its waker, to wake.
    pub(crate) fn fire(&self, generation: u64, place: Place) -> Option<Waker> {
        let mut st = self.lock();
        if st.generation != generation || st.place != place {
            return None;
        }
        st.place = Place::Idle;
        st.fired = true;
        st.waker.take()
    }

    /// Whether it is armed in frame `n` in `generation`, and its instant if it is a timer.
    fn armed_in(&self, n: u64, generation: u64) -> Option<Option<Instant>> {
        let st = self.lock();
        (st.generation == generation && st.place == Place::Frame(n)).then_some(st.at)
    }

    /// Hands the interest, armed in frame `n` in `generation`, to the watcher (the frame ends).
    fn adopt(self: &Arc<Self>, n: u64, generation: u64) {
        let mut st = self.lock();
        if st.generation != generation || st.place != Place::Frame(n) {
            return;
        }
        st.place = Place::Watcher;
        let now = watcher::adopt(self, generation, &mut st);
        drop(st);
        if let Some(w) = now {
            w.wake();
        }
    }

    /// The interest fires at once where it cannot be watched (no watcher): its owner polls
    /// again (and finds its descriptor ready or not).
    pub(crate) fn fire_now(st: &mut State) -> Option<Waker> {
        st.place = Place::Idle;
        st.fired = true;
        st.waker.take()
    }
}

/// The thread's state while it polls: idle, woken, asleep in `poll(2)`, or asleep on the
/// state itself (a futex: the frame waits for nothing but a wake-up and instants).
const IDLE: u32 = 0;
const NOTIFIED: u32 = 1;
const SLEEPING: u32 = 2;
const PARKED: u32 = 3;

/// What wakes a frame from another thread: a flag, and — only when the frame sleeps — a write
/// to its eventfd (asleep in `poll(2)`) or a futex wake (parked on the flag).
struct Signal {
    state: AtomicU32,
    /// `None` if no eventfd could be made: the frame then sleeps in slices of
    /// [`SLICE_WITHOUT_EVENTFD`].
    fd: Option<OwnedFd>,
}

/// Longest sleep of a frame that has no eventfd (descriptors exhausted).
const SLICE_WITHOUT_EVENTFD: Duration = Duration::from_millis(1);

impl Signal {
    fn new() -> Self {
        Self {
            state: AtomicU32::new(IDLE),
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok(),
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.swap(NOTIFIED, Ordering::AcqRel) {
            SLEEPING => {
                if let Some(fd) = &self.fd {
                    // Full only after 2^64 - 2 wake-ups without a drain.
                    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
                }
            }
            PARKED => {
                let _ = futex::wake(&self.state, futex::Flags::PRIVATE, 1);
            }
            _ => {}
        }
    }
}

/// A frame as its thread's stack keeps it.
struct Frame {
    number: u64,
    /// The frame's signal: whether it was woken during the poll under way (see
    /// [`waits_in_place`]).
    signal: Arc<Signal>,
    /// Interests armed here, with the generation they were armed in.
    armed: Vec<(Arc<Interest>, u64)>,
    /// Scratch for one sleep: which of `armed` became ready, the wakers of what fired.
    ready: Vec<bool>,
    wake: Vec<Waker>,
    /// Wakers of the futures that yielded in the last poll (see [`ask_yield`]).
    yields: Vec<Waker>,
}

/// A finished frame's signal, waker and lists, kept for the thread's next `block_on`.
struct Spare {
    signal: Arc<Signal>,
    waker: Waker,
    armed: Vec<(Arc<Interest>, u64)>,
    ready: Vec<bool>,
    wake: Vec<Waker>,
    yields: Vec<Waker>,
}

/// How long a frame spins before it sleeps ([`Entered::spin`]), at most: the default spin
/// budget of shared memory and of the in-process transports.
const SPIN_BUDGET: Duration = xrpc_shm::DEFAULT_SPIN_BUDGET;

thread_local! {
    /// How long this thread's frames spin (adapted: a thread whose spins keep failing — one
    /// serving a connection whose peer calls rarely — spins less).
    static SPIN_GAUGE: SpinGauge = SpinGauge::new(SPIN_BUDGET);
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    static SPARE: RefCell<Vec<Spare>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Spins of this thread that found something (tests).
    pub(crate) static SPUN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Numbers frames, all threads together.
static FRAME_NUMBERS: AtomicU64 = AtomicU64::new(1);

fn current_frame() -> Option<u64> {
    FRAMES.with(|f| f.borrow().last().map(|top| top.number))
}

/// A future yields with `waker`: the current frame gives the CPU away (`sched_yield`) once
/// its poll is over, then wakes `waker`, so the future is polled again. If that poll was the
/// frame's last (its `block_on` returns), the wake-up is left to the watcher, after
/// [`ORPHAN_DELAY`](super::watcher::ORPHAN_DELAY): what yielded there — a connection's wait for
/// its next frame, which the call that returned no longer needs — goes on then, or sooner if
/// whoever needs it wakes it. Returns `false` outside any frame: the caller gives the CPU away
/// and wakes the waker itself.
pub(crate) fn ask_yield(waker: &Waker) -> bool {
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let Some(top) = frames.last_mut() else {
            return false;
        };
        if !top.yields.iter().any(|w| w.will_wake(waker)) {
            top.yields.push(waker.clone());
        }
        true
    })
}

/// Whether a future polled in this thread's innermost frame may go on waiting without ending
/// its poll (spin, `sched_yield`): the frame has nothing else to do meanwhile — no wake-up came
/// since the poll began and no other future of the frame yielded. If not, the caller yields to
/// the frame ([`ask_yield`]) so that what woke it runs first. Descriptors and timers armed in
/// the frame wait until the poll ends: a future waits in place only for a bounded spin (shared
/// memory's).
pub(crate) fn waits_in_place() -> bool {
    FRAMES.with(|f| {
        f.borrow().last().is_some_and(|top| {
            top.yields.is_empty() && top.signal.state.load(Ordering::Acquire) == IDLE
        })
    })
}

/// A frame while its `block_on` runs; ending it hands what is still armed to the watcher.
struct Entered {
    number: u64,
    signal: Arc<Signal>,
    waker: Waker,
}

impl Entered {
    fn new() -> Self {
        let spare = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| {
            let signal = Arc::new(Signal::new());
            Spare {
                waker: Waker::from(signal.clone()),
                signal,
                armed: Vec::new(),
                ready: Vec::new(),
                wake: Vec::new(),
                yields: Vec::new(),
            }
        });
        spare.signal.state.store(IDLE, Ordering::Relaxed);
        let number = FRAME_NUMBERS.fetch_add(1, Ordering::Relaxed);
        FRAMES.with(|f| {
            f.borrow_mut().push(Frame {
                number,
                signal: spare.signal.clone(),
                armed: spare.armed,
                ready: spare.ready,
                wake: spare.wake,
                yields: spare.yields,
            })
        });
        Self {
            number,
            signal: spare.signal,
            waker: spare.waker,
        }
    }

    /// Gives the CPU away and wakes the futures that yielded in the last poll, if any did.
    fn resume_yields(&self) {
        let mut yields = FRAMES.with(|f| {
            f.borrow_mut()
                .last_mut()
                .map(|top| std::mem::take(&mut top.yields))
                .unwrap_or_default()
        });
        if yields.is_empty() {
            return;
        }
        std::thread::yield_now();
        for w in yields.drain(..) {
            w.wake();
        }
        FRAMES.with(|f| {
            if let Some(top) = f.borrow_mut().last_mut() {
                yields.append(&mut top.yields);
                top.yields = yields;
            }
        });
    }

    /// Before the frame sleeps, while an interest armed here spins ([`Interest::descriptor_spun`])
    /// and the frame is not woken: checks what is armed here without sleeping, as the wait
    /// policy of shared memory says ([`Backoff`], each check a system call), until something
    /// fires, the frame is woken, or the policy says to sleep. Where idle CPUs are halted,
    /// waking a sleeping thread takes longer than most answers on a socket: two threads in a
    /// ping-pong over a Unix socket answered in 33–54 µs sleeping (in `recv` or `poll(2)`), and
    /// in about 4 µs checking for up to 10 µs first, with a third of the CPU time (measured on
    /// the benchmark's VM, `docs/benchmarks/wait-pingpong.c`).
    fn spin(&self) {
        if self.signal.state.load(Ordering::Acquire) != IDLE {
            return;
        }
        let spins = FRAMES.with(|f| {
            f.borrow().last().is_some_and(|top| {
                top.armed
                    .iter()
                    .any(|(i, g)| i.spins && i.armed_in(self.number, *g).is_some())
            })
        });
        if !spins {
            return;
        }
        SPIN_GAUGE.with(|gauge| {
            let mut backoff = Backoff::with_gauge(SPIN_BUDGET, gauge).costly_checks();
            while self.signal.state.load(Ordering::Acquire) == IDLE {
                match backoff.step() {
                    WaitStep::Spin => std::hint::spin_loop(),
                    WaitStep::Yield => std::thread::yield_now(),
                    WaitStep::Sleep => return,
                }
                if self.wait(false) {
                    backoff.ready();
                    #[cfg(test)]
                    SPUN.with(|n| n.set(n.get() + 1));
                    return;
                }
            }
        });
    }

    /// With `sleep`, sleeps (the state set to sleeping) until an interest armed here fires or
    /// the frame is woken; without, only checks. Then fires what is due, and says whether
    /// anything fired; leaves the state idle, or notified if woken.
    fn wait(&self, sleep: bool) -> bool {
        let (mut armed, mut ready, mut wake) = FRAMES.with(|f| {
            f.borrow_mut()
                .last_mut()
                .map(|top| {
                    (
                        std::mem::take(&mut top.armed),
                        std::mem::take(&mut top.ready),
                        std::mem::take(&mut top.wake),
                    )
                })
                .unwrap_or_default()
        });
        // Stale entries go; the earliest instant bounds the sleep.
        let mut deadline: Option<Instant> = None;
        armed.retain(
            |(interest, generation)| match interest.armed_in(self.number, *generation) {
                None => false,
                Some(at) => {
                    if let Some(at) = at {
                        deadline = Some(deadline.map_or(at, |d| d.min(at)));
                    }
                    true
                }
            },
        );
        let timeout = match sleep {
            true => deadline.map(|d| d.saturating_duration_since(Instant::now())),
            false => Some(Duration::ZERO),
        };
        ready.clear();
        ready.resize(armed.len(), false);
        if sleep && timeout != Some(Duration::ZERO) && armed.iter().all(|(i, _)| i.fd().is_none()) {
            // Nothing to wait for but a wake-up and instants: a futex on the state, one
            // system call to sleep and one to wake (`poll(2)` on the eventfd takes a third, the
            // drain).
            self.park(timeout);
        } else if !sleep || timeout != Some(Duration::ZERO) {
            self.sleep(&armed, timeout, &mut ready);
        }
        // Awake: a wake-up from now on needs no system call (and one that came stays notified).
        let _ = self
            .signal
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                matches!(s, SLEEPING | PARKED).then_some(IDLE)
            });
        // Fire what is due; the rest stays armed here.
        let now = deadline.map(|_| Instant::now());
        let mut entry = 0;
        armed.retain(|(interest, generation)| {
            let due = match interest.fd() {
                Some(_) => ready[entry],
                None => interest
                    .armed_in(self.number, *generation)
                    .flatten()
                    .is_some_and(|at| now.is_some_and(|now| at <= now)),
            };
            entry += 1;
            if due && let Some(w) = interest.fire(*generation, Place::Frame(self.number)) {
                wake.push(w);
            }
            !due
        });
        let fired = !wake.is_empty();
        for w in wake.drain(..) {
            w.wake();
        }
        FRAMES.with(|f| {
            if let Some(top) = f.borrow_mut().last_mut() {
                armed.append(&mut top.armed);
                top.armed = armed;
                top.ready = ready;
                top.wake = wake;
            }
        });
        fired
    }

    /// Sleeps on the state (a futex) until woken, for at most `timeout` (called sleeping).
    fn park(&self, timeout: Option<Duration>) {
        let state = &self.signal.state;
        if state
            .compare_exchange(SLEEPING, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Woken meanwhile.
            return;
        }
        // A timeout too long for the kernel is no timeout.
        let ts = timeout.and_then(|t| futex::Timespec::try_from(t).ok());
        // Returns at a wake-up, at the timeout, or at once if woken before it slept (the state
        // is no longer `PARKED`); a spurious return is another turn of the caller's loop.
        let _ = futex::wait(state, futex::Flags::PRIVATE, PARKED, ts.as_ref());
    }

    /// One `poll(2)` on the descriptors of `armed` and the eventfd, for at most `timeout`;
    /// marks in `ready` the entries whose descriptor is ready.
    fn sleep(&self, armed: &[(Arc<Interest>, u64)], timeout: Option<Duration>, ready: &mut [bool]) {
        let bell = self.signal.fd.as_ref().map(AsFd::as_fd);
        let timeout = match bell {
            Some(_) => timeout,
            None => Some(timeout.map_or(SLICE_WITHOUT_EVENTFD, |t| t.min(SLICE_WITHOUT_EVENTFD))),
        };
        let ts = timeout.and_then(|t| Timespec::try_from(t).ok());
        let watched = || {
            armed
                .iter()
                .enumerate()
                .filter_map(|(j, (i, _))| i.fd().map(|fd| (j, fd.as_fd(), i.events())))
        };
        let n = watched().count() + usize::from(bell.is_some());
        // The array's slots past `n` repeat a descriptor with no events (and are not passed).
        let Some(filler) = bell.or_else(|| watched().next().map(|(_, fd, _)| fd)) else {
            if let Some(t) = timeout {
                std::thread::sleep(t);
            }
            return;
        };
        let mut entries = watched()
            .map(|(_, fd, events)| (fd, events))
            .chain(bell.map(|b| (b, PollFlags::IN)));
        let mut next = || {
            let (fd, events) = entries.next().unwrap_or((filler, PollFlags::empty()));
            PollFd::from_borrowed_fd(fd, events)
        };
        let mut inline: [PollFd<'_>; INLINE_POLL];
        let mut heap: Vec<PollFd<'_>>;
        let fds: &mut [PollFd<'_>] = if n <= INLINE_POLL {
            inline = std::array::from_fn(|_| next());
            // Only the first `n` (the kernel polls every entry).
            &mut inline[..n]
        } else {
            heap = (0..n).map(|_| next()).collect();
            &mut heap
        };
        match poll(fds, ts.as_ref()) {
            Ok(_) => {
                for (k, (j, _, _)) in watched().enumerate() {
                    ready[j] = !fds[k].revents().is_empty();
                }
                if let Some(b) = bell
                    && !fds[n - 1].revents().is_empty()
                {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(b, &mut count);
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            // Out of memory for the poll: wait a moment rather than spin.
            Err(_) => std::thread::sleep(SLICE_WITHOUT_EVENTFD),
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let Some(mut frame) = FRAMES.with(|f| f.borrow_mut().pop()) else {
            return;
        };
        for (interest, generation) in frame.armed.drain(..) {
            interest.adopt(self.number, generation);
        }
        for waker in frame.yields.drain(..) {
            watcher::defer(waker);
        }
        let spare = Spare {
            signal: self.signal.clone(),
            waker: self.waker.clone(),
            armed: frame.armed,
            ready: frame.ready,
            wake: frame.wake,
            yields: frame.yields,
        };
        SPARE.with(|s| s.borrow_mut().push(spare));
    }
}

/// A timer due this far off or later is armed with the watcher, not in a frame (see
/// [`Interest::arm_timer`]).
const FAR_TIMER: Duration = Duration::from_millis(100);

/// Descriptors a frame's `poll(2)` takes without allocating (more take a vector).
const INLINE_POLL: usize = 8;

/// Stops a task's `block_on` from another thread ([`run`]): its future is dropped at its next
/// wait.
#[derive(Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    /// The waker of the frame running the task, once it runs.
    waker: Mutex<Option<Waker>>,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Runs `future` to completion on the calling thread: between polls the thread waits, in one
/// `poll(2)`, for what the future waits on (descriptors, instants) and for a wake-up from
/// another thread; no other thread is in between. Calls may nest (a blocking call inside a
/// task).
pub fn block_on<F: Future>(future: F) -> F::Output {
    match run(future, None) {
        Some(v) => v,
        None => unreachable!("a block_on with no stop ends only with its future"),
    }
}

/// Runs `future` on this thread until it completes (`Some`) or `stop` is raised (`None`, the
/// future dropped).
pub(crate) fn run<F: Future>(future: F, stop: Option<&Stop>) -> Option<F::Output> {
    let frame = Entered::new();
    if let Some(s) = stop {
        *s.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(frame.waker.clone());
    }
    let mut future = pin!(future);
    let mut cx = Context::from_waker(&frame.waker);
    loop {
        if stop.is_some_and(Stop::is_stopped) {
            return None;
        }
        frame.signal.state.swap(IDLE, Ordering::Acquire);
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Some(v);
        }
        frame.resume_yields();
        frame.spin();
        // Sleep until woken (a yield is woken at once): an interest that fires wakes the
        // future's waker, which is often this frame's; one that was armed here but moved on
        // (stale) only shrinks the set this frame sleeps on.
        while frame
            .signal
            .state
            .compare_exchange(IDLE, SLEEPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // It leaves the state idle, or notified if woken.
            frame.wait(true);
            if stop.is_some_and(Stop::is_stopped) {
                return None;
            }
        }
    }
}
