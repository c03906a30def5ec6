//! [`Discovery`]: where the endpoints of a service are found — [`StaticDiscovery`], a fixed
//! list, and [`DnsDiscovery`], a name's address records resolved again every refresh
//! interval through a [`Resolver`] (the system's, or one a test controls).
//!
//! Discovery may block (the system resolver's `getaddrinfo` does): the
//! [`LoadBalancer`](super::LoadBalancer) asks it from a task on the client's runtime, when a
//! refresh is due, through [`Runtime::unblock`](crate::Runtime::unblock) — the runtime's pool
//! for blocking work, never a thread that runs tasks, and never inside a call.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use xrpc_proto::balance::Endpoint;

/// Discovery failed; the endpoints found before stay in use.
#[derive(Debug, Clone, thiserror::Error)]
#[error("discovery of {what} failed: {reason}")]
pub struct DiscoveryError {
    /// What was looked up.
    pub what: String,
    /// Why it failed.
    pub reason: String,
}

/// A source of endpoints (the original API's `ServiceDiscovery`).
pub trait Discovery: Send + Sync + 'static {
    /// The endpoints as of now. May block: it runs on the runtime's pool for blocking work.
    fn discover(&self) -> Result<Vec<Endpoint>, DiscoveryError>;

    /// How often to ask again (`None`: the endpoints never change).
    fn refresh_interval(&self) -> Option<Duration> {
        None
    }
}

/// A fixed list of endpoints.
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    endpoints: Vec<Endpoint>,
}

impl StaticDiscovery {
    /// The list.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self { endpoints }
    }
}

impl Discovery for StaticDiscovery {
    fn discover(&self) -> Result<Vec<Endpoint>, DiscoveryError> {
        Ok(self.endpoints.clone())
    }
}

/// Resolves a host name to addresses.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host`, with `port`.
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// Any `Fn(host, port)` is a resolver (tests answer from a table they change).
impl<F> Resolver for F
where
    F: Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
{
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self(host, port)
    }
}

/// The operating system's resolver (`getaddrinfo`, which blocks: it runs on the runtime's pool
/// for blocking work).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// The TCP endpoints a host name resolves to, resolved again every refresh interval (30 s by
/// default): endpoints are added and removed as the records change.
#[derive(Debug, Clone)]
pub struct DnsDiscovery<R: Resolver = SystemResolver> {
    host: String,
    port: u16,
    resolver: R,
    interval: Duration,
}

impl DnsDiscovery {
    /// `host:port` through the system resolver.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::with_resolver(host, port, SystemResolver)
    }
}

impl<R: Resolver> DnsDiscovery<R> {
    /// `host:port` through `resolver`.
    pub fn with_resolver(host: impl Into<String>, port: u16, resolver: R) -> Self {
        Self {
            host: host.into(),
            port,
            resolver,
            interval: Duration::from_secs(30),
        }
    }

    /// Resolves again every `interval`.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

impl<R: Resolver> Discovery for DnsDiscovery<R> {
    fn discover(&self) -> Result<Vec<Endpoint>, DiscoveryError> {
        let addrs = self
            .resolver
            .resolve(&self.host, self.port)
            .map_err(|e| DiscoveryError {
                what: format!("{}:{}", self.host, self.port),
                reason: e.to_string(),
            })?;
        Ok(addrs.into_iter().map(Endpoint::Tcp).collect())
    }

    fn refresh_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}
