//! loom models of the ring: every interleaving (up to the preemption bound)
//! of a producer and a consumer thread on the heap-backed storage.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p xrpc-shm --release --test loom`
//!
//! The data region is tracked word by word with `loom::cell::UnsafeCell`, so a
//! read of bytes the producer has not published (a torn frame) fails the
//! model. The futex is modelled by a mutex + condvar with no timeout, so a
//! lost wake-up leaves a thread asleep forever, which loom reports as a
//! deadlock.
#![cfg(loom)]

use loom::thread;
use xrpc_shm::ShmError;
use xrpc_shm::testing::{
    HeapWaiter, close_consumer, close_producer, heap_ring, heap_ring_with_limits, recv_blocking,
    recv_reactor, send_blocking, send_reactor,
};

/// Frames sent one way arrive intact and in order; the consumer sleeps on an
/// empty ring and must be woken (no lost wake-up).
#[test]
fn publish_consume_with_sleep_wake() {
    loom::model(|| {
        let (mut p, mut c, _s) = heap_ring(32, 8).unwrap();
        let producer = thread::spawn(move || {
            send_blocking(&mut p, &[1, 2, 3]).unwrap();
            send_blocking(&mut p, &[4; 8]).unwrap();
        });
        assert_eq!(recv_blocking(&mut c).unwrap(), [1, 2, 3]);
        assert_eq!(recv_blocking(&mut c).unwrap(), [4; 8]);
        producer.join().unwrap();
    });
}

/// A full ring: the producer sleeps until the consumer frees room (the
/// space-side handshake), then wraps around with a padding record.
#[test]
fn full_ring_and_wrap_around() {
    loom::model(|| {
        // Capacity 32: records [] = 8 B at 0, [8 B] = 16 B at 8, then the
        // third frame does not fit before the end: 8 B padding + 16 B at 0,
        // which needs the first two released.
        let (mut p, mut c, _s) = heap_ring(32, 8).unwrap();
        let producer = thread::spawn(move || {
            send_blocking(&mut p, &[]).unwrap();
            send_blocking(&mut p, &[5; 8]).unwrap();
            send_blocking(&mut p, &[6; 8]).unwrap();
        });
        assert_eq!(recv_blocking(&mut c).unwrap(), []);
        assert_eq!(recv_blocking(&mut c).unwrap(), [5; 8]);
        assert_eq!(recv_blocking(&mut c).unwrap(), [6; 8]);
        producer.join().unwrap();
    });
}

/// Non-blocking ends: `try_recv` on an empty ring returns `None`, `try_send`
/// on a full ring returns `Full`, never a torn or phantom frame.
#[test]
fn empty_and_full_without_blocking() {
    loom::model(|| {
        let (mut p, mut c, _s) = heap_ring(32, 8).unwrap();
        let producer = thread::spawn(move || {
            let mut sent = 0u8;
            for i in 0..3u8 {
                match p.try_send(&[i; 8]) {
                    Ok(()) => sent += 1,
                    Err(ShmError::Full) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            sent
        });
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Some(f) = c.try_recv().unwrap() {
                got.push(f.to_vec());
            }
        }
        let sent = producer.join().unwrap();
        while let Some(f) = c.try_recv().unwrap() {
            got.push(f.to_vec());
        }
        assert_eq!(got.len(), sent as usize);
        for f in &got {
            assert_eq!(f.len(), 8);
            assert!(f.iter().all(|&b| b == f[0]), "torn frame {f:?}");
        }
        assert!(sent >= 2, "two 16-byte records fit into 32 bytes");
    });
}

/// An orderly close wakes a sleeping consumer, which drains and then sees
/// `Disconnected`.
#[test]
fn close_wakes_and_drains() {
    loom::model(|| {
        let (mut p, mut c, _s) = heap_ring(32, 8).unwrap();
        let producer = thread::spawn(move || {
            send_blocking(&mut p, &[9]).unwrap();
            close_producer(&p);
        });
        assert_eq!(recv_blocking(&mut c).unwrap(), [9]);
        assert!(matches!(recv_blocking(&mut c), Err(ShmError::Disconnected)));
        producer.join().unwrap();
    });
}

/// A consumer that closes wakes a producer asleep on a full ring (the space-side wake-up of a
/// close); the producer then sees `Disconnected`, never a lost wake-up.
#[test]
fn consumer_close_wakes_a_blocked_producer() {
    loom::model(|| {
        let (mut p, c, _s) = heap_ring(32, 8).unwrap();
        let producer = thread::spawn(move || {
            // Two 16-byte records fill the ring; the next send sleeps until the close, unless
            // the close came first.
            let mut sent = 0;
            loop {
                match send_blocking(&mut p, &[7; 8]) {
                    Ok(()) => sent += 1,
                    Err(e) => return (sent, e),
                }
            }
        });
        close_consumer(&c);
        let (sent, err) = producer.join().unwrap();
        assert!(sent <= 2, "{sent} records in a ring with room for two");
        assert!(matches!(err, ShmError::Disconnected), "{err}");
    });
}

/// The reactor protocol that async adapters use (`prepare_sleep`: announce,
/// re-check; sleep on the doorbell; drain; retract), on both sides at once:
/// the consumer sleeps on an empty ring, the producer on a full one. The
/// doorbell is a counter that never times out, so a lost wake-up is a
/// deadlock loom reports.
#[test]
fn reactor_sleepers_are_rung_both_ways() {
    loom::model(|| {
        let (mut p, mut c, _s) = heap_ring(32, 8).unwrap();
        let pw = HeapWaiter::producer(&p);
        let cw = HeapWaiter::consumer(&c);
        let producer = thread::spawn(move || {
            send_reactor(&mut p, &pw, &[1; 8]).unwrap();
            send_reactor(&mut p, &pw, &[2; 8]).unwrap();
            send_reactor(&mut p, &pw, &[3; 8]).unwrap();
        });
        assert_eq!(recv_reactor(&mut c, &cw).unwrap(), [1; 8]);
        assert_eq!(recv_reactor(&mut c, &cw).unwrap(), [2; 8]);
        assert_eq!(recv_reactor(&mut c, &cw).unwrap(), [3; 8]);
        producer.join().unwrap();
    });
}

/// A reactor sleeper and a futex sleeper on the same ring: the publisher
/// wakes whichever kind sleeps (futex and doorbell), and an orderly close
/// rings the doorbell too.
#[test]
fn reactor_consumer_futex_producer_and_close() {
    loom::model(|| {
        let (mut p, mut c, _s) = heap_ring(32, 8).unwrap();
        let cw = HeapWaiter::consumer(&c);
        let producer = thread::spawn(move || {
            send_blocking(&mut p, &[7; 8]).unwrap();
            close_producer(&p);
        });
        assert_eq!(recv_reactor(&mut c, &cw).unwrap(), [7; 8]);
        assert!(matches!(
            recv_reactor(&mut c, &cw),
            Err(ShmError::Disconnected)
        ));
        producer.join().unwrap();
    });
}

/// A frame larger than the ring passes in pieces (first + continuations),
/// the producer sleeping for room between them and the consumer for the
/// next piece, both with the reactor protocol; the frame is reassembled
/// intact.
#[test]
fn a_frame_larger_than_the_ring_passes_in_pieces() {
    loom::model(|| {
        // Capacity 64: records carry at most 24 bytes; 60 bytes take a first
        // piece (8-byte total + 16 bytes) and two continuations (24 + 20).
        let (mut p, mut c, _s) = heap_ring(64, 60).unwrap();
        let pw = HeapWaiter::producer(&p);
        let cw = HeapWaiter::consumer(&c);
        let frame: Vec<u8> = (0..60).collect();
        let sent = frame.clone();
        let producer = thread::spawn(move || send_reactor(&mut p, &pw, &sent).unwrap());
        assert_eq!(recv_reactor(&mut c, &cw).unwrap(), frame);
        producer.join().unwrap();
    });
}

/// A consumer that has read every published frame has handed all their room back, even if
/// it never receives again: a producer waiting for that room is not left waiting on a
/// consumer that does not read (here: one that waits for the producer to finish). Also
/// exercises the producer starting over at the ring's start when it finds the ring empty.
#[test]
fn the_room_of_every_frame_read_goes_back_without_another_receive() {
    loom::model(|| {
        // Capacity 128: three records of 24 bytes, then one of 64 that (at offset 72, with
        // its padding) needs the room of all three unless the producer started over.
        let (mut p, mut c, _s) = heap_ring(128, 56).unwrap();
        let producer = thread::spawn(move || {
            for i in 0..3 {
                send_blocking(&mut p, &[i; 16]).unwrap();
            }
            send_blocking(&mut p, &[9; 56]).unwrap();
        });
        for i in 0..3 {
            assert_eq!(recv_blocking(&mut c).unwrap(), [i; 16]);
        }
        producer.join().unwrap();
    });
}

/// A frame above the consumer's max frame size passes in pieces that the consumer skips
/// (releasing them, so the producer, asleep for room, goes on) and reports as one
/// `FrameTooLarge`; the frame after it arrives intact.
#[test]
fn a_frame_above_the_receivers_max_is_skipped_in_pieces() {
    loom::model(|| {
        let (mut p, mut c, _s) = heap_ring_with_limits(64, 60, 8).unwrap();
        let pw = HeapWaiter::producer(&p);
        let cw = HeapWaiter::consumer(&c);
        let producer = thread::spawn(move || {
            send_reactor(&mut p, &pw, &[3; 60]).unwrap();
            send_reactor(&mut p, &pw, &[4; 8]).unwrap();
        });
        assert!(matches!(
            recv_reactor(&mut c, &cw),
            Err(ShmError::FrameTooLarge { size: 60, max: 8 })
        ));
        assert_eq!(c.skipped_head(), [3; 60]);
        assert_eq!(recv_reactor(&mut c, &cw).unwrap(), [4; 8]);
        producer.join().unwrap();
    });
}
