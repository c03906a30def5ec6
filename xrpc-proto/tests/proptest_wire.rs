//! Property tests of the wire layers, from the outside of the crate.
//!
//! 1. Round trip: arbitrary legal messages → [`MessageEncoder`] → one byte stream cut into
//!    arbitrary chunks → [`FrameDecoder`] → [`MessageDecoder`] gives back every message.
//! 2. Hostile input: arbitrary and crafted bytes never make the decoders panic, and never make
//!    them allocate more than their configured bounds. A counting global allocator records the
//!    largest single allocation made by the decoding thread while a decoder runs
//!    (`xrpc_shm::testing::LargestAlloc`).
//! 3. Codecs: arbitrary values round-trip through every enabled codec, trailing bytes are
//!    refused, and arbitrary bytes never make `decode` panic.
//!
//! The whole file runs in well under 30 s in a debug build.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use xrpc_proto::codec::MAX_DECODE_ALLOC;
use xrpc_proto::{
    BincodeCodec, Codec, CompressionConfig, CompressionType, ErrorCode, FRAME_PREFIX_LEN,
    FrameDecoder, FrameError, Header, Message, MessageDecoder, MessageEncoder, MessageKind,
    Metadata, ProtoError, RemoteError,
};
use xrpc_shm::testing::{LargestAlloc, largest_alloc_during};

// ---------------------------------------------------------------------------------------------
// Allocation tracking
// ---------------------------------------------------------------------------------------------

// The tracker is a global allocator, whose implementation only `xrpc-shm` may contain.
#[global_allocator]
static ALLOC: LargestAlloc = LargestAlloc;

#[test]
fn allocation_tracker_sees_allocations() {
    let (v, largest) = largest_alloc_during(|| vec![1u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20, "tracker saw only {largest} bytes");
    let ((), largest) = largest_alloc_during(|| ());
    assert_eq!(largest, 0);
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const ALL_KINDS: [MessageKind; 10] = [
    MessageKind::Request,
    MessageKind::Response,
    MessageKind::Error,
    MessageKind::Notification,
    MessageKind::StreamItem,
    MessageKind::StreamEnd,
    MessageKind::Cancel,
    MessageKind::Ping,
    MessageKind::Pong,
    MessageKind::Credit,
];

const ALL_COMPRESSION: [CompressionType; 3] = [
    CompressionType::None,
    CompressionType::Lz4,
    CompressionType::Zstd,
];

/// Cuts `s` to at most 255 bytes on a character boundary.
fn truncate_method(mut s: String) -> String {
    while s.len() > 255 {
        s.pop();
    }
    s
}

/// A legal method name: 1 to 255 bytes of UTF-8, including the longest and multi-byte ones.
fn arb_method() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./:]{1,40}",
        any::<String>()
            .prop_map(truncate_method)
            .prop_filter("non-empty", |s| !s.is_empty()),
        Just("m".repeat(255)),
        Just("é".repeat(127)), // 254 bytes
    ]
}

/// How a payload is filled: decides whether compression can win.
#[derive(Debug, Clone)]
enum Fill {
    /// Pseudo-random bytes: incompressible.
    Random(u64),
    /// A short pattern repeated: very compressible.
    Repeat(Vec<u8>),
    /// JSON-like records with varying numbers: moderately compressible.
    Text(u64),
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn fill_payload(len: usize, fill: &Fill) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    match fill {
        Fill::Random(seed) => {
            let mut s = seed | 1;
            while out.len() < len {
                out.extend_from_slice(&xorshift(&mut s).to_le_bytes());
            }
        }
        Fill::Repeat(pattern) => {
            while out.len() < len {
                out.extend_from_slice(pattern);
            }
        }
        Fill::Text(seed) => {
            let mut s = seed | 1;
            let mut i = 0u64;
            while out.len() < len {
                let r = xorshift(&mut s);
                let rec = format!(
                    "{{\"id\":{i},\"name\":\"user-{}\",\"score\":{},\"ok\":{}}},",
                    r % 10_000,
                    (r >> 20) % 1_000_000,
                    r & 1 == 0
                );
                out.extend_from_slice(rec.as_bytes());
                i += 1;
            }
        }
    }
    out.truncate(len);
    out
}

fn arb_fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        any::<u64>().prop_map(Fill::Random),
        vec(any::<u8>(), 1..64).prop_map(Fill::Repeat),
        any::<u64>().prop_map(Fill::Text),
    ]
}

/// A payload of 0..=64 KiB, biased towards small sizes.
fn arb_payload() -> impl Strategy<Value = (Vec<u8>, Fill)> {
    (
        prop_oneof![0..=64usize, 0..=4096usize, 0..=65536usize],
        arb_fill(),
    )
        .prop_map(|(len, fill)| (fill_payload(len, &fill), fill))
}

/// A header that obeys the per-kind rules (PROTOCOL.md §3), with the method it needs.
///
/// `header.compression` is set to an arbitrary value: the encoder must ignore it.
fn arb_legal_header() -> impl Strategy<Value = (Header, String)> {
    (
        select(&ALL_KINDS[..]),
        any::<u64>(),
        any::<u8>(),
        select(&ALL_COMPRESSION[..]),
        any::<(bool, bool)>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u32>()),
        any::<u32>(),
        arb_method(),
    )
        .prop_map(
            |(kind, id, codec, compression, streams, timeout, window, credit, method)| {
                let mut h = Header::new(kind, id).with_codec(codec);
                h.compression = compression;
                match kind {
                    MessageKind::Request => {
                        (h.client_stream, h.server_stream) = streams;
                        h.timeout = timeout.map(Duration::from_micros);
                        h.window = window;
                    }
                    MessageKind::Notification => h.timeout = timeout.map(Duration::from_micros),
                    MessageKind::Credit => h.window = Some(credit),
                    _ => {}
                }
                let method = if kind.has_method() {
                    method
                } else {
                    String::new()
                };
                (h, method)
            },
        )
}

#[derive(Debug, Clone)]
struct TestMessage {
    header: Header,
    method: String,
    payload: Vec<u8>,
    fill: Fill,
}

fn arb_message() -> impl Strategy<Value = TestMessage> {
    (arb_legal_header(), arb_payload()).prop_map(|((header, method), (payload, fill))| {
        TestMessage {
            header,
            method,
            payload,
            fill,
        }
    })
}

fn arb_compression() -> impl Strategy<Value = CompressionConfig> {
    (
        select(&ALL_COMPRESSION[..]),
        prop_oneof![Just(0usize), 0..=2048usize, 0..=70_000usize],
        -3..=6i32,
    )
        .prop_map(|(algorithm, threshold, zstd_level)| CompressionConfig {
            algorithm,
            threshold,
            zstd_level,
        })
}

/// Chunk sizes, applied cyclically to a byte stream: single bytes, small reads, big reads.
fn arb_chunking() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![1..=8usize, 1..=4096usize, 1..=100_000usize],
        1..8,
    )
}

/// Splits `data` into consecutive chunks whose sizes cycle through `sizes`.
fn chunked<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip
// ---------------------------------------------------------------------------------------------

const MAX_FRAME: usize = 1 << 20;
const MAX_DECOMPRESSED: usize = 1 << 20;

/// The per-kind rules of PROTOCOL.md §3, written independently of `Header::validate`.
fn obeys_kind_rules(h: &Header, method: &str) -> bool {
    let is_request = h.kind == MessageKind::Request;
    let has_method = matches!(h.kind, MessageKind::Request | MessageKind::Notification);
    (method.is_empty() != has_method)
        && method.len() <= 255
        && (!(h.client_stream || h.server_stream) || is_request)
        && (h.timeout.is_none() || has_method)
        && (h.signature.is_none() || has_method)
        && match h.kind {
            MessageKind::Credit => h.window.is_some(),
            MessageKind::Request => true,
            _ => h.window.is_none(),
        }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Many messages in one stream, cut anywhere, come back intact.
    #[test]
    fn stream_roundtrip(
        msgs in vec(arb_message(), 1..6),
        cfg in arb_compression(),
        chunking in arb_chunking(),
    ) {
        let mut enc = MessageEncoder::new(MAX_FRAME, cfg);
        let mut wire = BytesMut::new();
        for m in &msgs {
            enc.encode(&m.header, &m.method, &m.payload, &mut wire).unwrap();
        }

        let mut frames = FrameDecoder::new(MAX_FRAME);
        let mut dec = MessageDecoder::new(MAX_DECOMPRESSED);
        let mut got = Vec::new();
        for chunk in chunked(&wire, &chunking) {
            frames.handle_bytes(chunk);
            while let Some(frame) = frames.poll_frame().unwrap() {
                let raw = Message::decode_raw(frame.clone()).unwrap();
                got.push((dec.decode(frame).unwrap(), raw));
            }
        }
        prop_assert_eq!(frames.buffered(), 0);
        prop_assert_eq!(got.len(), msgs.len());

        for (m, (msg, raw)) in msgs.iter().zip(&got) {
            let wire_choice = msg.header.compression;
            prop_assert_eq!(msg.header, Header { compression: wire_choice, ..m.header });
            prop_assert_eq!(msg.method(), m.method.as_str());
            prop_assert_eq!(&msg.payload[..], &m.payload[..]);
            prop_assert_eq!(raw.header, msg.header);
            prop_assert_eq!(raw.method(), m.method.as_str());

            if wire_choice == CompressionType::None {
                prop_assert_eq!(&raw.payload[..], &m.payload[..]);
                // A long, repetitive payload at or above the threshold must have been compressed.
                let must_compress = cfg.algorithm != CompressionType::None
                    && m.payload.len() >= cfg.threshold
                    && m.payload.len() >= 256
                    && matches!(m.fill, Fill::Repeat(_));
                prop_assert!(!must_compress, "{:?} payload of {} bytes sent raw", m.fill, m.payload.len());
            } else {
                prop_assert_eq!(wire_choice, cfg.algorithm);
                prop_assert!(m.payload.len() >= cfg.threshold);
                prop_assert!(raw.payload.len() < m.payload.len(), "compression only when smaller");
                prop_assert_eq!(&raw.payload[..4], &(m.payload.len() as u32).to_le_bytes()[..]);
            }
        }
    }

    /// The encoder accepts exactly the headers the kind rules allow, and those round-trip.
    #[test]
    fn encoder_enforces_kind_rules(
        kind in select(&ALL_KINDS[..]),
        id in any::<u64>(),
        streams in any::<(bool, bool)>(),
        timeout in proptest::option::of(any::<u64>()),
        window in proptest::option::of(any::<u32>()),
        signature in proptest::option::of(any::<u64>()),
        entries in vec(("[!-~]{1,12}", vec(any::<u8>(), 0..16)), 0..4),
        method in prop_oneof![Just(String::new()), arb_method(), Just("x".repeat(256))],
        payload in vec(any::<u8>(), 0..64),
    ) {
        let header = Header {
            client_stream: streams.0,
            server_stream: streams.1,
            timeout: timeout.map(Duration::from_micros),
            window,
            signature,
            ..Header::new(kind, id)
        };
        let mut metadata = Metadata::new();
        for (k, v) in &entries {
            metadata.insert(k, v).unwrap();
        }
        let mut out = BytesMut::new();
        let res = MessageEncoder::default()
            .encode_with_metadata(&header, &method, &metadata, &payload, &mut out);
        let obeys = obeys_kind_rules(&header, &method)
            && (metadata.is_empty() || kind.has_method());
        prop_assert_eq!(res.is_ok(), obeys, "{:?}", res);
        prop_assert_eq!(
            Message::with_metadata(header, &method, metadata.clone(), Bytes::new()).is_ok(),
            res.is_ok()
        );
        if res.is_ok() {
            let msg = MessageDecoder::default().decode(out.freeze().slice(FRAME_PREFIX_LEN..)).unwrap();
            prop_assert_eq!(msg.header, header);
            prop_assert_eq!(msg.method(), method.as_str());
            prop_assert_eq!(msg.metadata(), &metadata);
            prop_assert_eq!(&msg.payload[..], &payload[..]);
        } else {
            prop_assert!(out.is_empty(), "nothing appended on error");
        }
    }

    /// Error payloads keep every code, known or not, and the message text.
    #[test]
    fn remote_error_roundtrip(code in any::<u16>(), text in ".{0,64}") {
        let e = RemoteError::new(ErrorCode::from_u16(code), text);
        prop_assert_eq!(e.code.to_u16(), code);
        let mut out = BytesMut::new();
        e.encode_into(&mut out);
        prop_assert_eq!(&out[..2], &code.to_le_bytes()[..]);
        prop_assert_eq!(RemoteError::decode(&out), e);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Hostile input: no panic, bounded allocation
// ---------------------------------------------------------------------------------------------

const ADV_MAX_FRAME: usize = 64 * 1024;
const ADV_MAX_DECOMPRESSED: usize = 48 * 1024;
/// Room for small bookkeeping allocations (error strings, zstd's Rust-side wrapper, `Bytes`
/// headers) on top of the configured bounds.
const SLACK: usize = 1024;

/// Frames `body` with its 4-byte length prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// The fixed header of a `Response` with id 7 and the given compression byte.
fn response_header(compression: u8) -> Vec<u8> {
    let mut h = vec![
        b'X',
        b'R',
        1,
        MessageKind::Response as u8,
        0,
        0,
        compression,
        0,
    ];
    h.extend_from_slice(&7u64.to_le_bytes());
    h
}

/// The compressed body (without its length prefix) of `n` zeros.
fn compressed_zeros(alg: CompressionType, n: usize) -> Vec<u8> {
    xrpc_proto::Compressor::new()
        .compress(alg, 3, &vec![0u8; n])
        .unwrap()
        .map(|wire| wire[4..].to_vec())
        .unwrap_or_default()
}

/// What a crafted compressed payload claims to expand to.
#[derive(Debug, Clone)]
enum Claim {
    /// A fixed number, usually absurd.
    Fixed(u32),
    /// The true length of a real compressed body, plus a small lie.
    TrueLength(i8),
}

/// What follows the claim.
#[derive(Debug, Clone)]
enum Body {
    Garbage(Vec<u8>),
    /// A real compressed body of this many zeros.
    Zeros(usize),
}
/// Hostile byte streams: noise, noise behind a valid magic, mutated valid streams, absurd length
/// prefixes, big frames back to back, and compressed payloads with lying length claims.
fn arb_hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let noise = vec(any::<u8>(), 0..2048);
    // A plausible fixed header (mostly known kinds, low flag bits, known compressions, short
    // method lengths) in front of noise, several frames in a row.
    let plausible_header = (
        0u8..=11,
        prop_oneof![0u8..=15, any::<u8>()],
        any::<u8>(),
        0u8..=3,
        prop_oneof![0u8..=16, any::<u8>()],
        any::<u64>(),
    )
        .prop_map(|(kind, flags, codec, compression, method_len, id)| {
            let mut h = vec![b'X', b'R', 1, kind, flags, codec, compression, method_len];
            h.extend_from_slice(&id.to_le_bytes());
            h
        });
    let magic_noise = vec((plausible_header, vec(any::<u8>(), 0..300)), 1..6).prop_map(|msgs| {
        msgs.iter()
            .flat_map(|(header, tail)| framed(&[&header[..], &tail[..]].concat()))
            .collect::<Vec<u8>>()
    });
    let mutated = (
        vec(arb_message(), 1..4),
        vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(msgs, edits, cut)| {
            let mut enc = MessageEncoder::new(u32::MAX as usize, CompressionConfig::lz4());
            let mut wire = BytesMut::new();
            for m in &msgs {
                enc.encode(&m.header, &m.method, &m.payload, &mut wire)
                    .unwrap();
            }
            let mut wire = wire.to_vec();
            for (at, byte) in edits {
                let i = at.index(wire.len());
                wire[i] = byte;
            }
            wire.truncate(cut.index(wire.len() + 1));
            wire
        });
    let huge_prefix = (
        select(vec![
            u32::MAX,
            ADV_MAX_FRAME as u32 + 1,
            ADV_MAX_FRAME as u32,
            ADV_MAX_FRAME as u32 - 1,
            1 << 31,
        ]),
        vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(len, tail)| {
            let mut v = len.to_le_bytes().to_vec();
            v.extend_from_slice(&tail);
            v
        });
    // Two frames between half the maximum and the maximum, back to back: the buffer must not
    // grow to twice the maximum to hold the second.
    let big_frames = vec(ADV_MAX_FRAME / 2..=ADV_MAX_FRAME, 2..4).prop_map(|lens| {
        lens.iter()
            .flat_map(|&n| framed(&vec![0xAA; n]))
            .collect::<Vec<u8>>()
    });
    let compression_bomb = (
        select(vec![CompressionType::Lz4, CompressionType::Zstd]),
        prop_oneof![
            select(vec![
                u32::MAX,
                1 << 31,
                ADV_MAX_DECOMPRESSED as u32 + 1,
                ADV_MAX_DECOMPRESSED as u32,
                4096,
                0,
            ])
            .prop_map(Claim::Fixed),
            (-2i8..=2).prop_map(Claim::TrueLength),
        ],
        prop_oneof![
            vec(any::<u8>(), 0..256).prop_map(Body::Garbage),
            (0..=ADV_MAX_DECOMPRESSED + 1024).prop_map(Body::Zeros),
        ],
    )
        .prop_map(|(alg, claim, body)| {
            let (body, true_len) = match body {
                Body::Garbage(b) => (b, 0),
                Body::Zeros(n) => (compressed_zeros(alg, n), n),
            };
            let declared = match claim {
                Claim::Fixed(n) => n,
                Claim::TrueLength(lie) => (true_len as u32).saturating_add_signed(lie.into()),
            };
            let mut msg = response_header(alg.id());
            msg.extend_from_slice(&declared.to_le_bytes());
            msg.extend_from_slice(&body);
            framed(&msg)
        });
    prop_oneof![
        noise,
        magic_noise,
        mutated,
        huge_prefix,
        big_frames,
        compression_bomb
    ]
}

/// Feeds `stream` in `chunking`-sized pieces through the decoders, checking allocation bounds.
fn decode_hostile(stream: &[u8], chunking: &[usize]) -> Result<(), TestCaseError> {
    let mut frames = FrameDecoder::new(ADV_MAX_FRAME);
    let mut dec = MessageDecoder::new(ADV_MAX_DECOMPRESSED);
    let (mut largest_chunk, mut framing_peak, mut decoding_peak) = (0, 0, 0);
    for chunk in chunked(stream, chunking) {
        largest_chunk = largest_chunk.max(chunk.len());
        let ((), peak) = largest_alloc_during(|| frames.handle_bytes(chunk));
        framing_peak = framing_peak.max(peak);
        loop {
            let (polled, peak) = largest_alloc_during(|| frames.poll_frame());
            framing_peak = framing_peak.max(peak);
            match polled {
                Ok(Some(frame)) => {
                    decoding_peak = decoding_peak.max(decode_frame(&mut dec, frame)?)
                }
                Ok(None) => break,
                // A frame over the maximum: skipped, never buffered; the stream goes on.
                Err(FrameError::Skipped(s)) => {
                    prop_assert!(s.len > ADV_MAX_FRAME && s.head.len() <= 64);
                }
                Err(e) => prop_assert!(false, "an error of the whole stream: {e}"),
            }
        }
    }
    // The decoder holds at most one partial frame plus the chunk just handed to it.
    let framing_bound = ADV_MAX_FRAME + FRAME_PREFIX_LEN + largest_chunk + SLACK;
    prop_assert!(
        framing_peak <= framing_bound,
        "framing allocated {} bytes at once, bound {}",
        framing_peak,
        framing_bound
    );
    prop_assert!(
        decoding_peak <= ADV_MAX_DECOMPRESSED + SLACK,
        "decoding allocated {} bytes at once, bound {}",
        decoding_peak,
        ADV_MAX_DECOMPRESSED + SLACK
    );
    Ok(())
}

/// Decodes one frame both ways, checks the two agree, and returns the peak allocation.
fn decode_frame(dec: &mut MessageDecoder, frame: Bytes) -> Result<usize, TestCaseError> {
    prop_assert!(frame.len() <= ADV_MAX_FRAME);
    let ((raw, msg), peak) = largest_alloc_during(|| {
        let raw = Message::decode_raw(frame.clone());
        if let Ok(m) = &raw
            && m.header.kind == MessageKind::Error
        {
            let _ = RemoteError::decode(&m.payload);
        }
        (raw, dec.decode(frame))
    });
    match (&raw, &msg) {
        (Ok(raw), Ok(msg)) => {
            prop_assert_eq!(raw.header, msg.header);
            if msg.header.compression != CompressionType::None {
                prop_assert!(msg.payload.len() <= ADV_MAX_DECOMPRESSED);
            }
        }
        (Ok(raw), Err(e)) => prop_assert!(
            raw.header.compression != CompressionType::None
                && matches!(e, ProtoError::Compression(_)),
            "only decompression can fail after a good parse: {:?}",
            e
        ),
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        (Err(_), Ok(_)) => prop_assert!(false, "decode accepted what decode_raw refused"),
    }
    Ok(peak)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Hostile streams, cut anywhere, never panic and stay within the allocation bounds.
    #[test]
    fn hostile_streams_are_bounded(stream in arb_hostile_stream(), chunking in vec(1..=4096usize, 1..8)) {
        decode_hostile(&stream, &chunking)?;
    }

    /// Arbitrary bytes as one frame: typed errors or messages, never a panic.
    #[test]
    fn arbitrary_frames_never_panic(frame in vec(any::<u8>(), 0..512), header in vec(any::<u8>(), 16..40)) {
        // Plain noise, and noise behind a plausible fixed header.
        let mut plausible = header;
        plausible[..3].copy_from_slice(b"XR\x01");
        plausible[3] %= 12;
        plausible[6] %= 4;
        plausible.extend_from_slice(&frame);
        for f in [frame, plausible] {
            decode_frame(&mut MessageDecoder::new(ADV_MAX_DECOMPRESSED), Bytes::from(f))?;
        }
    }
}

/// The crafted cases, each checked directly (the generator above only samples them).
#[test]
fn crafted_bombs_are_refused_before_allocation() {
    let mut dec = MessageDecoder::new(ADV_MAX_DECOMPRESSED);
    for alg in [CompressionType::Lz4, CompressionType::Zstd] {
        for declared in [u32::MAX, 1 << 31, ADV_MAX_DECOMPRESSED as u32 + 1] {
            let mut msg = response_header(alg.id());
            msg.extend_from_slice(&declared.to_le_bytes());
            msg.extend_from_slice(&compressed_zeros(alg, 1024));
            let (res, peak) = largest_alloc_during(|| dec.decode(Bytes::from(msg)));
            assert!(
                matches!(res, Err(ProtoError::Compression(_))),
                "{alg:?} {declared}: {res:?}"
            );
            assert!(peak <= SLACK, "{alg:?} {declared}: allocated {peak} bytes");
        }
    }
    for len in [u32::MAX, ADV_MAX_FRAME as u32 + 1] {
        let mut frames = FrameDecoder::new(ADV_MAX_FRAME);
        let (res, peak) = largest_alloc_during(|| {
            frames.handle_bytes(&len.to_le_bytes());
            frames.handle_bytes(&[0; 100]);
            frames.poll_frame()
        });
        // Skipped as it arrives (reported once its head is in), never allocated.
        assert!(
            matches!(res, Err(FrameError::Skipped(ref s)) if s.len == len as usize),
            "frame length {len}: {res:?}"
        );
        assert!(peak <= SLACK, "frame length {len}: allocated {peak} bytes");
    }
}

/// The bound is not vacuous: a legitimate payload of exactly the maximum is accepted, and the
/// tracker sees its allocation.
#[test]
fn payload_of_exactly_the_maximum_is_accepted() {
    let payload = vec![0u8; ADV_MAX_DECOMPRESSED];
    for cfg in [CompressionConfig::lz4(), CompressionConfig::zstd(3)] {
        let mut out = BytesMut::new();
        MessageEncoder::new(ADV_MAX_FRAME, cfg)
            .encode(
                &Header::new(MessageKind::Response, 1),
                "",
                &payload,
                &mut out,
            )
            .unwrap();
        let frame = out.freeze().slice(FRAME_PREFIX_LEN..);
        let mut dec = MessageDecoder::new(ADV_MAX_DECOMPRESSED);
        let (msg, peak) = largest_alloc_during(|| dec.decode(frame.clone()).unwrap());
        assert_eq!(msg.header.compression, cfg.algorithm);
        assert_eq!(msg.payload.len(), ADV_MAX_DECOMPRESSED);
        assert!(
            (ADV_MAX_DECOMPRESSED..=ADV_MAX_DECOMPRESSED + SLACK).contains(&peak),
            "{peak}"
        );
        let mut smaller = MessageDecoder::new(ADV_MAX_DECOMPRESSED - 1);
        assert!(smaller.decode(frame).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Codecs
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Inner {
    Empty,
    Byte(u8),
    Pair(i64, String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Circle(u32),
    Rect { w: u16, h: u16 },
    Group(Vec<Inner>),
    Tagged(String, Option<Inner>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    delta: i32,
    name: String,
    tags: Vec<String>,
    score: Option<i16>,
    /// Multiples of 1/256: exact in every format, including JSON.
    ratio: f64,
    flag: bool,
    letter: char,
    blob: Vec<u8>,
    shapes: Vec<Shape>,
    nested: Option<Box<Record>>,
    attrs: BTreeMap<String, u64>,
}

fn arb_inner() -> impl Strategy<Value = Inner> {
    prop_oneof![
        Just(Inner::Empty),
        any::<u8>().prop_map(Inner::Byte),
        (any::<i64>(), ".{0,8}").prop_map(|(a, b)| Inner::Pair(a, b)),
    ]
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Unit),
        any::<u32>().prop_map(Shape::Circle),
        any::<(u16, u16)>().prop_map(|(w, h)| Shape::Rect { w, h }),
        vec(arb_inner(), 0..4).prop_map(Shape::Group),
        (".{0,8}", proptest::option::of(arb_inner())).prop_map(|(s, i)| Shape::Tagged(s, i)),
    ]
}

fn arb_record_flat() -> impl Strategy<Value = Record> {
    (
        (any::<u64>(), any::<i32>(), ".{0,16}", vec(".{0,6}", 0..4)),
        (
            proptest::option::of(any::<i16>()),
            any::<i16>(),
            any::<bool>(),
            any::<char>(),
        ),
        (vec(any::<u8>(), 0..32), vec(arb_shape(), 0..4)),
        proptest::collection::btree_map(".{0,6}", any::<u64>(), 0..4),
    )
        .prop_map(
            |((id, delta, name, tags), (score, r, flag, letter), (blob, shapes), attrs)| Record {
                id,
                delta,
                name,
                tags,
                score,
                ratio: f64::from(r) / 256.0,
                flag,
                letter,
                blob,
                shapes,
                nested: None,
                attrs,
            },
        )
}

fn arb_record() -> impl Strategy<Value = Record> {
    (arb_record_flat(), proptest::option::of(arb_record_flat())).prop_map(|(mut r, n)| {
        r.nested = n.map(Box::new);
        r
    })
}

/// Encode → decode is the identity, and a trailing byte is refused.
fn roundtrip<C: Codec, T>(codec: C, value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = codec.encode(value).unwrap();
    let back: T = codec.decode(&bytes).unwrap();
    prop_assert_eq!(&back, value, "{}", codec.name());
    let mut longer = bytes.to_vec();
    longer.push(0x01);
    prop_assert!(
        codec.decode::<T>(&longer).is_err(),
        "{} accepted a trailing byte",
        codec.name()
    );
    Ok(())
}

/// Arbitrary bytes decode to a value or an error — never a panic.
fn decode_noise<C: Codec>(codec: C, bytes: &[u8]) {
    let _ = codec.decode::<Record>(bytes);
    let _ = codec.decode::<Shape>(bytes);
    let _ = codec.decode::<Vec<String>>(bytes);
    let _ = codec.decode::<(u64, Option<char>, BTreeMap<String, i32>)>(bytes);
}

/// Instantiates `$body` once for every codec compiled in, with `$codec` bound to it.
macro_rules! for_each_codec {
    ($codec:ident => $body:expr) => {{
        {
            let $codec = BincodeCodec;
            $body;
        }
        #[cfg(feature = "codec-json")]
        {
            let $codec = xrpc_proto::JsonCodec;
            $body;
        }
        #[cfg(feature = "codec-messagepack")]
        {
            let $codec = xrpc_proto::MessagePackCodec;
            $body;
        }
        #[cfg(feature = "codec-cbor")]
        {
            let $codec = xrpc_proto::CborCodec;
            $body;
        }
        #[cfg(feature = "codec-postcard")]
        {
            let $codec = xrpc_proto::PostcardCodec;
            $body;
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn codecs_roundtrip(record in arb_record(), shape in arb_shape()) {
        for_each_codec!(c => {
            roundtrip(c, &record)?;
            roundtrip(c, &shape)?;
        });
    }

    #[test]
    fn codecs_survive_noise(bytes in vec(any::<u8>(), 0..512)) {
        for_each_codec!(c => decode_noise(c, &bytes));
    }

    /// Noise behind a valid encoding's prefix reaches deeper into the decoders than pure noise.
    #[test]
    fn codecs_survive_corrupted_encodings(
        record in arb_record(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for_each_codec!(c => {
            let mut bytes = c.encode(&record).unwrap().to_vec();
            for (at, b) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            decode_noise(c, &bytes);
        });
    }
}

#[test]
fn codec_ids_match_protocol_md() {
    assert_eq!(BincodeCodec::ID, 1);
    #[cfg(feature = "codec-json")]
    assert_eq!(xrpc_proto::JsonCodec::ID, 2);
    #[cfg(feature = "codec-messagepack")]
    assert_eq!(xrpc_proto::MessagePackCodec::ID, 3);
    #[cfg(feature = "codec-cbor")]
    assert_eq!(xrpc_proto::CborCodec::ID, 4);
    #[cfg(feature = "codec-postcard")]
    assert_eq!(xrpc_proto::PostcardCodec::ID, 5);
}

/// A bincode length claim far beyond the input must fail without allocating past the codec's
/// documented per-value limit.
#[test]
fn bincode_length_claims_are_bounded() {
    let evil = [0xfc, 0xff, 0xff, 0xff, 0x7f]; // varint u32 length 2^31-1, then nothing
    let (res, peak) = largest_alloc_during(|| BincodeCodec.decode::<Vec<u8>>(&evil));
    assert!(res.is_err());
    assert!(peak <= MAX_DECODE_ALLOC + SLACK, "allocated {peak} bytes");
}
