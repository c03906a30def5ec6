//! A byte stream cut into chunks, through `FrameDecoder` (small maximum) and every frame on
//! through `MessageDecoder`.
//!
//! Input layout: `[n][n chunk sizes, one byte each][stream...]`. The chunk sizes are applied
//! cyclically (0 means 256); with `n == 0` the stream arrives in one piece.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use xrpc_proto::{
    CompressionConfig, CompressionType, FrameDecoder, FrameError, Message, MessageDecoder,
    MessageEncoder,
};

const MAX_FRAME: usize = 4096;
const MAX_DECOMPRESSED: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let sizes: Vec<usize> = sizes
        .iter()
        .map(|&s| if s == 0 { 256 } else { usize::from(s) })
        .collect();

    let mut frames = FrameDecoder::new(MAX_FRAME);
    let mut dec = MessageDecoder::new(MAX_DECOMPRESSED);
    let mut fed = 0;
    let mut taken = 0;
    let mut i = 0;
    let mut skipped = false;
    while fed < stream.len() {
        let len = if sizes.is_empty() {
            stream.len()
        } else {
            sizes[i % sizes.len()]
        };
        i += 1;
        let chunk = &stream[fed..(fed + len).min(stream.len())];
        fed += chunk.len();
        frames.handle_bytes(chunk);
        loop {
            match frames.poll_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME);
                    taken += 4 + frame.len();
                    check_frame(&mut dec, frame);
                }
                Ok(None) => break,
                // A frame over the maximum is skipped (its bytes dropped as they come), and
                // reported once with its head; the stream stays in sync.
                Err(FrameError::Skipped(s)) => {
                    assert!(s.len > MAX_FRAME && s.head.len() <= 64);
                    skipped = true;
                }
                Err(e) => panic!("an error of the whole stream: {e}"),
            }
        }
        // Every byte fed is in a returned frame or counted as part of a frame not yet whole
        // (buffered, the consumed prefix of a frame being received, or what has arrived of a
        // frame being skipped) — but the bytes of frames already skipped whole, which are not
        // kept (and which are reported before they end).
        let unaccounted = fed - taken;
        assert!(
            skipped || unaccounted == frames.partial_bytes(),
            "{} bytes lost",
            unaccounted.abs_diff(frames.partial_bytes())
        );
        assert!(frames.partial_bytes() <= fed - taken);
        assert!(frames.buffer_mut().capacity() <= MAX_FRAME + 4 + len.max(4));
    }
});

/// Decodes a frame; a valid uncompressed message must re-encode to the very same bytes.
fn check_frame(dec: &mut MessageDecoder, frame: Bytes) {
    let raw = Message::decode_raw(frame.clone());
    let msg = dec.decode(frame.clone());
    match (raw, msg) {
        (Ok(raw), Ok(msg)) => {
            assert_eq!(raw.header, msg.header);
            if msg.header.compression == CompressionType::None {
                assert_eq!(raw.payload, msg.payload);
                let mut out = BytesMut::new();
                MessageEncoder::new(MAX_FRAME, CompressionConfig::none())
                    .encode_with_metadata(
                        &msg.header,
                        msg.method(),
                        msg.metadata(),
                        &msg.payload,
                        &mut out,
                    )
                    .expect("a decoded message re-encodes");
                assert_eq!(&out[4..], &frame[..], "decode then encode is the identity");
            } else {
                assert!(msg.payload.len() <= MAX_DECOMPRESSED);
            }
        }
        (Ok(raw), Err(_)) => assert_ne!(raw.header.compression, CompressionType::None),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(e), Ok(_)) => panic!("decode accepted what decode_raw refused: {e}"),
    }
}
