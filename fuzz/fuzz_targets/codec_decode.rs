//! Bytes into every codec's `decode` of a representative payload type. Whatever decodes must
//! re-encode and decode to the same value.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use xrpc_proto::{BincodeCodec, CborCodec, Codec, JsonCodec, MessagePackCodec, PostcardCodec};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Item {
    Empty,
    Count(u32),
    Pair(i64, String),
    Point { x: i16, y: i16 },
    Blob(Vec<u8>),
}

/// Not recursive: serde decoders of self-nesting types recurse once per level of input.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Request {
    id: u64,
    name: String,
    tags: Vec<String>,
    limit: Option<u32>,
    flag: bool,
    letter: char,
    items: Vec<Item>,
    attrs: BTreeMap<String, i64>,
    inner: Option<(u8, Vec<Option<Item>>)>,
}

fn check<C: Codec>(codec: C, data: &[u8]) {
    if let Ok(value) = codec.decode::<Request>(data) {
        let bytes = codec.encode(&value).expect("a decoded value re-encodes");
        let again: Request = codec.decode(&bytes).expect("a re-encoded value decodes");
        assert_eq!(again, value, "{}", codec.name());
    }
    let _ = codec.decode::<Vec<String>>(data);
    let _ = codec.decode::<(u64, Option<char>, Item)>(data);
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the codec, so the fuzzer can specialise inputs per format.
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => check(BincodeCodec, data),
        1 => check(JsonCodec, data),
        2 => check(MessagePackCodec, data),
        3 => check(CborCodec, data),
        _ => check(PostcardCodec, data),
    }
});
