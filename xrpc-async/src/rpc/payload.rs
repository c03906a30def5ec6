//! Payloads to and from application values, and a handler's end as the session takes it —
//! shared by every adapter (the async server here, the blocking one in `xrpc-blocking`).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use xrpc_proto::{Codec, CodecError, Outcome, Payload};

use super::error::RpcError;

/// Decodes a payload: bytes with the codec, an in-process value by downcasting.
pub fn decode_payload<T: DeserializeOwned + 'static, C: Codec>(
    codec: &C,
    payload: Payload,
) -> Result<T, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(codec.decode(&b)?),
        Payload::Value(v) => v.downcast::<T>().map(|b| *b).map_err(|_| {
            RpcError::Serialization(CodecError::decode(
                "in-process value",
                format_args!("the value is not a {}", std::any::type_name::<T>()),
            ))
        }),
    }
}

/// The bytes of a payload; an in-process value has none.
pub fn payload_bytes(payload: Payload) -> Result<Bytes, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(b),
        Payload::Value(_) => Err(RpcError::Serialization(CodecError::decode(
            "in-process value",
            "a raw call received a value instead of bytes",
        ))),
    }
}

/// The message of a panic payload (a handler that panicked).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_string())
}

/// What a handler ended with, as the session takes it: `Ok(Ok(Some))` a response,
/// `Ok(Ok(None))` the end of its stream, `Ok(Err)` its error, `Err` the message of its panic.
pub fn outcome(res: Result<Result<Option<Payload>, RpcError>, String>) -> Outcome {
    match res {
        Ok(Ok(Some(p))) => Outcome::Response(p),
        Ok(Ok(None)) => Outcome::StreamEnd,
        Ok(Err(e)) => Outcome::Error(e.to_remote()),
        Err(panic) => Outcome::Panic(panic),
    }
}
