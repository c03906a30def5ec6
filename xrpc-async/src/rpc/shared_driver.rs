//! A client connection's driver future, shared by its task and by the calls that wait on it:
//! **the waiting call drives the connection**.
//!
//! A unary call that waits for its answer polls the driver itself, on its own thread, when no
//! one else is polling it: its request is written and its answer read without a hand-off to
//! the driver task (a wake-up, often across threads, each way). The driver task is the
//! fallback that drives whenever no call does. The rules:
//! - the driver is always polled with one waker, [`Wakes`]: what it waits on (the transport,
//!   its timer) wakes the call that drove it last — or the task when no call holds that seat,
//!   or when the call was woken already and has not been polled since (a call future held
//!   without being polled stalls nobody beyond one wake-up);
//! - a waiting call that polls while the driver is free takes the seat while it is the only
//!   call in flight (calls in flight together are left to the task, which batches them) — in
//!   a task of the runtime as well as outside one (on tokio's multi-thread runtime that is one
//!   task schedule per call fewer than handing the request to the driver task; see
//!   `docs/BENCHMARKS.md`, last section);
//! - everyone else who needs the driver (a new notification, a stream, a cancel, a call that
//!   found the driver busy) wakes the task ([`SharedDriver::kick`]); a task that found the
//!   driver busy is woken again by whoever held it;
//! - a call that leaves the seat wakes the task if a wake-up came since the driver's last poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// The boxed driver future.
type DriverFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Who gets woken when the driver can make progress.
#[derive(Default)]
struct Wakers {
    /// The driver task.
    task: Option<Waker>,
    /// The call driving now (its id and waker), if one does.
    caller: Option<(u64, Waker)>,
    /// The caller was woken and has not been polled since.
    caller_woken: bool,
}

/// The one waker the driver future is polled with.
#[derive(Default)]
struct Wakes {
    wakers: Mutex<Wakers>,
    /// Woken since the driver was last polled.
    pending: AtomicBool,
    /// The task found the driver busy (a call was polling it).
    task_missed: AtomicBool,
}

impl Wakes {
    fn lock(&self) -> MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_task(&self) {
        let task = self.lock().task.clone();
        if let Some(t) = task {
            t.wake();
        }
    }
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.pending.store(true, Ordering::Release);
        let mut w = self.lock();
        let caller = match &w.caller {
            Some((_, c)) if !w.caller_woken => Some(c.clone()),
            _ => None,
        };
        let target = match caller {
            Some(c) => {
                w.caller_woken = true;
                c
            }
            None => match &w.task {
                Some(t) => t.clone(),
                None => return,
            },
        };
        drop(w);
        target.wake();
    }
}

/// A driver future that its task and waiting calls take turns to poll.
pub(crate) struct SharedDriver {
    future: Mutex<Option<DriverFuture>>,
    wakes: Arc<Wakes>,
    waker: Waker,
    /// The task is gone (aborted, its runtime shut down): the driver is dropped by whoever
    /// holds it next, which ends the session (every waiting call gets its error).
    stopped: AtomicBool,
}

impl Default for SharedDriver {
    fn default() -> Self {
        let wakes = Arc::new(Wakes::default());
        Self {
            future: Mutex::new(None),
            waker: Waker::from(wakes.clone()),
            wakes,
            stopped: AtomicBool::new(false),
        }
    }
}

impl SharedDriver {
    /// Installs the driver future (once, when the client starts).
    pub(crate) fn install(&self, future: DriverFuture) {
        *self.future.lock().unwrap_or_else(PoisonError::into_inner) = Some(future);
    }

    /// Polls the driver if it is free; `true` if it was polled (or is over).
    fn poll_driver(&self) -> bool {
        let Ok(mut slot) = self.future.try_lock() else {
            return false;
        };
        self.poll_locked(&mut slot);
        true
    }

    /// Polls the driver in `slot`; drops it when it is over or stopped.
    fn poll_locked(&self, slot: &mut Option<DriverFuture>) {
        self.wakes.pending.store(false, Ordering::Release);
        let stopped = || self.stopped.load(Ordering::Acquire);
        let done = match slot.as_mut() {
            Some(f) if !stopped() => f
                .as_mut()
                .poll(&mut Context::from_waker(&self.waker))
                .is_ready(),
            Some(_) => true,
            None => return,
        };
        if done || stopped() {
            // Dropping it ends the session (its drop guard fails every waiting call).
            drop(slot.take());
            // The task learns that the driver is over.
            self.wakes.wake_task();
        }
    }

    /// The driver task's body: polls the driver whenever no call is polling it, until it
    /// ends. Dropping this future (abort, runtime shutdown) stops the driver.
    pub(crate) async fn run(self: Arc<Self>) {
        let stop = StopOnDrop(&self);
        std::future::poll_fn(|cx| {
            {
                let mut w = self.wakes.lock();
                if !w.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    w.task = Some(cx.waker().clone());
                }
            }
            if !self.poll_driver() {
                // A call is polling it: it wakes us again when its poll is over.
                self.wakes.task_missed.store(true, Ordering::Release);
                // It may have finished in between: then nobody would.
                if !self.poll_driver() {
                    return Poll::Pending;
                }
                self.wakes.task_missed.store(false, Ordering::Release);
            }
            let over = self.future.try_lock().is_ok_and(|slot| slot.is_none());
            if over { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        drop(stop);
    }

    /// Wakes the driver task: someone other than the driving call has work for the driver.
    pub(crate) fn kick(&self) {
        self.wakes.pending.store(true, Ordering::Release);
        self.wakes.wake_task();
    }

    /// Waiting call `id` (polled with `cx`), the only call in flight, polls the driver if no
    /// one else is polling it, and takes the seat (it must [`leave`](Self::leave) it when it
    /// has its answer). Calls in flight together leave the driver to the task (which
    /// writes their requests in one batch) and [`vacate`](Self::vacate) the seat.
    pub(crate) fn drive_from(&self, id: u64, cx: &Context<'_>) {
        let Ok(mut slot) = self.future.try_lock() else {
            // Busy: our request is written by whoever polls it (the task, if no call).
            self.kick();
            return;
        };
        {
            let mut w = self.wakes.lock();
            match &mut w.caller {
                Some((c, waker)) if *c == id => {
                    if !waker.will_wake(cx.waker()) {
                        *waker = cx.waker().clone();
                    }
                }
                other => *other = Some((id, cx.waker().clone())),
            }
            w.caller_woken = false;
        }
        self.poll_locked(&mut slot);
        drop(slot);
        if self.wakes.task_missed.swap(false, Ordering::AcqRel) {
            self.wakes.wake_task();
        }
    }

    /// The call that drove is done: the task drives from now on (woken if a wake-up came
    /// since the driver was last polled).
    pub(crate) fn leave(&self, id: u64) {
        {
            let mut w = self.wakes.lock();
            if w.caller.as_ref().is_none_or(|(c, _)| *c != id) {
                return;
            }
            w.caller = None;
            w.caller_woken = false;
        }
        if self.wakes.pending.swap(false, Ordering::AcqRel) {
            self.wakes.wake_task();
        }
    }

    /// Empties the seat: wake-ups go to the task from now on. Returns whether a call held it.
    pub(crate) fn vacate(&self) -> bool {
        let mut w = self.wakes.lock();
        w.caller_woken = false;
        w.caller.take().is_some()
    }

    /// Stops the driver now (see [`StopOnDrop`]).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        // Dropped now if free; else by whoever is polling it, when its poll returns.
        self.poll_driver();
    }
}

/// Stops the driver when the task's future is dropped before the driver ended.
struct StopOnDrop<'a>(&'a SharedDriver);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}
