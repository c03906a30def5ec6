//! A call whose future is dropped while its frame is only partly written (the peer is not
//! reading and the socket buffer is full) must not cut the frame: the write finishes in the
//! background and the connection stays usable for every other call.

use std::time::Duration;

use bytes::Bytes;
use xrpc::{MessageChannelAdapter, RpcClient, RpcServer, UnixConfig, UnixFrameTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_mid_write_keeps_the_connection() {
    let (c, s) = std::os::unix::net::UnixStream::pair().unwrap();
    for x in [&c, &s] {
        x.set_nonblocking(true).unwrap();
    }
    let c = tokio::net::UnixStream::from_std(c).unwrap();
    let client = RpcClient::new(MessageChannelAdapter::new(
        UnixFrameTransport::from_stream(c, UnixConfig::default(), "client").unwrap(),
    ));
    let _handle = client.start();

    // Nobody reads the server end yet: a 4 MiB request cannot be written at once.
    let big = Bytes::from(vec![7u8; 4 << 20]);
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        client.call_raw("len", big.clone()),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the call cannot finish while nobody reads"
    );

    // Now serve the other end: it must find whole frames (the big request, its cancel, and
    // the next call), so the next call is answered.
    let server = RpcServer::new();
    server.register("len", |b: Bytes| async move {
        Ok(Bytes::from((b.len() as u64).to_le_bytes().to_vec()))
    });
    let s = tokio::net::UnixStream::from_std(s).unwrap();
    let channel = MessageChannelAdapter::new(
        UnixFrameTransport::from_stream(s, UnixConfig::default(), "server").unwrap(),
    );
    tokio::spawn(async move { server.serve(channel).await });

    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_raw("len", Bytes::from_static(b"abc")),
    )
    .await
    .expect("the connection is still alive")
    .expect("the call succeeds");
    assert_eq!(&answer[..], &3u64.to_le_bytes());
    assert!(client.is_connected());

    // And a big one goes through too.
    let answer = client.call_raw("len", big).await.unwrap();
    assert_eq!(&answer[..], &((4u64 << 20).to_le_bytes()));
}
