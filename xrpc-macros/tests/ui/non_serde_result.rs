pub struct NotSerde(pub u32);

#[xrpc_tokio::service]
pub trait Store {
    async fn get(&self, key: u64) -> Option<NotSerde>;
}

fn main() {}
