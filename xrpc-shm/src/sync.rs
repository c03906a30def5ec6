//! Synchronization primitives used by the ring: `loom`'s under `cfg(loom)`,
//! `std`'s otherwise. All other modules import from here, never from
//! `std::sync::atomic` directly, so that loom sees every atomic access.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{Condvar, Mutex};

/// A spin-wait hint; a yield to the scheduler under loom.
#[cfg(loom)]
#[inline]
pub(crate) fn spin_loop() {
    loom::thread::yield_now();
}

/// Gives the CPU to another runnable thread; a loom yield under loom.
#[cfg(loom)]
#[inline]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{Condvar, Mutex};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;
