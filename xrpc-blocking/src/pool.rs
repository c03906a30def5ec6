//! The handler threads of a server: a pool that grows on demand up to its limit, and shrinks
//! when threads stay idle. Jobs beyond what the threads can take wait in its queue (how many
//! calls a connection may have in progress is bounded by its session).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A handler to run.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A thread idle this long ends.
const IDLE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    waiting: usize,
    /// Threads alive.
    threads: usize,
}

/// A bounded pool of handler threads.
pub(crate) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// The most threads at once.
    pub(crate) max: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            queue: Mutex::default(),
            ready: Condvar::new(),
            max: AtomicUsize::new(max),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` on a pool thread: an idle one, a new one below the limit, or the first to
    /// become free.
    pub(crate) fn run(self: &Arc<Self>, job: Job) {
        let mut q = self.lock();
        q.jobs.push_back(job);
        if q.jobs.len() <= q.waiting {
            self.ready.notify_one();
            return;
        }
        if q.threads >= self.max.load(Ordering::Relaxed).max(1) {
            return;
        }
        q.threads += 1;
        drop(q);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("xrpc-handler".into())
            .spawn(move || pool.work());
        if spawned.is_err() {
            let mut q = self.lock();
            q.threads -= 1;
            // No thread could be started and none is left to take the job: run it here.
            if q.threads == 0
                && let Some(job) = q.jobs.pop_back()
            {
                drop(q);
                job();
            }
        }
    }

    fn work(&self) {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                drop(q);
                job();
                q = self.lock();
                continue;
            }
            q.waiting += 1;
            let (guard, wait) = self
                .ready
                .wait_timeout(q, IDLE)
                .unwrap_or_else(PoisonError::into_inner);
            q = guard;
            q.waiting -= 1;
            if wait.timed_out() && q.jobs.is_empty() {
                q.threads -= 1;
                return;
            }
        }
    }
}
