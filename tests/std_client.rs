//! The core stands alone: `xrpc-proto`'s std-only example (`std_client`, no async runtime)
//! calls the tokio example server (`rpc_client_server -- server`) over TCP — a unary call, a
//! server stream with credit, and a call whose deadline passes.
//!
//! `cargo test` builds both examples before it runs this test; a missing one fails it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/std_client-<hash> → <target>/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("<target>/<profile>");
    let path = dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example {name} is not built at {} (run the whole `cargo test --workspace`)",
        path.display()
    );
    path
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_std_client_calls_the_tokio_server() {
    // A port free right now (the server reports the address it bound).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Server(
        Command::new(example("rpc_client_server"))
            .arg("server")
            .env("XRPC_ADDR", &addr)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the tokio example server"),
    );
    let stdout = server.0.stdout.take().expect("the server's stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the server's first line");
    assert!(
        first.contains(&addr),
        "the server listens elsewhere: {first}"
    );

    let out = Command::new(example("std_client"))
        .env("XRPC_ADDR", &addr)
        .output()
        .expect("run the std client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "std_client failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("add(1, 2) = 3"), "{text}");
    assert!(text.contains("streamed 100 items, sum 4950"), "{text}");
    assert!(text.contains("sleep(500 ms) timed out"), "{text}");
}
