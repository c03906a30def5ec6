//! [`PoolConfig`]: the connection pool's policy — which of an endpoint's connections a call
//! uses, when another is opened, and which are closed (broken ones, and idle ones past the
//! idle timeout). The adapter owns the connections and asks.

use std::time::{Duration, Instant};

/// The pool's settings, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections to one endpoint at most (at least 1).
    pub max_connections: usize,
    /// Calls in flight on every connection of an endpoint before another is opened (a
    /// connection multiplexes calls: one is usually enough).
    pub target_in_flight: usize,
    /// A connection with no call for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    /// Two connections an endpoint, the second past 64 calls in flight; 60 s idle timeout.
    fn default() -> Self {
        Self {
            max_connections: 2,
            target_in_flight: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What the pool knows of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Calls in flight on it.
    pub in_flight: usize,
    /// Whether it is still connected (the health check).
    pub healthy: bool,
    /// When it was last given a call.
    pub last_used: Instant,
}

/// What a call should do for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// Use the connection at this index.
    Use(usize),
    /// Open a new connection.
    Connect,
    /// Wait for a connection being opened.
    Wait,
}

impl PoolConfig {
    /// Which connection a call uses, given the endpoint's healthy `slots` and the number of
    /// connections being opened.
    pub fn checkout(&self, slots: &[Slot], connecting: usize) -> Checkout {
        let room = slots.len() + connecting < self.max_connections.max(1);
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.healthy)
            .min_by_key(|(_, s)| s.in_flight);
        match best {
            Some((i, s)) if s.in_flight < self.target_in_flight || !room => Checkout::Use(i),
            _ if room => Checkout::Connect,
            _ => Checkout::Wait,
        }
    }

    /// Whether a connection is to be closed and dropped from the pool at `now`: it is broken,
    /// or idle past the timeout. (Calls in flight on a dropped connection keep it until they
    /// end.)
    pub fn is_expired(&self, slot: &Slot, now: Instant) -> bool {
        !slot.healthy
            || (slot.in_flight == 0
                && now.saturating_duration_since(slot.last_used) >= self.idle_timeout)
    }
}
