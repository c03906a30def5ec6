//! The handler threads of a server, bounded: a job starts a thread while fewer than the limit
//! run; past it, it waits in the queue for the first thread to finish (which takes it instead
//! of ending). The queue is bounded by the sessions' limit on calls in progress.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A handler to run.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A bounded pool of handler threads.
pub(crate) struct Pool {
    /// Jobs waiting, and threads running.
    queue: Mutex<(VecDeque<Job>, usize)>,
    /// The most threads at once.
    pub(crate) max: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            queue: Mutex::default(),
            max: AtomicUsize::new(max),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (VecDeque<Job>, usize)> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` on a new thread, or queues it while the pool is full.
    pub(crate) fn run(self: &Arc<Self>, job: Job) {
        let mut q = self.lock();
        q.0.push_back(job);
        if q.1 >= self.max.load(Ordering::Relaxed) {
            return;
        }
        q.1 += 1;
        drop(q);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("xrpc-handler".into())
            .spawn(move || {
                loop {
                    let mut q = pool.lock();
                    let Some(job) = q.0.pop_front() else {
                        q.1 -= 1;
                        return;
                    };
                    drop(q);
                    job();
                }
            });
        if spawned.is_err() {
            let mut q = self.lock();
            q.1 -= 1;
            // No thread could be started and none is left to take the job: run it here.
            if q.1 == 0
                && let Some(job) = q.0.pop_back()
            {
                drop(q);
                job();
            }
        }
    }
}
