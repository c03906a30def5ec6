//! The error type of the shared-memory transport.

/// `Result` with [`ShmError`].
pub type Result<T, E = ShmError> = std::result::Result<T, E>;

/// Everything that can go wrong on a shared-memory connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The peer closed its side or died; no more frames will come, and
    /// frames sent now would never be read.
    #[error("peer disconnected")]
    Disconnected,
    /// The shared memory broke an invariant (a hostile or buggy peer). The
    /// connection is dead from then on.
    #[error("shared memory corrupt: {0}")]
    Corrupt(String),
    /// A frame is larger than the configured maximum: refused before sending, or, on
    /// receive, skipped (its bytes released unread) — an error of that frame alone, after
    /// which the connection goes on.
    #[error("frame of {size} bytes exceeds max {max}")]
    FrameTooLarge {
        /// Size of the frame that was refused.
        size: usize,
        /// Largest frame this ring accepts.
        max: usize,
    },
    /// The ring has no room for the frame now (non-blocking send only).
    #[error("ring full")]
    Full,
    /// A blocking call reached its deadline.
    #[error("timed out")]
    Timeout,
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The rendezvous handshake with the peer failed (wrong protocol, bad
    /// segment description).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server refused this process in the rendezvous handshake (its allow-list of users
    /// and groups, or this process runs as another user): no segment was made.
    #[error("the server of {name:?} refused this process (uid {uid}, gid {gid})")]
    Refused {
        /// The service name.
        name: String,
        /// This process's effective user id.
        uid: u32,
        /// This process's effective group id.
        gid: u32,
    },
    /// No server is bound to the service name (nobody listens there).
    #[error("no server for service {0:?}")]
    NoServer(String),
    /// An operating-system call failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(not(loom))]
impl From<rustix::io::Errno> for ShmError {
    fn from(e: rustix::io::Errno) -> Self {
        ShmError::Io(e.into())
    }
}

/// Shorthand for a [`ShmError::Corrupt`].
#[cold]
pub(crate) fn corrupt(msg: impl Into<String>) -> ShmError {
    ShmError::Corrupt(msg.into())
}
