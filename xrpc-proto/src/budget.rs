//! Server-wide budgets, shared by the sessions of all its connections, so that many peers
//! cannot add up to more than one bound:
//! - [`OutputBudget`]: bytes of answers queued;
//! - [`ReadBudget`]: bytes of read buffers holding frames not yet whole;
//! - [`HandlerBudget`]: handlers running (calls in progress and notifications);
//! - and, in their own modules, bytes of decompressed payloads held
//!   ([`DecompressionBudget`]) and bytes inflated a second ([`SharedTokenBucket`]).
//!
//! [`ServerBounds`] holds one of each for a server, made from its [`ServerConfig`].
//!
//! A session or a decoder cannot wake the others: when someone waits for a total to fall,
//! `take_freed` tells the adapter to wake every connection once it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::compression::DecompressionBudget;
use crate::rate::SharedTokenBucket;
use crate::server::ServerConfig;

/// The bounds the connections of one server share, made from the `*_total` fields of its
/// [`ServerConfig`]: one per server, given to the session of each of its connections
/// ([`ServerSession::set_bounds`](crate::ServerSession::set_bounds)). The read budget goes to
/// whoever frames the input: the session ([`ServerSession::set_read_budget`](crate::ServerSession::set_read_budget))
/// or a transport that frames itself.
#[derive(Debug, Clone)]
pub struct ServerBounds {
    /// Bytes of answers queued ([`ServerConfig::max_queued_output_total`]).
    pub output: OutputBudget,
    /// Bytes of read buffers of frames not yet whole ([`ServerConfig::max_read_buffers_total`]).
    pub reads: ReadBudget,
    /// Bytes of decompressed payloads held ([`ServerConfig::decompression_budget_total`]).
    pub decompressed: DecompressionBudget,
    /// Bytes inflated a second ([`ServerConfig::decompression_rate_total`]).
    pub decompression_rate: SharedTokenBucket,
    /// Handlers running ([`ServerConfig::max_concurrent_calls_total`]).
    pub handlers: HandlerBudget,
    /// What the server counts ([`ServerStats`](crate::ServerStats)).
    pub counters: crate::stats::ServerCounters,
}

impl ServerBounds {
    /// The bounds of a server configured with `config`, starting at `now`.
    pub fn new(config: &ServerConfig, now: Instant) -> Self {
        Self {
            output: OutputBudget::new(config.max_queued_output_total),
            reads: ReadBudget::new(config.max_read_buffers_total),
            decompressed: DecompressionBudget::new(config.decompression_budget_total),
            decompression_rate: SharedTokenBucket::new(config.decompression_rate_total, now),
            handlers: HandlerBudget::new(config.max_concurrent_calls_total),
            counters: crate::stats::ServerCounters::default(),
        }
    }
}

/// A server-wide bound on the handlers running — calls in progress and notifications — on all
/// the connections of a server ([`ServerConfig::max_concurrent_calls_total`]), with a fair
/// share: past the limit, a connection still starts a handler while it runs fewer than its
/// share (the limit over the connections sharing it), so one peer's flood cannot lock the
/// others out. The total stays below twice the limit.
#[derive(Debug, Clone)]
pub struct HandlerBudget(Arc<Handlers>);

#[derive(Debug)]
struct Handlers {
    running: AtomicUsize,
    /// Connections sharing the budget.
    members: AtomicUsize,
    limit: usize,
}

/// One connection's share of a [`HandlerBudget`] (it counts as a member until dropped).
#[derive(Debug)]
pub struct HandlerShare(Arc<Handlers>);

/// One running handler, counted until dropped.
#[derive(Debug)]
pub struct HandlerSlot(Arc<Handlers>);

impl HandlerBudget {
    /// A budget of `limit` handlers.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Handlers {
            running: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
            limit,
        }))
    }

    /// A connection joins (until its share is dropped).
    pub fn join(&self) -> HandlerShare {
        self.0.members.fetch_add(1, Ordering::AcqRel);
        HandlerShare(self.0.clone())
    }

    /// Handlers running on every connection now.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.0.limit
    }
}

impl HandlerShare {
    /// A slot for one more handler on a connection that runs `mine` now: if the server runs
    /// fewer than its limit, or the connection fewer than its fair share.
    pub fn try_start(&self, mine: usize) -> Option<HandlerSlot> {
        let h = &self.0;
        let share = h.limit / h.members.load(Ordering::Acquire).max(1);
        h.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < h.limit || mine < share).then_some(n + 1)
            })
            .ok()?;
        Some(HandlerSlot(h.clone()))
    }

    /// The server-wide limit.
    pub fn limit(&self) -> usize {
        self.0.limit
    }
}

impl Drop for HandlerShare {
    fn drop(&mut self) {
        self.0.members.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for HandlerSlot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A server-wide budget of queued output, shared by the sessions of its connections (see
/// [`ServerSession::set_output_budget`](crate::ServerSession::set_output_budget)). Each
/// session charges the answers it queues and releases them as the transport takes them; a
/// stream send waits while the total is over the limit, like it does for its own connection's
/// [`ServerConfig::max_transmit_backlog`](crate::ServerConfig::max_transmit_backlog).
#[derive(Debug, Clone)]
pub struct OutputBudget(Pool);

/// A server-wide budget of bytes that read buffers reserve for frames not yet whole
/// ([`ServerConfig::max_read_buffers_total`](crate::ServerConfig::max_read_buffers_total)),
/// shared by the [`FrameDecoder`](crate::FrameDecoder)s of a server's connections. A decoder
/// with a budget grows its buffer past [`ReadBudget::UNCHARGED`] bytes only with room taken
/// from it; when there is none it asks its transport to wait
/// ([`FrameDecoder::try_read_buffer`](crate::FrameDecoder::try_read_buffer) returns `None`),
/// so peers that send most of a large frame and stop hold one bound together, not one frame
/// each — until the partial-frame deadline closes them.
#[derive(Debug, Clone)]
pub struct ReadBudget(Pool);

/// The shared counter of both budgets.
#[derive(Debug, Clone)]
struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    held: AtomicUsize,
    limit: usize,
    /// Someone waits for the total to fall.
    waiting: AtomicBool,
}

impl Pool {
    fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                held: AtomicUsize::new(0),
                limit,
                waiting: AtomicBool::new(false),
            }),
        }
    }

    fn held(&self) -> usize {
        self.inner.held.load(Ordering::Acquire)
    }

    fn charge(&self, n: usize) {
        self.inner.held.fetch_add(n, Ordering::AcqRel);
    }

    /// Charges `n` if the total stays within the limit, or if nobody but the caller (who
    /// holds `mine`) holds any of it.
    fn try_charge(&self, n: usize, mine: usize) -> bool {
        self.inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n)
                    .filter(|&t| t <= self.inner.limit || held <= mine)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.inner.held.fetch_sub(n, Ordering::AcqRel);
    }

    fn wait(&self) {
        self.inner.waiting.store(true, Ordering::Release);
    }

    /// Whether someone waited and the total has fallen to half the limit since (so that
    /// waking everyone is worth it: the room freed is large). Clears the mark.
    fn take_freed(&self) -> bool {
        self.inner.waiting.load(Ordering::Acquire)
            && self.held() <= self.inner.limit / 2
            && self.inner.waiting.swap(false, Ordering::AcqRel)
    }
}

impl OutputBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self(Pool::new(limit))
    }

    /// Bytes queued on every connection now.
    pub fn queued(&self) -> usize {
        self.0.held()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.0.inner.limit
    }

    /// Whether the total is at or over the limit.
    pub fn is_over(&self) -> bool {
        self.queued() >= self.limit()
    }

    pub(crate) fn charge(&self, n: usize) {
        self.0.charge(n);
    }

    pub(crate) fn release(&self, n: usize) {
        self.0.release(n);
    }

    /// A stream waits for the total to fall.
    pub(crate) fn wait(&self) {
        self.0.wait();
    }

    /// Whether streams waited and the total has fallen to half the limit since: the adapter
    /// should wake every connection (each session then retries its waiting streams). Clears
    /// the mark.
    pub fn take_freed(&self) -> bool {
        self.0.take_freed()
    }
}

impl ReadBudget {
    /// Bytes of buffer each decoder holds without charging the budget: enough for many small
    /// frames and the first chunk of a large one, so that a connection between frames never
    /// waits for the others.
    pub const UNCHARGED: usize = 2 * crate::frame::READ_CHUNK;

    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self(Pool::new(limit))
    }

    /// Bytes charged by every decoder now.
    pub fn held(&self) -> usize {
        self.0.held()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.0.inner.limit
    }

    /// Charges `n` bytes if the total stays within the limit (or if the caller, holding
    /// `mine`, is the only one holding any); otherwise marks that a decoder waits and returns
    /// `false`.
    pub(crate) fn try_charge(&self, n: usize, mine: usize) -> bool {
        if self.0.try_charge(n, mine) {
            return true;
        }
        self.0.wait();
        false
    }

    /// Charges `n` bytes whatever the total (memory already held).
    pub(crate) fn charge(&self, n: usize) {
        self.0.charge(n);
    }

    pub(crate) fn release(&self, n: usize) {
        self.0.release(n);
    }

    /// Whether a decoder waited and the total has fallen to half the limit since: the adapter
    /// should wake every connection (each retries its read). Clears the mark.
    pub fn take_freed(&self) -> bool {
        self.0.take_freed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_past_the_limit_is_refused_and_marks_a_waiter() {
        let b = ReadBudget::new(100);
        assert!(b.try_charge(60, 0));
        assert!(!b.try_charge(41, 0));
        assert_eq!(b.held(), 60);
        // Not freed until the total falls to half the limit.
        b.release(5);
        assert!(!b.take_freed());
        b.release(5);
        assert!(b.take_freed());
        assert!(!b.take_freed(), "the mark is cleared");
        assert!(b.try_charge(50, 0));
        // Alone, a decoder may go past the limit (a frame larger than the budget).
        let alone = ReadBudget::new(100);
        assert!(alone.try_charge(30, 0));
        assert!(alone.try_charge(200, 30));
    }

    #[test]
    fn past_the_handler_limit_a_connection_gets_its_fair_share() {
        let budget = HandlerBudget::new(10);
        let (flood, quiet) = (budget.join(), budget.join());
        let mut held: Vec<HandlerSlot> = Vec::new();
        // The flooding connection fills the limit; past it, it is refused.
        for _ in 0..10 {
            held.push(flood.try_start(held.len()).unwrap());
        }
        assert!(flood.try_start(10).is_none());
        // The quiet one still gets up to its share (10 / 2).
        let quiet_slots: Vec<_> = (0..5).map(|n| quiet.try_start(n).unwrap()).collect();
        assert!(quiet.try_start(5).is_none());
        assert_eq!(budget.running(), 15);
        drop((held, quiet_slots));
        assert_eq!(budget.running(), 0);
        drop(quiet);
        // Alone, a connection's share is the whole limit.
        assert!(flood.try_start(9).is_some());
    }

    #[test]
    fn output_budget_is_freed_only_after_a_wait() {
        let b = OutputBudget::new(10);
        b.charge(20);
        assert!(b.is_over());
        b.release(20);
        assert!(!b.take_freed());
        b.charge(20);
        b.wait();
        b.release(20);
        assert!(b.take_freed());
    }
}
