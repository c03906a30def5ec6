//! [`PoolConfig`]: the connection pool's policy — which of an endpoint's connections a call
//! uses, when another is opened, which are closed (broken ones, idle ones past the idle
//! timeout), and, at the cap on connections across every endpoint, which idle connection
//! makes room for a new one. The adapter owns the connections and asks.

use std::time::{Duration, Instant};

/// The pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections to one endpoint at most (at least 1).
    pub max_connections: usize,
    /// Connections open or being opened across every endpoint at most (at least 1): a
    /// discovery that returns thousands of endpoints costs at most this many descriptors and
    /// connection buffers. At the cap, a call to an endpoint without a connection closes the
    /// least recently used idle connection of another endpoint, or waits for one to be idle.
    pub max_total_connections: usize,
    /// Calls in flight on every connection of an endpoint before another is opened (a
    /// connection multiplexes calls: one is usually enough).
    pub target_in_flight: usize,
    /// A connection with no call for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    /// Two connections an endpoint, the second past 64 calls in flight; 128 connections in
    /// all; 60 s idle timeout.
    fn default() -> Self {
        Self {
            max_connections: 2,
            max_total_connections: 128,
            target_in_flight: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What the pool knows of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Calls in flight on it (or checked out to callers about to make one).
    pub in_flight: usize,
    /// Whether it is still connected (the health check).
    pub healthy: bool,
    /// When it was last given a call.
    pub last_used: Instant,
}

impl Slot {
    /// Whether nothing uses the connection.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
    }
}

/// What a call should do for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// Use the connection at this index.
    Use(usize),
    /// Open a new connection.
    Connect,
    /// Open a new connection once another endpoint's idle connection is closed to make room
    /// (the one [`PoolConfig::victim`] names); wait if none is idle.
    MakeRoom,
    /// Wait for a connection being opened.
    Wait,
}

impl PoolConfig {
    /// Which connection a call uses, given the endpoint's healthy `slots`, the number of its
    /// connections being opened, and `total`, the connections open or being opened across
    /// every endpoint.
    pub fn checkout(&self, slots: &[Slot], connecting: usize, total: usize) -> Checkout {
        let endpoint_room = slots.len() + connecting < self.max_connections.max(1);
        let total_room = total < self.max_total_connections.max(1);
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.healthy)
            .min_by_key(|(_, s)| s.in_flight);
        match best {
            Some((i, s)) if s.in_flight < self.target_in_flight => Checkout::Use(i),
            // Past the target: another connection if there is room, else this one.
            Some((i, _)) if !(endpoint_room && total_room) => Checkout::Use(i),
            _ if endpoint_room && total_room => Checkout::Connect,
            // No connection of its own and none can be opened without closing another.
            None if endpoint_room && connecting == 0 => Checkout::MakeRoom,
            _ => Checkout::Wait,
        }
    }

    /// The connection to close to make room at the cap: the least recently used of the idle
    /// ones among `slots` (`None`: none is idle — wait).
    pub fn victim(&self, slots: impl IntoIterator<Item = Slot>) -> Option<usize> {
        slots
            .into_iter()
            .enumerate()
            .filter(|(_, s)| s.is_idle())
            .min_by_key(|(_, s)| s.last_used)
            .map(|(i, _)| i)
    }

    /// Whether a connection is to be closed and dropped from the pool at `now`: it is broken,
    /// or idle past the timeout. (Calls in flight on a dropped connection keep it until they
    /// end.)
    pub fn is_expired(&self, slot: &Slot, now: Instant) -> bool {
        !slot.healthy
            || (slot.is_idle()
                && now.saturating_duration_since(slot.last_used) >= self.idle_timeout)
    }
}
