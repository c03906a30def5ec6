//! Error texts name what failed — the method, the address, the service — once, in words.

use xrpc::{
    ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient, RpcError, RpcServer,
    SharedMemoryConfig, SharedMemoryFrameTransport, TcpConfig, TcpFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

#[tokio::test]
async fn an_unknown_method_is_named_once() {
    let (c, s) = ChannelFrameTransport::create_pair("errors", ChannelConfig::default());
    let server = RpcServer::new();
    server.register_typed("kv.get", |key: String| async move { Ok(key) });
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve(MessageChannelAdapter::new(s)).await }
    });
    let client = RpcClient::new(MessageChannelAdapter::new(c));
    let err = client
        .call::<_, String>("kv.gett", &"k".to_string())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::MethodNotFound(m) if m == "kv.gett"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "method not found: kv.gett");
    server.shutdown();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_taken_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = TcpFrameTransportListener::bind(addr, TcpConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("in use"), "{err}");
}

/// Connecting to a service nobody serves names it: `connection failed: no server for service
/// "<name>"` (it was `Connection refused (os error 111)`).
#[tokio::test]
async fn a_missing_shared_memory_service_is_named() {
    let service = unique_name("nobody-serves-this");
    let Err(err) =
        SharedMemoryFrameTransport::connect(&service, SharedMemoryConfig::default()).await
    else {
        panic!("connected to {service:?}, which nobody serves");
    };
    let err = err.to_string();
    assert!(err.contains(&service), "{err}");
    assert!(err.contains("no server for service"), "{err}");
    // The blocking constructor of the original API says the same.
    let Err(err) = SharedMemoryFrameTransport::connect_client(&service) else {
        panic!("connected to {service:?}, which nobody serves");
    };
    assert!(err.to_string().contains(&service), "{err}");
}
