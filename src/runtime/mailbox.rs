//! A connection's shard-facing half: its outbound queue and its mailbox, which is what topic
//! tables and other tasks on the shard hold (through `Rc`) to reach it.

use super::credit::Hold;
use super::topics::Sink;
use super::transport::outbound::{Delivery, Outbound, Pushed};
use crate::core::socket::Info;
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
    /// A connection's shared half around its outbound queue.
    pub fn new(outbound: Rc<Outbound>) -> ConnShared {
        ConnShared {
            outbound,
            mailbox: RefCell::new(VecDeque::new()),
            shutdown: Cell::new(false),
        }
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
        frame: bytes::Bytes,
        delivery: Delivery,
        hold: Option<&Rc<Hold>>,
        now: Instant,
    ) -> (bool, bool) {
        let pushed = self.deliver_frame(frame, delivery, hold.cloned(), now);
        (pushed.accepted(), pushed.dropped_one())
    }
}
