//! A client that reads a server's refusal (an Error with request id 0 and code PeerRefused,
//! docs/PROTOCOL.md §5.11) fails every call with `PeerRefused`; another code with id 0 is no
//! refusal.

use std::time::Instant;

use bytes::Bytes;
use xrpc_proto::message::{ErrorCode, Header, MessageKind, RemoteError};
use xrpc_proto::peer::{PeerRefused, REFUSAL_ID};

#[test]
fn a_client_that_reads_a_refusal_fails_every_call_with_peer_refused() {
    use xrpc_proto::client::{CallError, CallOptions, ClientConfig, ClientConnection, ClientEvent};
    use xrpc_proto::packet::{Body, Packet};

    let now = Instant::now();
    let mut client = ClientConnection::<Bytes>::new(ClientConfig::default(), now);
    let opts = CallOptions::unary(1);
    let id = client
        .start_call(now, "m", Bytes::new(), opts.clone())
        .unwrap();
    let why = PeerRefused::NotListed { uid: 7, gid: 8 }.to_string();
    client.handle_packet(
        now,
        Packet::new(
            Header::new(MessageKind::Error, REFUSAL_ID),
            Body::Error(RemoteError::new(ErrorCode::PeerRefused, why.clone())),
        ),
    );
    match client.poll_event() {
        Some(ClientEvent::Failed { id: failed, error }) => {
            assert_eq!(failed, id);
            assert_eq!(error, CallError::PeerRefused(why.clone()));
        }
        other => panic!("expected the call to fail, got {other:?}"),
    }
    assert_eq!(
        client.start_call(now, "m", Bytes::new(), opts),
        Err(CallError::PeerRefused(why))
    );
}

#[test]
fn an_error_with_id_zero_of_another_code_is_not_a_refusal() {
    use xrpc_proto::client::{ClientConfig, ClientConnection};
    use xrpc_proto::packet::{Body, Packet};

    let now = Instant::now();
    let mut client = ClientConnection::<Bytes>::new(ClientConfig::default(), now);
    client.handle_packet(
        now,
        Packet::new(
            Header::new(MessageKind::Error, REFUSAL_ID),
            Body::Error(RemoteError::new(ErrorCode::Handler, "x")),
        ),
    );
    assert!(client.closed_error().is_none());
}
