//! A client's streams: [`StreamReceiver`] (an iterator of the server's items),
//! [`StreamSender`] (the client's items, blocking for credit) and [`PendingResponse`] (the
//! single response of a client stream). Each waits like a call does: the waiting thread drives
//! the connection when no other thread does.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::{BincodeCodec, Codec, Payload, decode_payload};

use crate::RpcError;
use crate::client::Conn;

/// `Debug` for the handles of a call: their type and the call id.
macro_rules! debug_by_id {
    ($($ty:ident),*) => {$(
        impl<T, C: Codec> std::fmt::Debug for $ty<T, C> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).field("id", &self.id).finish()
            }
        }
    )*};
}
pub(crate) use debug_by_id;

debug_by_id!(StreamReceiver, StreamSender, PendingResponse);

/// The two ends of a client-streaming call: the items go out through the sender, then the
/// response comes.
pub type ClientStreamCall<Item, Resp, C = BincodeCodec> =
    (StreamSender<Item, C>, PendingResponse<Resp, C>);

/// The two ends of a bidirectional call.
pub type BidiCall<Req, Resp, C = BincodeCodec> = (StreamSender<Req, C>, StreamReceiver<Resp, C>);

/// The items of a server stream, as an iterator of `Result<Item, RpcError>`: it ends after the
/// last item, or after the error that ended the call. Dropping it early cancels the call.
pub struct StreamReceiver<Item, C: Codec = BincodeCodec> {
    conn: Arc<Conn>,
    id: u64,
    codec: C,
    done: bool,
    _item: PhantomData<fn() -> Item>,
}

impl<Item: DeserializeOwned + 'static, C: Codec> StreamReceiver<Item, C> {
    pub(crate) fn new(conn: Arc<Conn>, id: u64, codec: C) -> Self {
        Self {
            done: false,
            conn,
            id,
            codec,
            _item: PhantomData,
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancels the call (as dropping the receiver does).
    pub fn cancel(self) {}
}

impl<Item: DeserializeOwned + 'static, C: Codec> Iterator for StreamReceiver<Item, C> {
    type Item = Result<Item, RpcError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let id = self.id;
        let next = self.conn.wait(id, &mut |st| st.next_item(id));
        // An error or the end ends the stream.
        self.done = !matches!(next, Some(Ok(_)));
        next.map(|r| r.and_then(|p| decode_payload(&self.codec, p)))
    }
}

impl<Item, C: Codec> Drop for StreamReceiver<Item, C> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.cancel(self.id);
        }
    }
}

/// The client's side of a client or bidirectional stream: [`send`](Self::send) blocks while
/// the server has granted no credit. [`finish`](Self::finish) ends the stream; dropping the
/// sender does too.
pub struct StreamSender<Item, C: Codec = BincodeCodec> {
    conn: Arc<Conn>,
    id: u64,
    codec: C,
    _item: PhantomData<fn() -> Item>,
}

impl<Item: Serialize, C: Codec> StreamSender<Item, C> {
    pub(crate) fn new(conn: Arc<Conn>, id: u64, codec: C) -> Self {
        Self {
            conn,
            id,
            codec,
            _item: PhantomData,
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends one item, waiting for credit.
    pub fn send(&self, item: &Item) -> Result<(), RpcError> {
        let mut payload = Some(Payload::Bytes(self.codec.encode(item)?));
        let id = self.id;
        self.conn
            .wait(id, &mut |st| st.send_item(id, C::ID, &mut payload))
    }

    /// Ends the stream (as dropping the sender does).
    pub fn finish(self) -> Result<(), RpcError> {
        Ok(())
    }
}

impl<Item, C: Codec> Drop for StreamSender<Item, C> {
    fn drop(&mut self) {
        let id = self.id;
        self.conn.with_session(|s| s.finish_stream(id));
    }
}

/// The single response of a client-streaming call: [`wait`](Self::wait) for it after
/// finishing the stream. Dropping it unwaited cancels the call.
pub struct PendingResponse<Resp, C: Codec = BincodeCodec> {
    conn: Arc<Conn>,
    id: u64,
    codec: C,
    waited: bool,
    _resp: PhantomData<fn() -> Resp>,
}

impl<Resp: DeserializeOwned + 'static, C: Codec> PendingResponse<Resp, C> {
    pub(crate) fn new(conn: Arc<Conn>, id: u64, codec: C) -> Self {
        Self {
            conn,
            id,
            codec,
            waited: false,
            _resp: PhantomData,
        }
    }

    /// Waits for the response.
    pub fn wait(mut self) -> Result<Resp, RpcError> {
        self.waited = true;
        let id = self.id;
        let p = self.conn.wait(id, &mut |st| st.response(id))?;
        decode_payload(&self.codec, p)
    }
}

impl<Resp, C: Codec> Drop for PendingResponse<Resp, C> {
    fn drop(&mut self) {
        if !self.waited {
            self.conn.cancel(self.id);
        }
    }
}
