//! The worked examples of `docs/PROTOCOL.md` §7 are what the implementation produces and accepts.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use xrpc_proto::{
    BincodeCodec, Codec, CompressionConfig, CompressionType, ErrorCode, FRAME_PREFIX_LEN,
    FrameDecoder, Header, MessageDecoder, MessageEncoder, MessageKind, Metadata, RemoteError,
    Signature,
};

/// The document, compiled in (the sans-IO crate's tests read no files).
fn protocol_md() -> String {
    include_str!("../../docs/PROTOCOL.md").to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Asserts the document shows `wire` verbatim as a hex line.
fn assert_documented(doc: &str, what: &str, wire: &[u8]) {
    let line = hex(wire);
    assert!(
        doc.lines().any(|l| l.trim() == line),
        "PROTOCOL.md §7 should show the {what} as:\n{line}"
    );
}

#[test]
fn request_response_and_error_examples() {
    let doc = protocol_md();
    let mut enc = MessageEncoder::default();

    let mut request = BytesMut::new();
    let header = Header {
        timeout: Some(Duration::from_millis(1500)),
        ..Header::new(MessageKind::Request, 1).with_codec(BincodeCodec::ID)
    };
    let args = BincodeCodec.encode(&(2u32, 3u32)).unwrap();
    enc.encode(&header, "add", &args, &mut request).unwrap();
    assert_documented(&doc, "request", &request);

    let mut response = BytesMut::new();
    let five = BincodeCodec.encode(&5u32).unwrap();
    let header = Header::new(MessageKind::Response, 1).with_codec(BincodeCodec::ID);
    enc.encode(&header, "", &five, &mut response).unwrap();
    assert_documented(&doc, "response", &response);

    let mut error = BytesMut::new();
    let mut payload = BytesMut::new();
    RemoteError::new(ErrorCode::MethodNotFound, "no method add").encode_into(&mut payload);
    enc.encode(
        &Header::new(MessageKind::Error, 1),
        "",
        &payload,
        &mut error,
    )
    .unwrap();
    assert_documented(&doc, "error", &error);

    // And they decode back, through the stream path.
    let mut frames = FrameDecoder::new(1024);
    frames.handle_bytes(&[&request[..], &response[..], &error[..]].concat());
    let mut dec = MessageDecoder::default();
    let req = dec.decode(frames.poll_frame().unwrap().unwrap()).unwrap();
    assert_eq!(req.method(), "add");
    assert_eq!(req.header.timeout, Some(Duration::from_micros(1_500_000)));
    let (a, b): (u32, u32) = BincodeCodec.decode(&req.payload).unwrap();
    assert_eq!((a, b), (2, 3));
    let resp = dec.decode(frames.poll_frame().unwrap().unwrap()).unwrap();
    assert_eq!(BincodeCodec.decode::<u32>(&resp.payload).unwrap(), 5);
    let err = dec.decode(frames.poll_frame().unwrap().unwrap()).unwrap();
    let err = RemoteError::decode(&err.payload);
    assert_eq!(err.code, ErrorCode::MethodNotFound);
    assert_eq!(err.message, "no method add");
}

#[test]
fn compressed_example_decodes() {
    let doc = protocol_md();
    let line = doc
        .lines()
        .find(|l| l.trim().starts_with("1f 00 00 00 58 52 01 02 00 00 01"))
        .expect("PROTOCOL.md §7 shows an LZ4-compressed response");
    let wire = unhex(line);
    let mut frames = FrameDecoder::new(1024);
    frames.handle_bytes(&wire);
    let frame = frames.poll_frame().unwrap().unwrap();
    assert_eq!(frames.buffered(), 0);
    let msg = MessageDecoder::new(64).decode(frame.clone()).unwrap();
    assert_eq!(msg.header.compression, CompressionType::Lz4);
    assert_eq!(&msg.payload[..], &[b'a'; 64][..]);
    // The receiver's bound applies to the declared length.
    assert!(MessageDecoder::new(63).decode(frame).is_err());

    // Our own encoder produces some valid LZ4 block for the same payload.
    let mut out = BytesMut::new();
    MessageEncoder::new(1024, CompressionConfig::lz4().with_threshold(0))
        .encode(
            &Header::new(MessageKind::Response, 1),
            "",
            &[b'a'; 64],
            &mut out,
        )
        .unwrap();
    let frame: Bytes = out.freeze().slice(FRAME_PREFIX_LEN..);
    let msg = MessageDecoder::new(64).decode(frame).unwrap();
    assert_eq!(msg.header.compression, CompressionType::Lz4);
    assert_eq!(&msg.payload[..], &[b'a'; 64][..]);
}

#[test]
fn metadata_and_signature_example() {
    let doc = protocol_md();
    let mut enc = MessageEncoder::default();
    let signature = Signature::new("fn(u32) -> u64");
    let header = Header {
        signature: Some(signature.fingerprint),
        ..Header::new(MessageKind::Request, 2).with_codec(BincodeCodec::ID)
    };
    let mut metadata = Metadata::new();
    metadata.insert("tenant", "acme").unwrap();
    let args = BincodeCodec.encode(&7u32).unwrap();
    let mut request = BytesMut::new();
    enc.encode_with_metadata(&header, "get", &metadata, &args, &mut request)
        .unwrap();
    assert_documented(&doc, "request with metadata and a signature", &request);
    assert!(
        doc.contains(&format!("`{:016x}`", signature.fingerprint)),
        "PROTOCOL.md §7 should name the fingerprint {:016x}",
        signature.fingerprint
    );

    // It decodes back, metadata and fingerprint included.
    let mut frames = FrameDecoder::new(1024);
    frames.handle_bytes(&request);
    let msg = MessageDecoder::default()
        .decode(frames.poll_frame().unwrap().unwrap())
        .unwrap();
    assert_eq!(msg.method(), "get");
    assert_eq!(msg.header.signature, Some(signature.fingerprint));
    assert_eq!(msg.metadata().get_str("tenant"), Some("acme"));
    assert_eq!(&msg.payload[..], &[7]);

    // The header length formula of §2.4: 16 + 8 (signature) + M + 2 + B.
    let b = metadata.encoded_len();
    assert_eq!(
        request.len() - FRAME_PREFIX_LEN - args.len(),
        16 + 8 + 3 + 2 + b
    );
}
