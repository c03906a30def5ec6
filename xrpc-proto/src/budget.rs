//! [`OutputBudget`]: bytes of answers queued on every connection of a server together, so that
//! many stalled clients cannot add up to more than one bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A server-wide budget of queued output, shared by the sessions of its connections (see
/// [`ServerSession::set_output_budget`](crate::ServerSession::set_output_budget)). Each
/// session charges the answers it queues and releases them as the transport takes them; a
/// stream send waits while the total is over the limit, like it does for its own connection's
/// [`ServerConfig::max_transmit_backlog`](crate::ServerConfig::max_transmit_backlog).
///
/// A session cannot wake the others: when a stream waits for the total to fall,
/// [`take_freed`](Self::take_freed) tells the adapter to wake every connection once it has.
#[derive(Debug, Clone)]
pub struct OutputBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queued: AtomicUsize,
    limit: usize,
    /// A stream waits for the total to fall.
    waiting: AtomicBool,
}

impl OutputBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                queued: AtomicUsize::new(0),
                limit,
                waiting: AtomicBool::new(false),
            }),
        }
    }

    /// Bytes queued on every connection now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Whether the total is at or over the limit.
    pub fn is_over(&self) -> bool {
        self.queued() >= self.inner.limit
    }

    pub(crate) fn charge(&self, n: usize) {
        self.inner.queued.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn release(&self, n: usize) {
        self.inner.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// A stream waits for the total to fall.
    pub(crate) fn wait(&self) {
        self.inner.waiting.store(true, Ordering::Release);
    }

    /// Whether streams waited and the total has fallen to half the limit since: the adapter
    /// should wake every connection (each session then retries its waiting streams). Clears
    /// the mark.
    pub fn take_freed(&self) -> bool {
        self.inner.waiting.load(Ordering::Acquire)
            && self.queued() <= self.inner.limit / 2
            && self.inner.waiting.swap(false, Ordering::AcqRel)
    }
}
