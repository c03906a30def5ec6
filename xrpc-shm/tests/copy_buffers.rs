//! A receiver copies small frames out of the ring into a buffer of its own, cut into `Bytes`:
//! frames that live a while (the answers of calls in flight) cost no allocation per buffer's
//! worth of frames once the frames cut from the previous buffer are gone — it is used again,
//! not freed (a free there made the allocator hand the memory back to the kernel, and take it
//! again: a system call and page faults every hundred frames).
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::thread;
use std::time::Duration;

use xrpc_shm::testing::{LargestAlloc, allocations, unique_name};
use xrpc_shm::{ShmConfig, ShmConnection, ShmListener};

#[global_allocator]
static ALLOC: LargestAlloc = LargestAlloc;

const T: Option<Duration> = Some(Duration::from_secs(10));

#[test]
fn frames_that_live_a_while_cost_no_allocation_once_two_buffers_exist() {
    let name = unique_name("copy-buffers");
    let listener = ShmListener::bind(&name, ShmConfig::default()).unwrap();
    let client =
        thread::spawn(move || ShmConnection::connect(&name, ShmConfig::default()).unwrap());
    let mut server = listener.accept().unwrap();
    let mut client = client.join().unwrap();
    let frame = [7u8; 80];
    // 64 frames alive at any time, as the answers of 64 calls in flight until each is decoded.
    let mut alive = VecDeque::new();
    let mut exchange = |rounds: usize| {
        for _ in 0..rounds {
            client.sender().send(&frame, T).unwrap();
            let got = server.receiver().try_recv_bytes().unwrap().unwrap();
            assert_eq!(&got[..], &frame[..]);
            alive.push_back(got);
            if alive.len() > 64 {
                alive.pop_front();
            }
        }
    };
    // Warm up: both buffers are made (each holds about a hundred such frames).
    exchange(1_000);
    let before = allocations();
    exchange(10_000);
    assert_eq!(allocations() - before, 0, "allocations for 10,000 frames");
}
