//! One connection's shared-memory segment: a sealed `memfd` holding a small
//! segment header and two rings (client→server, server→client), mapped
//! `MAP_SHARED` in both processes.
//!
//! ```text
//! 0      segment header (128 B): magic, version, ring capacity, max frame, total size
//! 128    ring 0 header (384 B) | ring 0 data (capacity)
//! ...    ring 1 header (384 B) | ring 1 data (capacity)
//! ```
//!
//! The creator seals the memfd against shrinking and growing, so the peer can
//! never truncate it under us (`SIGBUS`). The side that receives a segment
//! treats it as hostile: it reads the header once through `pread`, recomputes
//! the layout from the capacity alone, and checks the file size and seals
//! before mapping.

use std::ptr::NonNull;
use std::time::Duration;

use rustix::fd::OwnedFd;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::config::MIN_SEGMENT_CAPACITY;
use crate::error::{Result, ShmError};
use crate::layout::{RING_HEADER_SIZE, RingHeader, check_geometry};
use crate::storage::RingStorage;
use crate::sync::{Arc, AtomicU32};
use crate::wait::Sleeper;

const MAGIC: u64 = u64::from_le_bytes(*b"XRPCSHM\0");
const VERSION: u32 = 2;
const SEGMENT_HEADER_SIZE: usize = 128;

/// Index of the client→server ring.
pub(crate) const RING_TO_SERVER: usize = 0;
/// Index of the server→client ring.
pub(crate) const RING_TO_CLIENT: usize = 1;

/// The validated shape of a segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) capacity: usize,
    pub(crate) max_frame: usize,
}

impl Geometry {
    fn ring_offset(&self, ring: usize) -> usize {
        SEGMENT_HEADER_SIZE + ring * (RING_HEADER_SIZE + self.capacity)
    }

    pub(crate) fn total_size(&self) -> usize {
        self.ring_offset(2)
    }

    fn check(&self) -> Result<(), String> {
        if self.capacity < MIN_SEGMENT_CAPACITY {
            return Err(format!(
                "ring capacity {} below the minimum {MIN_SEGMENT_CAPACITY}",
                self.capacity
            ));
        }
        check_geometry(self.capacity, self.max_frame)
    }

    fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut h = [0u8; SEGMENT_HEADER_SIZE];
        h[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(SEGMENT_HEADER_SIZE as u32).to_le_bytes());
        h[16..24].copy_from_slice(&(self.capacity as u64).to_le_bytes());
        h[24..32].copy_from_slice(&(self.max_frame as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(self.total_size() as u64).to_le_bytes());
        h
    }

    /// Parses and validates a segment header copied out of the segment.
    fn decode(h: &[u8; SEGMENT_HEADER_SIZE]) -> Result<Self> {
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&h[o..o + 4]);
            u32::from_le_bytes(b)
        };
        let bad = |m: String| ShmError::Handshake(format!("invalid segment: {m}"));
        if u64_at(0) != MAGIC {
            return Err(bad(format!("magic {:#x}, expected {MAGIC:#x}", u64_at(0))));
        }
        if u32_at(8) != VERSION || u32_at(12) as usize != SEGMENT_HEADER_SIZE {
            return Err(bad(format!(
                "version {} / header size {}, expected {VERSION} / {SEGMENT_HEADER_SIZE}",
                u32_at(8),
                u32_at(12)
            )));
        }
        let (capacity, max_frame) = (u64_at(16), u64_at(24));
        let geo = Geometry {
            capacity: usize::try_from(capacity).map_err(|_| bad(format!("capacity {capacity}")))?,
            max_frame: usize::try_from(max_frame)
                .map_err(|_| bad(format!("max frame {max_frame}")))?,
        };
        geo.check().map_err(bad)?;
        if u64_at(32) != geo.total_size() as u64 {
            return Err(bad(format!(
                "total size {}, layout needs {}",
                u64_at(32),
                geo.total_size()
            )));
        }
        Ok(geo)
    }
}

/// A `MAP_SHARED` mapping, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; all access to it goes through the
// ring (atomics and validated raw-pointer accesses).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: &OwnedFd, len: usize) -> Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel chooses, so no
        // existing memory is affected; the fd is a sealed memfd of at least
        // `len` bytes (checked by callers), so no access can fault.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| ShmError::Io(std::io::Error::other("mmap returned null")))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `Mapping::map` that
        // nothing references any more (every ring storage holds an `Arc` to
        // this mapping).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The file mode of a segment's memfd: read-write for its user only.
pub(crate) const SEGMENT_MODE: rustix::fs::Mode = rustix::fs::Mode::from_raw_mode(0o600);

/// A mapped segment.
pub(crate) struct Segment {
    map: Arc<Mapping>,
    geo: Geometry,
}

impl Segment {
    /// Creates, sizes, seals and maps a fresh segment; returns it with the
    /// memfd to pass to the peer.
    pub(crate) fn create(geo: Geometry) -> Result<(Segment, OwnedFd)> {
        geo.check().map_err(ShmError::InvalidConfig)?;
        let fd =
            rustix::fs::memfd_create("xrpc-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        // A memfd is created with mode 0777: owner-only, so that nobody but its user (and
        // root) could open it through `/proc/<pid>/fd` even where that path is reachable.
        rustix::fs::fchmod(&fd, SEGMENT_MODE)?;
        let total = geo.total_size();
        rustix::fs::ftruncate(&fd, total as u64)?;
        let header = geo.encode();
        let written = rustix::io::pwrite(&fd, &header, 0)?;
        if written != header.len() {
            return Err(ShmError::Io(std::io::Error::other(
                "short write of segment header",
            )));
        }
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let map = Mapping::map(&fd, total)?;
        Ok((
            Segment {
                map: Arc::new(map),
                geo,
            },
            fd,
        ))
    }

    /// Validates and maps a segment received from the peer.
    pub(crate) fn open(fd: OwnedFd) -> Result<Segment> {
        let bad = |m: String| ShmError::Handshake(format!("invalid segment: {m}"));
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|e| bad(format!("not a sealable memfd ({e})")))?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(bad(format!(
                "not sealed against shrinking (seals {seals:?})"
            )));
        }
        let mut header = [0u8; SEGMENT_HEADER_SIZE];
        let n = rustix::io::pread(&fd, &mut header, 0)?;
        if n != SEGMENT_HEADER_SIZE {
            return Err(bad(format!("only {n} header bytes")));
        }
        let geo = Geometry::decode(&header)?;
        let size = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(size).map_or(true, |s| s < geo.total_size() as u64) {
            return Err(bad(format!(
                "file of {size} bytes, layout needs {}",
                geo.total_size()
            )));
        }
        let map = Mapping::map(&fd, geo.total_size())?;
        Ok(Segment {
            map: Arc::new(map),
            geo,
        })
    }

    /// The validated geometry.
    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Storage handle of ring `ring` (0 or 1).
    pub(crate) fn ring(&self, ring: usize) -> MappedRing {
        debug_assert!(ring < 2);
        let off = self.geo.ring_offset(ring);
        // SAFETY: `off + RING_HEADER_SIZE + capacity <= total_size ==
        // map.len` by construction of the geometry, so both pointers stay
        // inside the mapping.
        let (header, data) = unsafe {
            let base = self.map.ptr.as_ptr().add(off);
            (base.cast::<RingHeader>(), base.add(RING_HEADER_SIZE))
        };
        MappedRing {
            _map: self.map.clone(),
            header,
            data,
            capacity: self.geo.capacity,
            bell: None,
        }
    }
}

/// How this process rings the peer's sleeper on one ring: the peer's role there (the
/// consumer of the ring we produce into, the producer of the ring we consume from) and our
/// end of the socket whose other end is that sleeper's doorbell.
#[derive(Clone, Debug)]
pub(crate) struct PeerBell {
    pub(crate) who: Sleeper,
    pub(crate) sock: Arc<OwnedFd>,
    /// Counts the rings, if someone wants to know (see `RecvWaiter::peer_woken`).
    pub(crate) rung: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Rings a doorbell: sends one byte on our end of its socket, with `MSG_DONTWAIT` (so the
/// call never waits, whatever anyone did to the descriptor's file flags) and `MSG_NOSIGNAL`.
/// A full socket buffer (`EAGAIN`) means unread bytes at the peer, which already read as
/// rung; any other error (the peer is gone) leaves the futex and the peer-death detection to
/// do their part, so errors are ignored.
pub(crate) fn ring_bell(sock: &OwnedFd) {
    use rustix::net::SendFlags;
    let _ = rustix::net::send(sock, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
}

/// The storage of one ring inside a mapped segment.
#[derive(Clone)]
pub struct MappedRing {
    _map: Arc<Mapping>,
    header: *const RingHeader,
    data: *mut u8,
    capacity: usize,
    /// The peer's doorbell, rung after the futex wake (none in tests that use bare
    /// segments).
    bell: Option<PeerBell>,
}

impl MappedRing {
    /// This ring with the peer's doorbell.
    pub(crate) fn with_bell(mut self, bell: PeerBell) -> Self {
        self.bell = Some(bell);
        self
    }
}

// SAFETY: the pointers target the shared mapping kept alive by `_map`; the
// header is atomics only and the data region is accessed through the ring's
// validated raw-pointer accesses.
unsafe impl Send for MappedRing {}
// SAFETY: as above.
unsafe impl Sync for MappedRing {}

// SAFETY: `data` points to `capacity` bytes inside the mapping (see
// `Segment::ring`), 8-byte aligned because the mapping is page aligned and
// every offset is a multiple of 128; the capacity was validated as a power of
// two of at least 4096; `_map` keeps the mapping alive.
unsafe impl RingStorage for MappedRing {
    #[inline]
    fn header(&self) -> &RingHeader {
        // SAFETY: the header lies inside the live mapping, 128-byte aligned,
        // and every bit pattern is a valid `RingHeader` (atomic integers
        // only). Both processes access it only atomically.
        unsafe { &*self.header }
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    fn data(&self) -> *mut u8 {
        self.data
    }

    fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        crate::futex::wait(word, expected, timeout);
    }

    fn futex_wake(&self, word: &AtomicU32) {
        crate::futex::wake_all(word);
    }

    fn ring_doorbell(&self, who: Sleeper) {
        // Only the peer's sleeper has a doorbell to ring from here: a sleeper of this process
        // (woken by a close of its own end) sleeps on the futex, or is woken by its adapter.
        if let Some(bell) = &self.bell
            && bell.who == who
        {
            ring_bell(&bell.sock);
            if let Some(rung) = &bell.rung {
                rung.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Used by tests: the memfd of a segment with an arbitrary header.
#[cfg(test)]
pub(crate) fn raw_segment_fd(header: &[u8], size: u64, seal: bool) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "xrpc-shm-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd");
    rustix::fs::ftruncate(&fd, size).expect("ftruncate");
    rustix::io::pwrite(&fd, header, 0).expect("pwrite");
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).expect("seal");
    }
    fd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Geometry {
        Geometry {
            capacity: 4096,
            max_frame: 1024,
        }
    }

    #[test]
    fn a_segment_is_owner_only() {
        let (_seg, fd) = Segment::create(good()).unwrap();
        let mode = rustix::fs::fstat(&fd).unwrap().st_mode & 0o7777;
        assert_eq!(mode, SEGMENT_MODE.bits() as _, "memfd mode {mode:o}");
    }

    #[test]
    fn roundtrip_segment() {
        let (seg, fd) = Segment::create(good()).unwrap();
        let peer = Segment::open(fd).unwrap();
        assert_eq!(peer.geometry().capacity, 4096);
        let (mut p, _) = crate::ring::split(seg.ring(0), 1024).unwrap();
        let (_, mut c) = crate::ring::split(peer.ring(0), 1024).unwrap();
        p.try_send(b"hello").unwrap();
        assert_eq!(&*c.try_recv().unwrap().unwrap(), b"hello");
    }

    #[test]
    fn hostile_segments_are_refused() {
        let geo = good();
        let ok = geo.encode();
        let total = geo.total_size() as u64;
        let mut cases: Vec<(&str, Vec<u8>, u64, bool)> = vec![
            ("unsealed", ok.to_vec(), total, false),
            ("too small", ok.to_vec(), total - 1, true),
            ("tiny", ok[..16].to_vec(), 16, true),
        ];
        let mut patch = |name, at: usize, bytes: &[u8]| {
            let mut h = ok.to_vec();
            h[at..at + bytes.len()].copy_from_slice(bytes);
            cases.push((name, h, total, true));
        };
        patch("magic", 0, b"NOTXRPC!");
        patch("version", 8, &9u32.to_le_bytes());
        patch("capacity not pow2", 16, &5000u64.to_le_bytes());
        patch("capacity huge", 16, &(1u64 << 40).to_le_bytes());
        patch("capacity small", 16, &64u64.to_le_bytes());
        patch("max frame zero", 24, &0u64.to_le_bytes());
        patch("max frame > 4 GiB", 24, &(1u64 << 32).to_le_bytes());
        patch("total size", 32, &(total + 8).to_le_bytes());
        for (name, header, size, seal) in cases {
            let fd = raw_segment_fd(&header, size, seal);
            match Segment::open(fd) {
                Err(ShmError::Handshake(msg)) => eprintln!("{name}: {msg}"),
                other => panic!(
                    "{name}: expected a handshake error, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }
}
