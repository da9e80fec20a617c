//! The one effect language: everything a channel callback or an owner task asks for, carried
//! out by the shard runtime in the order it was asked.

use super::{Broadcast, ConnAddr, OwnerCtx, Topic};
use bytes::Bytes;
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A future that runs on the shard that spawned it (it need not be `Send`).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Work to run on a topic's owner shard, with access to that shard's per-topic state.
pub type OwnerTask = Box<dyn FnOnce(&mut OwnerCtx<'_>) + Send>;

/// An owner task that continues spawned work with its output (it stays on the owner shard).
pub type OwnerContinuation = Box<dyn FnOnce(&mut OwnerCtx<'_>, Box<dyn Any>)>;

/// Something a channel callback or an owner task asked for.
pub enum Effect {
    /// A frame for the connection whose channel asked (already serialized for its protocol
    /// version). Channel callbacks only.
    Send(Bytes),
    /// Publish to every subscriber of a topic, on every shard.
    Broadcast(Arc<Broadcast>),
    /// Subscribe this connection to a topic (carried out before the join reply is sent). A
    /// `gated` subscription receives no broadcasts until an owner task opens it. Produced by
    /// the socket state machine.
    Subscribe {
        /// The topic.
        topic: Topic,
        /// Held until [`Effect::Open`].
        gated: bool,
    },
    /// Unsubscribe this connection from a topic. Produced by the socket state machine.
    Unsubscribe(Topic),
    /// Let broadcasts reach the gated subscription of the channel at this address.
    Open(ConnAddr),
    /// A message for the channel at `to` (its `handle_info`), wherever it lives, after `delay`
    /// (at once when `None`). Dropped if that join is gone by then.
    Deliver {
        /// The channel.
        to: ConnAddr,
        /// Its message (of the channel's `Info` type).
        msg: Box<dyn Any + Send>,
        /// Delivery delay.
        delay: Option<Duration>,
    },
    /// Close this connection's WebSocket with this code. Channel callbacks only.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// Run a task on the topic's owner shard (in order per connection and topic), after
    /// `delay` when given (an owner's timer).
    RunOnOwner {
        /// Its topic (which names the owner shard).
        topic: Topic,
        /// Run it this much later.
        delay: Option<Duration>,
        /// The task.
        task: OwnerTask,
    },
    /// Run a future on this shard without blocking anything (e.g. waiting for the storage
    /// thread); its output goes to `then`.
    Spawn {
        /// The work.
        fut: LocalFuture<Box<dyn Any>>,
        /// Where its output goes.
        then: Then,
    },
}

/// Where the output of spawned work goes.
pub enum Then {
    /// To the `handle_info` of the channel at this address (on this shard).
    Deliver(ConnAddr),
    /// To an owner task for `topic`, on this (the owner) shard.
    Owner {
        /// The topic.
        topic: Topic,
        /// The continuation.
        task: OwnerContinuation,
    },
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Send(b) => write!(f, "Send({:?})", String::from_utf8_lossy(b)),
            Effect::Broadcast(b) => write!(f, "Broadcast({}:{})", b.topic, b.event),
            Effect::Subscribe { topic, gated } => write!(f, "Subscribe({topic}, gated: {gated})"),
            Effect::Unsubscribe(t) => write!(f, "Unsubscribe({t})"),
            Effect::Open(a) => write!(f, "Open({}, {})", a.topic, a.conn_id),
            Effect::Deliver { to, delay, .. } => {
                write!(f, "Deliver({}, {}, {delay:?})", to.topic, to.conn_id)
            }
            Effect::Close { code, reason } => write!(f, "Close({code}, {reason})"),
            Effect::RunOnOwner { topic, delay, .. } => write!(f, "RunOnOwner({topic}, {delay:?})"),
            Effect::Spawn { then, .. } => match then {
                Then::Deliver(a) => write!(f, "Spawn(then deliver to {})", a.topic),
                Then::Owner { topic, .. } => write!(f, "Spawn(then owner task on {topic})"),
            },
        }
    }
}
