//! [`TestRuntime`]: a [`Runtime`] with a virtual clock and a single-threaded executor owned by
//! the test, so that everything the async layer does with time — call deadlines, heartbeats,
//! drain and flush deadlines, idle and frame deadlines — is tested exactly and at once, with no
//! real sleep and no thread (after quinn-proto's test `Pair`, whose time jumps to the next
//! deadline, and tokio's paused clock).
//!
//! Enabled by the `test-util` feature.
//!
//! - Time stands still while anything can run. [`block_on`](TestRuntime::block_on) runs its
//!   future and the spawned tasks; when every one of them waits, it moves the clock to the
//!   next timer's instant, so a test that waits 30 s of virtual time takes microseconds.
//! - [`advance`](TestRuntime::advance) moves the clock by hand, stopping at each timer's
//!   instant on the way and running what that wakes there;
//!   [`run_until_stalled`](TestRuntime::run_until_stalled) runs tasks without moving it.
//! - Tasks run in the order they were woken, on the thread that drives the runtime: every run
//!   of a test takes the same steps. The in-process transports
//!   ([`ChannelFrameTransport`](crate::ChannelFrameTransport),
//!   [`ArcFrameTransport`](crate::ArcFrameTransport)) are a mutex and wakers, so a client and
//!   a server talk over them on this runtime alone.
//!
//! ```
//! use std::time::Duration;
//! use xrpc_async::testing::TestRuntime;
//!
//! let rt = TestRuntime::new();
//! let slept = rt.block_on(async {
//!     let before = rt.elapsed();
//!     rt.sleep(Duration::from_secs(30)).await;
//!     rt.elapsed() - before
//! });
//! assert_eq!(slept, Duration::from_secs(30)); // exactly, and at once
//! ```

mod clock;
mod executor;

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

pub use clock::TestTimer;
use clock::{Clock, SharedClock, lock};
use executor::Executor;
pub use executor::TestTask;

use crate::runtime::{Runtime, Task};

/// A runtime with a virtual clock and an executor that runs only when the test drives it.
///
/// Clones share the clock and the tasks. `TestRuntime::default()` is the runtime of the
/// calling thread's [`block_on`](Self::block_on) (or [`enter`](Self::enter)) — so the
/// constructors that take no runtime (`RpcClient::new`) work inside one — and panics
/// elsewhere; [`new`](Self::new) makes a fresh one.
#[derive(Debug, Clone)]
pub struct TestRuntime {
    clock: SharedClock,
    executor: Arc<Executor>,
}

thread_local! {
    /// The runtimes entered on this thread, innermost last.
    static CURRENT: RefCell<Vec<TestRuntime>> = const { RefCell::new(Vec::new()) };
}

impl Default for TestRuntime {
    fn default() -> Self {
        Self::current()
            .expect("TestRuntime::default() outside TestRuntime::block_on or enter: pass the runtime itself (RpcClient::with_runtime, RpcServer::with_runtime)")
    }
}

impl TestRuntime {
    /// A fresh runtime: virtual time starts at a real instant read once, and moves only when
    /// the runtime is driven.
    pub fn new() -> Self {
        Self {
            clock: Arc::new(Mutex::new(Clock::new())),
            executor: Arc::new(Executor::default()),
        }
    }

    /// The runtime entered on this thread, if any (see [`enter`](Self::enter)).
    pub fn current() -> Option<Self> {
        CURRENT.with(|c| c.borrow().last().cloned())
    }

    /// Makes this the runtime of the calling thread until the guard is dropped (what
    /// `TestRuntime::default()` gives). [`block_on`](Self::block_on),
    /// [`advance`](Self::advance) and [`run_until_stalled`](Self::run_until_stalled) enter it
    /// themselves.
    pub fn enter(&self) -> EnterGuard {
        CURRENT.with(|c| c.borrow_mut().push(self.clone()));
        EnterGuard(PhantomData)
    }

    /// Virtual time since this runtime was made.
    pub fn elapsed(&self) -> Duration {
        let c = lock(&self.clock);
        c.now - c.start
    }

    /// The instant the next timer waits for, if one is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.clock).next_deadline()
    }

    /// Completes `d` of virtual time from now.
    pub fn sleep(&self, d: Duration) -> TestTimer {
        self.timer(self.now() + d)
    }

    /// Runs `future` as a task and returns a handle that gives its output.
    pub fn spawn_with_handle<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let done = Arc::new(Mutex::new(Done {
            output: None,
            waiter: None,
        }));
        let d = done.clone();
        let task = self.spawn(async move {
            let output = future.await;
            let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
            d.output = Some(output);
            if let Some(w) = d.waiter.take() {
                w.wake();
            }
        });
        JoinHandle { task, done }
    }

    /// Runs the tasks that can run, and those they wake, until every task waits; the clock
    /// does not move. Returns whether any task ran.
    pub fn run_until_stalled(&self) -> bool {
        let _enter = self.enter();
        let mut ran = false;
        while self.executor.run_queued() {
            ran = true;
        }
        ran
    }

    /// Moves the clock `d` forward: to each timer's instant on the way in turn, running what
    /// it wakes there (until stalled), then to `now + d`. A deadline that falls inside `d` is
    /// thus handled at its own instant, not at the end.
    pub fn advance(&self, d: Duration) {
        let target = self.now() + d;
        loop {
            self.run_until_stalled();
            match self.next_deadline() {
                Some(at) if at <= target => self.set_clock(at),
                _ => break,
            }
        }
        self.set_clock(target);
        self.run_until_stalled();
    }

    /// Runs until every task waits, then moves the clock to the next timer's instant and
    /// runs what that wakes (quinn-proto's `Pair` stepping to its next timeout). Returns the
    /// new time, or `None` when no timer is armed (nothing will ever happen again).
    pub fn advance_to_next_deadline(&self) -> Option<Instant> {
        self.run_until_stalled();
        let at = self.next_deadline()?;
        self.set_clock(at);
        self.run_until_stalled();
        Some(at)
    }

    /// Tasks spawned and not finished.
    pub fn live_tasks(&self) -> usize {
        self.executor.live_tasks()
    }

    /// Runs `future` to completion, and the spawned tasks with it. Whenever neither it nor any
    /// task can run, the clock jumps to the next timer's instant. Its future is polled after
    /// the tasks it or a timer woke have run until they wait: what it sees after a wake-up is
    /// everything that happened at that instant.
    ///
    /// # Panics
    /// When nothing can run and no timer is armed (the future would never complete), and when
    /// a task panics.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = self.enter();
        let woken = Arc::new(Flag(AtomicBool::new(true)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if self.executor.run_queued() {
                continue;
            }
            if woken.0.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                    return v;
                }
                continue;
            }
            match self.next_deadline() {
                Some(at) => self.set_clock(at),
                None => panic!(
                    "TestRuntime::block_on stalled at {:?} of virtual time: its future and all {} tasks wait, and no timer is armed",
                    self.elapsed(),
                    self.live_tasks()
                ),
            }
        }
    }

    /// Moves the clock to `at` and wakes the timers due.
    fn set_clock(&self, at: Instant) {
        let due = lock(&self.clock).set(at);
        for w in due {
            w.wake();
        }
    }
}

/// Leaves a runtime entered with [`TestRuntime::enter`] (on the thread that entered it: the
/// guard cannot be sent to another).
#[derive(Debug)]
pub struct EnterGuard(PhantomData<*const ()>);

impl Drop for EnterGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

/// The wake-up mark of [`TestRuntime::block_on`]'s future.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

impl Runtime for TestRuntime {
    type Timer = TestTimer;
    type Task = TestTask;

    fn spawn<F>(&self, future: F) -> TestTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TestTask {
            id: self.executor.spawn(Box::pin(future)),
            executor: Arc::downgrade(&self.executor),
        }
    }

    fn timer(&self, at: Instant) -> TestTimer {
        TestTimer::new(&self.clock, at)
    }

    fn now(&self) -> Instant {
        lock(&self.clock).now
    }
}

/// A task spawned with [`TestRuntime::spawn_with_handle`]: awaiting it gives the task's
/// output; dropping it leaves the task running.
#[derive(Debug)]
pub struct JoinHandle<T> {
    task: TestTask,
    done: Arc<Mutex<Done<T>>>,
}

#[derive(Debug)]
struct Done<T> {
    output: Option<T>,
    waiter: Option<Waker>,
}

impl<T> JoinHandle<T> {
    /// Stops the task at its next await point (its future is dropped when the runtime next
    /// runs); awaiting the handle afterwards never completes.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished and left its output.
    pub fn is_finished(&self) -> bool {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .output
            .is_some()
    }

    /// The task's output, if it has finished (taken: a second call gives `None`).
    pub fn try_take(&self) -> Option<T> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .output
            .take()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut d = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        match d.output.take() {
            Some(v) => Poll::Ready(v),
            None => {
                d.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
