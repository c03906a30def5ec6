#[xrpc_tokio::service]
pub trait Factory {
    async fn new(&self, kind: u8) -> u64;
}

fn main() {}
