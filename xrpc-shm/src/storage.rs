//! Where a ring lives: the [`RingStorage`] trait, and the heap-backed storage
//! that loom, unit tests and the fuzzer drive. The shared-memory storage is in
//! `segment.rs`.

use std::time::Duration;

use crate::layout::RingHeader;
use crate::sync::AtomicU32;
use crate::wait::Sleeper;

/// The memory a ring runs on: a header of atomics and a data region.
///
/// # Safety
///
/// Implementers guarantee that [`RingStorage::data`] points to
/// [`RingStorage::capacity`] bytes, 8-byte aligned, valid for reads and writes
/// (from any thread) for as long as the storage value or any clone of it
/// lives, and that `capacity` is a power of two of at least
/// `layout::MIN_CAPACITY`.
pub unsafe trait RingStorage: Send + Sync {
    /// The ring header.
    fn header(&self) -> &RingHeader;
    /// Bytes in the data region.
    fn capacity(&self) -> usize;
    /// Start of the data region.
    fn data(&self) -> *mut u8;
    /// Records a write of `data[off..off + len]` (loom race detection).
    #[inline]
    fn track_write(&self, _off: usize, _len: usize) {}
    /// Records a read of `data[off..off + len]` (loom race detection).
    #[inline]
    fn track_read(&self, _off: usize, _len: usize) {}
    /// Sleeps while `word == expected`, for at most `timeout` (`None`: until
    /// woken). May return early for any reason.
    fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes every sleeper of `word`.
    fn futex_wake(&self, word: &AtomicU32);
    /// Rings the doorbell of `who` (after its futex was woken), for a side
    /// that sleeps in a reactor. Default: there is no doorbell.
    #[inline]
    fn ring_doorbell(&self, _who: Sleeper) {}
}

#[cfg(any(test, loom, feature = "test-util"))]
pub use heap::HeapStorage;

#[cfg(any(test, loom, feature = "test-util"))]
mod heap {
    use super::*;
    use crate::sync::{Arc, Condvar, Mutex};

    /// A ring storage on the heap: the ring algorithm without shared memory, for
    /// loom models, unit tests and fuzzing. Cloning shares the same ring.
    #[derive(Clone)]
    pub struct HeapStorage {
        inner: Arc<HeapInner>,
    }

    struct HeapInner {
        header: Box<RingHeader>,
        /// The data region; `UnsafeCell` because both sides write through shared
        /// references. `u64` words give the 8-byte alignment records need.
        data: Box<[std::cell::UnsafeCell<u64>]>,
        #[cfg(loom)]
        cells: Box<[loom::cell::UnsafeCell<()>]>,
        #[cfg(loom)]
        futex: (loom::sync::Mutex<()>, loom::sync::Condvar),
        /// The model of the two doorbells (consumer, producer): a doorbell is
        /// readable while bytes were sent to it and not read (a count here),
        /// rung by sending one, and drained by reading them all.
        bells: (Mutex<[u64; 2]>, Condvar),
    }

    // SAFETY: the data region is only accessed through raw pointers by the ring,
    // whose protocol (acquire/release on head/tail) orders the accesses; a hostile
    // or buggy writer can only produce garbage bytes, which the ring validates.
    unsafe impl Send for HeapInner {}
    // SAFETY: as above.
    unsafe impl Sync for HeapInner {}

    impl HeapStorage {
        /// A zeroed ring of `capacity` data bytes. `capacity` must be a power of
        /// two in `[32, 1 GiB]`.
        pub fn new(capacity: usize) -> crate::Result<Self> {
            crate::layout::check_capacity(capacity).map_err(crate::ShmError::InvalidConfig)?;
            let words = capacity / 8;
            Ok(HeapStorage {
                inner: Arc::new(HeapInner {
                    header: Box::new(RingHeader::new()),
                    data: (0..words).map(|_| std::cell::UnsafeCell::new(0)).collect(),
                    #[cfg(loom)]
                    cells: (0..words)
                        .map(|_| loom::cell::UnsafeCell::new(()))
                        .collect(),
                    #[cfg(loom)]
                    futex: (loom::sync::Mutex::new(()), loom::sync::Condvar::new()),
                    bells: (Mutex::new([0; 2]), Condvar::new()),
                }),
            })
        }

        /// Sleeps until the doorbell of `who` is readable (rung since it was
        /// last drained) — what a reactor does with the socket. Never times
        /// out: under loom, a lost wake-up is a deadlock that loom reports.
        pub fn doorbell_wait(&self, who: Sleeper) {
            let (lock, cv) = &self.inner.bells;
            let mut bells = lock.lock().unwrap_or_else(|e| e.into_inner());
            while bells[who.index()] == 0 {
                bells = cv.wait(bells).unwrap_or_else(|e| e.into_inner());
            }
        }

        /// Drains the doorbell of `who` (reads the socket): returns how
        /// often it was rung since the last drain.
        pub fn doorbell_drain(&self, who: Sleeper) -> u64 {
            let (lock, _) = &self.inner.bells;
            let mut bells = lock.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut bells[who.index()])
        }

        #[cfg(loom)]
        fn words(off: usize, len: usize) -> std::ops::Range<usize> {
            off / 8..(off + len).div_ceil(8)
        }
    }

    // SAFETY: `data` is a live boxed slice of `capacity / 8` words (so 8-byte
    // aligned) owned by the `Arc`, and `new` checked that the capacity is a power
    // of two of at least 32.
    unsafe impl RingStorage for HeapStorage {
        #[inline]
        fn header(&self) -> &RingHeader {
            &self.inner.header
        }

        #[inline]
        fn capacity(&self) -> usize {
            self.inner.data.len() * 8
        }

        #[inline]
        fn data(&self) -> *mut u8 {
            // `UnsafeCell<u64>` is `repr(transparent)`, and the slice pointer has
            // provenance over the whole region.
            std::cell::UnsafeCell::raw_get(self.inner.data.as_ptr()).cast::<u8>()
        }

        #[cfg(loom)]
        fn track_write(&self, off: usize, len: usize) {
            for w in Self::words(off, len) {
                self.inner.cells[w].with_mut(|_| ());
            }
        }

        #[cfg(loom)]
        fn track_read(&self, off: usize, len: usize) {
            for w in Self::words(off, len) {
                self.inner.cells[w].with(|_| ());
            }
        }

        #[cfg(loom)]
        fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
            use crate::sync::Ordering::SeqCst;
            // A model of FUTEX_WAIT: the value check and the enqueueing are atomic
            // with respect to wakers (both under the mutex). With no timeout, a
            // lost wake-up leaves the thread asleep forever, which loom reports
            // as a deadlock.
            let (lock, cv) = &self.inner.futex;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            if word.load(SeqCst) != expected {
                return;
            }
            if timeout.is_some() {
                // Timed waits are modelled as an early return.
                return;
            }
            drop(cv.wait(guard));
        }

        #[cfg(loom)]
        fn futex_wake(&self, _word: &AtomicU32) {
            let (lock, cv) = &self.inner.futex;
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            cv.notify_all();
        }

        #[cfg(not(loom))]
        fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
            crate::futex::wait(word, expected, timeout);
        }

        #[cfg(not(loom))]
        fn futex_wake(&self, word: &AtomicU32) {
            crate::futex::wake_all(word);
        }

        fn ring_doorbell(&self, who: Sleeper) {
            let (lock, cv) = &self.inner.bells;
            let mut bells = lock.lock().unwrap_or_else(|e| e.into_inner());
            bells[who.index()] += 1;
            cv.notify_all();
        }
    }
}
