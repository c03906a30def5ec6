//! Listener admission: which accepted connection is served, whose place it takes at the cap,
//! and how long to wait after failed accepts — the policy every adapter's listener asks. Like
//! the sessions it does no IO: the listener tells it what was accepted (and from whom) and
//! does what it says.
//!
//! The rules ([`ServerConfig::max_connections`], [`ServerConfig::max_connections_per_peer`]):
//! - during a shutdown every connection is refused;
//! - a peer (an IP address over TCP, a user id over Unix sockets and shared memory) that holds
//!   its share of connections gets a new one only in place of one of its own idle ones (no
//!   call in progress), the oldest first — else the newcomer is refused;
//! - at the cap, a newcomer takes the place of an idle connection of the peer that holds the
//!   most, the oldest first — else (every connection busy) it is refused.
//!
//! A connection that only pings is alive (its idle deadline moves) but idle: holding
//! connections open costs a peer its oldest ones as soon as someone else needs room. A
//! reclaimed connection closes at once if it is idle, or shuts down gracefully if a call
//! arrived meanwhile ([`ServerSession::reclaim`](crate::ServerSession::reclaim)).

use core::net::IpAddr;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Instant;

use crate::retry::RetryPolicy;
use crate::server::ServerConfig;

/// How long to wait after failed accepts in a row (a client that vanished, too many open
/// files): 10 ms, doubling up to 1 s.
pub const ACCEPT_BACKOFF: RetryPolicy = RetryPolicy::Exponential {
    base_delay_ms: 10,
    max_delay_ms: 1_000,
};

/// Who a connection comes from, for the per-peer share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A TCP peer's IP address.
    Ip(IpAddr),
    /// A local peer's user id (Unix sockets and shared memory, from `SO_PEERCRED`).
    Uid(u32),
    /// Not known: the connection is a peer of its own.
    Unknown,
}

/// Why an accepted connection is not served (the listener closes it at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The server serves its maximum of connections and all of them have calls in progress.
    #[error("the server serves its maximum of connections, all of them busy")]
    Full,
    /// The peer holds its share of connections and all of them have calls in progress.
    #[error("the peer holds its share of connections, all of them busy")]
    PeerFull,
}

/// A served connection's place in the [`Admission`] table, shared by the listener and the
/// connection's driver: the driver says whether the connection is busy
/// ([`set_busy`](Self::set_busy)) and takes reclaim requests
/// ([`take_reclaim`](Self::take_reclaim)); the connection's end frees the place
/// ([`end`](Self::end), also when the slot's last handle is dropped).
#[derive(Debug, Clone)]
pub struct Slot(Arc<SlotState>);

#[derive(Debug, Default)]
struct SlotState {
    busy: AtomicBool,
    reclaim: AtomicBool,
    ended: AtomicBool,
    /// Woken when the listener reclaims the connection.
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn new() -> Self {
        Self(Arc::default())
    }

    /// Whether the connection has a call in progress or a notification running (a ping does
    /// not count).
    pub fn set_busy(&self, busy: bool) {
        self.0.busy.store(busy, Ordering::Release);
    }

    /// Whether the listener asked for the connection back (once: the request is cleared).
    pub fn take_reclaim(&self) -> bool {
        self.0.reclaim.load(Ordering::Acquire) && self.0.reclaim.swap(false, Ordering::AcqRel)
    }

    /// Who to wake when the connection is reclaimed (its driver).
    pub fn set_waker(&self, waker: Waker) {
        *self.0.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker);
    }

    /// The connection ended: its place is free.
    pub fn end(&self) {
        self.0.ended.store(true, Ordering::Release);
    }

    fn is_busy(&self) -> bool {
        self.0.busy.load(Ordering::Acquire)
    }

    /// Whether the connection ended ([`end`](Self::end)).
    pub fn has_ended(&self) -> bool {
        self.0.ended.load(Ordering::Acquire)
    }

    /// Whether the connection ended, or nobody but the admission table holds the slot.
    fn is_gone(&self) -> bool {
        self.has_ended() || Arc::strong_count(&self.0) == 1
    }

    fn reclaim(&self) {
        self.0.reclaim.store(true, Ordering::Release);
        let waker = self
            .0
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct Entry {
    peer: PeerKey,
    slot: Slot,
}

/// The admission policy of one listener (see the [module docs](self)).
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_peer: usize,
    /// The connections served, by admission order (oldest first).
    served: BTreeMap<u64, Entry>,
    /// How many each known peer holds.
    per_peer_count: HashMap<PeerKey, usize>,
    next: u64,
    shutting_down: bool,
    /// Failed accepts in a row.
    failures: u32,
}

impl Admission {
    /// The policy of `config` (its connection cap and per-peer share).
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            max: config.max_connections,
            per_peer: config.max_connections_per_peer,
            served: BTreeMap::new(),
            per_peer_count: HashMap::new(),
            next: 0,
            shutting_down: false,
            failures: 0,
        }
    }

    /// A connection from `peer` was accepted: its slot if it is to be served (after the
    /// connection whose place it takes, if any, was asked back), or why not.
    pub fn admit(&mut self, peer: PeerKey) -> Result<Slot, Refusal> {
        self.failures = 0;
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        self.forget_ended();
        if peer != PeerKey::Unknown && self.count(peer) >= self.per_peer {
            let victim = self.oldest_idle(|e| e.peer == peer, |_| 0);
            self.reclaim(victim.ok_or(Refusal::PeerFull)?);
        } else if self.served.len() >= self.max {
            let victim = self.oldest_idle(|_| true, |e| self.count(e.peer));
            self.reclaim(victim.ok_or(Refusal::Full)?);
        }
        let slot = Slot::new();
        self.served.insert(
            self.next,
            Entry {
                peer,
                slot: slot.clone(),
            },
        );
        self.next += 1;
        if peer != PeerKey::Unknown {
            *self.per_peer_count.entry(peer).or_default() += 1;
        }
        Ok(slot)
    }

    /// A shutdown started: every connection accepted from now on is refused.
    pub fn start_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// An accept failed at `now`: when to accept again ([`ACCEPT_BACKOFF`], counting the
    /// failures in a row).
    pub fn accept_failed(&mut self, now: Instant) -> Instant {
        self.failures = self.failures.saturating_add(1);
        now + ACCEPT_BACKOFF.delay(self.failures)
    }

    /// Connections served now (those reclaimed are not counted).
    pub fn served(&mut self) -> usize {
        self.forget_ended();
        self.served.len()
    }

    fn count(&self, peer: PeerKey) -> usize {
        match peer {
            PeerKey::Unknown => 1,
            p => self.per_peer_count.get(&p).copied().unwrap_or(0),
        }
    }

    /// The key of the idle connection among those `eligible` with the highest `rank`, the
    /// oldest first.
    fn oldest_idle(
        &self,
        eligible: impl Fn(&Entry) -> bool,
        rank: impl Fn(&Entry) -> usize,
    ) -> Option<u64> {
        let mut best: Option<(u64, usize)> = None;
        for (&key, e) in &self.served {
            if e.slot.is_busy() || !eligible(e) {
                continue;
            }
            let r = rank(e);
            if best.is_none_or(|(_, b)| r > b) {
                best = Some((key, r));
            }
        }
        best.map(|(key, _)| key)
    }

    fn reclaim(&mut self, key: u64) {
        if let Some(e) = self.remove(key) {
            e.slot.reclaim();
        }
    }

    fn remove(&mut self, key: u64) -> Option<Entry> {
        let e = self.served.remove(&key)?;
        if let Some(n) = self.per_peer_count.get_mut(&e.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer_count.remove(&e.peer);
            }
        }
        Some(e)
    }

    fn forget_ended(&mut self) {
        let ended: Vec<u64> = self
            .served
            .iter()
            .filter(|(_, e)| e.slot.is_gone())
            .map(|(&k, _)| k)
            .collect();
        for k in ended {
            self.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: usize, per_peer: usize) -> Admission {
        Admission::new(&ServerConfig {
            max_connections: max,
            max_connections_per_peer: per_peer,
            ..ServerConfig::default()
        })
    }

    const A: PeerKey = PeerKey::Uid(1);
    const B: PeerKey = PeerKey::Uid(2);

    #[test]
    fn at_the_cap_the_oldest_idle_connection_of_the_largest_peer_makes_room() {
        let mut p = policy(4, 4);
        let a: Vec<Slot> = (0..3).map(|_| p.admit(A).unwrap()).collect();
        let b0 = p.admit(B).unwrap();
        a[0].set_busy(true); // a call in progress: never reclaimed
        // A newcomer of B: A holds the most; its oldest idle one goes.
        let b1 = p.admit(B).unwrap();
        assert!(!a[0].take_reclaim());
        assert!(a[1].take_reclaim());
        assert!(!a[1].take_reclaim(), "asked once");
        assert!(!a[2].take_reclaim() && !b0.take_reclaim());
        assert_eq!(p.served(), 4);
        // Now A and B hold 2 each: the oldest idle goes (A's third).
        let _b2 = p.admit(B).unwrap();
        assert!(a[2].take_reclaim());
        // Every connection busy: refused.
        for s in [&a[0], &b0, &b1, &_b2] {
            s.set_busy(true);
        }
        assert_eq!(p.admit(A).unwrap_err(), Refusal::Full);
        // A connection that ends frees its place.
        b0.end();
        assert!(p.admit(A).is_ok());
    }

    #[test]
    fn a_peer_at_its_share_takes_the_place_of_its_own_idle_connections_only() {
        let mut p = policy(100, 2);
        let a0 = p.admit(A).unwrap();
        let a1 = p.admit(A).unwrap();
        let b0 = p.admit(B).unwrap();
        let a2 = p.admit(A).unwrap();
        assert!(a0.take_reclaim(), "its own oldest idle one");
        assert!(!b0.take_reclaim());
        a1.set_busy(true);
        a2.set_busy(true);
        assert_eq!(p.admit(A).unwrap_err(), Refusal::PeerFull);
        assert!(p.admit(B).is_ok(), "another peer is not held back");
        // Unknown peers are each a peer of their own.
        let unknown: Vec<_> = (0..5).map(|_| p.admit(PeerKey::Unknown)).collect();
        assert!(unknown.iter().all(Result::is_ok));
    }

    #[test]
    fn a_dropped_slot_frees_its_place_and_shutdown_refuses() {
        let mut p = policy(1, 1);
        let a = p.admit(A).unwrap();
        a.set_busy(true);
        assert_eq!(p.admit(B).unwrap_err(), Refusal::Full);
        drop(a);
        assert!(p.admit(B).is_ok());
        p.start_shutdown();
        assert_eq!(p.admit(B).unwrap_err(), Refusal::ShuttingDown);
    }
}
