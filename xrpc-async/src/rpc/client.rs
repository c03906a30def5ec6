//! [`RpcClient`]: calls over one message channel.
//!
//! The connection is a [`ClientSession`] driven by one driver future (see `driver`): a call
//! registers itself with the session and a waiter, and waits for its waiter to be filled —
//! polling the driver itself while no other call does (see `shared_driver`), else leaving it
//! to its task. A call never writes outside the driver, so dropping one never cuts a write.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::idmap::{IdMap, id_map};
use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, ClientConfig, ClientSession, Codec, Payload, PayloadOf,
    RpcError, SendError, decode_as, payload_bytes,
};

use super::driver::{ConnectionCore, Driven, drive};
use super::shared_driver::{Look, SharedDriver, Wait};
use super::stream::{CallRef, StreamCtl, StreamReceiver, StreamSender};
use super::wakers::{Wakers, leave_waker};
use crate::channel::MessageChannel;
use crate::runtime::Runtime;
#[cfg(feature = "tracing")]
use crate::transport::FrameTransport;

/// Client settings (the session's [`ClientConfig`]).
pub type RpcClientConfig = ClientConfig;

pub(crate) struct ClientState {
    session: ClientSession,
    wakers: IdMap<Wakers>,
}

impl Driven for ClientState {
    type Session = ClientSession;
    /// A waiting call to wake: routing leaves its wake-up for after the lock, which the call
    /// takes at once (woken under it, it would find the lock taken and sleep again).
    type Work = Waker;
    const WORK_MAKES_MORE: bool = false;

    fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    fn batches(&mut self) -> bool {
        self.session.pending_calls() > 1
    }

    fn dispatch(&mut self, work: &mut Vec<Waker>) {
        while let Some(wake) = self.session.poll_wake() {
            if let Some(w) = self.wakers.get_mut(&wake.id()) {
                w.take(wake, |w| work.push(w));
            }
        }
    }

    /// The session ended: the calls still wake (the end is their outcome).
    fn at_end(work: Waker) {
        work.wake();
    }
}

pub(crate) struct ClientCore<T, R: Runtime> {
    pub(crate) channel: Arc<T>,
    shared: Arc<ConnectionCore<ClientState>>,
    rt: R,
    started: AtomicBool,
    /// The connection's driver, polled by its task and by waiting calls.
    driver: Arc<SharedDriver>,
    /// The transport's kind, for the spans.
    #[cfg(feature = "tracing")]
    transport: &'static str,
}

impl<T: MessageChannel, R: Runtime> ClientCore<T, R> {
    /// Runs `f` on the state, then wakes the driver's task.
    fn with<O>(&self, f: impl FnOnce(&mut ClientState) -> O) -> O {
        let r = f(&mut self.shared.lock());
        self.driver.kick();
        r
    }

    /// Changes the state with `f` and routes what it decided: the calls to wake are woken
    /// once the lock is released.
    fn with_routed(&self, f: impl FnOnce(&mut ClientState)) {
        let mut wake = Vec::new();
        self.with(|st| {
            f(st);
            st.dispatch(&mut wake);
        });
        wake.into_iter().for_each(Waker::wake);
    }
}

impl<T: MessageChannel, R: Runtime> StreamCtl for ClientCore<T, R> {
    fn poll_item(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, RpcError>>> {
        let mut st = self.shared.lock();
        let ClientState { session, wakers } = &mut *st;
        let Poll::Ready(next) = session.next_item(id) else {
            leave_waker(&mut wakers.entry(id).or_default().recv, cx);
            return Poll::Pending;
        };
        // Taking an item may have granted the server credit.
        let credit = session.has_transmit();
        drop(st);
        if credit {
            self.driver.kick();
        }
        Poll::Ready(next.map(|r| r.map_err(RpcError::from)))
    }

    fn abandon(&self, id: u64) {
        // A client that stops receiving gives up the call.
        self.with_routed(|st| {
            st.session.cancel(id);
        });
    }

    fn poll_send(
        &self,
        id: u64,
        payload: &mut Option<Payload>,
        codec: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), RpcError>> {
        let mut st = self.shared.lock();
        let Some(p) = payload.take() else {
            return Poll::Ready(Ok(()));
        };
        match st.session.send_item(id, p, codec) {
            Ok(()) => {
                drop(st);
                self.driver.kick();
                Poll::Ready(Ok(()))
            }
            Err(SendError::NoCredit(p)) => {
                *payload = Some(p);
                st.wakers.entry(id).or_default().wait_send(cx);
                Poll::Pending
            }
            Err(SendError::Over(e)) => Poll::Ready(Err(e.into())),
        }
    }

    fn finish(&self, id: u64) {
        self.with(|st| st.session.finish_stream(id));
    }

    fn release(&self, id: u64) {
        self.driver.leave(id);
        self.with(|st| {
            st.wakers.remove(&id);
            st.session.release(id);
        });
    }
}

/// The driver of a client's connection; returned by [`RpcClient::start`].
///
/// Dropping it does not stop the client; the driver ends when the connection closes.
pub struct ClientHandle<R: Runtime> {
    driver: Arc<SharedDriver>,
    _runtime: PhantomData<R>,
}

impl<R: Runtime> std::fmt::Debug for ClientHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle").finish_non_exhaustive()
    }
}

impl<R: Runtime> ClientHandle<R> {
    /// Stops the client's driver now: every pending call fails with `Disconnected`.
    pub fn abort(&self) {
        self.driver.stop();
    }
}

/// Dropped with the last clone of an [`RpcClient`]: closes the session (pending calls fail;
/// what was already sent may finish for `close_timeout`), and the driver then closes the
/// connection.
struct Lifetime<T: MessageChannel, R: Runtime> {
    inner: Arc<ClientCore<T, R>>,
}

impl<T: MessageChannel, R: Runtime> Drop for Lifetime<T, R> {
    fn drop(&mut self) {
        self.inner.with_routed(|st| {
            st.session
                .close(self.inner.rt.now(), "the client was dropped");
        });
    }
}

/// An RPC client over a [`MessageChannel`], with codec `C`, on runtime `R` (adapter crates
/// name it with their runtime and Bincode as the default codec: `xrpc_tokio::RpcClient<T>`).
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # use xrpc_tokio::*;
/// # #[derive(Serialize, Deserialize)] struct AddRequest { a: i32, b: i32 }
/// # #[derive(Serialize, Deserialize)] struct AddResponse { result: i32 }
/// # async fn demo() -> Result<(), RpcError> {
/// let transport = TcpFrameTransport::connect("127.0.0.1:9000", TcpConfig::default()).await?;
/// let client = RpcClient::new(MessageChannelAdapter::new(transport));
/// let _handle = client.start();
/// let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 }).await?;
/// # Ok(()) }
/// ```
pub struct RpcClient<T: MessageChannel, C: Codec, R: Runtime> {
    inner: Arc<ClientCore<T, R>>,
    /// Shared by the clones of this client; the last one dropped closes the connection.
    life: Arc<Lifetime<T, R>>,
    codec: C,
    _codec: PhantomData<C>,
}

impl<T: MessageChannel, C: Codec, R: Runtime> Clone for RpcClient<T, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            life: self.life.clone(),
            codec: self.codec.clone(),
            _codec: PhantomData,
        }
    }
}

impl<T: MessageChannel, R: Runtime> RpcClient<T, BincodeCodec, R> {
    /// A client over `channel` with the default configuration (30 s call timeout).
    pub fn new(channel: T) -> Self {
        Self::with_config(channel, ClientConfig::default())
    }

    /// A client with an explicit configuration (timeouts, stream window, heartbeats).
    pub fn with_config(channel: T, config: ClientConfig) -> Self {
        Self::with_config_and_codec(channel, config, BincodeCodec)
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> RpcClient<T, C, R> {
    /// A client with another codec.
    pub fn with_codec(channel: T, codec: C) -> Self {
        Self::with_config_and_codec(channel, ClientConfig::default(), codec)
    }

    /// A client with an explicit configuration and codec.
    pub fn with_config_and_codec(channel: T, config: ClientConfig, codec: C) -> Self {
        Self::with_runtime(channel, config, codec, R::default())
    }

    /// A client on the runtime value `rt`: its driver, timers and clock are `rt`'s (a test
    /// passes a runtime whose clock it advances by hand).
    pub fn with_runtime(channel: T, config: ClientConfig, codec: C, rt: R) -> Self {
        let session = ClientSession::new(config, channel.wire_config(), rt.now());
        let inner = Arc::new(ClientCore {
            #[cfg(feature = "tracing")]
            transport: crate::trace::transport_kind(channel.transport().name()),
            channel: Arc::new(channel),
            shared: Arc::new(ConnectionCore::new(ClientState {
                session,
                wakers: id_map(),
            })),
            rt,
            started: AtomicBool::new(false),
            driver: Arc::new(SharedDriver::default()),
        });
        Self {
            life: Arc::new(Lifetime {
                inner: inner.clone(),
            }),
            inner,
            codec,
            _codec: PhantomData,
        }
    }

    /// The same client with another default timeout for its unary and client-streaming calls
    /// (the connection's: clones made before share it). The session applies it, as it applies
    /// [`ClientConfig::default_timeout`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.inner
            .shared
            .lock()
            .session
            .set_default_timeout(Some(timeout));
        self
    }

    /// Starts the connection's driver (calls start it on first use too).
    ///
    /// # Panics
    /// Where the runtime cannot spawn (tokio: outside a runtime); see
    /// [`try_start`](Self::try_start).
    pub fn start(&self) -> ClientHandle<R> {
        match self.try_start() {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts the driver, or fails where the runtime cannot spawn (tokio: outside a runtime).
    pub fn try_start(&self) -> Result<ClientHandle<R>, RpcError> {
        let rt = &self.inner.rt;
        rt.check().map_err(RpcError::ClientError)?;
        let handle = ClientHandle {
            driver: self.inner.driver.clone(),
            _runtime: PhantomData,
        };
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return Ok(handle);
        }
        let shared = self.inner.shared.clone();
        let channel = self.inner.channel.clone();
        let r = rt.clone();
        #[cfg(feature = "tracing")]
        crate::trace::connected("client", channel.transport().name());
        #[cfg(feature = "tracing")]
        let state = shared.clone();
        self.inner.driver.install(Box::pin(async move {
            drive(&r, shared, &*channel, |_, w: Waker| w.wake(), |_, _| {}).await;
            #[cfg(feature = "tracing")]
            {
                let st = state.lock();
                let reason = st.session.close_reason().unwrap_or("closed");
                crate::trace::disconnected("client", channel.transport().name(), &reason, false);
            }
        }));
        // The task drives whenever no waiting call does; it holds the driver, not the client.
        rt.spawn(self.inner.driver.clone().run());
        Ok(handle)
    }

    fn ensure_started(&self) -> Result<(), RpcError> {
        if !self.inner.started.load(Ordering::Acquire) {
            self.try_start()?;
        }
        Ok(())
    }

    /// The underlying channel.
    pub fn channel(&self) -> &T {
        &self.inner.channel
    }

    /// Whether the connection is still usable.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().session.is_open() && self.inner.channel.is_connected()
    }

    /// The transport's counters (frames and bytes sent and received), if it keeps any.
    pub fn stats(&self) -> Option<crate::transport::TransportStats> {
        self.inner.channel.stats()
    }

    /// Calls currently waiting for an answer.
    pub fn pending_calls(&self) -> usize {
        self.inner.shared.lock().session.pending_calls()
    }

    /// Closes the connection: every pending call fails with `Disconnected`.
    pub async fn close(&self) {
        self.inner.with_routed(|st| {
            st.session.close(self.inner.rt.now(), "client closed");
        });
        if !self.inner.started.load(Ordering::Acquire) {
            let _ = self.inner.channel.close().await;
        }
    }

    /// Starts a call with the session: its id, and whether it is the only call in flight (a
    /// unary call's waiter drives the connection then).
    fn begin(
        &self,
        method: &str,
        payload: Payload,
        opts: CallOptions,
    ) -> Result<(u64, bool), RpcError> {
        self.ensure_started()?;
        let kind = opts.kind;
        let (id, alone) = {
            let mut st = self.inner.shared.lock();
            let id = st
                .session
                .start_call(self.inner.rt.now(), method, payload, opts)?;
            (id, st.session.pending_calls() <= 1)
        };
        // A unary call's waiter drives the connection (or wakes whoever does) when polled.
        if kind != CallKind::Unary {
            self.inner.driver.kick();
        }
        Ok((id, alone))
    }

    /// A started streaming call `id`, as its handles share it.
    fn call_ref(&self, id: u64, method: &str) -> Arc<CallRef> {
        CallRef::new(
            self.inner.clone(),
            id,
            Bytes::copy_from_slice(method.as_bytes()),
        )
    }

    /// Waits for the outcome of unary call `id`, just started (`alone`: the only call in
    /// flight then); dropping the future cancels the call.
    async fn wait(&self, id: u64, alone: bool) -> Result<Payload, RpcError> {
        let guard = ReleaseOnDrop {
            inner: &*self.inner,
            id,
        };
        let inner = &*self.inner;
        // The first look of the first poll: a call just started has no outcome yet.
        let mut started = Some(alone);
        let res = std::future::poll_fn(|cx| {
            inner.driver.poll_wait(
                id,
                cx,
                |wait| {
                    if let (Wait::Withdraw, Some(alone)) = (&wait, started.take()) {
                        return Look::Pending { alone };
                    }
                    let mut st = inner.shared.lock();
                    match take_result(&mut st, id, wait) {
                        Poll::Ready(r) => Look::Ready(r),
                        Poll::Pending => Look::Pending {
                            alone: st.session.pending_calls() <= 1,
                        },
                    }
                },
                || inner.shared.output_queued(),
            )
        })
        .await;
        std::mem::forget(guard);
        res
    }

    async fn call_payload(
        &self,
        method: &str,
        payload: Payload,
        #[cfg_attr(not(feature = "tracing"), allow(unused_mut))] mut opts: CallOptions,
    ) -> Result<Payload, RpcError> {
        #[cfg(feature = "tracing")]
        {
            let (rt, transport) = (&self.inner.rt, self.inner.transport);
            let trace =
                crate::trace::ClientTrace::start(method, transport, &mut opts.metadata, || {
                    rt.now()
                });
            let call = std::pin::pin!(async {
                let (id, alone) = self.begin(method, payload, opts)?;
                trace.record_id(id);
                self.wait(id, alone).await
            });
            // No wrapper when the span is off.
            let res = if trace.is_on() {
                trace.instrument(call).await
            } else {
                call.await
            };
            trace.end(&res, || rt.now());
            res
        }
        #[cfg(not(feature = "tracing"))]
        {
            let (id, alone) = self.begin(method, payload, opts)?;
            self.wait(id, alone).await
        }
    }

    /// Sends raw payload bytes to `method` and waits for the raw response.
    pub async fn call_raw(&self, method: &str, payload: Bytes) -> Result<Bytes, RpcError> {
        self.call_raw_with_options(method, payload, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_raw`](Self::call_raw) with explicit options (the call is unary, its
    /// payload in the client's codec).
    pub async fn call_raw_with_options(
        &self,
        method: &str,
        payload: Bytes,
        mut opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        opts.codec = C::ID;
        opts.kind = CallKind::Unary;
        let resp = self
            .call_payload(method, Payload::Bytes(payload), opts)
            .await?;
        payload_bytes(resp)
    }

    /// Calls `method` with `request` and decodes the response.
    pub async fn call<Req, Resp>(&self, method: &str, request: &Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        self.call_with_options(method, request, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call`](Self::call) with a timeout for this call.
    pub async fn call_with_timeout<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        self.call_with_options(
            method,
            request,
            CallOptions::unary(C::ID).with_timeout(timeout),
        )
        .await
    }

    /// Like [`call`](Self::call) with explicit options: a timeout, metadata, the caller's
    /// signature for the method (a server with another one answers
    /// [`RpcError::TypeMismatch`]). The codec is the client's.
    pub async fn call_with_options<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        mut opts: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        opts.codec = C::ID;
        opts.kind = CallKind::Unary;
        let payload = Payload::Bytes(self.codec.encode(request)?);
        let resp = self.call_payload(method, payload, opts).await?;
        decode_as(&self.codec, PayloadOf::Response(method), resp)
    }

    /// Calls `method` with a request it takes by value. On an in-process channel
    /// (`ArcFrameTransport`) the request and the response move as
    /// values and are never serialized; elsewhere this is [`call`](Self::call).
    pub async fn call_typed<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned + 'static,
    {
        let payload = if self.inner.channel.carries_values() {
            Payload::Value(Box::new(request))
        } else {
            Payload::Bytes(self.codec.encode(&request)?)
        };
        let resp = self
            .call_payload(method, payload, CallOptions::unary(C::ID))
            .await?;
        decode_as(&self.codec, PayloadOf::Response(method), resp)
    }

    /// Sends a one-way notification. It has no answer: a server that cannot deliver it
    /// counts it in its stats (`RpcServer::stats`).
    pub async fn notify<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<(), RpcError> {
        self.notify_with_options(method, request, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`notify`](Self::notify) with options: a timeout for its handler, metadata, a
    /// signature (`kind` is ignored; the codec is the client's).
    pub async fn notify_with_options<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
        mut opts: CallOptions,
    ) -> Result<(), RpcError> {
        self.ensure_started()?;
        opts.codec = C::ID;
        let payload = Payload::Bytes(self.codec.encode(request)?);
        #[cfg(feature = "tracing")]
        let trace = crate::trace::ClientTrace::start(
            method,
            self.inner.transport,
            &mut opts.metadata,
            || self.inner.rt.now(),
        );
        let sent = self
            .inner
            .with(|st| st.session.notify_with_options(method, payload, opts))
            .map_err(RpcError::from);
        #[cfg(feature = "tracing")]
        trace.end(&sent, || self.inner.rt.now());
        sent
    }

    /// Starts a call whose client streams (its request is empty: the items carry the data).
    fn begin_client_stream<Item: Serialize>(
        &self,
        method: &str,
        kind: CallKind,
        mut opts: CallOptions,
    ) -> Result<(Arc<CallRef>, StreamSender<Item, C>), RpcError> {
        opts.codec = C::ID;
        opts.kind = kind;
        #[cfg(feature = "tracing")]
        crate::trace::propagate(&mut opts.metadata);
        let request = Payload::Bytes(Bytes::new());
        let call = self.call_ref(self.begin(method, request, opts)?.0, method);
        let sender = StreamSender::new(call.clone(), self.codec.clone(), true);
        Ok((call, sender))
    }

    /// Calls a server-streaming method: one request, a stream of items.
    pub async fn call_server_stream<Req, Item>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<StreamReceiver<Item, C>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned + 'static,
    {
        self.call_server_stream_with_options(method, request, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_server_stream`](Self::call_server_stream) with options (timeout of the
    /// whole stream, metadata, signature).
    pub async fn call_server_stream_with_options<Req, Item>(
        &self,
        method: &str,
        request: &Req,
        mut opts: CallOptions,
    ) -> Result<StreamReceiver<Item, C>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned + 'static,
    {
        let payload = Payload::Bytes(self.codec.encode(request)?);
        opts.codec = C::ID;
        opts.kind = CallKind::ServerStreaming;
        #[cfg(feature = "tracing")]
        crate::trace::propagate(&mut opts.metadata);
        let call = self.call_ref(self.begin(method, payload, opts)?.0, method);
        Ok(StreamReceiver::new(call, self.codec.clone()))
    }

    /// Calls a client-streaming method: send items with the [`StreamSender`], then
    /// [`finish`](StreamSender::finish) it and await the single response.
    pub async fn call_client_stream<Item, Resp>(
        &self,
        method: &str,
    ) -> Result<
        (
            StreamSender<Item, C>,
            impl Future<Output = Result<Resp, RpcError>> + use<T, C, R, Item, Resp>,
        ),
        RpcError,
    >
    where
        Item: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        self.call_client_stream_with_options(method, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_client_stream`](Self::call_client_stream) with options (timeout,
    /// metadata, signature).
    pub async fn call_client_stream_with_options<Item, Resp>(
        &self,
        method: &str,
        opts: CallOptions,
    ) -> Result<
        (
            StreamSender<Item, C>,
            impl Future<Output = Result<Resp, RpcError>> + use<T, C, R, Item, Resp>,
        ),
        RpcError,
    >
    where
        Item: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let (call, sender) = self.begin_client_stream(method, CallKind::ClientStreaming, opts)?;
        let inner = self.inner.clone();
        let codec = self.codec.clone();
        let method = method.to_owned();
        // Owned before the future first runs: dropping the response unpolled cancels the call.
        let guard = CancelOnDrop(Some(call));
        let response = async move {
            let id = guard.0.as_ref().map_or(0, |c| c.id());
            let res = std::future::poll_fn(|cx| {
                let mut st = inner.shared.lock();
                let ClientState { session, wakers } = &mut *st;
                let res = session.take_response(id);
                if res.is_pending() {
                    leave_waker(&mut wakers.entry(id).or_default().recv, cx);
                }
                res
            })
            .await;
            guard.disarm();
            decode_as(&codec, PayloadOf::Response(&method), res?)
        };
        Ok((sender, response))
    }

    /// Opens a bidirectional stream: items go out through the sender and come back through the
    /// receiver, concurrently.
    pub async fn call_bidi<Req, Resp>(
        &self,
        method: &str,
    ) -> Result<(StreamSender<Req, C>, StreamReceiver<Resp, C>), RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        self.call_bidi_with_options(method, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_bidi`](Self::call_bidi) with options (timeout, metadata, signature).
    pub async fn call_bidi_with_options<Req, Resp>(
        &self,
        method: &str,
        opts: CallOptions,
    ) -> Result<(StreamSender<Req, C>, StreamReceiver<Resp, C>), RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let (call, sender) = self.begin_client_stream(method, CallKind::Bidirectional, opts)?;
        let receiver = StreamReceiver::new(call, self.codec.clone());
        Ok((sender, receiver))
    }
}

/// The outcome of unary call `id`, if it has one (the session's answer); else `wait` says
/// what becomes of its waker.
fn take_result(
    st: &mut ClientState,
    id: u64,
    wait: Wait<'_, '_>,
) -> Poll<Result<Payload, RpcError>> {
    let ClientState { session, wakers } = st;
    match session.take_response(id) {
        Poll::Ready(r) => {
            wakers.remove(&id);
            Poll::Ready(r.map_err(RpcError::from))
        }
        Poll::Pending => {
            match wait {
                Wait::Leave(cx) => leave_waker(&mut wakers.entry(id).or_default().recv, cx),
                Wait::Withdraw => {
                    if let Some(w) = wakers.get_mut(&id) {
                        w.recv = None;
                    }
                }
            }
            Poll::Pending
        }
    }
}

/// Cancels a call (its response was not awaited to the end) when dropped armed.
struct CancelOnDrop(Option<Arc<CallRef>>);

impl CancelOnDrop {
    /// The call ended: nothing to cancel.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(call) = &self.0 {
            call.ctl().abandon(call.id());
        }
    }
}

/// Releases a unary call (cancelling it on the server if still pending) if the future waiting
/// for it is dropped.
struct ReleaseOnDrop<'a, T: MessageChannel, R: Runtime> {
    inner: &'a ClientCore<T, R>,
    id: u64,
}

impl<T: MessageChannel, R: Runtime> Drop for ReleaseOnDrop<'_, T, R> {
    fn drop(&mut self) {
        self.inner.release(self.id);
    }
}
