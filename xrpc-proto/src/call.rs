//! A call as the application holds it, on either side of a connection: what it has received
//! and not yet taken, and how it ended — the record a session keeps from the call's start
//! until the application releases it — and the one answer to each act on it. The sessions
//! ([`ClientSession`](crate::ClientSession), [`ServerSession`](crate::ServerSession)) hold the
//! records; an adapter keeps only whom to wake ([`CallWake`]).
//!
//! The answers, the same on both sides:
//!
//! | act | while the call runs | once it is over |
//! |---|---|---|
//! | take the next item | an item (crediting the peer), or wait | the items still held, then the end: `None` if it ended normally, the error that ended it otherwise |
//! | send an item | queued, or wait for credit | the error that ended it, or [`CallError::Finished`] if it ended normally or its sending half was finished |
//! | take the response (client) | wait | the response, or the error that ended it |
//!
//! A call's record outlives the call until every handle of it is released, so a handle that
//! asks late still gets the reason ([`CallError::Cancelled`] after a cancel, `Timeout` after
//! its deadline, `Disconnected` after the connection closed); an id the session does not know
//! (released, or never a call) is [`CallError::Finished`].

use std::collections::VecDeque;
use std::task::Poll;

use crate::client::{CallError, CallKind};
use crate::idmap::IdMap;
use crate::payload::Payload;

/// Which waiters of a call to wake: its state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallWake {
    /// Something to receive: an item, the end of the peer's stream, or (client) the response.
    Recv(u64),
    /// Its sender may try again: credit came, or the output budget freed.
    Send(u64),
    /// The call is over: every waiter.
    Ended(u64),
}

impl CallWake {
    /// The call.
    pub fn id(self) -> u64 {
        match self {
            Self::Recv(id) | Self::Send(id) | Self::Ended(id) => id,
        }
    }
}

/// Why a stream item was not sent.
#[derive(Debug)]
pub enum SendError {
    /// No credit (or no room in the output budget) now: wait for a [`CallWake::Send`] and try
    /// again with the item.
    NoCredit(Payload),
    /// The call cannot send any more (see the [module docs](self)).
    Over(CallError),
}

/// How a call ended, as its handles see it.
#[derive(Debug)]
enum Over {
    /// The response arrived and was not taken yet (client).
    Response(Payload),
    /// It ended normally: its response was taken, the peer's stream ended, or (server) its
    /// handler completed.
    Normal,
    /// It failed.
    Failed(CallError),
}

/// What a session keeps of one call for its handles.
#[derive(Debug)]
pub(crate) struct CallRecord {
    kind: CallKind,
    /// Items of the peer's stream not yet taken (bounded by the credit window granted).
    items: VecDeque<Payload>,
    /// The peer ended its stream.
    peer_ended: bool,
    /// The local sending half was finished.
    finished: bool,
    over: Option<Over>,
}

impl CallRecord {
    /// The record of a call of `kind`, just started.
    pub(crate) fn new(kind: CallKind) -> Self {
        Self {
            kind,
            items: VecDeque::new(),
            peer_ended: false,
            finished: false,
            over: None,
        }
    }

    /// Who streams.
    pub(crate) fn kind(&self) -> CallKind {
        self.kind
    }

    /// An item of the peer's stream arrived.
    pub(crate) fn push_item(&mut self, payload: Payload) {
        self.items.push_back(payload);
    }

    /// The peer ended its stream.
    pub(crate) fn peer_ended(&mut self) {
        self.peer_ended = true;
    }

    /// The response arrived.
    pub(crate) fn respond(&mut self, payload: Payload) {
        self.over.get_or_insert(Over::Response(payload));
    }

    /// The call ended normally (the peer's stream ended with it, on the client).
    pub(crate) fn end(&mut self) {
        self.over.get_or_insert(Over::Normal);
    }

    /// The call failed with `error` (the first reason stays). Items not yet taken stay
    /// readable when `keep_items` (a client sees what the server sent before its error);
    /// otherwise they are dropped.
    pub(crate) fn fail(&mut self, error: CallError, keep_items: bool) {
        if self.over.is_none() {
            self.over = Some(Over::Failed(error));
        }
        if !keep_items {
            self.items.clear();
        }
    }

    /// Whether the call is over for its handles.
    pub(crate) fn is_over(&self) -> bool {
        self.over.is_some()
    }

    /// The local sending half was finished.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// Drops the items held (the receiving handle is gone); returns how many.
    pub(crate) fn drop_items(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        n
    }

    /// The next item of the peer's stream: `Ready(Some(Ok))` an item, `Ready(None)` the normal
    /// end, `Ready(Some(Err))` the failure that ended the call, `Pending` to wait.
    pub(crate) fn next_item(&mut self) -> Poll<Option<Result<Payload, CallError>>> {
        if let Some(item) = self.items.pop_front() {
            return Poll::Ready(Some(Ok(item)));
        }
        if self.peer_ended {
            return Poll::Ready(None);
        }
        match &self.over {
            None => Poll::Pending,
            Some(Over::Failed(e)) => Poll::Ready(Some(Err(e.clone()))),
            Some(Over::Normal | Over::Response(_)) => Poll::Ready(None),
        }
    }

    /// The response of the call: `Pending` until it ends.
    pub(crate) fn take_response(&mut self) -> Poll<Result<Payload, CallError>> {
        match self.over.take() {
            None => Poll::Pending,
            Some(Over::Response(p)) => {
                self.over = Some(Over::Normal);
                Poll::Ready(Ok(p))
            }
            Some(Over::Failed(e)) => {
                self.over = Some(Over::Failed(e.clone()));
                Poll::Ready(Err(e))
            }
            Some(Over::Normal) => {
                self.over = Some(Over::Normal);
                Poll::Ready(Err(if self.peer_ended {
                    CallError::Protocol("the call ended without a response".into())
                } else {
                    CallError::Finished
                }))
            }
        }
    }

    /// Whether an item may be sent: `Err` with the reason it may not.
    pub(crate) fn check_send(&self) -> Result<(), CallError> {
        match &self.over {
            Some(Over::Failed(e)) => Err(e.clone()),
            Some(_) => Err(CallError::Finished),
            None if self.finished => Err(CallError::Finished),
            None => Ok(()),
        }
    }
}

/// The next item of call `id` from its record in `records` (see the [module docs](self));
/// `consumed` grants the peer credit for an item taken.
pub(crate) fn next_item(
    records: &mut IdMap<CallRecord>,
    id: u64,
    consumed: impl FnOnce(),
) -> Poll<Option<Result<Payload, CallError>>> {
    let Some(r) = records.get_mut(&id) else {
        return Poll::Ready(Some(Err(CallError::Finished)));
    };
    let next = r.next_item();
    if let Poll::Ready(Some(Ok(_))) = next {
        consumed();
    }
    next
}

/// The answer to an act on a call the session does not know (released, or never started).
pub(crate) fn unknown<T>() -> Poll<Result<T, CallError>> {
    Poll::Ready(Err(CallError::Finished))
}
