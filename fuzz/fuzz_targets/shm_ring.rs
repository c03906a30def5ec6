//! Fuzzes the shared-memory ring (xrpc-shm) on its heap-backed storage.
//!
//! The input is a sequence of operations: send (a part of) a frame, give up a
//! frame under way, receive a frame, or play a hostile peer by scribbling a
//! value over a shared header field or a byte of the data region. Frames go
//! up to `MAX_FRAME`, larger than the ring, so most travel in pieces
//! (`KIND_FIRST` + `KIND_CONT` records) that the reader reassembles. The
//! reader must only ever return frames (never longer than the configured
//! maximum) or errors: no panic, no hang, no out-of-bounds access, no
//! reassembly buffer beyond the maximum. While nothing was scribbled, the
//! frames received must also be exactly the frames sent, in order.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use xrpc_shm::ShmError;
use xrpc_shm::testing::{Scribbler, heap_ring, max_piece_for};

const CAPACITY: usize = 128;
const MAX_FRAME: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Ok((mut producer, mut consumer, scribbler)) = heap_ring(CAPACITY, MAX_FRAME) else {
        return;
    };
    let piece = max_piece_for(CAPACITY);
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    // The frame being sent and how much of it is in the ring.
    let mut pending: Option<(Vec<u8>, usize)> = None;
    // Pieces of a frame given up may still sit in the ring (until a read empties it).
    let mut stale_pieces = false;
    let mut scribbled = false;
    let mut seq = 0u8;
    while let Some(op) = next() {
        match op % 9 {
            0..=2 => {
                let (frame, mut sent) = match pending.take() {
                    Some(p) => p,
                    None => {
                        let len = (usize::from(next().unwrap_or(0))
                            | usize::from(next().unwrap_or(0)) << 8)
                            % (MAX_FRAME + 8);
                        ((0..len).map(|i| seq ^ i as u8).collect(), 0)
                    }
                };
                match producer.try_send_from(&frame, &mut sent) {
                    Ok(()) => {
                        seq = seq.wrapping_add(1);
                        model.push_back(frame);
                    }
                    Err(ShmError::FrameTooLarge { size, max }) => {
                        assert!(size > max && max == MAX_FRAME)
                    }
                    Err(ShmError::Full) => {
                        assert!(
                            scribbled || stale_pieces || sent > 0 || !model.is_empty(),
                            "empty ring refused a frame"
                        );
                        assert!(frame.len() > piece || sent == 0, "a small frame went in part");
                        pending = Some((frame, sent));
                    }
                    Err(ShmError::Corrupt(_) | ShmError::Disconnected) => {
                        assert!(scribbled, "error without a hostile peer")
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            3 => {
                // Give up the frame under way: the next frame starts over.
                if let Some((_, sent)) = pending.take() {
                    stale_pieces |= sent > 0;
                }
            }
            4..=6 => match consumer.try_recv() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME);
                    if !scribbled {
                        assert_eq!(Some(&frame[..]), model.pop_front().as_deref());
                    }
                }
                Ok(None) => {
                    assert!(scribbled || model.is_empty(), "lost a frame");
                    stale_pieces = false;
                }
                Err(ShmError::Corrupt(_) | ShmError::Disconnected) => {
                    assert!(scribbled, "error without a hostile peer")
                }
                Err(e) => panic!("unexpected error {e}"),
            },
            7 => {
                let field = next().unwrap_or(0) % Scribbler::HEADER_FIELDS;
                let mut value = [0u8; 8];
                for b in &mut value {
                    *b = next().unwrap_or(0);
                }
                let value = match value[7] % 3 {
                    // Near the current value: plausible-looking indices.
                    0 => scribbler
                        .read_header(field)
                        .wrapping_add(u64::from(value[0]) % 64)
                        .wrapping_sub(32),
                    _ => u64::from_le_bytes(value),
                };
                scribbler.header(field, value);
                scribbled = true;
            }
            _ => {
                let offset = usize::from(next().unwrap_or(0));
                let byte = next().unwrap_or(0);
                scribbler.data(offset, byte);
                scribbled = true;
            }
        }
    }
});
