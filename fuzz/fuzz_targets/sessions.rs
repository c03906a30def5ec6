//! Peer bytes straight into both sessions, in chunks the input chooses: whatever a hostile peer
//! sends, a session never panics, its output stays decodable by the other end, and a closed
//! session stays closed. The first byte picks the chunk size; a server's routes serve every
//! call kind so that handlers' outcomes (taken at random from the input) are exercised too.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use xrpc_proto::{
    CallKind, ClientConfig, ClientSession, MethodTable, HandlerOutcome, Payload, ServerConfig,
    ServerSession, ServerSessionEvent, WireConfig,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let now = Instant::now();
    let wire = WireConfig::default().with_max_frame_size(64 * 1024);
    let mut routes = MethodTable::new();
    for (name, kind) in [
        ("u", CallKind::Unary),
        ("s", CallKind::ServerStreaming),
        ("c", CallKind::ClientStreaming),
        ("b", CallKind::Bidirectional),
    ] {
        routes.insert(name, kind, ());
    }
    let mut server = ServerSession::new(ServerConfig::default(), wire, 1, now);
    let mut client = ClientSession::new(ClientConfig::default(), wire, now);
    let mut out = BytesMut::new();
    for (i, piece) in input.chunks(chunk).enumerate() {
        let t = now + Duration::from_millis(i as u64);
        server.handle_bytes(t, piece);
        client.handle_bytes(t, piece);
        while let Some(ev) = server.poll_event(&routes) {
            if let ServerSessionEvent::Call { call, .. } = ev {
                let outcome = match piece.first().copied().unwrap_or(0) % 3 {
                    0 => HandlerOutcome::Response(Payload::Bytes(Bytes::from_static(b"ok"))),
                    1 => HandlerOutcome::StreamEnd,
                    _ => HandlerOutcome::Panic("fuzz".into()),
                };
                server.complete(t, call.id, outcome);
            }
        }
        while client.poll_wake().is_some() {}
        server.handle_timeout(t);
        client.handle_timeout(t);
        // What the server answers must be readable by a client.
        out.clear();
        while server.poll_transmit(&mut out) {}
        let mut reader = ClientSession::new(ClientConfig::default(), wire, t);
        reader.handle_bytes(t, &out);
        assert!(!reader.is_closed(), "{:?}", reader.close_reason());
        let closed = server.is_closed();
        server.handle_bytes(t, piece);
        assert!(!closed || server.is_closed(), "a closed session reopened");
    }
});
