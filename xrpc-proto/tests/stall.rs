//! The write-stall deadline (`xrpc_proto::stall::WriteStall`).

use std::time::{Duration, Instant};

use xrpc_proto::stall::WriteStall;

#[test]
fn progress_restarts_the_wait_and_an_empty_transport_ends_it() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut w = WriteStall::default();
    assert_eq!(w.deadline(Some(s)), None);
    w.update(t0, 100);
    assert_eq!(w.deadline(Some(s)), Some(t0 + s));
    w.update(t0 + s / 2, 100); // no progress
    assert_eq!(w.deadline(Some(s)), Some(t0 + s));
    w.update(t0 + s / 2, 60); // progress
    assert_eq!(w.deadline(Some(s)), Some(t0 + s / 2 + s));
    assert_eq!(w.deadline(None), None);
    w.update(t0 + s, 0);
    assert_eq!(w.deadline(Some(s)), None);
}
