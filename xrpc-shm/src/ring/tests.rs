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
    assert!(heap_ring(64, 0).is_err(), "max frame zero");
    assert!(heap_ring(64, 25).is_ok(), "larger frames go in pieces");
    assert!(heap_ring(32, 8).is_ok(), "one piece");
    assert!(heap_ring(32, 9).is_err(), "pieces need a ring of 64 bytes");
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
                    Err(ShmError::Full) if model.is_empty() => {
                        // Room comes back in batches: once the consumer has found the ring
                        // empty, all of it is back and any frame fits.
                        assert!(c.try_recv().unwrap().is_none());
                        p.try_send(&f).expect("a ring found empty fits a frame");
                        model.push_back(f);
                        seq += 1;
                    }
                    Err(ShmError::Full) => {}
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
    // The producer reads the tail when the ring looks full, or when it may start over at the
    // ring's start: within two sends here.
    let err = (0..2).find_map(|_| p.try_send(&[0; 24]).err());
    assert!(matches!(err, Some(ShmError::Corrupt(_))), "{err:?}");
    s.header(1, 16);
    assert!(matches!(p.try_send(b"x"), Err(ShmError::Corrupt(_))));
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

/// Sends `frame` with `try_send_from`, draining the consumer whenever the
/// ring is full; returns the frames the consumer completed meanwhile.
fn send_in_pieces(
    p: &mut Producer<HeapStorage>,
    c: &mut Consumer<HeapStorage>,
    frame: &[u8],
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut sent = 0;
    loop {
        match p.try_send_from(frame, &mut sent) {
            Ok(()) => return got,
            Err(ShmError::Full) => {
                let before = sent;
                if let Some(f) = c.try_recv().unwrap() {
                    got.push(f.to_vec());
                }
                assert!(sent == before, "no progress without room");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn frames_larger_than_the_ring_pass_in_pieces() {
    // Capacity 64: one record carries at most 24 bytes.
    let (mut p, mut c, _) = ring(64, 1000);
    assert_eq!(p.max_piece(), 24);
    p.try_send(b"small").unwrap();
    let big = frame(1, 1000);
    let got = send_in_pieces(&mut p, &mut c, &big);
    assert_eq!(got, vec![b"small".to_vec()]);
    // The last pieces are still in the ring: the frame completes now.
    let f = c.try_recv().unwrap().expect("frame complete");
    assert_eq!(&*f, &big[..]);
    drop(f);
    assert_eq!(c.partial.capacity(), 0, "the buffer is freed after use");
    p.try_send(b"after").unwrap();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"after");
    assert!(matches!(
        p.try_send(&frame(2, 1001)),
        Err(ShmError::FrameTooLarge {
            size: 1001,
            max: 1000
        })
    ));
    assert!(matches!(
        p.try_reserve(25),
        Err(ShmError::FrameTooLarge { size: 25, max: 24 })
    ));
}

#[test]
fn large_frames_keep_their_order_with_small_ones() {
    let mut rng = Rng(0x5eed_1a7e);
    let (mut p, mut c, _) = ring(128, 700);
    let mut sent = VecDeque::new();
    let mut got = Vec::new();
    for seq in 0..300u64 {
        let len = match rng.below(4) {
            0 => rng.below(57) as usize,
            _ => rng.below(701) as usize,
        };
        let f = frame(seq, len);
        got.extend(send_in_pieces(&mut p, &mut c, &f));
        sent.push_back(f);
    }
    while let Some(f) = c.try_recv().unwrap() {
        got.push(f.to_vec());
    }
    assert_eq!(got, Vec::from(sent));
}

#[test]
fn a_large_frame_given_up_mid_way_is_dropped() {
    let (mut p, mut c, _) = ring(64, 1000);
    let big = frame(3, 200);
    // Fill the ring with the first pieces, then give up.
    assert!(matches!(p.try_send(&big), Err(ShmError::Full)));
    assert!(
        c.try_recv().unwrap().is_none(),
        "pieces are taken, no frame yet"
    );
    assert!(c.partial_total != 0);
    // A new frame: the unfinished one is dropped by the consumer.
    p.try_send(b"next").unwrap();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"next");
    assert_eq!((c.partial.capacity(), c.partial_total), (0, 0));
    // Starting over with a stale counter also drops the old pieces.
    let mut sent = 0;
    assert!(matches!(
        p.try_send_from(&big, &mut sent),
        Err(ShmError::Full)
    ));
    assert!(sent > 0);
    assert!(c.try_recv().unwrap().is_none());
    let mut stale = sent + 8;
    let got = send_in_pieces_from(&mut p, &mut c, &big, &mut stale);
    assert!(got.is_empty());
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &big[..]);
}

fn send_in_pieces_from(
    p: &mut Producer<HeapStorage>,
    c: &mut Consumer<HeapStorage>,
    frame: &[u8],
    sent: &mut usize,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        match p.try_send_from(frame, sent) {
            Ok(()) => return got,
            Err(ShmError::Full) => {
                if let Some(f) = c.try_recv().unwrap() {
                    got.push(f.to_vec());
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Writes one record (header and payload) at data offset `off` of a ring
/// and publishes the head at `head`, as a hostile producer could.
fn forge(scr: &Scribbler, off: usize, len: u32, kind: u32, payload: &[u8], head: u64) {
    use crate::layout::encode_rec;
    for (i, b) in encode_rec(len, kind).to_ne_bytes().into_iter().enumerate() {
        scr.data(off + i, b);
    }
    for (i, &b) in payload.iter().enumerate() {
        scr.data(off + 8 + i, b);
    }
    scr.header(0, head);
}

#[test]
fn hostile_continuations_are_corrupt() {
    use crate::layout::{KIND_CONT, KIND_FIRST};
    let total = |t: u64| t.to_le_bytes();
    // (name, records at offsets 0, 32: (len, kind, payload))
    type Rec = (u32, u32, Vec<u8>);
    let cases: Vec<(&str, Vec<Rec>)> = vec![
        ("piece without a first", vec![(8, KIND_CONT, vec![1; 8])]),
        (
            "empty piece",
            vec![
                (16, KIND_FIRST, total(100).to_vec()),
                (0, KIND_CONT, vec![]),
            ],
        ),
        (
            "first without bytes",
            vec![(8, KIND_FIRST, total(100).to_vec())],
        ),
        (
            "total above max",
            vec![(16, KIND_FIRST, total(1001).to_vec())],
        ),
        (
            "total not above the piece",
            vec![(16, KIND_FIRST, total(8).to_vec())],
        ),
        (
            "huge total",
            vec![(16, KIND_FIRST, total(u64::MAX).to_vec())],
        ),
        (
            "piece beyond the total",
            vec![
                (16, KIND_FIRST, total(20).to_vec()),
                (24, KIND_CONT, vec![2; 24]),
            ],
        ),
        (
            "piece above max record",
            vec![(25, KIND_FIRST, total(100).to_vec())],
        ),
    ];
    for (name, recs) in cases {
        let (_p, mut c, scr) = ring(64, 1000);
        let mut off = 0;
        for (len, kind, mut payload) in recs {
            payload.resize(len.min(24) as usize, 0);
            let size = crate::layout::record_len(len as usize);
            forge(&scr, off, len, kind, &payload, (off + size.min(32)) as u64);
            off += 32;
        }
        let mut result = Ok(None);
        for _ in 0..4 {
            result = c.try_recv().map(|f| f.map(|f| f.len()));
            if result.is_err() {
                break;
            }
        }
        match result {
            Err(ShmError::Corrupt(msg)) => eprintln!("{name}: {msg}"),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(c.partial.capacity(), 0, "{name}: buffer freed");
    }
}

#[test]
fn a_declared_total_is_not_preallocated() {
    use crate::layout::KIND_FIRST;
    let (_p, mut c, scr) = ring(64, 16 << 20);
    let mut payload = (16u64 << 20).to_le_bytes().to_vec();
    payload.extend_from_slice(&[5; 16]);
    forge(&scr, 0, 24, KIND_FIRST, &payload, 32);
    assert!(c.try_recv().unwrap().is_none());
    assert_eq!(c.partial_total, 16 << 20);
    assert!(
        c.partial.capacity() <= 64,
        "a 16 MiB claim with 16 bytes sent allocated {}",
        c.partial.capacity()
    );
}

/// A corked producer publishes nothing until it flushes, then all at once; a full ring
/// publishes what was committed so the consumer can make room.
#[test]
fn corked_commits_are_published_together() {
    let (mut p, mut c, _) = ring(64, 24);
    // Fill a fresh ring while corked: the send that finds it full publishes the rest.
    p.cork();
    while p.try_send(&[7; 16]).is_ok() {}
    let mut n = 0;
    while c.try_recv().unwrap().is_some() {
        n += 1;
    }
    assert!(
        n >= 2,
        "the frames of a full, corked ring are published ({n})"
    );
    p.try_send(b"one").unwrap();
    p.try_send(b"two").unwrap();
    assert!(c.try_recv().unwrap().is_none(), "nothing published yet");
    p.flush();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"one");
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"two");
    assert!(c.try_recv().unwrap().is_none());
    p.uncork();
    p.try_send(b"now").unwrap();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), b"now");
}

/// Inputs the `shm_ring` fuzz target once failed on, replayed through its model
/// (`testing::run_ring_model`; the same inputs are in `fuzz/regressions/shm_ring`, which CI
/// runs the target on).
#[test]
fn fuzz_regressions_replay() {
    let cases: &[(&str, &[u8])] = &[(
        // "empty ring refused a frame": the consumer had read every frame, but handed the last
        // room back only on its next (empty) receive, which never came before the next send.
        "O0gKp347SAEASFI7Cqd+O0gBAApSO1I7UjvGxsbGxg==",
        b"\x3b\x48\x0a\xa7\x7e\x3b\x48\x01\x00\x48\x52\x3b\x0a\xa7\x7e\x3b\x48\x01\x00\x0a\x52\x3b\x52\x3b\x52\x3b\xc6\xc6\xc6\xc6\xc6",
    )];
    for (name, input) in cases {
        eprintln!("replaying {name}");
        for recv_max in [300, 200] {
            crate::testing::run_ring_model(input, recv_max);
        }
    }
}

/// A consumer that has read every published frame has handed all their room back, without
/// a further receive: the producer's next frame fits even if the consumer never reads again
/// before it (the room is not held back for a batch).
#[test]
fn a_producer_gets_the_room_of_every_frame_read() {
    let (mut p, mut c, _) = ring(128, 56);
    // Three records of 24 bytes (0..72): a quarter ring (32 bytes) is handed back after the
    // second, the third's room only because it was the last one published.
    for i in 0..3 {
        p.try_send(&frame(i, 16)).unwrap();
    }
    for i in 0..3 {
        assert_eq!(&*c.try_recv().unwrap().unwrap(), &frame(i, 16)[..]);
    }
    // The largest record (64 bytes) does not fit before the end (56 bytes left): it needs 120
    // bytes with its padding, so all 72 bytes read must be free.
    p.try_send(&frame(9, 56)).unwrap();
    assert_eq!(&*c.try_recv().unwrap().unwrap(), &frame(9, 56)[..]);
}

/// Small frames back and forth keep to the first 32 KiB of a large ring: a producer that
/// finds the ring empty starts over at its start instead of cycling through (and keeping
/// resident) every page. Frames that queue up still use the whole ring.
#[test]
fn an_empty_ring_starts_over_at_its_start() {
    const CAP: usize = 1 << 20;
    let (mut p, mut c, s) = ring(CAP, 4096);
    let mut furthest = 0;
    for seq in 0..20_000u64 {
        let f = frame(seq, (seq % 300) as usize);
        p.try_send(&f).unwrap();
        assert_eq!(&*c.try_recv().unwrap().unwrap(), &f[..]);
        furthest = furthest.max(s.read_header(0) as usize % CAP);
    }
    assert!(
        furthest <= (32 << 10) + 312,
        "the head went to offset {furthest}"
    );
    // A queue of frames (the consumer behind) goes on through the ring.
    for seq in 0..1000u64 {
        p.try_send(&frame(seq, 300)).unwrap();
    }
    for seq in 0..1000u64 {
        assert_eq!(&*c.try_recv().unwrap().unwrap(), &frame(seq, 300)[..]);
    }
    assert!(s.read_header(0) as usize % CAP > 256 << 10);
}

/// A consumer whose max frame size is below its producer's skips the larger frames — one
/// record or many pieces — without buffering them: each is one `FrameTooLarge` with its size
/// and first bytes, and the frames around it arrive intact.
#[test]
fn frames_above_the_receivers_max_are_skipped() {
    type Got = Result<Vec<u8>, (usize, Vec<u8>)>;
    fn recv(c: &mut Consumer<HeapStorage>) -> Option<Got> {
        match c.try_recv().map(|f| f.map(|f| f.to_vec())) {
            Ok(f) => f.map(Ok),
            Err(ShmError::FrameTooLarge { size, max }) => {
                assert_eq!(max, 100);
                assert!(c.partial_bytes() == 0);
                Some(Err((size, c.skipped_head().to_vec())))
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (mut p, mut c, _) = crate::testing::heap_ring_with_limits(256, 1000, 100).unwrap();
    let (small, one_record, pieces) = (frame(1, 100), frame(2, 101), frame(3, 1000));
    let mut got = Vec::new();
    for f in [&small, &one_record, &small, &pieces, &small] {
        let mut sent = 0;
        while p.try_send_from(f, &mut sent).is_err() {
            // Make room: a skip consumes (and frees) the pieces that have come, never holding
            // more than a piece's worth.
            got.extend(recv(&mut c));
            assert!(c.partial_bytes() < 1000);
        }
    }
    while let Some(g) = recv(&mut c) {
        got.push(g);
    }
    assert_eq!(
        got,
        [
            Ok(small.clone()),
            Err((101, one_record[..64].to_vec())),
            Ok(small.clone()),
            Err((1000, pieces[..64].to_vec())),
            Ok(small.clone()),
        ]
    );
}
