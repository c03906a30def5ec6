//! Rates of work, with the time passed in: a [`TokenBucket`] of bytes per second, one shared by
//! the connections of a server ([`SharedTokenBucket`]), and the rule built on them for
//! decompression ([`DecompressionRate`]).
//!
//! A compression bomb costs the receiver far more than the sender: 557 bytes of Zstd inflate to
//! 16 MiB. Bounding the bytes a connection *holds* ([`DecompressionBudget`](crate::DecompressionBudget))
//! does not bound that work when each payload is dropped at once (a handler whose decode
//! fails); bounding the bytes inflated *per second* does.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens (bytes) a second, holding at most one second's worth. Spending
/// may take it below zero (a whole message is inflated or not): it is *spent* until the debt is
/// paid back.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    balance: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens a second (`usize::MAX`: unlimited).
    pub fn new(rate: usize, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            balance: rate as f64,
            at: now,
        }
    }

    fn is_unlimited(&self) -> bool {
        self.rate >= usize::MAX as f64
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.balance = (self.balance + earned).min(self.rate);
            self.at = now;
        }
    }

    /// Whether the bucket is spent (nothing left, or in debt) at `now`.
    pub fn is_spent(&mut self, now: Instant) -> bool {
        if self.is_unlimited() {
            return false;
        }
        self.refill(now);
        self.balance <= 0.0
    }

    /// Spends `n` tokens at `now` (going into debt if it has fewer).
    pub fn spend(&mut self, now: Instant, n: usize) {
        if self.is_unlimited() {
            return;
        }
        self.refill(now);
        self.balance -= n as f64;
    }

    /// When the bucket is no longer spent, if it is now (as of the last refill).
    pub fn ready_at(&self) -> Option<Instant> {
        if self.is_unlimited() || self.balance > 0.0 || self.rate <= 0.0 {
            return None;
        }
        // One token past the debt, so that the bucket is not spent at that instant.
        let wait = (1.0 - self.balance) / self.rate;
        self.at.checked_add(Duration::try_from_secs_f64(wait).ok()?)
    }
}

/// A [`TokenBucket`] shared by the connections of a server.
#[derive(Debug, Clone)]
pub struct SharedTokenBucket(Arc<Mutex<TokenBucket>>);

impl SharedTokenBucket {
    /// A full shared bucket of `rate` tokens a second (`usize::MAX`: unlimited).
    pub fn new(rate: usize, now: Instant) -> Self {
        Self(Arc::new(Mutex::new(TokenBucket::new(rate, now))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// See [`TokenBucket::is_spent`].
    pub fn is_spent(&self, now: Instant) -> bool {
        self.with(|b| b.is_spent(now))
    }

    /// See [`TokenBucket::spend`].
    pub fn spend(&self, now: Instant, n: usize) {
        self.with(|b| b.spend(now, n));
    }

    /// The rate, tokens a second.
    pub fn rate(&self) -> usize {
        self.with(|b| b.rate as usize)
    }
}

/// How many bytes a server inflates a second: per connection
/// ([`ServerConfig::decompression_rate`](crate::ServerConfig::decompression_rate)) and over all
/// its connections ([`ServerConfig::decompression_rate_total`](crate::ServerConfig::decompression_rate_total)).
///
/// The rule, for a compressed message that declares `n` decompressed bytes:
/// - the connection's bucket spent → the message is refused without being inflated
///   (`ResourceExhausted`: it came in the same read as the message that spent it);
/// - else the server's bucket spent → refused the same way (the server inflates no more this
///   second, whoever asks; uncompressed messages are not affected);
/// - else it is inflated and `n` is taken from both buckets. If that leaves the connection's
///   bucket spent, the connection is **paused** — its input is not read — until the bucket
///   has paid its debt back ([`paused_until`](Self::paused_until)), so a peer that sends bombs
///   is slowed to its rate instead of answered with refusals as fast as it can write.
#[derive(Debug, Clone)]
pub struct DecompressionRate {
    own: TokenBucket,
    total: Option<SharedTokenBucket>,
    paused_until: Option<Instant>,
}

impl DecompressionRate {
    /// A connection's rate of `rate` bytes a second, starting full at `now`.
    pub fn new(rate: usize, now: Instant) -> Self {
        Self {
            own: TokenBucket::new(rate, now),
            total: None,
            paused_until: None,
        }
    }

    /// Takes from the server-wide bucket `total` too.
    pub fn set_total(&mut self, total: SharedTokenBucket) {
        self.total = Some(total);
    }

    /// Admits inflating `n` bytes at `now` (and charges them), or says why not.
    pub fn admit(&mut self, now: Instant, n: usize) -> Result<(), String> {
        if self.own.is_spent(now) {
            return Err(format!(
                "decompressing more than {} bytes a second on this connection",
                self.own.rate as usize
            ));
        }
        if let Some(total) = &self.total
            && total.is_spent(now)
        {
            return Err(format!(
                "the server decompresses at most {} bytes a second",
                total.rate()
            ));
        }
        self.own.spend(now, n);
        if let Some(total) = &self.total {
            total.spend(now, n);
        }
        self.paused_until = self.own.ready_at();
        Ok(())
    }

    /// Until when the connection's input is not read (its bucket paying back a debt).
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// The pause ends at its time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|at| now >= at) {
            self.paused_until = None;
        }
    }
}
