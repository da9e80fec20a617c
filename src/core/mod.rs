//! The channel core: everything a channel does, with no runtime under it.
//!
//! This layer knows Phoenix channels and nothing about sockets, executors, threads, queues
//! between shards or the wall clock. Time comes in as a parameter ([`Now`]), randomness from the
//! caller, and everything a callback asks for comes out as an [`Effect`] in one list, which the
//! shard runtime ([`crate::runtime`]) carries out — or, in a studio's unit tests, the
//! [`testing`](crate::testing) harness, its test double with a virtual clock.
//!
//! - [`Channel`]: per-join callbacks `join`, `handle_in`, `handle_info`, `terminate`, with a typed
//!   mailbox ([`Channel::Info`]).
//! - [`ChannelCtx`]: what a callback may do: `push`, `broadcast`, `broadcast_from`, deferred
//!   `reply`, timers and self-messages (`send_after`, `send_self`), `spawn`, owner tasks.
//! - [`OwnerCtx`]: what a task on a topic's owner shard may do (broadcast, answer channels
//!   anywhere, per-topic state, `spawn_then`).
//! - [`PhoenixSocket`](socket::PhoenixSocket): the socket state machine that routes decoded client
//!   messages to the joined channels with Phoenix's exact replies and orderings.
//! - [`Broadcast`]: one published message, encoded once and shared by every subscriber, with its
//!   [`Delivery`] policy.
//! - [`presence`]: Phoenix.Presence state, diffs and the owner-side tracker.
//! - [`SocketHandler`], [`Router`], [`App`]: the connect hook and topic routes.

pub mod addr;
pub mod broadcast;
pub mod connect;
pub mod ctx;
pub mod echo;
pub mod effect;
pub mod owner;
pub mod presence;
mod router;
pub mod socket;
pub mod time;

pub use crate::protocol::phoenix::{ByteString, Payload, PayloadError};
pub use addr::{Addr, ConnAddr, ConnId};
pub use broadcast::{Broadcast, Delivery};
pub use connect::{AllowAll, App, ConnectInfo, ConnectRefused, SocketHandler};
pub use ctx::{ChannelCtx, ReplyRef};
pub use effect::{Effect, OwnerTask, Then};
pub use owner::{OwnerCtx, OwnerStates};
pub use router::Router;
pub use time::Now;

use std::any::Any;

/// A topic name such as `room:lobby`.
pub type Topic = ByteString;

/// Reply status of a `phx_reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// `"ok"`.
    Ok,
    /// `"error"`.
    Error,
}

impl ReplyStatus {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Error => "error",
        }
    }
}

/// What `handle_in` asks the socket to do.
#[derive(Debug)]
pub enum HandleIn {
    /// Reply now.
    Reply(ReplyStatus, Payload),
    /// No reply now (perhaps later, through [`ChannelCtx::reply_ref`]).
    NoReply,
    /// Stop the channel: optional reply, then `phx_close` to the client and `terminate`.
    Stop(Option<(ReplyStatus, Payload)>),
}

impl HandleIn {
    /// An ok reply.
    pub fn ok(payload: Payload) -> HandleIn {
        HandleIn::Reply(ReplyStatus::Ok, payload)
    }
    /// An error reply.
    pub fn error(payload: Payload) -> HandleIn {
        HandleIn::Reply(ReplyStatus::Error, payload)
    }
    /// An error reply `{"reason": reason}`.
    pub fn error_reason(reason: &str) -> HandleIn {
        HandleIn::error(Payload::json(&serde_json::json!({ "reason": reason })))
    }
}

/// What `handle_info` asks the socket to do.
#[derive(Debug)]
pub enum HandleInfo {
    /// Keep the channel.
    Continue,
    /// Stop the channel: `phx_close` to the client, then `terminate`.
    Stop,
}

/// Why a channel ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateReason {
    /// The client sent `phx_leave`.
    Leave,
    /// The channel asked to stop.
    Normal,
    /// The client joined the same topic again; this join is replaced.
    Duplicate,
    /// The connection closed (or the server is shutting down).
    Disconnect,
    /// A callback panicked. `terminate` still runs (after the socket has unsubscribed) so the
    /// channel can release what it holds elsewhere, such as presence entries on the owner
    /// shard; the channel's own fields may be half-updated. The client gets `phx_error`.
    Crashed,
}

/// One joined topic on one socket. A fresh value is created for every join, so fields are the
/// per-join assigns.
pub trait Channel: 'static {
    /// The messages this channel's `handle_info` receives: what it sends itself
    /// ([`ChannelCtx::send_after`], [`ChannelCtx::send_self`]), the outputs of its
    /// [`ChannelCtx::spawn`]ed futures, and answers of owner tasks sent to its
    /// [`ChannelCtx::address`]. Use `()` when the channel gets none.
    type Info: Send + 'static;

    /// Authorizes the join. `Ok(response)` replies ok and subscribes the socket to the topic;
    /// `Err(response)` replies error. Pushes and broadcasts made here are sent after the reply.
    fn join(
        &mut self,
        ctx: &mut ChannelCtx<'_, Self::Info>,
        payload: Payload,
    ) -> Result<Payload, Payload>;

    /// A client push on the joined topic.
    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, Self::Info>,
        event: &str,
        payload: Payload,
    ) -> HandleIn;

    /// A message for this channel (see [`Channel::Info`]).
    fn handle_info(
        &mut self,
        _ctx: &mut ChannelCtx<'_, Self::Info>,
        _msg: Self::Info,
    ) -> HandleInfo {
        HandleInfo::Continue
    }

    /// The channel is going away (after a panic too, with [`TerminateReason::Crashed`]).
    fn terminate(&mut self, _ctx: &mut ChannelCtx<'_, Self::Info>, _reason: TerminateReason) {}
}

/// A [`Channel`] with its message type erased, as the socket keeps it. Messages are checked
/// against the channel's `Info` type here, once, so channels never downcast.
pub(crate) trait AnyChannel {
    fn join(&mut self, ctx: ctx::CtxParts<'_>, payload: Payload) -> Result<Payload, Payload>;
    fn handle_in(&mut self, ctx: ctx::CtxParts<'_>, event: &str, payload: Payload) -> HandleIn;
    fn handle_info(&mut self, ctx: ctx::CtxParts<'_>, msg: Box<dyn Any>) -> HandleInfo;
    fn terminate(&mut self, ctx: ctx::CtxParts<'_>, reason: TerminateReason);
}

impl<C: Channel> AnyChannel for C {
    fn join(&mut self, ctx: ctx::CtxParts<'_>, payload: Payload) -> Result<Payload, Payload> {
        Channel::join(self, &mut ChannelCtx::new(ctx), payload)
    }

    fn handle_in(&mut self, ctx: ctx::CtxParts<'_>, event: &str, payload: Payload) -> HandleIn {
        Channel::handle_in(self, &mut ChannelCtx::new(ctx), event, payload)
    }

    fn handle_info(&mut self, ctx: ctx::CtxParts<'_>, msg: Box<dyn Any>) -> HandleInfo {
        match msg.downcast::<C::Info>() {
            Ok(msg) => Channel::handle_info(self, &mut ChannelCtx::new(ctx), *msg),
            Err(_) => {
                // Only reachable through an untyped `ConnAddr` naming the wrong channel.
                tracing::warn!(topic = %ctx.topic, "message of another type for this channel dropped");
                HandleInfo::Continue
            }
        }
    }

    fn terminate(&mut self, ctx: ctx::CtxParts<'_>, reason: TerminateReason) {
        Channel::terminate(self, &mut ChannelCtx::new(ctx), reason)
    }
}
