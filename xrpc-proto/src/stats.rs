//! [`ServerStats`]: what a server counts over all its connections — today, the notifications
//! it could not deliver, by reason ([`NotificationDrop`]).
//!
//! The sessions of a server share one [`ServerCounters`] (in its
//! [`ServerBounds`](crate::ServerBounds)); every undelivered notification is counted in one
//! place, `ServerConnection::notification_undelivered`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a notification was not delivered to a handler (or its handler failed). A notification
/// has no answer, so this count is all that is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotificationDrop {
    /// No handler is registered under its method name.
    UnknownMethod,
    /// The method is registered for another kind of call (a stream).
    WrongKind,
    /// It was encoded with a codec the server does not speak.
    Unsupported,
    /// It was refused before it was decoded: larger than the maximum frame, or compressed
    /// when the server refuses compressed input or cannot inflate it now (decompression
    /// budget or rate).
    Refused,
    /// Its signature fingerprint differs from the method's.
    TypeMismatch,
    /// Its payload could not be decoded as the handler's request type.
    Undecodable,
    /// Its metadata exceeds `max_metadata_bytes` or `max_metadata_entries`.
    MetadataOverLimit,
    /// The connection or the server ran as many handlers as it may.
    NoHandlerSlot,
    /// The server is shutting down.
    ShuttingDown,
    /// Its handler returned an error (other than a decode error) or panicked.
    HandlerFailed,
}

impl NotificationDrop {
    const ALL: [Self; 10] = [
        Self::UnknownMethod,
        Self::WrongKind,
        Self::Unsupported,
        Self::Refused,
        Self::TypeMismatch,
        Self::Undecodable,
        Self::MetadataOverLimit,
        Self::NoHandlerSlot,
        Self::ShuttingDown,
        Self::HandlerFailed,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A short description, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownMethod => "unknown method",
            Self::WrongKind => "wrong call kind",
            Self::Unsupported => "unsupported codec",
            Self::Refused => "refused undecoded (too large, or compression refused)",
            Self::TypeMismatch => "type mismatch",
            Self::Undecodable => "undecodable payload",
            Self::MetadataOverLimit => "metadata over the limit",
            Self::NoHandlerSlot => "no handler slot",
            Self::ShuttingDown => "server shutting down",
            Self::HandlerFailed => "handler failed",
        }
    }
}

impl std::fmt::Display for NotificationDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Notifications a server did not deliver, by reason (see [`NotificationDrop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NotificationStats {
    /// [`NotificationDrop::UnknownMethod`].
    pub unknown_method: u64,
    /// [`NotificationDrop::WrongKind`].
    pub wrong_kind: u64,
    /// [`NotificationDrop::Unsupported`].
    pub unsupported: u64,
    /// [`NotificationDrop::Refused`].
    pub refused: u64,
    /// [`NotificationDrop::TypeMismatch`].
    pub type_mismatch: u64,
    /// [`NotificationDrop::Undecodable`].
    pub undecodable: u64,
    /// [`NotificationDrop::MetadataOverLimit`].
    pub metadata_over_limit: u64,
    /// [`NotificationDrop::NoHandlerSlot`].
    pub no_handler_slot: u64,
    /// [`NotificationDrop::ShuttingDown`].
    pub shutting_down: u64,
    /// [`NotificationDrop::HandlerFailed`].
    pub handler_failed: u64,
}

impl NotificationStats {
    /// All of them.
    pub fn total(&self) -> u64 {
        NotificationDrop::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// The count of `reason`.
    pub fn get(&self, reason: NotificationDrop) -> u64 {
        match reason {
            NotificationDrop::UnknownMethod => self.unknown_method,
            NotificationDrop::WrongKind => self.wrong_kind,
            NotificationDrop::Unsupported => self.unsupported,
            NotificationDrop::Refused => self.refused,
            NotificationDrop::TypeMismatch => self.type_mismatch,
            NotificationDrop::Undecodable => self.undecodable,
            NotificationDrop::MetadataOverLimit => self.metadata_over_limit,
            NotificationDrop::NoHandlerSlot => self.no_handler_slot,
            NotificationDrop::ShuttingDown => self.shutting_down,
            NotificationDrop::HandlerFailed => self.handler_failed,
        }
    }

    fn get_mut(&mut self, reason: NotificationDrop) -> &mut u64 {
        match reason {
            NotificationDrop::UnknownMethod => &mut self.unknown_method,
            NotificationDrop::WrongKind => &mut self.wrong_kind,
            NotificationDrop::Unsupported => &mut self.unsupported,
            NotificationDrop::Refused => &mut self.refused,
            NotificationDrop::TypeMismatch => &mut self.type_mismatch,
            NotificationDrop::Undecodable => &mut self.undecodable,
            NotificationDrop::MetadataOverLimit => &mut self.metadata_over_limit,
            NotificationDrop::NoHandlerSlot => &mut self.no_handler_slot,
            NotificationDrop::ShuttingDown => &mut self.shutting_down,
            NotificationDrop::HandlerFailed => &mut self.handler_failed,
        }
    }
}

/// A server's counters, over all its connections (`RpcServer::stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Notifications not delivered, by reason.
    pub notifications: NotificationStats,
}

/// The live counters behind [`ServerStats`], shared by a server's sessions (cloning shares).
#[derive(Debug, Clone, Default)]
pub struct ServerCounters {
    undelivered: Arc<[AtomicU64; NotificationDrop::ALL.len()]>,
}

impl ServerCounters {
    /// Counts one undelivered notification.
    pub fn count(&self, reason: NotificationDrop) {
        self.undelivered[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> ServerStats {
        let mut notifications = NotificationStats::default();
        for r in NotificationDrop::ALL {
            *notifications.get_mut(r) = self.undelivered[r.index()].load(Ordering::Relaxed);
        }
        ServerStats { notifications }
    }
}
