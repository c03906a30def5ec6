//! Benchmarks of xrpc against raw sockets and peer crates; see benches/.
