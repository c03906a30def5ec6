//! TLS over TCP (feature `tls`), on tokio, smol and the blocking adapter's runtime: one generic
//! body per behaviour, written against the runtime-neutral transports of `xrpc_async`
//! (`TlsFrameTransport<S, R>`), instantiated for each adapter's socket and runtime by
//! [`adapters!`]. Certificates are made in the test with rcgen: a CA, servers for `localhost`
//! and `127.0.0.1`, clients, an expired server, and a second CA nobody trusts.
//!
//! Each refusal is a [`TransportError::Tls`] (or a call failed by one) whose message says
//! why, and the server goes on serving other clients afterwards.

#[path = "conformance/task.rs"]
#[allow(dead_code)]
mod task;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use xrpc_async::transport::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use xrpc_async::transport::rustls::{self, CertificateError};
use xrpc_async::transport::{
    TcpConfig, TcpFrameTransport, TcpFrameTransportListener, TlsClientConfig, TlsFrameTransport,
    TlsFrameTransportListener, TlsServerConfig,
};
use xrpc_async::{
    FrameListener, FrameTransport, MessageChannelAdapter, RpcClient, RpcServer, Runtime, TcpSocket,
    TransportError,
};
use xrpc_proto::BincodeCodec;

use task::{now, timeout};

// ---- certificates -----------------------------------------------------------------------

/// A certificate authority made for the test.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names`, for a server or a client; `expired`: valid in 2000 only.
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose, expired: bool) -> Identity {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 12, 31);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    fn server(&self) -> Identity {
        self.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        )
    }

    fn client(&self) -> Identity {
        self.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth, false)
    }
}

fn server_config(ca: &Ca) -> TlsServerConfig {
    let (chain, key) = ca.server();
    TlsServerConfig::new(chain, key).unwrap()
}

fn client_config(ca: &Ca) -> TlsClientConfig {
    TlsClientConfig::new([ca.cert.clone()]).unwrap()
}

// ---- servers and clients, generic over the adapter ---------------------------------------

type Client<T, R> = RpcClient<MessageChannelAdapter<T>, BincodeCodec, R>;

/// The test service: `add` and `echo`.
fn service<R: Runtime>() -> RpcServer<BincodeCodec, R> {
    let server = RpcServer::new();
    server.register_typed("add", |(a, b): (i64, i64)| async move { Ok(a + b) });
    server.register_typed("echo", |v: Vec<u8>| async move { Ok(v) });
    server
}

/// Serves the test service from `listener` in a task; shut it down with the server returned.
fn serve<R: Runtime, L: FrameListener>(listener: L) -> RpcServer<BincodeCodec, R> {
    let server = service::<R>();
    let s = server.clone();
    let _detached = R::default().spawn(async move {
        let _ = s.serve_listener(listener).await;
    });
    server
}

async fn tls_server<S: TcpSocket<R>, R: Runtime>(
    tls: TlsServerConfig,
) -> (SocketAddr, RpcServer<BincodeCodec, R>) {
    let l = TlsFrameTransportListener::<S, R>::bind("127.0.0.1:0", TcpConfig::default(), tls)
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    (addr, serve::<R, _>(l))
}

async fn plain_server<S: TcpSocket<R>, R: Runtime>() -> (SocketAddr, RpcServer<BincodeCodec, R>) {
    let l = TcpFrameTransportListener::<S, R>::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    (addr, serve::<R, _>(l))
}

async fn tls_client<S: TcpSocket<R>, R: Runtime>(
    addr: SocketAddr,
    tls: TlsClientConfig,
) -> Result<Client<TlsFrameTransport<S, R>, R>, TransportError> {
    let t = TlsFrameTransport::<S, R>::connect(addr, TcpConfig::default(), tls).await?;
    Ok(RpcClient::new(MessageChannelAdapter::new(t)))
}

async fn plain_client<S: TcpSocket<R>, R: Runtime>(
    addr: SocketAddr,
) -> Client<TcpFrameTransport<S, R>, R> {
    let t = TcpFrameTransport::<S, R>::connect(addr, TcpConfig::default())
        .await
        .unwrap();
    RpcClient::new(MessageChannelAdapter::new(t))
}

/// A unary call and a 64 KiB payload (many TLS records) both ways.
async fn works<T: xrpc_async::MessageChannel, R: Runtime>(client: &RpcClient<T, BincodeCodec, R>) {
    let sum: i64 = client.call("add", &(40i64, 2i64)).await.unwrap();
    assert_eq!(sum, 42);
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let back: Vec<u8> = client.call("echo", &payload).await.unwrap();
    assert_eq!(back, payload);
}

/// The rustls error inside a [`TransportError::Tls`]; panics with the error otherwise.
fn rustls_reason(e: &TransportError) -> &rustls::Error {
    match e {
        TransportError::Tls { reason, .. } => reason
            .downcast_ref::<rustls::Error>()
            .unwrap_or_else(|| panic!("not a rustls error: {e}")),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

/// The handshake refused with a certificate error that `expected` accepts.
fn refused_for(
    r: Result<impl Sized, TransportError>,
    expected: impl Fn(&CertificateError) -> bool,
) {
    let e = r.err().expect("the handshake must be refused");
    let text = e.to_string();
    assert!(text.starts_with("TLS handshake with 127.0.0.1:"), "{text}");
    match rustls_reason(&e) {
        rustls::Error::InvalidCertificate(c) if expected(c) => {}
        other => panic!("unexpected reason {other:?} ({text})"),
    }
}

// ---- the bodies ---------------------------------------------------------------------------

/// A good handshake, calls both ways, and the server's certificate seen by the client.
async fn good_handshake_and_calls<S: TcpSocket<R>, R: Runtime>() {
    let ca = Ca::new("xrpc test CA");
    let (chain, key) = ca.server();
    let tls = TlsServerConfig::new(chain.clone(), key).unwrap();
    let (addr, server) = tls_server::<S, R>(tls).await;
    let t = TlsFrameTransport::<S, R>::connect(addr, TcpConfig::default(), client_config(&ca))
        .await
        .unwrap();
    assert_eq!(t.peer_certificates(), chain);
    assert!(t.name().starts_with("tls:127.0.0.1:"), "{}", t.name());
    let client = RpcClient::<_, BincodeCodec, R>::new(MessageChannelAdapter::new(t));
    works(&client).await;
    // A host name resolves and is the name verified.
    let port = addr.port();
    let t = TlsFrameTransport::<S, R>::connect(
        ("localhost", port),
        TcpConfig::default(),
        client_config(&ca),
    )
    .await
    .unwrap();
    works(&RpcClient::<_, BincodeCodec, R>::new(
        MessageChannelAdapter::new(t),
    ))
    .await;
    server.shutdown();
}

/// Mutual TLS: a client with a certificate of the client CA is served; one without, or with
/// a certificate of another CA, is refused; the server serves the good one afterwards.
async fn mutual_tls<S: TcpSocket<R>, R: Runtime>() {
    let ca = Ca::new("xrpc test CA");
    let client_ca = Ca::new("xrpc client CA");
    let (chain, key) = ca.server();
    let tls = TlsServerConfig::with_client_roots(chain, key, [client_ca.cert.clone()]).unwrap();
    let (addr, server) = tls_server::<S, R>(tls).await;
    let (chain, key) = client_ca.client();
    let with_cert =
        TlsClientConfig::with_client_certificate([ca.cert.clone()], chain, key).unwrap();
    works(&tls_client::<S, R>(addr, with_cert.clone()).await.unwrap()).await;

    // TLS 1.3: the client's handshake is over before the server checks its certificate, so
    // the refusal comes as an alert on the first call (or at connect, if it is quick).
    let (chain, key) = ca.client();
    let wrong_ca = TlsClientConfig::with_client_certificate([ca.cert.clone()], chain, key).unwrap();
    for (what, tls) in [("no", client_config(&ca)), ("an untrusted", wrong_ca)] {
        let text = match tls_client::<S, R>(addr, tls).await {
            Err(e) => e.to_string(),
            Ok(client) => match client.call::<_, i64>("add", &(1i64, 1i64)).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a client with {what} certificate was served"),
            },
        };
        assert!(
            text.contains("TLS") && text.contains("alert"),
            "{what} certificate: {text}"
        );
    }
    works(&tls_client::<S, R>(addr, with_cert).await.unwrap()).await;
    server.shutdown();
}

/// A certificate for another name, from an untrusted CA, or expired: the client refuses the
/// handshake with rustls's reason; the server serves a good client afterwards.
async fn refused_certificates<S: TcpSocket<R>, R: Runtime>() {
    let ca = Ca::new("xrpc test CA");
    let (addr, server) = tls_server::<S, R>(server_config(&ca)).await;

    let other_name = client_config(&ca)
        .with_server_name("elsewhere.example")
        .unwrap();
    refused_for(tls_client::<S, R>(addr, other_name).await, |c| {
        matches!(
            c,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    });
    let stranger = Ca::new("a CA nobody trusts");
    refused_for(
        tls_client::<S, R>(addr, client_config(&stranger)).await,
        |c| matches!(c, CertificateError::UnknownIssuer),
    );
    works(&tls_client::<S, R>(addr, client_config(&ca)).await.unwrap()).await;
    server.shutdown();

    let (chain, key) = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        true,
    );
    let (addr, server) = tls_server::<S, R>(TlsServerConfig::new(chain, key).unwrap()).await;
    refused_for(tls_client::<S, R>(addr, client_config(&ca)).await, |c| {
        matches!(
            c,
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )
    });
    server.shutdown();
}

/// A plaintext client at a TLS server, and a TLS client at a plaintext server: each told at
/// once that the other end speaks TLS or does not, and the server goes on serving.
async fn plaintext_and_tls_mixed<S: TcpSocket<R>, R: Runtime>() {
    let ca = Ca::new("xrpc test CA");
    let (addr, server) = tls_server::<S, R>(server_config(&ca)).await;
    let plain = plain_client::<S, R>(addr).await;
    let e = timeout::<R, _>(
        Duration::from_secs(5),
        plain.call::<_, i64>("add", &(1i64, 1i64)),
    )
    .await
    .expect("the plaintext client is answered at once")
    .expect_err("a plaintext client at a TLS server");
    let text = e.to_string();
    assert!(
        text.contains("the peer answered with a TLS alert: it speaks TLS"),
        "{text}"
    );
    works(&tls_client::<S, R>(addr, client_config(&ca)).await.unwrap()).await;
    server.shutdown();

    let (addr, server) = plain_server::<S, R>().await;
    let t0 = now::<R>();
    let e = tls_client::<S, R>(addr, client_config(&ca))
        .await
        .err()
        .expect("a TLS client at a plaintext server");
    assert!(matches!(e, TransportError::Tls { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("the peer closed the connection in the handshake"),
        "{e}"
    );
    assert!(
        now::<R>() - t0 < Duration::from_secs(5),
        "told at once, not at the handshake timeout"
    );
    works(&plain_client::<S, R>(addr).await).await;
    server.shutdown();
}

/// A peer that connects and never says a word holds up neither the accept loop (another
/// client is served meanwhile) nor, past the handshake timeout, its place: with one place for
/// handshakes, the next client gets it once the silent peer's time is up, and the silent peer
/// is disconnected.
async fn a_stalled_handshake_holds_up_no_one<S: TcpSocket<R>, R: Runtime>() {
    let ca = Ca::new("xrpc test CA");
    let (addr, server) = tls_server::<S, R>(server_config(&ca)).await;
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let t0 = now::<R>();
    let client = timeout::<R, _>(
        Duration::from_secs(5),
        tls_client::<S, R>(addr, client_config(&ca)),
    )
    .await
    .expect("a silent peer holds up the accept loop");
    works(&client.unwrap()).await;
    assert!(now::<R>() - t0 < Duration::from_secs(2));
    server.shutdown();

    let bound = Duration::from_millis(300);
    let tls = server_config(&ca)
        .with_handshake_timeout(bound)
        .with_max_handshakes(1);
    let (addr, server) = tls_server::<S, R>(tls).await;
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    // Let the listener take the silent one first.
    task::sleep::<R>(Duration::from_millis(50)).await;
    let t0 = now::<R>();
    let client = timeout::<R, _>(
        Duration::from_secs(5),
        tls_client::<S, R>(addr, client_config(&ca)),
    )
    .await
    .expect("the silent peer holds its place past the handshake timeout");
    works(&client.unwrap()).await;
    assert!(now::<R>() - t0 >= bound - Duration::from_millis(100));
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let closed = silent.read(&mut [0; 64]);
    assert!(
        matches!(closed, Ok(0))
            || closed.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the silent peer is disconnected"
    );
    server.shutdown();
}

/// A balanced client whose endpoints are TLS servers (the tokio adapter's `TlsConnector`):
/// calls go round robin over two TLS servers.
#[test]
fn a_balanced_client_over_tls_endpoints() {
    use std::sync::Arc;
    use xrpc_tokio::{Endpoint, LoadBalancedClient, LoadBalancer, RoundRobin, StaticDiscovery};
    tokio_block_on(async {
        let ca = Ca::new("xrpc test CA");
        let mut servers = Vec::new();
        let mut endpoints = Vec::new();
        for name in ["a", "b"] {
            let l = xrpc_tokio::TlsFrameTransportListener::bind(
                "127.0.0.1:0",
                TcpConfig::default(),
                server_config(&ca),
            )
            .await
            .unwrap();
            endpoints.push(Endpoint::Tcp(l.local_addr().unwrap()));
            let server = xrpc_tokio::RpcServer::new();
            server.register_typed("who", move |(): ()| async move { Ok(name.to_string()) });
            let s = server.clone();
            tokio::spawn(async move { s.serve_listener(l).await });
            servers.push(server);
        }
        let lb = Arc::new(LoadBalancer::new(
            Arc::new(StaticDiscovery::new(endpoints)),
            RoundRobin::new(),
        ));
        let client: LoadBalancedClient<MessageChannelAdapter<xrpc_tokio::TlsFrameTransport>> =
            LoadBalancedClient::new(lb, xrpc_tokio::TlsConnector::new(client_config(&ca)));
        client.init().await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(client.call::<_, String>("who", &()).await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, ["a", "a", "b", "b"]);
        for s in servers {
            s.shutdown();
        }
    });
}

// ---- the adapters ---------------------------------------------------------------------------

macro_rules! adapters {
    ($($adapter:ident => $socket:ty, $runtime:ty, $block_on:path;)*) => {$(
        mod $adapter {
            adapters!(@cases $socket, $runtime, $block_on;
                good_handshake_and_calls,
                mutual_tls,
                refused_certificates,
                plaintext_and_tls_mixed,
                a_stalled_handshake_holds_up_no_one,
            );
        }
    )*};
    (@cases $socket:ty, $runtime:ty, $block_on:path; $($case:ident,)*) => {$(
        #[test]
        fn $case() {
            $block_on(crate::$case::<$socket, $runtime>())
        }
    )*};
}

fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

adapters! {
    on_tokio => ::tokio::net::TcpStream, xrpc_tokio::Tokio, crate::tokio_block_on;
    on_smol => ::smol::Async<std::net::TcpStream>, xrpc_smol::Smol, ::smol::block_on;
    on_blocking => xrpc_blocking::runtime::StdSocket<std::net::TcpStream>, xrpc_blocking::Blocking,
        xrpc_blocking::Blocking::block_on;
}
