pub struct NotSerde(pub u32);

#[xrpc_tokio::service]
pub trait Store {
    async fn put(&self, key: u64, value: NotSerde) -> bool;
}

fn main() {}
