//! The in-process transports, runtime-neutral: [`ChannelFrameTransport`] (frames as
//! [`Bytes`](bytes::Bytes), serialized) and [`ArcFrameTransport`] (frames, and typed values
//! moved without serialization). Every adapter offers them as they are.

mod arc;
mod channel;
mod pipe;

pub use arc::ArcFrameTransport;
pub use channel::{ChannelConfig, ChannelFrameTransport};
