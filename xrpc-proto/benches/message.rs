//! Cost of the message layer over its baselines, measured in the same run.
//!
//! - `frame/{size}`: encoding a request (frame prefix, header with timeout, method name, payload)
//!   and decoding it again (`FrameDecoder` + `MessageDecoder`), beside a bare `copy_from_slice`
//!   of the payload into a preallocated buffer — the one copy each direction cannot avoid.
//! - `lz4/{compress,decompress}/{size}` and `zstd/...`: the same through `MessageEncoder` /
//!   `MessageDecoder` with compression on, beside the bare `lz4_flex` and `zstd` calls on the
//!   same semi-compressible JSON-like data (for LZ4 compression also `compress_into` a reused
//!   buffer, the primitive the message layer calls). For zstd there are two baselines: the one-shot
//!   `zstd::bulk::compress`/`decompress` (a new context per call) and a reused context (what the
//!   message layer does); the second is the fair one.
//! - `codec/{bare,codec}/{small,4KiB}`: decoding a payload with `BincodeCodec` (nesting depth
//!   bounded by the `DepthLimited` wrapper) beside the bare `bincode::serde::decode_from_slice`
//!   call with the same configuration and trailing-bytes check, i.e. the cost of the depth limit.
//!   `small` is `AddRequest { a: i32, b: i32 }`, `4KiB` a struct holding 512 `u64`s (4 KiB in
//!   memory, about 4.6 KiB as bincode varints). With `--features codec-postcard` the same for
//!   postcard.
//!
//! Run: `cargo bench -p xrpc-proto --bench message -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use xrpc_proto::{
    BincodeCodec, Codec, CodecError, CompressionConfig, CompressionType, FRAME_PREFIX_LEN,
    FrameDecoder, Header, MessageDecoder, MessageEncoder, MessageKind,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const MAX_FRAME: usize = 16 * MIB;
const ZSTD_LEVEL: i32 = 3;

fn size_label(n: usize) -> String {
    match n {
        n if n >= MIB => format!("{}MiB", n / MIB),
        n if n >= KIB => format!("{}KiB", n / KIB),
        n => format!("{n}B"),
    }
}

/// JSON-like records with varying numbers: compresses about 3–5x, like real RPC payloads.
fn json_like(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let rec = format!(
            "{{\"id\":{i},\"user\":\"user-{}\",\"score\":{}.{:02},\"active\":{},\"tags\":[\"t{}\",\"t{}\"]}},",
            s % 100_000,
            (s >> 17) % 10_000,
            (s >> 40) % 100,
            s & 1 == 0,
            (s >> 8) % 16,
            (s >> 12) % 16
        );
        out.extend_from_slice(rec.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn request() -> Header {
    Header {
        timeout: Some(Duration::from_secs(5)),
        ..Header::new(MessageKind::Request, 42).with_codec(1)
    }
}

const METHOD: &str = "bench.echo";

/// Frame + header encode and decode against a bare memcpy of the payload.
fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [64, 4 * KIB, MIB] {
        let payload = json_like(size);
        let label = size_label(size);
        group.throughput(Throughput::Bytes(size as u64));

        let mut dst = vec![0u8; size];
        group.bench_function(BenchmarkId::new("memcpy", &label), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&payload));
                black_box(&dst);
            })
        });

        let mut enc = MessageEncoder::new(MAX_FRAME, CompressionConfig::none());
        let mut out = BytesMut::with_capacity(size + 64);
        group.bench_function(BenchmarkId::new("encode", &label), |b| {
            b.iter(|| {
                out.clear();
                enc.encode(&request(), METHOD, black_box(&payload), &mut out)
                    .unwrap();
                black_box(&out);
            })
        });

        out.clear();
        enc.encode(&request(), METHOD, &payload, &mut out).unwrap();
        let wire = out.clone().freeze();
        let mut frames = FrameDecoder::new(MAX_FRAME);
        let mut dec = MessageDecoder::new(MAX_FRAME);
        group.bench_function(BenchmarkId::new("decode", &label), |b| {
            b.iter(|| {
                frames.handle_bytes(black_box(&wire));
                let frame = frames.poll_frame().unwrap().unwrap();
                let msg = dec.decode(frame).unwrap();
                black_box(msg.payload.len());
            })
        });
    }
    group.finish();
}

/// One message-layer encoder/decoder pair with `algorithm` on for every payload size.
fn message_codec(algorithm: CompressionType) -> (MessageEncoder, MessageDecoder) {
    let cfg = CompressionConfig {
        algorithm,
        threshold: 0,
        zstd_level: ZSTD_LEVEL,
    };
    (
        MessageEncoder::new(MAX_FRAME, cfg),
        MessageDecoder::new(MAX_FRAME),
    )
}

/// Encodes a response carrying `payload` and returns the frame without its prefix.
fn encode_frame(enc: &mut MessageEncoder, payload: &[u8], out: &mut BytesMut) -> Bytes {
    out.clear();
    enc.encode(&Header::new(MessageKind::Response, 42), "", payload, out)
        .unwrap();
    out.split().freeze().slice(FRAME_PREFIX_LEN..)
}

const COMPRESS_SIZES: [usize; 3] = [4 * KIB, 64 * KIB, MIB];

fn lz4(c: &mut Criterion) {
    for size in COMPRESS_SIZES {
        let data = json_like(size);
        let label = size_label(size);
        let (mut enc, mut dec) = message_codec(CompressionType::Lz4);
        let mut out = BytesMut::with_capacity(size + 64);

        let mut group = c.benchmark_group("lz4/compress");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("bare", &label), |b| {
            b.iter(|| black_box(lz4_flex::block::compress_prepend_size(black_box(&data))))
        });
        // The primitive the message layer calls: into a reused buffer, no allocation.
        let mut buf = vec![0u8; lz4_flex::block::get_maximum_output_size(size)];
        group.bench_function(BenchmarkId::new("bare-into", &label), |b| {
            b.iter(|| black_box(lz4_flex::block::compress_into(black_box(&data), &mut buf)))
        });
        group.bench_function(BenchmarkId::new("message", &label), |b| {
            b.iter(|| black_box(encode_frame(&mut enc, black_box(&data), &mut out)))
        });
        group.finish();

        let bare = lz4_flex::block::compress_prepend_size(&data);
        let frame = encode_frame(&mut enc, &data, &mut out);
        assert_eq!(dec.decode(frame.clone()).unwrap().payload, data);
        let mut group = c.benchmark_group("lz4/decompress");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("bare", &label), |b| {
            b.iter(|| {
                black_box(lz4_flex::block::decompress_size_prepended(black_box(&bare)).unwrap())
            })
        });
        group.bench_function(BenchmarkId::new("message", &label), |b| {
            b.iter(|| black_box(dec.decode(black_box(frame.clone())).unwrap()))
        });
        group.finish();
    }
}

fn zstd(c: &mut Criterion) {
    for size in COMPRESS_SIZES {
        let data = json_like(size);
        let label = size_label(size);
        let (mut enc, mut dec) = message_codec(CompressionType::Zstd);
        let mut out = BytesMut::with_capacity(size + 64);

        let mut group = c.benchmark_group("zstd/compress");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("bare-oneshot", &label), |b| {
            b.iter(|| black_box(zstd::bulk::compress(black_box(&data), ZSTD_LEVEL).unwrap()))
        });
        let mut cctx = zstd::bulk::Compressor::new(ZSTD_LEVEL).unwrap();
        group.bench_function(BenchmarkId::new("bare", &label), |b| {
            b.iter(|| black_box(cctx.compress(black_box(&data)).unwrap()))
        });
        group.bench_function(BenchmarkId::new("message", &label), |b| {
            b.iter(|| black_box(encode_frame(&mut enc, black_box(&data), &mut out)))
        });
        group.finish();

        let bare = zstd::bulk::compress(&data, ZSTD_LEVEL).unwrap();
        let frame = encode_frame(&mut enc, &data, &mut out);
        assert_eq!(dec.decode(frame.clone()).unwrap().payload, data);
        let mut group = c.benchmark_group("zstd/decompress");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("bare-oneshot", &label), |b| {
            b.iter(|| black_box(zstd::bulk::decompress(black_box(&bare), size).unwrap()))
        });
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        group.bench_function(BenchmarkId::new("bare", &label), |b| {
            b.iter(|| black_box(dctx.decompress(black_box(&bare), size).unwrap()))
        });
        group.bench_function(BenchmarkId::new("message", &label), |b| {
            b.iter(|| black_box(dec.decode(black_box(frame.clone())).unwrap()))
        });
        group.finish();
    }
}

#[derive(Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Serialize, Deserialize)]
struct Block {
    id: u64,
    values: Vec<u64>,
}

/// The pre-depth-limit `BincodeCodec::decode`, verbatim.
fn bare_bincode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<{ 16 * MIB }>();
    let (value, read) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| CodecError::decode("bincode", e))?;
    if read != bytes.len() {
        return Err(CodecError::decode(
            "bincode",
            format_args!("{} trailing bytes", bytes.len() - read),
        ));
    }
    Ok(value)
}

/// The pre-depth-limit `PostcardCodec::decode`, verbatim.
#[cfg(feature = "codec-postcard")]
fn bare_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::decode("postcard", e))?;
    if !rest.is_empty() {
        return Err(CodecError::decode(
            "postcard",
            format_args!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// Payload decoding with the depth limit against the bare format call.
fn codec(c: &mut Criterion) {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let block = Block {
        id: 7,
        values: (0..512)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect(),
    };
    let add = AddRequest { a: 20, b: -22 };

    fn both<T: Serialize + DeserializeOwned, C: Codec>(
        c: &mut Criterion,
        name: &str,
        codec: C,
        bare: fn(&[u8]) -> Result<T, CodecError>,
        label: &str,
        value: &T,
    ) {
        let bytes = codec.encode(value).unwrap();
        let mut group = c.benchmark_group(format!("codec/{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("bare", label), |b| {
            b.iter(|| black_box(bare(black_box(&bytes)).unwrap()))
        });
        group.bench_function(BenchmarkId::new("codec", label), |b| {
            b.iter(|| black_box(codec.decode::<T>(black_box(&bytes)).unwrap()))
        });
        group.finish();
    }

    both(c, "bincode", BincodeCodec, bare_bincode, "small", &add);
    both(c, "bincode", BincodeCodec, bare_bincode, "4KiB", &block);
    #[cfg(feature = "codec-postcard")]
    {
        use xrpc_proto::PostcardCodec;
        both(c, "postcard", PostcardCodec, bare_postcard, "small", &add);
        both(c, "postcard", PostcardCodec, bare_postcard, "4KiB", &block);
    }
}

criterion_group!(benches, frame, lz4, zstd, codec);
criterion_main!(benches);
