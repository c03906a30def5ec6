//! Handler futures that start without an allocation: a handler's future is placed in a box
//! taken from its handler's pool and polled once at once. Most unary handlers finish in that
//! poll; their box goes back to the pool and the call allocated nothing. One that waits is
//! handed out (boxed once more, as any spawned future) and its box returns when it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use super::server::BoxFuture;

/// Most idle boxes a pool keeps.
const POOL_MAX: usize = 64;

/// A box for a future of type `G`, empty between uses.
type Slot<G> = Pin<Box<Option<G>>>;

/// Idle boxes for one handler's futures.
pub(crate) struct FuturePool<G> {
    free: Mutex<Vec<Slot<G>>>,
}

impl<G> Default for FuturePool<G> {
    fn default() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
        }
    }
}

/// How a started future stands: its output already, or the future to run on.
pub(crate) enum Started<T> {
    /// It finished in its first poll.
    Done(T),
    /// It waits: run it on.
    Running(BoxFuture<T>),
}

impl<G> FuturePool<G>
where
    G: Future + Send + 'static,
    G::Output: Send,
{
    /// Places `future` in a pooled box and polls it once.
    pub(crate) fn start(self: &Arc<Self>, future: G) -> Started<G::Output> {
        let popped = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut slot = popped.unwrap_or_else(|| Box::pin(None));
        slot.set(Some(future));
        let mut cx = Context::from_waker(Waker::noop());
        match slot.as_mut().as_pin_mut().map(|f| f.poll(&mut cx)) {
            Some(Poll::Ready(out)) => {
                self.give_back(slot);
                Started::Done(out)
            }
            _ => Started::Running(Box::pin(Pooled {
                slot: Some(slot),
                pool: self.clone(),
            })),
        }
    }

    /// Empties `slot` and keeps it for the next call.
    fn give_back(&self, mut slot: Slot<G>) {
        slot.set(None);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < POOL_MAX {
            free.push(slot);
        }
    }
}

/// A pooled future that did not finish in its first poll.
struct Pooled<G>
where
    G: Future + Send + 'static,
    G::Output: Send,
{
    slot: Option<Slot<G>>,
    pool: Arc<FuturePool<G>>,
}

impl<G> Future for Pooled<G>
where
    G: Future + Send + 'static,
    G::Output: Send,
{
    type Output = G::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<G::Output> {
        // `Pooled` is `Unpin`: the future itself stays pinned in its box.
        let this = self.get_mut();
        match this.slot.as_mut().and_then(|s| s.as_mut().as_pin_mut()) {
            Some(f) => f.poll(cx),
            // Polled after it finished.
            None => Poll::Pending,
        }
    }
}

impl<G> Drop for Pooled<G>
where
    G: Future + Send + 'static,
    G::Output: Send,
{
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.give_back(slot);
        }
    }
}
