//! [`RetryBudget`]: how many calls may be retried, as tower's `retry::budget` — every call
//! deposits a fraction of a retry, every retry withdraws one, over a sliding window; a small
//! reserve per second lets a quiet client retry at all. A failing cluster is then not hammered
//! by retries multiplying its load.

use std::time::{Duration, Instant};

/// The window of slots the budget is kept over.
const SLOTS: usize = 10;

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a deposit counts.
    pub ttl: Duration,
    /// Retries allowed per second whatever the traffic.
    pub min_per_sec: u32,
    /// Retries allowed per call made (0.2: one retry for five calls).
    pub retry_ratio: f64,
}

impl Default for BudgetConfig {
    /// 10 s, 10 retries a second, 20 % of calls.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

/// A retry budget over a sliding window.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: BudgetConfig,
    slots: [Slot; SLOTS],
    /// The slot `current` covers `[start, start + slot_len)`.
    current: usize,
    start: Option<Instant>,
    slot_len: Duration,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            slot_len: (config.ttl / SLOTS as u32).max(Duration::from_millis(1)),
            config,
            slots: [Slot::default(); SLOTS],
            current: 0,
            start: None,
        }
    }

    /// Moves the window to `now`, emptying the slots that fell out of it.
    fn advance(&mut self, now: Instant) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let steps = (elapsed.as_nanos() / self.slot_len.as_nanos()) as u64;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(SLOTS as u64) {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = Slot::default();
        }
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.start = Some(start + self.slot_len.saturating_mul(steps));
    }

    /// A call was made.
    pub fn deposit(&mut self, now: Instant) {
        self.advance(now);
        self.slots[self.current].deposits += 1;
    }

    /// Whether a retry is left at `now` (without taking it).
    pub fn has_retry(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.balance() >= 1.0
    }

    /// Takes one retry from the budget; `false` if it is spent.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        if !self.has_retry(now) {
            return false;
        }
        self.slots[self.current].withdrawals += 1;
        true
    }

    /// Retries left in the window.
    pub fn balance(&self) -> f64 {
        let (d, w) = self.slots.iter().fold((0u64, 0u64), |(d, w), s| {
            (d + s.deposits, w + s.withdrawals)
        });
        let reserve = f64::from(self.config.min_per_sec) * self.config.ttl.as_secs_f64();
        reserve + d as f64 * self.config.retry_ratio - w as f64
    }
}
