//! [`Blocking`]: the [`Runtime`] and [`Reactor`] of the async layer on plain threads, with no
//! executor library — what lets the shared `xrpc_async` client and server run under a
//! synchronous API.
//!
//! - **Waiting**: [`Blocking::block_on`] runs a future on the calling thread, which waits for
//!   what the future waits on in its own `poll(2)` (module `wait`), after checking a socket it
//!   waits on without sleeping for up to 50 µs (the wait policy of shared memory); what
//!   is still armed when it returns goes to one watcher thread (module `watcher`).
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
use std::sync::{Arc, Mutex, Weak};
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
        // Held by the watcher for this instant, to wake this waker: the watcher fires it on
        // time (and it is then no longer held) — no need to read the clock.
        if self.interest.held_by_watcher(self.at, cx.waker()) {
            return Poll::Pending;
        }
        let now = Instant::now();
        if now >= self.at {
            self.interest.disarm();
            return Poll::Ready(());
        }
        self.interest.arm_timer(cx.waker(), self.at, now);
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
    /// The interest of the last wait that ended, for the next one (a connection waits on its
    /// doorbell between most calls: no allocation each time); `None` while it is in use.
    spare: Mutex<Option<Arc<Interest>>>,
}

impl std::fmt::Debug for BlockingRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BlockingRegistration")
            .field(&self.fd)
            .finish()
    }
}

impl BlockingRegistration {
    fn lock_spare(&self) -> std::sync::MutexGuard<'_, Option<Arc<Interest>>> {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A wait of [`BlockingRegistration::readable`].
struct Readable<'a> {
    /// Dropped first (fields drop in order): disarms the interest before it is put back.
    ready: Ready,
    _back: Restore<'a>,
}

impl Future for Readable<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ready).poll(cx).map(Ok)
    }
}

/// Puts a wait's interest back as the registration's spare when the wait ends.
struct Restore<'a>(&'a Mutex<Option<Arc<Interest>>>, Option<Arc<Interest>>);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.1.take() {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(i);
        }
    }
}

impl Registration for BlockingRegistration {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        let spare = self.lock_spare().take();
        let interest =
            spare.unwrap_or_else(|| Interest::descriptor(self.fd.clone(), PollFlags::IN));
        Readable {
            ready: Ready::new(interest.clone()),
            _back: Restore(&self.spare, Some(interest)),
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
        Ok(BlockingRegistration {
            fd: Arc::new(fd),
            spare: Mutex::new(None),
        })
    }

    fn yield_now(&self) -> impl Future<Output = ()> + Send {
        YieldNow(false)
    }

    /// A yield is a `sched_yield` of the waiting thread.
    fn yield_gives_the_cpu_away(&self) -> bool {
        true
    }

    /// Within a `block_on`, unless it was woken or another future of it yielded.
    fn waits_in_place(&self) -> bool {
        wait::waits_in_place()
    }

    /// A yield in a `block_on`'s last poll goes to the watcher, which resumes it after
    /// `ORPHAN_DELAY` (see `wait::ask_yield`).
    fn resumes_a_resting_yield_late(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use xrpc_async::Socket;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A future that is ready once `flag` is set, and leaves its waker in `slot`.
    fn flagged(flag: Arc<AtomicBool>, slot: Arc<Mutex<Option<Waker>>>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if flag.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *slot.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    #[test]
    fn a_timer_ends_the_wait_on_time() {
        let t0 = Instant::now();
        block_on(Blocking::default().timer(t0 + Duration::from_millis(50)));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    /// A timer due in 100 ms or later waits with the watcher, not in the frame: it still ends
    /// the wait on time, and polled again in a later `block_on` for the same instant it stays
    /// where it is (not taken back from the watcher and handed to it again).
    #[test]
    fn a_far_timer_waits_with_the_watcher_and_stays_there() {
        let t0 = Instant::now();
        let mut timer = Blocking::default().timer(t0 + Duration::from_millis(300));
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        let polled = |timer: &mut BlockingTimer, cx: &mut Context<'_>| {
            block_on(async { Pin::new(&mut *timer).poll(cx).is_pending() })
        };
        assert!(polled(&mut timer, &mut cx));
        let armed = timer.interest.generation();
        assert!(timer.interest.is_with_the_watcher());
        assert!(polled(&mut timer, &mut cx));
        assert_eq!(timer.interest.generation(), armed, "armed again");
        block_on(timer);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn a_wake_up_from_another_thread_ends_the_wait() {
        let flag = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(None::<Waker>));
        let (f, s) = (flag.clone(), slot.clone());
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            f.store(true, Ordering::SeqCst);
            let w = s.lock().unwrap().take();
            w.expect("the future left its waker").wake();
        });
        let t0 = Instant::now();
        block_on(flagged(flag, slot));
        assert!(t0.elapsed() < Duration::from_secs(2));
        waker.join().unwrap();
    }

    /// A wake-up of the outer future that comes while a nested `block_on` runs is not lost.
    #[test]
    fn a_nested_block_on_keeps_the_outer_wake_up() {
        let flag = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(None::<Waker>));
        let (f, s) = (flag.clone(), slot.clone());
        let mut polls = 0;
        block_on(std::future::poll_fn(|cx| {
            polls += 1;
            if flag.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *s.lock().unwrap() = Some(cx.waker().clone());
            // While the inner wait runs, another thread sets the flag and wakes the outer.
            let (f, s) = (f.clone(), s.clone());
            let t = std::thread::spawn(move || {
                f.store(true, Ordering::SeqCst);
                let w = s.lock().unwrap().take();
                w.unwrap().wake();
            });
            block_on(Blocking::default().timer(Instant::now() + Duration::from_millis(30)));
            t.join().unwrap();
            Poll::Pending
        }));
        assert_eq!(polls, 2);
    }

    /// A read left armed by a finished `block_on` is watched from then on: its waker is woken
    /// when the input comes (within the watcher's delay).
    #[test]
    fn a_descriptor_left_armed_is_watched_after_its_block_on() {
        let (a, b) = UnixStream::pair().unwrap();
        let socket = StdSocket::new(a).unwrap();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut buf = BytesMut::with_capacity(64);
        block_on(std::future::poll_fn(|_| {
            let mut cx = Context::from_waker(&waker);
            assert!(socket.poll_read(&mut cx, &mut buf).is_pending());
            Poll::Ready(())
        }));
        std::thread::sleep(Duration::from_millis(20));
        use std::io::Write;
        (&b).write_all(b"x").unwrap();
        let t0 = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(2), "never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A yield asked in a `block_on`'s last poll is resumed later (by the watcher), not at once.
    #[test]
    fn a_yield_left_behind_is_resumed_after_the_delay() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let t0 = Instant::now();
        block_on(std::future::poll_fn(|_| {
            let mut cx = Context::from_waker(&waker);
            let rt = Blocking::default();
            let mut y = std::pin::pin!(rt.yield_now());
            assert!(y.as_mut().poll(&mut cx).is_pending());
            Poll::Ready(())
        }));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken at once");
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(2), "never resumed");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(5),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn an_aborted_task_drops_its_future() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let task = Blocking::default().spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        std::thread::sleep(Duration::from_millis(20));
        task.abort();
        let t0 = Instant::now();
        while !dropped.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "the future was not dropped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A future waits in place only while its `block_on` has nothing else to do: not after a
    /// wake-up came during the poll, nor after another future of it yielded, nor outside any
    /// `block_on`.
    #[test]
    fn a_wait_goes_on_in_place_only_while_the_frame_has_nothing_else_to_do() {
        let rt = Blocking::default();
        assert!(!rt.waits_in_place(), "outside any block_on");
        let mut polls = 0;
        let polled = block_on(std::future::poll_fn(|cx| {
            polls += 1;
            match polls {
                1 => {
                    assert!(rt.waits_in_place(), "a quiet frame");
                    cx.waker().wake_by_ref();
                    assert!(!rt.waits_in_place(), "woken during the poll");
                    Poll::Pending
                }
                2 => {
                    assert!(rt.waits_in_place(), "the next poll starts quiet");
                    let mut other = std::pin::pin!(rt.yield_now());
                    assert!(other.as_mut().poll(cx).is_pending());
                    assert!(!rt.waits_in_place(), "another future yielded");
                    Poll::Pending
                }
                _ => Poll::Ready(polls),
            }
        }));
        assert_eq!(polled, 3);
    }

    /// A wait for a socket's input checks it without sleeping before it sleeps: an answer from a
    /// peer that answers at once is taken by such a check (removing the spin fails this).
    #[test]
    fn a_wait_for_input_spins_before_it_sleeps() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        // The peer spins too: it echoes each byte as soon as it comes.
        let peer = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                match (&b).read(&mut byte) {
                    Ok(0) => return,
                    Ok(_) => (&b).write_all(&byte).unwrap(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let socket = StdSocket::new(a).unwrap();
        let spun = || wait::SPUN.with(std::cell::Cell::get);
        let before = spun();
        for _ in 0..1_000 {
            socket.get_ref().write_all(b"x").unwrap();
            let mut buf = BytesMut::with_capacity(8);
            let n = block_on(std::future::poll_fn(|cx| socket.poll_read(cx, &mut buf))).unwrap();
            assert_eq!(n, 1);
        }
        drop(socket);
        peer.join().unwrap();
        assert!(spun() > before, "no answer was taken by a spin");
    }

    #[test]
    fn a_registration_reuses_the_interest_of_its_last_wait() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reg = Blocking::default().register(Watched::new(a)).unwrap();
        let spare = |r: &BlockingRegistration| r.lock_spare().clone();
        // A wait that ends leaves its interest for the next.
        let noop = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&noop);
        {
            let mut w = std::pin::pin!(reg.readable());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(spare(&reg).is_none(), "in use while the wait lives");
        }
        let first = spare(&reg).expect("put back when the wait ended");
        // Two waits at once: the second gets an interest of its own.
        let held = Arc::strong_count(&first);
        {
            let _one = reg.readable();
            // Taken from the spare slot (which held it) by the wait's two parts.
            assert_eq!(Arc::strong_count(&first), held + 1);
            assert!(spare(&reg).is_none());
            let _two = reg.readable();
            assert_eq!(Arc::strong_count(&first), held + 1, "not shared");
        }
        assert!(spare(&reg).is_some());
        // A reused interest still wakes its wait.
        (&b).write_all(b"x").unwrap();
        block_on(reg.readable()).unwrap();
    }
}
