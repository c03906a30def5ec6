//! Payloads to and from application values.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use xrpc_proto::{Codec, CodecError, Payload};

use super::error::RpcError;

/// Decodes a payload: bytes with the codec, an in-process value by downcasting.
pub(crate) fn decode_payload<T: DeserializeOwned + 'static, C: Codec>(
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
pub(crate) fn payload_bytes(payload: Payload) -> Result<Bytes, RpcError> {
    match payload {
        Payload::Bytes(b) => Ok(b),
        Payload::Value(_) => Err(RpcError::Serialization(CodecError::decode(
            "in-process value",
            "a raw call received a value instead of bytes",
        ))),
    }
}
