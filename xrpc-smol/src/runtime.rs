//! [`Smol`]: the [`Runtime`] and [`Reactor`] of the async layer on async-io — tasks on smol's
//! global executor, async-io's timers and reactor. Works under any executor that lets async-io
//! drive its reactor (smol, async-std).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Async;
use xrpc_async::{Reactor, Registration, Runtime, Task, Timer, Watched};

/// The smol runtime: tasks go to `smol::spawn` (its global executor, which runs on its own
/// threads, so spawning works from any executor, async-std's included).
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

/// An async-io timer, reset in place.
#[derive(Debug)]
pub struct SmolTimer(async_io::Timer);

impl Future for SmolTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl Timer for SmolTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }
}

/// A spawned task: detached when dropped (it runs on), cancelled by [`Task::abort`].
#[derive(Debug)]
pub struct SmolTask(Mutex<Option<smol::Task<()>>>);

impl Task for SmolTask {
    fn abort(&self) {
        // Dropping a smol task cancels it.
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

impl Drop for SmolTask {
    fn drop(&mut self) {
        let task = self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.detach();
        }
    }
}

impl Runtime for Smol {
    type Timer = SmolTimer;
    type Task = SmolTask;

    fn spawn<F>(&self, future: F) -> SmolTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        SmolTask(Mutex::new(Some(smol::spawn(future))))
    }

    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer(async_io::Timer::at(at))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unblock<T, F>(&self, work: F) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // smol's pool for blocking work (the `blocking` crate's); a panic is `None`.
        smol::unblock(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok())
    }
}

/// A descriptor watched by async-io's reactor.
#[derive(Debug)]
pub struct SmolRegistration(Async<Watched>);

impl Registration for SmolRegistration {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.readable()
    }
}

impl Reactor for Smol {
    type Registration = SmolRegistration;

    fn register(&self, fd: Watched) -> io::Result<SmolRegistration> {
        // Only readiness is ever asked of it, never a read: the descriptor's own mode stays.
        Async::new_nonblocking(fd).map(SmolRegistration)
    }

    fn yield_now(&self) -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }
}
