//! The conformance suite ([`conformance`]) on `xrpc_async::testing::TestRuntime`: every task on
//! this thread, and a virtual clock that jumps to the next deadline whenever nothing can run —
//! the same bodies as on tokio, smol and threads, over the in-process transports, with no real
//! wait (a body's 3 s sleep takes no time) and the same steps on every run.

mod conformance;

use std::future::Future;

use conformance::{ArcT, Channel};
use xrpc_async::testing::TestRuntime;

conformance::suite! {
    channel => Channel, TestRuntime, block_on;
    arc => ArcT, TestRuntime, block_on;
}

/// Each case on a fresh runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    TestRuntime::new().block_on(future)
}
