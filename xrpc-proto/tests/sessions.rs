//! The byte-level sessions wired back to back through an in-memory pipe that delivers bytes in
//! chunks of any size, with a fake clock (after quinn-proto's `Pair`): every rule of a
//! connection — framing, routing, admission, outcomes, deadlines, unsendable messages, backlog,
//! shutdown and closing — tested without IO. The clock's origin is the one clock read.

mod pair;

use std::task::Poll;
use std::time::{Duration, Instant};

use pair::{CODEC, MS, Pair, bytes};
use xrpc_proto::bytes::{Bytes, BytesMut};
use xrpc_proto::{
    CallError, CallKind, CallOptions, CallWake, ClientConfig, ClientSession, CloseReason,
    CompressionConfig, ErrorCode, HandlerOutcome, MethodTable, Payload, RemoteError, SendError,
    ServerConfig, ServerSession, ServerSessionEvent, WireConfig,
};

#[test]
fn unary_call_through_bytes_in_any_chunking() {
    for chunk in [1, 3, 7, 64, 4096] {
        let mut p = Pair::default();
        p.chunk = chunk;
        let id = p.call("add", b"1+2");
        let calls = p.take_calls();
        assert_eq!(calls, vec![(id, "add", Bytes::from_static(b"1+2"))]);
        assert!(p.complete(
            id,
            HandlerOutcome::Response(Payload::Bytes(Bytes::from_static(b"3")))
        ));
        match p.client_outcome(id) {
            Some(Ok(payload)) => assert_eq!(bytes(payload), b"3"),
            other => panic!("chunk {chunk}: {other:?}"),
        }
        assert_eq!(p.client.pending_calls(), 0);
        assert_eq!(p.server.active_calls(), 0);
    }
}

#[test]
fn routing_answers_unknown_methods_wrong_kinds_and_foreign_codecs() {
    let mut p = Pair::default();
    let unknown = p.call("kv.gett", b"");
    let e = p.remote(unknown);
    assert_eq!(e.code, ErrorCode::MethodNotFound);
    assert_eq!(e.message, "kv.gett", "the message is the method name");

    let wrong_kind = p.call("count", b"");
    let e = p.remote(wrong_kind);
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert_eq!(
        e.message,
        "method count is server-streaming, called as unary"
    );

    // An application-defined codec the server does not have is refused, naming both.
    let foreign = p.call_with("add", b"{}", CallOptions::unary(200));
    let e = p.remote(foreign);
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert_eq!(
        e.message,
        "method add was called with codec application-defined (200); this server speaks \
         bincode (1) and the built-in codecs it was built with"
    );
    assert!(p.take_calls().is_empty(), "no handler ran");
    // JSON is admitted (and answered in JSON) when this build has it.
    let json = p.call_with("add", b"{}", CallOptions::unary(2));
    if cfg!(feature = "codec-json") {
        assert_eq!(p.take_calls().len(), 1);
    } else {
        assert_eq!(p.remote(json).code, ErrorCode::Unsupported);
    }
}

#[test]
fn a_late_outcome_is_dropped_and_the_client_sees_the_deadline() {
    let mut p = Pair::default();
    let id = p.call_with("add", b"x", CallOptions::unary(CODEC).with_timeout(10 * MS));
    assert_eq!(p.take_calls().len(), 1);
    // The handler finishes after the deadline, before the server's timer fired.
    p.now += 11 * MS;
    assert!(!p.complete(id, HandlerOutcome::Response(Payload::Bytes(Bytes::new()))));
    // The server answered DeadlineExceeded: the client's Timeout, whichever timer fired first.
    assert_eq!(p.failed(id), CallError::Timeout);
    assert_eq!(p.cancelled(), vec![id], "the handler is told to stop");
}

#[test]
fn handler_errors_and_panics_reach_the_client() {
    let mut p = Pair::default();
    let a = p.call("add", b"");
    let b = p.call("add", b"");
    p.take_calls();
    p.complete(
        a,
        HandlerOutcome::Error(RemoteError::new(ErrorCode::Handler, "no such key")),
    );
    p.complete(b, HandlerOutcome::Panic("index out of bounds".into()));
    assert_eq!(p.remote(a).message, "no such key");
    let e = p.remote(b);
    assert_eq!(e.code, ErrorCode::Panic);
    assert_eq!(e.message, "the handler panicked: index out of bounds");
}

#[test]
fn garbage_from_the_client_is_answered_up_to_it_then_closes() {
    let mut p = Pair::default();
    let id = p.call("add", b"");
    p.take_calls();
    // Garbage with a valid length prefix: a malformed message.
    p.c2s
        .extend_from_slice(&[5, 0, 0, 0, b'n', b'o', b'p', b'e', b'!']);
    p.run();
    assert!(!p.server.wants_read(), "no more input is read");
    assert!(
        !p.server.is_closed(),
        "the call in progress may still be answered"
    );
    p.complete(
        id,
        HandlerOutcome::Response(Payload::Bytes(Bytes::from_static(b"ok"))),
    );
    assert!(matches!(p.client_outcome(id), Some(Ok(_))));
    assert!(p.server.is_closed());
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::Protocol(m)) if m.contains("malformed")
    ));
}

#[test]
fn an_oversized_length_prefix_is_skipped_without_allocating_and_timed_like_a_partial_frame() {
    let mut p = Pair::default();
    // A request that announces 4 GiB: answered at once (its head names it), then skipped as
    // it arrives — nothing is held, the connection reads on.
    let mut request = BytesMut::new();
    xrpc_proto::MessageEncoder::default()
        .encode(
            &xrpc_proto::Header::new(xrpc_proto::MessageKind::Request, 9).with_codec(CODEC),
            "add",
            &[0; 100_000],
            &mut request,
        )
        .unwrap();
    request[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    p.c2s.extend_from_slice(&request);
    p.run();
    let mut answer = BytesMut::new();
    while p.server.poll_transmit(&mut answer) {}
    assert!(p.take_calls().is_empty());
    assert!(p.server.wants_read());
    assert!(!p.server.is_shutting_down());
    assert!(p.server.read_buffer().capacity() < 1 << 20);
    // A peer that stops in the middle of it is closed by the frame deadline.
    p.advance(ServerConfig::default().frame_timeout.unwrap() + MS);
    assert!(p.server.is_closed());
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::TimedOut(m)) if m.contains("100023 bytes received")
    ));
}

#[test]
fn garbage_from_the_server_fails_every_call() {
    let mut p = Pair::default();
    let a = p.call("add", b"");
    let b = p.call("add", b"");
    p.client.handle_bytes(p.now, &[3, 0, 0, 0, 1, 2, 3]);
    p.run();
    assert!(p.client.is_closed());
    for id in [a, b] {
        assert!(
            matches!(p.failed(id), CallError::Disconnected(r) if r.contains("malformed")),
            "{:?}",
            p.failed(id)
        );
    }
    assert!(matches!(
        p.client.start_call(
            p.now,
            "add",
            Payload::Bytes(Bytes::new()),
            CallOptions::unary(CODEC)
        ),
        Err(CallError::Disconnected(_))
    ));
}

#[test]
fn the_server_closing_fails_every_call() {
    let mut p = Pair::default();
    let id = p.call("add", b"");
    p.client.handle_eof(p.now);
    assert!(p.client.is_closed());
    assert_eq!(
        p.client.take_response(id),
        Poll::Ready(Err(CallError::Disconnected(
            "the server closed the connection".into()
        )))
    );
}

#[test]
fn an_oversized_request_fails_only_its_call() {
    let wire = WireConfig::default().with_max_frame_size(1024);
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default(), wire);
    let big = Payload::Bytes(Bytes::from(vec![0u8; 2000]));
    assert!(matches!(
        p.client
            .start_call(p.now, "add", big, CallOptions::unary(CODEC)),
        Err(CallError::FrameTooLarge {
            size: 2019,
            max: 1024
        })
    ));
    let ok = p.call("add", b"small");
    assert_eq!(p.take_calls().len(), 1, "the connection goes on");
    p.complete(ok, HandlerOutcome::Response(Payload::Bytes(Bytes::new())));
    assert!(matches!(p.client_outcome(ok), Some(Ok(_))));

    // With compression the size is known only when encoding: the call fails then.
    let wire = wire.with_compression(CompressionConfig::lz4());
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default(), wire);
    let random: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let id = p
        .client
        .start_call(
            p.now,
            "add",
            Payload::Bytes(random.into()),
            CallOptions::unary(CODEC),
        )
        .unwrap();
    p.run();
    assert!(matches!(
        p.failed(id),
        CallError::FrameTooLarge { max: 1024, .. }
    ));
}

#[test]
fn an_oversized_answer_fails_its_call_and_stops_its_handler() {
    let wire = WireConfig::default().with_max_frame_size(1024);
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default(), wire);
    let id = p.call("add", b"");
    p.take_calls();
    p.complete(
        id,
        HandlerOutcome::Response(Payload::Bytes(Bytes::from(vec![1u8; 4096]))),
    );
    let e = p.remote(id);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(
        e.message.contains("exceeds the maximum frame size 1024"),
        "{e:?}"
    );
    assert!(!p.server.is_closed());
}

#[test]
fn a_value_cannot_cross_a_byte_transport() {
    let mut p = Pair::default();
    let id = p.call_value("add", 5);
    p.run();
    assert!(matches!(p.failed(id), CallError::Unsendable(_)));
    // The in-process transport hands packets over as they are.
    let id = p.call_value("add", 5);
    p.hand_packet(p.now);
    match p.server.poll_event(&p.routes) {
        Some(ServerSessionEvent::Call { call, .. }) => {
            assert_eq!(call.id, id);
            let Payload::Value(v) = call.payload else {
                panic!("bytes")
            };
            assert_eq!(*v.downcast::<u32>().unwrap(), 5);
        }
        other => panic!("{other:?}"),
    }
}

/// A request is an event for the server until routed, stamped with its receipt instant; with
/// none left, `has_event` says so without the method table.
#[test]
fn a_request_is_an_event_until_routed_and_carries_its_receipt() {
    let mut p = Pair::default();
    assert!(!p.server.has_event());
    let id = p.call_value("add", 1);
    let received = p.now + 5 * MS;
    p.hand_packet(received);
    assert!(p.server.has_event());
    match p.server.poll_event(&p.routes) {
        Some(ServerSessionEvent::Call { call, .. }) => {
            assert_eq!(call.id, id);
            assert_eq!(call.received, received);
        }
        other => panic!("{other:?}"),
    }
    assert!(!p.server.has_event());
}

#[test]
fn server_stream_with_credit() {
    let cc = ClientConfig {
        stream_window: 4,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, ServerConfig::default(), WireConfig::default());
    let id = p.call_with(
        "count",
        b"",
        CallOptions::unary(CODEC).with_kind(CallKind::ServerStreaming),
    );
    p.take_calls();
    let mut sent = 0;
    while p
        .server
        .send_item(id, Payload::Bytes(Bytes::from_static(b"i")))
        .is_ok()
    {
        sent += 1;
    }
    assert_eq!(sent, 4, "the client's window");
    p.run();
    // Taking the items grants the server credit again.
    assert_eq!(p.take_items(id), (4, None));
    p.run();
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerSessionEvent::Wake(CallWake::Send(i)) if *i == id))
    );
    assert_eq!(p.server.send_credit(id), Some(4));
    p.complete(id, HandlerOutcome::StreamEnd);
    assert_eq!(
        p.take_items(id),
        (0, Some(None)),
        "the stream ended normally"
    );
}

#[test]
fn notifications_count_against_the_concurrency_limit() {
    let sc = ServerConfig {
        max_concurrent_calls: 2,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    p.notify(2);
    assert_eq!(p.notification_tokens().len(), 2);
    // A call is refused while two notification handlers run.
    let id = p.call("add", b"");
    assert_eq!(p.remote(id).code, ErrorCode::ResourceExhausted);
    // A notification past the limit is dropped, and the connection is not read again until
    // one of its handlers ends: what follows waits in the transport.
    p.notify(3);
    assert_eq!(p.notification_tokens().len(), 2);
    assert_eq!(p.server.dropped_notifications(), 1);
    assert!(!p.server.wants_read(), "held while its handlers run");
    let id = p.call("add", b"");
    assert!(p.take_calls().is_empty(), "not read while held");
    // Each handler that ends lets it be read again (the next notifications take the slot or
    // are dropped, and hold it again), until the call is read and admitted.
    let mut ended = 0;
    while p.take_calls().is_empty() {
        let token = p.notification_tokens()[ended];
        ended += 1;
        p.server.notification_done(p.now, token);
        p.run();
        assert!(ended <= 4, "the call was never read");
    }
    assert!(p.client_outcome(id).is_none(), "admitted, not refused");
    assert_eq!(
        p.server.dropped_notifications() + p.notification_tokens().len() as u64,
        5
    );
}

#[test]
fn the_reader_stops_while_answers_pile_up() {
    let sc = ServerConfig {
        max_transmit_backlog: 4096,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    let id = p.call("add", b"");
    p.take_calls();
    assert!(p.server.wants_read());
    p.server.complete(
        p.now,
        id,
        HandlerOutcome::Response(Payload::Bytes(Bytes::from(vec![0; 8192]))),
    );
    assert!(
        !p.server.wants_read(),
        "8 KiB of answers wait, over the 4 KiB budget"
    );
    let mut out = BytesMut::new();
    assert!(p.server.poll_transmit(&mut out));
    assert!(p.server.wants_read(), "written: reading goes on");
}

#[test]
fn shutdown_drains_then_cancels_what_is_left_at_the_deadline() {
    let sc = ServerConfig {
        drain_timeout: 100 * MS,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    let unary = p.call("add", b"");
    let stream = p.call_with(
        "count",
        b"",
        CallOptions::unary(CODEC).with_kind(CallKind::ServerStreaming),
    );
    p.take_calls();
    p.server.start_shutdown(p.now);
    let refused = p.call("add", b"");
    assert_eq!(p.remote(refused).code, ErrorCode::ShuttingDown);
    p.complete(
        unary,
        HandlerOutcome::Response(Payload::Bytes(Bytes::new())),
    );
    assert!(!p.server.is_closed(), "the stream is still open");
    assert!(
        p.server
            .poll_timeout()
            .is_some_and(|t| t <= p.now + 100 * MS)
    );
    p.advance(100 * MS);
    assert!(
        p.cancelled().contains(&stream),
        "the handler is told to stop"
    );
    assert_eq!(p.remote(stream).code, ErrorCode::ShuttingDown);
    assert!(p.server.is_closed());
    assert_eq!(p.server.close_reason(), Some(&CloseReason::Shutdown));
}

#[test]
fn an_idle_shutdown_closes_once_written() {
    let mut p = Pair::default();
    p.server.start_shutdown(p.now);
    assert!(!p.server.wants_read());
    let mut out = BytesMut::new();
    assert!(!p.server.poll_transmit(&mut out));
    assert!(p.server.is_closed());
}

#[test]
fn a_client_that_never_reads_cannot_hold_the_close_open() {
    let mut p = Pair::default();
    let id = p.call("add", b"");
    p.take_calls();
    p.client.handle_eof(p.now); // not a real EOF of the server: only to stop the client reading
    p.server.handle_eof(p.now);
    p.server.complete(
        p.now,
        id,
        HandlerOutcome::Response(Payload::Bytes(Bytes::new())),
    );
    // The adapter holds the answer but cannot write it: the grace ends the connection.
    let mut out = BytesMut::new();
    assert!(p.server.poll_transmit(&mut out));
    assert!(!p.server.is_closed());
    let grace = p.server.poll_timeout().unwrap();
    assert_eq!(
        grace,
        p.now + ServerConfig::default().shutdown_flush_timeout
    );
    p.server.handle_timeout(grace);
    assert!(p.server.is_closed());
}

#[test]
fn a_closed_client_writes_what_it_holds_for_the_grace_then_stops() {
    let mut p = Pair::default();
    let id = p.call("add", b"");
    p.client
        .notify("log", Payload::Bytes(Bytes::from_static(b"bye")), CODEC)
        .unwrap();
    let mut out = BytesMut::new();
    assert!(
        p.client.poll_transmit(&mut out),
        "the notification is handed out"
    );
    p.client.close(p.now, "the client was dropped");
    assert_eq!(
        p.client.take_response(id),
        Poll::Ready(Err(CallError::Disconnected(
            "the client was dropped".into()
        )))
    );
    assert!(
        !p.client.is_closed(),
        "the adapter may still write what it holds"
    );
    let grace = p.client.poll_timeout().unwrap();
    assert_eq!(grace, p.now + ClientConfig::default().close_timeout);
    let mut more = BytesMut::new();
    assert!(!p.client.poll_transmit(&mut more));
    assert!(p.client.is_closed(), "written: closed at once");
}

#[test]
fn heartbeats_detect_a_dead_server() {
    let cc = ClientConfig {
        heartbeat_interval: Some(10 * MS),
        heartbeat_misses: 2,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, ServerConfig::default(), WireConfig::default());
    p.server_reads = false;
    let id = p.call("add", b"");
    for _ in 0..4 {
        p.advance(10 * MS);
    }
    assert!(p.client.is_closed());
    assert!(matches!(p.failed(id), CallError::Disconnected(r) if r.contains("heartbeats")));
}

#[test]
fn a_shutdown_whose_last_call_is_cancelled_completes() {
    let mut p = Pair::default();
    let id = p.call("add", b"");
    p.take_calls();
    p.server.start_shutdown(p.now);
    assert!(p.client.cancel(id));
    p.run();
    assert_eq!(p.cancelled(), vec![id]);
    assert!(p.server.is_closed(), "drained by the cancel");
}

mod hostile_bytes {
    //! The `sessions` fuzz target's property, as a proptest: arbitrary peer bytes, in arbitrary
    //! chunks, into both sessions.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn never_panic_and_answer_readably(
            input in proptest::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..64,
            // Valid frames with garbage inside are likelier to reach deep states.
            prefix in proptest::option::of(0u32..200),
        ) {
            let now = Instant::now();
            let wire = WireConfig::default().with_max_frame_size(64 * 1024);
            let mut routes = MethodTable::new();
            routes.insert("u", CallKind::Unary, ());
            routes.insert("s", CallKind::ServerStreaming, ());
            let mut server = ServerSession::new(ServerConfig::default(), wire, 1, now);
            let mut client = ClientSession::new(ClientConfig::default(), wire, now);
            let mut bytes = Vec::new();
            if let Some(len) = prefix {
                bytes.extend_from_slice(&len.to_le_bytes());
                bytes.extend_from_slice(b"XR\x01\x01\x00\x01\x00\x01");
            }
            bytes.extend_from_slice(&input);
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                let t = now + Duration::from_millis(i as u64);
                server.handle_bytes(t, piece);
                client.handle_bytes(t, piece);
                while let Some(ev) = server.poll_event(&routes) {
                    if let ServerSessionEvent::Call { call, .. } = ev {
                        server.complete(t, call.id, HandlerOutcome::Response(Payload::Bytes(Bytes::new())));
                    }
                }
                while client.poll_wake().is_some() {}
                let mut out = BytesMut::new();
                while server.poll_transmit(&mut out) {}
                let mut reader = ClientSession::new(ClientConfig::default(), wire, t);
                reader.handle_bytes(t, &out);
                prop_assert!(!reader.is_closed(), "{:?}", reader.close_reason());
            }
        }
    }
}

#[test]
fn an_error_text_too_long_for_a_frame_is_cut_not_lost() {
    let wire = WireConfig::default().with_max_frame_size(1024);
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default(), wire);
    let id = p.call("add", b"");
    p.take_calls();
    let long = "é".repeat(4000);
    p.complete(
        id,
        HandlerOutcome::Error(RemoteError::new(ErrorCode::Handler, long.clone())),
    );
    let e = p.remote(id);
    assert_eq!(e.code, ErrorCode::Handler);
    assert!(
        !e.message.is_empty() && e.message.len() < 1024,
        "{}",
        e.message.len()
    );
    assert!(long.starts_with(&e.message), "cut at a character boundary");
}

/// Starts a bidirectional call "chat" and routes it to the server.
fn chat(p: &mut Pair, timeout: Option<Duration>) -> u64 {
    let mut opts = CallOptions::unary(CODEC).with_kind(CallKind::Bidirectional);
    opts.timeout = timeout;
    let id = p.call_with("chat", b"", opts);
    assert_eq!(p.take_calls().len(), 1);
    id
}

fn item() -> Payload {
    Payload::Bytes(Bytes::from_static(b"i"))
}

/// The one answer to each act on a call that is over (`xrpc_proto::call`), the same on both
/// sides: the error that ended it, or `Finished` if it ended normally.
#[test]
fn an_act_on_a_call_that_is_over_gets_the_reason_it_ended() {
    // Cancelled by the client: both ends see `Cancelled`, for reads and for sends.
    let mut p = Pair::default();
    let id = chat(&mut p, None);
    p.client.cancel(id);
    p.run();
    let over = |r: Result<(), SendError>| match r {
        Err(SendError::Over(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        over(p.client.send_item(id, item(), CODEC)),
        CallError::Cancelled
    );
    assert_eq!(
        p.client.next_item(id),
        Poll::Ready(Some(Err(CallError::Cancelled)))
    );
    assert_eq!(over(p.server.send_item(id, item())), CallError::Cancelled);
    assert_eq!(
        p.server.next_item(id),
        Poll::Ready(Some(Err(CallError::Cancelled)))
    );

    // Past its deadline: `Timeout` on both ends.
    let mut p = Pair::default();
    let id = chat(&mut p, Some(50 * MS));
    p.advance(50 * MS);
    assert_eq!(
        over(p.client.send_item(id, item(), CODEC)),
        CallError::Timeout
    );
    assert_eq!(
        p.client.next_item(id),
        Poll::Ready(Some(Err(CallError::Timeout)))
    );
    assert_eq!(over(p.server.send_item(id, item())), CallError::Timeout);
    assert_eq!(
        p.server.next_item(id),
        Poll::Ready(Some(Err(CallError::Timeout)))
    );

    // The connection lost: `Disconnected` on both ends.
    let mut p = Pair::default();
    let id = chat(&mut p, None);
    p.client.handle_transport_error("reset");
    p.server.handle_transport_error("reset");
    p.run();
    assert!(matches!(
        over(p.client.send_item(id, item(), CODEC)),
        CallError::Disconnected(_)
    ));
    assert!(matches!(
        p.client.next_item(id),
        Poll::Ready(Some(Err(CallError::Disconnected(_))))
    ));
    assert!(matches!(
        over(p.server.send_item(id, item())),
        CallError::Disconnected(_)
    ));
    assert!(matches!(
        p.server.next_item(id),
        Poll::Ready(Some(Err(CallError::Disconnected(_))))
    ));

    // Ended normally (the handler completed): reads see the end, sends `Finished`.
    let mut p = Pair::default();
    let id = chat(&mut p, None);
    p.complete(id, HandlerOutcome::StreamEnd);
    assert_eq!(p.client.next_item(id), Poll::Ready(None));
    assert_eq!(
        over(p.client.send_item(id, item(), CODEC)),
        CallError::Finished
    );
    assert_eq!(p.server.next_item(id), Poll::Ready(None));
    assert_eq!(over(p.server.send_item(id, item())), CallError::Finished);

    // A finished sending half: `Finished`; the call itself goes on.
    let mut p = Pair::default();
    let id = chat(&mut p, None);
    assert!(p.client.finish_stream(id));
    assert_eq!(
        over(p.client.send_item(id, item(), CODEC)),
        CallError::Finished
    );
    assert!(p.server.send_item(id, item()).is_ok());
    p.run();
    assert_eq!(p.take_items(id), (1, None));

    // Released (or never started): `Finished` for every act.
    let mut p = Pair::default();
    let id = chat(&mut p, None);
    p.client.release(id);
    p.server.release(id);
    assert_eq!(
        over(p.client.send_item(id, item(), CODEC)),
        CallError::Finished
    );
    assert_eq!(
        p.client.next_item(id),
        Poll::Ready(Some(Err(CallError::Finished)))
    );
    assert_eq!(
        p.client.take_response(id),
        Poll::Ready(Err(CallError::Finished))
    );
    assert_eq!(over(p.server.send_item(id, item())), CallError::Finished);
    assert_eq!(
        p.server.next_item(id),
        Poll::Ready(Some(Err(CallError::Finished)))
    );
}

/// A call released while pending (its last handle dropped) is cancelled on the server.
#[test]
fn a_released_pending_call_is_cancelled_on_the_server() {
    let mut p = Pair::default();
    let id = chat(&mut p, None);
    p.client.release(id);
    p.run();
    assert_eq!(p.cancelled(), vec![id]);
    assert_eq!(p.client.pending_calls(), 0);
}
