//! [`RetryPolicy`]: how long to wait between attempts (connecting, accepting) — a pure
//! policy the adapters apply.

use std::time::Duration;

/// How long to wait between connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// The same delay after every failed attempt.
    Fixed {
        /// The delay in milliseconds.
        delay_ms: u64,
    },
    /// `base_delay_ms × n` after the `n`-th failed attempt.
    Linear {
        /// The delay after the first failed attempt, in milliseconds.
        base_delay_ms: u64,
    },
    /// `base_delay_ms × 2ⁿ⁻¹` after the `n`-th failed attempt, at most `max_delay_ms`.
    Exponential {
        /// The delay after the first failed attempt, in milliseconds.
        base_delay_ms: u64,
        /// The longest delay, in milliseconds.
        max_delay_ms: u64,
    },
}

impl Default for RetryPolicy {
    /// Exponential from 50 ms up to 2 s.
    fn default() -> Self {
        Self::Exponential {
            base_delay_ms: 50,
            max_delay_ms: 2_000,
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempt`-th failed attempt (1-based; 0 is treated as 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use xrpc_proto::RetryPolicy;
    /// let p = RetryPolicy::Exponential { base_delay_ms: 10, max_delay_ms: 50 };
    /// assert_eq!(p.delay(1), Duration::from_millis(10));
    /// assert_eq!(p.delay(3), Duration::from_millis(40));
    /// assert_eq!(p.delay(30), Duration::from_millis(50));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let ms = match *self {
            Self::Fixed { delay_ms } => delay_ms,
            Self::Linear { base_delay_ms } => base_delay_ms.saturating_mul(u64::from(n)),
            Self::Exponential {
                base_delay_ms,
                max_delay_ms,
            } => {
                let factor = 1u64.checked_shl(n - 1).unwrap_or(u64::MAX);
                base_delay_ms.saturating_mul(factor).min(max_delay_ms)
            }
        };
        Duration::from_millis(ms)
    }
}
