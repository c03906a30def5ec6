//! The driver's order of steps, seen from the transport: a handler that answers at once has its
//! answer written before the connection's next read starts. A read may spin in place a moment
//! (shared memory on a thread runtime does), so a read started first would hold the answer back
//! for as long as it spins.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use xrpc_async::testing::TestRuntime;
use xrpc_async::{ChannelFrameTransport, FrameTransport, MessageChannelAdapter, TransportError};
use xrpc_proto::ServerConfig;

use crate::{client, no_timeout, pair, server};

/// What the server's end did, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// A read started.
    Read,
    /// A read gave a frame.
    Got,
    /// A frame was written.
    Wrote,
}

/// The server's end of an in-process pair, logging its reads and writes.
struct Logged {
    inner: ChannelFrameTransport,
    log: Arc<Mutex<Vec<Act>>>,
}

impl Logged {
    fn note(&self, act: Act) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(act);
    }
}

impl FrameTransport for Logged {
    async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        self.note(Act::Wrote);
        self.inner.send_frame(frame).await
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        self.note(Act::Read);
        let frame = self.inner.recv_frame().await?;
        self.note(Act::Got);
        Ok(frame)
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.inner.close().await
    }

    fn stats(&self) -> Option<xrpc_async::TransportStats> {
        self.inner.stats()
    }

    fn name(&self) -> &str {
        "logged"
    }
}

#[test]
fn an_answer_given_at_once_is_written_before_the_next_read_starts() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let (c, s) = pair();
    let log = Arc::new(Mutex::new(Vec::new()));
    let logged = MessageChannelAdapter::new(Logged {
        inner: s.into_inner(),
        log: log.clone(),
    });
    let srv = server.clone();
    let _serving = rt.spawn_with_handle(async move { srv.serve(logged).await });
    let client = client(&rt, c, no_timeout());
    for i in 0..3u64 {
        let v: u64 = rt.block_on(client.call("echo", &i)).unwrap();
        assert_eq!(v, i);
    }
    let log = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // Each request: a read gives it, the answer is written, then the next read starts.
    let answered: Vec<&[Act]> = log.windows(3).filter(|w| w[0] == Act::Got).collect();
    assert_eq!(answered.len(), 3, "{log:?}");
    for w in answered {
        assert_eq!(w, [Act::Got, Act::Wrote, Act::Read], "{log:?}");
    }
}
