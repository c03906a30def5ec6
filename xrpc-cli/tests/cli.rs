//! The `xrpc` binary end to end, against a server in this process over shared memory, a Unix
//! socket and TLS (certificates made here with rcgen): `call`, `ping -c 3`, `methods`, `stats`,
//! `list`, and the errors (no such service, unknown method, bad JSON).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde::{Deserialize, Serialize};
use xrpc_tokio::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use xrpc_tokio::{
    RpcError, RpcServer, SharedMemoryConfig, SharedMemoryFrameTransportListener, Signature,
    TcpConfig, TlsFrameTransportListener, TlsServerConfig, UnixConfig, UnixFrameTransportListener,
};

#[derive(Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

/// Where the test server listens (one server, three listeners, for every test).
struct Served {
    shm: String,
    unix: PathBuf,
    tls: String,
    ca: PathBuf,
}

fn served() -> &'static Served {
    static S: OnceLock<Served> = OnceLock::new();
    S.get_or_init(start)
}

fn start() -> Served {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("xrpc-cli-test-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    // A CA and a server certificate for localhost.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "xrpc-cli test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

    let shm = format!("xrpc-cli-test-{pid}");
    let unix = dir.join("svc.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let (shm2, unix2) = (shm.clone(), unix.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = RpcServer::new(); // Bincode: the tool's JSON is answered in JSON
            server.register_typed("add", |r: Add| async move { Ok(r.a + r.b) });
            server.set_signature("add", Signature::new("fn(Add) -> i64"));
            server.register_typed("fail", |(): ()| async move {
                Err::<(), _>(RpcError::server("always fails"))
            });
            // Takes 5 ms: a latency of known size for the statistics.
            server.register_typed("slow", |(): ()| async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(())
            });
            let s = SharedMemoryFrameTransportListener::bind(&shm2, SharedMemoryConfig::default())
                .unwrap();
            let u = UnixFrameTransportListener::bind(&unix2, UnixConfig::default())
                .await
                .unwrap();
            let tls = TlsServerConfig::new(chain, key).unwrap();
            let t = TlsFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default(), tls)
                .await
                .unwrap();
            tx.send(t.local_addr().unwrap().port()).unwrap();
            let (a, b, c) = (server.clone(), server.clone(), server);
            let _ = tokio::join!(
                a.serve_listener(s),
                b.serve_listener(u),
                c.serve_listener(t)
            );
        });
    });
    let port = rx.recv().unwrap();
    Served {
        shm,
        unix,
        tls: format!("localhost:{port}"),
        ca,
    }
}

fn xrpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xrpc"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The three targets, with the options each needs.
fn targets() -> Vec<Vec<String>> {
    let s = served();
    vec![
        vec![format!("shm:{}", s.shm)],
        vec![format!("unix:{}", s.unix.display())],
        vec![
            "--ca".into(),
            s.ca.display().to_string(),
            format!("tls:{}", s.tls),
        ],
    ]
}

/// `xrpc <command> <options and target> <rest>`.
fn run(command: &str, target: &[String], rest: &[&str]) -> Output {
    let mut args: Vec<&str> = vec![command];
    args.extend(target.iter().map(String::as_str));
    args.extend(rest);
    xrpc(&args)
}

#[test]
fn call_answers_json_over_every_transport() {
    for t in targets() {
        let o = run("call", &t, &["add", r#"{"a": 2, "b": 40}"#]);
        assert!(o.status.success(), "{t:?}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "42", "{t:?}");
    }
}

#[test]
fn ping_counts_and_summarizes() {
    for t in targets() {
        let o = run("ping", &t, &["-c", "3", "-i", "0.01"]);
        assert!(o.status.success(), "{t:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert_eq!(out.matches("reply from").count(), 3, "{out}");
        assert!(out.contains("3 calls, 3 replies, 0 lost"), "{out}");
        assert!(out.contains("min/avg/p99/max"), "{out}");
    }
    let t = &targets()[0];
    let o = run("ping", t, &["-c", "2", "-i", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["received"], 2);
    // The summary's fields, numbers (their values and units: `summary_percentiles` in the
    // tool's unit tests). Round trips over a local socket take more than nothing.
    for k in ["min_us", "avg_us", "p99_us", "max_us"] {
        assert!(v[k].as_f64().is_some(), "{k} in {v}");
    }
    assert!(v["min_us"].as_f64() > Some(0.0), "{v}");
}

#[test]
fn methods_and_stats() {
    for t in targets() {
        let o = run("methods", &t, &[]);
        assert!(o.status.success(), "{t:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("add  fn(Add) -> i64"), "{out}");
        assert!(out.contains("fail"), "{out}");
        assert!(
            !out.contains("xrpc."),
            "the built-in methods are not listed: {out}"
        );
    }
    let t = &targets()[1];
    let o = run("call", t, &["add", r#"{"a": 1, "b": 1}"#]);
    assert!(o.status.success());
    let o = run("call", t, &["slow", "null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run("stats", t, &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["uptime_ms"].as_u64().is_some());
    assert!(v["connections"].as_u64().unwrap() >= 1, "this one at least");
    let method = |name: &str| {
        v["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} was called"))
            .clone()
    };
    let add = method("add");
    assert!(add["calls"].as_u64().unwrap() >= 1);
    // In microseconds: the 5 ms handler's calls take at least 5,000 (5 in milliseconds,
    // 5,000,000 in nanoseconds) and well under a second.
    let slow = method("slow");
    let (p50, p99) = (
        slow["latency_us"]["p50"].as_u64().unwrap(),
        slow["latency_us"]["p99"].as_u64().unwrap(),
    );
    assert!((5_000..1_000_000).contains(&p50), "{slow}");
    assert!((5_000..1_000_000).contains(&p99), "{slow}");
    let o = run("stats", t, &[]);
    assert!(stdout(&o).contains("uptime"), "{}", stdout(&o));
}

#[test]
fn list_shows_the_services_of_this_process() {
    let s = served();
    let o = xrpc(&["list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let pid = std::process::id();
    let unix = std::fs::canonicalize(&s.unix).unwrap();
    for target in [format!("shm:{}", s.shm), format!("unix:{}", unix.display())] {
        let row = rows
            .iter()
            .find(|r| r["target"] == target.as_str())
            .unwrap_or_else(|| panic!("{target} not in {v}"));
        assert_eq!(row["pid"], pid);
        assert_eq!(row["status"], "answers", "{row}");
    }
}

#[test]
fn errors_a_person_can_act_on() {
    // No such service: exit 3, and where to look.
    let o = xrpc(&["call", "shm:xrpc-cli-no-such-service", "add", "{}"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("no server for service"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("xrpc list"), "{}", stderr(&o));
    // Nothing listens: refused.
    let o = xrpc(&["ping", "-c", "1", "tcp:127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Bad JSON: exit 2, with the position, before connecting.
    let t = &targets()[0];
    let o = run("call", t, &["add", "{\"a\": 1,\n \"b\": }"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 2 column"), "{}", stderr(&o));
    // An unknown method, and the server's error: exit 1.
    let o = run("call", t, &["nope", "null"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("method not found: nope"),
        "{}",
        stderr(&o)
    );
    let o = run("call", t, &["fail", "null"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("always fails"), "{}", stderr(&o));
    // A request the handler cannot read as its type.
    let o = run("call", t, &["add", r#"{"a": "x"}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot decode the request of `add`"),
        "{}",
        stderr(&o)
    );
    // TLS without roots, and with a name the certificate does not carry.
    let s = served();
    let tls = format!("tls:{}", s.tls);
    let o = xrpc(&["ping", "-c", "1", &tls]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs --ca"), "{}", stderr(&o));
    let ca = s.ca.display().to_string();
    let o = xrpc(&[
        "ping",
        "-c",
        "1",
        "--ca",
        &ca,
        "--server-name",
        "other.example",
        &tls,
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("TLS handshake"), "{}", stderr(&o));
    // Usage.
    let o = xrpc(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = xrpc(&["call", "ftp:x", "m"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown scheme"), "{}", stderr(&o));
    // No color off a terminal.
    assert!(!stderr(&o).contains('\x1b'));
}
