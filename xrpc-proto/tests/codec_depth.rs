//! The built-in codecs bound the nesting depth of what they decode (`MAX_DECODE_DEPTH`):
//! input nested a million levels deep is an error, not a stack overflow that aborts the
//! process. The checks run on a thread with a 2 MiB stack (the default of test threads), so
//! an unbounded recursion would really overflow it. (Integration tests may start threads; the
//! crate's own code never does.)

use serde::{Deserialize, Serialize};
#[cfg(feature = "codec-cbor")]
use xrpc_proto::CborCodec;
#[cfg(feature = "codec-json")]
use xrpc_proto::JsonCodec;
#[cfg(feature = "codec-messagepack")]
use xrpc_proto::MessagePackCodec;
#[cfg(feature = "codec-postcard")]
use xrpc_proto::PostcardCodec;
use xrpc_proto::codec::MAX_DECODE_DEPTH;
use xrpc_proto::{BincodeCodec, Codec, CodecError};

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
