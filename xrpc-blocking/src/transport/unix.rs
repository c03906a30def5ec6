//! Frames over Unix domain stream sockets (`std::os::unix::net`).

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use xrpc_proto::DEFAULT_MAX_FRAME_SIZE;

use super::{FrameListener, FrameTransport, Io, TransportError, socket};

/// Settings of a [`UnixFrameTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixConfig {
    /// Largest frame sent or accepted (default 16 MiB, as on every transport).
    pub max_frame_size: usize,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// A connected Unix socket carrying length-prefixed frames, wire-compatible with
/// `xrpc_tokio::UnixFrameTransport`.
pub struct UnixFrameTransport {
    io: Io,
}

impl UnixFrameTransport {
    /// Connects to the socket at `path`.
    pub fn connect(path: impl AsRef<Path>, config: UnixConfig) -> Result<Self, TransportError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| {
            TransportError::ConnectionFailed(format!("connect to {} failed: {e}", path.display()))
        })?;
        Self::from_stream(stream, config)
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: UnixStream, config: UnixConfig) -> Result<Self, TransportError> {
        stream
            .set_nonblocking(false)
            .map_err(|e| TransportError::ConnectionFailed(e.to_string()))?;
        Ok(Self {
            io: socket::io(stream, config.max_frame_size)?,
        })
    }
}

/// Accepts Unix socket connections as [`UnixFrameTransport`]s. The socket file is removed
/// when the listener is dropped.
#[derive(Debug)]
pub struct UnixFrameTransportListener {
    config: UnixConfig,
    listener: UnixListener,
    path: PathBuf,
}

impl UnixFrameTransportListener {
    /// Binds to `path` (a stale socket file left there by a dead server is replaced).
    pub fn bind(path: impl AsRef<Path>, config: UnixConfig) -> Result<Self, TransportError> {
        let path = path.as_ref().to_path_buf();
        if UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                TransportError::ConnectionFailed(format!("bind {} failed: {e}", path.display()))
            })?;
        Ok(Self {
            config,
            listener,
            path,
        })
    }
}

impl Drop for UnixFrameTransportListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

socket::socket_transport!(UnixFrameTransport, UnixFrameTransportListener);
