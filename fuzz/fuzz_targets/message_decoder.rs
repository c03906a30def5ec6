//! Bytes straight into `Message::decode_raw`, `MessageDecoder::decode` (1 MiB bound) and
//! `RemoteError::decode`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xrpc_proto::{CompressionType, Message, MessageDecoder, RemoteError};

const MAX_DECOMPRESSED: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let raw = Message::decode_raw(frame.clone());
    let msg = MessageDecoder::new(MAX_DECOMPRESSED).decode(frame);
    match (&raw, &msg) {
        (Ok(raw), Ok(msg)) => {
            assert_eq!(raw.header, msg.header);
            if msg.header.compression == CompressionType::None {
                assert_eq!(raw.payload, msg.payload);
            } else {
                assert!(msg.payload.len() <= MAX_DECOMPRESSED);
            }
            assert!(data.ends_with(&raw.payload));
        }
        (Ok(raw), Err(_)) => assert_ne!(raw.header.compression, CompressionType::None),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(e), Ok(_)) => panic!("decode accepted what decode_raw refused: {e}"),
    }

    // The error payload parser is lenient: every input is some error, and known codes survive.
    let err = RemoteError::decode(data);
    if let Some(code) = data.first_chunk::<2>() {
        assert_eq!(err.code.to_u16(), u16::from_le_bytes(*code));
    }
});
