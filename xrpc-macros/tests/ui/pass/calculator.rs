//! A service of every kind compiles, and its impl uses `?` on a typed error.
use serde::{Deserialize, Serialize};
use xrpc_tokio::{CallContext, RequestStream, RpcError, ServerStreamSender};

#[derive(Debug, Serialize, Deserialize)]
pub enum MathError {
    Overflow,
}

#[xrpc_tokio::service]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn ping(&self);
    async fn id(&self, ctx: &CallContext) -> u64;
    async fn count(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError>;
    async fn sum(&self, items: RequestStream<i64>) -> Result<i64, RpcError>;
    async fn echo(&self, items: RequestStream<u8>, out: ServerStreamSender<u8>) -> Result<(), RpcError>;
}

struct Calc;

fn checked(a: i64, b: i64) -> Result<i64, MathError> {
    a.checked_add(b).ok_or(MathError::Overflow)
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        let s = checked(a, b)?;
        Ok(s)
    }
    async fn ping(&self) {}
    async fn id(&self, ctx: &CallContext) -> u64 {
        ctx.id
    }
    async fn count(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError> {
        for i in 0..n {
            out.send(&i).await?;
        }
        Ok(())
    }
    async fn sum(&self, mut items: RequestStream<i64>) -> Result<i64, RpcError> {
        let mut t = 0;
        while let Some(i) = items.recv().await {
            t += i?;
        }
        Ok(t)
    }
    async fn echo(&self, mut items: RequestStream<u8>, out: ServerStreamSender<u8>) -> Result<(), RpcError> {
        while let Some(i) = items.recv().await {
            out.send(&i?).await?;
        }
        Ok(())
    }
}

fn main() {
    let server = xrpc_tokio::RpcServer::new();
    server.add_service(CalculatorServer::new(Calc));
    assert!(server.methods().contains(&"Calculator.add".to_string()));
}
