//! Heap allocations of the smol runtime at steady state, counted by the process's global
//! allocator (so this binary holds one test: every thread of the process is counted).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::future::poll_once;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use xrpc_async::Runtime;
use xrpc_shm::testing::{LargestAlloc, allocations};
use xrpc_smol::Smol;

#[global_allocator]
static ALLOC: LargestAlloc = LargestAlloc;

/// Round trips through async-io's reactor while a timer of the runtime is armed, as every
/// connection's driver keeps one for its deadlines: the timer adds no allocation to the
/// reactor's turns. (Each turn that wakes a task allocates once in async-io itself — its list
/// of wakers — which bounds the count: one per round trip. An async-io timer added one more per
/// turn: async-io splits its timer map, allocating a node, at every turn while it holds one.)
#[test]
fn an_armed_timer_adds_no_allocation_to_reactor_turns() {
    const WARM_UP: usize = 100;
    const ROUND_TRIPS: usize = 2_000;
    let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
    // The peer: a thread echoing each byte.
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while theirs.read_exact(&mut b).is_ok() && theirs.write_all(&b).is_ok() {}
    });
    let ours = Async::new(ours).expect("registered with the reactor");
    let made = smol::block_on(async {
        let mut timer = Smol.timer(Instant::now() + Duration::from_secs(3600));
        assert!(poll_once(&mut timer).await.is_none(), "armed, an hour away");
        let round_trip = async || {
            let mut b = [7u8; 1];
            (&ours).write_all(&b).await.expect("write");
            (&ours).read_exact(&mut b).await.expect("read");
        };
        for _ in 0..WARM_UP {
            round_trip().await;
        }
        let before = allocations();
        for _ in 0..ROUND_TRIPS {
            round_trip().await;
        }
        let made = allocations() - before;
        drop(timer);
        made
    });
    drop(ours);
    echo.join().expect("the echo thread");
    // A quarter more for a turn that wakes the task spuriously; async-io's timers made twice.
    assert!(
        made <= (ROUND_TRIPS + ROUND_TRIPS / 4) as u64,
        "{made} allocations in {ROUND_TRIPS} round trips"
    );
}
