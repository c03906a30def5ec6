//! A runtime timer made when the process has no descriptor left (a peer can bring a server
//! there: the listener's accept back-off timer is made right after `EMFILE`) is async-io's
//! own instead of a timer descriptor, and fires all the same. This binary holds one test: it
//! lowers the process's limit of open files.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::fs::File;
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use xrpc_async::Runtime;
use xrpc_smol::Smol;

#[test]
fn a_timer_made_with_no_descriptor_left_still_fires() {
    // async-io's reactor makes its own descriptors on first use: before the table is full.
    smol::block_on(async_io::Timer::after(Duration::from_millis(1)));
    let old = getrlimit(Resource::Nofile);
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count()) as u64;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(open + 8),
            maximum: old.maximum,
        },
    )
    .expect("lower RLIMIT_NOFILE");
    // Take every descriptor left.
    let mut held = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        held.push(f);
        assert!(held.len() < 64, "the limit did not hold");
    }
    let start = Instant::now();
    let fired = smol::block_on(futures_lite::future::or(
        async {
            Smol.timer(start + Duration::from_millis(20)).await;
            true
        },
        async {
            async_io::Timer::after(Duration::from_secs(5)).await;
            false
        },
    ));
    let elapsed = start.elapsed();
    drop(held);
    setrlimit(Resource::Nofile, old).expect("restore RLIMIT_NOFILE");
    assert!(fired, "the timer did not fire within 5 s");
    assert!(
        elapsed >= Duration::from_millis(20),
        "fired early: {elapsed:?}"
    );
}
