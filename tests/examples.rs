//! Smoke test of the examples: runs each example binary cargo already built and checks that it
//! exits successfully.
//!
//! `cargo test` builds the examples (into `target/<profile>/examples/`, next to this test's
//! `deps/` directory) before it runs any test, so nothing is compiled here. When an example was
//! not built — `cargo test --test examples`, or `custom_codec` without `--features
//! codec-json` — its check is skipped with a note rather than failed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where cargo puts the example binaries of this build: `<target>/<profile>/examples/`.
fn example_path(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // <target>/<profile>/deps/examples-<hash>
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

fn run_example(name: &str) {
    run_example_with(name, &[]);
}

fn run_example_with(name: &str, env: &[(&str, &str)]) {
    let Some(path) = example_path(name) else {
        eprintln!(
            "skipped: example {name} is not built (plain `cargo test` builds the examples; \
             custom_codec needs --features codec-json)"
        );
        return;
    };
    let mut child = Command::new(&path)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let limit = Duration::from_secs(60);
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child
        .wait_with_output()
        .expect("collect the example's stderr");
    assert!(
        status.success(),
        "example {name} failed ({status}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn byte_transports() {
    run_example("byte_transports");
}

#[test]
fn streaming() {
    run_example("streaming");
}

#[test]
fn compression() {
    run_example("compression");
}

#[test]
fn custom_codec() {
    run_example("custom_codec");
}

#[test]
fn demo() {
    // The README's first command: its own server process, shared memory and TCP.
    run_example_with("demo", &[("XRPC_DEMO_CALLS", "300")]);
}
