//! [`Smol`]: the [`Runtime`] and [`Reactor`] of the async layer on async-io — tasks on smol's
//! global executor, async-io's reactor, timers in it ([`SmolTimer`]: timer descriptors on
//! Linux, async-io's timers elsewhere). Works under any executor that lets async-io drive its
//! reactor (smol, async-std).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Async;
use xrpc_async::{Reactor, Registration, Runtime, Task, Timer, Watched};

/// The smol runtime: tasks go to `smol::spawn` (its global executor, which runs on its own
/// threads, so spawning works from any executor, async-std's included).
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

/// A timer on async-io's reactor, reset in place.
///
/// On Linux it is a timer descriptor (`timerfd`) the reactor watches, not a timer of
/// async-io's own: while async-io holds any timer, every turn of its reactor splits its timer
/// map (a `BTreeMap`), which allocates a node — a turn or two per call, each connection's
/// driver keeping a timer armed for its deadlines. A descriptor costs no allocation once made.
/// Where none can be made (another system, no descriptor left), the timer is async-io's.
#[derive(Debug)]
pub struct SmolTimer(Clock);

/// What a [`SmolTimer`] waits on.
#[derive(Debug)]
enum Clock {
    /// A timer descriptor.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Fd(fd::FdTimer),
    /// One of async-io's timers, and its instant (an async-io timer that fired stays pending
    /// when polled again; this one, like the descriptor, is ready from its instant on).
    Reactor(async_io::Timer, Instant),
}

impl Clock {
    /// One of async-io's timers, firing at `at`.
    fn reactor(at: Instant) -> Self {
        Clock::Reactor(async_io::Timer::at(at), at)
    }
}

impl SmolTimer {
    fn at(at: Instant) -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Ok(t) = fd::FdTimer::at(at) {
            return SmolTimer(Clock::Fd(t));
        }
        SmolTimer(Clock::reactor(at))
    }
}

impl Future for SmolTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Clock::Fd(t) => match t.poll(cx) {
                Ok(ready) => ready,
                // The descriptor failed (it should not): async-io's timer takes over.
                Err(at) => {
                    self.0 = Clock::reactor(at);
                    self.poll(cx)
                }
            },
            Clock::Reactor(t, at) => {
                if Instant::now() >= *at {
                    return Poll::Ready(());
                }
                Pin::new(t).poll(cx).map(drop)
            }
        }
    }
}

impl Timer for SmolTimer {
    fn reset(&mut self, at: Instant) {
        match &mut self.0 {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Clock::Fd(t) => {
                if t.set(at).is_err() {
                    self.0 = Clock::reactor(at);
                }
            }
            Clock::Reactor(t, instant) => {
                t.set_at(at);
                *instant = at;
            }
        }
    }
}

/// Timer descriptors (Linux's `timerfd`) in async-io's reactor.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod fd {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use async_io::Async;
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };

    /// A one-shot timer descriptor on the monotonic clock (`Instant`'s), and its instant.
    #[derive(Debug)]
    pub(super) struct FdTimer {
        fd: Async<OwnedFd>,
        at: Instant,
    }

    impl FdTimer {
        /// A descriptor that fires at `at`.
        pub(super) fn at(at: Instant) -> io::Result<Self> {
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            let mut t = FdTimer {
                fd: Async::new_nonblocking(fd)?,
                at,
            };
            t.set(at)?;
            Ok(t)
        }

        /// Fires at `at` instead (setting the time also clears an expiry not yet seen: the
        /// descriptor is readable again only at `at`).
        pub(super) fn set(&mut self, at: Instant) -> io::Result<()> {
            self.at = at;
            // Relative to now; at least a nanosecond, zero disarming the timer. (A wait too long
            // for a `timespec` — none an `Instant` reaches — would be the longest it holds.)
            let wait = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
            let it_value = Timespec::try_from(wait).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let spec = Itimerspec {
                it_interval: zero,
                it_value,
            };
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            Ok(())
        }

        /// Ready once the instant has come (and whenever polled after); `Err(at)` if the
        /// reactor could not watch the descriptor.
        pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Result<Poll<()>, Instant> {
            loop {
                // The clock first: a timer due now (or already fired) needs no reactor turn.
                if Instant::now() >= self.at {
                    return Ok(Poll::Ready(()));
                }
                // Readable: the descriptor fired, or an expiry cleared by `set` since was
                // reported; the clock tells which (the latter waits again).
                match self.fd.poll_readable(cx) {
                    Poll::Pending => return Ok(Poll::Pending),
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Err(self.at),
                }
            }
        }
    }
}

/// A spawned task: detached when dropped (it runs on), cancelled by [`Task::abort`].
#[derive(Debug)]
pub struct SmolTask(Mutex<Option<smol::Task<()>>>);

impl Task for SmolTask {
    fn abort(&self) {
        // Dropping a smol task cancels it.
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

impl Drop for SmolTask {
    fn drop(&mut self) {
        let task = self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.detach();
        }
    }
}

impl Runtime for Smol {
    type Timer = SmolTimer;
    type Task = SmolTask;

    fn spawn<F>(&self, future: F) -> SmolTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        SmolTask(Mutex::new(Some(smol::spawn(future))))
    }

    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer::at(at)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unblock<T, F>(&self, work: F) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // smol's pool for blocking work (the `blocking` crate's); a panic is `None`.
        smol::unblock(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok())
    }
}

/// A descriptor watched by async-io's reactor.
#[derive(Debug)]
pub struct SmolRegistration(Async<Watched>);

impl Registration for SmolRegistration {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.readable()
    }
}

impl Reactor for Smol {
    type Registration = SmolRegistration;

    fn register(&self, fd: Watched) -> io::Result<SmolRegistration> {
        // Only readiness is ever asked of it, never a read: the descriptor's own mode stays.
        Async::new_nonblocking(fd).map(SmolRegistration)
    }

    fn yield_now(&self) -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_lite::future::poll_once;

    use super::*;

    /// A timer of the runtime, as the connection drivers make them.
    fn timer(at: Instant) -> SmolTimer {
        Smol.timer(at)
    }

    /// Awaits `t`, failing the test if it has not fired within 5 s.
    async fn fires(t: &mut SmolTimer) {
        let fired = futures_lite::future::or(
            async {
                t.await;
                true
            },
            async {
                async_io::Timer::after(Duration::from_secs(5)).await;
                false
            },
        );
        assert!(fired.await, "the timer did not fire within 5 s");
    }

    #[test]
    fn a_timer_fires_at_its_instant_not_before() {
        smol::block_on(async {
            let start = Instant::now();
            let at = start + Duration::from_millis(30);
            fires(&mut timer(at)).await;
            assert!(Instant::now() >= at);
        });
    }

    #[test]
    fn a_timer_in_the_past_fires_at_once() {
        smol::block_on(async {
            let mut t = timer(Instant::now());
            assert!(poll_once(&mut t).await.is_some());
        });
    }

    #[test]
    fn reset_moves_the_instant_either_way() {
        smol::block_on(async {
            let start = Instant::now();
            // Later: a timer already waited on waits on for the new instant.
            let mut t = timer(start + Duration::from_millis(10));
            let _ = poll_once(&mut t).await;
            let later = start + Duration::from_millis(60);
            t.reset(later);
            fires(&mut t).await;
            assert!(Instant::now() >= later);
            // Earlier: from an hour away to now.
            let mut t = timer(Instant::now() + Duration::from_secs(3600));
            let _ = poll_once(&mut t).await;
            let soon = Instant::now() + Duration::from_millis(10);
            t.reset(soon);
            fires(&mut t).await;
            assert!(Instant::now() >= soon);
        });
    }

    #[test]
    fn a_fired_timer_reset_fires_again() {
        smol::block_on(async {
            let mut t = timer(Instant::now() + Duration::from_millis(5));
            fires(&mut t).await;
            // Far enough that a stalled test thread cannot reach it before the next poll.
            t.reset(Instant::now() + Duration::from_secs(60));
            assert!(
                poll_once(&mut t).await.is_none(),
                "the old expiry is not seen again"
            );
            let again = Instant::now() + Duration::from_millis(10);
            t.reset(again);
            fires(&mut t).await;
            assert!(Instant::now() >= again);
        });
    }

    #[test]
    fn a_timer_far_ahead_waits() {
        smol::block_on(async {
            // Centuries ahead: never fires in the test's time.
            let far = Instant::now() + Duration::from_secs(u64::MAX / 4);
            let mut t = timer(far);
            let waited = futures_lite::future::or(
                async {
                    (&mut t).await;
                    false
                },
                async {
                    async_io::Timer::after(Duration::from_millis(20)).await;
                    true
                },
            );
            assert!(waited.await);
        });
    }

    #[test]
    fn an_async_io_timer_is_ready_from_its_instant_on() {
        smol::block_on(async {
            let mut t = SmolTimer(Clock::reactor(Instant::now() + Duration::from_millis(5)));
            fires(&mut t).await;
            assert!(
                poll_once(&mut t).await.is_some(),
                "a fired timer is ready when polled again, as the descriptor is"
            );
            t.reset(Instant::now() + Duration::from_secs(60));
            assert!(poll_once(&mut t).await.is_none());
            t.reset(Instant::now() + Duration::from_millis(10));
            fires(&mut t).await;
        });
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn on_linux_a_timer_is_a_descriptor() {
        assert!(matches!(timer(Instant::now()).0, Clock::Fd(_)));
    }
}
