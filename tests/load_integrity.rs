//! Load and integrity (issue 14), over TCP, Unix sockets and shared memory:
//!
//! - 64 clients, each on its own connection with 4 calls in flight, make `N` calls each
//!   (10,000 with `XRPC_SOAK=1`; fewer in the short CI suite, see [`CALLS_SHORT`]); every
//!   answer is checked against its request and the server counts every request it handles:
//!   0 lost (every call answered), 0 duplicated (each request handled once), 0 misrouted (each
//!   answer is its own request's);
//! - a consumer of a server stream that reads 1% of what its producer would send: the
//!   server's memory (its RSS, in a child process) stays flat while the producer waits for
//!   credit.

#[macro_use]
mod reliability;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reliability::{Addr, AnyClient, AnyListener, Echo, Kind, rss_of, runtime, scale};

/// Clients, each on its own connection.
const CLIENTS: u32 = 64;
/// Calls in flight per client.
const IN_FLIGHT: u32 = 4;
/// Calls per client in the short suite: the whole run (three transports at once, debug build)
/// stays well under a minute on two cores.
const CALLS_SHORT: usize = 400;
/// Calls per client in the soak.
const CALLS_SOAK: usize = 10_000;

/// The child process: a test server. A no-op as an ordinary test.
#[test]
fn peer_entry() {
    if let Some((_, addr)) = xrpc_shm::testing::peer_role() {
        reliability::run_server_process(&addr);
    }
}

fn many_clients(kind: Kind) {
    let calls = scale(CALLS_SHORT, CALLS_SOAK);
    let rt = runtime();
    // handled[client * calls + seq]: how many times the server handled that request.
    let handled: Arc<Vec<AtomicU32>> = Arc::new(
        (0..CLIENTS as usize * calls)
            .map(|_| AtomicU32::new(0))
            .collect(),
    );
    let server = reliability::test_server();
    let h = handled.clone();
    server.register_typed("track", move |e: Echo| {
        let slot = (e.client as usize)
            .checked_mul(calls)
            .and_then(|i| i.checked_add(e.seq as usize))
            .and_then(|i| h.get(i));
        match slot {
            Some(n) => {
                n.fetch_add(1, Ordering::SeqCst);
            }
            None => panic!("a request that no client sent: {e:?}"),
        }
        async move { Ok(e) }
    });
    let start = Instant::now();
    let (lost, misrouted) = rt.block_on(async {
        let (listener, addr) = AnyListener::bind(&Addr::fresh(kind, "load")).await.unwrap();
        tokio::spawn(listener.serve(server));
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let c = AnyClient::connect_retrying(&addr).await;
            for lane in 0..IN_FLIGHT {
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut lost, mut misrouted) = (Vec::new(), 0usize);
                    for seq in (lane as usize..calls).step_by(IN_FLIGHT as usize) {
                        let req = Echo::new(client, seq as u64);
                        match on!(&c, c => c.call::<_, Echo>("track", &req).await) {
                            Ok(answer) if answer == req => {}
                            Ok(_) => misrouted += 1,
                            Err(e) => lost.push(format!("{client}/{seq}: {e}")),
                        }
                    }
                    (lost, misrouted)
                }));
            }
        }
        let (mut lost, mut misrouted) = (Vec::new(), 0);
        for t in tasks {
            let (l, m) = t.await.unwrap();
            lost.extend(l);
            misrouted += m;
        }
        (lost, misrouted)
    });
    let took = start.elapsed();
    let duplicated = handled
        .iter()
        .filter(|n| n.load(Ordering::SeqCst) > 1)
        .count();
    let unhandled = handled
        .iter()
        .filter(|n| n.load(Ordering::SeqCst) == 0)
        .count();
    let total = CLIENTS as usize * calls;
    println!(
        "{kind:?}: {CLIENTS} clients × {calls} calls ({IN_FLIGHT} in flight each) = {total} calls \
         in {took:.1?} ({:.0} calls/s): {} lost, {duplicated} duplicated, {misrouted} misrouted, \
         {unhandled} never reached the handler",
        total as f64 / took.as_secs_f64(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{kind:?}: lost calls, first: {:?}",
        &lost[..lost.len().min(5)]
    );
    assert_eq!(misrouted, 0, "{kind:?}: answers to other calls");
    assert_eq!(duplicated, 0, "{kind:?}: requests handled more than once");
    assert_eq!(unhandled, 0, "{kind:?}: requests never handled");
}

#[test]
fn many_clients_over_tcp() {
    many_clients(Kind::Tcp);
}

#[test]
fn many_clients_over_unix() {
    many_clients(Kind::Unix);
}

#[test]
fn many_clients_over_shm() {
    many_clients(Kind::Shm);
}

/// What the producer would send: 10,000 items of 16 KiB a second (160 MB/s).
const PRODUCER_PERIOD_US: u64 = 100;
const ITEM: usize = 16 * 1024;
/// What the consumer reads: 100 items a second, 1% of it.
const CONSUMER_PERIOD: Duration = Duration::from_millis(10);
/// How much the server's RSS may grow while the consumer lags (were the producer not held by
/// the consumer's credit, it would queue 800 MB in the 5 s of the short run).
const RSS_GROWTH_BOUND: u64 = 64 << 20;

fn slow_consumer(kind: Kind) {
    let rt = runtime();
    let (server, addr, pid) = reliability::spawn_server_process(&Addr::fresh(kind, "slow"));
    let pid = pid.to_string();
    let run_for = Duration::from_secs(scale(5, 60) as u64);
    rt.block_on(async {
        let c = AnyClient::connect_retrying(&addr).await;
        let mut blobs = on!(&c, c => c
            .call_server_stream::<_, Vec<u8>>("blobs", &(PRODUCER_PERIOD_US, ITEM))
            .await
            .unwrap());
        // Warm up: the first second's reads, then the baseline.
        let start = Instant::now();
        let mut read = 0usize;
        let mut base = None;
        let mut peak = 0u64;
        while start.elapsed() < run_for {
            let item = blobs
                .recv()
                .await
                .expect("the stream goes on")
                .expect("an item");
            assert_eq!(item.len(), ITEM);
            read += 1;
            tokio::time::sleep(CONSUMER_PERIOD).await;
            let rss = rss_of(&pid);
            if start.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let base = *base.get_or_insert(rss);
            peak = peak.max(rss);
            assert!(
                rss < base + RSS_GROWTH_BOUND,
                "{kind:?}: the server grew from {} to {} MiB while its consumer lagged",
                base >> 20,
                rss >> 20
            );
        }
        let base = base.expect("a baseline");
        println!(
            "{kind:?}: a consumer reading {read} items in {run_for:?} (1% of its producer's \
             rate): server RSS {} MiB after 1 s, peak {} MiB",
            base >> 20,
            peak >> 20
        );
    });
    drop(server);
    reliability::remove_socket_file(&addr);
}

#[test]
fn a_slow_consumer_holds_the_server_flat_over_tcp() {
    slow_consumer(Kind::Tcp);
}

#[test]
fn a_slow_consumer_holds_the_server_flat_over_unix() {
    slow_consumer(Kind::Unix);
}

#[test]
fn a_slow_consumer_holds_the_server_flat_over_shm() {
    slow_consumer(Kind::Shm);
}
