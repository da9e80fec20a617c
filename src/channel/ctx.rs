use super::{Assigns, ConnId, Payload, ReplyStatus, Topic};
use crate::protocol::phoenix::{encode, ByteString, EncodeError, Outgoing, Serializer};
use crate::shard::mesh::OwnerTask;
use crate::shard::owner::OwnerCtx;
use crate::shard::pubsub::Broadcast;
pub use crate::transport::outbound::Delivery;
use bytes::{Bytes, BytesMut};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Something a channel callback (or the socket itself) asked for, carried out by the connection
/// driver in order after the callback returns.
pub enum Effect {
    /// A frame for this connection (already serialized for its protocol version).
    Send(Bytes),
    /// Publish to every subscriber of a topic, on every shard.
    Broadcast(Arc<Broadcast>),
    /// Subscribe this connection to a topic (done before the join reply is sent). A `gated`
    /// subscription receives no broadcasts until an owner task opens it.
    Subscribe {
        topic: Topic,
        gated: bool,
    },
    /// Asked for in `join`: subscribe gated (see [`ChannelCtx::hold_broadcasts`]).
    HoldBroadcasts,
    Unsubscribe(Topic),
    /// Deliver `msg` to the channel's `handle_info` after `delay` (at once when `None`).
    Info {
        delay: Option<Duration>,
        topic: Topic,
        join_ref: ByteString,
        msg: Box<dyn Any>,
    },
    /// Close the WebSocket with this code.
    Close {
        code: u16,
        reason: &'static str,
    },
    /// Run a task on the topic's owner shard.
    RunOnOwner {
        topic: Topic,
        task: OwnerTask,
    },
    /// Run a future on this shard; its output goes to the channel's `handle_info`.
    Spawn {
        topic: Topic,
        join_ref: ByteString,
        fut: std::pin::Pin<Box<dyn std::future::Future<Output = Box<dyn Any>>>>,
    },
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Send(b) => write!(f, "Send({:?})", String::from_utf8_lossy(b)),
            Effect::Broadcast(b) => write!(f, "Broadcast({}:{})", b.topic, b.event),
            Effect::Subscribe { topic, gated } => write!(f, "Subscribe({topic}, gated: {gated})"),
            Effect::HoldBroadcasts => write!(f, "HoldBroadcasts"),
            Effect::Unsubscribe(t) => write!(f, "Unsubscribe({t})"),
            Effect::Info { topic, delay, .. } => write!(f, "Info({topic}, {delay:?})"),
            Effect::Close { code, reason } => write!(f, "Close({code}, {reason})"),
            Effect::RunOnOwner { topic, .. } => write!(f, "RunOnOwner({topic})"),
            Effect::Spawn { topic, .. } => write!(f, "Spawn({topic})"),
        }
    }
}

/// Where a channel lives: its connection (whose id names the shard), topic and join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAddr {
    pub conn_id: ConnId,
    pub topic: Topic,
    pub join_ref: ByteString,
}

impl ConnAddr {
    /// The shard the connection lives on.
    pub fn shard(&self) -> usize {
        (self.conn_id >> 48) as usize
    }
}

/// Per-connection facts every callback can read.
#[derive(Debug, Clone)]
pub struct ConnState {
    pub conn_id: ConnId,
    pub shard: usize,
    pub serializer: Serializer,
    pub assigns: Assigns,
}

/// Where a callback's effects go: the effect list and the shard's frame-encoding arena.
pub struct Outbox<'a> {
    pub effects: &'a mut Vec<Effect>,
    pub arena: &'a mut BytesMut,
}

/// Addresses a reply to one client push, to be sent later (Phoenix's `socket_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRef {
    pub topic: Topic,
    pub join_ref: ByteString,
    pub msg_ref: Option<ByteString>,
}

/// The handle a channel callback gets.
pub struct ChannelCtx<'a> {
    pub(crate) topic: &'a Topic,
    pub(crate) join_ref: &'a ByteString,
    pub(crate) msg_ref: Option<&'a ByteString>,
    pub(crate) conn: &'a ConnState,
    pub(crate) out: Outbox<'a>,
}

impl<'a> ChannelCtx<'a> {
    pub fn topic(&self) -> &Topic {
        self.topic
    }

    pub fn join_ref(&self) -> &ByteString {
        self.join_ref
    }

    /// The connect hook's assigns for this socket.
    pub fn assigns(&self) -> &Assigns {
        &self.conn.assigns
    }

    pub fn conn_id(&self) -> ConnId {
        self.conn.conn_id
    }

    pub fn shard(&self) -> usize {
        self.conn.shard
    }

    pub fn serializer(&self) -> Serializer {
        self.conn.serializer
    }

    /// Pushes `event` to this client only.
    pub fn push(&mut self, event: &str, payload: &Payload) -> Result<(), EncodeError> {
        let msg = Outgoing::Event {
            join_ref: Some(self.join_ref),
            msg_ref: None,
            topic: self.topic,
            event,
            payload,
        };
        let frame = encode(self.conn.serializer, &msg, self.out.arena)?;
        self.out.effects.push(Effect::Send(frame));
        Ok(())
    }

    /// Sends `event` to every subscriber of this topic, this client included.
    pub fn broadcast(&mut self, event: &str, payload: &Payload) {
        self.broadcast_to(self.topic.clone(), event, payload, None);
    }

    /// Sends `event` to every subscriber of this topic except this client.
    pub fn broadcast_from(&mut self, event: &str, payload: &Payload) {
        self.broadcast_to(self.topic.clone(), event, payload, Some(self.conn.conn_id));
    }

    /// Like [`ChannelCtx::broadcast_from`], under a delivery policy for subscribers that are
    /// behind: [`Delivery::Latest`] for state where only the newest value matters,
    /// [`Delivery::Budget`] for lossy streams.
    pub fn broadcast_from_with(&mut self, event: &str, payload: &Payload, delivery: Delivery) {
        let msg = Broadcast::new(
            self.topic.clone(),
            ByteString::from(event),
            payload.clone(),
            Some(self.conn.conn_id),
            self.out.arena,
        )
        .with_delivery(delivery);
        self.out.effects.push(Effect::Broadcast(Arc::new(msg)));
    }

    /// Sends `event` to every subscriber of any `topic` (for example a user's private topic).
    pub fn broadcast_to(
        &mut self,
        topic: Topic,
        event: &str,
        payload: &Payload,
        exclude: Option<ConnId>,
    ) {
        let msg = Broadcast::new(
            topic,
            ByteString::from(event),
            payload.clone(),
            exclude,
            self.out.arena,
        );
        self.out.effects.push(Effect::Broadcast(Arc::new(msg)));
    }

    /// The address of the push being handled, for a reply sent later with [`ChannelCtx::reply`].
    pub fn reply_ref(&self) -> ReplyRef {
        ReplyRef {
            topic: self.topic.clone(),
            join_ref: self.join_ref.clone(),
            msg_ref: self.msg_ref.cloned(),
        }
    }

    /// Replies to an earlier push (see [`ChannelCtx::reply_ref`]).
    pub fn reply(
        &mut self,
        to: &ReplyRef,
        status: ReplyStatus,
        payload: &Payload,
    ) -> Result<(), EncodeError> {
        let frame = encode_reply(self.conn.serializer, to, status, payload, self.out.arena)?;
        self.out.effects.push(Effect::Send(frame));
        Ok(())
    }

    /// Delivers `msg` to this channel's `handle_info` after `delay`. Dropped if the channel has
    /// gone by then.
    pub fn send_after(&mut self, delay: Duration, msg: impl Any) {
        self.info(Some(delay), Box::new(msg));
    }

    /// Delivers `msg` to this channel's `handle_info` right after the current callback (and the
    /// frames it produced) — Phoenix's `send(self(), msg)`, e.g. for work after a join.
    pub fn send_self(&mut self, msg: impl Any) {
        self.info(None, Box::new(msg));
    }

    /// Called in `join`: broadcasts on this topic are not delivered to this socket until an owner
    /// task opens them with [`OwnerCtx::open`] for this channel's address. Broadcasts the owner
    /// made before that point are skipped (a snapshot sent by that task covers them); everything
    /// after it is delivered, in order. For joiners that must see a snapshot (`room_state`)
    /// before the messages that follow it, without duplicates.
    pub fn hold_broadcasts(&mut self) {
        self.out.effects.push(Effect::HoldBroadcasts);
    }

    /// This channel's address, for answers from owner tasks ([`OwnerCtx::send`]).
    pub fn address(&self) -> ConnAddr {
        ConnAddr {
            conn_id: self.conn.conn_id,
            topic: self.topic.clone(),
            join_ref: self.join_ref.clone(),
        }
    }

    /// Runs `task` on this topic's owner shard, where per-topic authoritative state lives
    /// (presence, logs). Tasks from this channel run there in order. Answers come back with
    /// [`OwnerCtx::send`] to [`ChannelCtx::address`], into `handle_info`.
    pub fn run_on_owner(&mut self, task: impl FnOnce(&mut OwnerCtx<'_>) + Send + 'static) {
        self.out.effects.push(Effect::RunOnOwner {
            topic: self.topic.clone(),
            task: Box::new(task),
        });
    }

    /// Runs `fut` on this shard without blocking the connection (e.g. waiting for the storage
    /// thread); its output is delivered to this channel's `handle_info` (dropped if the channel
    /// has gone by then).
    pub fn spawn<T: Any>(&mut self, fut: impl std::future::Future<Output = T> + 'static) {
        self.out.effects.push(Effect::Spawn {
            topic: self.topic.clone(),
            join_ref: self.join_ref.clone(),
            fut: Box::pin(async move { Box::new(fut.await) as Box<dyn Any> }),
        });
    }

    fn info(&mut self, delay: Option<Duration>, msg: Box<dyn Any>) {
        self.out.effects.push(Effect::Info {
            delay,
            topic: self.topic.clone(),
            join_ref: self.join_ref.clone(),
            msg,
        });
    }
}

pub(crate) fn encode_reply(
    ser: Serializer,
    to: &ReplyRef,
    status: ReplyStatus,
    payload: &Payload,
    arena: &mut BytesMut,
) -> Result<Bytes, EncodeError> {
    let msg = Outgoing::Reply {
        join_ref: Some(&to.join_ref),
        msg_ref: to.msg_ref.as_deref(),
        topic: &to.topic,
        status: status.as_str(),
        payload,
    };
    encode(ser, &msg, arena)
}
