//! [`Wakers`]: whom to wake for one call — all a client or a server keeps of a call beside
//! the session's record of it (what to wake them for is the session's [`CallWake`]).

use std::task::{Context, Waker};

use xrpc_proto::CallWake;

/// The waiters of one call.
#[derive(Default)]
pub(crate) struct Wakers {
    /// The call's receiving side: a unary call, a stream's receiver, a client stream's
    /// response.
    pub(crate) recv: Option<Waker>,
    /// Senders waiting for credit (a `StreamSender` may be shared by several tasks).
    send: Vec<Waker>,
}

impl Wakers {
    /// Wakes the waiters that `wake` concerns.
    pub(crate) fn wake(&mut self, wake: CallWake) {
        self.take(wake, Waker::wake);
    }

    /// Hands the waiters that `wake` concerns to `each` (to wake them later, outside a lock).
    pub(crate) fn take(&mut self, wake: CallWake, mut each: impl FnMut(Waker)) {
        if matches!(wake, CallWake::Recv(_) | CallWake::Ended(_))
            && let Some(r) = self.recv.take()
        {
            each(r);
        }
        if matches!(wake, CallWake::Send(_) | CallWake::Ended(_)) {
            self.send.drain(..).for_each(each);
        }
    }

    /// Wakes every waiter (the call is stopped).
    pub(crate) fn wake_all(self) {
        self.recv.into_iter().chain(self.send).for_each(Waker::wake);
    }

    /// A sender waits for credit with `cx`.
    pub(crate) fn wait_send(&mut self, cx: &Context<'_>) {
        if !self.send.iter().any(|w| w.will_wake(cx.waker())) {
            self.send.push(cx.waker().clone());
        }
    }
}

/// Leaves `cx`'s waker in `slot` unless the one there wakes the same task.
pub(crate) fn leave_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}
