//! The virtual clock of a [`TestRuntime`](super::TestRuntime) and its timers: time stands
//! still until the harness moves it, and a timer completes when the clock reaches its instant.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::runtime::Timer;

/// Virtual time and the timers waiting on it.
#[derive(Debug)]
pub(super) struct Clock {
    /// Where virtual time started (a real instant, read once).
    pub(super) start: Instant,
    pub(super) now: Instant,
    /// Armed timers by (instant, timer id): the first key is the next deadline, and timers of
    /// one instant fire in the order they were made.
    armed: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Clock {
    pub(super) fn new() -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            armed: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The earliest instant a timer waits for.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.armed.keys().next().map(|&(at, _)| at)
    }

    /// Moves the clock to `at` (never back) and takes the wakers of the timers due by then,
    /// in order.
    pub(super) fn set(&mut self, at: Instant) -> Vec<Waker> {
        self.now = self.now.max(at);
        let later = self.armed.split_off(&(self.now, u64::MAX));
        std::mem::replace(&mut self.armed, later)
            .into_values()
            .collect()
    }
}

/// The clock as its timers share it.
pub(super) type SharedClock = Arc<Mutex<Clock>>;

pub(super) fn lock(clock: &Mutex<Clock>) -> MutexGuard<'_, Clock> {
    clock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A timer of a [`TestRuntime`](super::TestRuntime): completes once virtual time reaches its
/// instant.
#[derive(Debug)]
pub struct TestTimer {
    clock: SharedClock,
    id: u64,
    at: Instant,
    /// The instant under which its waker is armed in the clock, if it is.
    armed: Option<Instant>,
}

impl TestTimer {
    pub(super) fn new(clock: &SharedClock, at: Instant) -> Self {
        let id = {
            let mut c = lock(clock);
            c.next_id += 1;
            c.next_id
        };
        Self {
            clock: clock.clone(),
            id,
            at,
            armed: None,
        }
    }

    /// The instant it completes at.
    pub fn deadline(&self) -> Instant {
        self.at
    }
}

impl Future for TestTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut c = lock(&this.clock);
        if let Some(old) = this.armed.take() {
            c.armed.remove(&(old, this.id));
        }
        if c.now >= this.at {
            return Poll::Ready(());
        }
        c.armed.insert((this.at, this.id), cx.waker().clone());
        this.armed = Some(this.at);
        Poll::Pending
    }
}

impl Timer for TestTimer {
    fn reset(&mut self, at: Instant) {
        self.at = at;
        let mut c = lock(&self.clock);
        // An armed waker moves with the timer (it is woken at once if `at` has passed).
        let Some(waker) = self
            .armed
            .take()
            .and_then(|old| c.armed.remove(&(old, self.id)))
        else {
            return;
        };
        if c.now >= at {
            drop(c);
            waker.wake();
        } else {
            c.armed.insert((at, self.id), waker);
            self.armed = Some(at);
        }
    }
}

impl Drop for TestTimer {
    fn drop(&mut self) {
        if let Some(old) = self.armed.take() {
            lock(&self.clock).armed.remove(&(old, self.id));
        }
    }
}
