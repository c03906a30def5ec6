//! Fuzzes the shared-memory ring (xrpc-shm) on its heap-backed storage.
//!
//! The input is a sequence of operations: send a frame, receive a frame, or
//! play a hostile peer by scribbling a value over a shared header field or a
//! byte of the data region. The reader must only ever return frames (never
//! longer than the configured maximum) or errors: no panic, no hang, no
//! out-of-bounds access. While nothing was scribbled, the frames received
//! must also be exactly the frames sent, in order.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use xrpc_shm::ShmError;
use xrpc_shm::testing::{Scribbler, heap_ring};

const CAPACITY: usize = 128;
const MAX_FRAME: usize = 56;

fuzz_target!(|data: &[u8]| {
    let Ok((mut producer, mut consumer, scribbler)) = heap_ring(CAPACITY, MAX_FRAME) else {
        return;
    };
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut scribbled = false;
    let mut seq = 0u8;
    while let Some(op) = next() {
        match op % 8 {
            0..=2 => {
                let len = usize::from(next().unwrap_or(0)) % (MAX_FRAME + 8);
                let frame: Vec<u8> = (0..len).map(|i| seq ^ i as u8).collect();
                match producer.try_send(&frame) {
                    Ok(()) => {
                        seq = seq.wrapping_add(1);
                        model.push_back(frame);
                    }
                    Err(ShmError::FrameTooLarge { size, max }) => {
                        assert!(size > max && max == MAX_FRAME)
                    }
                    Err(ShmError::Full) => {
                        assert!(scribbled || !model.is_empty(), "empty ring refused a frame")
                    }
                    Err(ShmError::Corrupt(_) | ShmError::Disconnected) => {
                        assert!(scribbled, "error without a hostile peer")
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            3..=5 => match consumer.try_recv() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME);
                    if !scribbled {
                        assert_eq!(Some(&frame[..]), model.pop_front().as_deref());
                    }
                }
                Ok(None) => assert!(scribbled || model.is_empty(), "lost a frame"),
                Err(ShmError::Corrupt(_) | ShmError::Disconnected) => {
                    assert!(scribbled, "error without a hostile peer")
                }
                Err(e) => panic!("unexpected error {e}"),
            },
            6 => {
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
