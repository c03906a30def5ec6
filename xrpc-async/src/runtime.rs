//! [`Runtime`]: what the async layer needs of an executor — spawning a task, a timer that can
//! be moved, and the clock. An adapter crate implements it in about fifty lines (see
//! `xrpc-tokio`), the way quinn's `Runtime` trait lets one connection driver serve every
//! executor.
//!
//! The layer reads the time only through [`Runtime::now`] and waits only on
//! [`Runtime::timer`], on the runtime value its client or server was made with (never a fresh
//! `R::default()`), so a runtime with a clock of its own — a test's, advanced by hand — drives
//! every deadline, heartbeat and drain above the core.
//!
//! Work that blocks a thread (the system's DNS resolver) goes through [`Runtime::unblock`], to
//! the executor's pool for blocking work, never onto a thread that runs tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// An executor: spawns tasks, makes timers and tells the time.
///
/// `Default` makes the runtime of the calling context (for constructors that take none, such as
/// `RpcClient::new`); everything else uses the value a client or server was made with.
pub trait Runtime: Clone + Default + Send + Sync + 'static {
    /// A timer, resettable to another instant.
    type Timer: Timer;
    /// A spawned task, which can be aborted.
    type Task: Task;

    /// Runs `future` as a task of its own.
    fn spawn<F>(&self, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static;

    /// Runs the handler of a call or a notification as a task of its own. `connection` is the
    /// number the server gave the connection it came on (the same for all its handlers), so
    /// that a runtime whose handlers hold threads can share them between connections (the
    /// blocking adapter's handler pool does). By default [`spawn`](Self::spawn).
    fn spawn_handler<F>(&self, connection: u64, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let _ = connection;
        self.spawn(future)
    }

    /// A timer that fires at `at` (an instant of this runtime's clock, [`now`](Self::now)).
    fn timer(&self, at: Instant) -> Self::Timer;

    /// The current time on this runtime's clock.
    fn now(&self) -> Instant;

    /// Runs `work`, which may block its thread (a system DNS lookup), away from the threads
    /// that run tasks, and gives its result — `None` if it panicked or could not run.
    ///
    /// The default runs it on a thread of its own; an adapter whose executor keeps a pool for
    /// blocking work uses that (tokio's `spawn_blocking`, smol's `unblock`).
    fn unblock<T, F>(&self, work: F) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let handoff = Arc::new(Handoff::default());
        let done = handoff.clone();
        let spawned = std::thread::Builder::new()
            .name("xrpc-unblock".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok();
                done.finish(result);
            });
        if spawned.is_err() {
            handoff.finish(None);
        }
        HandoffFuture(handoff)
    }

    /// Whether tasks can be spawned from here (tokio: only inside a runtime); the error says
    /// what is missing.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// [`Runtime::unblock`], boxed. An async fn that awaits the runtime's own future in generic
/// code is not proven `Send` by older rustc ("higher-ranked lifetime error" where the task is
/// spawned: 1.88 and 1.90 fail, 1.95 passes); the box hides the future's type. One allocation,
/// for work that blocks anyway (a DNS lookup).
pub(crate) fn unblock_boxed<R, T, F>(
    rt: &R,
    work: F,
) -> Pin<Box<dyn Future<Output = Option<T>> + Send>>
where
    R: Runtime,
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Box::pin(rt.unblock(work))
}

/// A timer: a future that completes at its instant, which [`reset`](Self::reset) moves.
pub trait Timer: Future<Output = ()> + Send + Unpin + 'static {
    /// Fires at `at` instead.
    fn reset(&mut self, at: Instant);
}

/// A spawned task.
pub trait Task: Send + Sync + 'static {
    /// Stops the task at its next await point (dropping its future).
    fn abort(&self);
}

/// The result of work done on another thread, and who waits for it.
struct Handoff<T> {
    state: Mutex<(Option<Option<T>>, Option<Waker>)>,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new((None, None)),
        }
    }
}

impl<T> Handoff<T> {
    fn finish(&self, result: Option<T>) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.0 = Some(result);
        if let Some(w) = st.1.take() {
            w.wake();
        }
    }
}

/// Ready with the result of a [`Handoff`].
struct HandoffFuture<T>(Arc<Handoff<T>>);

impl<T> Future for HandoffFuture<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        match st.0.take() {
            Some(result) => Poll::Ready(result),
            None => {
                st.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
