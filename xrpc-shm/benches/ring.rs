//! Shared-memory ring benchmark with same-run baselines (STYLE.md §7).
//!
//! * Round trip of a 64 B frame between two threads: shm ring vs a Unix
//!   socket pair carrying the same bytes (and, for the shm ring, between two
//!   processes). p50 / p99 over many single round trips.
//! * One-way throughput for 64 B, 4 KiB, 64 KiB and 1 MiB frames, receiving
//!   in place (zero-copy) and by copying out, vs a same-process `memcpy` of
//!   the same sizes. Median of several runs. The sender publishes in batches
//!   of about 16 KiB (`ShmSender::cork`/`flush`), the receiver hands room
//!   back in batches (every quarter ring, and when it finds the ring empty).
//!
//! Run with `cargo bench -p xrpc-shm`; a plain `main`, it prints a table.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use xrpc_shm::{ShmConfig, ShmConnection, ShmError, ShmListener};

const CHILD: &str = "XRPC_SHM_BENCH_CHILD";
const CHILD_PIN: &str = "XRPC_SHM_BENCH_CHILD_PIN";
const RTT_ITERS: usize = 20_000;
const RTT_WARMUP: usize = 2_000;
const RUNS: usize = 5;

fn config() -> ShmConfig {
    ShmConfig {
        ring_capacity: 8 << 20,
        max_frame_size: 1 << 20,
        spin_budget: Duration::from_micros(spin_us()),
        ..ShmConfig::default()
    }
}

/// Spin budget of both sides: `XRPC_SHM_BENCH_SPIN_US`, default 50 µs (the
/// `ShmConfig` default).
fn spin_us() -> u64 {
    std::env::var("XRPC_SHM_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Pins the calling thread to `cpu` (best effort).
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn name(tag: &str) -> String {
    format!("bench-{}-{tag}", std::process::id())
}

fn pair(tag: &str) -> (ShmConnection, ShmConnection) {
    let listener = ShmListener::bind(&name(tag), config()).expect("bind");
    let n = name(tag);
    let client = thread::spawn(move || ShmConnection::connect(&n, config()).expect("connect"));
    let server = listener.accept().expect("accept");
    (server, client.join().expect("client thread"))
}

/// Echoes every frame back until the peer goes away.
fn echo(conn: ShmConnection) {
    let (mut tx, mut rx) = conn.split();
    loop {
        match rx.recv(None) {
            Ok(f) => {
                if tx.send(&f, None).is_err() {
                    return;
                }
            }
            Err(ShmError::Disconnected) => return,
            Err(e) => panic!("echo: {e}"),
        }
    }
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn shm_rtt(client: &mut ShmConnection) -> (Duration, Duration) {
    let msg = [0x5au8; 64];
    let mut samples = Vec::with_capacity(RTT_ITERS);
    for i in 0..RTT_WARMUP + RTT_ITERS {
        let t = Instant::now();
        client.sender().try_send(&msg).expect("send");
        let f = client.receiver().recv(None).expect("recv");
        black_box(&*f);
        drop(f);
        if i >= RTT_WARMUP {
            samples.push(t.elapsed());
        }
    }
    percentiles(samples)
}

fn shm_rtt_threads(pinned: bool) -> (Duration, Duration) {
    let (server, mut client) = pair(&format!("rtt-{pinned}"));
    let e = thread::spawn(move || {
        if pinned {
            pin(1);
        }
        echo(server)
    });
    let r = thread::spawn(move || {
        if pinned {
            pin(0);
        }
        let r = shm_rtt(&mut client);
        drop(client);
        r
    })
    .join()
    .expect("driver thread");
    e.join().expect("echo thread");
    r
}

fn shm_rtt_processes(pinned: bool) -> Option<(Duration, Duration)> {
    let n = name(&format!("rtt-proc-{pinned}"));
    let listener = ShmListener::bind(&n, config()).ok()?;
    let mut cmd = Command::new(std::env::current_exe().ok()?);
    cmd.env(CHILD, &n);
    if pinned {
        cmd.env(CHILD_PIN, "1");
    }
    let mut child = cmd.spawn().ok()?;
    let mut client_side = listener.accept().ok()?;
    // Roles reversed: the child connects and echoes; we drive.
    let r = thread::spawn(move || {
        if pinned {
            pin(0);
        }
        let r = shm_rtt(&mut client_side);
        drop(client_side);
        r
    })
    .join()
    .ok()?;
    let _ = child.wait();
    Some(r)
}

fn uds_rtt() -> (Duration, Duration) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let e = thread::spawn(move || {
        let mut buf = [0u8; 64];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let msg = [0x5au8; 64];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(RTT_ITERS);
    for i in 0..RTT_WARMUP + RTT_ITERS {
        let t = Instant::now();
        a.write_all(&msg).expect("write");
        a.read_exact(&mut buf).expect("read");
        black_box(&buf);
        if i >= RTT_WARMUP {
            samples.push(t.elapsed());
        }
    }
    drop(a);
    e.join().expect("echo thread");
    percentiles(samples)
}

/// Bytes moved per run for a frame size: enough to take tens of ms.
fn total_bytes(size: usize) -> usize {
    if size <= 64 { 32 << 20 } else { 256 << 20 }
}

/// One-way throughput in bytes/s (median of `RUNS`), receiving in place
/// (`copy_out == false`, the receiver reads the first and last byte) or by
/// copying into a reused `Vec`.
fn shm_throughput(size: usize, copy_out: bool) -> f64 {
    let mut results = Vec::new();
    for run in 0..RUNS {
        let (server, client) = pair(&format!("tp-{size}-{copy_out}-{run}"));
        let frames = total_bytes(size) / size;
        // Two laps of the ring first: fault the fresh segment's pages in and
        // reach the steady state before timing.
        let warmup = (2 * config().ring_capacity / size).max(1000);
        let (mut tx, _crx) = client.split();
        let (_stx, mut rx) = server.split();
        let sender = thread::spawn(move || {
            let (msg, m0) = page_buffer(size, 0, 0xa5);
            let msg = &msg[m0..m0 + size];
            // Published in batches of about 16 KiB, as a batching sender does (the RPC
            // transports write what a session hands out at once as one batch).
            let batch = (16 << 10) / size;
            if batch > 1 {
                tx.cork();
            }
            for i in 0..warmup + frames {
                tx.send(msg, None).expect("send");
                if batch > 1 && i % batch == batch - 1 {
                    tx.flush();
                }
            }
            tx.uncork();
        });
        let mut buf = Vec::with_capacity(size);
        for _ in 0..warmup {
            rx.recv_into(&mut buf, None).expect("recv");
        }
        let t = Instant::now();
        for _ in 0..frames {
            if copy_out {
                rx.recv_into(&mut buf, None).expect("recv");
                black_box(&buf);
            } else {
                let f = rx.recv(None).expect("recv");
                black_box((f[0], f[f.len() - 1]));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        sender.join().expect("sender");
        results.push((frames * size) as f64 / secs);
    }
    median(results)
}

fn memcpy_throughput(size: usize) -> f64 {
    let (src, s0) = page_buffer(size, 0, 0xa5);
    let (mut dst, d0) = page_buffer(size, 512, 0);
    let frames = total_bytes(size) / size;
    let mut results = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        for _ in 0..frames {
            dst[d0..d0 + size].copy_from_slice(black_box(&src[s0..s0 + size]));
            black_box(&mut dst);
        }
        results.push((frames * size) as f64 / t.elapsed().as_secs_f64());
    }
    median(results)
}

/// `memcpy` of `size`-byte chunks into a destination that cycles through
/// the ring's footprint (what the sender does), from a hot source.
fn memcpy_footprint_throughput(size: usize) -> f64 {
    let (src, s0) = page_buffer(size, 0, 0xa5);
    let (mut dst, d0) = page_buffer(config().ring_capacity, 512, 0);
    let slots = config().ring_capacity / size;
    let frames = total_bytes(size) / size;
    let mut results = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        for i in 0..frames {
            let at = d0 + (i % slots) * size;
            dst[at..at + size].copy_from_slice(black_box(&src[s0..s0 + size]));
            black_box(&mut dst);
        }
        results.push((frames * size) as f64 / t.elapsed().as_secs_f64());
    }
    median(results)
}

/// A `len`-byte buffer starting `misalign` bytes past a page boundary.
///
/// Baselines must not place source and destination at nearly the same page
/// offset: on some AMD cores `rep movsb` (glibc's memcpy for these sizes)
/// runs ~15x slower when `(dst - src) % 4096` is below ~64 bytes, which two
/// back-to-back `Vec`s often hit.
fn page_buffer(len: usize, misalign: usize, fill: u8) -> (Vec<u8>, usize) {
    let v = vec![fill; len + 8192];
    let start = (4096 - v.as_ptr() as usize % 4096) % 4096 + misalign;
    (v, start)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gbps(b: f64) -> String {
    format!("{:8.2} GB/s", b / 1e9)
}

fn size_name(s: usize) -> String {
    match s {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn main() {
    if let Ok(n) = std::env::var(CHILD) {
        // Child of the two-process round trip: connect and echo.
        if std::env::var_os(CHILD_PIN).is_some() {
            pin(1);
        }
        echo(ShmConnection::connect(&n, config()).expect("child connect"));
        return;
    }
    // `cargo test --benches` runs benches with `--test`: stay quick there.
    if std::env::args().any(|a| a == "--test") {
        println!("ring bench: skipped under --test");
        return;
    }
    println!(
        "xrpc-shm ring benchmark ({} cores available)",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "Round trip, 64 B frame, {RTT_ITERS} samples, spin budget {} µs:",
        spin_us()
    );
    let (shm50, shm99) = shm_rtt_threads(false);
    let pinned = (thread::available_parallelism().map_or(1, |n| n.get()) >= 2)
        .then(|| shm_rtt_threads(true));
    let (uds50, uds99) = uds_rtt();
    println!(
        "  {:<37} p50 {:>9.2?}  p99 {:>9.2?}",
        "shm ring, two threads", shm50, shm99
    );
    if let Some((p50, p99)) = pinned {
        println!(
            "  {:<37} p50 {:>9.2?}  p99 {:>9.2?}",
            "shm ring, two threads on CPUs 0, 1", p50, p99
        );
    }
    if let Some((p50, p99)) = shm_rtt_processes(false) {
        println!(
            "  {:<37} p50 {:>9.2?}  p99 {:>9.2?}",
            "shm ring, two processes", p50, p99
        );
    }
    if pinned.is_some()
        && let Some((p50, p99)) = shm_rtt_processes(true)
    {
        println!(
            "  {:<37} p50 {:>9.2?}  p99 {:>9.2?}",
            "shm ring, two processes on CPUs 0, 1", p50, p99
        );
    }
    println!(
        "  {:<37} p50 {:>9.2?}  p99 {:>9.2?}",
        "unix socketpair, two threads", uds50, uds99
    );
    println!(
        "  ratio unix/shm (p50): {:.1}x unpinned{}   (goal >= 10x)",
        uds50.as_secs_f64() / shm50.as_secs_f64(),
        pinned.map_or(String::new(), |(p50, _)| format!(
            ", {:.1}x on separate CPUs",
            uds50.as_secs_f64() / p50.as_secs_f64()
        ))
    );
    println!();
    println!("One-way throughput, median of {RUNS} runs:");
    println!(
        "  {:>7}  {:>13}  {:>13}  {:>13}  {:>13}  {:>12}  {:>11}",
        "frame",
        "shm in place",
        "shm copy-out",
        "memcpy",
        "memcpy 8MiB",
        "place/memcpy",
        "copy/memcpy"
    );
    for size in [64, 4 << 10, 64 << 10, 1 << 20] {
        let place = shm_throughput(size, false);
        let copy = shm_throughput(size, true);
        let mc = memcpy_throughput(size);
        let mf = memcpy_footprint_throughput(size);
        println!(
            "  {:>7}  {}  {}  {}  {}  {:>12.2}  {:>11.2}",
            size_name(size),
            gbps(place),
            gbps(copy),
            gbps(mc),
            gbps(mf),
            place / mc,
            copy / mc
        );
    }
    println!("  memcpy: same-process copy of the frame size between two hot buffers;");
    println!(
        "  memcpy 8MiB: the same copies into a buffer the size of the ring (the sender's work)."
    );
    println!("  (goal: 1 MiB shm >= 0.5x memcpy)");
}
