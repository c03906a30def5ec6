//! A client's streams: [`StreamReceiver`] (an iterator of the server's items),
//! [`StreamSender`] (the client's items, blocking for credit) and [`PendingResponse`] (the
//! single response of a client stream). Each waits like a call does: the waiting thread drives
//! the connection when no other thread does.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_async::rpc::payload::decode_payload;
use xrpc_proto::{BincodeCodec, Codec, Payload};

use crate::RpcError;
use crate::client::{Conn, Marker, next_item, response, send_item};

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
    _item: Marker<Item>,
}

impl<Item, C: Codec> std::fmt::Debug for StreamReceiver<Item, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("id", &self.id)
            .finish()
    }
}

impl<Item: DeserializeOwned + 'static, C: Codec> StreamReceiver<Item, C> {
    pub(crate) fn new(conn: Arc<Conn>, id: u64, codec: C) -> Self {
        Self {
            conn,
            id,
            codec,
            done: false,
            _item: Marker::default(),
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the next item (`None` after the last).
    pub fn recv(&mut self) -> Option<Result<Item, RpcError>> {
        self.next()
    }

    /// Collects every item, or the first error.
    pub fn collect_all(self) -> Result<Vec<Item>, RpcError> {
        self.collect()
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
        let next = self.conn.wait(self.id, &mut next_item(self.id));
        match next {
            Some(Ok(p)) => Some(decode_payload(&self.codec, p)),
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => {
                self.done = true;
                None
            }
        }
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
    finished: bool,
    _item: Marker<Item>,
}

impl<Item, C: Codec> std::fmt::Debug for StreamSender<Item, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender")
            .field("id", &self.id)
            .finish()
    }
}

impl<Item: Serialize, C: Codec> StreamSender<Item, C> {
    pub(crate) fn new(conn: Arc<Conn>, id: u64, codec: C) -> Self {
        Self {
            conn,
            id,
            codec,
            finished: false,
            _item: Marker::default(),
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends one item, waiting for credit.
    pub fn send(&self, item: &Item) -> Result<(), RpcError> {
        let payload = Payload::Bytes(self.codec.encode(item)?);
        let res = self
            .conn
            .wait(self.id, &mut send_item(self.id, C::ID, Some(payload)));
        self.conn.with_session(|_| ());
        res
    }

    /// Ends the stream.
    pub fn finish(mut self) -> Result<(), RpcError> {
        self.finished = true;
        let id = self.id;
        self.conn.with_session(|s| s.finish_stream(id));
        Ok(())
    }
}

impl<Item, C: Codec> Drop for StreamSender<Item, C> {
    fn drop(&mut self) {
        if !self.finished {
            let id = self.id;
            self.conn.with_session(|s| s.finish_stream(id));
        }
    }
}

/// The single response of a client-streaming call: [`wait`](Self::wait) for it after
/// finishing the stream. Dropping it unwaited cancels the call.
pub struct PendingResponse<Resp, C: Codec = BincodeCodec> {
    conn: Arc<Conn>,
    id: u64,
    codec: C,
    waited: bool,
    _resp: Marker<Resp>,
}

impl<Resp, C: Codec> std::fmt::Debug for PendingResponse<Resp, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingResponse")
            .field("id", &self.id)
            .finish()
    }
}

impl<Resp: DeserializeOwned + 'static, C: Codec> PendingResponse<Resp, C> {
    pub(crate) fn new(conn: Arc<Conn>, id: u64, codec: C) -> Self {
        Self {
            conn,
            id,
            codec,
            waited: false,
            _resp: Marker::default(),
        }
    }

    /// Waits for the response.
    pub fn wait(mut self) -> Result<Resp, RpcError> {
        self.waited = true;
        let p = self.conn.wait(self.id, &mut response(self.id))?;
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
