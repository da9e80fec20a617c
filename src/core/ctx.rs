//! What a channel callback can do: [`ChannelCtx`].

use super::{
    Addr, Broadcast, ConnAddr, ConnId, Delivery, Effect, Now, OwnerCtx, Payload, ReplyStatus, Then,
    Topic,
};
use crate::protocol::phoenix::{encode, ByteString, EncodeError, Outgoing, Serializer};
use bytes::{Bytes, BytesMut};
use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The socket's assigns, as the connect hook returned them (see [`SocketHandler`]).
///
/// [`SocketHandler`]: super::SocketHandler
pub type SharedAssigns = Arc<dyn Any + Send + Sync>;

/// Per-connection facts every callback can read.
#[derive(Clone)]
pub struct ConnState {
    /// The connection.
    pub conn_id: ConnId,
    /// The shard it lives on.
    pub shard: usize,
    /// Its protocol version.
    pub serializer: Serializer,
    /// What the connect hook returned.
    pub assigns: SharedAssigns,
}

impl std::fmt::Debug for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnState")
            .field("conn_id", &self.conn_id)
            .field("shard", &self.shard)
            .field("serializer", &self.serializer)
            .finish_non_exhaustive()
    }
}

/// Where a callback's effects go: the effect list, the shard's frame-encoding arena, and the
/// time of the event being handled.
pub struct Outbox<'a> {
    /// Effects, in order.
    pub effects: &'a mut Vec<Effect>,
    /// Frames split off this arena share its chunk (no allocation per message).
    pub arena: &'a mut BytesMut,
    /// The time of the event.
    pub now: Now,
}

impl Outbox<'_> {
    /// The same outbox, reborrowed for a nested call.
    pub fn reborrow(&mut self) -> Outbox<'_> {
        Outbox {
            effects: self.effects,
            arena: self.arena,
            now: self.now,
        }
    }
}

/// Addresses a reply to one client push, to be sent later (Phoenix's `socket_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRef {
    /// The topic pushed to.
    pub topic: Topic,
    /// The join the push was made on.
    pub join_ref: ByteString,
    /// The push's ref (`None`: the client expects no reply).
    pub msg_ref: Option<ByteString>,
}

/// The untyped parts of a callback's context, as the socket builds it.
pub(crate) struct CtxParts<'a> {
    pub topic: &'a Topic,
    pub join_ref: &'a ByteString,
    pub msg_ref: Option<&'a ByteString>,
    pub conn: &'a ConnState,
    pub out: Outbox<'a>,
    /// Set by [`ChannelCtx::hold_broadcasts`]; only present during `join`.
    pub hold: Option<&'a mut bool>,
}

/// The handle a channel callback gets. `I` is the channel's message type
/// ([`Channel::Info`](super::Channel::Info)).
pub struct ChannelCtx<'a, I = ()> {
    parts: CtxParts<'a>,
    _info: PhantomData<fn(I)>,
}

impl<'a, I: Send + 'static> ChannelCtx<'a, I> {
    pub(crate) fn new(parts: CtxParts<'a>) -> Self {
        ChannelCtx {
            parts,
            _info: PhantomData,
        }
    }

    /// The joined topic.
    pub fn topic(&self) -> &Topic {
        self.parts.topic
    }

    /// The join's ref.
    pub fn join_ref(&self) -> &ByteString {
        self.parts.join_ref
    }

    /// The connect hook's assigns for this socket, if they are of type `T` (the type the
    /// app's [`SocketHandler`](super::SocketHandler) returns).
    pub fn assigns<T: 'static>(&self) -> Option<&T> {
        self.parts.conn.assigns.downcast_ref::<T>()
    }

    /// This connection.
    pub fn conn_id(&self) -> ConnId {
        self.parts.conn.conn_id
    }

    /// The shard this connection lives on.
    pub fn shard(&self) -> usize {
        self.parts.conn.shard
    }

    /// The connection's protocol version.
    pub fn serializer(&self) -> Serializer {
        self.parts.conn.serializer
    }

    /// The time of the event being handled (monotonic and wall clock).
    pub fn now(&self) -> Now {
        self.parts.out.now
    }

    /// The monotonic time of the event being handled.
    pub fn instant(&self) -> Instant {
        self.parts.out.now.instant
    }

    /// Pushes `event` to this client only.
    pub fn push(&mut self, event: &str, payload: &Payload) -> Result<(), EncodeError> {
        let msg = Outgoing::Event {
            join_ref: Some(self.parts.join_ref),
            msg_ref: None,
            topic: self.parts.topic,
            event,
            payload,
        };
        let frame = encode(self.parts.conn.serializer, &msg, self.parts.out.arena)?;
        self.parts.out.effects.push(Effect::Send(frame));
        Ok(())
    }

    /// Sends `event` to every subscriber of this topic, this client included.
    pub fn broadcast(&mut self, event: &str, payload: &Payload) {
        self.broadcast_to(self.parts.topic.clone(), event, payload, None);
    }

    /// Sends `event` to every subscriber of this topic except this client.
    pub fn broadcast_from(&mut self, event: &str, payload: &Payload) {
        let me = self.parts.conn.conn_id;
        self.broadcast_to(self.parts.topic.clone(), event, payload, Some(me));
    }

    /// Like [`ChannelCtx::broadcast_from`], under a delivery policy for subscribers that are
    /// behind: [`Delivery::Latest`] for state where only the newest value matters,
    /// [`Delivery::Budget`] for lossy streams.
    pub fn broadcast_from_with(&mut self, event: &str, payload: &Payload, delivery: Delivery) {
        let msg = Broadcast::new(
            self.parts.topic.clone(),
            ByteString::from(event),
            payload.clone(),
            Some(self.parts.conn.conn_id),
            self.parts.out.arena,
        )
        .with_delivery(delivery);
        self.parts
            .out
            .effects
            .push(Effect::Broadcast(Arc::new(msg)));
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
            self.parts.out.arena,
        );
        self.parts
            .out
            .effects
            .push(Effect::Broadcast(Arc::new(msg)));
    }

    /// The address of the push being handled, for a reply sent later with [`ChannelCtx::reply`].
    pub fn reply_ref(&self) -> ReplyRef {
        ReplyRef {
            topic: self.parts.topic.clone(),
            join_ref: self.parts.join_ref.clone(),
            msg_ref: self.parts.msg_ref.cloned(),
        }
    }

    /// Replies to an earlier push (see [`ChannelCtx::reply_ref`]).
    pub fn reply(
        &mut self,
        to: &ReplyRef,
        status: ReplyStatus,
        payload: &Payload,
    ) -> Result<(), EncodeError> {
        let frame = encode_reply(
            self.parts.conn.serializer,
            to,
            status,
            payload,
            self.parts.out.arena,
        )?;
        self.parts.out.effects.push(Effect::Send(frame));
        Ok(())
    }

    /// Closes the connection's WebSocket with `code` (after what is queued).
    pub fn close_socket(&mut self, code: u16, reason: &'static str) {
        self.parts.out.effects.push(Effect::Close { code, reason });
    }

    /// Delivers `msg` to this channel's `handle_info` after `delay`. Dropped if the channel has
    /// gone by then.
    pub fn send_after(&mut self, delay: Duration, msg: I) {
        self.deliver(Some(delay), msg);
    }

    /// Delivers `msg` to this channel's `handle_info` right after the current callback (and the
    /// frames it produced) — Phoenix's `send(self(), msg)`, e.g. for work after a join.
    pub fn send_self(&mut self, msg: I) {
        self.deliver(None, msg);
    }

    /// Called in `join`: broadcasts on this topic are not delivered to this socket until an owner
    /// task opens them with [`OwnerCtx::open`] for this channel's address. Broadcasts the owner
    /// made before that point are skipped (a snapshot sent by that task covers them); everything
    /// after it is delivered, in order. For joiners that must see a snapshot (`room_state`)
    /// before the messages that follow it, without duplicates. Outside `join` it does nothing.
    pub fn hold_broadcasts(&mut self) {
        if let Some(hold) = self.parts.hold.as_deref_mut() {
            *hold = true;
        }
    }

    /// This channel's address, for answers from owner tasks ([`OwnerCtx::send`]).
    pub fn address(&self) -> Addr<I> {
        Addr::new(self.raw_address())
    }

    fn raw_address(&self) -> ConnAddr {
        ConnAddr {
            conn_id: self.parts.conn.conn_id,
            topic: self.parts.topic.clone(),
            join_ref: self.parts.join_ref.clone(),
        }
    }

    /// Runs `task` on this topic's owner shard, where per-topic authoritative state lives
    /// (presence, logs). Tasks from this channel run there in order. Answers come back with
    /// [`OwnerCtx::send`] to [`ChannelCtx::address`], into `handle_info`.
    pub fn run_on_owner(&mut self, task: impl FnOnce(&mut OwnerCtx<'_>) + Send + 'static) {
        self.parts.out.effects.push(Effect::RunOnOwner {
            topic: self.parts.topic.clone(),
            delay: None,
            task: Box::new(task),
        });
    }

    /// Runs `fut` on this shard without blocking the connection (e.g. waiting for the storage
    /// thread); its output is delivered to this channel's `handle_info` (dropped if the channel
    /// has gone by then).
    pub fn spawn(&mut self, fut: impl std::future::Future<Output = I> + 'static) {
        let then = Then::Deliver(self.raw_address());
        self.parts.out.effects.push(Effect::Spawn {
            fut: Box::pin(async move { Box::new(fut.await) as Box<dyn Any> }),
            then,
        });
    }

    fn deliver(&mut self, delay: Option<Duration>, msg: I) {
        let to = self.raw_address();
        self.parts.out.effects.push(Effect::Deliver {
            to,
            msg: Box::new(msg),
            delay,
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
