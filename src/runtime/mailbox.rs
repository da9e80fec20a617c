//! A connection's shard-facing half: its outbound queue and its mailbox, which is what topic
//! tables and other tasks on the shard hold (through `Rc`) to reach it.

use super::credit::Hold;
use super::topics::{Delivered, Sink};
use super::transport::outbound::{Delivery, Outbound, Pushed};
use crate::core::socket::Info;
use crate::core::Broadcast;
use crate::protocol::deflate::{deflate_frame, Agreed, Params};
use crate::protocol::phoenix::Serializer;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

/// State shared by a connection's reader, writer, timers and its shard.
pub struct ConnShared {
    /// The bounded outbound queue its writer drains.
    pub outbound: Rc<Outbound>,
    mailbox: RefCell<VecDeque<Mail>>,
    shutdown: Cell<bool>,
    /// permessage-deflate, when the connection negotiated it (boxed: a connection that did not
    /// — native clients, most game clients — keeps 8 bytes here, not 40, for as long as it lives).
    deflate: Option<Box<(Agreed, Params)>>,
}

/// What waits in a connection's mailbox, in arrival order.
pub(crate) enum Mail {
    /// For a channel's `handle_info`.
    Info(Info),
    /// A broadcast frame that arrived while mail was pending: it must not overtake that mail
    /// (an owner's answer to this connection, then its broadcasts, arrive in the owner's order).
    Frame(bytes::Bytes, Delivery, Option<Rc<Hold>>),
}

impl ConnShared {
    /// A connection's shared half around its outbound queue; `deflate` when it negotiated
    /// permessage-deflate.
    pub fn new(outbound: Rc<Outbound>, deflate: Option<(Agreed, Params)>) -> ConnShared {
        ConnShared {
            outbound,
            mailbox: RefCell::new(VecDeque::new()),
            shutdown: Cell::new(false),
            deflate: deflate.map(Box::new),
        }
    }

    /// Gives back spare queue capacity while nothing waits (see [`Outbound::release_spare`]).
    pub fn release_spare(&self) {
        self.outbound.release_spare();
        let mut mailbox = self.mailbox.borrow_mut();
        if mailbox.is_empty() && mailbox.capacity() > 0 {
            *mailbox = VecDeque::new();
        }
    }

    /// Queues a frame meant for this connection alone (a reply, a push, an echo), compressed
    /// first if it negotiated permessage-deflate and the frame is worth it. Returns (whether it
    /// was taken, whether it was compressed).
    pub fn send_own(&self, frame: Bytes) -> (bool, bool) {
        let (frame, compressed) = match self.deflate.as_deref() {
            Some((agreed, params)) => {
                match deflate_frame(&frame, params, agreed.server_window_bits) {
                    Some(packed) => (packed, true),
                    None => (frame, false),
                }
            }
            None => (frame, false),
        };
        (self.outbound.push(frame), compressed)
    }

    /// Asks the connection to close with 1001 (server shutting down).
    pub fn request_shutdown(&self) {
        self.shutdown.set(true);
        self.outbound.wake_reader();
    }

    /// Whether a shutdown was asked for.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.get()
    }

    /// Hands a message to one of the connection's channels.
    pub(crate) fn post(&self, info: Info) {
        self.mailbox.borrow_mut().push_back(Mail::Info(info));
        self.outbound.wake_reader();
    }

    /// Queues a broadcast frame to this connection, behind any mail not yet handled.
    pub fn deliver_frame(
        &self,
        frame: bytes::Bytes,
        delivery: Delivery,
        hold: Option<Rc<Hold>>,
        now: Instant,
    ) -> Pushed {
        let mut mailbox = self.mailbox.borrow_mut();
        if mailbox.is_empty() {
            drop(mailbox);
            return self.outbound.push_with(frame, delivery, hold, now);
        }
        if self.outbound.is_closing() {
            return Pushed::Refused;
        }
        mailbox.push_back(Mail::Frame(frame, delivery, hold));
        Pushed::Queued
    }

    /// Whether the connection negotiated permessage-deflate.
    pub fn deflates(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether mail waits.
    pub fn has_mail(&self) -> bool {
        !self.mailbox.borrow().is_empty()
    }

    pub(crate) fn next_mail(&self) -> Option<Mail> {
        self.mailbox.borrow_mut().pop_front()
    }
}

impl Sink for Rc<ConnShared> {
    fn deliver(
        &self,
        msg: &Broadcast,
        serializer: Serializer,
        hold: Option<&Rc<Hold>>,
        now: Instant,
    ) -> Delivered {
        let (frame, compressed) = match self.deflate.as_deref() {
            Some((agreed, params)) => msg.deflated_frame_for(serializer, *agreed, params),
            None => (msg.frame_for(serializer).cloned(), false),
        };
        let Some(frame) = frame else {
            return Delivered::default();
        };
        let pushed = self.deliver_frame(frame, msg.delivery, hold.cloned(), now);
        Delivered {
            taken: pushed.accepted(),
            gave_way: pushed.dropped_one(),
            compressed,
        }
    }
}
