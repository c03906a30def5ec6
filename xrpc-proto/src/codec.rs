//! Serde-based codecs for payloads.
//!
//! A [`Codec`] turns a serde value into payload bytes and back. Each codec has a one-byte wire id
//! ([`CodecId`]) recorded in the message header so a receiver can tell what it got.
//! [`BincodeCodec`] is the default; the others are behind cargo features.
//!
//! Payloads come from the peer: every built-in codec's `decode` rejects input nested deeper than
//! [`MAX_DECODE_DEPTH`] levels and trailing bytes with an error.

#[cfg(any(
    feature = "codec-json",
    feature = "codec-messagepack",
    feature = "codec-cbor",
    feature = "codec-postcard"
))]
use bytes::BufMut;
use bytes::BytesMut;
use serde::{Serialize, de::DeserializeOwned};

use crate::depth::Bounded;

/// Wire identifier of a codec (the header's codec byte).
///
/// 0 is raw bytes (no codec), 1–5 are the built-in codecs, 6–127 are reserved, and 128–255 are
/// free for application-defined codecs.
pub type CodecId = u8;

/// The name of the codec with wire id `id`, for messages and logs: `"raw"` for 0 (raw bytes, no
/// codec), the [`Codec::name`] of the built-in codec for 1–5 (whether or not its feature is
/// enabled), `"reserved"` for 6–127 and `"application-defined"` for 128–255 (print the id as
/// well for those).
///
/// ```
/// use xrpc_proto::codec::codec_name;
/// assert_eq!(codec_name(1), "bincode");
/// assert_eq!(codec_name(2), "json");
/// assert_eq!(format!("codec {} ({})", codec_name(200), 200), "codec application-defined (200)");
/// ```
pub fn codec_name(id: CodecId) -> &'static str {
    match id {
        0 => "raw",
        1 => "bincode",
        2 => "json",
        3 => "messagepack",
        4 => "cbor",
        5 => "postcard",
        6..=127 => "reserved",
        128..=255 => "application-defined",
    }
}

/// Whether this build has the built-in codec with wire id `id`: Bincode (1) always, JSON (2),
/// MessagePack (3), CBOR (4) and Postcard (5) with their cargo features.
pub fn is_builtin_compiled(id: CodecId) -> bool {
    // Feature by feature: with every feature on, clippy would see a `matches!`.
    let has = [
        true,
        cfg!(feature = "codec-json"),
        cfg!(feature = "codec-messagepack"),
        cfg!(feature = "codec-cbor"),
        cfg!(feature = "codec-postcard"),
    ];
    (1..=5).contains(&id) && has[usize::from(id - 1)]
}

/// The codec a server whose own codec is `server` answers a unary request sent in `request`
/// with (PROTOCOL.md, "Codecs"): its own for a request in its own codec or in raw bytes (0),
/// the request's for another built-in codec this build has ([`is_builtin_compiled`]), and
/// `None` — the request is refused as `Unsupported` — for any other id.
///
/// ```
/// use xrpc_proto::codec::answer_codec;
/// assert_eq!(answer_codec(1, 1), Some(1));
/// assert_eq!(answer_codec(1, 0), Some(1));
/// assert_eq!(answer_codec(1, 200), None);
/// ```
pub fn answer_codec(server: CodecId, request: CodecId) -> Option<CodecId> {
    if request == server || request == 0 {
        Some(server)
    } else if is_builtin_compiled(request) {
        Some(request)
    } else {
        None
    }
}

/// Runs `$body` with `$c` bound to the codec that reads and writes wire id `$id`: `$own` for
/// its own id and raw bytes, else the built-in codec of that id (see [`answer_codec`]).
macro_rules! with_codec {
    ($own:expr, $id:expr, |$c:ident| $body:expr) => {{
        let own = $own;
        match $id {
            id if id == 0 || id == codec_id_of(own) => {
                let $c = own;
                $body
            }
            1 => {
                let $c = &BincodeCodec;
                $body
            }
            #[cfg(feature = "codec-json")]
            2 => {
                let $c = &JsonCodec;
                $body
            }
            #[cfg(feature = "codec-messagepack")]
            3 => {
                let $c = &MessagePackCodec;
                $body
            }
            #[cfg(feature = "codec-cbor")]
            4 => {
                let $c = &CborCodec;
                $body
            }
            #[cfg(feature = "codec-postcard")]
            5 => {
                let $c = &PostcardCodec;
                $body
            }
            id => Err(CodecError::decode(
                codec_name(id),
                format_args!(
                    "codec {} ({id}) is not one this server was built with",
                    codec_name(id)
                ),
            )),
        }
    }};
}

fn codec_id_of<C: Codec>(_: &C) -> CodecId {
    C::ID
}

/// Decodes `bytes` that came with wire codec id `id`, with the codec [`answer_codec`] picks
/// (`codec` for its own id and raw bytes).
pub fn decode_with<T: DeserializeOwned, C: Codec>(
    codec: &C,
    id: CodecId,
    bytes: &[u8],
) -> Result<T, CodecError> {
    with_codec!(codec, id, |c| c.decode(bytes))
}

/// Encodes `value` for an answer to a request that came with wire codec id `id` (see
/// [`answer_codec`]).
pub fn encode_with<T: Serialize + ?Sized, C: Codec>(
    codec: &C,
    id: CodecId,
    value: &T,
) -> Result<bytes::Bytes, CodecError> {
    with_codec!(codec, id, |c| c.encode(value))
}

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

    /// Encodes `value` into bytes of its own. They are cut from a buffer kept per thread, so
    /// in steady state (earlier payloads already sent and dropped) this does not allocate.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<bytes::Bytes, CodecError> {
        ENCODE_BUFFER.with(|buf| {
            let Ok(mut out) = buf.try_borrow_mut() else {
                // Re-entered (a Serialize impl that encodes): a buffer of its own.
                let mut out = BytesMut::new();
                self.encode_into(value, &mut out)?;
                return Ok(out.freeze());
            };
            // Reclaims the whole buffer when every payload cut from it is gone.
            out.reserve(ENCODE_BUFFER_SIZE / 2);
            match self.encode_into(value, &mut out) {
                Ok(()) => Ok(out.split().freeze()),
                Err(e) => {
                    out.clear();
                    Err(e)
                }
            }
        })
    }
}

/// Size of the per-thread buffer that [`Codec::encode`] cuts payloads from.
const ENCODE_BUFFER_SIZE: usize = 8 * 1024;

thread_local! {
    static ENCODE_BUFFER: std::cell::RefCell<BytesMut> =
        std::cell::RefCell::new(BytesMut::with_capacity(ENCODE_BUFFER_SIZE));
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
        bincode::serde::encode_into_writer(value, Appender(out), bincode::config::standard())
            .map_err(|e| CodecError::encode("bincode", e))
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

/// Bincode's output appended to a buffer, without the `std::io::Write` layer in between
/// (serde encodes a byte array one byte per write).
struct Appender<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for Appender<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
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
    fn codec_names_are_the_codecs_own() {
        assert_eq!(codec_name(0), "raw");
        assert_eq!(codec_name(BincodeCodec::ID), BincodeCodec.name());
        #[cfg(feature = "codec-json")]
        assert_eq!(codec_name(JsonCodec::ID), JsonCodec.name());
        #[cfg(feature = "codec-messagepack")]
        assert_eq!(codec_name(MessagePackCodec::ID), MessagePackCodec.name());
        #[cfg(feature = "codec-cbor")]
        assert_eq!(codec_name(CborCodec::ID), CborCodec.name());
        #[cfg(feature = "codec-postcard")]
        assert_eq!(codec_name(PostcardCodec::ID), PostcardCodec.name());
        // Named whether or not the feature is enabled: the ids are the wire's.
        let names: Vec<_> = (1..=5).map(codec_name).collect();
        assert_eq!(
            names,
            ["bincode", "json", "messagepack", "cbor", "postcard"]
        );
        assert_eq!(codec_name(6), "reserved");
        assert_eq!(codec_name(127), "reserved");
        assert_eq!(codec_name(128), "application-defined");
        assert_eq!(codec_name(255), "application-defined");
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
}
