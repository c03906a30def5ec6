//! What the bodies need of an executor beyond [`Runtime`], built on it alone: a task whose
//! result can be awaited ([`spawn`], [`JoinHandle`]), the runtime's clock ([`now`]), [`sleep`]
//! and [`timeout`]. Time is the runtime's, never `Instant::now()`: the suite runs on a virtual
//! clock too.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{Either, select};
use xrpc_async::{Runtime, Task};

/// A task spawned with [`spawn`]: awaiting it gives the task's output (a panic in the task is
/// resumed in the awaiting one); dropping it detaches the task, as the async layer does.
pub struct JoinHandle<T, R: Runtime> {
    task: R::Task,
    done: Arc<Mutex<Done<T>>>,
}

struct Done<T> {
    output: Option<std::thread::Result<T>>,
    waiter: Option<Waker>,
}

/// Runs `future` as a task of `R`.
pub fn spawn<R, F>(future: F) -> JoinHandle<F::Output, R>
where
    R: Runtime,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let done = Arc::new(Mutex::new(Done {
        output: None,
        waiter: None,
    }));
    let d = done.clone();
    let task = R::default().spawn(async move {
        let output = AssertUnwindSafe(future).catch_unwind().await;
        let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
        d.output = Some(output);
        if let Some(w) = d.waiter.take() {
            w.wake();
        }
    });
    JoinHandle { task, done }
}

impl<T, R: Runtime> JoinHandle<T, R> {
    /// Stops the task at its next await point; awaiting the handle afterwards never completes.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl<T, R: Runtime> Future for JoinHandle<T, R> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut d = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        match d.output.take() {
            Some(Ok(v)) => Poll::Ready(v),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => {
                d.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The time on `R`'s clock.
pub fn now<R: Runtime>() -> Instant {
    R::default().now()
}

/// Sleeps for `d` on a timer of `R`.
pub async fn sleep<R: Runtime>(d: Duration) {
    let rt = R::default();
    rt.timer(rt.now() + d).await;
}

/// `future` did not complete in time.
#[derive(Debug)]
pub struct Elapsed;

/// Runs `future` for at most `d`; when the time is up it is dropped (cancelled).
pub async fn timeout<R: Runtime, F: Future>(d: Duration, future: F) -> Result<F::Output, Elapsed> {
    let rt = R::default();
    let timer = rt.timer(rt.now() + d);
    match select(pin!(future), timer).await {
        Either::Left((v, _)) => Ok(v),
        Either::Right(((), _)) => Err(Elapsed),
    }
}
