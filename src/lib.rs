//! shardcast: a thread-per-core WebSocket real-time server for game backends.
//!
//! The crate is laid out the way a message travels:
//!
//! - [`protocol`]: pure codecs with no I/O — HTTP upgrade parsing, the RFC 6455 frame decoder and
//!   encoder, and the Phoenix Channels serializers (V1 JSON objects, V2 JSON arrays and binary frames).
//! - [`transport`]: the I/O drivers on a shard — the accept loop, one connection's reader task and
//!   its batching writer with a bounded outbound queue.
//! - [`shard`]: the runtime — one glommio executor per core, the flume mesh between shards, and
//!   topic ownership and broadcast (pub/sub).
//! - [`channel`]: the Phoenix-style channel API that features (and users) implement, the socket
//!   state machine that routes pushes to channels, and the built-in `echo:*` channel.
//! - [`ops`]: configuration, metrics, health and logging.
//! - [`features`]: the built-in channels, written with the public channel API: token auth,
//!   `room:*` (chat with history, typing, presence) and `collaboration:*` (cursors, selections).
//! - [`storage`]: the embedded database (SQLite on its own thread, batched transactions).

pub mod channel;
pub mod document;
pub mod features;
pub mod ops;
pub mod protocol;
pub mod shard;
pub mod storage;
pub mod transport;

pub use channel::{
    Assigns, Channel, ChannelCtx, ConnectInfo, ConnectRefused, HandleIn, Payload, ReplyRef,
    ReplyStatus, Router, SocketHandler,
};
pub use ops::config::Config;
pub use shard::server::{Server, ServerError, ServerHandle};
