//! Choosing a payload codec: a built-in one (`JsonCodec`) and one written here.
//!
//! `RpcServer` and `RpcClient` are generic over a `Codec` (Bincode by default):
//! `RpcServer::with_codec(JsonCodec)` and `RpcClient::with_codec(channel, JsonCodec)` make both
//! ends speak JSON. A codec has a one-byte wire id that travels in every message header: a
//! server answers a unary call in any built-in codec it was built with (Bincode always, JSON
//! here), in the call's own codec, and refuses a codec it does not know, as the last part
//! shows.
//!
//! To plug in your own format, implement `xrpc::Codec` with an id of 128 or above (0 is raw
//! bytes, 1–5 are the built-in codecs, 6–127 are reserved): `PrettyJsonCodec` below writes
//! indented JSON, handy when you want to read payloads in a packet capture.
//!
//! `JsonCodec` sits behind the `codec-json` feature, so run it with:
//!
//! ```text
//! cargo run --example custom_codec --features codec-json
//! ```

use std::error::Error;

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use xrpc::proto::CodecId;
use xrpc::{
    Codec, CodecError, JsonCodec, MessageChannelAdapter, RpcClient, RpcError, RpcServer, TcpConfig,
    TcpFrameTransport, TcpFrameTransportListener,
};

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

/// A user-defined codec: JSON, pretty-printed.
///
/// `Codec` requires `Clone + Send + Sync + 'static`; a unit struct has them all.
#[derive(Debug, Clone, Copy, Default)]
struct PrettyJsonCodec;

impl Codec for PrettyJsonCodec {
    /// Application-defined codecs take ids 128–255.
    const ID: CodecId = 200;

    fn name(&self) -> &'static str {
        "pretty-json"
    }

    /// Appends the encoding to `out` (the message buffer: no intermediate copy).
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        serde_json::to_writer_pretty(out.writer(), value)
            .map_err(|e| CodecError::encode(self.name(), e))
    }

    /// Decodes one value spanning all of `bytes` (`from_slice` rejects trailing data).
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::decode(self.name(), e))
    }
}

/// The same `add` service, whatever the codec.
fn add_server<C: Codec>(codec: C) -> RpcServer<C> {
    let server = RpcServer::with_codec(codec);
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server
}

/// Serves `server` on an ephemeral TCP port; returns the address and the serving task.
async fn spawn<C: Codec>(
    server: RpcServer<C>,
) -> Result<
    (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<(), RpcError>>,
    ),
    BoxError,
> {
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).await?;
    let addr = listener.local_addr()?;
    Ok((
        addr,
        tokio::spawn(async move { server.serve_listener(listener).await }),
    ))
}

async fn channel(
    addr: std::net::SocketAddr,
) -> Result<MessageChannelAdapter<TcpFrameTransport>, BoxError> {
    let transport = TcpFrameTransport::connect(addr, TcpConfig::default()).await?;
    Ok(MessageChannelAdapter::new(transport))
}

/// Prints what a codec puts on the wire for `req`, then calls `add` with it.
async fn demo<C: Codec>(codec: C, addr: std::net::SocketAddr) -> Result<(), BoxError> {
    let req = AddRequest { a: 40, b: 2 };
    let wire = codec.encode(&req)?;
    println!(
        "[{} (id {})] request payload, {} bytes:",
        codec.name(),
        C::ID,
        wire.len()
    );
    for line in String::from_utf8_lossy(&wire).lines() {
        println!("    {line}");
    }
    let client = RpcClient::with_codec(channel(addr).await?, codec);
    let _handle = client.start();
    let resp: AddResponse = client.call("add", &req).await?;
    println!("  add(40, 2) = {}\n", resp.result);
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let json = add_server(JsonCodec);
    let pretty = add_server(PrettyJsonCodec);
    let (json_addr, json_task) = spawn(json.clone()).await?;
    let (pretty_addr, pretty_task) = spawn(pretty.clone()).await?;

    // The built-in JSON codec (feature `codec-json`).
    demo(JsonCodec, json_addr).await?;
    // The codec defined above.
    demo(PrettyJsonCodec, pretty_addr).await?;

    // The codec id travels in each request's header. A Bincode client (the default) calling
    // the JSON server is answered in Bincode: a built-in codec the server was built with.
    let bincode_client = RpcClient::new(channel(json_addr).await?);
    let _handle = bincode_client.start();
    let resp: AddResponse = bincode_client
        .call("add", &AddRequest { a: 1, b: 2 })
        .await?;
    println!(
        "[bincode client -> json server] answered in bincode: add(1, 2) = {}",
        resp.result
    );
    bincode_client.close().await;
    // The codec written here is not one the JSON server knows: refused before any payload is
    // decoded.
    let pretty_client = RpcClient::with_codec(channel(json_addr).await?, PrettyJsonCodec);
    let _handle = pretty_client.start();
    match pretty_client
        .call::<_, AddResponse>("add", &AddRequest { a: 1, b: 2 })
        .await
    {
        Err(RpcError::ServerError { code, message }) => {
            println!("[pretty-json client -> json server] refused: {code:?}: {message}");
        }
        other => return Err(format!("expected a codec refusal, got {other:?}").into()),
    }
    pretty_client.close().await;

    json.shutdown();
    pretty.shutdown();
    json_task.await??;
    pretty_task.await??;
    Ok(())
}
