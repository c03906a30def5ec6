//! Credit-based flow control for streams.
//!
//! The receiver of a stream grants credit in items; the sender may only send as many items as it
//! has been granted. The receiver grants more as its application *consumes* items, never more
//! than keeps `window` items outstanding, so a slow consumer holds a fast producer at the window
//! and the buffer between them never grows past it.

/// The window a client stream starts with, without waiting for a `Credit` message.
///
/// Both sides assume it: the client may send this many items right after its request.
pub const INITIAL_CLIENT_STREAM_WINDOW: u32 = 16;

use std::collections::VecDeque;

use crate::codec::CodecId;
use crate::message::{Header, MessageKind};
use crate::packet::{Body, Packet};

/// Why a stream item could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSendError<P> {
    /// No credit left, or the connection's queued output is over its budget: wait for a
    /// `SendCredit` event and try again with the item.
    NoCredit(P),
    /// The stream is not open for sending (finished, failed, or never was one).
    Closed(P),
}

/// Queues a stream item of call `id` on `transmit` if `send` has credit.
pub(crate) fn push_item<P>(
    send: Option<&mut SendWindow>,
    id: u64,
    payload: P,
    codec: CodecId,
    transmit: &mut VecDeque<Packet<P>>,
) -> Result<(), StreamSendError<P>> {
    let Some(send) = send else {
        return Err(StreamSendError::Closed(payload));
    };
    if !send.try_take() {
        return Err(StreamSendError::NoCredit(payload));
    }
    transmit.push_back(Packet::new(
        Header::new(MessageKind::StreamItem, id).with_codec(codec),
        Body::Data(payload),
    ));
    Ok(())
}

/// Records `n` items of call `id` consumed and queues a `Credit` on `transmit` if one is due.
pub(crate) fn push_credit<P>(
    recv: Option<&mut RecvWindow>,
    id: u64,
    n: u32,
    transmit: &mut VecDeque<Packet<P>>,
) {
    if let Some(grant) = recv.and_then(|r| r.on_consumed(n)) {
        let header = Header {
            window: Some(grant),
            ..Header::new(MessageKind::Credit, id)
        };
        transmit.push_back(Packet::new(header, Body::Empty));
    }
}

/// Receiving side of a stream: counts items and decides when to grant credit.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u64,
    granted: u64,
    received: u64,
    consumed: u64,
}

/// The peer sent more items than it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("flow control violated: item {received} exceeds granted credit {granted}")]
pub struct FlowViolation {
    /// Items received including this one.
    pub received: u64,
    /// Items granted.
    pub granted: u64,
}

impl RecvWindow {
    /// A window of `window` items, all granted up front.
    pub fn new(window: u32) -> Self {
        let window = u64::from(window.max(1));
        Self {
            window,
            granted: window,
            received: 0,
            consumed: 0,
        }
    }

    /// Records one received item.
    pub fn on_item(&mut self) -> Result<(), FlowViolation> {
        self.received += 1;
        if self.received > self.granted {
            return Err(FlowViolation {
                received: self.received,
                granted: self.granted,
            });
        }
        Ok(())
    }

    /// Records that the application consumed `n` items; returns the credit to grant now, if the
    /// unused part of the window has reached half of it.
    pub fn on_consumed(&mut self, n: u32) -> Option<u32> {
        self.consumed = (self.consumed + u64::from(n)).min(self.received);
        let target = self.consumed + self.window;
        let grant = target.saturating_sub(self.granted);
        if grant * 2 >= self.window && grant > 0 {
            let grant = u32::try_from(grant).unwrap_or(u32::MAX);
            self.granted += u64::from(grant);
            Some(grant)
        } else {
            None
        }
    }

    /// Items received but not yet consumed.
    pub fn buffered(&self) -> u64 {
        self.received - self.consumed
    }
}

/// Sending side of a stream: the credit left, never above the sender's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    credit: u64,
    cap: u64,
}

impl SendWindow {
    /// Starts with `initial` credit (no cap beyond `u64`).
    pub fn new(initial: u32) -> Self {
        Self {
            credit: u64::from(initial),
            cap: u64::MAX,
        }
    }

    /// Starts with `initial` credit, and holds at most `cap` however much the peer grants: a
    /// peer that grants `u32::MAX` (at once or in many `Credit` messages) cannot make the
    /// sender queue more than `cap` items for it.
    pub fn capped(initial: u32, cap: u32) -> Self {
        let cap = u64::from(cap.max(1));
        Self {
            credit: u64::from(initial).min(cap),
            cap,
        }
    }

    /// Takes one credit if there is one.
    pub fn try_take(&mut self) -> bool {
        if self.credit == 0 {
            return false;
        }
        self.credit -= 1;
        true
    }

    /// Adds credit granted by the peer (clamped to the cap).
    pub fn add(&mut self, n: u32) {
        self.credit = self.credit.saturating_add(u64::from(n)).min(self.cap);
    }

    /// Credit left.
    pub fn credit(&self) -> u64 {
        self.credit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_consumer_bounds_the_buffer() {
        let mut rx = RecvWindow::new(8);
        let mut tx = SendWindow::new(8);
        let mut sent = 0;
        while tx.try_take() {
            rx.on_item().unwrap();
            sent += 1;
        }
        assert_eq!(sent, 8);
        assert!(
            rx.on_item().is_err(),
            "a ninth item without credit is a violation"
        );
        let mut rx = RecvWindow::new(8);
        for _ in 0..8 {
            rx.on_item().unwrap();
        }
        assert_eq!(rx.on_consumed(3), None, "below half the window");
        assert_eq!(rx.on_consumed(1), Some(4));
        tx.add(4);
        assert_eq!(tx.credit(), 4);
        assert!(rx.buffered() <= 8);
    }

    #[test]
    fn granted_credit_is_clamped_to_the_cap() {
        let mut tx = SendWindow::capped(u32::MAX, 64);
        assert_eq!(tx.credit(), 64);
        for _ in 0..1000 {
            tx.add(u32::MAX);
        }
        assert_eq!(tx.credit(), 64);
    }
}
