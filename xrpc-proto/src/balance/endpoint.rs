//! [`Endpoint`]: where a server listens — a TCP address, a Unix socket path or a shared-memory
//! service name — written `tcp://127.0.0.1:8001`, `unix:///run/app.sock`, `shm://app`.

use std::fmt;
// `core::net`: an address is a value here (parsed, compared, shown); nothing connects to it.
use core::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// The address of one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
    /// A shared-memory service name.
    SharedMemory(String),
    /// Any other scheme, for a custom connector.
    Custom {
        /// The scheme (`quic`, `vsock`, ...).
        scheme: String,
        /// The address, as the connector reads it.
        address: String,
    },
}

/// A string that does not name an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// A `tcp://` address (or the argument of [`Endpoint::tcp_from_str`]) is not `host:port`
    /// with a numeric IP.
    #[error("invalid TCP address {address:?}: {reason}")]
    InvalidTcp {
        /// The address given.
        address: String,
        /// What the parser said.
        reason: String,
    },
    /// There is no `scheme://` prefix.
    #[error("endpoint {0:?} has no scheme (expected tcp://, unix://, shm:// or another://)")]
    NoScheme(String),
    /// The address after the scheme is empty.
    #[error("endpoint {0:?} has an empty address")]
    Empty(String),
}

impl Endpoint {
    /// A TCP endpoint from `"127.0.0.1:8001"` (with or without `tcp://`).
    pub fn tcp_from_str(address: &str) -> Result<Self, EndpointError> {
        let bare = address.strip_prefix("tcp://").unwrap_or(address);
        bare.parse()
            .map(Self::Tcp)
            .map_err(|e: core::net::AddrParseError| EndpointError::InvalidTcp {
                address: address.to_owned(),
                reason: e.to_string(),
            })
    }

    /// A Unix socket endpoint.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::Unix(path.into())
    }

    /// A shared-memory endpoint.
    pub fn shared_memory(name: impl Into<String>) -> Self {
        Self::SharedMemory(name.into())
    }

    /// The scheme: `tcp`, `unix`, `shm` or a custom one.
    pub fn scheme(&self) -> &str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Unix(_) => "unix",
            Self::SharedMemory(_) => "shm",
            Self::Custom { scheme, .. } => scheme,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::SharedMemory(n) => write!(f, "shm://{n}"),
            Self::Custom { scheme, address } => write!(f, "{scheme}://{address}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    /// Reads the [`Display`](fmt::Display) form back.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, address)) = s.split_once("://") else {
            return Err(EndpointError::NoScheme(s.to_owned()));
        };
        if address.is_empty() {
            return Err(EndpointError::Empty(s.to_owned()));
        }
        Ok(match scheme {
            "tcp" => Self::tcp_from_str(address)?,
            "unix" => Self::Unix(address.into()),
            "shm" => Self::SharedMemory(address.to_owned()),
            _ => Self::Custom {
                scheme: scheme.to_owned(),
                address: address.to_owned(),
            },
        })
    }
}
