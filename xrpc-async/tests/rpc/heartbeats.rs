//! Heartbeats: a silent server is declared gone after its missed pings, exactly; a live one
//! never is. (Real-clock counterpart: the conformance suite's
//! `heartbeats_detect_a_silent_server`, whose no-false-alarm half had to allow 5 misses of
//! 50 ms after 3 of 20 ms failed on a loaded machine.)

use std::time::Duration;

use xrpc_async::testing::TestRuntime;
use xrpc_async::{RpcClientConfig, RpcError};
use xrpc_proto::ServerConfig;

use crate::{MS, US, client, connect, pair, server};

const INTERVAL: Duration = Duration::from_millis(20);
const MISSES: u32 = 3;

fn config() -> RpcClientConfig {
    RpcClientConfig {
        heartbeat_interval: Some(INTERVAL),
        heartbeat_misses: MISSES,
        default_timeout: None,
        ..RpcClientConfig::default()
    }
}

/// A server that reads nothing and answers nothing: the first ping goes out one interval in,
/// and the connection is declared dead when `heartbeat_misses` more intervals pass without a
/// pong — at `(1 + misses) * interval`, not a microsecond before; the pending call fails with
/// `Disconnected` naming the heartbeats.
#[test]
fn a_silent_server_is_declared_gone_after_its_missed_heartbeats() {
    let rt = TestRuntime::new();
    // The server end is connected but never served.
    let (c, _silent) = pair();
    let client = client(&rt, c, config());
    let c2 = client.clone();
    let call = rt.spawn_with_handle(async move { c2.call::<_, u64>("echo", &1u64).await });
    let dead_at = (1 + MISSES) * INTERVAL;
    rt.advance(dead_at - US);
    assert!(!call.is_finished(), "declared dead early");
    assert!(client.is_connected());
    // One request and a ping per interval so far.
    assert_eq!(client.stats().unwrap().frames_sent, 1 + u64::from(MISSES));
    rt.advance(US);
    let r = call.try_take().expect("not declared dead in time");
    assert!(
        matches!(r, Err(RpcError::Disconnected(ref m)) if m.contains("heartbeat")),
        "{r:?}"
    );
    assert!(!client.is_connected());
}

/// A live server busy with a long call answers every ping: no false alarm over 500 intervals,
/// and the call gets its answer.
#[test]
fn a_live_server_keeps_answering_heartbeats() {
    let rt = TestRuntime::new();
    let (client, _serving) = connect(&rt, &server(&rt, ServerConfig::default()), config());
    let c = client.clone();
    let call = rt.spawn_with_handle(async move { c.call::<_, u64>("sleep", &10_000u64).await });
    rt.advance(10_000 * MS - US);
    assert!(!call.is_finished());
    let pings = (10_000 * MS - US).as_nanos() / INTERVAL.as_nanos();
    let stats = client.stats().unwrap();
    assert_eq!(stats.frames_sent, 1 + pings as u64, "a ping per interval");
    assert_eq!(stats.frames_received, pings as u64, "a pong for each");
    rt.advance(US);
    assert_eq!(call.try_take().expect("answered").unwrap(), 10_000);
    assert!(client.is_connected());
}
