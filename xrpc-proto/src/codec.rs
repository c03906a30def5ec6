//! Serde-based codecs for payloads.
//!
//! A [`Codec`] turns a serde value into payload bytes and back. Each codec has a one-byte wire id
//! ([`CodecId`]) recorded in the message header so a receiver can tell what it got.
//! [`BincodeCodec`] is the default; the others are behind cargo features.
//!
//! Payloads come from the peer: every built-in codec's `decode` rejects input nested deeper than
//! [`MAX_DECODE_DEPTH`] levels and trailing bytes with an error.

use bytes::{BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use crate::depth::Bounded;

/// Wire identifier of a codec (the header's codec byte).
///
/// 0 is raw bytes (no codec), 1–5 are the built-in codecs, 6–127 are reserved, and 128–255 are
/// free for application-defined codecs.
pub type CodecId = u8;

/// Largest value, in bytes, a built-in codec will allocate for while decoding (16 MiB).
///
/// Decoders bound every length they read by this before allocating.
pub const MAX_DECODE_ALLOC: usize = 16 * 1024 * 1024;

/// Deepest nesting a built-in codec will decode (128 levels); deeper input is a decode error.
///
/// Decoding a recursive type recurses once per level of the input, so without a bound a peer's
/// payload could overflow the stack. A level is one compound value: a sequence, tuple, map,
/// struct, enum, the value inside a `Some`, or the inside of a newtype struct. So
/// `enum Tree { Leaf, Node(Box<Tree>) }` costs one level per node and
/// `struct List(Option<Box<List>>)` two per element.
pub const MAX_DECODE_DEPTH: usize = 128;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{codec} {op} failed: {reason}")]
pub struct CodecError {
    /// The codec's name.
    pub codec: &'static str,
    /// `"encode"` or `"decode"`.
    pub op: &'static str,
    /// The underlying library's message.
    pub reason: String,
}

impl CodecError {
    /// An encode error of `codec`.
    pub fn encode(codec: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            codec,
            op: "encode",
            reason: reason.to_string(),
        }
    }

    /// A decode error of `codec`.
    pub fn decode(codec: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            codec,
            op: "decode",
            reason: reason.to_string(),
        }
    }
}

/// Serializes values to payload bytes and back.
///
/// Implement it to plug in another format: choose an [`ID`](Codec::ID) of 128 or above.
///
/// ```
/// use xrpc_proto::{BincodeCodec, Codec};
/// let codec = BincodeCodec;
/// let bytes = codec.encode(&(1u32, "two")).unwrap();
/// let back: (u32, String) = codec.decode(&bytes).unwrap();
/// assert_eq!(back, (1, "two".to_string()));
/// ```
pub trait Codec: Clone + Send + Sync + 'static {
    /// The codec's wire id.
    const ID: CodecId;

    /// A short name for errors and logs.
    fn name(&self) -> &'static str;

    /// Appends the encoding of `value` to `out`.
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError>;

    /// Decodes one value that spans all of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// Encodes `value` into a new buffer.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<bytes::Bytes, CodecError> {
        let mut out = BytesMut::with_capacity(64);
        self.encode_into(value, &mut out)?;
        Ok(out.freeze())
    }
}

/// Bincode 2 (serde mode, standard configuration: little-endian, variable-length integers).
///
/// Decoding allocates at most [`MAX_DECODE_ALLOC`] bytes for one value, nests at most
/// [`MAX_DECODE_DEPTH`] levels and rejects trailing bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BincodeCodec;

type BincodeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODE_ALLOC>,
>;

const BINCODE: BincodeConfig = bincode::config::standard().with_limit::<MAX_DECODE_ALLOC>();

impl Codec for BincodeCodec {
    const ID: CodecId = 1;

    fn name(&self) -> &'static str {
        "bincode"
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let mut w = out.writer();
        bincode::serde::encode_into_std_write(value, &mut w, bincode::config::standard())
            .map(|_| ())
            .map_err(|e| CodecError::encode("bincode", e))
    }

    /// Small values are encoded on the stack and copied into a buffer of exactly their size:
    /// one allocation per payload.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<bytes::Bytes, CodecError> {
        let mut stack = [0u8; 128];
        match bincode::serde::encode_into_slice(value, &mut stack, bincode::config::standard()) {
            Ok(n) => Ok(bytes::Bytes::copy_from_slice(&stack[..n])),
            Err(bincode::error::EncodeError::UnexpectedEnd) => {
                let mut out = BytesMut::with_capacity(1024);
                self.encode_into(value, &mut out)?;
                Ok(out.freeze())
            }
            Err(e) => Err(CodecError::encode("bincode", e)),
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (Bounded(value), read) = bincode::serde::decode_from_slice(bytes, BINCODE)
            .map_err(|e| CodecError::decode("bincode", e))?;
        if read != bytes.len() {
            return Err(CodecError::decode(
                "bincode",
                format_args!("{} trailing bytes", bytes.len() - read),
            ));
        }
        Ok(value)
    }
}

/// JSON via `serde_json` (feature `codec-json`).
#[cfg(feature = "codec-json")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

#[cfg(feature = "codec-json")]
impl Codec for JsonCodec {
    const ID: CodecId = 2;

    fn name(&self) -> &'static str {
        "json"
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        serde_json::to_writer(out.writer(), value).map_err(|e| CodecError::encode("json", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes)
            .map(|Bounded(value)| value)
            .map_err(|e| CodecError::decode("json", e))
    }
}

/// MessagePack via `rmp-serde` (feature `codec-messagepack`); structs encode as maps.
#[cfg(feature = "codec-messagepack")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagePackCodec;

#[cfg(feature = "codec-messagepack")]
impl Codec for MessagePackCodec {
    const ID: CodecId = 3;

    fn name(&self) -> &'static str {
        "messagepack"
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let mut w = out.writer();
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut w).with_struct_map())
            .map_err(|e| CodecError::encode("messagepack", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
        let Bounded(value) = serde::Deserialize::deserialize(&mut de)
            .map_err(|e| CodecError::decode("messagepack", e))?;
        let read = de.position() as usize;
        if read != bytes.len() {
            return Err(CodecError::decode(
                "messagepack",
                format_args!("{} trailing bytes", bytes.len() - read),
            ));
        }
        Ok(value)
    }
}

/// CBOR via `ciborium` (feature `codec-cbor`).
#[cfg(feature = "codec-cbor")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CborCodec;

#[cfg(feature = "codec-cbor")]
impl Codec for CborCodec {
    const ID: CodecId = 4;

    fn name(&self) -> &'static str {
        "cbor"
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        ciborium::into_writer(value, out.writer()).map_err(|e| CodecError::encode("cbor", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let mut rest = bytes;
        let Bounded(value) =
            ciborium::from_reader(&mut rest).map_err(|e| CodecError::decode("cbor", e))?;
        if !rest.is_empty() {
            return Err(CodecError::decode(
                "cbor",
                format_args!("{} trailing bytes", rest.len()),
            ));
        }
        Ok(value)
    }
}

/// Postcard (feature `codec-postcard`): compact, `no_std`-friendly.
#[cfg(feature = "codec-postcard")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostcardCodec;

#[cfg(feature = "codec-postcard")]
impl Codec for PostcardCodec {
    const ID: CodecId = 5;

    fn name(&self) -> &'static str {
        "postcard"
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        postcard::to_io(value, out.writer())
            .map(|_| ())
            .map_err(|e| CodecError::encode("postcard", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (Bounded(value), rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CodecError::decode("postcard", e))?;
        if !rest.is_empty() {
            return Err(CodecError::decode(
                "postcard",
                format_args!("{} trailing bytes", rest.len()),
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        a: i32,
        name: String,
        items: Vec<u64>,
        opt: Option<bool>,
    }

    fn sample() -> Sample {
        Sample {
            a: -7,
            name: "xrpc".into(),
            items: vec![1, 2, 3, u64::MAX],
            opt: Some(true),
        }
    }

    fn check<C: Codec>(codec: C) {
        let bytes = codec.encode(&sample()).unwrap();
        let back: Sample = codec.decode(&bytes).unwrap();
        assert_eq!(back, sample());
        // Truncation and garbage are errors, never panics.
        for cut in 0..bytes.len() {
            let _ = codec.decode::<Sample>(&bytes[..cut]);
        }
        assert!(codec.decode::<Sample>(&[0xff; 64]).is_err());
        // One value must span all the bytes (regression: CBOR and MessagePack ignored the rest).
        let mut longer = bytes.to_vec();
        longer.push(0x01);
        assert!(
            codec.decode::<Sample>(&longer).is_err(),
            "{} accepted a trailing byte",
            codec.name()
        );
    }

    #[test]
    fn bincode_roundtrip() {
        check(BincodeCodec);
        let mut bytes = BincodeCodec.encode(&5u32).unwrap().to_vec();
        bytes.push(0);
        assert!(
            BincodeCodec.decode::<u32>(&bytes).is_err(),
            "trailing bytes"
        );
    }

    #[test]
    fn bincode_huge_length_claim_is_an_error() {
        // A varint claiming a 2^60-byte string must not allocate it.
        let evil = [0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10];
        assert!(BincodeCodec.decode::<String>(&evil).is_err());
        assert!(BincodeCodec.decode::<Vec<u64>>(&evil).is_err());
    }

    #[cfg(feature = "codec-json")]
    #[test]
    fn json_roundtrip() {
        check(JsonCodec);
    }

    #[cfg(feature = "codec-messagepack")]
    #[test]
    fn messagepack_roundtrip() {
        check(MessagePackCodec);
    }

    #[cfg(feature = "codec-cbor")]
    #[test]
    fn cbor_roundtrip() {
        check(CborCodec);
    }

    #[cfg(feature = "codec-postcard")]
    #[test]
    fn postcard_roundtrip() {
        check(PostcardCodec);
    }

    /// One level per node.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    impl Tree {
        fn with_depth(nodes: usize) -> Tree {
            (0..nodes).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
        }
    }

    /// Two levels per element (newtype + `Some`); `List(None)` encodes as just "none", so in the
    /// self-describing formats any other single value asks for an infinitely deep `List`.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct List(Option<Box<List>>);

    impl List {
        fn with_len(len: usize) -> List {
            (0..len).fold(List(None), |l, _| List(Some(Box::new(l))))
        }
    }

    /// The encoding of `Tree` with `nodes` nodes, built by hand without building the tree:
    /// `prefix^nodes leaf suffix^nodes`, with prefix and suffix taken from `Node(Leaf)`.
    fn deep_tree_bytes<C: Codec>(codec: &C, nodes: usize) -> Vec<u8> {
        let leaf = codec.encode(&Tree::Leaf).unwrap();
        let one = codec.encode(&Tree::with_depth(1)).unwrap();
        let at = one
            .windows(leaf.len())
            .rposition(|w| w == &leaf[..])
            .unwrap();
        let (prefix, suffix) = (&one[..at], &one[at + leaf.len()..]);
        let mut out = Vec::with_capacity(nodes * (prefix.len() + suffix.len()) + leaf.len());
        for _ in 0..nodes {
            out.extend_from_slice(prefix);
        }
        out.extend_from_slice(&leaf);
        for _ in 0..nodes {
            out.extend_from_slice(suffix);
        }
        if nodes <= 3 {
            let real = codec.encode(&Tree::with_depth(nodes)).unwrap();
            assert_eq!(&real[..], &out[..], "{}", codec.name());
        }
        out
    }

    /// `err` is the depth limit's (postcard drops custom messages; serde_json and ciborium have
    /// limits of their own on maps and sequences, which may trip first).
    fn assert_depth_error(name: &str, err: &CodecError) {
        let reason = &err.reason;
        let ok = match name {
            "postcard" => reason == "Serde Deserialization Error",
            "json" => reason.contains("nesting deeper than") || reason.contains("recursion limit"),
            "cbor" => reason.contains("nesting deeper than") || reason == "RecursionLimitExceeded",
            _ => reason.contains(&format!("nesting deeper than {MAX_DECODE_DEPTH} levels")),
        };
        assert!(ok, "{name}: {err}");
    }

    /// Runs `f` on a thread with the default 2 MiB test stack: a stack overflow aborts the whole
    /// test process, which is the failure these tests exist to catch.
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    /// Input nested a million levels deep is an error, not a stack overflow; input nested as
    /// deep as allowed still decodes.
    fn check_depth<C: Codec>(codec: C) {
        on_small_stack(move || {
            let name = codec.name();
            // A million nested enum variants (bincode/postcard: 1,000,000 bytes of 1, then 0).
            let deep = deep_tree_bytes(&codec, 1_000_000);
            let err = codec.decode::<Tree>(&deep).unwrap_err();
            assert_depth_error(name, &err);
            // As deep as allowed (the leaf is a level too), and one more.
            let ok = deep_tree_bytes(&codec, MAX_DECODE_DEPTH - 1);
            assert_eq!(
                codec.decode::<Tree>(&ok).unwrap(),
                Tree::with_depth(MAX_DECODE_DEPTH - 1),
                "{name}"
            );
            let too_deep = deep_tree_bytes(&codec, MAX_DECODE_DEPTH);
            assert!(codec.decode::<Tree>(&too_deep).is_err(), "{name}");
            // Legitimate depths round-trip.
            for nodes in [0, 1, 2, 100] {
                let tree = Tree::with_depth(nodes);
                let bytes = codec.encode(&tree).unwrap();
                assert_eq!(codec.decode::<Tree>(&bytes).unwrap(), tree, "{name}");
            }
            // `List` costs 2 levels per element and 1 for the final `List(None)`.
            if name == "bincode" || name == "postcard" {
                let at_limit = codec
                    .encode(&List::with_len(MAX_DECODE_DEPTH / 2 - 1))
                    .unwrap();
                assert!(codec.decode::<List>(&at_limit).is_ok(), "{name}");
                let over = codec.encode(&List::with_len(MAX_DECODE_DEPTH / 2)).unwrap();
                assert!(codec.decode::<List>(&over).is_err(), "{name}");
            }
            for len in [0, 1, 60, MAX_DECODE_DEPTH / 2 - 1] {
                let list = List::with_len(len);
                let bytes = codec.encode(&list).unwrap();
                let back = codec.decode::<List>(&bytes);
                // Self-describing formats cannot tell `List(None)` from `List(Some(List(None)))`.
                if len == 0 || codec.name() == "bincode" || codec.name() == "postcard" {
                    assert_eq!(back.unwrap(), list, "{name}");
                }
            }
            // A single non-"none" value as a `List`: bincode/postcard run out of input, the
            // self-describing formats would recurse without reading anything.
            let one = codec.encode(&1u8).unwrap();
            let err = codec.decode::<List>(&one).unwrap_err();
            if name != "bincode" && name != "postcard" {
                assert_depth_error(name, &err);
            }
            // A million nested `Some`s: 1,000,000 bytes of 1, then 0.
            if name == "bincode" || name == "postcard" {
                let mut deep = vec![1; 1_000_000];
                deep.push(0);
                let err = codec.decode::<List>(&deep).unwrap_err();
                assert_depth_error(name, &err);
            }
        });
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect(u32, u32),
        Poly {
            points: Vec<(i16, i16)>,
            closed: bool,
        },
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Meta {
        owner: String,
        tags: Vec<String>,
        version: (u8, u16),
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Rich {
        id: u64,
        name: String,
        values: Vec<i64>,
        counts: std::collections::HashMap<String, u32>,
        maybe: Option<Box<Rich>>,
        shapes: Vec<Shape>,
        meta: Meta,
        blob: Vec<u8>,
        flag: Option<bool>,
    }

    fn rich() -> Rich {
        let leaf = Rich {
            id: 2,
            name: String::new(),
            values: vec![],
            counts: Default::default(),
            maybe: None,
            shapes: vec![Shape::Empty],
            meta: Meta {
                owner: "b".into(),
                tags: vec![],
                version: (0, 0),
            },
            blob: vec![],
            flag: None,
        };
        Rich {
            id: u64::MAX,
            name: "ünïcode ✓".into(),
            values: vec![i64::MIN, -1, 0, 1, i64::MAX],
            counts: [("a".to_string(), 1), ("bb".to_string(), u32::MAX)].into(),
            maybe: Some(Box::new(leaf)),
            shapes: vec![
                Shape::Empty,
                Shape::Circle(1.5),
                Shape::Rect(3, 4),
                Shape::Poly {
                    points: vec![(0, 0), (-3, 7)],
                    closed: true,
                },
            ],
            meta: Meta {
                owner: "a".into(),
                tags: vec!["x".into(), "y".into()],
                version: (1, 515),
            },
            blob: vec![0, 255, 7],
            flag: Some(false),
        }
    }

    /// Ordinary values come back unchanged through the depth limit.
    fn check_rich<C: Codec>(codec: C) {
        let value = rich();
        let bytes = codec.encode(&value).unwrap();
        assert_eq!(
            codec.decode::<Rich>(&bytes).unwrap(),
            value,
            "{}",
            codec.name()
        );
    }

    /// Random bytes (biased to small values, which are the tags and lengths that nest) decode to
    /// values or errors, never a panic or a stack overflow.
    fn check_random_bytes<C: Codec>(codec: C) {
        on_small_stack(move || {
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut buf = Vec::new();
            for round in 0..20_000 {
                buf.clear();
                let len = (next() % if round % 100 == 0 { 4096 } else { 64 }) as usize;
                let small = next() % 2 == 0;
                for _ in 0..len {
                    let r = next();
                    buf.push(if small { (r % 3) as u8 } else { r as u8 });
                }
                let _ = codec.decode::<Tree>(&buf);
                let _ = codec.decode::<List>(&buf);
                let _ = codec.decode::<Rich>(&buf);
            }
            // Long runs of each single byte.
            for b in 0..=255u8 {
                let run = vec![b; 100_000];
                let _ = codec.decode::<Tree>(&run);
                let _ = codec.decode::<List>(&run);
                let _ = codec.decode::<Rich>(&run);
            }
        });
    }

    #[test]
    fn bincode_depth_is_bounded() {
        check_depth(BincodeCodec);
        check_rich(BincodeCodec);
        check_random_bytes(BincodeCodec);
    }

    #[cfg(feature = "codec-json")]
    #[test]
    fn json_depth_is_bounded() {
        check_depth(JsonCodec);
        check_rich(JsonCodec);
        check_random_bytes(JsonCodec);
    }

    #[cfg(feature = "codec-messagepack")]
    #[test]
    fn messagepack_depth_is_bounded() {
        check_depth(MessagePackCodec);
        check_rich(MessagePackCodec);
        check_random_bytes(MessagePackCodec);
    }

    #[cfg(feature = "codec-cbor")]
    #[test]
    fn cbor_depth_is_bounded() {
        check_depth(CborCodec);
        check_rich(CborCodec);
        check_random_bytes(CborCodec);
    }

    #[cfg(feature = "codec-postcard")]
    #[test]
    fn postcard_depth_is_bounded() {
        check_depth(PostcardCodec);
        check_rich(PostcardCodec);
        check_random_bytes(PostcardCodec);
    }
}
