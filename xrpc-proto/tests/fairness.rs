//! No peer can freeze a server or lock the others out (issue 24), through the fake-clock pipe
//! of `sessions.rs`: frames over a side's maximum fail their one message, server-wide bounds
//! shared by connections (handlers with a fair share, decompressed bytes, the decompression
//! rate), a write that makes no progress, a duplicate request id, and a connection reclaimed
//! by its listener. The listener's policy itself is tested in `xrpc_proto::admission`.

mod pair;

use std::time::Duration;

use pair::{CODEC, MS, Pair};
use xrpc_proto::bytes::{Bytes, BytesMut};
use xrpc_proto::{
    CallError, CallKind, CallOptions, ClientConfig, ClientSession, CloseReason, CompressionConfig,
    ErrorCode, HandlerOutcome, Header, MessageEncoder, MessageKind, Payload, ServerBounds,
    ServerConfig, ServerSessionEvent, WireConfig,
};

const SEC: Duration = Duration::from_secs(1);

fn frame(header: Header, method: &str, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    MessageEncoder::new(64 << 20, CompressionConfig::none())
        .encode(&header, method, payload, &mut out)
        .unwrap();
    out
}

fn blob(n: usize) -> Payload {
    Payload::Bytes(Bytes::from(vec![0x5a; n]))
}

/// Issue 24, item 6: a client with a 1 MiB maximum calling a method that answered 2 MiB lost
/// the whole connection ("frame of 2097175 bytes exceeds max 1048576"). Now that call fails
/// alone with `FrameTooLarge` — the client skips the frame's bytes without buffering them —
/// and the calls after it are answered. An oversized stream item ends its stream the same way
/// (and the server is told to stop it).
#[test]
fn an_answer_over_the_clients_maximum_fails_that_call_alone() {
    let mut p = Pair::default();
    p.client = ClientSession::new(
        ClientConfig::default(),
        WireConfig::default().with_max_frame_size(1024),
        p.now,
    );
    let big = p.call("add", b"big please");
    let small = p.call("add", b"small please");
    assert_eq!(p.take_calls().len(), 2);
    p.complete(big, HandlerOutcome::Response(blob(2000)));
    p.complete(small, HandlerOutcome::Response(blob(10)));
    match p.failed(big) {
        CallError::FrameTooLarge { size, max } => assert_eq!((size > 2000, max), (true, 1024)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(p.client_outcome(small), Some(Ok(_))));
    assert!(p.client.is_open());

    let opts = CallOptions::unary(CODEC).with_kind(CallKind::ServerStreaming);
    let stream = p.call_with("count", b"", opts);
    assert_eq!(p.take_calls().len(), 1);
    p.server.send_item(stream, blob(10)).unwrap();
    p.server.send_item(stream, blob(5000)).unwrap();
    p.run();
    assert!(matches!(
        p.failed(stream),
        CallError::FrameTooLarge { max: 1024, .. }
    ));
    assert!(
        p.cancelled().contains(&stream),
        "the server stops the stream"
    );
    let after = p.call("add", b"");
    p.take_calls();
    p.complete(after, HandlerOutcome::Response(blob(1)));
    assert!(matches!(p.client_outcome(after), Some(Ok(_))));
}

/// The same on the server: a request over its maximum (from a client whose own is larger) is
/// answered `ResourceExhausted` and never buffered; the connection goes on.
#[test]
fn a_request_over_the_servers_maximum_fails_that_call_alone() {
    let mut p = Pair::new(
        ClientConfig::default(),
        ServerConfig::default(),
        WireConfig::default().with_max_frame_size(1024),
    );
    p.client = ClientSession::new(ClientConfig::default(), WireConfig::default(), p.now);
    let big = p
        .client
        .start_call(p.now, "add", blob(5000), CallOptions::unary(CODEC))
        .unwrap();
    let small = p.call("add", b"1+2");
    let calls = p.take_calls();
    assert_eq!(calls.len(), 1, "only the small call runs");
    assert_eq!(calls[0].0, small);
    let e = p.remote(big);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(
        e.message
            .contains("exceeds the server's maximum frame size 1024"),
        "{e:?}"
    );
    assert!(p.server.wants_read() && !p.server.is_shutting_down());
    assert!(p.server.read_buffer().capacity() < 64 << 10);
}

/// Issue 24, item 8: a second request with the id of a call in progress closed its connection
/// only after 5 s (the closing grace waited for that call). The answers to that id would be
/// ambiguous: the connection ends at once, its handlers stopped.
#[test]
fn a_duplicate_request_id_closes_the_connection_at_once() {
    let mut p = Pair::default();
    let id = p.call("add", b"slow");
    assert_eq!(p.take_calls().len(), 1);
    let again = frame(
        Header::new(MessageKind::Request, id).with_codec(CODEC),
        "add",
        b"",
    );
    p.server.handle_bytes(p.now, &again);
    assert!(p.server.is_closed(), "{:?}", p.server.close_reason());
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::Protocol(m)) if m.contains("already in use")
    ));
    p.run();
    assert!(p.cancelled().contains(&id), "its handler is stopped");
}

/// Issue 23, item 3: a write that makes no progress (the peer stopped reading) closes the
/// connection after `write_stall_timeout`, on both sides; progress restarts the wait.
#[test]
fn a_write_that_makes_no_progress_closes_the_connection() {
    let stall = 2 * SEC;
    let sc = ServerConfig {
        write_stall_timeout: Some(stall),
        ..ServerConfig::default()
    };
    let cc = ClientConfig {
        write_stall_timeout: Some(stall),
        default_timeout: None,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, sc, WireConfig::default());
    let id = start_call(&mut p);
    for side in ["server", "client"] {
        let unwritten = |p: &mut Pair, n: usize| match side {
            "server" => p.server.handle_unwritten(p.now, n),
            _ => p.client.handle_unwritten(p.now, n),
        };
        unwritten(&mut p, 1000);
        p.advance(stall - MS);
        unwritten(&mut p, 400); // progress
        p.advance(stall - MS);
        assert!(!p.server.is_shutting_down() && p.client.is_open(), "{side}");
        unwritten(&mut p, 0); // all written: no deadline
        p.advance(10 * stall);
        assert!(!p.server.is_shutting_down() && p.client.is_open(), "{side}");
    }
    p.server.handle_unwritten(p.now, 1000);
    p.advance(stall);
    assert!(p.server.is_closed());
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::TimedOut(m)) if m.contains("no progress")
    ));
    assert!(p.cancelled().contains(&id));
    p.client.handle_unwritten(p.now, 1000);
    p.advance(stall);
    assert!(p.client.is_closed());
    assert!(matches!(p.failed(id), CallError::Disconnected(m) if m.contains("no progress")));
}

fn start_call(p: &mut Pair) -> u64 {
    let id = p.call("add", b"");
    assert_eq!(p.take_calls().len(), 1);
    id
}

fn zstd_pair(sc: ServerConfig) -> Pair {
    let wire = WireConfig::default().with_compression(CompressionConfig::zstd(3));
    Pair::new(ClientConfig::default(), sc, wire)
}

/// Zeros: about 1000:1 under Zstd.
fn zeros(n: usize) -> Payload {
    Payload::Bytes(Bytes::from(vec![0u8; n]))
}

fn compressed_call(p: &mut Pair, n: usize) -> u64 {
    p.client
        .start_call(p.now, "add", zeros(n), CallOptions::unary(CODEC))
        .unwrap()
}

/// Issue 24, item 3: bombs whose payload is dropped at once (a typed handler whose decode
/// fails) never fill the decompression budget, so inflating them cost CPU without bound. A
/// connection past its `decompression_rate` is not read until it is back within it (the
/// bombs wait in the peer's socket), and the bombs read with the one that spent it are
/// refused, not inflated.
#[test]
fn a_connection_past_its_decompression_rate_is_slowed() {
    const KIB: usize = 1024;
    let sc = ServerConfig {
        decompression_rate: 1024 * KIB,
        ..ServerConfig::default()
    };
    let mut p = zstd_pair(sc);
    // Read one by one: the second spends the bucket, the rest wait unread.
    let ids: Vec<u64> = (0..6).map(|_| compressed_call(&mut p, 600 * KIB)).collect();
    p.run();
    assert_eq!(p.take_calls().len(), 2);
    assert!(!p.server.wants_read(), "paused");
    assert!(!p.c2s.is_empty(), "the rest wait unread");
    let resume = p.server.poll_timeout().unwrap();
    assert!(
        resume > p.now + 150 * MS && resume < p.now + 200 * MS,
        "{resume:?}"
    );
    p.advance(resume - p.now);
    assert_eq!(p.take_calls().len(), 1, "one more, then paused again");
    // Read in one go, the bombs behind the one that spent the bucket are refused.
    let mut p = zstd_pair(sc);
    let burst: Vec<u64> = (0..3).map(|_| compressed_call(&mut p, 600 * KIB)).collect();
    let mut bytes = BytesMut::new();
    while p.client.poll_transmit(&mut bytes) {}
    p.server.handle_bytes(p.now, &bytes);
    p.run();
    assert_eq!(p.take_calls().len(), 2);
    let e = p.remote(burst[2]);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(e.message.contains("a second on this connection"), "{e:?}");
    assert_eq!(ids.len(), 6);
}

/// The server-wide rate: connections together inflate no more than it; past it compressed
/// messages are refused, uncompressed ones are served.
#[test]
fn connections_share_one_decompression_rate() {
    const KIB: usize = 1024;
    let sc = ServerConfig {
        decompression_rate: 4096 * KIB,
        decompression_rate_total: 1024 * KIB,
        ..ServerConfig::default()
    };
    let mut a = zstd_pair(sc);
    let mut b = zstd_pair(sc);
    let bounds = ServerBounds::new(&sc, a.now);
    a.server.set_bounds(&bounds);
    b.server.set_bounds(&bounds);
    compressed_call(&mut a, 1100 * KIB);
    a.run();
    assert_eq!(a.take_calls().len(), 1);
    let refused = compressed_call(&mut b, 10 * KIB);
    let served = b.call("add", b"uncompressed");
    let calls = b.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, served);
    let e = b.remote(refused);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(
        e.message.contains("the server decompresses at most"),
        "{e:?}"
    );
}

/// Issue 24, item 4: the 64 MiB decompression budget over 8 connections reached ~520 MiB.
/// Connections also share one server-wide budget of decompressed bytes held.
#[test]
fn connections_share_one_decompression_budget() {
    const KIB: usize = 1024;
    let sc = ServerConfig {
        decompression_budget: 1024 * KIB,
        decompression_budget_total: 1536 * KIB,
        ..ServerConfig::default()
    };
    let bounds = ServerBounds::new(&sc, pair::Pair::default().now);
    let mut pairs: Vec<Pair> = (0..3).map(|_| zstd_pair(sc)).collect();
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for p in &mut pairs {
        p.server.set_bounds(&bounds);
        let id = compressed_call(p, 700 * KIB);
        p.run();
        match p.take_calls().pop() {
            Some(call) => kept.push(call),
            None => refused.push(p.remote(id)),
        }
    }
    assert_eq!(kept.len(), 2, "two fit in the server's budget");
    assert_eq!(refused[0].code, ErrorCode::ResourceExhausted);
    assert!(
        refused[0].message.contains("the server's budget"),
        "{refused:?}"
    );
    assert_eq!(bounds.decompressed.held(), 1400 * KIB);
    drop(kept);
    assert_eq!(bounds.decompressed.held(), 0);
}

/// Issue 24, item 4: 10,000 notifications per connection over 32 connections held 347 MiB.
/// Handlers count against a server-wide limit too; past it, a connection still gets its fair
/// share (the limit over the connections), so a flood on one does not lock the others out.
#[test]
fn handlers_past_the_server_wide_limit_get_a_fair_share() {
    let sc = ServerConfig {
        max_concurrent_calls_total: 10,
        ..ServerConfig::default()
    };
    let mut flood = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    let mut quiet = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    let bounds = ServerBounds::new(&sc, flood.now);
    flood.server.set_bounds(&bounds);
    quiet.server.set_bounds(&bounds);
    flood.notify(30);
    assert_eq!(flood.notification_tokens().len(), 10, "up to the limit");
    // Past it the flood's notifications are dropped, and the connection is held (not read)
    // until one of its handlers ends: the rest of the flood waits in the transport.
    assert!(flood.server.dropped_notifications() >= 1);
    assert!(!flood.server.wants_read());
    assert!(!flood.c2s.is_empty(), "the rest of the flood is not read");
    // The quiet connection gets its share (10 / 2), and no more.
    let ids: Vec<u64> = (0..6).map(|_| quiet.call("add", b"")).collect();
    assert_eq!(quiet.take_calls().len(), 5);
    let e = quiet.remote(ids[5]);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(e.message.contains("its share"), "{e:?}");
    assert_eq!(bounds.handlers.running(), 15);
    // Ended handlers free their places.
    for t in flood.notification_tokens() {
        flood.server.notification_done(flood.now, t);
    }
    drop(flood);
    assert_eq!(bounds.handlers.running(), 5);
}

/// Issue 24, item 2: the listener reclaims an idle connection for a newcomer: it closes at
/// once; one that became busy meanwhile shuts down gracefully instead (its call finishes).
#[test]
fn a_reclaimed_connection_closes_at_once_when_idle_and_drains_when_busy() {
    let mut idle = Pair::default();
    idle.notify(0);
    assert!(idle.server.is_idle());
    idle.server.reclaim(idle.now);
    assert!(idle.server.is_closed());
    assert_eq!(idle.server.close_reason(), Some(&CloseReason::Reclaimed));

    let mut busy = Pair::default();
    let id = start_call(&mut busy);
    assert!(!busy.server.is_idle());
    busy.server.reclaim(busy.now);
    assert!(busy.server.is_shutting_down() && !busy.server.is_closed());
    let late = busy.call("add", b"");
    assert_eq!(busy.remote(late).code, ErrorCode::ShuttingDown);
    busy.complete(id, HandlerOutcome::Response(blob(1)));
    assert!(matches!(busy.client_outcome(id), Some(Ok(_))));
    assert!(busy.server.is_closed());
    assert!(
        !busy
            .server_events
            .iter()
            .any(|e| matches!(e, ServerSessionEvent::Cancelled { id: c } if *c == id))
    );
}
