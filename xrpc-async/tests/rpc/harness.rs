//! The test runtime itself: timers fire at their instant and in order, time moves only when
//! nothing can run, aborted tasks are dropped, a stall is reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xrpc_async::testing::TestRuntime;
use xrpc_async::{Runtime, Task, Timer};

use crate::{Alive, MS, US};

/// Timers complete when virtual time reaches them, in the order of their instants; `advance`
/// stops at each on the way, so each task sees the clock at its own deadline.
#[test]
fn timers_fire_at_their_instants_in_order() {
    let rt = TestRuntime::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for ms in [30u64, 10, 20, 10] {
        let (r, seen) = (rt.clone(), seen.clone());
        rt.spawn(async move {
            r.sleep(Duration::from_millis(ms)).await;
            seen.lock().unwrap().push((ms, r.elapsed()));
        });
    }
    rt.advance(10 * MS - US);
    assert!(seen.lock().unwrap().is_empty());
    rt.advance(100 * MS);
    assert_eq!(
        *seen.lock().unwrap(),
        [(10, 10 * MS), (10, 10 * MS), (20, 20 * MS), (30, 30 * MS)]
    );
    assert_eq!(rt.elapsed(), 110 * MS - US);
    assert_eq!(rt.live_tasks(), 0);
}

/// A reset timer fires at its new instant, earlier or later, and an armed timer moved to a
/// past instant wakes its task at once.
#[test]
fn a_reset_timer_fires_at_its_new_instant() {
    let rt = TestRuntime::new();
    let mut timer = rt.timer(rt.now() + 50 * MS);
    let fired = rt.block_on(async {
        let mut polled_once = false;
        std::future::poll_fn(|cx| {
            let ready = std::pin::Pin::new(&mut timer).poll(cx).is_ready();
            if !polled_once {
                polled_once = true;
                timer.reset(rt.now() + 20 * MS);
            }
            if ready {
                std::task::Poll::Ready(rt.elapsed())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    });
    assert_eq!(fired, 20 * MS);
    timer.reset(rt.now() + 30 * MS);
    rt.block_on(&mut timer);
    assert_eq!(rt.elapsed(), 50 * MS);
    // Armed, then moved to the past: its task is woken without the clock moving.
    let woke = Arc::new(AtomicUsize::new(0));
    let w = woke.clone();
    let r = rt.clone();
    let timer = Arc::new(Mutex::new(rt.timer(rt.now() + 10 * MS)));
    let t = timer.clone();
    rt.spawn(async move {
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *t.lock().unwrap()).poll(cx)).await;
        w.store(r.elapsed().as_millis() as usize, Ordering::SeqCst);
    });
    rt.run_until_stalled();
    timer.lock().unwrap().reset(rt.now());
    rt.run_until_stalled();
    assert_eq!(woke.load(Ordering::SeqCst), 50);
    assert_eq!(rt.elapsed(), 50 * MS);
}

/// `block_on` moves the clock only when its future and every task wait.
#[test]
fn time_moves_only_when_nothing_can_run() {
    let rt = TestRuntime::new();
    let spins = Arc::new(AtomicUsize::new(0));
    let s = spins.clone();
    let r = rt.clone();
    // A task that yields 1000 times before it sleeps: the clock waits for it.
    rt.spawn(async move {
        for _ in 0..1000 {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    return std::task::Poll::Ready(());
                }
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await;
            s.fetch_add(1, Ordering::SeqCst);
        }
        r.sleep(5 * MS).await;
    });
    let spun = rt.block_on(async {
        rt.sleep(US).await;
        spins.load(Ordering::SeqCst)
    });
    assert_eq!(spun, 1000);
    assert_eq!(rt.elapsed(), US);
}

/// An aborted task's future is dropped (at the runtime's next run), and a finished task
/// leaves the executor.
#[test]
fn an_aborted_task_is_dropped() {
    let rt = TestRuntime::new();
    let alive = Arc::new(AtomicUsize::new(0));
    let guard = Alive::new(&alive);
    let task = rt.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    rt.run_until_stalled();
    assert_eq!((alive.load(Ordering::SeqCst), rt.live_tasks()), (1, 1));
    task.abort();
    assert_eq!(
        alive.load(Ordering::SeqCst),
        1,
        "dropped later, not in abort"
    );
    rt.run_until_stalled();
    assert_eq!((alive.load(Ordering::SeqCst), rt.live_tasks()), (0, 0));
    // Aborted before it ever ran.
    let guard = Alive::new(&alive);
    let task = rt.spawn(async move {
        let _guard = guard;
    });
    task.abort();
    rt.run_until_stalled();
    assert_eq!((alive.load(Ordering::SeqCst), rt.live_tasks()), (0, 0));
}

/// `advance_to_next_deadline` steps from deadline to deadline, and says when there is none.
#[test]
fn stepping_to_the_next_deadline() {
    let rt = TestRuntime::new();
    let start = rt.now();
    let r = rt.clone();
    rt.spawn(async move {
        r.sleep(7 * MS).await;
        r.sleep(Duration::from_secs(3)).await;
    });
    assert_eq!(rt.advance_to_next_deadline(), Some(start + 7 * MS));
    assert_eq!(
        rt.advance_to_next_deadline(),
        Some(start + 7 * MS + Duration::from_secs(3))
    );
    assert_eq!(rt.advance_to_next_deadline(), None);
    assert_eq!(rt.live_tasks(), 0);
}

/// A future that can never complete is reported, not waited on forever.
#[test]
#[should_panic(expected = "stalled")]
fn a_stall_is_reported() {
    let rt = TestRuntime::new();
    rt.block_on(std::future::pending::<()>());
}

/// `TestRuntime::default()` is the runtime being driven on this thread.
#[test]
fn default_is_the_runtime_being_driven() {
    let rt = TestRuntime::new();
    rt.advance(3 * MS);
    let seen = rt.block_on(async { TestRuntime::default().elapsed() });
    assert_eq!(seen, 3 * MS);
    assert!(TestRuntime::current().is_none());
}
