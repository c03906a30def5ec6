//! [`Blocking`]: the [`Runtime`] and [`Reactor`] of the async layer on plain threads, with no
//! executor library — what lets the shared `xrpc_async` client and server run under a
//! synchronous API.
//!
//! - **Waiting**: [`Blocking::block_on`] runs a future on the calling thread, which waits for
//!   what the future waits on in its own `poll(2)` ([`wait`]); what is still armed when it
//!   returns goes to one watcher thread ([`watcher`]).
//! - **Tasks**: [`spawn`](Runtime::spawn) runs a task on a thread of its own (a connection, a
//!   client's driver: the blocking model, a thread per connection).
//! - **Handlers**: [`spawn_handler`](Runtime::spawn_handler) runs a call's handler on the
//!   server's bounded handler pool ([`HandlerThreads`]), in turns between connections.
//! - **IO**: `std` sockets in non-blocking mode ([`StdSocket`]); a descriptor's readiness for
//!   the shared-memory transport ([`BlockingRegistration`]); timers ([`BlockingTimer`]).

mod pool;
mod socket;
mod wait;
mod watcher;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use rustix::event::PollFlags;
use xrpc_async::{Reactor, Registration, Runtime, Task, Timer, Watched};

pub(crate) use pool::HandlerPool;
pub use pool::HandlerThreads;
pub use socket::StdSocket;
pub use wait::block_on;

use socket::Ready;
use wait::{Interest, Stop};

/// The blocking runtime: tasks on threads of their own, waits in the waiting thread's own
/// `poll(2)` (see the [module docs](self)). A server's runtime value carries its handler pool;
/// the default value has none (a handler then gets a thread of its own, as any task).
#[derive(Debug, Clone, Default)]
pub struct Blocking {
    handlers: Option<Arc<HandlerPool>>,
}

impl Blocking {
    /// The runtime with handler pool `handlers` (a server's).
    pub(crate) fn with_handlers(handlers: Arc<HandlerPool>) -> Self {
        Self {
            handlers: Some(handlers),
        }
    }

    /// Runs `future` to completion on the calling thread: the way into the async layer from
    /// synchronous code.
    pub fn block_on<F: Future>(future: F) -> F::Output {
        block_on(future)
    }
}

/// A task of [`Blocking`]: [`abort`](Task::abort) drops its future at its next wait (a
/// handler that has not started yet leaves the pool's queue).
#[derive(Debug)]
pub struct BlockingTask {
    stop: Arc<Stop>,
    /// The pool and connection of a handler.
    queued: Option<(Weak<HandlerPool>, u64)>,
}

impl Task for BlockingTask {
    fn abort(&self) {
        self.stop.stop();
        if let Some((pool, lane)) = &self.queued
            && let Some(pool) = pool.upgrade()
        {
            pool.forget(*lane, &self.stop);
        }
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Runtime for Blocking {
    type Timer = BlockingTimer;
    type Task = BlockingTask;

    fn spawn<F>(&self, future: F) -> BlockingTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        // A task that gets no thread is dropped at once, as an aborted one is.
        let _ = std::thread::Builder::new()
            .name("xrpc-task".into())
            .spawn(move || wait::run(future, Some(&s)));
        BlockingTask { stop, queued: None }
    }

    fn spawn_handler<F>(&self, connection: u64, future: F) -> BlockingTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(pool) = &self.handlers else {
            return self.spawn(future);
        };
        let stop = Arc::new(Stop::default());
        pool.spawn(connection, Box::pin(future), stop.clone());
        BlockingTask {
            stop,
            queued: Some((Arc::downgrade(pool), connection)),
        }
    }

    fn timer(&self, at: Instant) -> BlockingTimer {
        BlockingTimer {
            at,
            interest: Interest::timer(),
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A timer of [`Blocking`]: the waiting thread's `poll(2)` times out at its instant.
pub struct BlockingTimer {
    at: Instant,
    interest: Arc<Interest>,
}

impl std::fmt::Debug for BlockingTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingTimer")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Future for BlockingTimer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            self.interest.disarm();
            return Poll::Ready(());
        }
        self.interest.arm(cx.waker(), Some(self.at));
        Poll::Pending
    }
}

impl Timer for BlockingTimer {
    fn reset(&mut self, at: Instant) {
        self.at = at;
        self.interest.reschedule(at);
    }
}

impl Drop for BlockingTimer {
    fn drop(&mut self) {
        self.interest.disarm();
    }
}

/// A descriptor whose readability [`Blocking`] waits for (the shared-memory transport's
/// doorbells and peer socket).
pub struct BlockingRegistration {
    fd: Arc<Watched>,
}

impl std::fmt::Debug for BlockingRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BlockingRegistration")
            .field(&self.fd)
            .finish()
    }
}

impl Registration for BlockingRegistration {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        let ready = Ready::new(Interest::descriptor(self.fd.clone(), PollFlags::IN));
        async move {
            ready.await;
            Ok(())
        }
    }
}

/// Gives the CPU away once: the waiting thread calls `sched_yield` before it polls again (see
/// `wait::ask_yield`).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        if !wait::ask_yield(cx.waker()) {
            std::thread::yield_now();
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Reactor for Blocking {
    type Registration = BlockingRegistration;

    fn register(&self, fd: Watched) -> io::Result<BlockingRegistration> {
        Ok(BlockingRegistration { fd: Arc::new(fd) })
    }

    fn yield_now(&self) -> impl Future<Output = ()> + Send {
        YieldNow(false)
    }
}
