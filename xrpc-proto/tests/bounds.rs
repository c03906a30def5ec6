//! Every resource a peer can make a session hold has a bound (issue 14), attacked through the
//! fake-clock pipe of `sessions.rs`: stream credit, queued output, notifications, decompressed
//! bytes, partial frames and idle connections, shutdown with an idle stream, and a hostile
//! server's pings. Each test measures what the session holds (credit, queued bytes, held
//! decompressed bytes, running handlers), not only what it answers.

mod pair;

use std::time::Duration;

use pair::{CODEC, MS, Pair};
use xrpc_proto::bytes::{Bytes, BytesMut};
use xrpc_proto::{
    CallError, CallKind, CallOptions, CallWake, ClientConfig, ClientSession, CloseReason,
    CompressionConfig, ErrorCode, HandlerOutcome, Header, MessageEncoder, MessageKind,
    OutputBudget, Payload, ReadBudget, SendError, ServerConfig, ServerSessionEvent, WireConfig,
};

const SEC: Duration = Duration::from_secs(1);

/// One message as a length-prefixed frame, the way a hostile peer would write it.
fn frame(header: Header, method: &str, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    MessageEncoder::default()
        .encode(&header, method, payload, &mut out)
        .unwrap();
    out
}

fn server_stream_request(id: u64, window: u32) -> BytesMut {
    let header = Header {
        server_stream: true,
        window: Some(window),
        ..Header::new(MessageKind::Request, id).with_codec(CODEC)
    };
    frame(header, "count", b"")
}

/// Starts a server-streaming call whose handler the server then runs; returns its id.
fn start_stream(p: &mut Pair) -> u64 {
    let opts = CallOptions::unary(CODEC).with_kind(CallKind::ServerStreaming);
    let id = p.call_with("count", b"", opts);
    assert_eq!(p.take_calls().len(), 1, "call {id} started");
    id
}

fn item() -> Payload {
    Payload::Bytes(Bytes::from(vec![7u8; 1024]))
}

/// Defect 1: a window of `u32::MAX`, or Credit messages adding up to it, let a handler queue
/// items without end for a client that reads nothing (2.4 GiB in 8 s).
#[test]
fn granted_credit_is_clamped_to_the_servers_cap() {
    let sc = ServerConfig {
        max_stream_credit: 64,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    p.server
        .handle_bytes(p.now, &server_stream_request(1, u32::MAX));
    p.run();
    assert_eq!(p.server.send_credit(1), Some(64), "a u32::MAX window");
    for _ in 0..100 {
        let credit = Header {
            window: Some(u32::MAX),
            ..Header::new(MessageKind::Credit, 1)
        };
        p.server.handle_bytes(p.now, &frame(credit, "", b""));
    }
    assert_eq!(
        p.server.send_credit(1),
        Some(64),
        "Credit adding up to more"
    );
    let mut sent = 0;
    while p.server.send_item(1, item()).is_ok() {
        sent += 1;
        assert!(sent <= 64, "more items queued than the cap");
    }
    assert_eq!(sent, 64);
}

/// A client whose window exceeds the cap (up to twice it) still gets its whole stream: it
/// grants more as it consumes.
#[test]
fn a_client_window_above_the_cap_still_flows() {
    let sc = ServerConfig {
        max_stream_credit: 16,
        ..ServerConfig::default()
    };
    let cc = ClientConfig {
        stream_window: 32,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, sc, WireConfig::default());
    let id = start_stream(&mut p);
    let mut got = 0;
    for _ in 0..200 {
        while p.server.send_item(id, item()).is_ok() {}
        p.run();
        got += p.take_items(id).0;
    }
    assert!(got >= 1000, "the stream stalled after {got} items");
}

/// Defect 1 (memory): a stalled consumer stalls only its producer — a stream send waits while
/// the connection's queued output is over its budget, and is told when to try again.
#[test]
fn a_stream_send_waits_while_queued_output_is_over_budget() {
    const BUDGET: usize = 64 * 1024;
    let sc = ServerConfig {
        max_transmit_backlog: BUDGET,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    p.server
        .handle_bytes(p.now, &server_stream_request(1, 1000));
    p.run();
    // The client reads nothing: nothing is taken from the server's output.
    let mut refused = false;
    for _ in 0..1000 {
        match p.server.send_item(1, item()) {
            Ok(()) => {}
            Err(SendError::NoCredit(_)) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused, "1000 items queued with credit to spare");
    let queued = p.server.queued_bytes();
    assert!(queued <= BUDGET + 2048, "{queued} bytes queued");
    let credit = p.server.send_credit(1).unwrap();
    assert!(
        credit > 900,
        "refused for the budget, with {credit} credit left"
    );
    // Other calls are still answered (their answers are not held back).
    p.server.handle_bytes(
        p.now,
        &frame(
            Header::new(MessageKind::Request, 2).with_codec(CODEC),
            "add",
            b"",
        ),
    );
    while let Some(ev) = p.server.poll_event(&p.routes) {
        p.server_events.push(ev);
    }
    assert!(p.server.complete(
        p.now,
        2,
        HandlerOutcome::Response(Payload::Bytes(Bytes::new()))
    ));
    // Once the output drains, the producer is told to try again.
    let mut out = BytesMut::new();
    while p.server.poll_transmit(&mut out) {
        out.clear();
    }
    assert_eq!(p.server.queued_bytes(), 0);
    let mut woken = false;
    while let Some(ev) = p.server.poll_event(&p.routes) {
        woken |= matches!(ev, ServerSessionEvent::Wake(CallWake::Send(1)));
    }
    assert!(woken, "no SendCredit once the budget freed");
    assert!(p.server.send_item(1, item()).is_ok());
}

/// The server-wide budget: many stalled connections cannot add up to more than it.
#[test]
fn stalled_connections_share_one_server_wide_budget() {
    const EACH: usize = 64 * 1024;
    let sc = ServerConfig {
        max_transmit_backlog: EACH,
        max_queued_output_total: EACH + EACH / 2,
        ..ServerConfig::default()
    };
    let budget = OutputBudget::new(sc.max_queued_output_total);
    let mut pairs: Vec<Pair> = (0..3)
        .map(|_| {
            let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
            p.server.set_output_budget(budget.clone());
            p.server
                .handle_bytes(p.now, &server_stream_request(1, 1000));
            // The handler starts (and may send) once the call is routed.
            while let Some(ev) = p.server.poll_event(&p.routes) {
                p.server_events.push(ev);
            }
            p
        })
        .collect();
    // Each producer sends until it is refused; no client reads.
    let mut sent = Vec::new();
    for p in &mut pairs {
        let mut n = 0;
        while p.server.send_item(1, item()).is_ok() {
            n += 1;
        }
        sent.push(n);
    }
    assert!(
        budget.queued() <= sc.max_queued_output_total + 2048,
        "{}",
        budget.queued()
    );
    assert_eq!(
        sent[2], 0,
        "the third connection found the server's budget spent: {sent:?}"
    );
    assert!(!budget.take_freed(), "nothing freed yet");
    // The first connection's client reads everything: the total falls, the others may go on.
    let mut out = BytesMut::new();
    while pairs[0].server.poll_transmit(&mut out) {
        out.clear();
    }
    assert!(budget.take_freed());
    let third = &mut pairs[2];
    third.server.handle_budget_freed();
    let mut woken = false;
    while let Some(ev) = third.server.poll_event(&third.routes) {
        woken |= matches!(ev, ServerSessionEvent::Wake(CallWake::Send(1)));
    }
    assert!(woken);
    assert!(third.server.send_item(1, item()).is_ok());
    // A closed connection gives back what it held.
    let held = budget.queued();
    let second = pairs.remove(1);
    let its = second.server.queued_bytes();
    drop(second);
    assert_eq!(budget.queued(), held - its);
}

fn stopped_notifications(p: &Pair) -> Vec<u64> {
    p.server_events
        .iter()
        .filter_map(|e| match e {
            ServerSessionEvent::NotificationStopped { token } => Some(*token),
            _ => None,
        })
        .collect()
}

/// Defect 2: notification handlers ran without a deadline (1.07 million live tasks in 5 s).
#[test]
fn a_notification_handler_is_stopped_at_its_deadline() {
    let sc = ServerConfig {
        max_concurrent_calls: 4,
        notification_timeout: 100 * MS,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    p.notify(4);
    let tokens = p.notification_tokens();
    assert_eq!(tokens.len(), 4);
    assert_eq!(p.server.running_notifications(), 4);
    let refused = p.call("add", b"");
    assert_eq!(p.remote(refused).code, ErrorCode::ResourceExhausted);
    // Their handlers never finish: the deadline stops them and frees their slots.
    p.advance(101 * MS);
    assert_eq!(stopped_notifications(&p), tokens);
    assert_eq!(p.server.running_notifications(), 0);
    let id = p.call("add", b"");
    assert_eq!(p.take_calls().len(), 1, "call {id} admitted again");
}

/// Defect 2: notification handlers outlived their connection.
#[test]
fn notification_handlers_are_stopped_when_the_connection_ends() {
    let mut p = Pair::default();
    p.notify(1);
    let tokens = p.notification_tokens();
    assert_eq!(tokens.len(), 1);
    p.server.handle_transport_error("reset by peer");
    while let Some(ev) = p.server.poll_event(&p.routes) {
        p.server_events.push(ev);
    }
    assert_eq!(stopped_notifications(&p), tokens);
}

/// Zeros compress about 1000:1 — the amplification of defect 3.
fn zeros(n: usize) -> Payload {
    Payload::Bytes(Bytes::from(vec![0u8; n]))
}

/// Defect 3: 534 B of Zstd inflated to 16 MiB each, held without limit (40 messages of 21 KiB
/// in all cost +592 MiB). Decompressed bytes held count against a per-connection budget.
#[test]
fn decompressed_bytes_held_stay_within_the_budget() {
    const BUDGET: usize = 1024 * 1024;
    let sc = ServerConfig {
        decompression_budget: BUDGET,
        ..ServerConfig::default()
    };
    let wire = WireConfig::default().with_compression(CompressionConfig::zstd(3));
    let mut p = Pair::new(ClientConfig::default(), sc, wire);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = p
            .client
            .start_call(p.now, "add", zeros(400 * 1024), CallOptions::unary(CODEC))
            .unwrap();
        ids.push(id);
    }
    p.run();
    // The handlers keep their payloads.
    let kept = p.take_calls();
    assert_eq!(kept.len(), 2, "two fit in the budget");
    assert!(p.server.decompressed_bytes() <= BUDGET);
    assert_eq!(p.server.decompressed_bytes(), 2 * 400 * 1024);
    for id in &ids[2..] {
        let e = p.remote(*id);
        assert_eq!(e.code, ErrorCode::ResourceExhausted, "{e:?}");
    }
    // Released payloads free the budget.
    for (id, _, _) in &kept {
        p.complete(*id, HandlerOutcome::Response(Payload::Bytes(Bytes::new())));
    }
    drop(kept);
    assert_eq!(p.server.decompressed_bytes(), 0);
    let id = p
        .client
        .start_call(p.now, "add", zeros(400 * 1024), CallOptions::unary(CODEC))
        .unwrap();
    p.run();
    assert_eq!(
        p.take_calls().len(),
        1,
        "call {id} admitted once the budget freed"
    );
}

/// A server can refuse compressed input outright: it answers, and never inflates.
#[test]
fn a_server_can_refuse_compressed_input() {
    let sc = ServerConfig {
        accept_compressed: false,
        ..ServerConfig::default()
    };
    let wire = WireConfig::default().with_compression(CompressionConfig::zstd(3));
    let mut p = Pair::new(ClientConfig::default(), sc, wire);
    let id = p
        .client
        .start_call(p.now, "add", zeros(64 * 1024), CallOptions::unary(CODEC))
        .unwrap();
    p.run();
    assert!(p.take_calls().is_empty(), "no handler ran");
    let e = p.remote(id);
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert_eq!(e.message, "compressed input is not accepted");
    assert_eq!(p.server.decompressed_bytes(), 0);
    // Small payloads travel uncompressed and are served.
    let small = p.call("add", b"1+2");
    assert_eq!(p.take_calls().len(), 1, "call {small}");
}

/// Defect 4: 200 connections that sent 10 bytes of a frame were all still open after 15 s.
#[test]
fn a_frame_not_whole_in_time_closes_the_connection() {
    let mut p = Pair::default();
    // A call in progress keeps the connection from being idle: only the frame deadline acts.
    start_stream(&mut p);
    let mut partial = BytesMut::new();
    partial.extend_from_slice(&(16u32 << 20).to_le_bytes());
    partial.extend_from_slice(b"XR\x01\x01\x00\x01");
    p.server.handle_bytes(p.now, &partial);
    let timeout = ServerConfig::default().frame_timeout.unwrap();
    p.advance(timeout - MS);
    assert!(!p.server.is_shutting_down(), "closed before the deadline");
    p.advance(2 * MS);
    assert!(p.server.is_closed() || p.server.is_shutting_down());
    match p.server.close_reason() {
        Some(CloseReason::TimedOut(m)) => assert!(m.contains("10 bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Defect 4, server-wide: frames stopped one byte short on many connections held 804 MiB. A
/// session that reads through its own buffer (`read_buffer` / `handle_bytes`, as the blocking
/// server does) stops wanting input while its frame needs room the server's read budget does
/// not have, and wants it again when another connection's frame is whole.
#[test]
fn sessions_stop_reading_while_the_read_budget_is_spent() {
    let sc = ServerConfig {
        max_read_buffers_total: 1 << 20,
        ..ServerConfig::default()
    };
    let budget = ReadBudget::new(sc.max_read_buffers_total);
    let mut pairs: Vec<Pair> = (0..2)
        .map(|_| {
            let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
            p.server.set_read_budget(budget.clone());
            p
        })
        .collect();
    let whole = frame(
        Header::new(MessageKind::Request, 1).with_codec(CODEC),
        "add",
        &vec![0u8; 900 << 10],
    );
    // The first connection holds all but the last byte of a 900 KiB frame.
    let first = &mut pairs[0];
    first
        .server
        .handle_bytes(first.now, &whole[..whole.len() - 1]);
    assert!(budget.held() > 512 << 10, "charged {}", budget.held());
    // The second reads no more than the uncharged room, then stops wanting input: its frame
    // is admitted whole or not at all.
    let second = &mut pairs[1];
    let mut sent = 0;
    while second.server.wants_read() {
        second
            .server
            .handle_bytes(second.now, &whole[sent..sent + 4096]);
        sent += 4096;
        assert!(sent < whole.len(), "the second read its whole frame");
    }
    assert!(sent <= ReadBudget::UNCHARGED, "read {sent}");
    // The first frame ends: the second may read again, to the end of its own.
    let first = &mut pairs[0];
    first
        .server
        .handle_bytes(first.now, &whole[whole.len() - 1..]);
    let second = &mut pairs[1];
    assert!(second.server.wants_read());
    second.server.handle_bytes(second.now, &whole[sent..]);
    assert!(second.server.wants_read());
    for p in &mut pairs {
        p.run();
        assert_eq!(p.take_calls().len(), 1, "the frame was whole");
    }
}

/// Defect 4: no idle deadline by default.
#[test]
fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let idle = ServerConfig::default().idle_timeout.unwrap();
    let mut p = Pair::default();
    p.advance(idle - SEC);
    assert!(!p.server.is_shutting_down());
    p.advance(2 * SEC);
    assert!(p.server.is_closed(), "{:?}", p.server.close_reason());
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::TimedOut(_))
    ));

    // A call in progress (a stream with nothing to say) is not idleness.
    let mut p = Pair::default();
    let id = start_stream(&mut p);
    p.advance(idle + SEC);
    assert!(!p.server.is_shutting_down());
    // Its end starts the idle clock (not the last input, long ago).
    p.complete(id, HandlerOutcome::StreamEnd);
    p.advance(SEC);
    assert!(!p.server.is_shutting_down());
    p.advance(idle);
    assert!(p.server.is_closed());
}

/// Defect 5: graceful shutdown never ended while a stream was open.
#[test]
fn shutdown_with_an_idle_stream_ends_at_the_drain_deadline() {
    let sc = ServerConfig {
        drain_timeout: 100 * MS,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    let id = start_stream(&mut p);
    p.server.start_shutdown(p.now);
    p.advance(99 * MS);
    assert!(!p.server.is_closed());
    p.advance(2 * MS);
    assert!(p.server.is_closed(), "{:?}", p.server.close_reason());
    assert_eq!(p.cancelled(), vec![id], "its handler is told to stop");
    assert_eq!(p.remote(id).code, ErrorCode::ShuttingDown);
}

/// A hostile server's pings cost the client a bounded number of bytes, not only of pongs.
#[test]
fn pongs_a_client_queues_are_bounded_by_bytes() {
    let wire = WireConfig::default();
    let now = std::time::Instant::now();
    let cc = ClientConfig::default();
    let mut client = ClientSession::new(cc, wire, now);
    let big = vec![1u8; 60 * 1024];
    for i in 0..8 {
        client.handle_bytes(now, &frame(Header::new(MessageKind::Ping, i), "", &big));
    }
    let mut out = BytesMut::new();
    while client.poll_transmit(&mut out) {}
    assert!(
        out.len() <= cc.max_pong_bytes + 64,
        "{} bytes of pongs queued for 8 pings of 60 KiB",
        out.len()
    );
    assert!(!client.is_closed());
}

/// A hostile server's stream items past the client's credit fail the call (bounded by the
/// client's window), and answers to calls never made are dropped.
#[test]
fn a_client_refuses_items_past_its_credit_and_unsolicited_answers() {
    let wire = WireConfig::default();
    let now = std::time::Instant::now();
    let cc = ClientConfig {
        stream_window: 4,
        ..ClientConfig::default()
    };
    let mut client = ClientSession::new(cc, wire, now);
    let id = client
        .start_call(
            now,
            "count",
            Payload::Bytes(Bytes::new()),
            CallOptions::unary(CODEC).with_kind(CallKind::ServerStreaming),
        )
        .unwrap();
    for _ in 0..10 {
        client.handle_bytes(
            now,
            &frame(Header::new(MessageKind::StreamItem, id), "", &[0; 100]),
        );
        client.handle_bytes(
            now,
            &frame(Header::new(MessageKind::Response, 999), "", &[0; 100]),
        );
    }
    let mut items = 0;
    let failed = loop {
        match client.next_item(id) {
            std::task::Poll::Ready(Some(Ok(_))) => items += 1,
            std::task::Poll::Ready(Some(Err(error))) => break error,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(items, 4);
    assert!(matches!(failed, CallError::Protocol(_)), "{failed:?}");
    assert!(!client.is_closed());
}
