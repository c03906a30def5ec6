//! Glue between packets of the state machines and a message channel.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use xrpc_proto::{Codec, CodecError};

use super::error::RpcError;
use crate::channel::Payload;

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
