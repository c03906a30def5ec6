//! The in-process pipe under [`ChannelFrameTransport`](super::ChannelFrameTransport) and
//! [`ArcFrameTransport`](super::ArcFrameTransport): two bounded queues (one per direction) and
//! a close signal shared by both ends — wakers and a mutex, no runtime.
//!
//! **Waiting** follows the wait policy of shared memory ([`xrpc_shm::Backoff`], run as on a
//! runtime): a receive that finds its queue empty, or a send that finds it full, looks again a
//! few times at once, then lets the executor run its other tasks and looks again (16 checks per
//! yield, [`Backoff::checks_between_yields`]) — the peer, busy on another thread, usually
//! acts within microseconds, while a sleeping thread woken from another one costs a system call
//! and, on a machine that halts idle CPUs, tens of microseconds — for at most the spin budget;
//! then it leaves its waker and sleeps, and the peer's next send (or receive) wakes it. While
//! it only looks, the peer wakes nobody: no system call on either side.
//!
//! When the peer end was last used on this very thread (client and server on one executor
//! thread), looking again cannot help — the peer runs only once this task gives the thread
//! back — so the wait sleeps at once, and the peer's wake-up is a schedule on this thread, not
//! a cross-thread wake-up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use xrpc_shm::{Backoff, WaitStep};

use crate::signal::Signal;
use crate::transport::TransportError;

/// Checks of a queue per yield to the executor while a wait looks again (see
/// [`Backoff::checks_between_yields`]): a check is a load, a yield a reschedule of the task.
const CHECKS_BETWEEN_YIELDS: u32 = 16;

/// Closes every pipe of an in-process pair at once and wakes everyone waiting on them.
pub(crate) type CloseSignal = Signal;

thread_local! {
    /// Its address tells threads apart (see [`this_thread`]).
    static THREAD: u8 = const { 0 };
}

/// A number for the calling thread, never 0, different for threads alive at once.
fn this_thread() -> usize {
    THREAD.with(|t| std::ptr::from_ref(t) as usize)
}

/// One direction: the queue and who sleeps on it.
#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<T>,
    receivers: Vec<Waker>,
    senders: Vec<Waker>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            receivers: Vec::new(),
            senders: Vec::new(),
        }
    }
}

/// Remembers `waker` unless it is there already (a task polled again must not pile up copies).
fn push_waker(wakers: &mut Vec<Waker>, waker: &Waker) {
    if !wakers.iter().any(|w| w.will_wake(waker)) {
        wakers.push(waker.clone());
    }
}

/// A queue and its length, which a waiting side reads without the lock. Aligned to its own
/// cache lines: the two directions are used by different threads.
#[derive(Debug)]
#[repr(align(128))]
struct Lane<T> {
    queue: Mutex<Queue<T>>,
    /// `queue.items.len()`, stored under the lock after every change.
    len: AtomicUsize,
}

impl<T> Lane<T> {
    fn new() -> Self {
        Self {
            queue: Mutex::default(),
            len: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Wakes everyone in `who(queue)`, each after unlocking `q` (a wake-up across threads is a
    /// system call; the woken side then finds the lock free).
    fn wake<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue<T>>,
        who: fn(&mut Queue<T>) -> &mut Vec<Waker>,
    ) {
        while let Some(w) = who(&mut q).pop() {
            drop(q);
            w.wake();
            q = self.lock();
        }
    }
}

/// The thread an end was last used on ([`this_thread`]; 0: not yet), in a cache line of its
/// own (written by its end, read by the other).
#[derive(Debug, Default)]
#[repr(align(128))]
struct LastThread(AtomicUsize);

#[derive(Debug)]
struct PipeState<T> {
    lanes: [Lane<T>; 2],
    threads: [LastThread; 2],
    /// Whether each end's receives are awaited (see [`Pipe::set_awaited`]).
    awaited: [AtomicBool; 2],
    capacity: usize,
    /// Longest time a wait looks again before it sleeps.
    spin: Duration,
    close: Arc<CloseSignal>,
}

/// One wait of a send or a receive (see the module documentation).
#[derive(Debug, Default)]
struct Wait {
    /// The policy, from the first time the operation found nothing to do.
    backoff: Option<Backoff<'static>>,
    /// Sleeps from now on: leaves its waker whenever it finds nothing to do.
    asleep: bool,
}

impl Wait {
    /// The operation found nothing to do: check again at once (`Spin`), let the executor run
    /// and look again (`Yield`: the caller wakes itself), or sleep (`Sleep`) — at once, and for
    /// this time only, when nobody awaits it (`awaited`).
    fn step(&mut self, spin: Duration, peer_here: bool, awaited: bool) -> WaitStep {
        if self.asleep || !awaited {
            return WaitStep::Sleep;
        }
        if peer_here {
            self.asleep = true;
            return WaitStep::Sleep;
        }
        let backoff = self.backoff.get_or_insert_with(|| {
            Backoff::with_budget(spin)
                .in_runtime()
                .checks_between_yields(CHECKS_BETWEEN_YIELDS)
        });
        let step = backoff.step();
        if step == WaitStep::Sleep {
            self.asleep = true;
        }
        step
    }

    /// While `idle()` (nothing to do: the queue empty for a receive, full for a send), the
    /// steps of [`step`](Self::step): busy checks, then `Pending` for a yield (the task woken
    /// at once, to look again when polled), or `Ready` to go on — to sleep, or because there is
    /// something to do now.
    fn look_again(
        &mut self,
        cx: &Context<'_>,
        spin: Duration,
        peer_here: bool,
        awaited: bool,
        idle: impl Fn() -> bool,
    ) -> Poll<()> {
        while idle() {
            match self.step(spin, peer_here, awaited) {
                WaitStep::Spin => std::hint::spin_loop(),
                WaitStep::Yield => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                WaitStep::Sleep => break,
            }
        }
        Poll::Ready(())
    }

    /// The operation is done.
    fn done(&mut self) {
        if let Some(b) = &mut self.backoff {
            b.ready();
        }
    }
}

/// One end of a bidirectional in-process pipe of `T`. Dropping an end closes the pair.
#[derive(Debug)]
pub(crate) struct Pipe<T> {
    shared: Arc<PipeState<T>>,
    /// The queue this end sends on (it receives on the other).
    out: usize,
}

impl<T: Send + 'static> Pipe<T> {
    /// Two connected ends with `capacity` slots in each direction; a wait looks again for at
    /// most `spin` before it sleeps. Needs no runtime.
    pub(crate) fn pair(capacity: usize, spin: Duration, close: Arc<CloseSignal>) -> (Self, Self) {
        let shared = Arc::new(PipeState {
            lanes: [Lane::new(), Lane::new()],
            capacity: capacity.max(1),
            spin,
            close,
            threads: Default::default(),
            awaited: [AtomicBool::new(true), AtomicBool::new(true)],
        });
        (
            Self {
                shared: shared.clone(),
                out: 0,
            },
            Self { shared, out: 1 },
        )
    }

    /// Whether this end's receives are awaited (a call waits for their input): a receive that
    /// finds nothing looks again for a moment only then, and otherwise sleeps at once — one
    /// asleep looks again when this turns true and it is polled
    /// ([`FrameTransport::set_input_awaited`](crate::FrameTransport::set_input_awaited)).
    pub(crate) fn set_awaited(&self, awaited: bool) {
        self.shared.awaited[self.out].store(awaited, Ordering::Relaxed);
    }

    /// Whether neither end was closed or dropped.
    pub(crate) fn is_connected(&self) -> bool {
        !self.shared.close.is_raised()
    }

    /// Notes that this end is used on this thread; whether the peer end was last used here too.
    fn peer_here(&self) -> bool {
        let here = this_thread();
        let mine = &self.shared.threads[self.out].0;
        if mine.load(Ordering::Relaxed) != here {
            mine.store(here, Ordering::Relaxed);
        }
        self.shared.threads[1 - self.out].0.load(Ordering::Relaxed) == here
    }

    /// Sends a value, waiting for room; fails once either end closed.
    pub(crate) async fn send(&self, value: T) -> Result<(), TransportError> {
        let mut slot = Some(value);
        let mut wait = Wait::default();
        std::future::poll_fn(|cx| self.poll_send(cx, &mut slot, &mut wait)).await
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<T>,
        wait: &mut Wait,
    ) -> Poll<Result<(), TransportError>> {
        let sh = &*self.shared;
        let lane = &sh.lanes[self.out];
        let peer_here = self.peer_here();
        let full = || lane.len() >= sh.capacity && !sh.close.is_raised();
        if wait
            .look_again(cx, sh.spin, peer_here, true, full)
            .is_pending()
        {
            return Poll::Pending;
        }
        let mut q = lane.lock();
        if sh.close.is_raised() {
            return Poll::Ready(Err(TransportError::ConnectionClosed));
        }
        if q.items.len() >= sh.capacity {
            // Full: sleep until a receive makes room (or either end closes).
            if sh.close.poll_raised(cx).is_ready() {
                return Poll::Ready(Err(TransportError::ConnectionClosed));
            }
            push_waker(&mut q.senders, cx.waker());
            return Poll::Pending;
        }
        if let Some(v) = slot.take() {
            q.items.push_back(v);
            lane.len.store(q.items.len(), Ordering::Release);
        }
        lane.wake(q, |q| &mut q.receivers);
        wait.done();
        Poll::Ready(Ok(()))
    }

    /// Receives the next value. After a close, values already queued are still delivered,
    /// then `ConnectionClosed`.
    pub(crate) async fn recv(&self) -> Result<T, TransportError> {
        let mut wait = Wait::default();
        std::future::poll_fn(|cx| self.poll_recv(cx, &mut wait)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>, wait: &mut Wait) -> Poll<Result<T, TransportError>> {
        let sh = &*self.shared;
        let lane = &sh.lanes[1 - self.out];
        let peer_here = self.peer_here();
        let awaited = sh.awaited[self.out].load(Ordering::Relaxed);
        let empty = || lane.len() == 0 && !sh.close.is_raised();
        if wait
            .look_again(cx, sh.spin, peer_here, awaited, empty)
            .is_pending()
        {
            return Poll::Pending;
        }
        let mut q = lane.lock();
        if let Some(v) = q.items.pop_front() {
            Self::popped(lane, q);
            wait.done();
            return Poll::Ready(Ok(v));
        }
        // Empty: sleep until a send (or either end closes).
        if sh.close.poll_raised(cx).is_ready() {
            return Poll::Ready(Err(TransportError::ConnectionClosed));
        }
        push_waker(&mut q.receivers, cx.waker());
        Poll::Pending
    }

    /// The next value if one is queued now (without waiting, even after a close).
    pub(crate) fn try_recv(&self) -> Option<T> {
        let lane = &self.shared.lanes[1 - self.out];
        if lane.len() == 0 {
            return None;
        }
        let mut q = lane.lock();
        let v = q.items.pop_front()?;
        Self::popped(lane, q);
        Some(v)
    }

    /// After an item was taken from `lane` (locked as `q`): its new length, and the senders
    /// waiting for room woken (after unlocking).
    fn popped<'a>(lane: &'a Lane<T>, q: MutexGuard<'a, Queue<T>>) {
        lane.len.store(q.items.len(), Ordering::Release);
        lane.wake(q, |q| &mut q.senders);
    }

    /// Closes both ends.
    pub(crate) fn close(&self) {
        self.shared.close.raise();
    }
}

impl<T> Drop for Pipe<T> {
    fn drop(&mut self) {
        self.shared.close.raise();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn pair(spin: Duration) -> (Pipe<u32>, Pipe<u32>) {
        Pipe::pair(4, spin, Arc::new(CloseSignal::default()))
    }

    /// Uses `end` once on another thread (as a peer busy there would).
    fn use_elsewhere(end: &Pipe<u32>) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = end.try_recv();
                end.peer_here();
            });
        });
    }

    #[test]
    fn a_receive_looks_again_while_the_peer_is_elsewhere_and_sleeps_after_the_budget() {
        let (a, b) = pair(Duration::from_millis(20));
        use_elsewhere(&b);
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        let mut recv = pin!(a.recv());
        // Within the budget: it wakes itself to look again (no waker left with the queue).
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(a.shared.lanes[1].lock().receivers.is_empty());
        // Past the budget: it sleeps, and the peer's send wakes it.
        std::thread::sleep(Duration::from_millis(30));
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(a.shared.lanes[1].lock().receivers.len(), 1);
        let mut send = pin!(b.send(7));
        assert!(send.as_mut().poll(&mut cx).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(matches!(recv.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    }

    #[test]
    fn a_receive_sleeps_at_once_when_the_peer_was_last_used_on_this_thread() {
        let (a, b) = pair(Duration::from_secs(10));
        b.peer_here();
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        let mut recv = pin!(a.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "no looking again");
        assert_eq!(a.shared.lanes[1].lock().receivers.len(), 1);
        assert!(pin!(b.send(1)).poll(&mut cx).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(recv.as_mut().poll(&mut cx), Poll::Ready(Ok(1))));
    }

    #[test]
    fn a_zero_budget_sleeps_at_once_and_a_full_queue_makes_the_sender_wait() {
        let (a, b) = pair(Duration::ZERO);
        use_elsewhere(&a);
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        for i in 0..4 {
            assert!(pin!(b.send(i)).poll(&mut cx).is_ready());
        }
        let mut send = pin!(b.send(4));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(a.try_recv(), Some(0));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "room wakes the sender");
        assert!(send.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_close_ends_a_sleeping_receive_after_the_values_queued() {
        let (a, b) = pair(Duration::ZERO);
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        assert!(pin!(b.send(5)).poll(&mut cx).is_ready());
        b.close();
        assert!(matches!(pin!(a.recv()).poll(&mut cx), Poll::Ready(Ok(5))));
        let mut recv = pin!(a.recv());
        assert!(matches!(
            recv.as_mut().poll(&mut cx),
            Poll::Ready(Err(TransportError::ConnectionClosed))
        ));
        let (c, d) = pair(Duration::ZERO);
        let mut recv = pin!(c.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        drop(d);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            recv.as_mut().poll(&mut cx),
            Poll::Ready(Err(TransportError::ConnectionClosed))
        ));
    }
}
