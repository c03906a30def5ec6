//! Doorbells no peer can make blocking (issue 24): a hostile peer of the same user
//! ([`HostilePeer`]) announces sleepers everywhere, so that each publish and each release of
//! the honest side rings a doorbell; clears `O_NONBLOCK` on every doorbell it can reach — as a
//! server, the client's end of the room socket too, whose open file description the client
//! shares; fills the honest side's doorbells and never reads its own. The honest side's sends
//! and receives still never wait on it: each ends (by its deadline at the latest), and another
//! connection is served meanwhile.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use xrpc_shm::testing::{HostilePeer, unique_name};
use xrpc_shm::{ShmConfig, ShmConnection, ShmError, ShmListener};

fn config() -> ShmConfig {
    ShmConfig {
        ring_capacity: 64 * 1024,
        max_frame_size: 16 * 1024,
        ..ShmConfig::default()
    }
}

/// Frames the honest side sends and receives: each publish and release rings the hostile
/// peer's full doorbells, thousands of times past the point where a blocking ring would wait.
const FRAMES: usize = 20_000;

/// Runs `f` on a thread and fails the test if it has not returned within `within` (a ring
/// that waits would hang it forever).
fn within<T: Send + 'static>(
    within: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what}: still waiting after {within:?}"))
}

/// An echo server of `name` on threads, one per connection; every send has a deadline.
fn echo_server(listener: ShmListener) {
    thread::spawn(move || {
        while let Ok(conn) = listener.accept() {
            thread::spawn(move || {
                let (mut tx, mut rx) = conn.split();
                loop {
                    let frame = match rx.recv_bytes(Some(Duration::from_secs(30))) {
                        Ok(f) => f,
                        Err(_) => return,
                    };
                    if tx.send(&frame, Some(Duration::from_secs(1))).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Checks that a well-behaved client of `name` is echoed promptly.
fn good_client_is_served(name: &str) {
    let mut good = ShmConnection::connect(name, config()).unwrap();
    for i in 0..100u32 {
        let start = Instant::now();
        good.send(&i.to_le_bytes(), Some(Duration::from_secs(5)))
            .unwrap();
        let back = good.recv_bytes(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(&back[..], &i.to_le_bytes());
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}

#[test]
fn a_hostile_server_cannot_make_a_client_wait() {
    let name = unique_name("hostile-server");
    let listener = ShmListener::bind(&name, config()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let hostile = {
        let done = done.clone();
        thread::spawn(move || {
            let mut h = HostilePeer::accept(&listener).unwrap();
            h.make_doorbells_blocking().unwrap();
            h.announce_sleepers_everywhere();
            let filled = h.fill_peer_doorbells();
            // Frames for the client to receive (each release rings our room doorbell, which we
            // made blocking for the client and never read); the client's frames freed unread.
            let mut published = 0usize;
            while !done.load(Ordering::Acquire) {
                h.consume_all();
                match h.publish(&[7u8; 200]) {
                    Ok(()) => published += 1,
                    Err(ShmError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            (filled, published)
        })
    };
    let (sent, received) = within(Duration::from_secs(60), "the client", move || {
        let mut c = ShmConnection::connect(&name, config()).unwrap();
        let (mut sent, mut received) = (0, 0);
        while sent < FRAMES || received < FRAMES {
            if sent < FRAMES {
                match c.send(&[1u8; 100], Some(Duration::from_secs(5))) {
                    Ok(()) => sent += 1,
                    Err(e) => panic!("send {sent}: {e}"),
                }
            }
            match c.receiver().recv_bytes(Some(Duration::from_secs(5))) {
                Ok(f) => {
                    assert_eq!(&f[..], &[7u8; 200]);
                    received += 1;
                }
                Err(e) => panic!("receive {received}: {e}"),
            }
        }
        // A call to a server that stops answering ends by its deadline.
        let start = Instant::now();
        done.store(true, Ordering::Release);
        while c
            .receiver()
            .recv_bytes(Some(Duration::from_millis(200)))
            .is_ok()
        {}
        assert!(start.elapsed() < Duration::from_secs(10));
        (sent, received)
    });
    let (filled, published) = hostile.join().unwrap();
    println!(
        "a hostile server ({filled} bytes in the client's doorbells, {published} frames): the \
         client sent {sent} and received {received} frames, every ring against full, blocking \
         doorbells"
    );
}

#[test]
fn a_hostile_client_cannot_make_a_server_wait() {
    let name = unique_name("hostile-client");
    echo_server(ShmListener::bind(&name, config()).unwrap());
    let attacker = {
        let name = name.clone();
        within(Duration::from_secs(60), "the hostile client", move || {
            let mut h = HostilePeer::connect(&name).unwrap();
            h.make_doorbells_blocking().unwrap();
            h.announce_sleepers_everywhere();
            let filled = h.fill_peer_doorbells();
            // Frames for the server to echo (each echo rings our data doorbell, each release
            // our room doorbell: both full, never read); the echoes freed unread.
            let mut published = 0;
            let start = Instant::now();
            while published < FRAMES && start.elapsed() < Duration::from_secs(30) {
                h.consume_all();
                match h.publish(&[3u8; 100]) {
                    Ok(()) => published += 1,
                    Err(ShmError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            // Every frame was echoed (a record of 104 bytes each, and padding at the ring's
            // end): the server went on past full doorbells.
            let echoed = 104 * FRAMES as u64;
            while h.received() < echoed && start.elapsed() < Duration::from_secs(30) {
                h.consume_all();
                thread::yield_now();
            }
            (h, filled, published)
        })
    };
    let (h, filled, published) = attacker;
    assert_eq!(published, FRAMES);
    assert!(
        h.received() >= 104 * FRAMES as u64,
        "the server stopped echoing after {} bytes",
        h.received()
    );
    // Meanwhile (the hostile connection still open, its doorbells still full) another client is
    // served.
    within(Duration::from_secs(30), "a good client", move || {
        good_client_is_served(&name)
    });
    println!(
        "a hostile client ({filled} bytes in the server's doorbells): {published} frames \
         echoed against full doorbells; a good client served meanwhile"
    );
    drop(h);
}
