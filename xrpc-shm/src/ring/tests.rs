//! Ring unit tests on the heap storage: behaviour, model-checked random
//! sequences, hostile memory, and two real threads.

use std::collections::VecDeque;

use crate::error::ShmError;
use crate::testing::{Scribbler, heap_ring, recv_blocking, send_blocking};

use super::{Consumer, Producer};
use crate::storage::HeapStorage;

type Ring = (Producer<HeapStorage>, Consumer<HeapStorage>, Scribbler);

fn ring(cap: usize, max: usize) -> Ring {
    heap_ring(cap, max).expect("valid geometry")
}

/// Deterministic xorshift64*: property-style tests without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn frame(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

#[test]
fn empty_ring_has_nothing() {
    let (_p, mut c, _) = ring(64, 24);
    assert!(c.try_recv().unwrap().is_none());
    assert!(c.try_recv().unwrap().is_none());
}

#[test]
fn send_then_receive_in_place() {
    let (mut p, mut c, _) = ring(64, 24);
    p.try_send(b"abc").unwrap();
    p.try_send(b"").unwrap();
    {
        let f = c.try_recv().unwrap().unwrap();
        assert_eq!(&*f, b"abc");
    }
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"");
    assert!(c.try_recv().unwrap().is_none());
}

#[test]
fn zero_length_frames_fill_and_drain() {
    let (mut p, mut c, _) = ring(64, 24);
    let mut n = 0;
    while p.try_send(&[]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 64 / 8);
    for _ in 0..n {
        assert!(c.try_recv().unwrap().unwrap().is_empty());
    }
    assert!(c.try_recv().unwrap().is_none());
}

#[test]
fn max_frame_is_enforced() {
    let (mut p, mut c, _) = ring(64, 24);
    p.try_send(&[7; 24]).unwrap();
    assert!(matches!(
        p.try_send(&[7; 25]),
        Err(ShmError::FrameTooLarge { size: 25, max: 24 })
    ));
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &[7; 24]);
    assert!(heap_ring(64, 25).is_err(), "max frame above half the ring");
    assert!(heap_ring(48, 8).is_err(), "capacity not a power of two");
}

#[test]
fn full_ring_reports_full_until_drained() {
    let (mut p, mut c, _) = ring(64, 24);
    p.try_send(&[1; 24]).unwrap(); // 32 bytes
    p.try_send(&[2; 24]).unwrap(); // 64 bytes
    assert!(matches!(p.try_send(&[3]), Err(ShmError::Full)));
    drop(c.try_recv().unwrap().unwrap());
    p.try_send(&[3; 24]).unwrap();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &[2; 24]);
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &[3; 24]);
}

#[test]
fn frame_stays_borrowed_until_released() {
    let (mut p, mut c, _) = ring(64, 24);
    p.try_send(&[1; 24]).unwrap();
    p.try_send(&[2; 24]).unwrap();
    let f = c.try_recv().unwrap().unwrap();
    // Not released yet: no room.
    assert!(matches!(p.try_send(&[0]), Err(ShmError::Full)));
    f.release();
    p.try_send(&[0]).unwrap();
}

#[test]
fn wrap_around_uses_padding_and_keeps_frames_contiguous() {
    let (mut p, mut c, s) = ring(64, 24);
    p.try_send(&[1; 16]).unwrap(); // [0, 24)
    p.try_send(&[2; 16]).unwrap(); // [24, 48)
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &[1; 16]);
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &[2; 16]);
    // 16 bytes left before the end; a 24-byte frame (32-byte record) wraps.
    p.try_send(&[3; 24]).unwrap();
    assert_eq!(s.read_header(0), 48 + 16 + 32, "padding + record published");
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &[3; 24]);
    assert_eq!(s.read_header(1), 96);
}

#[test]
fn reserve_then_commit_or_abandon() {
    let (mut p, mut c, _) = ring(64, 24);
    {
        let mut slot = p.try_reserve(5).unwrap();
        slot.copy_from_slice(b"hello");
        // Dropped without commit: nothing published.
    }
    assert!(c.try_recv().unwrap().is_none());
    let mut slot = p.try_reserve(5).unwrap();
    slot.copy_from_slice(b"world");
    slot.commit();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"world");
}

#[test]
fn close_by_producer_drains_then_disconnects() {
    let (mut p, mut c, _) = ring(64, 24);
    p.try_send(b"last").unwrap();
    p.close();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"last");
    assert!(matches!(c.try_recv(), Err(ShmError::Disconnected)));
}

#[test]
fn close_by_consumer_fails_sends() {
    let (mut p, c, _) = ring(64, 24);
    c.close();
    assert!(matches!(p.try_send(b"x"), Err(ShmError::Disconnected)));
}

/// Random sends and receives against a `VecDeque` model, across many wraps.
#[test]
fn random_sequences_match_a_model() {
    for (cap, max) in [(32, 8), (64, 24), (128, 56), (4096, 2040)] {
        let (mut p, mut c, _) = ring(cap, max);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ cap as u64);
        let mut model = VecDeque::new();
        let mut seq = 0u64;
        for _ in 0..20_000 {
            if rng.below(2) == 0 {
                let len = rng.below(max as u64 + 1) as usize;
                let f = frame(seq, len);
                match p.try_send(&f) {
                    Ok(()) => {
                        model.push_back(f);
                        seq += 1;
                    }
                    Err(ShmError::Full) => {
                        assert!(!model.is_empty(), "an empty ring always fits a frame")
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            } else {
                let got = c.try_recv().unwrap().map(|f| f.to_vec());
                assert_eq!(got, model.pop_front());
            }
        }
    }
}

/// A hostile peer scribbles over the shared header and data between
/// operations: the reader only ever yields frames or errors, never panics,
/// never hangs, never reads out of bounds.
#[test]
fn hostile_memory_yields_frames_or_errors() {
    let mut rng = Rng(42);
    let mut corrupt = 0;
    let mut frames = 0;
    for round in 0..2_000 {
        let (mut p, mut c, s) = ring(64, 24);
        for _ in 0..50 {
            match rng.below(6) {
                0 | 1 => {
                    let len = rng.below(25) as usize;
                    let _ = p.try_send(&frame(round, len));
                }
                2 | 3 => match c.try_recv() {
                    Ok(Some(f)) => {
                        assert!(f.len() <= 24);
                        frames += 1;
                    }
                    Ok(None) | Err(ShmError::Disconnected) => {}
                    Err(ShmError::Corrupt(_)) => corrupt += 1,
                    Err(e) => panic!("unexpected {e}"),
                },
                4 => {
                    let field = rng.below(7) as u8;
                    let value = match rng.below(4) {
                        0 => rng.next(),
                        1 => s.read_header(field).wrapping_add(rng.below(17)),
                        2 => s.read_header(field).wrapping_sub(rng.below(17)),
                        _ => rng.below(256),
                    };
                    s.header(field, value);
                }
                _ => {
                    let off = rng.below(64) as usize;
                    let byte = rng.next() as u8;
                    s.data(off, byte);
                }
            }
        }
    }
    eprintln!("hostile: {frames} frames, {corrupt} corruptions detected");
    assert!(corrupt > 0 && frames > 0);
}

#[test]
fn corruption_kills_the_end_for_good() {
    let (mut p, mut c, s) = ring(64, 24);
    p.try_send(b"ok").unwrap();
    s.header(0, 1 << 40); // head far beyond one capacity
    assert!(matches!(c.try_recv(), Err(ShmError::Corrupt(_))));
    s.header(0, 16); // even a plausible value later
    assert!(matches!(c.try_recv(), Err(ShmError::Corrupt(_))));
    s.header(1, 1 << 40);
    p.try_send(&[0; 24]).unwrap();
    assert!(matches!(p.try_send(&[0; 24]), Err(ShmError::Corrupt(_))));
}

/// Two real threads, blocking on the futex handshake, varying frame sizes.
#[test]
fn two_threads_stream_frames_in_order() {
    const N: u64 = 20_000;
    let (mut p, mut c, _) = ring(256, 120);
    let producer = std::thread::spawn(move || {
        for seq in 0..N {
            let f = frame(seq, (seq % 121) as usize);
            send_blocking(&mut p, &f).unwrap();
        }
        p.close();
    });
    for seq in 0..N {
        let got = recv_blocking(&mut c).unwrap();
        assert_eq!(got, frame(seq, (seq % 121) as usize), "frame {seq}");
    }
    assert!(matches!(recv_blocking(&mut c), Err(ShmError::Disconnected)));
    producer.join().unwrap();
}
