//! Glue between packets of the state machines and a message channel.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use xrpc_proto::{Body, Packet};

use crate::channel::{ChannelError, MessageChannel};

/// Sends one packet: header and method as the state machine built them, payload as is.
pub(crate) async fn send_packet<T: MessageChannel>(
    channel: &T,
    packet: Packet<Bytes>,
) -> Result<(), ChannelError> {
    let method = packet.method_str();
    match &packet.body {
        Body::Empty => channel.send_with(&packet.header, method, |_| Ok(())).await,
        Body::Data(p) => {
            channel
                .send_with(&packet.header, method, |buf| {
                    buf.extend_from_slice(p);
                    Ok(())
                })
                .await
        }
        Body::Error(e) => {
            channel
                .send_with(&packet.header, method, |buf| {
                    e.encode_into(buf);
                    Ok(())
                })
                .await
        }
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
