//! shardcast: a thread-per-core WebSocket real-time server for game backends.
//!
//! The crate is layered; each layer uses only the ones above it in this list (a test,
//! `tests/layering.rs`, keeps it so):
//!
//! - [`protocol`]: pure codecs with no I/O — HTTP upgrade parsing, the RFC 6455 frame decoder and
//!   encoder, the Phoenix Channels serializers, the binary fast-path layouts. [`document`]: the
//!   pure operational-transform core.
//! - [`ops`]: metrics and the health/metrics endpoints' bodies.
//! - [`core`]: the channel core with no runtime under it — the `Channel` trait and its context,
//!   the one effect language, the Phoenix socket state machine, broadcasts and delivery
//!   policies, owner tasks and their state, presence.
//! - [`testing`]: the runtime's test double — runs an app's channels on a virtual clock with no
//!   socket, for unit tests of channels (the studio's and the built-in ones).
//! - [`storage`]: the embedded database (SQLite on its own thread, batched transactions).
//! - [`runtime`]: the only interpreter of effects — glommio shards, the flume mesh, topic tables,
//!   connection sessions and socket I/O ([`runtime::transport`]).
//! - [`features`]: the built-in channels, written with the public core API only; each owns its
//!   configuration section.
//! - [`config`]: the configuration file, composing every section (TOML, `SHARDCAST_*`).
//! - [`app`]: the application `shardcast serve` runs (`default_app`).

// The one exception is the shard's socket ring (`runtime::transport::ring`): its unsafe blocks
// say why they are sound.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#[cfg(feature = "rooms")]
pub mod app;
pub mod config;
pub mod core;
#[cfg(feature = "documents")]
pub mod document;
pub mod features;
pub mod ops;
pub mod protocol;
pub mod runtime;
#[cfg(feature = "sqlite")]
pub mod storage;
pub mod testing;

pub use crate::core::{
    App, Channel, ChannelCtx, ConnectInfo, ConnectRefused, HandleIn, Payload, ReplyRef,
    ReplyStatus, Router, SocketHandler,
};
pub use config::Config;
pub use runtime::server::{Server, ServerError, ServerHandle};
