//! The `tracing` feature: the spans of a call on both sides, recorded by a test subscriber,
//! and the trace context that joins them (a `traceparent` in the call's metadata).
#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use xrpc_async::testing::TestRuntime;
use xrpc_async::trace::{TRACEPARENT, TraceContext};
use xrpc_async::{
    CallContext, ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient, RpcServer,
};
use xrpc_proto::{BincodeCodec, CallOptions, ClientConfig, Metadata, ServerConfig};

type Chan = MessageChannelAdapter<ChannelFrameTransport>;
type Client = RpcClient<Chan, BincodeCodec, TestRuntime>;
type Server = RpcServer<BincodeCodec, TestRuntime>;

/// A span as recorded: its name and its fields' values as text.
#[derive(Debug, Clone)]
struct Recorded {
    name: &'static str,
    fields: HashMap<&'static str, String>,
}

impl Recorded {
    fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", String::as_str)
    }
}

/// Records every span (and every event's message) of the thread it is the default of.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<(Id, Recorded)>>>,
    events: Arc<Mutex<Vec<Recorded>>>,
}

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name();
        self.spans
            .lock()
            .unwrap()
            .push((id.clone(), Recorded { name, fields }));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, r)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut Fields(&mut r.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let name = event.metadata().name();
        self.events.lock().unwrap().push(Recorded { name, fields });
    }
}

impl Recorder {
    fn spans(&self, name: &str) -> Vec<Recorded> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(_, r)| r.name == name)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn span(&self, name: &str, method: &str) -> Recorded {
        let found: Vec<_> = self
            .spans(name)
            .into_iter()
            .filter(|r| r.get("method") == method)
            .collect();
        assert_eq!(found.len(), 1, "one {name} span of {method}: {found:?}");
        found[0].clone()
    }

    fn messages(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().map(|e| e.get("message").to_owned()).collect()
    }
}

/// A server with `Calc.add`, `Calc.twice` (which calls `Calc.add` through `inner`, a client of
/// the same server) and `Calc.traceparent` (answers the call's incoming `traceparent`).
fn setup(rt: &TestRuntime) -> (Client, Server) {
    let server: Server = RpcServer::with_runtime(BincodeCodec, ServerConfig::default(), rt.clone());
    server.register_typed("Calc.add", |(a, b): (i64, i64)| async move { Ok(a + b) });
    server.register_typed_with_context("Calc.traceparent", |ctx: CallContext, (): ()| {
        let tp = ctx.metadata().get_str(TRACEPARENT).map(str::to_owned);
        async move { Ok(tp) }
    });
    let inner = connect(rt, &server);
    server.register_typed("Calc.twice", move |a: i64| {
        let inner = inner.clone();
        async move { inner.call::<_, i64>("Calc.add", &(a, a)).await }
    });
    (connect(rt, &server), server)
}

fn connect(rt: &TestRuntime, server: &Server) -> Client {
    let (a, b) = ChannelFrameTransport::create_pair("trace", ChannelConfig::default());
    let srv = server.clone();
    rt.spawn_with_handle(async move { srv.serve(MessageChannelAdapter::new(b)).await });
    RpcClient::with_runtime(
        MessageChannelAdapter::new(a),
        ClientConfig::default(),
        BincodeCodec,
        rt.clone(),
    )
}

#[test]
fn the_server_span_joins_the_client_span_s_trace() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = TestRuntime::new();
    let (client, _server) = setup(&rt);
    let sum: i64 = rt.block_on(client.call("Calc.add", &(2i64, 3i64))).unwrap();
    assert_eq!(sum, 5);

    let c = recorder.span("xrpc.client", "Calc.add");
    let s = recorder.span("xrpc.server", "Calc.add");
    assert_eq!(c.get("trace_id").len(), 32, "{c:?}");
    assert_eq!(c.get("span_id").len(), 16, "{c:?}");
    assert_eq!(
        s.get("trace_id"),
        c.get("trace_id"),
        "one trace: {c:?} {s:?}"
    );
    assert_eq!(
        s.get("parent_id"),
        c.get("span_id"),
        "the client's span is the parent"
    );
    assert_ne!(s.get("span_id"), c.get("span_id"));
    assert_eq!(c.get("parent_id"), "", "the client's span starts the trace");
    for span in [&c, &s] {
        assert_eq!(span.get("service"), "Calc");
        assert_eq!(span.get("outcome"), "ok");
        assert_eq!(span.get("transport"), "in-process");
        assert!(span.get("duration_us").parse::<u64>().is_ok(), "{span:?}");
    }
    assert_eq!(c.get("id"), s.get("id"), "the same request id");
    // A connection was opened on either side.
    let messages = recorder.messages();
    assert!(
        messages.iter().any(|m| m == "xrpc connection opened"),
        "{messages:?}"
    );
}

#[test]
fn a_call_made_by_a_handler_continues_the_handler_s_trace() {
    let recorder = Recorder::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let rt = TestRuntime::new();
    let (client, _server) = setup(&rt);
    let four: i64 = rt.block_on(client.call("Calc.twice", &2i64)).unwrap();
    assert_eq!(four, 4);
    let outer = recorder.span("xrpc.server", "Calc.twice");
    let nested_client = recorder.span("xrpc.client", "Calc.add");
    let nested_server = recorder.span("xrpc.server", "Calc.add");
    let trace = recorder
        .span("xrpc.client", "Calc.twice")
        .get("trace_id")
        .to_owned();
    for span in [&outer, &nested_client, &nested_server] {
        assert_eq!(span.get("trace_id"), trace, "{span:?}");
    }
    assert_eq!(nested_client.get("parent_id"), outer.get("span_id"));
    assert_eq!(nested_server.get("parent_id"), nested_client.get("span_id"));
}

#[test]
fn the_caller_s_traceparent_is_the_parent_and_errors_are_outcomes() {
    let recorder = Recorder::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let rt = TestRuntime::new();
    let (client, _server) = setup(&rt);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut md = Metadata::new();
    md.insert(TRACEPARENT, parent).unwrap();
    let opts = CallOptions::default().with_metadata(md);
    let seen: Option<String> = rt
        .block_on(client.call_with_options("Calc.traceparent", &(), opts))
        .unwrap();
    let c = recorder.span("xrpc.client", "Calc.traceparent");
    assert_eq!(c.get("trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(c.get("parent_id"), "00f067aa0ba902b7");
    // The server got the client span's context, not the caller's.
    let seen = TraceContext::parse(&seen.unwrap()).unwrap();
    assert_eq!(format!("{:016x}", seen.span_id), c.get("span_id"));

    let err = rt.block_on(client.call::<_, ()>("Calc.nothing", &()));
    assert!(err.is_err());
    let c = recorder.span("xrpc.client", "Calc.nothing");
    assert_eq!(c.get("outcome"), "MethodNotFound", "{c:?}");
}

#[test]
fn an_undelivered_notification_is_a_warning_naming_its_method() {
    let recorder = Recorder::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let rt = TestRuntime::new();
    let (client, _server) = setup(&rt);
    rt.block_on(client.notify("Calc.nothing", &())).unwrap();
    // Answered after the notification was routed (one connection keeps the order).
    let _: i64 = rt.block_on(client.call("Calc.add", &(1i64, 1i64))).unwrap();
    let events = recorder.events.lock().unwrap();
    let warned: Vec<_> = events
        .iter()
        .filter(|e| e.get("message") == "xrpc notification not delivered")
        .collect();
    assert_eq!(warned.len(), 1, "{events:?}");
    assert_eq!(warned[0].get("method"), "Calc.nothing");
    assert_eq!(warned[0].get("reason"), "UnknownMethod");
    // The notification's client span.
    let n = recorder.span("xrpc.client", "Calc.nothing");
    assert_eq!(n.get("outcome"), "ok", "sent: {n:?}");
}
