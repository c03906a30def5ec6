//! Error texts name what failed — the method, the address, the service — once, in words.

use xrpc::{
    CallOptions, ChannelConfig, ChannelFrameTransport, ErrorCode, MessageChannelAdapter, RpcClient,
    RpcError, RpcServer, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, Signature, TcpConfig, TcpFrameTransportListener,
    UnixConfig, UnixFrameTransportListener,
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

/// Listening as a shared-memory service that is already served says "bind" and names the
/// service (it was `connection failed: Address already in use (os error 98)`).
#[tokio::test]
async fn a_taken_shared_memory_service_is_named() {
    let service = unique_name("taken");
    let _first =
        SharedMemoryFrameTransportListener::bind(&service, SharedMemoryConfig::default()).unwrap();
    let Err(err) =
        SharedMemoryFrameTransportListener::bind(&service, SharedMemoryConfig::default())
    else {
        panic!("bound {service:?} twice");
    };
    let err = err.to_string();
    assert!(err.contains("bind"), "{err}");
    assert!(err.contains(&format!("{service:?}")), "{err}");
    assert!(err.contains("in use"), "{err}");
    let Err(err) = xrpc_blocking::SharedMemoryFrameTransportListener::bind(
        &service,
        SharedMemoryConfig::default(),
    ) else {
        panic!("bound {service:?} twice");
    };
    assert!(err.to_string().contains(&service), "{err}");
}

/// Binding a Unix socket path that cannot be bound says "bind" and names the path.
#[tokio::test]
async fn an_unbindable_unix_path_is_named() {
    // Under a regular file: not a directory, and none can be made there (a missing directory
    // would be created, mode 0700).
    let file = std::env::temp_dir().join(unique_name("not-a-dir"));
    std::fs::write(&file, b"").unwrap();
    let path = file.join("x.sock");
    let Err(err) = UnixFrameTransportListener::bind(&path, UnixConfig::default()).await else {
        panic!("bound {}", path.display());
    };
    let err = err.to_string();
    let _ = std::fs::remove_file(&file);
    assert!(err.contains("bind"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

/// A request that cannot be decoded as the handler's type names the method and the type, on
/// the server (answered as BadRequest), and a response that cannot be decoded names them on
/// the client.
#[tokio::test]
async fn decode_errors_name_the_method_and_the_type() {
    let (client, server, serving) = connected();
    server.register_typed("kv.get", |req: GetRequest| async move { Ok(req.key.len()) });
    let err = client.call::<_, usize>("kv.get", &42u8).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot decode the request of `kv.get` as `error_texts::GetRequest`"),
        "{text}"
    );
    assert!(
        matches!(
            &err,
            RpcError::ServerError {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{err:?}"
    );
    // The response: a `usize` read as a `String`.
    let err = client
        .call::<_, String>("kv.get", &GetRequest { key: "k".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Decode { ty, .. } if *ty == "alloc::string::String"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot decode the response of `kv.get` as `alloc::string::String`: "),
        "{err}"
    );
    // A stream item: a `u8` of 5 read as a `bool`.
    server.register_stream(
        "kv.scan",
        |_: (), tx: xrpc::ServerStreamSender<u8>| async move { tx.send(&5).await },
    );
    let rx = client
        .call_server_stream::<_, bool>("kv.scan", &())
        .await
        .unwrap();
    let err = rx.collect().await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot decode the stream item of `kv.scan` as `bool`: "),
        "{err}"
    );
    server.shutdown();
    serving.await.unwrap().unwrap();
}

/// A client and a server that disagree on a method's types (as generated code would declare
/// them: `with_signature`, `set_signature`) fail the call with an error naming the method and
/// both types; the handler does not run. Without a signature on either side, nothing is checked.
#[tokio::test]
async fn a_type_mismatch_names_the_method_and_both_types() {
    let (client, server, serving) = connected();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = ran.clone();
    server.register_typed("kv.get", move |req: GetRequest| {
        r2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok(req.key) }
    });
    const SERVER: Signature = Signature::new("fn(kv::GetRequest) -> kv::GetResponse");
    const CLIENT: Signature = Signature::new("fn(String) -> kv::GetResponse");
    server.set_signature("kv.get", SERVER);
    let err = client
        .call_with_options::<_, String>(
            "kv.get",
            &"k".to_string(),
            CallOptions::default().with_signature(CLIENT),
        )
        .await
        .unwrap_err();
    match &err {
        RpcError::TypeMismatch {
            method,
            client,
            server,
        } => {
            assert_eq!(method, "kv.get");
            assert_eq!(client, CLIENT.text);
            assert_eq!(server, SERVER.text);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "type mismatch calling `kv.get`: the client has `fn(String) -> kv::GetResponse`, \
         the server `fn(kv::GetRequest) -> kv::GetResponse`"
    );
    // The same signature, or none, is served.
    let key: String = client
        .call_with_options(
            "kv.get",
            &GetRequest { key: "k".into() },
            CallOptions::default().with_signature(SERVER),
        )
        .await
        .unwrap();
    assert_eq!(key, "k");
    let key: String = client
        .call("kv.get", &GetRequest { key: "j".into() })
        .await
        .unwrap();
    assert_eq!(key, "j");
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A streaming call with the wrong signature fails the same way.
    server.register_stream(
        "kv.scan",
        |_: (), _tx: xrpc::ServerStreamSender<u8>| async { Ok(()) },
    );
    server.set_signature("kv.scan", SERVER);
    let rx = client
        .call_server_stream_with_options::<_, u8>(
            "kv.scan",
            &(),
            CallOptions::default().with_signature(CLIENT),
        )
        .await
        .unwrap();
    let err = rx.collect().await.unwrap_err();
    assert!(matches!(&err, RpcError::TypeMismatch { .. }), "{err:?}");
    server.shutdown();
    serving.await.unwrap().unwrap();
}

#[derive(serde::Serialize, serde::Deserialize)]
struct GetRequest {
    key: String,
}

/// A client and a server joined by the in-process channel, the server served on a task.
fn connected() -> (
    RpcClient<MessageChannelAdapter<ChannelFrameTransport>>,
    RpcServer,
    tokio::task::JoinHandle<Result<(), RpcError>>,
) {
    let (c, s) = ChannelFrameTransport::create_pair("errors", ChannelConfig::default());
    let server = RpcServer::new();
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve(MessageChannelAdapter::new(s)).await }
    });
    (
        RpcClient::new(MessageChannelAdapter::new(c)),
        server,
        serving,
    )
}

/// Metadata over the client's own limits fails the call at once, naming the limit; nothing is
/// sent.
#[tokio::test]
async fn metadata_over_the_clients_limit_names_it() {
    let (c, _s) = ChannelFrameTransport::create_pair("errors", ChannelConfig::default());
    let config = xrpc::ClientConfig {
        max_metadata_entries: 1,
        ..xrpc::ClientConfig::default()
    };
    let client = RpcClient::with_config(MessageChannelAdapter::new(c), config);
    let mut md = xrpc::Metadata::new();
    md.insert("a", "1").unwrap().insert("b", "2").unwrap();
    let err = client
        .call_with_options::<_, ()>("kv.get", &(), CallOptions::default().with_metadata(md))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RpcError::Metadata(xrpc::MetadataError::TooManyEntries { count: 2, max: 1 })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "metadata of 2 entries exceeds max_metadata_entries 1"
    );
}
