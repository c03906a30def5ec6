//! Process-shared futex wait/wake on a `u32` (never `FUTEX_PRIVATE_FLAG`: the
//! word lives in memory shared between processes).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns,
/// `EAGAIN` (value changed), `EINTR` and `ETIMEDOUT` all just return.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    // An unrepresentable timeout becomes one second, never "forever".
    let ts = timeout.map(|d| {
        futex::Timespec::try_from(d).unwrap_or(futex::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        })
    });
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes every sleeper on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}
