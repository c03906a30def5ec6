//! Decompression rates: a token bucket per connection and one per server (`xrpc_proto::rate`).

use std::time::{Duration, Instant};

use xrpc_proto::rate::{DecompressionRate, SharedTokenBucket, TokenBucket};

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_bucket_refills_at_its_rate_and_holds_a_second_at_most() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(1000, t0);
    assert!(!b.is_spent(t0));
    b.spend(t0, 1500);
    assert!(b.is_spent(t0));
    let ready = b.ready_at().unwrap();
    assert!(ready > t0 + 500 * MS && ready <= t0 + 502 * MS, "{ready:?}");
    assert!(b.is_spent(t0 + 499 * MS));
    assert!(!b.is_spent(ready));
    // Idle for long, it holds one second's worth, not more.
    b.spend(t0 + 10_000 * MS, 1000);
    assert!(b.is_spent(t0 + 10_000 * MS));
    let unlimited = &mut TokenBucket::new(usize::MAX, t0);
    unlimited.spend(t0, usize::MAX);
    assert!(!unlimited.is_spent(t0));
    assert_eq!(unlimited.ready_at(), None);
}

#[test]
fn a_connection_is_paused_by_its_debt_and_refused_by_the_servers() {
    let t0 = Instant::now();
    let total = SharedTokenBucket::new(3000, t0);
    let mut a = DecompressionRate::new(1000, t0);
    let mut b = DecompressionRate::new(1000, t0);
    a.set_total(total.clone());
    b.set_total(total.clone());
    // One message past the connection's balance is inflated; then it is paused.
    assert_eq!(a.admit(t0, 2000), Ok(()));
    let until = a.paused_until().expect("paused");
    assert!(until > t0 + 1000 * MS, "{until:?}");
    // A message that came in the same read is refused.
    assert!(a.admit(t0, 10).unwrap_err().contains("on this connection"));
    a.handle_timeout(until - MS);
    assert!(a.paused_until().is_some());
    a.handle_timeout(until);
    assert_eq!(a.paused_until(), None);
    // The server's bucket: 3000 − 2000; `b` spends the rest and then is refused too.
    assert_eq!(b.admit(t0, 1000), Ok(()));
    assert!(b.admit(t0, 1).unwrap_err().contains("on this connection"));
    let mut c = DecompressionRate::new(1000, t0);
    c.set_total(total);
    assert!(c.admit(t0, 1).unwrap_err().contains("the server"));
    assert_eq!(c.admit(t0 + 500 * MS, 1), Ok(()));
}
