//! Glue between packets of the state machines and a message channel.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use xrpc_proto::{Codec, CodecError};

use super::error::RpcError;
use xrpc_proto::{Header, Packet};

use crate::channel::{ChannelError, MessageChannel, Payload};

/// Decodes a payload: bytes with the codec, an in-process value by downcasting.
pub(crate) fn decode_payload<T: DeserializeOwned + 'static, C: Codec>(
    codec: &C,
    payload: Payload,
) -> Result<T, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(codec.decode(&b)?),
        Payload::Value(v) => v.downcast::<T>().map(|b| *b).map_err(|_| {
            RpcError::Serialization(CodecError::decode(
                "in-process value",
                format_args!("the value is not a {}", std::any::type_name::<T>()),
            ))
        }),
    }
}

/// The bytes of a payload; an in-process value has none.
pub(crate) fn payload_bytes(payload: Payload) -> Result<Bytes, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(b),
        Payload::Value(_) => Err(RpcError::Serialization(CodecError::decode(
            "in-process value",
            "a raw call received a value instead of bytes",
        ))),
    }
}

/// A future that turns a panic while polling its inner future into `Err(message)`.
pub(crate) struct CatchUnwind<F: ?Sized>(pub(crate) Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".to_string());
                Poll::Ready(Err(msg))
            }
        }
    }
}

/// A connection whose transmit queue is drained by one task at a time.
///
/// A task that finds another one flushing leaves its packets to it and goes on (no lock
/// hand-off chain between callers); the flushing task loops until the queue is empty, and
/// "empty" and "no longer flushing" are decided under the connection's lock, so no packet is
/// left behind.
pub(crate) trait Outbox: Send + Sync + Sized + 'static {
    type Channel: MessageChannel;

    fn channel(&self) -> &Self::Channel;

    /// Makes the caller the flusher if something is queued and nobody flushes yet. `Some(busy)`:
    /// it is; `busy` says other calls are in progress, so waiting a moment batches their
    /// packets into the same write.
    fn claim(&self) -> Option<bool>;

    /// Takes every queued packet; with none queued, ends the flush (under the same lock).
    fn take(&self) -> Batch;

    /// Ends the flush with packets possibly still queued (the flusher was cancelled, or the
    /// channel failed): someone else must send them.
    fn release(&self);

    /// Packets that could not be encoded (too large, say): only their calls fail.
    fn unsendable(&self, failed: Vec<(Header, ChannelError)>);

    /// The channel failed: everything pending fails.
    fn send_failed(&self, e: ChannelError);

    /// A write could not finish at once (`true`: the peer is not reading as fast as we
    /// write) and goes on in a task of its own, or that write finished (`false`).
    fn write_blocked(&self, _blocked: bool) {}

    /// The owner of the connection is gone (the last client handle, or the `serve` future,
    /// was dropped): a write that blocks now gets [`close_grace`](Self::close_grace) to finish,
    /// then the channel closes (see [`close_after`]). Pairs with `write_blocked(true)`: both are
    /// `SeqCst`, so either the owner sees the blocked write or the writer sees the owner gone.
    fn abandoned(&self) -> bool {
        false
    }

    /// How long a write under way may take once the owner is gone.
    fn close_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The packets one write sends: a lone packet (the common case when calls are not pipelined)
/// needs no `Vec`.
pub(crate) enum Batch {
    /// Nothing was queued.
    Empty,
    /// One packet.
    One(Packet<Payload>),
    /// Several, in order.
    Many(Vec<Packet<Payload>>),
}

impl Batch {
    /// Takes every packet `next` yields.
    pub(crate) fn collect(mut next: impl FnMut() -> Option<Packet<Payload>>) -> Self {
        let Some(first) = next() else {
            return Self::Empty;
        };
        let Some(second) = next() else {
            return Self::One(first);
        };
        let mut all = vec![first, second];
        all.extend(std::iter::from_fn(next));
        Self::Many(all)
    }

    /// Sends the packets; like [`MessageChannel::send_packets`], packets that could not be
    /// encoded come back with their errors (only their calls fail).
    async fn send<M: MessageChannel>(
        self,
        channel: &M,
    ) -> Result<Vec<(Header, ChannelError)>, ChannelError> {
        match self {
            Self::Empty => Ok(Vec::new()),
            Self::One(p) => Ok(crate::channel::send_one(channel, p)
                .await?
                .into_iter()
                .collect()),
            Self::Many(all) => channel.send_packets(all).await,
        }
    }
}

/// Sends everything `o` has queued, in order (see [`Outbox`]).
pub(crate) async fn flush<O: Outbox>(o: &Arc<O>) {
    let Some(busy) = o.claim() else {
        return;
    };
    if busy {
        // Let the other calls queue their packets too, so they all leave in one write. A lone
        // call writes at once.
        let guard = OnCancel::new(|| o.release());
        tokio::task::yield_now().await;
        guard.disarm();
    }
    drain(o.clone());
}

/// Writes until the queue is empty without ever waiting: a write the transport cannot finish
/// at once goes on in a task of its own, which then finishes the drain. So dropping the future
/// of whoever started the flush never cuts a frame in half.
pub(crate) fn drain<O: Outbox>(o: Arc<O>) {
    loop {
        let packets = o.take();
        if let Batch::Empty = packets {
            return;
        }
        let writer = o.clone();
        let mut write = Box::pin(async move { packets.send(writer.channel()).await });
        // A transport that panics must not leave the flush mark set (nothing would ever be
        // sent on this connection again), nor the connection open with half a frame written.
        let guard = OnCancel::new(|| {
            o.release();
            close_after(&o, std::time::Duration::ZERO);
        });
        let first = write.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        guard.disarm();
        let res = match first {
            Poll::Ready(res) => res,
            Poll::Pending => {
                o.write_blocked(true);
                if o.abandoned() {
                    close_after(&o, o.close_grace());
                }
                tokio::spawn(async move {
                    let guard = OnCancel::new(|| {
                        o.write_blocked(false);
                        o.release();
                        close_after(&o, std::time::Duration::ZERO);
                    });
                    let res = write.await;
                    guard.disarm();
                    o.write_blocked(false);
                    if written(&o, res) {
                        drain(o);
                    }
                });
                return;
            }
        };
        if !written(&o, res) {
            return;
        }
    }
}

/// Closes `o`'s channel if it is still open `grace` from now. Used when the owner of a
/// connection goes away while a write is under way: that write's task holds the connection,
/// which must not stay open forever if the peer never reads — but a peer that does read gets
/// the rest of the write. Without a runtime to wait on, closes at once.
pub(crate) fn close_after<O: Outbox>(o: &Arc<O>, grace: std::time::Duration) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(o);
        rt.spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(o) = weak.upgrade() {
                let _ = o.channel().close().await;
            }
        });
    } else {
        let c = o.clone();
        let mut close = std::pin::pin!(async move {
            let _ = c.channel().close().await;
        });
        let _ = close.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }
}

/// Accounts for one write; `false` when the channel failed (the flush is over).
fn written<O: Outbox>(o: &Arc<O>, res: Result<Vec<(Header, ChannelError)>, ChannelError>) -> bool {
    match res {
        Ok(failed) => {
            if !failed.is_empty() {
                o.unsendable(failed);
            }
            true
        }
        Err(e) => {
            o.send_failed(e);
            o.release();
            // Closing wakes the reader, which ends the connection.
            let o = o.clone();
            tokio::spawn(async move {
                let _ = o.channel().close().await;
            });
            false
        }
    }
}

/// Runs its closure when dropped, unless [`disarm`](Self::disarm)ed first.
///
/// A connection's transmit queue is drained by one task at a time (the others leave their
/// packets to it and go on); if that task's future is dropped mid-flush, this clears the mark
/// and asks the connection's timer task to send what is left.
pub(crate) struct OnCancel<F: FnMut()>(Option<F>);

impl<F: FnMut()> OnCancel<F> {
    pub(crate) fn new(f: F) -> Self {
        Self(Some(f))
    }

    /// The flush finished: nothing to undo.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnMut()> Drop for OnCancel<F> {
    fn drop(&mut self) {
        if let Some(mut f) = self.0.take() {
            f();
        }
    }
}
