//! The in-process pipe under [`ChannelFrameTransport`](super::ChannelFrameTransport) and
//! [`ArcFrameTransport`](super::ArcFrameTransport): a pair of bounded tokio channels plus a close
//! signal shared by both ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, Notify, mpsc};

use super::TransportError;

/// Closes both ends of an in-process pair at once and wakes everyone waiting on it.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    closed: AtomicBool,
    notify: Notify,
}

impl CloseSignal {
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes once [`close`](Self::close) has been called.
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Register before checking the flag so a concurrent close cannot be missed.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }
}

/// One end of a bidirectional in-process pipe of `T`.
#[derive(Debug)]
pub(crate) struct Pipe<T> {
    tx: mpsc::Sender<T>,
    rx: Mutex<mpsc::Receiver<T>>,
    close: Arc<CloseSignal>,
}

impl<T: Send + 'static> Pipe<T> {
    /// Two connected ends with `capacity` slots in each direction. Needs no runtime.
    pub(crate) fn pair(capacity: usize, close: Arc<CloseSignal>) -> (Self, Self) {
        let (tx_a, rx_b) = mpsc::channel(capacity.max(1));
        let (tx_b, rx_a) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx: tx_a,
                rx: Mutex::new(rx_a),
                close: close.clone(),
            },
            Self {
                tx: tx_b,
                rx: Mutex::new(rx_b),
                close,
            },
        )
    }

    /// Whether neither end was closed or dropped.
    pub(crate) fn is_connected(&self) -> bool {
        !self.close.is_closed() && !self.tx.is_closed()
    }

    /// Sends a value, waiting for room; fails once either end closed.
    pub(crate) async fn send(&self, value: T) -> Result<(), TransportError> {
        if self.close.is_closed() {
            return Err(TransportError::ConnectionClosed);
        }
        tokio::select! {
            biased;
            r = self.tx.send(value) => r.map_err(|_| TransportError::ConnectionClosed),
            () = self.close.wait() => Err(TransportError::ConnectionClosed),
        }
    }

    /// Receives the next value. After a close, values already queued are still delivered,
    /// then `ConnectionClosed`.
    pub(crate) async fn recv(&self) -> Result<T, TransportError> {
        let mut rx = self.rx.lock().await;
        tokio::select! {
            biased;
            v = rx.recv() => v.ok_or(TransportError::ConnectionClosed),
            () = self.close.wait() => match rx.try_recv() {
                Ok(v) => Ok(v),
                Err(_) => Err(TransportError::ConnectionClosed),
            },
        }
    }

    /// Closes both ends.
    pub(crate) fn close(&self) {
        self.close.close();
    }
}
