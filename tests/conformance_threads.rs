//! The conformance suite ([`conformance`]) on a runtime of plain threads, with no executor
//! library: each task runs on a thread of its own under a parking `block_on`, timers are woken
//! by one timer thread. This is the runtime a blocking adapter brings to the suite (see the
//! suite's module documentation); here it runs over the in-process transports of `xrpc-async`,
//! which need no runtime (a mutex and wakers). It also shows the
//! bodies depend on nothing of tokio.

mod conformance;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use conformance::{ArcT, Channel};
use xrpc_async::{Runtime, Task, Timer};

conformance::suite! {
    channel => Channel, Threads, block_on;
    arc => ArcT, Threads, block_on;
}

/// Polls `future` on this thread, parking between wake-ups, until it completes or `stop` says
/// so.
fn run<F: Future>(future: F, stop: impl Fn() -> bool) -> Option<F::Output> {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if stop() {
            return None;
        }
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Some(v);
        }
        thread::park();
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    run(future, || false).expect("never stopped")
}

/// A runtime of threads: one per task.
#[derive(Debug, Clone, Copy, Default)]
struct Threads;

/// A task's thread, and the flag that stops it.
struct ThreadTask {
    thread: Thread,
    aborted: Arc<AtomicBool>,
}

impl Task for ThreadTask {
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Fires at `at`; it asks the timer thread to wake it, once per instant and waker.
struct ThreadTimer {
    at: Instant,
    armed: Option<(Instant, Waker)>,
}

impl Future for ThreadTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let at = self.at;
        let armed = matches!(&self.armed, Some((t, w)) if *t == at && w.will_wake(cx.waker()));
        if !armed {
            wake_at(at, cx.waker().clone());
            self.armed = Some((at, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Timer for ThreadTimer {
    fn reset(&mut self, at: Instant) {
        self.at = at;
    }
}

impl Runtime for Threads {
    type Timer = ThreadTimer;
    type Task = ThreadTask;

    fn spawn<F>(&self, future: F) -> ThreadTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let aborted = Arc::new(AtomicBool::new(false));
        let stop = aborted.clone();
        let handle = thread::Builder::new()
            .name("xrpc-task".into())
            .spawn(move || {
                run(future, || stop.load(Ordering::SeqCst));
            })
            .expect("a thread for the task");
        ThreadTask {
            thread: handle.thread().clone(),
            aborted,
        }
    }

    fn timer(&self, at: Instant) -> ThreadTimer {
        ThreadTimer { at, armed: None }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A wake-up the timer thread owes: at an instant (ties in order of arrival).
struct Due(Instant, u64, Waker);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

struct Timers {
    due: Mutex<BinaryHeap<Reverse<Due>>>,
    changed: Condvar,
    seq: AtomicU64,
}

/// Has the timer thread (started on first use) wake `waker` at `at`.
fn wake_at(at: Instant, waker: Waker) {
    static TIMERS: OnceLock<Arc<Timers>> = OnceLock::new();
    let timers = TIMERS.get_or_init(|| {
        let timers = Arc::new(Timers {
            due: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
            seq: AtomicU64::new(0),
        });
        let t = timers.clone();
        thread::Builder::new()
            .name("xrpc-timers".into())
            .spawn(move || {
                let mut due = t.due.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    let now = Instant::now();
                    match due.peek() {
                        Some(Reverse(d)) if d.0 <= now => {
                            let Reverse(Due(_, _, waker)) = due.pop().expect("peeked");
                            waker.wake();
                        }
                        Some(Reverse(d)) => {
                            let wait = d.0 - now;
                            due = t
                                .changed
                                .wait_timeout(due, wait)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        None => {
                            due = t.changed.wait(due).unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                }
            })
            .expect("the timer thread");
        timers
    });
    let seq = timers.seq.fetch_add(1, Ordering::Relaxed);
    timers
        .due
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Reverse(Due(at, seq, waker)));
    timers.changed.notify_one();
}
