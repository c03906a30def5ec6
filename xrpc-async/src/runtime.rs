//! [`Runtime`]: what the async layer needs of an executor — spawning a task, a timer that can
//! be moved, and the clock. An adapter crate implements it in about fifty lines (see
//! `xrpc-tokio`), the way quinn's `Runtime` trait lets one connection driver serve every
//! executor.
//!
//! The layer reads the time only through [`Runtime::now`] and waits only on
//! [`Runtime::timer`], on the runtime value its client or server was made with (never a fresh
//! `R::default()`), so a runtime with a clock of its own — a test's, advanced by hand — drives
//! every deadline, heartbeat and drain above the core.

use std::future::Future;
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

    /// Whether tasks can be spawned from here (tokio: only inside a runtime); the error says
    /// what is missing.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
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
