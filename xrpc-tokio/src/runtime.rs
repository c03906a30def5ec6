//! [`Tokio`]: the [`Runtime`] and [`Reactor`] of the async layer on tokio — spawning, timers,
//! descriptor readiness.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use xrpc_async::{Reactor, Registration, Runtime, Task, Timer, Watched};

/// The tokio runtime the calling code runs on (tasks go to `tokio::spawn`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio sleep, boxed once per timer so that it can be moved.
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl Future for TokioTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }
}

/// A spawned tokio task.
#[derive(Debug)]
pub struct TokioTask(tokio::task::JoinHandle<()>);

impl Task for TokioTask {
    fn abort(&self) {
        self.0.abort();
    }
}

impl Runtime for Tokio {
    type Timer = TokioTimer;
    type Task = TokioTask;

    fn spawn<F>(&self, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TokioTask(tokio::spawn(future))
    }

    fn timer(&self, at: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn now(&self) -> Instant {
        // tokio's clock: paused and advanced by hand in a test with `start_paused`.
        tokio::time::Instant::now().into_std()
    }

    fn unblock<T, F>(&self, work: F) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // tokio's pool for blocking work; a panic or a runtime shut down first is `None`.
        let task = tokio::task::spawn_blocking(work);
        async move { task.await.ok() }
    }

    fn check(&self) -> Result<(), String> {
        tokio::runtime::Handle::try_current()
            .map(|_| ())
            .map_err(|e| format!("xrpc-tokio needs a tokio runtime: {e}"))
    }
}

/// A descriptor registered with tokio's reactor for readability.
#[derive(Debug)]
pub struct TokioRegistration(AsyncFd<Watched>);

impl Registration for TokioRegistration {
    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await?.clear_ready();
        Ok(())
    }
}

impl Reactor for Tokio {
    type Registration = TokioRegistration;

    fn register(&self, fd: Watched) -> io::Result<TokioRegistration> {
        // `with_interest` is deprecated because an arbitrary `AsRawFd` may close its descriptor
        // while registered; a `Watched` handle owned by the `AsyncFd` keeps it open (an
        // `OwnedFd`, or a shared handle whose descriptor lives while any clone does), so this
        // use is sound (its replacement takes a raw descriptor on trust, which this crate does
        // not do).
        #[allow(deprecated)]
        AsyncFd::with_interest(fd, Interest::READABLE).map(TokioRegistration)
    }

    async fn yield_now(&self) {
        if tokio::task::try_id().is_some() {
            // In a task: it wakes itself and goes behind its worker's other tasks. Not
            // `tokio::task::yield_now`, which also polls the reactor before the task runs
            // again — a system call per retry of a shared-memory wait.
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    return std::task::Poll::Ready(());
                }
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await;
        } else {
            // In `block_on`, whose waker unparks the runtime's driver (system calls): tokio's
            // yield, which polls the reactor once without blocking.
            tokio::task::yield_now().await;
        }
    }

    /// 16: a yield in a task is a self-wake, which tokio schedules as a yield and which wakes
    /// an idle worker to steal it; a check of a ring is a load. Measured on a call from a task
    /// over shared memory, the server on its own thread (docs/benchmarks/measurements-2026-12-07.md):
    /// p50 2.6 µs against 3.0–3.1 with a yield per check, and 64 calls in flight no slower.
    fn checks_per_yield(&self) -> u32 {
        16
    }
}
