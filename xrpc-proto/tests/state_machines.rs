//! Deterministic tests of the client and server state machines wired back to back through an
//! in-memory pipe and the real wire encoding, with a fake clock (after quinn-proto's `Pair`).
//! The one clock read is the fake clock's origin (an integration test may read the clock; the
//! crate's own code never does); from that origin on, time only moves when a test advances it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use xrpc_proto::client::StreamSendError;
use xrpc_proto::client::{
    CallError, CallKind, CallOptions, ClientConfig, ClientConnection, ClientEvent,
};
use xrpc_proto::compression::CompressionConfig;
use xrpc_proto::frame::FrameDecoder;
use xrpc_proto::message::{
    ErrorCode, Header, MessageDecoder, MessageEncoder, MessageKind, RemoteError,
};
use xrpc_proto::packet::{Body, Packet};
use xrpc_proto::server::{ServerConfig, ServerConnection, ServerEvent, ServerSendError};

const MS: Duration = Duration::from_millis(1);

/// The fake clock's origin: the one clock read of these tests.
fn origin() -> Instant {
    Instant::now()
}

/// Client and server joined by two queues of encoded frames.
struct Pair {
    now: Instant,
    client: ClientConnection<Bytes>,
    server: ServerConnection<Bytes>,
    c2s: VecDeque<Bytes>,
    s2c: VecDeque<Bytes>,
    enc: MessageEncoder,
    dec: MessageDecoder,
}

impl Pair {
    fn new(cc: ClientConfig, sc: ServerConfig) -> Self {
        let now = origin();
        Self {
            now,
            client: ClientConnection::new(cc, now),
            server: ServerConnection::new(sc),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            enc: MessageEncoder::new(1 << 20, CompressionConfig::lz4().with_threshold(64)),
            dec: MessageDecoder::new(1 << 20),
        }
    }

    fn default() -> Self {
        Self::new(ClientConfig::default(), ServerConfig::default())
    }

    fn encode(enc: &mut MessageEncoder, p: &Packet<Bytes>) -> Bytes {
        let mut out = BytesMut::new();
        p.encode(enc, &mut out).unwrap();
        out.freeze()
    }

    /// Moves everything both sides want to send onto the wire queues.
    fn flush(&mut self) {
        while let Some(p) = self.client.poll_transmit() {
            self.c2s.push_back(Self::encode(&mut self.enc, &p));
        }
        while let Some(p) = self.server.poll_transmit() {
            self.s2c.push_back(Self::encode(&mut self.enc, &p));
        }
    }

    /// Decodes one wire frame (with its prefix), one byte at a time through a frame decoder.
    fn decode(&mut self, wire: &[u8]) -> Packet<Bytes> {
        let mut fd = FrameDecoder::new(1 << 20);
        for b in wire {
            fd.handle_bytes(&[*b]);
        }
        let frame = fd.poll_frame().unwrap().unwrap();
        Packet::from_message(self.dec.decode(frame).unwrap())
    }

    fn deliver_to_server(&mut self, wire: Bytes) {
        let p = self.decode(&wire);
        self.server.handle_packet(self.now, p).unwrap();
    }

    fn deliver_to_client(&mut self, wire: Bytes) {
        let p = self.decode(&wire);
        self.client.handle_packet(self.now, p);
    }

    /// Delivers everything in flight, both ways, until both sides are quiet.
    fn step(&mut self) {
        loop {
            self.flush();
            if self.c2s.is_empty() && self.s2c.is_empty() {
                return;
            }
            while let Some(w) = self.c2s.pop_front() {
                self.deliver_to_server(w);
            }
            while let Some(w) = self.s2c.pop_front() {
                self.deliver_to_client(w);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    fn client_events(&mut self) -> Vec<ClientEvent<Bytes>> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    fn server_events(&mut self) -> Vec<ServerEvent<Bytes>> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn call(&mut self, method: &str, payload: &'static [u8], kind: CallKind) -> u64 {
        self.client
            .start_call(
                self.now,
                method,
                Bytes::from_static(payload),
                CallOptions::unary(1).with_kind(kind),
            )
            .unwrap()
    }

    /// A unary call to `slow` that times out after `timeout`.
    fn call_with_timeout(&mut self, timeout: Duration) -> u64 {
        let opts = CallOptions::unary(1).with_timeout(timeout);
        self.client
            .start_call(self.now, "slow", Bytes::new(), opts)
            .unwrap()
    }

    fn requests(&mut self) -> Vec<u64> {
        self.server_events()
            .into_iter()
            .map(|e| match e {
                ServerEvent::Request(c) => c.id,
                other => panic!("expected a request, got {other:?}"),
            })
            .collect()
    }
}

#[test]
fn unary_call_round_trip() {
    let mut p = Pair::default();
    let id = p.call("add", b"1+2", CallKind::Unary);
    p.step();
    let evs = p.server_events();
    let [ServerEvent::Request(call)] = &evs[..] else {
        panic!("{evs:?}")
    };
    assert_eq!(
        (call.id, call.method_str(), &call.payload[..]),
        (id, "add", &b"1+2"[..])
    );
    assert_eq!(call.kind, CallKind::Unary);
    assert!(
        call.deadline.is_some(),
        "the default timeout travels with the request"
    );
    assert!(p.server.respond(id, Bytes::from_static(b"3"), 1));
    p.step();
    assert_eq!(
        p.client_events(),
        vec![ClientEvent::Response {
            id,
            payload: Bytes::from_static(b"3")
        }]
    );
    assert_eq!(p.client.pending_calls(), 0);
    assert!(p.server.is_idle());
}

#[test]
fn many_calls_answered_in_reverse_with_reordered_wire() {
    let mut p = Pair::default();
    let ids: Vec<u64> = (0..100)
        .map(|_| p.call("m", b"x", CallKind::Unary))
        .collect();
    p.flush();
    // Requests arrive in reverse order.
    let wire: Vec<Bytes> = p.c2s.drain(..).rev().collect();
    for w in wire {
        p.deliver_to_server(w);
    }
    let got = p.requests();
    assert_eq!(got.len(), 100);
    for id in &got {
        p.server
            .respond(*id, Bytes::from(id.to_le_bytes().to_vec()), 1);
    }
    p.step();
    let mut answered = HashMap::new();
    for e in p.client_events() {
        let ClientEvent::Response { id, payload } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            &payload[..],
            &id.to_le_bytes(),
            "each call gets its own answer"
        );
        answered.insert(id, ());
    }
    assert_eq!(answered.len(), ids.len());
}

#[test]
fn client_deadline_expires_and_cancels_on_the_server() {
    let mut p = Pair::default();
    let id = p.call_with_timeout(100 * MS);
    p.step();
    p.requests();
    assert_eq!(p.client.poll_timeout(), Some(p.now + 100 * MS));
    p.now += 99 * MS;
    p.client.handle_timeout(p.now);
    assert!(p.client_events().is_empty());
    p.now += MS;
    p.client.handle_timeout(p.now);
    assert_eq!(
        p.client_events(),
        vec![ClientEvent::Failed {
            id,
            error: CallError::Timeout
        }]
    );
    p.step();
    assert_eq!(
        p.server_events(),
        vec![ServerEvent::Cancelled {
            id,
            reason: CallError::Cancelled
        }]
    );
    assert!(
        !p.server.respond(id, Bytes::new(), 1),
        "late answers are dropped"
    );
}

#[test]
fn server_sees_and_enforces_the_deadline() {
    let mut p = Pair::default();
    let id = p.call_with_timeout(50 * MS);
    p.step();
    let evs = p.server_events();
    let [ServerEvent::Request(call)] = &evs[..] else {
        panic!()
    };
    assert_eq!(call.deadline, Some(p.now + 50 * MS));
    // Only the server's clock moves (the client is slower to notice).
    p.now += 50 * MS;
    p.server.handle_timeout(p.now);
    assert_eq!(
        p.server_events(),
        vec![ServerEvent::Cancelled {
            id,
            reason: CallError::Timeout
        }]
    );
    p.step();
    let evs = p.client_events();
    // The server's DeadlineExceeded is the client's Timeout, whichever timer fired first.
    let [
        ClientEvent::Failed {
            error: CallError::Timeout,
            ..
        },
    ] = &evs[..]
    else {
        panic!("{evs:?}")
    };
}

#[test]
fn connection_loss_fails_every_pending_call() {
    let mut p = Pair::default();
    let ids: Vec<u64> = (0..5).map(|_| p.call("m", b"", CallKind::Unary)).collect();
    let sid = p.call("s", b"", CallKind::ServerStreaming);
    p.step();
    assert_eq!(p.requests().len(), 6);
    p.client.handle_close("connection reset");
    let evs = p.client_events();
    assert_eq!(evs.len(), 6);
    for (e, id) in evs.iter().zip(ids.iter().chain([&sid])) {
        assert_eq!(
            e,
            &ClientEvent::Failed {
                id: *id,
                error: CallError::Disconnected("connection reset".into())
            }
        );
    }
    assert!(matches!(
        p.client
            .start_call(p.now, "m", Bytes::new(), CallOptions::default()),
        Err(CallError::Disconnected(_))
    ));
    assert_eq!(p.client.poll_timeout(), None);
    p.server.handle_close("gone");
    assert_eq!(p.server_events().len(), 6, "every handler is told to stop");
}

#[test]
fn cancel_reaches_the_server_and_swallows_the_answer() {
    let mut p = Pair::default();
    let id = p.call("m", b"", CallKind::Unary);
    p.step();
    p.requests();
    assert!(p.client.cancel(id));
    assert!(!p.client.cancel(id));
    p.step();
    assert_eq!(
        p.server_events(),
        vec![ServerEvent::Cancelled {
            id,
            reason: CallError::Cancelled
        }]
    );
    // A response already in flight when the cancel was sent is ignored by the client.
    p.server
        .handle_packet(
            p.now,
            Packet::new(Header::new(MessageKind::Ping, 1), Body::Empty),
        )
        .unwrap();
    p.s2c.push_back(Pair::encode(
        &mut p.enc,
        &Packet::new(
            Header::new(MessageKind::Response, id),
            Body::Data(Bytes::new()),
        ),
    ));
    p.step();
    assert!(p.client_events().is_empty());
}

#[test]
fn server_stream_is_held_at_the_credit_window() {
    let cc = ClientConfig {
        stream_window: 4,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, ServerConfig::default());
    let id = p.call("feed", b"", CallKind::ServerStreaming);
    p.step();
    p.requests();
    let mut sent = 0;
    loop {
        match p
            .server
            .send_stream_item(id, Bytes::from(vec![sent as u8]), 1)
        {
            Ok(()) => sent += 1,
            Err(ServerSendError::NoCredit(_)) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(sent, 4, "a producer stops at the window");
    p.step();
    assert_eq!(p.client_events().len(), 4);
    // The consumer takes one: not yet half the window, no credit.
    p.client.stream_consumed(id, 1);
    p.step();
    assert!(p.server_events().is_empty());
    p.client.stream_consumed(id, 1);
    p.step();
    assert_eq!(p.server_events(), vec![ServerEvent::SendCredit { id }]);
    assert_eq!(p.server.send_credit(id), Some(2));
    assert!(p.server.end_stream(id));
    p.step();
    assert_eq!(p.client_events(), vec![ClientEvent::StreamEnd { id }]);
}

#[test]
fn client_stream_and_bidirectional_stream() {
    for kind in [CallKind::ClientStreaming, CallKind::Bidirectional] {
        let mut p = Pair::default();
        let id = p.call("upload", b"meta", kind);
        let mut sent = 0u32;
        loop {
            match p
                .client
                .send_stream_item(id, Bytes::from_static(b"chunk"), 1)
            {
                Ok(()) => sent += 1,
                Err(StreamSendError::NoCredit(_)) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(sent, xrpc_proto::flow::INITIAL_CLIENT_STREAM_WINDOW);
        p.step();
        let evs = p.server_events();
        assert_eq!(evs.len(), 1 + sent as usize);
        assert!(matches!(&evs[0], ServerEvent::Request(c) if c.kind == kind));
        p.server.stream_consumed(id, sent);
        p.step();
        assert_eq!(p.client_events(), vec![ClientEvent::SendCredit { id }]);
        assert!(p.client.send_stream_item(id, Bytes::new(), 1).is_ok());
        assert!(p.client.finish_stream(id));
        assert!(matches!(
            p.client.send_stream_item(id, Bytes::new(), 1),
            Err(StreamSendError::Closed(_))
        ));
        p.step();
        let evs = p.server_events();
        assert!(matches!(evs.last(), Some(ServerEvent::StreamEnd { id: i }) if *i == id));
        if kind == CallKind::Bidirectional {
            p.server
                .send_stream_item(id, Bytes::from_static(b"echo"), 1)
                .unwrap();
            p.server.end_stream(id);
            p.step();
            assert_eq!(p.client_events().len(), 2);
        } else {
            p.server.respond(id, Bytes::from_static(b"done"), 1);
            p.step();
            assert!(matches!(
                &p.client_events()[..],
                [ClientEvent::Response { .. }]
            ));
        }
        assert_eq!(p.client.pending_calls(), 0);
        assert!(p.server.is_idle());
    }
}

#[test]
fn a_handler_that_stops_reading_does_not_stall_the_client() {
    let mut p = Pair::default();
    let id = p.call("up", b"", CallKind::Bidirectional);
    let mut sent = 0;
    while p.client.send_stream_item(id, Bytes::new(), 1).is_ok() {
        sent += 1;
    }
    p.step();
    assert_eq!(p.server_events().len(), 1 + sent);
    // The handler drops its stream without consuming anything.
    p.server.stream_abandoned(id, sent as u32);
    p.step();
    assert_eq!(p.client_events(), vec![ClientEvent::SendCredit { id }]);
    // From now on every item is credited back as it arrives, and none reaches the handler.
    for _ in 0..100 {
        while p.client.send_stream_item(id, Bytes::new(), 1).is_ok() {}
        p.step();
        p.client_events();
    }
    assert!(p.server_events().is_empty());
    assert!(p.server.send_stream_item(id, Bytes::new(), 1).is_ok());
}

#[test]
fn a_server_ignoring_credit_fails_the_stream() {
    let cc = ClientConfig {
        stream_window: 2,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, ServerConfig::default());
    let id = p.call("feed", b"", CallKind::ServerStreaming);
    p.step();
    // A hostile server pushes three items onto the wire directly.
    for _ in 0..3 {
        let w = Pair::encode(
            &mut p.enc,
            &Packet::new(
                Header::new(MessageKind::StreamItem, id),
                Body::Data(Bytes::new()),
            ),
        );
        p.deliver_to_client(w);
    }
    let evs = p.client_events();
    assert_eq!(evs.len(), 3);
    assert!(matches!(
        evs[2],
        ClientEvent::Failed {
            error: CallError::Protocol(_),
            ..
        }
    ));
    // A hostile client is a protocol violation for the server.
    let mut p = Pair::default();
    let id = p.call("up", b"", CallKind::ClientStreaming);
    p.step();
    let item = Packet::new(
        Header::new(MessageKind::StreamItem, id),
        Body::Data(Bytes::new()),
    );
    for _ in 0..xrpc_proto::flow::INITIAL_CLIENT_STREAM_WINDOW {
        p.server.handle_packet(p.now, item.clone()).unwrap();
    }
    assert!(p.server.handle_packet(p.now, item).is_err());
}

#[test]
fn heartbeats_detect_a_silent_server() {
    let cc = ClientConfig {
        heartbeat_interval: Some(100 * MS),
        heartbeat_misses: 3,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, ServerConfig::default());
    let id = p.call("m", b"", CallKind::Unary);
    // A live server answers pings: nothing happens over many intervals.
    for _ in 0..10 {
        p.advance(100 * MS);
        p.step();
    }
    p.server_events();
    assert!(p.client_events().is_empty());
    // The server goes silent: frames to it are lost.
    for _ in 0..3 {
        p.advance(100 * MS);
        p.flush();
        p.c2s.clear();
    }
    p.advance(100 * MS);
    let evs = p.client_events();
    assert!(
        matches!(&evs[..], [ClientEvent::Failed { id: i, error: CallError::Disconnected(_) }] if *i == id),
        "{evs:?}"
    );
    assert!(p.client.closed_reason().is_some());
}

#[test]
fn shutdown_refuses_new_calls_and_lets_running_ones_finish() {
    let mut p = Pair::default();
    let a = p.call("m", b"", CallKind::Unary);
    p.step();
    p.requests();
    p.server.start_shutdown();
    let b = p.call("m", b"", CallKind::Unary);
    p.step();
    assert!(!p.server.is_idle());
    assert!(p.server.respond(a, Bytes::new(), 1));
    assert!(p.server.is_idle());
    p.step();
    let evs = p.client_events();
    assert!(evs.contains(&ClientEvent::Response {
        id: a,
        payload: Bytes::new()
    }));
    assert!(evs.iter().any(|e| matches!(e,
        ClientEvent::Failed { id, error: CallError::Remote(r) } if *id == b && r.code == ErrorCode::ShuttingDown)));
}

#[test]
fn limits_and_violations() {
    let mut p = Pair::new(
        ClientConfig::default(),
        ServerConfig {
            max_concurrent_calls: 2,
            ..ServerConfig::default()
        },
    );
    for _ in 0..3 {
        p.call("m", b"", CallKind::Unary);
    }
    p.step();
    assert_eq!(p.server_events().len(), 2);
    let evs = p.client_events();
    assert!(
        matches!(&evs[..], [ClientEvent::Failed { id: 3, error: CallError::Remote(r) }] if r.code == ErrorCode::ResourceExhausted)
    );
    // Duplicate ids and server-only kinds from a client are violations.
    let dup = Packet {
        header: Header::new(MessageKind::Request, 1),
        method: Bytes::from_static(b"m"),
        metadata: Default::default(),
        body: Body::Data(Bytes::new()),
    };
    assert!(p.server.handle_packet(p.now, dup).is_err());
    let resp = Packet::new(
        Header::new(MessageKind::Response, 9),
        Body::Data(Bytes::new()),
    );
    assert!(p.server.handle_packet(p.now, resp).is_err());
    // Remote errors reach the caller with their message.
    p.server
        .respond_error(1, RemoteError::new(ErrorCode::Handler, "boom"));
    p.step();
    let evs = p.client_events();
    assert!(
        matches!(&evs[..], [ClientEvent::Failed { id: 1, error: CallError::Remote(r) }] if r.message == "boom")
    );
}

#[derive(Debug, Clone)]
enum Op {
    Call(u8),
    Respond(usize),
    Fail(usize),
    Cancel(usize),
    Advance(u16),
    Deliver,
    Drop,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4).prop_map(Op::Call),
        3 => any::<usize>().prop_map(Op::Respond),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u16..2000).prop_map(Op::Advance),
        4 => Just(Op::Deliver),
        1 => Just(Op::Drop),
        1 => Just(Op::Close),
    ]
}

proptest! {
    /// Whatever happens — answers, errors, cancels, timeouts, lost frames, a closed connection —
    /// every call the client starts ends exactly once (or was cancelled by the client itself).
    #[test]
    fn random_interaction_every_call_ends_exactly_once(ops in proptest::collection::vec(op(), 1..200)) {
        let cc = ClientConfig {
            default_timeout: Some(Duration::from_millis(500)),
            ..ClientConfig::default()
        };
        let mut p = Pair::new(cc, ServerConfig::default());
        let mut started: Vec<u64> = Vec::new();
        let mut cancelled = std::collections::HashSet::new();
        let mut ended: HashMap<u64, u32> = HashMap::new();
        let mut server_calls: Vec<u64> = Vec::new();
        let mut closed = false;
        let record = |evs: Vec<ClientEvent<Bytes>>, ended: &mut HashMap<u64, u32>| {
            for e in evs {
                match e {
                    ClientEvent::Response { id, .. } | ClientEvent::Failed { id, .. }
                    | ClientEvent::StreamEnd { id } => *ended.entry(id).or_default() += 1,
                    _ => {}
                }
            }
        };
        for op in ops {
            match op {
                Op::Call(k) => {
                    let kind = [CallKind::Unary, CallKind::ServerStreaming, CallKind::ClientStreaming, CallKind::Bidirectional][k as usize];
                    match p.client.start_call(p.now, "m", Bytes::new(), CallOptions::unary(1).with_kind(kind)) {
                        Ok(id) => started.push(id),
                        Err(_) => prop_assert!(closed),
                    }
                }
                Op::Respond(i) if !server_calls.is_empty() => {
                    let id = server_calls[i % server_calls.len()];
                    if !p.server.respond(id, Bytes::new(), 1) {
                        p.server.end_stream(id);
                    }
                }
                Op::Fail(i) if !server_calls.is_empty() => {
                    let id = server_calls[i % server_calls.len()];
                    p.server.respond_error(id, RemoteError::new(ErrorCode::Handler, "x"));
                }
                Op::Cancel(i) if !started.is_empty() => {
                    let id = started[i % started.len()];
                    if p.client.cancel(id) {
                        cancelled.insert(id);
                    }
                }
                Op::Advance(ms) => p.advance(Duration::from_millis(ms.into())),
                Op::Deliver if !closed => p.step(),
                Op::Drop => {
                    p.flush();
                    p.c2s.pop_front();
                    p.s2c.pop_front();
                }
                Op::Close => {
                    p.client.handle_close("closed");
                    p.server.handle_close("gone");
                    p.c2s.clear();
                    p.s2c.clear();
                    closed = true;
                }
                _ => {}
            }
            for e in p.server_events() {
                if let ServerEvent::Request(c) = e {
                    server_calls.push(c.id);
                }
            }
            let evs = p.client_events();
            record(evs, &mut ended);
        }
        p.client.handle_close("end of test");
        let evs = p.client_events();
        record(evs, &mut ended);
        for id in started {
            let n = ended.get(&id).copied().unwrap_or(0);
            if cancelled.contains(&id) {
                prop_assert!(n <= 1, "call {} ended {} times", id, n);
            } else {
                prop_assert_eq!(n, 1, "call {} ended {} times", id, n);
            }
        }
        prop_assert_eq!(p.client.pending_calls(), 0);
    }
}

/// A ping `id` carrying `payload`: the peer answers it with a pong carrying the same payload.
fn ping(id: u64, payload: impl Into<Bytes>) -> Packet<Bytes> {
    Packet::new(
        Header::new(MessageKind::Ping, id),
        Body::Data(payload.into()),
    )
}

/// A server whose queued output counts as a backlog from 10,000 bytes.
fn server_backlogged_at_10_000() -> ServerConnection<Bytes> {
    ServerConnection::<Bytes>::new(ServerConfig {
        max_transmit_backlog: 10_000,
        ..ServerConfig::default()
    })
}

#[test]
fn transmit_backlog_counts_queued_bytes() {
    let mut server = server_backlogged_at_10_000();
    let now = origin();
    let big_ping = |id| ping(id, vec![0u8; 3_000]);
    assert!(!server.is_backlogged());
    // Pings are answered with pongs carrying the same payload: they pile up in the queue.
    for id in 1..=3 {
        server.handle_packet(now, big_ping(id)).unwrap();
    }
    // 3 x (16 + 3,000) bytes: under the limit.
    assert!(!server.is_backlogged());
    server.handle_packet(now, big_ping(4)).unwrap();
    assert!(server.is_backlogged());
    // Sending drains it.
    assert!(server.poll_transmit().is_some());
    assert!(server.poll_transmit().is_some());
    assert!(!server.is_backlogged());
}

#[test]
fn a_server_that_does_not_read_its_pongs_gets_no_more() {
    let now = origin();
    let mut client = ClientConnection::<Bytes>::new(ClientConfig::default(), now);
    let probe = |id| ping(id, Bytes::from_static(b"probe"));
    // Nothing is sent meanwhile: the pongs wait in the queue, at most MAX_UNSENT_PONGS.
    for id in 1..=100 {
        client.handle_packet(now, probe(id));
    }
    let pongs: Vec<_> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert_eq!(pongs.len(), xrpc_proto::MAX_UNSENT_PONGS);
    assert!(pongs.iter().all(|p| p.header.kind == MessageKind::Pong
        && p.body == Body::Data(Bytes::from_static(b"probe"))));
    // Once they are sent, pings are answered again.
    client.handle_packet(now, probe(101));
    let p = client.poll_transmit().unwrap();
    assert_eq!((p.header.kind, p.header.id), (MessageKind::Pong, 101));
}

#[test]
fn a_packet_encoded_where_it_lies_is_accounted_as_one_taken_out() {
    // The server: looking at the next packet releases nothing; advancing past it releases what
    // taking it out would.
    let mut server = server_backlogged_at_10_000();
    let now = origin();
    for id in 1..=4 {
        server
            .handle_packet(now, ping(id, vec![0u8; 3_000]))
            .unwrap();
    }
    assert!(server.is_backlogged());
    assert_eq!(server.peek_transmit().map(|p| p.header.id), Some(1));
    assert!(server.is_backlogged());
    server.advance_transmit();
    assert_eq!(server.peek_transmit().map(|p| p.header.id), Some(2));
    server.advance_transmit();
    assert!(!server.is_backlogged());
    // The client: pongs sent in place make room for new ones, as pongs taken out do.
    let mut client = ClientConnection::<Bytes>::new(ClientConfig::default(), now);
    for id in 1..=100 {
        client.handle_packet(now, ping(id, &b"probe"[..]));
    }
    let mut sent = 0;
    while let Some(p) = client.peek_transmit() {
        assert_eq!(p.header.kind, MessageKind::Pong);
        client.advance_transmit();
        sent += 1;
    }
    assert_eq!(sent, xrpc_proto::MAX_UNSENT_PONGS);
    client.advance_transmit();
    client.handle_packet(now, ping(101, &b"probe"[..]));
    let p = client.poll_transmit().unwrap();
    assert_eq!((p.header.kind, p.header.id), (MessageKind::Pong, 101));
}

#[test]
fn transmit_backlog_counts_queued_packets_too() {
    let mut server = ServerConnection::<Bytes>::new(ServerConfig::default());
    let now = origin();
    for id in 0..xrpc_proto::MAX_BACKLOG_PACKETS as u64 {
        assert!(!server.is_backlogged());
        let ping = Packet::new(Header::new(MessageKind::Ping, id), Body::Empty);
        server.handle_packet(now, ping).unwrap();
    }
    // 4,096 empty pongs are far under 8 MiB, but many enough.
    assert!(server.is_backlogged());
}
