//! What [`TcpFrameTransport::connect`](super::TcpFrameTransport::connect) and
//! [`TcpFrameTransportListener::bind`](super::TcpFrameTransportListener::bind) take: an
//! address as [`std::net::ToSocketAddrs`] takes it, resolved without blocking a task's thread.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::runtime::{Runtime, unblock_boxed};

/// An address to connect to or to bind: a [`SocketAddr`] (or a `SocketAddrV4`, a
/// `SocketAddrV6`), an IP address and a port (`(IpAddr, u16)`, …), a string `"host:port"`
/// (`"127.0.0.1:9000"`, `"[::1]:9000"`, `"localhost:9000"`), a host and a port
/// (`("localhost", 9000)`), a slice of addresses, or a reference to any of them — what
/// [`std::net::ToSocketAddrs`] takes.
///
/// A literal address is parsed at once. A host name is looked up by the system's resolver,
/// which blocks its thread, so the lookup runs through [`Runtime::unblock`] (the runtime's
/// pool for blocking work), never on a thread that runs tasks.
///
/// The trait is sealed: its implementations are those above.
pub trait ToSocketAddrs: sealed::Resolve {}

/// The lookup behind [`ToSocketAddrs`], out of reach outside this crate.
mod sealed {
    use std::net::SocketAddr;

    /// The addresses, or the name to look up.
    #[derive(Debug)]
    pub enum Lookup {
        /// Literal addresses.
        Ready(Vec<SocketAddr>),
        /// `"host:port"`, for the system's resolver.
        Name(String),
        /// A host name and a port, for the system's resolver.
        HostPort(String, u16),
    }

    /// Turns an address into a [`Lookup`] without blocking.
    pub trait Resolve {
        /// The addresses, or the name to look up.
        fn lookup(&self) -> Lookup;
    }
}

use sealed::{Lookup, Resolve};

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}
impl<T: Resolve + ?Sized> Resolve for &T {
    fn lookup(&self) -> Lookup {
        (**self).lookup()
    }
}

/// Literal addresses: `$ty` converts into a [`SocketAddr`].
macro_rules! literal {
    ($($ty:ty),*) => {$(
        impl ToSocketAddrs for $ty {}
        impl Resolve for $ty {
            fn lookup(&self) -> Lookup {
                Lookup::Ready(vec![SocketAddr::from(*self)])
            }
        }
    )*};
}

literal!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl ToSocketAddrs for [SocketAddr] {}
impl Resolve for [SocketAddr] {
    fn lookup(&self) -> Lookup {
        Lookup::Ready(self.to_vec())
    }
}

impl ToSocketAddrs for str {}
impl Resolve for str {
    fn lookup(&self) -> Lookup {
        match self.parse() {
            Ok(addr) => Lookup::Ready(vec![addr]),
            Err(_) => Lookup::Name(self.to_owned()),
        }
    }
}

impl ToSocketAddrs for String {}
impl Resolve for String {
    fn lookup(&self) -> Lookup {
        self.as_str().lookup()
    }
}

impl ToSocketAddrs for (&str, u16) {}
impl Resolve for (&str, u16) {
    fn lookup(&self) -> Lookup {
        let (host, port) = *self;
        match host.parse::<IpAddr>() {
            Ok(ip) => Lookup::Ready(vec![SocketAddr::new(ip, port)]),
            Err(_) => Lookup::HostPort(host.to_owned(), port),
        }
    }
}

impl ToSocketAddrs for (String, u16) {}
impl Resolve for (String, u16) {
    fn lookup(&self) -> Lookup {
        (self.0.as_str(), self.1).lookup()
    }
}

/// The addresses of `addr`: parsed at once, or looked up on `rt`'s pool for blocking work.
/// The error names what was looked up.
pub(crate) async fn resolve<R: Runtime>(
    rt: &R,
    addr: &(impl ToSocketAddrs + ?Sized),
) -> Result<Vec<SocketAddr>, (String, io::Error)> {
    use std::net::ToSocketAddrs as _;
    let (name, found) = match addr.lookup() {
        Lookup::Ready(addrs) => return Ok(addrs),
        Lookup::Name(name) => {
            let lookup = name.clone();
            let found = unblock_boxed(rt, move || {
                lookup.as_str().to_socket_addrs().map(Iterator::collect)
            });
            (name, found)
        }
        Lookup::HostPort(host, port) => {
            let lookup = host.clone();
            let found = unblock_boxed(rt, move || {
                (lookup.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect)
            });
            (format!("{host}:{port}"), found)
        }
    };
    match found.await {
        Some(Ok(addrs)) => Ok(addrs),
        Some(Err(e)) => Err((name, e)),
        None => Err((
            name,
            io::Error::other("the lookup panicked or could not run"),
        )),
    }
}

/// The host `addr` names — `localhost` of `"localhost:9000"`, `::1` of `"[::1]:9000"`, the IP
/// address of a literal address — for a TLS server name; `None` for an empty list.
#[cfg(feature = "tls")]
pub(crate) fn host_of(addr: &(impl ToSocketAddrs + ?Sized)) -> Option<String> {
    match addr.lookup() {
        Lookup::Ready(addrs) => addrs.first().map(|a| a.ip().to_string()),
        Lookup::Name(name) => {
            let host = name
                .rsplit_once(':')
                .map_or(name.as_str(), |(host, _)| host);
            Some(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
        }
        Lookup::HostPort(host, _) => Some(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(addr: impl ToSocketAddrs) -> Vec<SocketAddr> {
        match addr.lookup() {
            Lookup::Ready(addrs) => addrs,
            other => panic!("expected literal addresses, got {other:?}"),
        }
    }

    #[test]
    fn literal_addresses_need_no_lookup() {
        let a: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(ready(a), [a]);
        let by_ref: &SocketAddr = &a;
        assert_eq!(ready(by_ref), [a]);
        assert_eq!(ready("127.0.0.1:9000"), [a]);
        assert_eq!(ready(String::from("127.0.0.1:9000")), [a]);
        assert_eq!(ready(("127.0.0.1", 9000)), [a]);
        assert_eq!(ready((a.ip(), 9000)), [a]);
        assert_eq!(ready(&[a, a][..]), [a, a]);
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(ready("[::1]:9000"), [v6]);
    }

    #[test]
    fn host_names_are_looked_up() {
        assert!(matches!("localhost:9000".lookup(), Lookup::Name(n) if n == "localhost:9000"));
        assert!(matches!(
            ("localhost", 9000).lookup(),
            Lookup::HostPort(h, 9000) if h == "localhost"
        ));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn the_host_of_an_address_is_its_tls_server_name() {
        use super::host_of;
        assert_eq!(host_of("localhost:9000").as_deref(), Some("localhost"));
        assert_eq!(host_of("[::1]:9000").as_deref(), Some("::1"));
        assert_eq!(
            host_of(&("api.example.com", 443)).as_deref(),
            Some("api.example.com")
        );
        let addr: std::net::SocketAddr = "10.0.0.7:4443".parse().unwrap();
        assert_eq!(host_of(&addr).as_deref(), Some("10.0.0.7"));
    }
}
