//! The `tracing` feature with no subscriber: no trace context is made. (A process of its own:
//! once a subscriber anywhere in a process took interest in xrpc's spans, tracing no longer
//! tells a thread without one that they are off.)
#![cfg(feature = "tracing")]

use xrpc_async::testing::TestRuntime;
use xrpc_async::trace::{TRACEPARENT, TraceContext};
use xrpc_async::{
    CallContext, ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient, RpcServer,
};
use xrpc_proto::{BincodeCodec, ClientConfig, ServerConfig};

#[test]
fn with_no_subscriber_no_traceparent_is_made_and_a_current_one_is_passed_on() {
    let rt = TestRuntime::new();
    let server = RpcServer::with_runtime(BincodeCodec, ServerConfig::default(), rt.clone());
    server.register_typed_with_context("Calc.traceparent", |ctx: CallContext, (): ()| {
        let tp = ctx.metadata().get_str(TRACEPARENT).map(str::to_owned);
        async move { Ok(tp) }
    });
    let (a, b) = ChannelFrameTransport::create_pair("trace-off", ChannelConfig::default());
    rt.spawn_with_handle(async move { server.serve(MessageChannelAdapter::new(b)).await });
    let client = RpcClient::with_runtime(
        MessageChannelAdapter::new(a),
        ClientConfig::default(),
        BincodeCodec,
        rt.clone(),
    );
    let seen: Option<String> = rt.block_on(client.call("Calc.traceparent", &())).unwrap();
    assert_eq!(seen, None);
    // Inside a context of the application's, that one is passed on unchanged.
    let ctx = TraceContext::new_root();
    let seen: Option<String> = rt
        .block_on(ctx.scope(client.call("Calc.traceparent", &())))
        .unwrap();
    assert_eq!(seen, Some(ctx.to_string()));
}
