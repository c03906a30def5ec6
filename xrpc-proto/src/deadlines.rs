//! Deadlines of many calls, earliest first, with lazy removal.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A min-heap of `(deadline, id)`. Entries whose call is gone are skipped by the owner's check.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    pub(crate) fn push(&mut self, at: Instant, id: u64) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest deadline for which `live(id, at)` holds, dropping stale entries on the way.
    pub(crate) fn peek(&mut self, mut live: impl FnMut(u64, Instant) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if live(id, at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops the next call whose deadline (as `deadline_of` reports it now) has passed at
    /// `now`, skipping stale entries.
    pub(crate) fn pop_expired(
        &mut self,
        now: Instant,
        deadline_of: impl Fn(u64) -> Option<Instant>,
    ) -> Option<u64> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if deadline_of(id).is_some_and(|d| d <= now) {
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.heap.clear();
    }
}
