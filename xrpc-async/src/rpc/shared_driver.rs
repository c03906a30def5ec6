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
//!   `docs/benchmarks/history.md`, "Third pass");
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

/// What a waiting call that has no outcome yet does with its waker.
pub(crate) enum Wait<'a, 'b> {
    /// Leaves it (woken when the outcome comes).
    Leave(&'a Context<'b>),
    /// Withdraws it (the caller looks again itself).
    Withdraw,
}

/// What a waiting call found when it looked.
pub(crate) enum Look<T> {
    /// Its outcome.
    Ready(T),
    /// None yet; `alone` if it is the only call in flight.
    Pending { alone: bool },
}

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

    /// Polls waiting call `id` (with `cx`): the whole "a waiting call drives the connection"
    /// rule, in one place. `look` tells the call's outcome, if it has one, under the
    /// connection's lock, and says what to do with the call's waker if not; `output_queued`
    /// is [`ConnectionCore::output_queued`](super::driver::ConnectionCore::output_queued).
    ///
    /// The outcome is first looked for with the waker withdrawn: an answer that this poll's
    /// own drive finds needs no wake-up (which would only poll the call once more for
    /// nothing). Then the call drives the connection itself if it is the only one in flight;
    /// calls in flight together leave the driver to its task, which writes their requests in
    /// one batch — one wake-up per batch, and one whenever a call gives up the seat, since
    /// wake-ups meant for the driver (a write it put off for the batch) may have come to it.
    /// Last, the outcome is looked for again with the waker left, before an answer found by
    /// anyone else could be missed.
    pub(crate) fn poll_wait<T>(
        &self,
        id: u64,
        cx: &Context<'_>,
        mut look: impl FnMut(Wait<'_, '_>) -> Look<T>,
        output_queued: impl FnOnce() -> bool,
    ) -> Poll<T> {
        match look(Wait::Withdraw) {
            Look::Ready(v) => {
                self.leave(id);
                return Poll::Ready(v);
            }
            Look::Pending { alone: true } => self.drive_from(id, cx),
            Look::Pending { alone: false } => {
                let queued = output_queued();
                if self.vacate() | queued {
                    self.kick();
                }
            }
        }
        match look(Wait::Leave(cx)) {
            Look::Ready(v) => {
                self.leave(id);
                Poll::Ready(v)
            }
            Look::Pending { .. } => Poll::Pending,
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A driver future that counts its polls and keeps the waker it was polled with (as the
    /// transport would), so the test can wake "the transport".
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        waker: Mutex<Option<Waker>>,
        done: AtomicBool,
    }

    fn install(driver: &SharedDriver, probe: &Arc<Probe>) {
        let p = probe.clone();
        driver.install(Box::pin(std::future::poll_fn(move |cx| {
            p.polls.fetch_add(1, Ordering::SeqCst);
            *p.waker.lock().unwrap() = Some(cx.waker().clone());
            if p.done.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })));
    }

    /// A call's context, and the counter of its wake-ups.
    fn call_cx() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    /// The task's waker registered as the driver task's `run` would.
    fn set_task(driver: &SharedDriver) -> Arc<Count> {
        let count = Arc::new(Count::default());
        driver.wakes.lock().task = Some(Waker::from(count.clone()));
        count
    }

    fn pending(alone: bool) -> impl FnMut(Wait<'_, '_>) -> Look<()> {
        move |_| Look::Pending { alone }
    }

    #[test]
    fn a_lone_waiting_call_polls_the_driver_itself() {
        let driver = SharedDriver::default();
        let probe = Arc::new(Probe::default());
        install(&driver, &probe);
        let task = set_task(&driver);
        let (_, waker) = call_cx();
        let cx = Context::from_waker(&waker);
        assert!(
            driver
                .poll_wait(1, &cx, pending(true), || true)
                .is_pending()
        );
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1, "the call drove");
        assert_eq!(task.get(), 0, "no hand-off to the task");
    }

    #[test]
    fn calls_in_flight_together_leave_the_driver_to_the_task() {
        let driver = SharedDriver::default();
        let probe = Arc::new(Probe::default());
        install(&driver, &probe);
        let task = set_task(&driver);
        let (_, waker) = call_cx();
        let cx = Context::from_waker(&waker);
        // Output queued with no wake-up due: the task is woken once, for the batch.
        assert!(
            driver
                .poll_wait(1, &cx, pending(false), || true)
                .is_pending()
        );
        assert_eq!(probe.polls.load(Ordering::SeqCst), 0);
        assert_eq!(task.get(), 1);
        // A wake-up is due already: none more.
        assert!(
            driver
                .poll_wait(2, &cx, pending(false), || false)
                .is_pending()
        );
        assert_eq!(task.get(), 1);
    }

    #[test]
    fn the_driving_call_is_woken_for_the_transport_then_the_task_once_it_leaves() {
        let driver = SharedDriver::default();
        let probe = Arc::new(Probe::default());
        install(&driver, &probe);
        let task = set_task(&driver);
        let (call, waker) = call_cx();
        let cx = Context::from_waker(&waker);
        assert!(
            driver
                .poll_wait(1, &cx, pending(true), || true)
                .is_pending()
        );
        let transport = probe.waker.lock().unwrap().clone().unwrap();
        transport.wake_by_ref();
        assert_eq!((call.get(), task.get()), (1, 0), "the seated call is woken");
        // Woken and not polled since: a second wake-up goes to the task, so a call future
        // held without being polled stalls nobody.
        transport.wake_by_ref();
        assert_eq!((call.get(), task.get()), (1, 1));
        // The call has its answer and leaves; a wake-up since the driver's last poll goes to
        // the task.
        let ready = driver.poll_wait(1, &cx, |_| Look::Ready(7), || false);
        assert_eq!(ready, Poll::Ready(7));
        assert_eq!(task.get(), 2, "the pending wake-up went to the task");
        transport.wake_by_ref();
        assert_eq!(
            (call.get(), task.get()),
            (1, 3),
            "wake-ups go to the task now"
        );
    }

    #[test]
    fn the_outcome_found_by_the_calls_own_drive_needs_no_wake_up() {
        let driver = SharedDriver::default();
        let probe = Arc::new(Probe::default());
        install(&driver, &probe);
        set_task(&driver);
        let (call, waker) = call_cx();
        let cx = Context::from_waker(&waker);
        // Pending before the drive, ready after it (as if the drive read the answer).
        let mut looks = 0;
        let res = driver.poll_wait(
            1,
            &cx,
            |wait| {
                looks += 1;
                match (looks, wait) {
                    (1, Wait::Withdraw) => Look::Pending { alone: true },
                    (2, Wait::Leave(_)) => Look::Ready("answer"),
                    _ => panic!("looked in the wrong order"),
                }
            },
            || false,
        );
        assert_eq!(res, Poll::Ready("answer"));
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        assert_eq!(call.get(), 0);
    }

    #[test]
    fn a_stopped_driver_is_dropped_by_whoever_polls_it_next() {
        let driver = SharedDriver::default();
        let probe = Arc::new(Probe::default());
        install(&driver, &probe);
        let task = set_task(&driver);
        driver.stop();
        assert!(
            driver.future.lock().unwrap().is_none(),
            "dropped at once when free"
        );
        assert_eq!(task.get(), 1, "the task learns the driver is over");
        assert_eq!(probe.polls.load(Ordering::SeqCst), 0, "never polled again");
    }
}
