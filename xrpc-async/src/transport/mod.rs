//! Layer 1: frame transports.
//!
//! A [`FrameTransport`] moves whole frames — one message's bytes, *without* the 4-byte length
//! prefix that byte streams put in front of them — between two peers. Framing on byte streams
//! is done by [`xrpc_proto::FrameDecoder`]; this module only owns the IO.
//!
//! The transports are written here once, generic over what they need of an executor: the
//! socket transports ([`TcpFrameTransport`], [`UnixFrameTransport`]) over a [`Reactor`]'s
//! sockets, [`SharedMemoryFrameTransport`] over its descriptor readiness. An adapter crate
//! names them for its reactor (`xrpc_tokio::TcpFrameTransport`) and brings the sockets; the
//! in-process transports ([`crate::memory`]) need no reactor at all.
//!
//! [`Reactor`]: crate::reactor::Reactor
//!
//! Every method takes `&self`: one task can wait in [`recv_frame`](FrameTransport::recv_frame)
//! while others call [`send_frame`](FrameTransport::send_frame). Sends are serialized by an
//! internal lock, so frames from concurrent senders never interleave.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use xrpc_proto::{FRAME_PREFIX_LEN, PeerCredentials, PeerInfo, PeerKey, ReadBudget};

mod addr;
mod batch;
mod checks;
#[cfg(feature = "shm")]
mod shm;
mod socket;
mod stats;
mod tcp;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_socket;
mod unix;

pub use addr::ToSocketAddrs;
pub(crate) use checks::{CheckEncoded, check_one_prefixed};
pub use checks::{batch_frames, check_len, check_prefixed, check_prefixed_batch};

/// The rustls crate this layer's TLS is built on, for its configurations and certificate types
/// ([`rustls::ClientConfig`], [`rustls::pki_types::CertificateDer`]).
#[cfg(feature = "tls")]
pub use rustls;
#[cfg(feature = "shm")]
pub use shm::{SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener};
pub use stats::{StatsCounters, TransportStats};
pub use tcp::{TcpConfig, TcpFrameTransport, TcpFrameTransportListener};
#[cfg(feature = "tls")]
pub use tls::{
    TlsClientConfig, TlsFrameTransport, TlsFrameTransportListener, TlsServerConfig,
    load_certificates, load_private_key,
};
pub use unix::{UnixConfig, UnixFrameTransport, UnixFrameTransportListener};
pub use xrpc_proto::TransportError;

/// The transport names every async adapter exports as they are, at its root (through
/// [`crate::exports`]) and in its `transport` module (`pub use
/// xrpc_async::transport::exported::*;`): the in-process transports, the transport trait, its
/// error and counters, and the configurations. The socket and shared-memory transports
/// themselves are bound to each adapter's runtime there.
pub mod exported {
    pub use crate::memory::{ArcFrameTransport, ChannelConfig, ChannelFrameTransport};
    #[cfg(feature = "shm")]
    pub use crate::transport::SharedMemoryConfig;
    pub use crate::transport::{
        FrameTransport, TcpConfig, TransportError, TransportStats, UnixConfig,
    };
    #[cfg(feature = "tls")]
    pub use crate::transport::{
        TlsClientConfig, TlsServerConfig, load_certificates, load_private_key, rustls,
    };
    pub use xrpc_proto::RetryPolicy;
}

/// The credentials of the process at the other end of a local socket (`SO_PEERCRED`: pid,
/// uid, gid), as the kernel recorded them when the connection was made; `None` if it does not
/// tell.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_credentials(socket: &impl std::os::fd::AsFd) -> Option<PeerCredentials> {
    let cred = rustix::net::sockopt::socket_peercred(socket).ok()?;
    Some(PeerCredentials::new(
        cred.pid.as_raw_nonzero().get().try_into().unwrap_or(0),
        cred.uid.as_raw(),
        cred.gid.as_raw(),
    ))
}

/// `None`: this system has no `SO_PEERCRED`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_credentials(_socket: &impl std::os::fd::AsFd) -> Option<PeerCredentials> {
    None
}

/// The peer key of a local peer: its user id, if known.
pub(crate) fn uid_key(peer: Option<PeerCredentials>) -> PeerKey {
    peer.map_or(PeerKey::Unknown, |p| PeerKey::Uid(p.uid))
}

/// A bidirectional transport of whole frames.
///
/// Implementations are cheap to share behind an [`Arc`] (which is itself a `FrameTransport`).
/// Frames sent with any of the `send_*` methods arrive whole and in order; frames from
/// concurrent senders never interleave.
///
/// # Cancellation
/// [`recv_frame`](Self::recv_frame) is cancel-safe: dropping it loses no data. A send future
/// dropped half-way through a write (or hit by the write timeout) leaves a partial frame on a
/// byte stream; the transport then refuses further sends with [`TransportError::NotConnected`].
pub trait FrameTransport: Send + Sync + 'static {
    /// Sends one frame (without length prefix).
    fn send_frame(&self, frame: &[u8]) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends several frames, in one write where the transport supports it (TCP and Unix
    /// sockets). Every frame is checked against the size limit before anything is sent.
    fn send_frames(
        &self,
        frames: &[&[u8]],
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            let max = self.max_frame_size();
            for f in frames {
                check_len(f.len(), max)?;
            }
            for f in frames {
                self.send_frame(f).await?;
            }
            Ok(())
        }
    }

    /// Sends one frame that `encode` writes, *with* its 4-byte little-endian length prefix,
    /// into an empty buffer owned by the transport — the path for encoders such as
    /// [`xrpc_proto::MessageEncoder::encode_with`] that produce prefixed frames, without an
    /// intermediate buffer or copy.
    ///
    /// Errors of `encode` (any type a [`TransportError`] converts into) are returned as they
    /// are; nothing is sent then.
    ///
    /// `encode` runs synchronously while the transport's send lock is held, so it must not
    /// block. The transport checks that the buffer holds exactly one frame whose prefix matches
    /// its length and that it is within [`max_frame_size`](Self::max_frame_size).
    ///
    /// The default implementation encodes into a temporary buffer and calls
    /// [`send_frame`](Self::send_frame).
    fn send_frame_with<F, E>(&self, encode: F) -> impl Future<Output = Result<(), E>> + Send
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        async move {
            let mut buf = BytesMut::new();
            encode(&mut buf)?;
            check_prefixed(&buf, self.max_frame_size())?;
            Ok(self.send_frame(&buf[FRAME_PREFIX_LEN..]).await?)
        }
    }

    /// Sends the frames `encode` writes into a buffer owned by the transport — zero or more,
    /// each *with* its 4-byte little-endian length prefix — in one write where the transport
    /// supports it (TCP and Unix sockets), so a batch of small messages costs one system call.
    ///
    /// Each frame is checked against [`max_frame_size`](Self::max_frame_size) before anything
    /// is sent. The default implementation encodes into a temporary buffer and sends the frames
    /// one by one with [`send_frame`](Self::send_frame).
    fn send_batch_with<F, E>(&self, encode: F) -> impl Future<Output = Result<(), E>> + Send
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        async move {
            let mut buf = BytesMut::new();
            encode(&mut buf)?;
            check_prefixed_batch(&buf, self.max_frame_size())?;
            for frame in batch_frames(&buf) {
                self.send_frame(frame).await?;
            }
            Ok(())
        }
    }

    /// Receives the next frame. A clean close (by the peer or locally) is
    /// `Err(TransportError::ConnectionClosed)`.
    fn recv_frame(&self) -> impl Future<Output = Result<Bytes, TransportError>> + Send;

    /// Waits for the next frame, then takes the frames that have already arrived behind it
    /// without waiting again — at most `max` in all (at least one) — and hands each to `each`,
    /// in order. Returns how many. An error after the first frame is left for the next call.
    ///
    /// Readers use it to handle a burst of frames under one lock. By default: one
    /// [`recv_frame`](Self::recv_frame).
    fn recv_frames_with<F>(
        &self,
        max: usize,
        each: F,
    ) -> impl Future<Output = Result<usize, TransportError>> + Send
    where
        F: FnMut(Bytes) + Send,
    {
        let _ = max;
        let mut each = each;
        async move {
            each(self.recv_frame().await?);
            Ok(1)
        }
    }

    /// Whether input is awaited now (the session's `awaits_input`: a call waits for its
    /// answer): a transport that waits for input by spinning a moment first (shared memory)
    /// spins only then, and otherwise sleeps at once — a receive under way that sleeps goes
    /// back to spinning when this turns true and it is polled. Others ignore it.
    fn set_input_awaited(&self, awaited: bool) {
        let _ = awaited;
    }

    /// Bytes received of a frame that is not whole yet (0 between frames, and always for a
    /// transport that only ever delivers whole frames). The session closes a connection whose
    /// frame stays partial too long (`ServerConfig::frame_timeout`).
    fn partial_frame(&self) -> usize {
        0
    }

    /// Bytes of the send under way not yet written (0 when none is, and always for a
    /// transport that cannot tell). A session closes a connection whose write makes no
    /// progress too long (`ServerConfig::write_stall_timeout`); with a transport that cannot
    /// tell, the wait counts from the start of the send.
    fn unwritten(&self) -> usize {
        0
    }

    /// Who the peer is, for a listener's per-peer share of connections
    /// (`ServerConfig::max_connections_per_peer`): its IP address over TCP, its user id over
    /// Unix sockets and shared memory.
    fn peer_key(&self) -> PeerKey {
        PeerKey::Unknown
    }

    /// Who the peer process is, as the kernel reported it when the connection was made
    /// (`SO_PEERCRED`: pid, uid, gid): over Unix sockets and shared memory on Linux; `None`
    /// over TCP, in-process transports and where the system does not tell. A server's
    /// [`PeerPolicy`](xrpc_proto::PeerPolicy) decides from it; handlers see it in their call
    /// context.
    fn peer_credentials(&self) -> Option<PeerCredentials> {
        None
    }

    /// Who the peer is, for handlers (`CallContext::peer`): its socket address over TCP, the
    /// socket path or service name over Unix sockets and shared memory, its
    /// [`peer_key`](Self::peer_key) and [`peer_credentials`](Self::peer_credentials).
    fn peer_info(&self) -> PeerInfo {
        PeerInfo::new()
            .with_key(self.peer_key())
            .with_credentials(self.peer_credentials())
    }

    /// Takes read-buffer room for frames not yet whole from `budget` (a server's, shared by
    /// its connections), from the next read on: past it, receiving waits until
    /// [`ReadBudget::take_freed`] says room came back and the caller polls again. Transports
    /// that never hold part of a frame ignore it.
    fn set_read_budget(&self, budget: ReadBudget) {
        let _ = budget;
    }

    /// Whether the transport has not been closed and has seen no fatal error.
    fn is_connected(&self) -> bool;

    /// Whether the transport is usable; by default the same as
    /// [`is_connected`](Self::is_connected).
    fn is_healthy(&self) -> bool {
        self.is_connected()
    }

    /// Closes the transport in both directions. Pending and later receives on both sides end
    /// with [`TransportError::ConnectionClosed`] (in-process transports first deliver frames
    /// already queued). Idempotent.
    fn close(&self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The transport's counters, if it keeps any.
    fn stats(&self) -> Option<TransportStats>;

    /// A short name for logs, such as `"tcp:127.0.0.1:4000"`.
    fn name(&self) -> &str;

    /// The largest frame this transport sends or accepts.
    fn max_frame_size(&self) -> usize {
        xrpc_proto::DEFAULT_MAX_FRAME_SIZE
    }

    /// Whether the transport also moves in-process values ([`send_value`](Self::send_value)),
    /// so that layers above can skip serialization. Only the in-process `ArcFrameTransport` does.
    fn carries_values(&self) -> bool {
        false
    }

    /// Sends an in-process value on the value stream (kept in order with other values, not
    /// with frames). Transports that carry only frames refuse with
    /// [`TransportError::Protocol`].
    fn send_value(
        &self,
        value: Arc<dyn Any + Send + Sync>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let _ = value;
        async {
            Err(TransportError::Protocol(
                "this transport carries frames only".into(),
            ))
        }
    }

    /// Receives the next in-process value (see [`send_value`](Self::send_value)).
    fn recv_value(
        &self,
    ) -> impl Future<Output = Result<Arc<dyn Any + Send + Sync>, TransportError>> + Send {
        async {
            Err(TransportError::Protocol(
                "this transport carries frames only".into(),
            ))
        }
    }
}

// Every method is forwarded, provided ones too (one left to its default would silently change
// the transport's behaviour).
#[deny(clippy::missing_trait_methods)]
impl<T: FrameTransport> FrameTransport for Arc<T> {
    fn send_frame(&self, frame: &[u8]) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).send_frame(frame)
    }

    fn send_frames(
        &self,
        frames: &[&[u8]],
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).send_frames(frames)
    }

    fn send_frame_with<F, E>(&self, encode: F) -> impl Future<Output = Result<(), E>> + Send
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        (**self).send_frame_with(encode)
    }

    fn send_batch_with<F, E>(&self, encode: F) -> impl Future<Output = Result<(), E>> + Send
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        (**self).send_batch_with(encode)
    }

    fn recv_frame(&self) -> impl Future<Output = Result<Bytes, TransportError>> + Send {
        (**self).recv_frame()
    }

    fn recv_frames_with<F>(
        &self,
        max: usize,
        each: F,
    ) -> impl Future<Output = Result<usize, TransportError>> + Send
    where
        F: FnMut(Bytes) + Send,
    {
        (**self).recv_frames_with(max, each)
    }

    fn set_input_awaited(&self, awaited: bool) {
        (**self).set_input_awaited(awaited)
    }

    fn partial_frame(&self) -> usize {
        (**self).partial_frame()
    }

    fn unwritten(&self) -> usize {
        (**self).unwritten()
    }

    fn peer_key(&self) -> PeerKey {
        (**self).peer_key()
    }

    fn peer_credentials(&self) -> Option<PeerCredentials> {
        (**self).peer_credentials()
    }

    fn peer_info(&self) -> PeerInfo {
        (**self).peer_info()
    }

    fn set_read_budget(&self, budget: ReadBudget) {
        (**self).set_read_budget(budget)
    }

    fn is_connected(&self) -> bool {
        (**self).is_connected()
    }

    fn is_healthy(&self) -> bool {
        (**self).is_healthy()
    }

    fn close(&self) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).close()
    }

    fn stats(&self) -> Option<TransportStats> {
        (**self).stats()
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn max_frame_size(&self) -> usize {
        (**self).max_frame_size()
    }

    fn carries_values(&self) -> bool {
        (**self).carries_values()
    }

    fn send_value(
        &self,
        value: Arc<dyn Any + Send + Sync>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).send_value(value)
    }

    fn recv_value(
        &self,
    ) -> impl Future<Output = Result<Arc<dyn Any + Send + Sync>, TransportError>> + Send {
        (**self).recv_value()
    }
}

/// Implements [`FrameTransport`] for a socket transport `$ty<S, R>` (`S: $bound<R>`) by
/// forwarding to its `inner` [`SocketTransport`](socket::SocketTransport).
macro_rules! forward_frame_transport {
    ($ty:ident, $bound:ident) => {
        // Every method a socket transport has is forwarded (the rest are for value
        // transports and shared memory).
        impl<S: $bound<R>, R: $crate::Runtime> $crate::transport::FrameTransport for $ty<S, R> {
            fn send_frame(
                &self,
                frame: &[u8],
            ) -> impl ::std::future::Future<Output = Result<(), TransportError>> + Send {
                self.inner.send_frame(frame)
            }

            fn send_frames(
                &self,
                frames: &[&[u8]],
            ) -> impl ::std::future::Future<Output = Result<(), TransportError>> + Send {
                self.inner.send_frames(frames)
            }

            fn send_frame_with<F, E>(
                &self,
                encode: F,
            ) -> impl ::std::future::Future<Output = Result<(), E>> + Send
            where
                F: FnOnce(&mut ::bytes::BytesMut) -> Result<(), E> + Send,
                E: From<TransportError> + Send,
            {
                self.inner.send_frame_with(encode)
            }

            fn send_batch_with<F, E>(
                &self,
                encode: F,
            ) -> impl ::std::future::Future<Output = Result<(), E>> + Send
            where
                F: FnOnce(&mut ::bytes::BytesMut) -> Result<(), E> + Send,
                E: From<TransportError> + Send,
            {
                self.inner.send_batch_with(encode)
            }

            fn recv_frame(
                &self,
            ) -> impl ::std::future::Future<Output = Result<::bytes::Bytes, TransportError>> + Send
            {
                self.inner.recv_frame()
            }

            fn recv_frames_with<F>(
                &self,
                max: usize,
                each: F,
            ) -> impl ::std::future::Future<Output = Result<usize, TransportError>> + Send
            where
                F: FnMut(::bytes::Bytes) + Send,
            {
                self.inner.recv_frames_with(max, each)
            }

            fn partial_frame(&self) -> usize {
                self.inner.partial_frame()
            }

            fn unwritten(&self) -> usize {
                self.inner.unwritten()
            }

            fn peer_key(&self) -> ::xrpc_proto::PeerKey {
                self.peer_key
            }

            fn peer_credentials(&self) -> Option<::xrpc_proto::PeerCredentials> {
                self.peer
            }

            fn peer_info(&self) -> ::xrpc_proto::PeerInfo {
                self.describe_peer()
            }

            fn set_read_budget(&self, budget: ::xrpc_proto::ReadBudget) {
                self.inner.set_read_budget(budget)
            }

            fn is_connected(&self) -> bool {
                self.inner.is_connected()
            }

            fn is_healthy(&self) -> bool {
                self.inner.is_healthy()
            }

            fn close(
                &self,
            ) -> impl ::std::future::Future<Output = Result<(), TransportError>> + Send {
                self.inner.close()
            }

            fn stats(&self) -> Option<$crate::transport::TransportStats> {
                Some(self.inner.stats())
            }

            fn name(&self) -> &str {
                &self.name
            }

            fn max_frame_size(&self) -> usize {
                self.inner.max_frame_size()
            }
        }
    };
}
use forward_frame_transport;

/// The builder methods and socket settings shared by the TCP and Unix configurations (same
/// fields: `max_frame_size`, `read_timeout`, `write_timeout`, `max_attempts`, `retry_policy`).
macro_rules! socket_config {
    ($ty:ident) => {
        impl $ty {
            /// The same configuration with another maximum frame size.
            pub fn with_max_frame_size(mut self, max_frame_size: usize) -> Self {
                self.max_frame_size = max_frame_size;
                self
            }

            /// The same configuration with connection retries.
            pub fn with_retry(mut self, max_attempts: u32, policy: RetryPolicy) -> Self {
                self.max_attempts = max_attempts;
                self.retry_policy = policy;
                self
            }

            pub(crate) fn settings(&self) -> SocketSettings {
                SocketSettings {
                    max_frame_size: self.max_frame_size,
                    read_timeout: self.read_timeout,
                    write_timeout: self.write_timeout,
                }
            }
        }
    };
}
use socket_config;
