//! Fuzzes the shared-memory ring (xrpc-shm) on its heap-backed storage, against the model of
//! `xrpc_shm::testing::run_ring_model` (documented there; its unit test replays the inputs
//! this target found): sends and receives, frames given up mid-way, frames larger than the
//! ring (in pieces) and larger than the receiver's maximum (skipped), and a hostile peer that
//! scribbles over the shared memory. Each input runs twice: with a receiver that takes every
//! frame its producer may send, and with one whose maximum is smaller.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrpc_shm::testing::run_ring_model;

fuzz_target!(|data: &[u8]| {
    run_ring_model(data, 300);
    run_ring_model(data, 200);
});
