//! [`RpcClient`]: calls over one message channel.
//!
//! The connection is a [`ClientSession`] driven by one driver future (see `driver`): a call
//! registers itself with the session and a waiter, and waits for its waiter to be filled —
//! polling the driver itself while no other call does (see `shared_driver`), else leaving it
//! to its task. A call never writes outside the driver, so dropping one never cuts a write.

use std::collections::VecDeque;
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
    BincodeCodec, CallError, CallKind, CallOptions, ClientConfig, ClientEvent, ClientSession,
    Codec, Payload, RpcError, StreamSendError, decode_payload, payload_bytes,
};

use super::driver::{Driven, Shared, drive};
use super::shared_driver::SharedDriver;
use super::stream::{Refused, StreamCtl, StreamReceiver, StreamSender};
use crate::channel::MessageChannel;
use crate::runtime::Runtime;

/// Client settings (the session's [`ClientConfig`]).
pub type RpcClientConfig = ClientConfig;

/// What a call waits for.
enum Waiter {
    Unary {
        result: Option<Result<Payload, CallError>>,
        waker: Option<Waker>,
    },
    Stream(StreamWaiter),
}

/// The client's side of a streaming call.
#[derive(Default)]
struct StreamWaiter {
    /// Items of the server's stream not yet taken (bounded by the credit window).
    items: VecDeque<Payload>,
    /// How the call ended: `Ok(Some)`, a client stream's response; `Ok(None)`, the server's
    /// stream ended; `Err`, a failure.
    end: Option<Result<Option<Payload>, CallError>>,
    recv: Option<Waker>,
    /// Senders waiting for credit (a `StreamSender` may be shared by several tasks).
    send: Vec<Waker>,
    response: Option<Waker>,
}

impl StreamWaiter {
    fn wake_all(&mut self) {
        for w in [self.recv.take(), self.response.take()]
            .into_iter()
            .flatten()
            .chain(self.send.drain(..))
        {
            w.wake();
        }
    }
}

pub(crate) struct ClientState {
    session: ClientSession,
    waiters: IdMap<Waiter>,
}

impl ClientState {
    fn finish(&mut self, id: u64, res: Result<Option<Payload>, CallError>) {
        match self.waiters.get_mut(&id) {
            Some(Waiter::Unary { result, waker }) => {
                *result = Some(res.map(|p| p.unwrap_or(Payload::Bytes(Bytes::new()))));
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
            Some(Waiter::Stream(s)) => {
                s.end = Some(res);
                s.wake_all();
            }
            None => {}
        }
    }
}

impl Driven for ClientState {
    type Session = ClientSession;
    type Work = ();

    fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    fn batches(&mut self) -> bool {
        self.session.pending_calls() > 1
    }

    fn dispatch(&mut self, _work: &mut Vec<()>) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Response { id, payload } => self.finish(id, Ok(Some(payload))),
                ClientEvent::Failed { id, error } => self.finish(id, Err(error)),
                ClientEvent::StreamEnd { id } => self.finish(id, Ok(None)),
                ClientEvent::StreamItem { id, payload } => {
                    if let Some(Waiter::Stream(s)) = self.waiters.get_mut(&id) {
                        s.items.push_back(payload);
                        if let Some(w) = s.recv.take() {
                            w.wake();
                        }
                    }
                }
                ClientEvent::SendCredit { id } => {
                    if let Some(Waiter::Stream(s)) = self.waiters.get_mut(&id) {
                        s.send.drain(..).for_each(Waker::wake);
                    }
                }
            }
        }
    }
}

pub(crate) struct Inner<T, R: Runtime> {
    pub(crate) channel: Arc<T>,
    shared: Arc<Shared<ClientState>>,
    rt: R,
    started: AtomicBool,
    /// The connection's driver, polled by its task and by waiting calls.
    driver: Arc<SharedDriver>,
}

impl<T: MessageChannel, R: Runtime> Inner<T, R> {
    /// Runs `f` on the state, then wakes the driver's task.
    fn with<O>(&self, f: impl FnOnce(&mut ClientState) -> O) -> O {
        let r = f(&mut self.shared.lock());
        self.driver.kick();
        r
    }

    /// Drops the waiter of call `id` and cancels it on the server (a future or stream
    /// dropped early).
    fn cancel(&self, id: u64) {
        self.driver.leave(id);
        self.with(|st| {
            if let Some(Waiter::Stream(mut s)) = st.waiters.remove(&id) {
                s.wake_all();
            }
            st.session.cancel(id);
        });
    }
}

impl<T: MessageChannel, R: Runtime> StreamCtl for Inner<T, R> {
    fn poll_item(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, RpcError>>> {
        let mut st = self.shared.lock();
        let ClientState { session, waiters } = &mut *st;
        let Some(Waiter::Stream(s)) = waiters.get_mut(&id) else {
            return Poll::Ready(None);
        };
        if let Some(item) = s.items.pop_front() {
            session.stream_consumed(id, 1);
            drop(st);
            self.driver.kick();
            return Poll::Ready(Some(Ok(item)));
        }
        match &s.end {
            Some(Err(e)) => {
                let e = e.clone();
                waiters.remove(&id);
                Poll::Ready(Some(Err(e.into())))
            }
            Some(Ok(_)) => {
                waiters.remove(&id);
                Poll::Ready(None)
            }
            None => {
                s.recv = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn abandon(&self, id: u64, _unread: u32) {
        self.cancel(id);
    }

    fn poll_send(
        &self,
        id: u64,
        payload: &mut Option<Payload>,
        codec: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Refused>> {
        let mut st = self.shared.lock();
        let Some(p) = payload.take() else {
            return Poll::Ready(Ok(()));
        };
        match st.session.send_stream_item(id, p, codec) {
            Ok(()) => {
                drop(st);
                self.driver.kick();
                Poll::Ready(Ok(()))
            }
            Err(StreamSendError::NoCredit(p)) => {
                *payload = Some(p);
                match st.waiters.get_mut(&id) {
                    Some(Waiter::Stream(s)) if s.end.is_none() => {
                        if !s.send.iter().any(|w| w.will_wake(cx.waker())) {
                            s.send.push(cx.waker().clone());
                        }
                        Poll::Pending
                    }
                    _ => Poll::Ready(Err(Refused::Closed)),
                }
            }
            Err(StreamSendError::Closed(_)) => Poll::Ready(Err(Refused::Closed)),
        }
    }

    fn finish(&self, id: u64) {
        self.with(|st| st.session.finish_stream(id));
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
    inner: Arc<Inner<T, R>>,
}

impl<T: MessageChannel, R: Runtime> Drop for Lifetime<T, R> {
    fn drop(&mut self) {
        self.inner.with(|st| {
            st.session
                .close(self.inner.rt.now(), "the client was dropped");
            st.dispatch(&mut Vec::new());
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
/// let transport = TcpFrameTransport::connect("127.0.0.1:9000".parse().unwrap(), TcpConfig::default()).await?;
/// let client = RpcClient::new(MessageChannelAdapter::new(transport));
/// let _handle = client.start();
/// let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 }).await?;
/// # Ok(()) }
/// ```
pub struct RpcClient<T: MessageChannel, C: Codec, R: Runtime> {
    inner: Arc<Inner<T, R>>,
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
        let inner = Arc::new(Inner {
            channel: Arc::new(channel),
            shared: Arc::new(Shared::new(ClientState {
                session,
                waiters: id_map(),
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
        self.inner.driver.install(Box::pin(async move {
            drive(&r, shared, &*channel, |_, ()| {}, |_, _| {}).await;
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
        self.inner.with(|st| {
            st.session.close(self.inner.rt.now(), "client closed");
            st.dispatch(&mut Vec::new());
        });
        if !self.inner.started.load(Ordering::Acquire) {
            let _ = self.inner.channel.close().await;
        }
    }

    /// Registers a call with the session and returns its id.
    fn begin(
        &self,
        method: &str,
        payload: Payload,
        opts: CallOptions,
        waiter: Waiter,
    ) -> Result<u64, RpcError> {
        self.ensure_started()?;
        let unary = matches!(waiter, Waiter::Unary { .. });
        let mut st = self.inner.shared.lock();
        let id = st
            .session
            .start_call(self.inner.rt.now(), method, payload, opts)?;
        st.waiters.insert(id, waiter);
        drop(st);
        // A unary call's waiter drives the connection (or wakes whoever does) when polled.
        if !unary {
            self.inner.driver.kick();
        }
        Ok(id)
    }

    /// Waits for the outcome of unary call `id`; dropping the future cancels the call.
    async fn wait(&self, id: u64) -> Result<Payload, RpcError> {
        let guard = CancelOnDrop {
            inner: &*self.inner,
            id,
        };
        let driver = &*self.inner.driver;
        let res = std::future::poll_fn(|cx| {
            // Checked with the waker withdrawn: an answer that this poll's own drive finds
            // needs no wake-up (which would only poll the call once more for nothing). It is
            // left again after the drive, before an answer found by anyone else could be
            // missed.
            let alone = {
                let mut st = self.inner.shared.lock();
                if let Poll::Ready(r) = take_result(&mut st, id, Wait::Withdraw) {
                    drop(st);
                    driver.leave(id);
                    return Poll::Ready(r);
                }
                st.session.pending_calls() <= 1
            };
            if alone {
                // No one else polling the driver: this call drives the connection itself.
                driver.drive_from(id, cx);
            } else {
                // Calls in flight together are left to the task, which writes their requests
                // in one batch: one wake-up per batch (see `Shared::output_queued`) — and one
                // whenever this call gives up the seat, since wake-ups meant for the driver
                // (a write it put off for the batch) may have come to this call.
                let queued = self.inner.shared.output_queued();
                if driver.vacate() | queued {
                    driver.kick();
                }
            }
            if let Poll::Ready(r) = self.poll_result(id, cx) {
                driver.leave(id);
                return Poll::Ready(r);
            }
            Poll::Pending
        })
        .await;
        std::mem::forget(guard);
        res
    }

    /// The outcome of unary call `id`, if it has one (else `cx` is woken when it does).
    fn poll_result(&self, id: u64, cx: &Context<'_>) -> Poll<Result<Payload, RpcError>> {
        take_result(&mut self.inner.shared.lock(), id, Wait::Leave(cx))
    }

    async fn call_payload(
        &self,
        method: &str,
        payload: Payload,
        opts: CallOptions,
    ) -> Result<Payload, RpcError> {
        let waiter = Waiter::Unary {
            result: None,
            waker: None,
        };
        let id = self.begin(method, payload, opts, waiter)?;
        self.wait(id).await
    }

    /// Sends raw payload bytes to `method` and waits for the raw response.
    pub async fn call_raw(&self, method: &str, payload: Bytes) -> Result<Bytes, RpcError> {
        let resp = self
            .call_payload(method, Payload::Bytes(payload), CallOptions::unary(C::ID))
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

    /// Like [`call`](Self::call) with explicit options.
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
        let payload = Payload::Bytes(self.codec.encode(request)?);
        let resp = self.call_payload(method, payload, opts).await?;
        decode_payload(&self.codec, resp)
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
        decode_payload(&self.codec, resp)
    }

    /// Sends a one-way notification.
    pub async fn notify<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<(), RpcError> {
        self.ensure_started()?;
        let payload = Payload::Bytes(self.codec.encode(request)?);
        self.inner
            .with(|st| st.session.notify(method, payload, C::ID))?;
        Ok(())
    }

    fn stream_waiter() -> Waiter {
        Waiter::Stream(StreamWaiter::default())
    }

    /// Starts a call whose client streams (its request is empty: the items carry the data).
    fn begin_client_stream<Item: Serialize>(
        &self,
        method: &str,
        kind: CallKind,
    ) -> Result<(u64, StreamSender<Item, C>), RpcError> {
        let opts = CallOptions::unary(C::ID).with_kind(kind);
        let request = Payload::Bytes(Bytes::new());
        let id = self.begin(method, request, opts, Self::stream_waiter())?;
        let sender = StreamSender::new(self.inner.clone(), id, self.codec.clone(), true);
        Ok((id, sender))
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
        let payload = Payload::Bytes(self.codec.encode(request)?);
        let opts = CallOptions::unary(C::ID).with_kind(CallKind::ServerStreaming);
        let id = self.begin(method, payload, opts, Self::stream_waiter())?;
        Ok(StreamReceiver::new(
            self.inner.clone(),
            id,
            self.codec.clone(),
        ))
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
        let (id, sender) = self.begin_client_stream(method, CallKind::ClientStreaming)?;
        let inner = self.inner.clone();
        let codec = self.codec.clone();
        // Owned before the future first runs: dropping the response unpolled cancels the call.
        let guard = OwnedCancel {
            inner: inner.clone(),
            id,
        };
        let response = async move {
            let res = std::future::poll_fn(|cx| {
                let mut st = inner.shared.lock();
                match st.waiters.get_mut(&id) {
                    Some(Waiter::Stream(s)) => match s.end.take() {
                        Some(end) => {
                            st.waiters.remove(&id);
                            Poll::Ready(match end {
                                Ok(Some(p)) => Ok(p),
                                Ok(None) => Err(RpcError::StreamError(
                                    "the call ended without a response".into(),
                                )),
                                Err(e) => Err(e.into()),
                            })
                        }
                        None => {
                            s.response = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    },
                    _ => Poll::Ready(Err(RpcError::Disconnected("the client was dropped".into()))),
                }
            })
            .await;
            guard.disarm();
            decode_payload(&codec, res?)
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
        let (id, sender) = self.begin_client_stream(method, CallKind::Bidirectional)?;
        let receiver = StreamReceiver::new(self.inner.clone(), id, self.codec.clone());
        Ok((sender, receiver))
    }
}

/// What a call that has no outcome yet does with its waker.
enum Wait<'a, 'b> {
    /// Leaves it (woken when the outcome comes).
    Leave(&'a Context<'b>),
    /// Withdraws it (the caller looks again itself).
    Withdraw,
}

/// The outcome of unary call `id`, if it has one; else `wait` says what becomes of its waker.
fn take_result(
    st: &mut ClientState,
    id: u64,
    wait: Wait<'_, '_>,
) -> Poll<Result<Payload, RpcError>> {
    match st.waiters.get_mut(&id) {
        Some(Waiter::Unary {
            result: Some(_), ..
        }) => match st.waiters.remove(&id) {
            Some(Waiter::Unary {
                result: Some(r), ..
            }) => Poll::Ready(r.map_err(RpcError::from)),
            _ => Poll::Ready(Err(RpcError::Disconnected("call lost".into()))),
        },
        Some(Waiter::Unary { waker, .. }) => {
            match wait {
                Wait::Leave(cx) if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) => {
                    *waker = Some(cx.waker().clone());
                }
                Wait::Leave(_) => {}
                Wait::Withdraw => *waker = None,
            }
            Poll::Pending
        }
        _ => Poll::Ready(Err(RpcError::Disconnected("the client was dropped".into()))),
    }
}

/// [`CancelOnDrop`] owning its client (for a future returned to the caller).
struct OwnedCancel<T: MessageChannel, R: Runtime> {
    inner: Arc<Inner<T, R>>,
    id: u64,
}

impl<T: MessageChannel, R: Runtime> OwnedCancel<T, R> {
    /// The call ended: nothing to cancel.
    fn disarm(mut self) {
        self.id = 0;
    }
}

impl<T: MessageChannel, R: Runtime> Drop for OwnedCancel<T, R> {
    fn drop(&mut self) {
        // Call ids start at 1; 0 marks a disarmed guard.
        if self.id != 0 {
            self.inner.cancel(self.id);
        }
    }
}

/// Cancels a call on the server if the future waiting for it is dropped.
struct CancelOnDrop<'a, T: MessageChannel, R: Runtime> {
    inner: &'a Inner<T, R>,
    id: u64,
}

impl<T: MessageChannel, R: Runtime> Drop for CancelOnDrop<'_, T, R> {
    fn drop(&mut self) {
        self.inner.cancel(self.id);
    }
}
