//! Who is at the other end of a connection: [`PeerInfo`], what the transport knows about it, as
//! a handler sees it through its call context; on local transports the credentials the kernel
//! reports for the peer process of a Unix socket or a shared-memory rendezvous
//! ([`PeerCredentials`]); the server's allow-list ([`PeerPolicy`]), and the one decision made
//! from them ([`PeerPolicy::check`]) — a pure function: the transports read the credentials,
//! the listener asks, and refuses the peer as the transport can (docs/PROTOCOL.md §5.11).
//!
//! The refusal on a byte stream is one message before the close: an Error with request id 0
//! and code [`ErrorCode::PeerRefused`] ([`refusal_frame`]); a client that reads it fails every
//! call with [`CallError::PeerRefused`](crate::CallError::PeerRefused).

use core::net::SocketAddr;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};

use crate::admission::PeerKey;
use crate::message::{ErrorCode, Header, MessageEncoder, MessageKind, RemoteError};

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
    /// The peer process's pid, uid and gid, as the kernel reported them when the connection
    /// was made (`SO_PEERCRED`: Unix sockets and shared memory on Linux).
    pub credentials: Option<PeerCredentials>,
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
            credentials: None,
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

    /// The same with the peer process's credentials (`None`: not known).
    pub fn with_credentials(mut self, credentials: Option<PeerCredentials>) -> Self {
        self.credentials = credentials;
        self
    }
}

impl std::fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.addr, &self.path) {
            (Some(a), _) => write!(f, "{a}")?,
            (None, Some(p)) => write!(f, "{}", p.display())?,
            (None, None) => f.write_str("an unnamed peer")?,
        }
        if let Some(c) = &self.credentials {
            write!(f, " (pid {}, uid {}, gid {})", c.pid, c.uid, c.gid)?;
        }
        Ok(())
    }
}

/// Who is at the other end of a local connection, as the kernel reported it when the
/// connection was made (`SO_PEERCRED`): the peer process's id and its effective user and
/// group ids. Only the primary group: supplementary groups are not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The peer's process id (in the reader's pid namespace; 0 if the peer is in a namespace
    /// the reader cannot see).
    pub pid: u32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective (primary) group id.
    pub gid: u32,
}

impl PeerCredentials {
    /// Credentials of process `pid` running as `uid`/`gid`.
    pub const fn new(pid: u32, uid: u32, gid: u32) -> Self {
        Self { pid, uid, gid }
    }
}

/// Which peers a server admits. By default ([`PeerPolicy::any`]) every peer the transport lets
/// connect; once a user or group is listed, only peers whose user id or primary group id is
/// listed — a peer whose credentials are unknown (TCP, or a system without `SO_PEERCRED`) is
/// then refused too.
///
/// ```
/// use xrpc_proto::{PeerCredentials, PeerPolicy};
///
/// let policy = PeerPolicy::any().allow_uid(1000).allow_gid(27);
/// assert!(policy.check(Some(&PeerCredentials::new(42, 1000, 1000))).is_ok());
/// assert!(policy.check(Some(&PeerCredentials::new(43, 1001, 27))).is_ok());
/// assert!(policy.check(Some(&PeerCredentials::new(44, 1001, 1001))).is_err());
/// assert!(policy.check(None).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl PeerPolicy {
    /// Admits every peer the transport lets connect (the default).
    pub fn any() -> Self {
        Self::default()
    }

    /// Also admits peers running as user `uid` (and, from now on, only listed peers).
    pub fn allow_uid(mut self, uid: u32) -> Self {
        if !self.uids.contains(&uid) {
            self.uids.push(uid);
        }
        self
    }

    /// Also admits peers whose primary group is `gid` (and, from now on, only listed peers).
    pub fn allow_gid(mut self, gid: u32) -> Self {
        if !self.gids.contains(&gid) {
            self.gids.push(gid);
        }
        self
    }

    /// Whether the policy admits only listed peers.
    pub fn is_restricted(&self) -> bool {
        !self.uids.is_empty() || !self.gids.is_empty()
    }

    /// The listed user ids.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// The listed group ids.
    pub fn gids(&self) -> &[u32] {
        &self.gids
    }

    /// Whether a peer with credentials `peer` (`None`: not known) is admitted, and if not,
    /// why.
    pub fn check(&self, peer: Option<&PeerCredentials>) -> Result<(), PeerRefused> {
        self.check_or(peer, |_| true)
    }

    /// [`check`](Self::check) for a transport with a default of its own: with no list, a
    /// peer is admitted if `default` admits it (shared memory: only its own user and root,
    /// since its rendezvous socket has no file permissions); a list replaces the default.
    pub fn check_or(
        &self,
        peer: Option<&PeerCredentials>,
        default: impl FnOnce(&PeerCredentials) -> bool,
    ) -> Result<(), PeerRefused> {
        if !self.is_restricted() {
            return match peer {
                None => Ok(()),
                Some(p) if default(p) => Ok(()),
                Some(p) => Err(PeerRefused::OtherUser {
                    uid: p.uid,
                    gid: p.gid,
                }),
            };
        }
        match peer {
            None => Err(PeerRefused::Unknown),
            Some(p) if self.uids.contains(&p.uid) || self.gids.contains(&p.gid) => Ok(()),
            Some(p) => Err(PeerRefused::NotListed {
                uid: p.uid,
                gid: p.gid,
            }),
        }
    }
}

/// Why a server refused a peer at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRefused {
    /// Neither the peer's user nor its group is on the server's allow-list.
    #[error("peer uid {uid} gid {gid} is not on the server's allow-list")]
    NotListed {
        /// The peer's user id.
        uid: u32,
        /// The peer's primary group id.
        gid: u32,
    },
    /// The peer runs as another user, and the transport admits only its own user (and root)
    /// unless the server lists others.
    #[error("peer uid {uid} gid {gid} runs as another user, and the server lists no allowed peers")]
    OtherUser {
        /// The peer's user id.
        uid: u32,
        /// The peer's primary group id.
        gid: u32,
    },
    /// The server admits only listed peers and the transport does not tell who this one is.
    #[error(
        "the server admits only listed peers, and this transport does not tell who the peer is"
    )]
    Unknown,
}

/// The request id of a refusal: no call has it (a client's calls count from 1).
pub const REFUSAL_ID: u64 = 0;

/// The one frame (without its length prefix) a server sends on a byte stream before it closes
/// the connection of a refused peer: an Error message with id [`REFUSAL_ID`] and code
/// [`ErrorCode::PeerRefused`], whose text says why.
pub fn refusal_frame(why: &PeerRefused) -> Bytes {
    let mut payload = BytesMut::new();
    RemoteError::new(ErrorCode::PeerRefused, why.to_string()).encode_into(&mut payload);
    let mut out = BytesMut::new();
    // A short message without compression always fits the default frame size.
    MessageEncoder::default()
        .encode(
            &Header::new(MessageKind::Error, REFUSAL_ID),
            "",
            &payload,
            &mut out,
        )
        .expect("a refusal is a small valid message");
    out.split_off(crate::FRAME_PREFIX_LEN).freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageDecoder;

    #[test]
    fn any_admits_everyone_even_unknown() {
        let p = PeerPolicy::any();
        assert!(!p.is_restricted());
        assert_eq!(p.check(None), Ok(()));
        assert_eq!(p.check(Some(&PeerCredentials::new(1, 2, 3))), Ok(()));
    }

    #[test]
    fn a_list_admits_by_uid_or_gid_and_refuses_the_rest() {
        let p = PeerPolicy::any().allow_uid(1000).allow_gid(50);
        assert_eq!(p.check(Some(&PeerCredentials::new(1, 1000, 1))), Ok(()));
        assert_eq!(p.check(Some(&PeerCredentials::new(1, 7, 50))), Ok(()));
        assert_eq!(
            p.check(Some(&PeerCredentials::new(1, 7, 8))),
            Err(PeerRefused::NotListed { uid: 7, gid: 8 })
        );
        assert_eq!(p.check(None), Err(PeerRefused::Unknown));
        let only_root = PeerPolicy::any().allow_uid(0);
        assert!(
            only_root
                .check(Some(&PeerCredentials::new(1, 0, 0)))
                .is_ok()
        );
        assert!(
            only_root
                .check(Some(&PeerCredentials::new(1, 65534, 65534)))
                .is_err()
        );
    }

    #[test]
    fn a_transport_default_applies_only_without_a_list() {
        let own = |p: &PeerCredentials| p.uid == 1000;
        let stranger = PeerCredentials::new(1, 2000, 2000);
        assert_eq!(
            PeerPolicy::any().check_or(Some(&stranger), own),
            Err(PeerRefused::OtherUser {
                uid: 2000,
                gid: 2000
            })
        );
        assert_eq!(
            PeerPolicy::any().check_or(Some(&PeerCredentials::new(1, 1000, 1)), own),
            Ok(())
        );
        let listed = PeerPolicy::any().allow_uid(2000);
        assert_eq!(listed.check_or(Some(&stranger), own), Ok(()));
        assert!(
            listed
                .check_or(Some(&PeerCredentials::new(1, 1000, 1)), own)
                .is_err()
        );
    }

    #[test]
    fn the_refusal_frame_is_an_error_with_id_zero() {
        let frame = refusal_frame(&PeerRefused::NotListed { uid: 7, gid: 8 });
        let msg = MessageDecoder::default().decode(frame).unwrap();
        assert_eq!(msg.header.kind, MessageKind::Error);
        assert_eq!(msg.header.id, REFUSAL_ID);
        let e = RemoteError::decode(&msg.payload);
        assert_eq!(e.code, ErrorCode::PeerRefused);
        assert!(e.message.contains("uid 7 gid 8"), "{}", e.message);
    }
}
