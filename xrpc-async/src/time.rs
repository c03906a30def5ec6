//! Time limits and pauses on a [`Runtime`]'s timers and clock (the adapters' `timeout` and
//! `sleep`), on the runtime value given.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::runtime::{Runtime, Timer};

/// Runs `f` until `at`: `None` if the time ran out first. `timer` is reused (reset) when it
/// is there, and made and kept in it otherwise, so a caller that keeps it pays for one timer
/// per connection rather than one per operation.
pub(crate) async fn until<R: Runtime, T>(
    rt: &R,
    timer: &mut Option<R::Timer>,
    at: Instant,
    f: impl Future<Output = T>,
) -> Option<T> {
    let timer = match timer {
        Some(t) => {
            t.reset(at);
            t
        }
        None => timer.insert(rt.timer(at)),
    };
    let mut f = pin!(f);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        Pin::new(&mut *timer).poll(cx).map(|()| None)
    })
    .await
}

/// [`until`] with a fresh timer, `timeout` from now.
pub(crate) async fn within<R: Runtime, T>(
    rt: &R,
    timeout: Duration,
    f: impl Future<Output = T>,
) -> Option<T> {
    until(rt, &mut None, rt.now() + timeout, f).await
}

/// Sleeps for `d`.
pub(crate) async fn sleep<R: Runtime>(rt: &R, d: Duration) {
    rt.timer(rt.now() + d).await;
}
