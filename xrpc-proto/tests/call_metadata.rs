//! Call metadata, signatures and undelivered notifications, through the byte-level sessions
//! (PROTOCOL.md §2.5, §5.8, §5.9): what reaches a handler, what the limits refuse, what a
//! signature mismatch answers, and what the server counts.

mod pair;

use pair::{CODEC, Pair};
use xrpc_proto::bytes::Bytes;
use xrpc_proto::{
    CallError, CallKind, CallOptions, ClientConfig, CompressionConfig, ErrorCode, Metadata,
    MetadataError, NotificationDrop, Payload, RemoteError, ServerConfig, ServerSessionEvent,
    Signature, WireConfig,
};

fn metadata(entries: &[(&str, &str)]) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in entries {
        md.insert(k, v).unwrap();
    }
    md
}

/// `n` entries of `size`-byte values.
fn big_metadata(n: usize, size: usize) -> Metadata {
    let mut md = Metadata::new();
    for i in 0..n {
        md.insert(&format!("k{i}"), vec![b'v'; size]).unwrap();
    }
    md
}

fn notify_with(p: &mut Pair, method: &str, opts: CallOptions) {
    p.client
        .notify_with_options(method, Payload::Bytes(Bytes::from_static(b"n")), opts)
        .unwrap();
    p.run();
}

#[test]
fn metadata_reaches_calls_and_notifications() {
    let mut p = Pair::default();
    let md = metadata(&[("tenant", "acme"), ("traceparent", "00-abc-01")]);
    let id = p.call_with(
        "add",
        b"x",
        CallOptions::unary(CODEC).with_metadata(md.clone()),
    );
    notify_with(
        &mut p,
        "log",
        CallOptions::unary(CODEC).with_metadata(md.clone()),
    );
    let plain = p.call("add", b"y");
    let mut seen = Vec::new();
    for ev in &p.server_events {
        match ev {
            ServerSessionEvent::Call { call, .. } => seen.push((call.id, call.metadata.clone())),
            ServerSessionEvent::Notification { metadata, .. } => seen.push((0, metadata.clone())),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        vec![(id, md.clone()), (0, md), (plain, Metadata::new())]
    );
}

#[test]
fn the_client_refuses_metadata_over_its_limits() {
    let cc = ClientConfig {
        max_metadata_bytes: 100,
        max_metadata_entries: 2,
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cc, ServerConfig::default(), WireConfig::default());
    let payload = || Payload::Bytes(Bytes::new());
    let err = p
        .client
        .start_call(
            p.now,
            "add",
            payload(),
            CallOptions::unary(CODEC).with_metadata(big_metadata(1, 200)),
        )
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Metadata(MetadataError::TooManyBytes {
            size: 205,
            max: 100
        })
    );
    assert_eq!(
        err.to_string(),
        "metadata of 205 bytes exceeds max_metadata_bytes 100"
    );
    let err = p
        .client
        .notify_with_options(
            "log",
            payload(),
            CallOptions::unary(CODEC).with_metadata(big_metadata(3, 1)),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "metadata of 3 entries exceeds max_metadata_entries 2"
    );
    p.run();
    assert!(p.server_events.is_empty(), "nothing was sent");
    assert_eq!(p.client.pending_calls(), 0);
}

#[test]
fn the_server_refuses_a_request_over_its_limits_and_goes_on() {
    let sc = ServerConfig {
        max_metadata_bytes: 100,
        max_metadata_entries: 2,
        ..ServerConfig::default()
    };
    // The client allows more than the server.
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    let opts = |md| CallOptions::unary(CODEC).with_metadata(md);
    let bytes = p.call_with("add", b"", opts(big_metadata(1, 200)));
    let entries = p.call_with("add", b"", opts(big_metadata(3, 1)));
    let e = p.remote(bytes);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert_eq!(
        e.message,
        "metadata of 205 bytes exceeds max_metadata_bytes 100"
    );
    let e = p.remote(entries);
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert_eq!(
        e.message,
        "metadata of 3 entries exceeds max_metadata_entries 2"
    );
    assert!(p.take_calls().is_empty(), "no handler ran");
    // A notification over the limit is dropped and counted.
    notify_with(&mut p, "log", opts(big_metadata(1, 200)));
    assert!(p.notification_tokens().is_empty());
    assert_eq!(p.counters.snapshot().notifications.metadata_over_limit, 1);
    // The connection goes on: a call within the limits is served.
    let ok = p.call_with("add", b"", opts(big_metadata(2, 10)));
    assert_eq!(p.take_calls().len(), 1);
    assert!(!p.server.is_closed());
    let _ = ok;
}

#[test]
fn a_signature_mismatch_is_refused_with_the_servers_signature() {
    let mut p = Pair::default();
    let server = Signature::new("fn(kv::GetRequest) -> kv::GetResponse");
    let client = Signature::new("fn(String) -> kv::GetResponse");
    p.routes.set_signature("add", server);
    let with = |s| CallOptions::unary(CODEC).with_signature(s);

    let mismatch = p.call_with("add", b"", with(client));
    // The server answers TypeMismatch with its text; the client's core names both.
    assert_eq!(
        p.failed(mismatch),
        CallError::TypeMismatch {
            method: "add".into(),
            client: client.text.into(),
            server: server.text.into(),
        }
    );
    assert!(p.take_calls().is_empty(), "the handler did not run");

    // The same signature, or none on the client's side, is served.
    let same = p.call_with("add", b"", with(server));
    let none = p.call("add", b"");
    let ids: Vec<u64> = p.take_calls().iter().map(|c| c.0).collect();
    assert_eq!(ids, vec![same, none]);

    // No signature on the server's side: no check.
    let unchecked = p.call_with(
        "count",
        b"",
        with(client).with_kind(CallKind::ServerStreaming),
    );
    assert_eq!(p.take_calls().len(), 1, "{unchecked}");

    // A notification with the wrong signature is dropped and counted.
    notify_with(&mut p, "add", with(client));
    assert!(p.notification_tokens().is_empty());
    assert_eq!(p.counters.snapshot().notifications.type_mismatch, 1);
}

#[test]
fn undelivered_notifications_are_counted_by_reason() {
    let mut p = Pair::default();
    let opts = CallOptions::unary(CODEC);
    notify_with(&mut p, "nope", opts.clone());
    notify_with(&mut p, "count", opts.clone());
    notify_with(&mut p, "chat", opts.clone());
    notify_with(&mut p, "log", CallOptions::unary(2)); // JSON: not this server's codec
    let stats = p.counters.snapshot().notifications;
    assert_eq!(stats.unknown_method, 1);
    assert_eq!(stats.wrong_kind, 2);
    assert_eq!(stats.unsupported, 1);
    assert_eq!(stats.total(), 4);
    assert!(p.notification_tokens().is_empty(), "none was delivered");

    // Delivered, then its handler fails: a payload it cannot decode, or another error.
    notify_with(&mut p, "log", opts.clone());
    notify_with(&mut p, "log", opts);
    let tokens = p.notification_tokens();
    assert_eq!(tokens.len(), 2);
    let now = p.now;
    let bad = RemoteError::new(ErrorCode::BadRequest, "cannot decode");
    p.server.notification_failed(now, tokens[0], b"log", &bad);
    let failed = RemoteError::new(ErrorCode::Handler, "no");
    p.server
        .notification_failed(now, tokens[1], b"log", &failed);
    let stats = p.counters.snapshot().notifications;
    assert_eq!(stats.get(NotificationDrop::Undecodable), 1);
    assert_eq!(stats.get(NotificationDrop::HandlerFailed), 1);
    assert_eq!(stats.total(), 6);
    assert_eq!(p.server.running_notifications(), 0);
}

#[test]
fn notifications_dropped_for_want_of_a_handler_slot_are_counted() {
    let sc = ServerConfig {
        max_concurrent_calls: 1,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), sc, WireConfig::default());
    p.notify(2);
    assert_eq!(p.notification_tokens().len(), 1);
    assert_eq!(p.counters.snapshot().notifications.no_handler_slot, 1);
    assert_eq!(p.server.dropped_notifications(), 1);
}

#[test]
fn a_notification_refused_undecoded_is_counted() {
    let sc = ServerConfig {
        accept_compressed: false,
        ..ServerConfig::default()
    };
    let wire = WireConfig::default().with_compression(CompressionConfig::lz4());
    let mut p = Pair::new(ClientConfig::default(), sc, wire);
    p.client
        .notify(
            "log",
            Payload::Bytes(Bytes::from(vec![0u8; 64 * 1024])),
            CODEC,
        )
        .unwrap();
    p.run();
    assert!(p.notification_tokens().is_empty());
    assert_eq!(p.counters.snapshot().notifications.refused, 1);
}
