//! A server answers a unary request in the request's codec when it is another built-in codec
//! it was built with (PROTOCOL.md, "Codecs"), and answers the built-in introspection methods.

use bytes::BytesMut;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use xrpc_proto::codec::CodecId;
use xrpc_proto::introspect::{MethodInfo, StatsReport};
use xrpc_proto::{BincodeCodec, Codec, CodecError, ErrorCode, JsonCodec, Signature};
use xrpc_tokio::{
    ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient, RpcError, RpcServer,
};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Add {
    a: i32,
    b: i32,
}

/// A client with codec `C`, connected in process to `server`.
fn connect<C: Codec>(
    server: &RpcServer,
    codec: C,
) -> RpcClient<MessageChannelAdapter<ChannelFrameTransport>, C> {
    let (a, b) = ChannelFrameTransport::create_pair("codecs", ChannelConfig::default());
    let server = server.clone();
    tokio::spawn(async move { server.serve(MessageChannelAdapter::new(b)).await });
    RpcClient::with_codec(MessageChannelAdapter::new(a), codec)
}

fn adder() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("add", |r: Add| async move { Ok(r.a + r.b) });
    server.set_signature("add", Signature::new("fn(Add) -> i32"));
    server
}

#[tokio::test]
async fn a_bincode_server_answers_a_json_request_in_json() {
    let server = adder();
    let json = connect(&server, JsonCodec);
    let v: serde_json::Value = json
        .call("add", &serde_json::json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!(5));
    // The Bincode client on the same server is answered in Bincode.
    let bin = connect(&server, BincodeCodec);
    let n: i32 = bin.call("add", &Add { a: 4, b: 5 }).await.unwrap();
    assert_eq!(n, 9);
}

/// A codec with an application-defined id the server does not have.
#[derive(Clone)]
struct Unknown;

impl Codec for Unknown {
    const ID: CodecId = 200;
    fn name(&self) -> &'static str {
        "unknown"
    }
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        BincodeCodec.encode_into(value, out)
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        BincodeCodec.decode(bytes)
    }
}

#[tokio::test]
async fn an_unknown_codec_is_refused_with_its_name() {
    let client = connect(&adder(), Unknown);
    let e = client
        .call::<_, i32>("add", &Add { a: 1, b: 1 })
        .await
        .unwrap_err();
    match &e {
        RpcError::ServerError {
            code: ErrorCode::Unsupported,
            message,
        } => assert!(
            message.contains("application-defined (200)") && message.contains("bincode (1)"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn introspection_lists_methods_and_counts_calls() {
    let server = adder();
    server.register_typed("fail", |(): ()| async move {
        Err::<(), _>(RpcError::server("no"))
    });
    let json = connect(&server, JsonCodec);
    for i in 0..10 {
        let _: i32 = json.call("add", &Add { a: i, b: 1 }).await.unwrap();
    }
    let _ = json.call::<_, ()>("fail", &()).await.unwrap_err();
    let methods: Vec<MethodInfo> = json.call("xrpc.methods", &()).await.unwrap();
    let names: Vec<_> = methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["add", "fail"]);
    assert_eq!(methods[0].signature.as_deref(), Some("fn(Add) -> i32"));
    assert_eq!(methods[0].kind, "unary");
    assert_eq!(server.methods(), ["add", "fail"]);

    let stats: StatsReport = json.call("xrpc.stats", &()).await.unwrap();
    assert_eq!(stats.connections, 1);
    let add = stats.methods.iter().find(|m| m.name == "add").unwrap();
    assert_eq!((add.calls, add.errors), (10, 0));
    assert!(add.bytes_in > 0 && add.bytes_out > 0);
    assert!(add.latency_us.p50 >= 1 && add.latency_us.p50 <= add.latency_us.max);
    let fail = stats.methods.iter().find(|m| m.name == "fail").unwrap();
    assert_eq!((fail.calls, fail.errors), (1, 1));
    assert_eq!(stats.errors, 1);
    // The introspection calls themselves are not counted.
    assert_eq!(stats.calls, 11);
    assert!(stats.methods.iter().all(|m| !m.name.starts_with("xrpc.")));

    // The off switch: the names are then unknown, like any other.
    server.disable_introspection();
    let e = json
        .call::<_, StatsReport>("xrpc.stats", &())
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::MethodNotFound(_)), "{e:?}");
}
