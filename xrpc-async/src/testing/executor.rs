//! The single-threaded executor of a [`TestRuntime`](super::TestRuntime): spawned tasks wait in
//! a FIFO run queue and run only when the harness runs them, on the harness's thread, so every
//! run of a test takes the same steps.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Wake, Waker};

use crate::runtime::Task;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned task's place in the executor.
struct Slot {
    /// `None` while it is being polled.
    future: Option<BoxFuture>,
    aborted: bool,
    waker: Arc<TaskWaker>,
}

#[derive(Default)]
struct Tasks {
    slots: HashMap<u64, Slot>,
    next_id: u64,
}

/// The tasks and the run queue.
#[derive(Default)]
pub(super) struct Executor {
    tasks: Mutex<Tasks>,
    queue: Arc<Mutex<VecDeque<u64>>>,
    /// A task is being polled (running tasks from inside a task is refused).
    running: AtomicBool,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("tasks", &self.tasks().slots.len())
            .field("queued", &queue(&self.queue).len())
            .finish()
    }
}

fn queue(q: &Mutex<VecDeque<u64>>) -> MutexGuard<'_, VecDeque<u64>> {
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Puts its task in the run queue (once until the task is polled).
struct TaskWaker {
    id: u64,
    queued: AtomicBool,
    queue: Weak<Mutex<VecDeque<u64>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel)
            && let Some(q) = self.queue.upgrade()
        {
            queue(&q).push_back(self.id);
        }
    }
}

impl Executor {
    fn tasks(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a task, queued to run.
    pub(super) fn spawn(&self, future: BoxFuture) -> u64 {
        let mut tasks = self.tasks();
        tasks.next_id += 1;
        let id = tasks.next_id;
        let waker = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(false),
            queue: Arc::downgrade(&self.queue),
        });
        tasks.slots.insert(
            id,
            Slot {
                future: Some(future),
                aborted: false,
                waker: waker.clone(),
            },
        );
        drop(tasks);
        waker.wake_by_ref();
        id
    }

    /// Marks task `id` aborted; its future is dropped when the executor next runs (never
    /// under the caller's feet: a future's drop may take locks the caller holds).
    pub(super) fn abort(&self, id: u64) {
        let waker = match self.tasks().slots.get_mut(&id) {
            Some(slot) => {
                slot.aborted = true;
                slot.waker.clone()
            }
            None => return,
        };
        // Queued, so that the next run drops it.
        waker.wake_by_ref();
    }

    /// Tasks not finished (running, waiting or queued).
    pub(super) fn live_tasks(&self) -> usize {
        self.tasks().slots.len()
    }

    /// Polls each task queued now once (tasks they wake wait for the next call); returns
    /// whether any ran. A panic in a task goes on to the caller.
    pub(super) fn run_queued(&self) -> bool {
        assert!(
            !self.running.swap(true, Ordering::AcqRel),
            "a TestRuntime's tasks were run from inside one of its tasks"
        );
        let _running = Running(&self.running);
        let batch: Vec<u64> = queue(&self.queue).drain(..).collect();
        let ran = !batch.is_empty();
        for id in batch {
            self.poll_task(id);
        }
        ran
    }

    fn poll_task(&self, id: u64) {
        let (mut future, waker) = {
            let mut tasks = self.tasks();
            let Some(slot) = tasks.slots.get_mut(&id) else {
                return;
            };
            slot.waker.queued.store(false, Ordering::Release);
            if slot.aborted {
                let slot = tasks.slots.remove(&id);
                drop(tasks);
                // Dropped outside the lock.
                drop(slot);
                return;
            }
            let Some(future) = slot.future.take() else {
                return;
            };
            (future, Waker::from(slot.waker.clone()))
        };
        let done = future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        let mut tasks = self.tasks();
        let over = done || tasks.slots.get(&id).is_none_or(|s| s.aborted);
        if over {
            let slot = tasks.slots.remove(&id);
            drop(tasks);
            drop(slot);
            drop(future);
        } else if let Some(slot) = tasks.slots.get_mut(&id) {
            slot.future = Some(future);
        }
    }
}

/// Clears the executor's running mark (also when a task panics).
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A task spawned on a [`TestRuntime`](super::TestRuntime).
#[derive(Debug)]
pub struct TestTask {
    pub(super) id: u64,
    pub(super) executor: Weak<Executor>,
}

impl Task for TestTask {
    fn abort(&self) {
        if let Some(e) = self.executor.upgrade() {
            e.abort(self.id);
        }
    }
}
