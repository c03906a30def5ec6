//! The listener's back-off after failed accepts (`Admission::accept_failed`).

use std::time::Instant;

use xrpc_proto::{Admission, PeerKey, ServerConfig};

#[test]
fn failed_accepts_back_off_and_an_accept_resets() {
    let mut p = Admission::new(&ServerConfig {
        max_connections: 1,
        max_connections_per_peer: 1,
        ..ServerConfig::default()
    });
    let t0 = Instant::now();
    let first = p.accept_failed(t0) - t0;
    let second = p.accept_failed(t0) - t0;
    assert!(second > first, "{first:?} then {second:?}");
    for _ in 0..20 {
        p.accept_failed(t0);
    }
    assert!(p.accept_failed(t0) - t0 <= std::time::Duration::from_secs(1));
    let _ = p.admit(PeerKey::Uid(1));
    assert_eq!(p.accept_failed(t0) - t0, first);
}
