//! Call metadata ([`Metadata`]) and type signatures ([`Signature`]).
//!
//! Metadata is a small key/value map a client attaches to a request or a notification
//! (`CallOptions::with_metadata`) and every handler reads from its call context. It travels in
//! the message header, after the method name, when the flag `HAS_METADATA` (0x10) is set
//! (`docs/PROTOCOL.md` §3.3):
//!
//! ```text
//! u16 LE  B       bytes of entries that follow (1..=65535)
//! B bytes         entries, each: u8 K (1..=255), K bytes of key, u16 LE V, V bytes of value
//! ```
//!
//! Keys are 1 to 255 bytes of printable ASCII (0x21..=0x7e: no space, no control character,
//! no byte above 0x7f; so always valid UTF-8), unique within a message; values are arbitrary
//! bytes, up to 65535. A [`Metadata`] holds its entries in that wire form: a clone shares the
//! bytes, an empty map holds no allocation, and a received map is a slice of its frame.
//!
//! A [`Signature`] names the types of a method (`"fn(kv::GetRequest) -> kv::GetResponse"`) and
//! carries their 64-bit fingerprint; the fingerprint travels with a request (flag
//! `HAS_SIGNATURE`, 0x20) and the server compares it with the signature registered for the
//! method (see [`ErrorCode::TypeMismatch`](crate::ErrorCode::TypeMismatch)).

use bytes::{BufMut, Bytes, BytesMut};

/// Longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = u8::MAX as usize;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = u16::MAX as usize;
/// Longest encoded metadata block (the entries after the u16 length).
pub const MAX_METADATA_BLOCK_LEN: usize = u16::MAX as usize;
/// Most entries a block may hold (a protocol rule: it bounds the receiver's check that keys
/// are unique, which compares each key with the ones before it).
pub const MAX_METADATA_BLOCK_ENTRIES: usize = 255;
/// Default of `max_metadata_bytes` (client and server): bytes of encoded entries per message.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 4 * 1024;
/// Default of `max_metadata_entries` (client and server): entries per message.
pub const DEFAULT_MAX_METADATA_ENTRIES: usize = 32;

/// Why metadata cannot be built, sent or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A key is empty.
    #[error("metadata key is empty")]
    EmptyKey,
    /// A key is longer than 255 bytes.
    #[error("metadata key of {len} bytes exceeds the maximum of 255")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// A key holds a character outside printable ASCII (0x21..=0x7e).
    #[error("metadata key {key:?} has a character outside printable ASCII (0x21..=0x7e)")]
    InvalidKey {
        /// The key (lossy).
        key: String,
    },
    /// A value is longer than 65535 bytes.
    #[error("metadata value of key {key:?} is {len} bytes, over the maximum of 65535")]
    ValueTooLong {
        /// The key.
        key: String,
        /// The value's length.
        len: usize,
    },
    /// The encoded entries would exceed 65535 bytes, the most a header can carry.
    #[error("metadata of {size} bytes exceeds the maximum of 65535 a header carries")]
    BlockTooLarge {
        /// The encoded size.
        size: usize,
    },
    /// The entries exceed the `max_metadata_bytes` limit (of the client's or the server's
    /// configuration).
    #[error("metadata of {size} bytes exceeds max_metadata_bytes {max}")]
    TooManyBytes {
        /// Bytes of encoded entries.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The entries exceed the `max_metadata_entries` limit (of the client's or the server's
    /// configuration).
    #[error("metadata of {count} entries exceeds max_metadata_entries {max}")]
    TooManyEntries {
        /// Entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A received block is malformed (the connection's peer broke the protocol).
    #[error("malformed metadata: {0}")]
    Malformed(&'static str),
}

/// The key/value map of a call (see the [module docs](self)). Cloning shares the bytes.
///
/// ```
/// use xrpc_proto::Metadata;
/// let mut md = Metadata::new();
/// md.insert("tenant", "acme")?.insert("traceparent", "00-4bf9…-01")?;
/// assert_eq!(md.get_str("tenant"), Some("acme"));
/// assert_eq!(md.len(), 2);
/// # Ok::<(), xrpc_proto::MetadataError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// The entries in wire form (without the u16 block length).
    raw: Bytes,
    /// How many entries `raw` holds.
    len: usize,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.iter() {
            match std::str::from_utf8(v) {
                Ok(s) => m.entry(&k, &s),
                Err(_) => m.entry(&k, &v),
            };
        }
        m.finish()
    }
}

/// Checks a key: 1..=255 bytes of printable ASCII.
fn check_key(key: &[u8]) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey);
    }
    if key.len() > MAX_METADATA_KEY_LEN {
        return Err(MetadataError::KeyTooLong { len: key.len() });
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(MetadataError::InvalidKey {
            key: String::from_utf8_lossy(key).into_owned(),
        });
    }
    Ok(())
}

impl Metadata {
    /// An empty map (no allocation).
    pub const fn new() -> Self {
        Self {
            raw: Bytes::new(),
            len: 0,
        }
    }

    /// Sets `key` to `value`, replacing an earlier value of `key`. Fails — leaving the map as it
    /// was — if the key is not 1..=255 bytes of printable ASCII, the value is over 65535 bytes,
    /// or the whole would not fit a header (65535 bytes of entries). The limits of a
    /// configuration (`max_metadata_bytes`, `max_metadata_entries`) are checked when the call
    /// is made.
    pub fn insert(
        &mut self,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, MetadataError> {
        let value = value.as_ref();
        check_key(key.as_bytes())?;
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(MetadataError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
            });
        }
        let old = self.entry_range(key);
        if old.is_none() && self.len == MAX_METADATA_BLOCK_ENTRIES {
            return Err(MetadataError::TooManyEntries {
                count: self.len + 1,
                max: MAX_METADATA_BLOCK_ENTRIES,
            });
        }
        let kept = self.raw.len() - old.as_ref().map_or(0, |r| r.len());
        let size = kept + 1 + key.len() + 2 + value.len();
        if size > MAX_METADATA_BLOCK_LEN {
            return Err(MetadataError::BlockTooLarge { size });
        }
        let mut out = BytesMut::with_capacity(size);
        match &old {
            Some(r) => {
                out.put_slice(&self.raw[..r.start]);
                out.put_slice(&self.raw[r.end..]);
            }
            None => out.put_slice(&self.raw),
        }
        out.put_u8(key.len() as u8);
        out.put_slice(key.as_bytes());
        out.put_u16_le(value.len() as u16);
        out.put_slice(value);
        self.raw = out.freeze();
        if old.is_none() {
            self.len += 1;
        }
        Ok(self)
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(r) = self.entry_range(key) else {
            return false;
        };
        let mut out = BytesMut::with_capacity(self.raw.len() - r.len());
        out.put_slice(&self.raw[..r.start]);
        out.put_slice(&self.raw[r.end..]);
        self.raw = if out.is_empty() {
            Bytes::new()
        } else {
            out.freeze()
        };
        self.len -= 1;
        true
    }

    /// The byte range of `key`'s entry in `raw`.
    fn entry_range(&self, key: &str) -> Option<std::ops::Range<usize>> {
        let mut pos = 0;
        for (k, v) in self.iter() {
            let end = pos + 1 + k.len() + 2 + v.len();
            if k == key {
                return Some(pos..end);
            }
            pos = end;
        }
        None
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of `key`, if it is UTF-8 text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The entries, in the order they were first inserted (or received).
    pub fn iter(&self) -> MetadataIter<'_> {
        MetadataIter { rest: &self.raw }
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the entries in wire form (what `max_metadata_bytes` bounds; the header adds
    /// the 2-byte block length).
    pub fn encoded_len(&self) -> usize {
        self.raw.len()
    }

    /// Checks the map against the limits of a configuration.
    pub fn check_limits(&self, max_bytes: usize, max_entries: usize) -> Result<(), MetadataError> {
        if self.len > max_entries {
            return Err(MetadataError::TooManyEntries {
                count: self.len,
                max: max_entries,
            });
        }
        if self.raw.len() > max_bytes {
            return Err(MetadataError::TooManyBytes {
                size: self.raw.len(),
                max: max_bytes,
            });
        }
        Ok(())
    }

    /// Appends the wire form — u16 LE length, then the entries — if the map is not empty.
    pub(crate) fn encode_into(&self, out: &mut BytesMut) {
        if !self.raw.is_empty() {
            out.put_u16_le(self.raw.len() as u16);
            out.put_slice(&self.raw);
        }
    }

    /// Validates a received block of entries (without its u16 length) and wraps it: no copy,
    /// no allocation. Every length is checked against what remains before it is used.
    pub fn from_wire(raw: Bytes) -> Result<Self, MetadataError> {
        let malformed = MetadataError::Malformed;
        if raw.is_empty() {
            return Err(malformed("an empty block (HAS_METADATA without entries)"));
        }
        let mut rest: &[u8] = &raw;
        let mut len = 0;
        while let Some((&klen, tail)) = rest.split_first() {
            let klen = klen as usize;
            let key = tail
                .get(..klen)
                .ok_or(malformed("a key runs past the block"))?;
            check_key(key).map_err(|_| malformed("a key is empty or not printable ASCII"))?;
            let tail = &tail[klen..];
            let (vlen, tail) = tail
                .split_first_chunk::<2>()
                .ok_or(malformed("a value length runs past the block"))?;
            let vlen = u16::from_le_bytes(*vlen) as usize;
            if tail.len() < vlen {
                return Err(malformed("a value runs past the block"));
            }
            // Quadratic in the entries of one block, which are at most 255: at most about
            // 8 MB of key bytes compared for a 64 KiB block of the longest keys.
            let earlier = &raw[..raw.len() - rest.len()];
            if (MetadataIter { rest: earlier }).any(|(k, _)| k.as_bytes() == key) {
                return Err(malformed("a key appears twice"));
            }
            rest = &tail[vlen..];
            len += 1;
            if len > MAX_METADATA_BLOCK_ENTRIES {
                return Err(malformed("more than 255 entries"));
            }
        }
        Ok(Self { raw, len })
    }
}

/// The entries of a [`Metadata`]: `(key, value)`.
#[derive(Debug, Clone)]
pub struct MetadataIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MetadataIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // `raw` was validated (built by `insert` or checked by `from_wire`); a short read
        // ends the iteration rather than panicking.
        let (&klen, tail) = self.rest.split_first()?;
        let key = tail.get(..klen as usize)?;
        let (vlen, tail) = tail[klen as usize..].split_first_chunk::<2>()?;
        let vlen = u16::from_le_bytes(*vlen) as usize;
        let value = tail.get(..vlen)?;
        self.rest = &tail[vlen..];
        Some((std::str::from_utf8(key).unwrap_or_default(), value))
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = MetadataIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The types of a method, as text, and their 64-bit fingerprint (FNV-1a of the text).
///
/// Generated code builds one per method from `std::any::type_name`-like text
/// (`"fn(kv::GetRequest) -> kv::GetResponse"`); a client sends the fingerprint with each call
/// (`CallOptions::with_signature`), a server registers its own (`RpcServer::set_signature`),
/// and a call whose fingerprint differs fails with `RpcError::TypeMismatch` naming both texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The types, for people (`"fn(kv::GetRequest) -> kv::GetResponse"`).
    pub text: &'static str,
    /// FNV-1a (64-bit) of `text`: what travels on the wire.
    pub fingerprint: u64,
}

impl Signature {
    /// The signature of `text`, its fingerprint computed at compile time when `text` is a
    /// constant.
    pub const fn new(text: &'static str) -> Self {
        Self {
            text,
            fingerprint: fingerprint(text.as_bytes()),
        }
    }
}

/// FNV-1a, 64-bit.
pub const fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove_and_wire_roundtrip() {
        let mut md = Metadata::new();
        assert!(md.is_empty());
        md.insert("a", "1")
            .unwrap()
            .insert("bb", [0xff, 0])
            .unwrap();
        md.insert("a", "22").unwrap();
        assert_eq!(md.len(), 2);
        assert_eq!(md.get("a"), Some(&b"22"[..]));
        assert_eq!(md.get_str("bb"), None);
        assert_eq!(md.get("bb"), Some(&[0xff, 0][..]));
        let back = Metadata::from_wire(md.raw.clone()).unwrap();
        assert_eq!(back, md);
        assert!(md.remove("a"));
        assert!(!md.remove("a"));
        assert_eq!(md.iter().collect::<Vec<_>>(), vec![("bb", &[0xff, 0][..])]);
        assert!(md.remove("bb"));
        assert_eq!(md, Metadata::new());
    }

    #[test]
    fn bad_keys_and_values_are_refused() {
        let mut md = Metadata::new();
        assert_eq!(md.insert("", "x").unwrap_err(), MetadataError::EmptyKey);
        assert!(matches!(
            md.insert("a b", "x"),
            Err(MetadataError::InvalidKey { .. })
        ));
        assert!(matches!(
            md.insert("é", "x"),
            Err(MetadataError::InvalidKey { .. })
        ));
        assert!(matches!(
            md.insert(&"k".repeat(256), "x"),
            Err(MetadataError::KeyTooLong { len: 256 })
        ));
        assert!(matches!(
            md.insert("k", vec![0; 65536]),
            Err(MetadataError::ValueTooLong { len: 65536, .. })
        ));
        md.insert("k", vec![0; 65000]).unwrap();
        assert!(matches!(
            md.insert("l", vec![0; 1000]),
            Err(MetadataError::BlockTooLarge { .. })
        ));
        assert_eq!(md.len(), 1, "a refused insert changes nothing");
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let cases: &[&[u8]] = &[
            b"",                             // empty block
            &[3, b'a', b'b'],                // key past the end
            &[0, 0, 0],                      // empty key
            &[1, b' ', 0, 0],                // space in the key
            &[1, b'a', 0],                   // value length past the end
            &[1, b'a', 5, 0, 1],             // value past the end
            &[1, b'a', 0, 0, 1, b'a', 0, 0], // duplicate key
        ];
        for c in cases {
            assert!(
                matches!(
                    Metadata::from_wire(Bytes::copy_from_slice(c)),
                    Err(MetadataError::Malformed(_))
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn at_most_255_entries() {
        let mut md = Metadata::new();
        for i in 0..255 {
            md.insert(&format!("{i}"), "").unwrap();
        }
        assert_eq!(
            md.insert("more", ""),
            Err(MetadataError::TooManyEntries {
                count: 256,
                max: 255
            })
        );
        md.insert("0", "replaced").unwrap();
        let mut raw = md.raw.to_vec();
        assert!(Metadata::from_wire(Bytes::from(raw.clone())).is_ok());
        raw.extend_from_slice(&[1, b'x', 0, 0]);
        assert_eq!(
            Metadata::from_wire(Bytes::from(raw)),
            Err(MetadataError::Malformed("more than 255 entries"))
        );
    }

    #[test]
    fn limits() {
        let mut md = Metadata::new();
        md.insert("a", "12345").unwrap().insert("b", "").unwrap();
        assert_eq!(md.encoded_len(), 9 + 4);
        assert!(md.check_limits(13, 2).is_ok());
        assert_eq!(
            md.check_limits(12, 2),
            Err(MetadataError::TooManyBytes { size: 13, max: 12 })
        );
        assert_eq!(
            md.check_limits(13, 1),
            Err(MetadataError::TooManyEntries { count: 2, max: 1 })
        );
    }

    #[test]
    fn signature_fingerprint_is_fnv1a() {
        const S: Signature = Signature::new("a");
        assert_eq!(S.fingerprint, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            Signature::new("fn(u16) -> u16").fingerprint,
            Signature::new("fn(u32) -> u16").fingerprint
        );
    }
}
