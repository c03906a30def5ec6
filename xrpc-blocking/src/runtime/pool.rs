//! The handler pool: the bounded threads that run a server's handlers (the tasks the async
//! layer starts with [`Runtime::spawn_handler`](xrpc_async::Runtime::spawn_handler)), shared
//! between connections in turn. A connection holds at most its share of the threads
//! ([`HandlerThreads::per_connection`]); its further handlers wait in its own queue, so one
//! connection whose handlers all block (streams to a client that never reads) cannot take the
//! pool from the others. Connections with handlers waiting take turns for free threads. A
//! thread is started when a handler has a turn and no thread is free, up to
//! [`HandlerThreads::max`]; an idle one ends after [`KEEP_ALIVE`]. The queues are bounded by
//! the sessions' limit on calls in progress (`ServerConfig::max_concurrent_calls`), and a
//! handler that is cancelled while it waits leaves its queue at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::wait::{Stop, run};

/// How long an idle handler thread waits for work before it ends.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How many threads a server's handlers may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerThreads {
    /// Threads running handlers at once, all connections together. Default 64.
    pub max: usize,
    /// Threads one connection's handlers may hold at once; its further handlers wait for one
    /// of them. Default 16.
    pub per_connection: usize,
}

impl Default for HandlerThreads {
    fn default() -> Self {
        Self {
            max: 64,
            per_connection: 16,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handler waiting for a thread.
struct Job {
    future: BoxFuture,
    stop: Arc<Stop>,
}

/// One connection's handlers in the pool.
#[derive(Default)]
struct Lane {
    running: usize,
    waiting: VecDeque<Job>,
    /// It is in the turns (it has handlers waiting and room in its share).
    in_turns: bool,
}

#[derive(Default)]
struct Threads {
    lanes: HashMap<u64, Lane>,
    /// Connections whose next handler may start, in turn.
    turns: VecDeque<u64>,
    threads: usize,
    /// Threads waiting for work, not counting those already woken for some.
    idle: usize,
    /// Idle threads woken for work that have not taken it yet.
    wakeups: usize,
}

/// The handler threads of one server.
pub(crate) struct HandlerPool {
    state: Mutex<Threads>,
    work: Condvar,
    max: AtomicUsize,
    per_connection: AtomicUsize,
}

impl std::fmt::Debug for HandlerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerPool")
            .field("max", &self.max.load(Ordering::Relaxed))
            .field(
                "per_connection",
                &self.per_connection.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl HandlerPool {
    pub(crate) fn new(limits: HandlerThreads) -> Self {
        let pool = Self {
            state: Mutex::default(),
            work: Condvar::new(),
            max: AtomicUsize::new(1),
            per_connection: AtomicUsize::new(1),
        };
        pool.set_limits(limits);
        pool
    }

    /// Changes the limits (at least one thread each) for the handlers started from now on.
    pub(crate) fn set_limits(&self, limits: HandlerThreads) {
        self.max.store(limits.max.max(1), Ordering::Relaxed);
        self.per_connection
            .store(limits.per_connection.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Threads> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `future`, a handler of connection `lane`, for a thread; `stop` ends it.
    pub(crate) fn spawn(self: &Arc<Self>, lane: u64, future: BoxFuture, stop: Arc<Stop>) {
        let mut st = self.lock();
        st.lanes
            .entry(lane)
            .or_default()
            .waiting
            .push_back(Job { future, stop });
        self.take_turn(&mut st, lane);
        if st.turns.is_empty() {
            return;
        }
        if st.idle > 0 {
            st.idle -= 1;
            st.wakeups += 1;
            self.work.notify_one();
            return;
        }
        if st.threads >= self.max.load(Ordering::Relaxed) {
            return;
        }
        st.threads += 1;
        drop(st);
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name("xrpc-handler".into())
            .spawn(move || pool.work());
        if started.is_err() {
            let mut st = self.lock();
            st.threads -= 1;
            if st.threads == 0 {
                // No thread could be started and none is left to run it: run it here.
                drop(st);
                self.work_once();
            }
        }
    }

    /// Puts `lane` in the turns if it has a handler waiting and room in its share.
    fn take_turn(&self, st: &mut Threads, lane: u64) {
        let share = self.per_connection.load(Ordering::Relaxed);
        let Some(l) = st.lanes.get_mut(&lane) else {
            return;
        };
        if !l.in_turns && !l.waiting.is_empty() && l.running < share {
            l.in_turns = true;
            st.turns.push_back(lane);
        }
    }

    /// The next handler to run, and its lane, if any has its turn.
    fn next(&self, st: &mut Threads) -> Option<(u64, Job)> {
        while let Some(lane) = st.turns.pop_front() {
            let Some(l) = st.lanes.get_mut(&lane) else {
                continue;
            };
            l.in_turns = false;
            let Some(job) = l.waiting.pop_front() else {
                continue;
            };
            l.running += 1;
            self.take_turn(st, lane);
            return Some((lane, job));
        }
        None
    }

    /// A handler of `lane` ended.
    fn done(&self, st: &mut Threads, lane: u64) {
        if let Some(l) = st.lanes.get_mut(&lane) {
            l.running -= 1;
            if l.running == 0 && l.waiting.is_empty() {
                st.lanes.remove(&lane);
            } else {
                self.take_turn(st, lane);
            }
        }
    }

    fn run_job(&self, lane: u64, job: Job) {
        let Job { future, stop } = job;
        // The async layer catches a handler's panic; one here ends only this handler.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| run(future, Some(&stop))));
        self.done(&mut self.lock(), lane);
    }

    /// A handler thread: runs handlers while any has its turn, then waits for one for at most
    /// [`KEEP_ALIVE`].
    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some((lane, job)) = self.next(&mut st) {
                drop(st);
                self.run_job(lane, job);
                st = self.lock();
                continue;
            }
            st.idle += 1;
            loop {
                let (guard, waited) = self
                    .work
                    .wait_timeout(st, KEEP_ALIVE)
                    .unwrap_or_else(PoisonError::into_inner);
                st = guard;
                if st.wakeups > 0 {
                    // Woken for work (the waker took this thread off the idle count).
                    st.wakeups -= 1;
                    break;
                }
                if waited.timed_out() {
                    st.idle -= 1;
                    if st.turns.is_empty() {
                        st.threads -= 1;
                        return;
                    }
                    break;
                }
            }
        }
    }

    /// Runs the handlers that have their turn on the calling thread.
    fn work_once(&self) {
        loop {
            let next = self.next(&mut self.lock());
            let Some((lane, job)) = next else {
                return;
            };
            self.run_job(lane, job);
        }
    }

    /// Drops the handler of `lane` that `stop` ends if it is still waiting (it was cancelled).
    pub(crate) fn forget(&self, lane: u64, stop: &Arc<Stop>) {
        let job = {
            let mut st = self.lock();
            let Some(l) = st.lanes.get_mut(&lane) else {
                return;
            };
            let Some(i) = l.waiting.iter().position(|j| Arc::ptr_eq(&j.stop, stop)) else {
                return;
            };
            let job = l.waiting.remove(i);
            if l.running == 0 && l.waiting.is_empty() {
                st.lanes.remove(&lane);
            }
            job
        };
        // Dropped outside the lock (a handler's future may take its connection's lock).
        drop(job);
    }

    /// Handlers waiting for a thread and handlers running, all connections together.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        st.lanes
            .values()
            .fold((0, 0), |(w, r), l| (w + l.waiting.len(), r + l.running))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// A handler that reports it started, then waits until `release` says go.
    fn job(
        started: &mpsc::Sender<u64>,
        release: &Arc<(Mutex<bool>, Condvar)>,
        tag: u64,
    ) -> BoxFuture {
        let (started, release) = (started.clone(), release.clone());
        Box::pin(async move {
            let _ = started.send(tag);
            let (lock, cv) = &*release;
            let mut go = lock.lock().unwrap();
            while !*go {
                go = cv.wait(go).unwrap();
            }
        })
    }

    fn wait_for(pool: &HandlerPool, want: (usize, usize)) {
        let t0 = Instant::now();
        while pool.counts() != want {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{:?}, expected {want:?}",
                pool.counts()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_connection_holds_at_most_its_share_and_others_get_their_turn() {
        let pool = Arc::new(HandlerPool::new(HandlerThreads {
            max: 4,
            per_connection: 2,
        }));
        let (tx, rx) = mpsc::channel();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        for tag in 0..5 {
            pool.spawn(1, job(&tx, &release, tag), Arc::new(Stop::default()));
        }
        // Connection 1 runs two; its other three wait.
        wait_for(&pool, (3, 2));
        // Connection 2 is served beside it.
        pool.spawn(2, job(&tx, &release, 100), Arc::new(Stop::default()));
        wait_for(&pool, (3, 3));
        let mut started: Vec<u64> = rx.try_iter().collect();
        started.sort_unstable();
        assert_eq!(started.len(), 3);
        assert!(started.contains(&100));
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        wait_for(&pool, (0, 0));
        assert_eq!(
            rx.try_iter().count(),
            3,
            "the waiting handlers ran in the end"
        );
    }

    #[test]
    fn a_cancelled_handler_leaves_the_queue_at_once() {
        let pool = Arc::new(HandlerPool::new(HandlerThreads {
            max: 4,
            per_connection: 1,
        }));
        let (tx, rx) = mpsc::channel();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        pool.spawn(7, job(&tx, &release, 0), Arc::new(Stop::default()));
        let stops: Vec<Arc<Stop>> = (1..=3).map(|_| Arc::new(Stop::default())).collect();
        for (tag, stop) in (1..).zip(&stops) {
            pool.spawn(7, job(&tx, &release, tag), stop.clone());
        }
        wait_for(&pool, (3, 1));
        pool.forget(7, &stops[1]);
        wait_for(&pool, (2, 1));
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        wait_for(&pool, (0, 0));
        let mut ran: Vec<u64> = rx.try_iter().collect();
        ran.sort_unstable();
        assert_eq!(ran, vec![0, 1, 3]);
    }
}
