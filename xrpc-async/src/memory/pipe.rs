//! The in-process pipe under [`ChannelFrameTransport`](super::ChannelFrameTransport) and
//! [`ArcFrameTransport`](super::ArcFrameTransport): two bounded queues (one per direction) and
//! a close signal shared by both ends — wakers and a mutex, no runtime.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::signal::Signal;
use crate::transport::TransportError;

/// Closes every pipe of an in-process pair at once and wakes everyone waiting on them.
pub(crate) type CloseSignal = Signal;

/// One direction: the queue and who waits on it.
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

fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

#[derive(Debug)]
struct Shared<T> {
    queues: [Mutex<Queue<T>>; 2],
    capacity: usize,
    close: Arc<CloseSignal>,
}

/// One end of a bidirectional in-process pipe of `T`. Dropping an end closes the pair.
#[derive(Debug)]
pub(crate) struct Pipe<T> {
    shared: Arc<Shared<T>>,
    /// The queue this end sends on (it receives on the other).
    out: usize,
}

impl<T: Send + 'static> Pipe<T> {
    /// Two connected ends with `capacity` slots in each direction. Needs no runtime.
    pub(crate) fn pair(capacity: usize, close: Arc<CloseSignal>) -> (Self, Self) {
        let shared = Arc::new(Shared {
            queues: [Mutex::default(), Mutex::default()],
            capacity: capacity.max(1),
            close,
        });
        (
            Self {
                shared: shared.clone(),
                out: 0,
            },
            Self { shared, out: 1 },
        )
    }

    fn queue(&self, i: usize) -> MutexGuard<'_, Queue<T>> {
        self.shared.queues[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether neither end was closed or dropped.
    pub(crate) fn is_connected(&self) -> bool {
        !self.shared.close.is_raised()
    }

    /// Sends a value, waiting for room; fails once either end closed.
    pub(crate) async fn send(&self, value: T) -> Result<(), TransportError> {
        let mut slot = Some(value);
        std::future::poll_fn(|cx| self.poll_send(cx, &mut slot)).await
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<T>,
    ) -> Poll<Result<(), TransportError>> {
        let close = &self.shared.close;
        let closed = close.poll_raised(cx).is_ready();
        let mut q = self.queue(self.out);
        if closed || close.is_raised() {
            return Poll::Ready(Err(TransportError::ConnectionClosed));
        }
        if q.items.len() >= self.shared.capacity {
            push_waker(&mut q.senders, cx.waker());
            return Poll::Pending;
        }
        if let Some(v) = slot.take() {
            q.items.push_back(v);
        }
        wake_all(&mut q.receivers);
        Poll::Ready(Ok(()))
    }

    /// Receives the next value. After a close, values already queued are still delivered,
    /// then `ConnectionClosed`.
    pub(crate) async fn recv(&self) -> Result<T, TransportError> {
        std::future::poll_fn(|cx| {
            let close = &self.shared.close;
            let closed = close.poll_raised(cx).is_ready();
            let mut q = self.queue(1 - self.out);
            if let Some(v) = q.items.pop_front() {
                wake_all(&mut q.senders);
                return Poll::Ready(Ok(v));
            }
            if closed || close.is_raised() {
                return Poll::Ready(Err(TransportError::ConnectionClosed));
            }
            push_waker(&mut q.receivers, cx.waker());
            Poll::Pending
        })
        .await
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
