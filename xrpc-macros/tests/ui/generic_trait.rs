#[xrpc_tokio::service]
pub trait Store<K> {
    async fn get(&self, key: u64) -> u64;
}

fn main() {}
