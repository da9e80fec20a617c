//! The channel API: what a feature (built-in or a game studio's own crate) implements to handle a
//! topic, modelled on Phoenix channels.
//!
//! - [`SocketHandler`]: the socket `connect` hook: query params and token in, assigns or refusal out.
//! - [`Router`]: topic patterns (`room:*`, `lobby`) mapped to [`Channel`] implementations.
//! - [`Channel`]: per-join callbacks `join`, `handle_in`, `handle_info`, `terminate`.
//! - [`ChannelCtx`]: what a callback may do: `push`, `broadcast`, `broadcast_from`, deferred
//!   `reply`, timers and self-messages (`send_after`, `send_self`), socket assigns.
//!
//! Callbacks are synchronous and run on the shard that owns the connection: they never block and
//! never allocate a task. Everything they ask for is recorded as an [`Effect`] that the
//! connection's driver carries out in order, so this module holds no I/O.

pub mod ctx;
pub mod echo;
mod router;
pub mod socket;

pub use crate::protocol::phoenix::{ByteString, Payload, PayloadError};
pub use crate::shard::owner::OwnerCtx;
pub use ctx::{ChannelCtx, ConnAddr, Delivery, Effect, ReplyRef};
pub use router::Router;

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

/// A topic name such as `room:lobby`.
pub type Topic = ByteString;

/// Socket-level data set by the connect hook and visible to every channel of the socket.
pub type Assigns = serde_json::Map<String, serde_json::Value>;

/// Identifies one connection server-wide: the shard in the high bits, a counter below.
pub type ConnId = u64;

/// Reply status of a `phx_reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok,
    Error,
}

impl ReplyStatus {
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
    pub fn ok(payload: Payload) -> HandleIn {
        HandleIn::Reply(ReplyStatus::Ok, payload)
    }
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
    /// Authorizes the join. `Ok(response)` replies ok and subscribes the socket to the topic;
    /// `Err(response)` replies error. Pushes and broadcasts made here are sent after the reply.
    fn join(&mut self, ctx: &mut ChannelCtx<'_>, payload: Payload) -> Result<Payload, Payload>;

    /// A client push on the joined topic.
    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: Payload) -> HandleIn;

    /// A message sent with [`ChannelCtx::send_after`] or [`ChannelCtx::send_self`].
    fn handle_info(&mut self, _ctx: &mut ChannelCtx<'_>, _msg: Box<dyn Any>) -> HandleInfo {
        HandleInfo::Continue
    }

    /// The channel is going away (after a panic too, with [`TerminateReason::Crashed`]).
    fn terminate(&mut self, _ctx: &mut ChannelCtx<'_>, _reason: TerminateReason) {}
}

/// What the connect hook sees.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// Query parameters of the upgrade request, decoded, in order (`vsn` included).
    pub params: Vec<(String, String)>,
    pub peer: SocketAddr,
}

impl ConnectInfo {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A refused connection: answered with HTTP 403 and this reason, before any WebSocket exists.
#[derive(Debug, Clone, thiserror::Error)]
#[error("connection refused: {reason}")]
pub struct ConnectRefused {
    pub reason: String,
}

/// The socket `connect` hook.
pub trait SocketHandler: Send + Sync + 'static {
    fn connect(&self, info: &ConnectInfo) -> Result<Assigns, ConnectRefused>;
}

impl<F> SocketHandler for F
where
    F: Fn(&ConnectInfo) -> Result<Assigns, ConnectRefused> + Send + Sync + 'static,
{
    fn connect(&self, info: &ConnectInfo) -> Result<Assigns, ConnectRefused> {
        self(info)
    }
}

/// Accepts every socket with empty assigns.
pub struct AllowAll;

impl SocketHandler for AllowAll {
    fn connect(&self, _info: &ConnectInfo) -> Result<Assigns, ConnectRefused> {
        Ok(Assigns::new())
    }
}

/// Everything application-specific the server runs: the connect hook and the channel routes.
#[derive(Clone)]
pub struct App {
    pub socket: Arc<dyn SocketHandler>,
    pub router: Arc<Router>,
}

impl App {
    pub fn new(socket: impl SocketHandler, router: Router) -> App {
        App {
            socket: Arc::new(socket),
            router: Arc::new(router),
        }
    }
}

impl Default for App {
    /// The built-in channels (`echo:*`), open to every socket.
    fn default() -> Self {
        App::new(
            AllowAll,
            Router::new().channel("echo:*", echo::EchoChannel::default),
        )
    }
}
