//! [`PeerInfo`]: what the transport knows about the other end of a connection, as a handler
//! sees it through its call context.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::admission::PeerKey;

/// Who is at the other end of a connection, as far as its transport knows. Fields are added
/// as transports learn more (it is `non_exhaustive`: build it with [`PeerInfo::new`] and the
/// `with_*` methods).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's socket address (TCP).
    pub addr: Option<SocketAddr>,
    /// The path of the Unix socket, or the name of the shared-memory service, the connection
    /// was made on (a Unix peer is usually unnamed, so this is the server's own end).
    pub path: Option<PathBuf>,
    /// The key the listener counts the peer's connections under (its IP address over TCP, its
    /// user id over Unix sockets and shared memory).
    pub key: PeerKey,
}

impl Default for PeerInfo {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerInfo {
    /// Nothing known (an in-process peer).
    pub const fn new() -> Self {
        Self {
            addr: None,
            path: None,
            key: PeerKey::Unknown,
        }
    }

    /// The same with a socket address.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// The same with a path or service name.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The same with a peer key.
    pub fn with_key(mut self, key: PeerKey) -> Self {
        self.key = key;
        self
    }
}

impl std::fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.addr, &self.path) {
            (Some(a), _) => write!(f, "{a}"),
            (None, Some(p)) => write!(f, "{}", p.display()),
            (None, None) => f.write_str("an unnamed peer"),
        }
    }
}
