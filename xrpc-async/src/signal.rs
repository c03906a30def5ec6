//! [`Signal`]: a flag that tasks can wait for (graceful shutdown, the end of the last
//! connection) — the one synchronization primitive the async layer needs beyond a mutex.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// A flag that, once raised, stays raised; waiting tasks are woken when it is.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes every waiting task.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters {
            w.wake();
        }
    }

    /// Whether the flag is raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Whether the flag was never raised and nobody waits for it (it can serve again).
    pub(crate) fn is_unused(&self) -> bool {
        !self.is_raised()
            && self
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Ready once the flag is raised.
    pub(crate) fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_raised() {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_raised() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Forgets `waker` (a task that stopped waiting before the flag was raised), so that a
    /// long-lived flag does not keep one waker for every task that ever waited on it.
    #[cfg_attr(not(feature = "shm"), allow(dead_code))]
    pub(crate) fn forget(&self, waker: &Waker) {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|w| !w.will_wake(waker));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn a_forgotten_waker_is_not_kept() {
        let signal = Signal::default();
        let waker = &Waker::from(Arc::new(Nothing));
        let mut cx = Context::from_waker(waker);
        assert!(signal.poll_raised(&mut cx).is_pending());
        assert!(signal.poll_raised(&mut cx).is_pending());
        assert_eq!(signal.waiters.lock().unwrap().len(), 1);
        signal.forget(waker);
        assert!(signal.waiters.lock().unwrap().is_empty());
        signal.raise();
        assert!(signal.poll_raised(&mut cx).is_ready());
    }
}
