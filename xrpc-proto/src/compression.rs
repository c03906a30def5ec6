//! Per-message payload compression with bounded decompression.
//!
//! A compressed payload on the wire is a 4-byte little-endian *decompressed* length followed by
//! the compressed body (an LZ4 block, or a Zstd frame). The receiver checks that length against
//! its maximum before it allocates, and checks that the body expands to exactly that length, so a
//! 1 KiB frame that claims to expand to 4 GiB is an error, not an out-of-memory abort.
//!
//! Zstd is the `zstd` crate, a C library, built with the feature `zstd` (on by default). Without
//! it, compressing or decompressing with [`CompressionType::Zstd`] fails with
//! [`CompressionError::Unsupported`]; the wire id stays the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Compression algorithm of a message payload (wire id in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum CompressionType {
    /// Uncompressed (0).
    #[default]
    None = 0,
    /// LZ4 block format via `lz4_flex` (1).
    Lz4 = 1,
    /// Zstandard frame format (2); feature `zstd`.
    Zstd = 2,
}

impl CompressionType {
    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Parses a wire id.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Self::None),
            1 => Some(Self::Lz4),
            2 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// When and how a sender compresses payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// The algorithm; [`CompressionType::None`] disables compression.
    pub algorithm: CompressionType,
    /// Payloads shorter than this many bytes are sent uncompressed.
    pub threshold: usize,
    /// Zstd compression level (1–22; 3 is zstd's default).
    pub zstd_level: i32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self::none()
    }
}

impl CompressionConfig {
    /// No compression.
    pub const fn none() -> Self {
        Self {
            algorithm: CompressionType::None,
            threshold: 1024,
            zstd_level: 3,
        }
    }

    /// LZ4 for payloads of at least 1 KiB.
    pub const fn lz4() -> Self {
        Self {
            algorithm: CompressionType::Lz4,
            threshold: 1024,
            zstd_level: 3,
        }
    }

    /// Zstd at `level` for payloads of at least 1 KiB.
    pub const fn zstd(level: i32) -> Self {
        Self {
            algorithm: CompressionType::Zstd,
            threshold: 1024,
            zstd_level: level,
        }
    }

    /// The same configuration with another size threshold.
    pub const fn with_threshold(mut self, threshold: usize) -> Self {
        self.threshold = threshold;
        self
    }
}

/// A compression or decompression failure.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompressionError {
    /// The compressed payload is shorter than its 4-byte length prefix.
    #[error("compressed payload of {0} bytes has no length prefix")]
    MissingPrefix(usize),
    /// The declared decompressed size exceeds the receiver's maximum.
    #[error("decompressed size {len} exceeds max {max}")]
    TooLarge {
        /// The declared size.
        len: usize,
        /// The receiver's maximum.
        max: usize,
    },
    /// The body did not expand to the declared size.
    #[error("decompressed {got} bytes, header declared {declared}")]
    LengthMismatch {
        /// The declared size.
        declared: usize,
        /// The size actually produced.
        got: usize,
    },
    /// The compressed body is corrupt.
    #[error("{algorithm:?} decompression failed: {reason}")]
    Corrupt {
        /// The algorithm.
        algorithm: CompressionType,
        /// The library's message.
        reason: String,
    },
    /// The algorithm is not built into this program: Zstd without the feature `zstd`.
    #[error("{0:?} compression is not built in (feature `zstd` of xrpc-proto is off)")]
    Unsupported(CompressionType),
    /// The compressor failed (zstd only; LZ4 cannot fail).
    #[error("{algorithm:?} compression failed: {reason}")]
    Compress {
        /// The algorithm.
        algorithm: CompressionType,
        /// The library's message.
        reason: String,
    },
}

/// Reusable compression state: Zstd contexts and a scratch buffer, created on first use.
///
/// Keeping one per connection avoids re-creating Zstd contexts for every message.
#[derive(Default)]
pub struct Compressor {
    zstd: zstd_codec::Contexts,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

/// Zstd through the `zstd` crate, its contexts created on first use and kept.
#[cfg(feature = "zstd")]
mod zstd_codec {
    use super::{CompressionError, CompressionType};

    const ZSTD: CompressionType = CompressionType::Zstd;

    /// A compression context (with its level) and a decompression context.
    #[derive(Default)]
    pub(super) struct Contexts {
        compress: Option<(i32, zstd::bulk::Compressor<'static>)>,
        decompress: Option<zstd::bulk::Decompressor<'static>>,
    }

    /// The largest compressed size of `len` bytes.
    pub(super) fn compress_bound(len: usize) -> Result<usize, CompressionError> {
        Ok(zstd::zstd_safe::compress_bound(len))
    }

    /// Compresses `src` at `level` into `body`; the compressed length.
    pub(super) fn compress(
        cx: &mut Contexts,
        level: i32,
        src: &[u8],
        body: &mut [u8],
    ) -> Result<usize, CompressionError> {
        let failed = |e: std::io::Error| CompressionError::Compress {
            algorithm: ZSTD,
            reason: e.to_string(),
        };
        let ctx = match &mut cx.compress {
            Some((l, ctx)) if *l == level => ctx,
            slot => {
                let ctx = zstd::bulk::Compressor::new(level).map_err(failed)?;
                &mut slot.insert((level, ctx)).1
            }
        };
        ctx.compress_to_buffer(src, body).map_err(failed)
    }

    /// Decompresses `body` into at most `declared` bytes.
    pub(super) fn decompress(
        cx: &mut Contexts,
        body: &[u8],
        declared: usize,
    ) -> Result<Vec<u8>, CompressionError> {
        let corrupt = |e: std::io::Error| CompressionError::Corrupt {
            algorithm: ZSTD,
            reason: e.to_string(),
        };
        let ctx = match &mut cx.decompress {
            Some(ctx) => ctx,
            slot => slot.insert(zstd::bulk::Decompressor::new().map_err(corrupt)?),
        };
        ctx.decompress(body, declared).map_err(corrupt)
    }
}

/// Zstd not built in (feature `zstd` off): every use is [`CompressionError::Unsupported`].
#[cfg(not(feature = "zstd"))]
mod zstd_codec {
    use super::{CompressionError, CompressionType};

    const UNSUPPORTED: CompressionError = CompressionError::Unsupported(CompressionType::Zstd);

    /// No contexts.
    #[derive(Default)]
    pub(super) struct Contexts;

    /// Unsupported.
    pub(super) fn compress_bound(_len: usize) -> Result<usize, CompressionError> {
        Err(UNSUPPORTED)
    }

    /// Unsupported.
    pub(super) fn compress(
        _cx: &mut Contexts,
        _level: i32,
        _src: &[u8],
        _body: &mut [u8],
    ) -> Result<usize, CompressionError> {
        Err(UNSUPPORTED)
    }

    /// Unsupported.
    pub(super) fn decompress(
        _cx: &mut Contexts,
        _body: &[u8],
        _declared: usize,
    ) -> Result<Vec<u8>, CompressionError> {
        Err(UNSUPPORTED)
    }
}

impl Compressor {
    /// A compressor with no contexts allocated yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compresses `src` into the wire form `[u32 LE len][compressed body]`, held in an internal
    /// buffer until the next call. Returns `None` when compression would not make the payload
    /// smaller (the caller then sends `src` uncompressed) or is disabled.
    pub fn compress(
        &mut self,
        algorithm: CompressionType,
        zstd_level: i32,
        src: &[u8],
    ) -> Result<Option<&[u8]>, CompressionError> {
        if src.len() > u32::MAX as usize {
            return Ok(None);
        }
        let bound = match algorithm {
            CompressionType::None => return Ok(None),
            CompressionType::Lz4 => lz4_flex::block::get_maximum_output_size(src.len()),
            CompressionType::Zstd => zstd_codec::compress_bound(src.len())?,
        };
        if self.scratch.len() < 4 + bound {
            self.scratch.resize(4 + bound, 0);
        }
        let body = &mut self.scratch[4..];
        let n = match algorithm {
            CompressionType::None => 0,
            CompressionType::Lz4 => lz4_flex::block::compress_into(src, body).map_err(|e| {
                CompressionError::Compress {
                    algorithm,
                    reason: e.to_string(),
                }
            })?,
            CompressionType::Zstd => zstd_codec::compress(&mut self.zstd, zstd_level, src, body)?,
        };
        if n + 4 >= src.len() {
            return Ok(None);
        }
        self.scratch[..4].copy_from_slice(&(src.len() as u32).to_le_bytes());
        Ok(Some(&self.scratch[..4 + n]))
    }

    /// Decompresses a `[u32 LE len][body]` payload, refusing any declared length above `max`
    /// before allocating.
    pub fn decompress(
        &mut self,
        algorithm: CompressionType,
        payload: &[u8],
        max: usize,
    ) -> Result<Bytes, CompressionError> {
        if algorithm == CompressionType::None {
            return Ok(Bytes::copy_from_slice(payload));
        }
        let Some((prefix, body)) = payload.split_first_chunk::<4>() else {
            return Err(CompressionError::MissingPrefix(payload.len()));
        };
        let declared = u32::from_le_bytes(*prefix) as usize;
        if declared > max {
            return Err(CompressionError::TooLarge { len: declared, max });
        }
        let out = match algorithm {
            // Handled above; an empty result fails the length check below if ever reached.
            CompressionType::None => Vec::new(),
            CompressionType::Lz4 => lz4_flex::block::decompress(body, declared).map_err(|e| {
                CompressionError::Corrupt {
                    algorithm,
                    reason: e.to_string(),
                }
            })?,
            CompressionType::Zstd => zstd_codec::decompress(&mut self.zstd, body, declared)?,
        };
        if out.len() != declared {
            return Err(CompressionError::LengthMismatch {
                declared,
                got: out.len(),
            });
        }
        Ok(Bytes::from(out))
    }
}

/// Bytes of decompressed payloads one connection holds at most, shared by every payload it
/// decompressed: each counts until the last handle to it is dropped (an application that keeps
/// payloads keeps them charged). A message that would go past the limit is refused before it
/// is inflated.
///
/// A connection's budget may also charge a server-wide one ([`with_total`](Self::with_total)),
/// so that many connections cannot add up to more than one bound.
#[derive(Debug, Clone)]
pub struct DecompressionBudget {
    held: Arc<AtomicUsize>,
    limit: usize,
    /// The server-wide budget charged too, if any.
    total: Option<(Arc<AtomicUsize>, usize)>,
}

impl DecompressionBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            held: Arc::new(AtomicUsize::new(0)),
            limit,
            total: None,
        }
    }

    /// The same budget, charging every payload to `total` as well (a server's, shared by its
    /// connections).
    pub fn with_total(mut self, total: &DecompressionBudget) -> Self {
        self.total = Some((total.held.clone(), total.limit));
        self
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `n` more bytes fit (in the server-wide budget too, if any).
    pub fn fits(&self, n: usize) -> bool {
        self.refusal(n).is_none()
    }

    /// Why `n` more bytes do not fit, if they do not.
    pub fn refusal(&self, n: usize) -> Option<String> {
        if self.held().saturating_add(n) > self.limit {
            return Some(format!(
                "decompressing {n} bytes would exceed the connection's budget of {} ({} held)",
                self.limit,
                self.held()
            ));
        }
        let (total, limit) = self.total.as_ref()?;
        let held = total.load(Ordering::Acquire);
        (held.saturating_add(n) > *limit).then(|| {
            format!(
                "decompressing {n} bytes would exceed the server's budget of {limit} ({held} held)"
            )
        })
    }

    /// Charges `data` to the budget (and the server-wide one) until every handle to it is
    /// dropped.
    pub fn hold(&self, data: Bytes) -> Bytes {
        self.held.fetch_add(data.len(), Ordering::AcqRel);
        let total = self.total.as_ref().map(|(t, _)| {
            t.fetch_add(data.len(), Ordering::AcqRel);
            t.clone()
        });
        Bytes::from_owner(Held {
            data,
            held: self.held.clone(),
            total,
        })
    }
}

/// A decompressed payload charged to a [`DecompressionBudget`].
struct Held {
    data: Bytes,
    held: Arc<AtomicUsize>,
    total: Option<Arc<AtomicUsize>>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.data.len(), Ordering::AcqRel);
        if let Some(t) = &self.total {
            t.fetch_sub(self.data.len(), Ordering::AcqRel);
        }
    }
}

/// The decompressed length a compressed payload declares (its first four bytes), if it has one.
pub fn declared_len(payload: &[u8]) -> Option<usize> {
    payload
        .split_first_chunk::<4>()
        .map(|(p, _)| u32::from_le_bytes(*p) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(alg: CompressionType) {
        let mut c = Compressor::new();
        let src: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let out = c.compress(alg, 3, &src).unwrap().unwrap().to_vec();
        assert!(out.len() < src.len());
        let back = c.decompress(alg, &out, src.len()).unwrap();
        assert_eq!(&back[..], &src[..]);
        // One byte short of the declared size is refused before decompressing.
        assert!(matches!(
            c.decompress(alg, &out, src.len() - 1),
            Err(CompressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn lz4_roundtrip() {
        roundtrip(CompressionType::Lz4);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_roundtrip() {
        roundtrip(CompressionType::Zstd);
    }

    #[cfg(not(feature = "zstd"))]
    #[test]
    fn zstd_without_the_feature_is_unsupported() {
        let mut c = Compressor::new();
        let unsupported = Err(CompressionError::Unsupported(CompressionType::Zstd));
        assert_eq!(
            c.compress(CompressionType::Zstd, 3, &[0; 4096])
                .map(|o| o.map(<[u8]>::to_vec)),
            unsupported
        );
        let mut payload = 100u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0; 50]);
        assert_eq!(
            c.decompress(CompressionType::Zstd, &payload, 1 << 20),
            Err(CompressionError::Unsupported(CompressionType::Zstd))
        );
        assert_eq!(CompressionType::from_id(2), Some(CompressionType::Zstd));
    }

    #[test]
    fn incompressible_is_sent_raw() {
        let mut c = Compressor::new();
        assert!(
            c.compress(CompressionType::Lz4, 3, b"abc")
                .unwrap()
                .is_none()
        );
        assert!(
            c.compress(CompressionType::None, 3, &[0; 4096])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_server_wide_budget_bounds_connections_together() {
        let total = DecompressionBudget::new(100);
        let a = DecompressionBudget::new(80).with_total(&total);
        let b = DecompressionBudget::new(80).with_total(&total);
        let held = a.hold(Bytes::from(vec![0u8; 70]));
        assert!(b.fits(30));
        assert!(
            b.refusal(31)
                .unwrap()
                .contains("server's budget of 100 (70 held)")
        );
        assert!(a.refusal(11).unwrap().contains("connection's budget of 80"));
        drop(held);
        assert_eq!((a.held(), total.held()), (0, 0));
        assert!(b.fits(80));
    }

    #[test]
    fn bomb_is_refused() {
        let mut c = Compressor::new();
        let mut payload = (u32::MAX).to_le_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 1024]);
        for alg in [CompressionType::Lz4, CompressionType::Zstd] {
            assert!(matches!(
                c.decompress(alg, &payload, 16 << 20),
                Err(CompressionError::TooLarge { .. })
            ));
        }
        // A small declared size with garbage is a corrupt-payload error, not a panic.
        let mut payload = 100u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0xff; 50]);
        for alg in [CompressionType::Lz4, CompressionType::Zstd] {
            assert!(c.decompress(alg, &payload, 16 << 20).is_err());
        }
    }
}
