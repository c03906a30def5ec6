//! The driver's order of steps, seen from the transport: a handler that answers at once has its
//! answer written before the connection's next read starts — a read may spin in place a moment
//! (shared memory on a thread runtime does), so a read started first would hold the answer back
//! for as long as it spins — and in the turn that started the handler, not one turn later.

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
    /// A turn of the driver ended (it asks for a partial frame at the end of every turn).
    TurnEnded,
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

    fn partial_frame(&self) -> usize {
        self.note(Act::TurnEnded);
        self.inner.partial_frame()
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

/// Serves three echo calls over a logged server end; the log without the ends of turns, and
/// the log whole.
fn three_calls_logged() -> (Vec<Act>, Vec<Act>) {
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
    let whole = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let io = whole
        .iter()
        .copied()
        .filter(|a| *a != Act::TurnEnded)
        .collect();
    (io, whole)
}

#[test]
fn an_answer_given_at_once_is_written_before_the_next_read_starts() {
    let (log, _) = three_calls_logged();
    // Each request: a read gives it, the answer is written, then the next read starts.
    let answered: Vec<&[Act]> = log.windows(3).filter(|w| w[0] == Act::Got).collect();
    assert_eq!(answered.len(), 3, "{log:?}");
    for w in answered {
        assert_eq!(w, [Act::Got, Act::Wrote, Act::Read], "{log:?}");
    }
}

#[test]
fn an_answer_given_at_once_is_written_in_the_turn_that_started_its_handler() {
    let (_, log) = three_calls_logged();
    // After a read gives a request, its turn ends; the next turn routes it, starts the handler
    // (which answers at once) and writes the answer before it ends.
    let mut answered = 0;
    for (i, act) in log.iter().enumerate() {
        if *act != Act::Got {
            continue;
        }
        let rest = &log[i + 1..];
        let wrote = rest.iter().position(|a| *a == Act::Wrote);
        let Some(wrote) = wrote else {
            panic!("no answer written after a request: {log:?}");
        };
        let turns = rest[..wrote]
            .iter()
            .filter(|a| **a == Act::TurnEnded)
            .count();
        assert_eq!(
            turns, 1,
            "turns ended between the request and its answer: {log:?}"
        );
        answered += 1;
    }
    assert_eq!(answered, 3, "{log:?}");
}
